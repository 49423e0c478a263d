//! Membership changes (etcd's `Cluster` service: add, promote, remove, update) and leadership
//! transfer (`Maintenance.MoveLeader`), executed on the leader through openraft.
//!
//! A member that is not the leader forwards the request over the peer channel
//! (`RaftPeer.Control`), like a write. Every change is a Raft membership change (openraft's
//! joint consensus), so it is durable and ordered with the data once it answers.
//!
//! - **Add**: a new member gets a random id and joins as a learner (etcd's `--learner`), or is
//!   made a voter at once (etcd's default; refused, as etcd's strict reconfiguration check does,
//!   when the cluster could not keep a quorum of started members). Its name and client address
//!   are unknown until it starts: it then publishes them itself ([`MembershipRequest::Publish`]).
//! - **Promote**: only a learner whose log is within 10 % of the leader's, as etcd requires.
//! - **Remove**: a voter or a learner, the leader included (it hands over leadership first).
//!   A removed member that comes back with its old data campaigns, and the leader answers its
//!   vote request with "removed" (`peer_service`): it stops instead of disturbing the cluster.
//! - **Update**: a member's peer address.
//! - **MoveLeader**: the leader stops proposing and heartbeating, the other voters hold their
//!   elections, and the target campaigns once the followers' leader leases have run out. openraft
//!   0.9 has no TimeoutNow, so a transfer costs about one election timeout of write latency.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_storage::{Member, NodeId};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::api_error::ApiError;
use crate::raft_node::{RaftNode, REQUEST_TIMEOUT};

/// A learner may be promoted once its log holds at least this share of the leader's (etcd's
/// `readyPercent`).
const PROMOTE_READY_SHARE: f64 = 0.9;
/// The answer while an earlier membership change (a member publishing its name, say) is still
/// being committed; [`RaftNode::change_membership`] waits and tries again.
pub const CHANGE_IN_PROGRESS: &str = "etcdserver: another membership change is in progress";
/// etcd's limit on learners in a cluster.
pub const MAX_LEARNERS: usize = 1;

/// A membership operation, as forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipRequest {
    /// Add a member with this (new) id and peer address, as a learner or as a voter.
    Add {
        id: NodeId,
        peer_addr: String,
        learner: bool,
    },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Remove a member.
    Remove { id: NodeId },
    /// Change a member's peer address.
    Update { id: NodeId, peer_addr: String },
    /// A member that joined announces its name and client address.
    Publish {
        id: NodeId,
        name: String,
        client_addr: String,
    },
    /// Hand leadership to this voter.
    MoveLeader { target: NodeId },
}

/// Peer control messages (`RaftPeer.Control`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Control {
    /// Execute a membership request (on the leader).
    Membership(MembershipRequest),
    /// Do not start elections for this long (a leadership transfer is under way).
    HoldElections { millis: u64 },
    /// Campaign now (the target of a leadership transfer).
    Campaign,
}

/// How a control message ended, as sent back over the peer channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlOutcome {
    Done,
    /// This member is not the leader: the sender asks again once it knows the leader.
    NotLeader,
    /// An etcd error: the gRPC code (as i32) and etcd's message.
    Failed {
        code: i32,
        message: String,
    },
}

/// An etcd error with code FailedPrecondition, as most of etcd's membership errors are.
fn precondition(message: &str) -> ApiError {
    ApiError::Etcd(Code::FailedPrecondition, message.into())
}

/// etcd's membership errors.
pub fn member_not_found() -> ApiError {
    ApiError::Etcd(Code::NotFound, "etcdserver: member not found".into())
}

fn peer_url_exists() -> ApiError {
    precondition("etcdserver: Peer URLs already exists")
}

fn not_learner() -> ApiError {
    precondition("etcdserver: can only promote a learner member")
}

fn learner_not_ready() -> ApiError {
    precondition("etcdserver: can only promote a learner member which is in sync with leader")
}

fn too_many_learners() -> ApiError {
    precondition("etcdserver: too many learner members in cluster")
}

fn not_enough_started() -> ApiError {
    precondition("etcdserver: re-configuration failed due to not enough started members")
}

fn bad_transferee() -> ApiError {
    precondition("etcdserver: bad leader transferee")
}

