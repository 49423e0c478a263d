//! Batches concurrent writes on the leader into single Raft entries.
//!
//! openraft 0.9 waits for each log append's fsync before it appends the next entry, so one entry
//! per client write would cost one fsync per write on every member. The batcher queues writes
//! and proposes everything queued as one [`Command::Writes`] entry: a burst of writes shares one
//! append, one fsync and one replication round, while each write still gets its own revision
//! (they are applied in order). A few batches may be in flight at once so that the leader can
//! append the next batch while followers persist the previous one.

use std::sync::Arc;

use beacon_mvcc::{MvccError, WriteRequest, WriteResponse};
use beacon_storage::{Command, CommandResponse, TypeConfig, WriteBatch};
use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::api_error::ApiError;
use crate::observability::{count_failed_proposals, PROPOSALS_PENDING};
use crate::raft_node::REQUEST_TIMEOUT;

/// Most writes in one entry.
const MAX_BATCH_WRITES: usize = 512;
/// Most request bytes in one entry (a single request may be up to 1.5 MiB on its own).
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Batches proposed but not yet applied. openraft appends entries one at a time anyway; two let
/// the leader append the next batch while followers persist the previous one, and more only
/// make batches smaller (measured: 1 or 2 in flight beat 4 at 64 concurrent writes).
const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// The outcome of proposing one write on this member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposeOutcome {
    /// Committed and applied: the write's own result (an MVCC outcome such as "key not found"
    /// is a result too, identical on every replica).
    Applied(Result<WriteResponse, MvccError>),
    /// This member is not the leader; the write was not proposed, so it may be sent elsewhere.
    NotLeader,
    /// The write may or may not have been committed (e.g. the leader changed after proposing).
    Failed(ApiError),
}

struct Pending {
    request: WriteRequest,
    size: usize,
    reply: oneshot::Sender<ProposeOutcome>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub struct ProposalBatcher {
    queue: mpsc::UnboundedSender<Pending>,
    /// Writes queued or in flight (`beacon_server_proposals_pending`).
    pending: metrics::Gauge,
}

impl ProposalBatcher {
    /// Starts the batching task for `raft`; `is_leader` tells whether this member leads now.
    pub fn start(
        raft: Raft<TypeConfig>,
        is_leader: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, Arc::new(is_leader), receiver));
        Self {
            queue,
            pending: metrics::gauge!(PROPOSALS_PENDING),
        }
    }

    /// Proposes `request` (in the next batch) and waits for its outcome.
    pub async fn propose(&self, request: WriteRequest) -> ProposeOutcome {
        let (reply, outcome) = oneshot::channel();
        let size = encoded_len(&request);
        // Counted until answered, or until the caller gives up waiting (dropped).
        let _pending = PendingWrite::new(&self.pending);
        if self
            .queue
            .send(Pending {
                request,
                size,
                reply,
            })
            .is_err()
        {
            return ProposeOutcome::Failed(ApiError::Stopped);
        }
        outcome
            .await
            .unwrap_or(ProposeOutcome::Failed(ApiError::Stopped))
    }
}

/// One write counted in the pending gauge while it lives.
struct PendingWrite<'a>(&'a metrics::Gauge);

impl<'a> PendingWrite<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn encoded_len(request: &WriteRequest) -> usize {
    match request {
        WriteRequest::Put(r) => r.encoded_len(),
        WriteRequest::DeleteRange(r) => r.encoded_len(),
        WriteRequest::Txn(r) => r.encoded_len(),
        WriteRequest::Compact(r) => r.encoded_len(),
        WriteRequest::LeaseGrant(r) => r.encoded_len(),
        WriteRequest::LeaseRevoke(r) => r.encoded_len(),
        WriteRequest::LeaseRenew(r) => r.encoded_len(),
        WriteRequest::LeaseExpire(r) => r.encoded_len(),
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    is_leader: Arc<dyn Fn() -> bool + Send + Sync>,
    mut receiver: mpsc::UnboundedReceiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match receiver.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // Wait for a slot first: writes keep queueing meanwhile and join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_WRITES {
            match receiver.try_recv() {
                Ok(pending) if bytes + pending.size > MAX_BATCH_BYTES => {
                    carried = Some(pending);
                    break;
                }
                Ok(pending) => {
                    bytes += pending.size;
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let is_leader = is_leader.clone();
        tokio::spawn(async move {
            propose_batch(&raft, is_leader.as_ref(), batch).await;
            drop(permit);
        });
    }
}

async fn propose_batch(
    raft: &Raft<TypeConfig>,
    is_leader: &(dyn Fn() -> bool + Send + Sync),
    batch: Vec<Pending>,
) {
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    if !is_leader() {
        for reply in replies {
            let _ = reply.send(ProposeOutcome::NotLeader);
        }
        return;
    }
    let count = requests.len();
    let started = std::time::Instant::now();
    // A leader cut off from the quorum never commits; etcd answers "request timed out" after
    // its request timeout, and so do we (the entry may still commit later: the outcome is
    // unknown to the client, as with any timeout).
    let written = tokio::time::timeout(
        REQUEST_TIMEOUT,
        raft.client_write(Command::Writes(WriteBatch::from_writes(requests))),
    )
    .await;
    tracing::debug!(
        writes = count,
        elapsed_us = started.elapsed().as_micros() as u64,
        "batch applied"
    );
    let Ok(written) = written else {
        count_failed_proposals(&ApiError::Timeout, count);
        for reply in replies {
            let _ = reply.send(ProposeOutcome::Failed(ApiError::Timeout));
        }
        return;
    };
    let shared = match written {
        Ok(response) => match response.data {
            CommandResponse::Writes(results) if results.len() == count => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(ProposeOutcome::Applied(result));
                }
                return;
            }
            other => ProposeOutcome::Failed(ApiError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        },
        // We believed we were leader: the entry may have been appended before we stepped down,
        // so its fate is unknown. etcd answers "leader changed" in this case.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            ProposeOutcome::Failed(ApiError::LeaderChanged)
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
            ProposeOutcome::Failed(ApiError::Internal(error.to_string()))
        }
        Err(RaftError::Fatal(_)) => ProposeOutcome::Failed(ApiError::Stopped),
    };
    if let ProposeOutcome::Failed(error) = &shared {
        count_failed_proposals(error, count);
    }
    for reply in replies {
        let _ = reply.send(shared.clone());
    }
}
