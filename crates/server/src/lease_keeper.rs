//! [`LeaseKeeper`]: every member's clock for leases, and the leader's expiry decisions.
//!
//! Every member measures each lease's deadline from the moment it *applied* the lease's grant
//! or last renewal (its generation) — its own monotonic clock, never another member's, never
//! wall time. Renewals are committed through Raft before a keepalive is answered, so any member
//! that becomes leader has applied every acknowledged renewal, and its deadline for a lease is
//! never earlier than the true one (it applied the renewal after it was committed) and later
//! only by its replication and apply delay. The remaining time therefore survives a leader
//! change: it is neither reset to the full TTL nor cut short.
//!
//! Only the leader acts: when a deadline passes it proposes a [`LeaseExpiry`] naming the
//! generation it measured from, through its own proposal queue (never forwarded, so a deposed
//! leader's decision is never committed by someone else). The expiry applies only if no renewal
//! was committed since, so a keepalive that raced with the decision always wins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use beacon_mvcc::{LeaseChange, LeaseExpiry, LeaseRecord, WriteRequest};
use beacon_storage::{AppliedChanges, ApplyListener, KvReader};

use crate::proposal_batcher::ProposeOutcome;
use crate::raft_node::RaftNode;

/// How often the leader looks for expired leases: the granularity of expiry.
const SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// How long an expiry proposal may stay unanswered before it is proposed again.
const EXPIRY_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    record: LeaseRecord,
    /// When this member proposed the lease's expiry, if it did and no answer came yet.
    expiring_since: Option<Instant>,
}

impl Deadline {
    fn starting_now(record: LeaseRecord) -> Self {
        let ttl = Duration::from_secs(u64::try_from(record.ttl).unwrap_or(0));
        let now = Instant::now();
        Deadline {
            // A TTL too large for the clock never expires in practice.
            at: now
                .checked_add(ttl)
                .unwrap_or(now + Duration::from_secs(1 << 40)),
            record,
            expiring_since: None,
        }
    }
}

/// The deadlines of every granted lease on this member.
pub struct LeaseKeeper {
    deadlines: Mutex<HashMap<i64, Deadline>>,
    /// A snapshot replaced the state: deadlines are reloaded from the reader by the keeper task
    /// (the apply listener must not read the state it is being told about).
    reload: AtomicBool,
    reader: KvReader,
}

impl LeaseKeeper {
    /// A keeper for the leases already applied in `reader`; each starts a full TTL from now
    /// (this member cannot know when it applied them before a restart, so it never guesses
    /// earlier).
    pub fn new(reader: KvReader) -> Arc<Self> {
        let keeper = Arc::new(LeaseKeeper {
            deadlines: Mutex::new(HashMap::new()),
            reload: AtomicBool::new(false),
            reader,
        });
        keeper.reload_from_reader();
        keeper
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Deadline>> {
        self.deadlines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reload_from_reader(&self) {
        let records = self.reader.leases();
        let mut deadlines = self.lock();
        let previous = std::mem::take(&mut *deadlines);
        for (id, record) in records {
            let deadline = match previous.get(&id) {
                // Same renewal as before the snapshot: keep measuring from when we applied it.
                Some(known) if known.record == record => *known,
                _ => Deadline::starting_now(record),
            };
            deadlines.insert(id, deadline);
        }
    }

    /// The time a lease has left on this member's clock (zero once its deadline passed but the
    /// expiry is not applied yet), or `None` when it is not granted.
    pub fn remaining(&self, lease_id: i64) -> Option<Duration> {
        self.lock()
            .get(&lease_id)
            .map(|deadline| deadline.at.saturating_duration_since(Instant::now()))
    }

    /// How many leases are granted on this member's applied state.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Runs the expiry loop until the node shuts down: while this member leads, proposes the
    /// expiry of every lease whose deadline passed.
    pub async fn run(self: Arc<Self>, node: Arc<RaftNode>) {
        let mut ticks = tokio::time::interval(SCAN_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.reload.swap(false, Ordering::AcqRel) {
                self.reload_from_reader();
            }
            if !node.is_leader() {
                continue;
            }
            for expiry in self.due() {
                let keeper = self.clone();
                let node = node.clone();
                tokio::spawn(async move { keeper.propose_expiry(&node, expiry).await });
            }
        }
    }

    /// Leases past their deadline that are not already being expired; marks them.
    fn due(&self) -> Vec<LeaseExpiry> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (id, deadline) in self.lock().iter_mut() {
            let in_flight = deadline
                .expiring_since
                .is_some_and(|since| now.duration_since(since) < EXPIRY_RETRY);
            if deadline.at <= now && !in_flight {
                deadline.expiring_since = Some(now);
                due.push(LeaseExpiry {
                    id: *id,
                    generation: deadline.record.generation,
                });
            }
        }
        due
    }

    async fn propose_expiry(&self, node: &RaftNode, expiry: LeaseExpiry) {
        let id = expiry.id;
        match node
            .propose_as_leader(WriteRequest::LeaseExpire(expiry))
            .await
        {
            // Expired: the apply removed it. Not expired: a renewal won; its apply moved the
            // deadline. Either way the listener already updated the table.
            ProposeOutcome::Applied(Ok(_)) => {
                tracing::debug!(lease = id, "lease expiry applied");
                // A deadline reloaded from a state older than the lease's removal would
                // otherwise be retried forever.
                if self.reader.lease(id).is_none() {
                    self.lock().remove(&id);
                }
            }
            outcome => {
                tracing::debug!(
                    lease = id,
                    ?outcome,
                    "lease expiry not committed; will retry"
                );
                if let Some(deadline) = self.lock().get_mut(&id) {
                    deadline.expiring_since = None;
                }
            }
        }
    }
}

impl ApplyListener for LeaseKeeper {
    fn applied(&self, changes: AppliedChanges) {
        if changes.reset {
            self.reload.store(true, Ordering::Release);
            return;
        }
        if changes.lease_changes.is_empty() {
            return;
        }
        let mut deadlines = self.lock();
        for change in changes.lease_changes {
            match change {
                LeaseChange::Set(id, record) => {
                    deadlines.insert(id, Deadline::starting_now(record));
                }
                LeaseChange::Removed(id) => {
                    deadlines.remove(&id);
                }
            }
        }
    }
}
