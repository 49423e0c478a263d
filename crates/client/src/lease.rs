//! etcd leases: [`Client::lease_grant`], [`Client::lease_revoke`], [`Client::lease_time_to_live`],
//! [`Client::lease_leases`], [`Client::lease_keep_alive_once`], and [`Client::keep_alive`], whose
//! [`LeaseKeepAlive`] handle keeps a lease alive from a background task.
//!
//! Failover: grant, revoke and a single keepalive follow the write rule of [`crate::client`]
//! (another endpoint only when the request certainly was never sent). Grant is the one that
//! matters: a replayed grant with a server-chosen id would create a second lease.
//!
//! The background keepalive sends one `LeaseKeepAliveRequest` every third of the TTL over a
//! `LeaseKeepAlive` stream. When the stream breaks or an answer is late, it opens a new stream on
//! the next endpoint (see [`crate::rotation`]) and sends a fresh keepalive there. That is not a
//! blind replay of a write: a renewal sets the lease's deadline to "now + TTL" on the leader, so
//! a renewal that was applied after all and the new one leave the same lease. The cluster's
//! answer TTL 0 means the lease is gone (expired or revoked); the handle then reports
//! [`LeaseState::Lost`] and stops, since a lost lease cannot come back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::{status_error, RequestKind};
use crate::error::ClientError;
use crate::pb;
use crate::pb::lease_client::LeaseClient;
use crate::rotation::EndpointRotation;
use crate::watch::is_final;
use crate::Client;

