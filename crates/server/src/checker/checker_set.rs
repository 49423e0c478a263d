//! The leader's half of check ownership: it decides which members share the health checks and
//! commits that set (`/_beacon/checkers`) through Raft whenever it changes.
//!
//! A member belongs to the set while it answers the leader's AppendEntries (heartbeats included)
//! within an election timeout; the leader always belongs. While every member is reachable the
//! record is absent (absent means "every member"), so a healthy cluster never writes it and user
//! revisions are not consumed by it; it appears when a member drops out and is deleted when all
//! are back. Every member derives each check's owner
//! from the committed set by rendezvous hashing, so ownership moves exactly when the committed set
//! does, identically everywhere, and a steady cluster writes nothing. A member leaves the set only
//! after two consecutive scans saw it silent, so one slow heartbeat does not reshuffle checks.

use std::sync::Arc;
use std::time::Duration;

use beacon_catalog::{encode_checker_set, CheckerSet, CHECKERS_KEY};
use beacon_mvcc::{pb, WriteRequest};

use crate::catalog_view::CatalogView;
use crate::raft_node::RaftNode;

/// How often the leader compares reachability with the committed set.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Every member, and those that answered this leader within `window` (the leader included),
/// both sorted.
fn members_and_reachable(node: &RaftNode, window: Duration) -> (Vec<u64>, Vec<u64>) {
    let me = node.identity.member_id;
    let membership = node.raft.metrics().borrow().membership_config.clone();
    let mut members: Vec<u64> = membership.membership().nodes().map(|(id, _)| *id).collect();
    members.sort_unstable();
    let reachable = members
        .iter()
        .copied()
        .filter(|id| *id == me || node.peers.liveness.answered_within(*id, window))
        .collect();
    (members, reachable)
}

/// Runs on every member; acts only while it leads.
pub async fn maintain(node: Arc<RaftNode>, view: Arc<CatalogView>, election_timeout: Duration) {
    let mut ticks = tokio::time::interval(SCAN_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Vec<u64>> = None;
    loop {
        ticks.tick().await;
        if !node.is_leader() {
            pending = None;
            continue;
        }
        let (members, reachable) = members_and_reachable(&node, election_timeout);
        let committed = view.read().checkers.clone();
        let effective = committed.as_ref().map_or(&members, |set| &set.members);
        if *effective == reachable {
            pending = None;
            continue;
        }
        // A difference must persist one more scan: one late heartbeat reshuffles nothing.
        if pending.as_ref() != Some(&reachable) {
            pending = Some(reachable);
            continue;
        }
        pending = None;
        let write = if reachable == members {
            WriteRequest::DeleteRange(pb::DeleteRangeRequest {
                key: CHECKERS_KEY.as_bytes().to_vec(),
                ..Default::default()
            })
        } else {
            let set = CheckerSet {
                members: reachable.clone(),
                epoch: committed.map_or(1, |set| set.epoch + 1),
            };
            WriteRequest::Put(pb::PutRequest {
                key: CHECKERS_KEY.as_bytes().to_vec(),
                value: encode_checker_set(&set),
                ..Default::default()
            })
        };
        match node.propose_as_leader(write).await {
            crate::proposal_batcher::ProposeOutcome::Applied(Ok(_)) => {
                tracing::info!(members = ?reachable, "health-check members changed");
            }
            outcome => tracing::debug!(?outcome, "checker set not committed; will retry"),
        }
    }
}
