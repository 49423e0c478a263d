//! A running member's Raft handle and the two operations every API service builds on:
//! [`RaftNode::write`] (propose a command, forwarding to the leader when this member is a
//! follower) and [`RaftNode::linearize`] (a read barrier: read index, confirmed by a quorum).

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_mvcc::pb;
use beacon_mvcc::{WriteRequest, WriteResponse};
use beacon_storage::{Identity, KvReader, Member, NodeId, TypeConfig};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Raft;

use crate::api_error::ApiError;
use crate::config::LimitsConfig;
use crate::peer_network::PeerClients;
use crate::proposal_batcher::{ProposalBatcher, ProposeOutcome};
use crate::read_barrier::ReadBarrier;

/// How long a member waits for another member's answer to a small peer call (TTL reports,
/// probe reports).
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request may wait for a leader, a forwarded write or a read index (etcd's default
/// request timeout is 5 s plus election time).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// One member's Raft instance with its read handle and peer connections.
pub struct RaftNode {
    pub raft: Raft<TypeConfig>,
    pub reader: KvReader,
    pub identity: Identity,
    pub peers: PeerClients,
    pub limits: LimitsConfig,
    /// Rounds of this member's own linearizable reads.
    pub read_barrier: ReadBarrier,
    /// Rounds of leadership confirmation for read-index requests from followers.
    pub leader_barrier: ReadBarrier,
    /// Batches this member's proposals while it leads.
    pub batcher: ProposalBatcher,
    /// The configured maximum election timeout (also openraft's leader lease).
    pub election_timeout: Duration,
    /// Set while this leader hands leadership over: it proposes nothing meanwhile.
    pub transferring: std::sync::atomic::AtomicBool,
}

/// Proposals resume when this is dropped (see [`RaftNode::pause_proposals`]).
pub struct ProposalsPaused<'a>(&'a RaftNode);