impl ControlOutcome {
    pub fn from_result(result: Result<(), ApiError>) -> Self {
        match result {
            Ok(()) => ControlOutcome::Done,
            Err(ApiError::NotLeaderHere) => ControlOutcome::NotLeader,
            Err(error) => {
                let status = tonic::Status::from(error);
                ControlOutcome::Failed {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                }
            }
        }
    }
}

/// The current membership: every member with its node, and the voter ids.
fn membership(node: &RaftNode) -> (BTreeMap<NodeId, Member>, BTreeSet<NodeId>) {
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    let config = metrics.membership_config.membership();
    let nodes = config
        .nodes()
        .map(|(id, member)| (*id, member.clone()))
        .collect();
    (nodes, config.voter_ids().collect())
}

/// The voters that answered this leader recently (itself included): etcd's "started" members.
fn started_voters(node: &RaftNode, voters: &BTreeSet<NodeId>) -> usize {
    let window = node.election_timeout;
    voters
        .iter()
        .filter(|id| {
            **id == node.identity.member_id || node.peers.liveness.answered_within(**id, window)
        })
        .count()
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Maps openraft's answer to a membership change.
fn changed<T>(
    result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, Member>>>,
) -> Result<(), ApiError> {
    match result {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err(ApiError::NotLeaderHere)
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::LearnerNotFound(_),
        ))) => Err(member_not_found()),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        ))) => Err(precondition(CHANGE_IN_PROGRESS)),
        Err(error) => Err(ApiError::Internal(format!(
            "membership change failed: {error}"
        ))),
    }
}

/// Executes `request` on this member, which must be the leader.
pub async fn execute(node: &Arc<RaftNode>, request: MembershipRequest) -> Result<(), ApiError> {
    if !node.is_leader() {
        return Err(ApiError::NotLeaderHere);
    }
    let (nodes, voters) = membership(node);
    match request {
        MembershipRequest::Add {
            id,
            peer_addr,
            learner,
        } => {
            if nodes.contains_key(&id) {
                return Err(precondition("etcdserver: member ID already exist"));
            }
            if nodes.values().any(|member| member.peer_addr == peer_addr) {
                return Err(peer_url_exists());
            }
            let learners = nodes.len() - voters.len();
            if learner && learners >= MAX_LEARNERS {
                return Err(too_many_learners());
            }
            if !learner && started_voters(node, &voters) < quorum(voters.len() + 1) {
                return Err(not_enough_started());
            }
            let member = Member {
                name: String::new(),
                peer_addr,
                client_addr: String::new(),
            };
            changed(node.raft.add_learner(id, member, false).await)?;
            if !learner {
                changed(
                    node.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await,
                )?;
            }
            Ok(())
        }
        MembershipRequest::Promote { id } => {
            if !nodes.contains_key(&id) {
                return Err(member_not_found());
            }
            if voters.contains(&id) {
                return Err(not_learner());
            }
            let (last_log, matched) = {
                let metrics = node.raft.metrics();
                let metrics = metrics.borrow();
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&id).cloned())
                    .flatten()
                    .map_or(0, |log_id| log_id.index);
                (metrics.last_log_index.unwrap_or(0), matched)
            };
            if (matched as f64) < (last_log as f64) * PROMOTE_READY_SHARE {
                return Err(learner_not_ready());
            }
            changed(
                node.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await,
            )
        }
        MembershipRequest::Remove { id } => {
            if !nodes.contains_key(&id) {
                return Err(member_not_found());
            }
            let change = if voters.contains(&id) {
                let remaining: BTreeSet<NodeId> = voters
                    .iter()
                    .copied()
                    .filter(|voter| *voter != id)
                    .collect();
                if remaining.is_empty() {
                    return Err(precondition(
                        "etcdserver: cannot remove the last voting member",
                    ));
                }
                let started = started_voters(node, &remaining);
                if started < quorum(remaining.len()) {
                    return Err(not_enough_started());
                }
                if id == node.identity.member_id {
                    // The leader leaves: hand leadership to a caught-up voter first, so the
                    // removal is committed by a leader that stays.
                    // The heir: the remaining voter furthest along (it can win at once).
                    let heir = {
                        let metrics = node.raft.metrics();
                        let metrics = metrics.borrow();
                        remaining
                            .iter()
                            .copied()
                            .max_by_key(|voter| {
                                metrics
                                    .replication
                                    .as_ref()
                                    .and_then(|replication| replication.get(voter).cloned())
                                    .flatten()
                                    .map(|log_id| log_id.index)
                            })
                            .unwrap_or(id)
                    };
                    move_leader(node, heir).await?;
                    return Err(ApiError::NotLeaderHere);
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            changed(node.raft.change_membership(change, false).await)?;
            if nodes.contains_key(&id) && voters.contains(&id) {
                // A removed voter may linger as a learner in openraft's joint step; drop it.
                let (now_nodes, now_voters) = membership(node);
                if now_nodes.contains_key(&id) && !now_voters.contains(&id) {
                    changed(
                        node.raft
                            .change_membership(
                                ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                                false,
                            )
                            .await,
                    )?;
                }
            }
            Ok(())
        }
        MembershipRequest::Update { id, peer_addr } => {
            let Some(member) = nodes.get(&id) else {
                return Err(member_not_found());
            };
            if nodes
                .iter()
                .any(|(other, member)| *other != id && member.peer_addr == peer_addr)
            {
                return Err(peer_url_exists());
            }
            let updated = Member {
                peer_addr,
                ..member.clone()
            };
            changed(
                node.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])),
                        false,
                    )
                    .await,
            )
        }
        MembershipRequest::Publish {
            id,
            name,
            client_addr,
        } => {
            let Some(member) = nodes.get(&id) else {
                return Err(member_not_found());
            };
            if member.name == name && member.client_addr == client_addr {
                return Ok(());
            }
            let updated = Member {
                name,
                client_addr,
                ..member.clone()
            };
            changed(
                node.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])),
                        false,
                    )
                    .await,
            )
        }
        MembershipRequest::MoveLeader { target } => move_leader(node, target).await,
    }
}