/// The shortest pause between two keepalives of one lease, whatever its TTL.
const MIN_KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// An answer to a keepalive is awaited at least this long before trying another member (a
/// renewal is a Raft commit, which waits out an election).
const MIN_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Where a kept-alive lease stands, as seen by its [`LeaseKeepAlive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// No keepalive has been answered yet.
    Starting,
    /// The last keepalive was answered with `ttl` seconds. The lease lives at least until
    /// `deadline` (the time that keepalive was *sent* plus `ttl`): when the cluster is
    /// unreachable for long, a past deadline says the lease may have expired.
    Alive {
        /// Seconds granted by the last renewal.
        ttl: i64,
        /// The lease certainly lives until then.
        deadline: Instant,
    },
    /// The cluster answered that the lease does not exist (TTL 0): it expired or was revoked.
    /// Final: the keepalive has stopped.
    Lost,
    /// The cluster rejected keepalives for a reason retrying cannot fix (e.g. it has no Lease
    /// service). Final: the keepalive has stopped.
    Failed(String),
    /// Stopped by its handle ([`LeaseKeepAlive::stop`] or drop). Final.
    Stopped,
}

impl LeaseState {
    /// Whether the keepalive has stopped for good (lost, failed or stopped).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            LeaseState::Lost | LeaseState::Failed(_) | LeaseState::Stopped
        )
    }
}

/// A lease kept alive by a background task until this handle is dropped or stopped; see the
/// module docs. Observe it with [`LeaseKeepAlive::state`] or [`LeaseKeepAlive::subscribe`].
#[derive(Debug)]
pub struct LeaseKeepAlive {
    lease_id: i64,
    state: Arc<watch::Sender<LeaseState>>,
    task: JoinHandle<()>,
}

impl Client {
    /// Grants a lease of `ttl_seconds` (the cluster may raise it to its minimum; the answer
    /// holds the TTL granted). `id` 0 lets the cluster pick the id.
    pub async fn lease_grant(
        &self,
        ttl_seconds: i64,
        id: i64,
    ) -> Result<pb::LeaseGrantResponse, ClientError> {
        let request = pb::LeaseGrantRequest {
            ttl: ttl_seconds,
            id,
        };
        self.call(RequestKind::Write, move |channel| async move {
            LeaseClient::new(channel).lease_grant(request).await
        })
        .await
    }

    /// Revokes a lease, deleting every key attached to it in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse, ClientError> {
        let request = pb::LeaseRevokeRequest { id };
        self.call(RequestKind::Write, move |channel| async move {
            LeaseClient::new(channel).lease_revoke(request).await
        })
        .await
    }

    /// A lease's remaining and granted TTL (and, with `keys`, its attached keys). A lease that
    /// does not exist is answered with TTL -1, as etcd does, not with an error.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, ClientError> {
        let request = pb::LeaseTimeToLiveRequest { id, keys };
        self.call(RequestKind::Read, move |channel| async move {
            LeaseClient::new(channel).lease_time_to_live(request).await
        })
        .await
    }

    /// Every lease in the cluster.
    pub async fn lease_leases(&self) -> Result<pb::LeaseLeasesResponse, ClientError> {
        self.call(RequestKind::Read, |channel| async move {
            LeaseClient::new(channel)
                .lease_leases(pb::LeaseLeasesRequest {})
                .await
        })
        .await
    }

    /// Renews a lease once and returns its TTL in seconds; 0 means the lease does not exist
    /// (expired or revoked).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, ClientError> {
        let request = pb::LeaseKeepAliveRequest { id };
        let response = self
            .call(RequestKind::Write, move |channel| async move {
                let mut responses = LeaseClient::new(channel)
                    .lease_keep_alive(tokio_stream::iter([request]))
                    .await?
                    .into_inner();
                match responses.message().await? {
                    Some(response) => Ok(tonic::Response::new(response)),
                    None => Err(tonic::Status::unavailable(
                        "lease keepalive stream closed without an answer",
                    )),
                }
            })
            .await?;
        Ok(response.ttl.max(0))
    }

    /// Keeps lease `lease_id` (granted with `ttl` seconds) alive in the background until the
    /// returned handle is dropped or stopped. The first keepalive is sent at once. Must be
    /// called inside a tokio runtime.
    pub fn keep_alive(&self, lease_id: i64, ttl: i64) -> LeaseKeepAlive {
        let (state, _) = watch::channel(LeaseState::Starting);
        let state = Arc::new(state);
        let task = tokio::spawn(run_keep_alive(
            self.clone(),
            lease_id,
            ttl.max(1),
            state.clone(),
        ));
        LeaseKeepAlive {
            lease_id,
            state,
            task,
        }
    }
}

impl LeaseKeepAlive {
    /// The lease being kept alive.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// The lease's state now.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change (each answered keepalive is one).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// Waits until the keepalive has stopped for good and returns why ([`LeaseState::Lost`] or
    /// [`LeaseState::Failed`]; [`LeaseState::Stopped`] only if stopped meanwhile).
    pub async fn ended(&self) -> LeaseState {
        let mut states = self.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let ended = match states.wait_for(LeaseState::is_final).await {
            Ok(state) => state.clone(),
            Err(_) => LeaseState::Stopped,
        };
        ended
    }

    /// Stops sending keepalives (the lease then expires after its TTL unless revoked).
    pub fn stop(&self) {
        self.task.abort();
        self.state.send_replace(LeaseState::Stopped);
    }
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Publishes `next` unless the handle already said [`LeaseState::Stopped`] (the task may still
/// be running for a moment after an abort; a stopped handle must not look alive again).
fn publish(state: &watch::Sender<LeaseState>, next: LeaseState) {
    state.send_if_modified(|current| {
        if *current == LeaseState::Stopped {
            return false;
        }
        *current = next;
        true
    });
}

/// The pause between keepalives for a TTL: a third of it, so two may fail before it expires.
fn keep_alive_interval(ttl: i64) -> Duration {
    let millis = u64::try_from(ttl.max(1)).unwrap_or(1).saturating_mul(1000) / 3;
    Duration::from_millis(millis).max(MIN_KEEP_ALIVE_INTERVAL)
}

/// How long to wait for a keepalive's answer before trying another member.
fn answer_wait(ttl: i64, request_timeout: Duration) -> Duration {
    keep_alive_interval(ttl)
        .max(MIN_ANSWER_WAIT)
        .min(request_timeout)
}

/// How one keepalive stream ended.
enum StreamEnd {
    /// The stream broke, an answer was late, or the member refused: try the next member.
    /// `renewed` says whether this stream renewed the lease at least once (then the next
    /// member is tried without waiting).
    Broken { renewed: bool },
    /// The lease is gone or keepalives are refused for good.
    Final(LeaseState),
}

async fn run_keep_alive(
    client: Client,
    lease_id: i64,
    ttl: i64,
    state: Arc<watch::Sender<LeaseState>>,
) {
    let mut ttl = ttl;
    let mut rotation =
        EndpointRotation::starting_at(client.current_index(), client.endpoint_count());
    loop {
        let (endpoint, channel) = client.endpoint_at(rotation.current());
        match keep_alive_stream(&client, &endpoint, channel, lease_id, &mut ttl, &state).await {
            StreamEnd::Final(end) => {
                match &end {
                    LeaseState::Lost => {
                        tracing::warn!(lease_id, "lease expired or revoked; keepalive stopped")
                    }
                    LeaseState::Failed(error) => {
                        tracing::warn!(lease_id, %error, "lease keepalive refused; stopped")
                    }
                    _ => {}
                }
                publish(&state, end);
                return;
            }
            StreamEnd::Broken { renewed } => {
                if renewed {
                    rotation.succeeded();
                }
                let wait = rotation.failed();
                tracing::debug!(lease_id, %endpoint, ?wait, "lease keepalive stream broke; moving on");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Runs keepalives over one stream on `endpoint` until it breaks or the lease ends.
async fn keep_alive_stream(
    client: &Client,
    endpoint: &str,
    channel: Channel,
    lease_id: i64,
    ttl: &mut i64,
    state: &watch::Sender<LeaseState>,
) -> StreamEnd {
    let request_timeout = client.options().request_timeout;
    let request = pb::LeaseKeepAliveRequest { id: lease_id };
    let (requests, receiver) = mpsc::channel(1);
    let mut sent = Instant::now();
    requests
        .try_send(request)
        .expect("a fresh channel has room for the first keepalive");
    let opened = tokio::time::timeout(
        request_timeout,
        LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(receiver)),
    )
    .await;
    let refused = |status: &tonic::Status| {
        StreamEnd::Final(LeaseState::Failed(
            status_error(endpoint, status).to_string(),
        ))
    };
    let mut responses = match opened {
        Ok(Ok(responses)) => responses.into_inner(),
        Ok(Err(status)) if is_final(status.code()) => return refused(&status),
        Ok(Err(_)) | Err(_) => return StreamEnd::Broken { renewed: false },
    };
    let mut renewed = false;
    loop {
        let answer = tokio::time::timeout(answer_wait(*ttl, request_timeout), responses.message());
        match answer.await {
            Ok(Ok(Some(response))) if response.ttl <= 0 => {
                return StreamEnd::Final(LeaseState::Lost)
            }
            Ok(Ok(Some(response))) => {
                *ttl = response.ttl;
                renewed = true;
                let deadline = sent + Duration::from_secs(response.ttl.unsigned_abs());
                publish(
                    state,
                    LeaseState::Alive {
                        ttl: response.ttl,
                        deadline,
                    },
                );
            }
            Ok(Err(status)) if is_final(status.code()) => return refused(&status),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return StreamEnd::Broken { renewed },
        }
        tokio::time::sleep_until((sent + keep_alive_interval(*ttl)).into()).await;
        sent = Instant::now();
        if requests.send(request).await.is_err() {
            return StreamEnd::Broken { renewed };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_go_out_every_third_of_the_ttl() {
        assert_eq!(keep_alive_interval(9), Duration::from_secs(3));
        assert_eq!(keep_alive_interval(1), Duration::from_millis(333));
        assert_eq!(keep_alive_interval(0), Duration::from_millis(333));
    }

    #[test]
    fn answers_are_awaited_at_least_a_second_and_at_most_the_request_timeout() {
        let timeout = Duration::from_secs(5);
        assert_eq!(answer_wait(1, timeout), Duration::from_secs(1));
        assert_eq!(answer_wait(9, timeout), Duration::from_secs(3));
        assert_eq!(answer_wait(60, timeout), timeout);
    }

    #[test]
    fn a_stopped_handle_never_looks_alive_again() {
        let (state, _) = watch::channel(LeaseState::Starting);
        publish(
            &state,
            LeaseState::Alive {
                ttl: 3,
                deadline: Instant::now(),
            },
        );
        assert!(matches!(*state.borrow(), LeaseState::Alive { ttl: 3, .. }));
        state.send_replace(LeaseState::Stopped);
        publish(&state, LeaseState::Lost);
        assert_eq!(*state.borrow(), LeaseState::Stopped);
    }
}