impl Drop for ProposalsPaused<'_> {
    fn drop(&mut self) {
        self.0
            .transferring
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl RaftNode {
    /// The header every etcd response carries.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        })
    }

    /// Whether this member is in contact with a working leader: as leader, a quorum acknowledged
    /// it within `window`; as follower, the leader's AppendEntries reached it within `window`.
    /// An isolated member is not, whatever leader it still believes in.
    pub fn in_contact_within(&self, window: std::time::Duration) -> bool {
        if self.is_leader() {
            let since = self.raft.metrics().borrow().millis_since_quorum_ack;
            since.is_some_and(|millis| std::time::Duration::from_millis(millis) <= window)
        } else {
            self.peers.liveness.leader_heard_within(window)
        }
    }

    /// Whether this member is the leader as far as it knows (it may have been deposed without
    /// hearing of it yet: proposals, not this answer, decide).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.identity.member_id)
    }

    fn leader(&self) -> Option<(NodeId, Option<Member>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        Some((leader, node))
    }

    /// Waits until some member is leader, or the deadline passes.
    async fn wait_for_leader(
        &self,
        deadline: Instant,
    ) -> Result<(NodeId, Option<Member>), ApiError> {
        if let Some(leader) = self.leader() {
            return Ok(leader);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited = self
            .raft
            .wait(Some(remaining))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        match waited {
            Ok(_) => self.leader().ok_or(ApiError::NoLeader),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(ApiError::Stopped),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ApiError::NoLeader),
        }
    }

    /// Proposes a write and returns its applied result. On a follower the write goes to the
    /// leader over the peer channel. A write is only sent again when it certainly was not
    /// proposed (the receiver was not leader); once proposed, a lost answer is an error for the
    /// client to handle, never a silent retry (which could apply a write twice).
    pub async fn write(&self, request: WriteRequest) -> Result<WriteResponse, ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let outcome = if leader == self.identity.member_id {
                self.propose_as_leader(request.clone()).await
            } else {
                let node = node.ok_or(ApiError::NoLeader)?;
                self.forward(&node, &request, deadline).await?
            };
            match outcome {
                ProposeOutcome::Applied(result) => return Ok(result?),
                ProposeOutcome::Failed(error) => return Err(error),
                ProposeOutcome::NotLeader => {
                    if Instant::now() >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    // Our view of the leader is stale; let the election news arrive.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Proposes locally (batched). Used by [`RaftNode::write`] and by the peer service for
    /// writes forwarded by followers.
    pub async fn propose_as_leader(&self, request: WriteRequest) -> ProposeOutcome {
        if self.leader().map(|(id, _)| id) != Some(self.identity.member_id)
            || self.transferring.load(std::sync::atomic::Ordering::SeqCst)
        {
            // While leadership moves, writes wait like during an election, then go to the
            // new leader.
            return ProposeOutcome::NotLeader;
        }
        if crate::quota::refused_without_space(&request) && crate::quota::space_exceeded(self) {
            return ProposeOutcome::Failed(crate::quota::no_space());
        }
        self.batcher.propose(request).await
    }

    /// Stops proposing (writes wait as if there were no leader) until the guard is dropped.
    pub fn pause_proposals(&self) -> ProposalsPaused<'_> {
        self.transferring
            .store(true, std::sync::atomic::Ordering::SeqCst);
        ProposalsPaused(self)
    }

    /// Executes a membership change (or leadership transfer) on the leader, forwarding it there
    /// from a follower; waits for a leader like a write does.
    pub async fn change_membership(
        self: &Arc<Self>,
        request: crate::membership::MembershipRequest,
    ) -> Result<(), ApiError> {
        use crate::membership::{Control, ControlOutcome};
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let outcome = if leader == self.identity.member_id {
                ControlOutcome::from_result(crate::membership::execute(self, request.clone()).await)
            } else {
                let node = node.ok_or(ApiError::NoLeader)?;
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.peers
                    .call(
                        &node.peer_addr,
                        timeout,
                        &Control::Membership(request.clone()),
                        |mut client, request| async move { client.control(request).await },
                    )
                    .await
                    .or_else(|error| {
                        if error.never_sent() {
                            Ok(ControlOutcome::NotLeader)
                        } else {
                            Err(ApiError::Timeout)
                        }
                    })?
            };
            match outcome {
                ControlOutcome::Done => return Ok(()),
                ControlOutcome::Failed { message, .. }
                    if message == crate::membership::CHANGE_IN_PROGRESS
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ControlOutcome::Failed { code, message } => {
                    return Err(ApiError::Etcd(tonic::Code::from(code), message))
                }
                ControlOutcome::NotLeader => {
                    if Instant::now() >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Sends a control message to the member at `addr` (no forwarding).
    pub async fn control(
        &self,
        addr: &str,
        control: crate::membership::Control,
    ) -> Result<(), ApiError> {
        use crate::membership::ControlOutcome;
        let outcome: ControlOutcome = self
            .peers
            .call(
                addr,
                PEER_CALL_TIMEOUT,
                &control,
                |mut client, request| async move { client.control(request).await },
            )
            .await
            .map_err(|error| ApiError::Unavailable(error.to_string()))?;
        match outcome {
            ControlOutcome::Done => Ok(()),
            ControlOutcome::NotLeader => Err(ApiError::NotLeaderHere),
            ControlOutcome::Failed { code, message } => {
                Err(ApiError::Etcd(tonic::Code::from(code), message))
            }
        }
    }

    async fn forward(
        &self,
        leader: &Member,
        request: &WriteRequest,
        deadline: Instant,
    ) -> Result<ProposeOutcome, ApiError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.peers
            .call(
                &leader.peer_addr,
                timeout,
                request,
                |mut client, request| async move { client.forward(request).await },
            )
            .await
            .or_else(|error| {
                if error.never_sent() {
                    // The leader we know of is down: nothing was proposed, so wait for the
                    // election to name another one and send it there.
                    tracing::debug!(%error, leader = %leader.name, "leader unreachable");
                    return Ok(ProposeOutcome::NotLeader);
                }
                tracing::warn!(%error, leader = %leader.name, "forwarding a write failed");
                Err(ApiError::Timeout)
            })
    }

    /// A read barrier for linearizable reads: returns once this member has applied everything
    /// committed before the call. The leader confirms its leadership with a quorum heartbeat
    /// (openraft's read index), so a deposed or partitioned leader can never serve stale data;
    /// a follower asks the leader for that index and waits until it has applied it. Concurrent
    /// reads share rounds ([`ReadBarrier`]).
    pub async fn linearize(self: &Arc<Self>) -> Result<(), ApiError> {
        // Negative control for the fault-injection suite only: a deliberately broken build that
        // serves "linearizable" reads from local state, which a partition must expose. The
        // feature is off by default and never enabled by any release or test profile.
        if cfg!(feature = "unsafe-stale-reads") {
            return Ok(());
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let node = self.clone();
        let index = self
            .read_barrier
            .read_index(move || {
                let node = node.clone();
                async move { node.fetch_read_index(deadline).await }
            })
            .await?;
        self.wait_applied(index, deadline).await
    }

    /// The leader's read index, confirmed by a quorum; used by [`RaftNode::linearize`] on the
    /// leader and by the peer service for followers.
    pub async fn leader_read_index(self: &Arc<Self>) -> Result<Option<u64>, ApiError> {
        let node = self.clone();
        self.leader_barrier
            .read_index(move || {
                let node = node.clone();
                async move { node.confirm_leadership().await }
            })
            .await
    }

    async fn confirm_leadership(&self) -> Result<Option<u64>, ApiError> {
        // A leader cut off from the quorum may wait a long time for heartbeat answers.
        let confirmed = tokio::time::timeout(REQUEST_TIMEOUT, self.raft.get_read_log_id())
            .await
            .map_err(|_| ApiError::Timeout)?;
        match confirmed {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(ApiError::LeaderChanged)
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(ApiError::Timeout)
            }
            Err(RaftError::Fatal(_)) => Err(ApiError::Stopped),
        }
    }

    async fn fetch_read_index(&self, deadline: Instant) -> Result<Option<u64>, ApiError> {
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let read_index = if leader == self.identity.member_id {
                match self.confirm_leadership().await {
                    Ok(index) => Some(index),
                    Err(ApiError::LeaderChanged) => None,
                    Err(error) => return Err(error),
                }
            } else {
                let node = node.ok_or(ApiError::NoLeader)?;
                let timeout = deadline.saturating_duration_since(Instant::now());
                let response = self.peers.read_index(&node.peer_addr, timeout).await.map_err(|error| {
                    tracing::warn!(%error, leader = %node.name, "read index from the leader failed");
                    ApiError::Timeout
                })?;
                response
                    .error
                    .is_empty()
                    .then_some(Some(response.read_index))
            };
            match read_index {
                Some(index) => return Ok(index),
                None if Instant::now() >= deadline => return Err(ApiError::NoLeader),
                // Leadership is moving; ask again once the news has arrived.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> Result<(), ApiError> {
        let applied = self.reader.last_applied().map(|id| id.index);
        if applied >= index {
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(index, "read index applied")
            .await
            .map(|_| ())
            .map_err(|error| match error {
                openraft::metrics::WaitError::ShuttingDown => ApiError::Stopped,
                openraft::metrics::WaitError::Timeout(..) => ApiError::Timeout,
            })
    }

    /// The peer address of `member`, from the current membership.
    fn peer_addr(&self, member: NodeId) -> Result<String, ApiError> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&member)
            .map(|node| node.peer_addr.clone())
            .ok_or_else(|| ApiError::Internal(format!("member {member} is not in the cluster")))
    }

    /// The members of the cluster (voters and learners) with their peer addresses.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.peer_addr.clone()))
            .collect()
    }

    /// Asks `member` to probe `check` once and report what it saw (the second opinion before a
    /// critical verdict commits). Bounded by the check's timeout plus a second.
    pub async fn confirm_probe(
        &self,
        member: NodeId,
        check: &beacon_proto::beacon::v1::Check,
    ) -> Result<beacon_proto::beacon::v1::ConfirmProbeResponse, ApiError> {
        let addr = self.peer_addr(member)?;
        let timeout = Duration::from_millis(check.timeout_ms.max(1000)) + Duration::from_secs(1);
        self.peers
            .confirm_probe(&addr, check, timeout)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))
    }

    /// Hands a TTL check's report to `member`, the check's owner.
    pub async fn report_ttl(
        &self,
        member: NodeId,
        report: beacon_proto::beacon::v1::ReportTtlRequest,
    ) -> Result<(), ApiError> {
        let addr = self.peer_addr(member)?;
        self.peers
            .report_ttl(&addr, report, PEER_CALL_TIMEOUT)
            .await
            .map_err(|error| {
                ApiError::Unavailable(format!(
                    "cannot reach member {member:x}, which runs this TTL check: {error}"
                ))
            })
    }

    /// Rejects a write whose encoded size exceeds etcd's request limit.
    pub fn check_request_size(&self, encoded_len: usize) -> Result<(), ApiError> {
        if encoded_len > self.limits.max_request_bytes {
            return Err(ApiError::RequestTooLarge);
        }
        Ok(())
    }
}