/// Hands leadership to `target` (see the module docs). Returns once `target` leads.
async fn move_leader(node: &Arc<RaftNode>, target: NodeId) -> Result<(), ApiError> {
    let me = node.identity.member_id;
    if target == me {
        return Ok(());
    }
    let (nodes, voters) = membership(node);
    if !voters.contains(&target) {
        return Err(bad_transferee());
    }
    let lease = node.election_timeout;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    // Stop proposing: writes wait (and go to the new leader), and no entry renews the
    // followers' leases.
    let _paused = node.pause_proposals();
    // The target must hold every entry before it campaigns, or it cannot win.
    loop {
        let caught_up = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&target).cloned())
                .flatten()
                .map(|log_id| log_id.index);
            matched.is_some() && matched == metrics.last_log_index
        };
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ApiError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hold = lease * 4;
    for (id, member) in &nodes {
        if *id != target && *id != me && voters.contains(id) {
            let _ = node
                .control(
                    &member.peer_addr,
                    Control::HoldElections {
                        millis: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
                    },
                )
                .await;
        }
    }
    node.raft.runtime_config().heartbeat(false);
    node.raft.runtime_config().elect(false);
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let target_addr = nodes
        .get(&target)
        .map(|member| member.peer_addr.clone())
        .unwrap_or_default();
    let campaigned = node.control(&target_addr, Control::Campaign).await;
    let moved = node
        .raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(
            |metrics| metrics.current_leader == Some(target),
            "leadership moved",
        )
        .await;
    node.raft.runtime_config().heartbeat(true);
    node.raft.runtime_config().elect(true);
    match (campaigned, moved) {
        (_, Ok(_)) => Ok(()),
        (Err(error), Err(_)) => Err(error),
        (Ok(()), Err(_)) => Err(ApiError::Timeout),
    }
}

/// Runs a control message received from another member.
pub async fn handle(node: &Arc<RaftNode>, control: Control) -> ControlOutcome {
    match control {
        Control::Membership(request) => ControlOutcome::from_result(execute(node, request).await),
        Control::HoldElections { millis } => {
            node.raft.runtime_config().elect(false);
            let raft = node.raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                raft.runtime_config().elect(true);
            });
            ControlOutcome::Done
        }
        Control::Campaign => match node.raft.trigger().elect().await {
            Ok(()) => ControlOutcome::Done,
            Err(error) => ControlOutcome::from_result(Err(ApiError::Internal(error.to_string()))),
        },
    }
}
