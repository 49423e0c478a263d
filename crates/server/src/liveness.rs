//! [`Liveness`]: when this member last heard from the others over Raft, so it can tell whether it
//! is cut off, and (as leader) which members are reachable.
//!
//! Recorded from the Raft traffic itself, at no extra cost: a follower notes every AppendEntries
//! (heartbeats included) the leader sends it; the leader notes every AppendEntries a member
//! answers. The health checker uses it to stop probing when this member is isolated (its verdicts
//! could not commit, and it must not act on a view it cannot refresh) and, on the leader, to
//! decide which members share the checks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use beacon_storage::NodeId;

/// Contact times; see the module docs.
#[derive(Debug, Default)]
pub struct Liveness {
    /// The last AppendEntries this member answered (it came from a leader).
    from_leader: Mutex<Option<Instant>>,
    /// The last answered AppendEntries of each member, as seen by this member while leading.
    answered: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    /// A leader's AppendEntries (or heartbeat) reached this member.
    pub fn heard_from_leader(&self) {
        *self
            .from_leader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
    }

    /// `member` answered this member's AppendEntries.
    pub fn answered_by(&self, member: NodeId) {
        self.answered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(member, Instant::now());
    }

    /// Whether a leader reached this member within `window`.
    pub fn leader_heard_within(&self, window: Duration) -> bool {
        self.from_leader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Whether `member` answered this member within `window`.
    pub fn answered_within(&self, member: NodeId, window: Duration) -> bool {
        self.answered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&member)
            .is_some_and(|at| at.elapsed() <= window)
    }
}
