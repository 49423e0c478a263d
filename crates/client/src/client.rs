//! [`Client`]: one lazily connected channel per endpoint, a current endpoint, and the failover
//! rule that keeps retries safe.
//!
//! Failover rule (Jepsen found lost updates from blind write retries in jetcd):
//! - reads (Range, read-only Txn, MemberList, Status) move on to the next endpoint after any
//!   transport failure, `Unavailable` or timeout;
//! - writes (Put, DeleteRange, Txn with writes, Compact, lease grant, revoke and keepalive) move
//!   on only when the request certainly never reached a server (our connector could not connect,
//!   see [`crate::connection`]); any other failure is returned, because the write may have been
//!   applied;
//! - idempotent writes (catalog Register and Deregister) also move on after `Unavailable`: a
//!   replay that applies a second time changes nothing the first did not.
//!
//! Each call tries every endpoint at most once, starting at the current one; a failing endpoint
//! stops being current so later calls start elsewhere.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tonic::transport::Channel;

use crate::connection::{endpoint_uri, is_not_connected, open_channel, ClientOptions};
use crate::error::ClientError;
use crate::options::{DeleteOptions, GetOptions, PutOptions};
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::kv_client::KvClient;
use crate::pb::maintenance_client::MaintenanceClient;

/// A client for a Beacon (or etcd) cluster. Cheap to clone; clones share channels and the
/// current endpoint.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<EndpointChannel>,
    /// Index into `endpoints` of the endpoint the next call starts with.
    current: AtomicUsize,
    options: ClientOptions,
}

struct EndpointChannel {
    /// The endpoint as the caller spelled it (used in errors and per-endpoint lookups).
    name: String,
    channel: Channel,
}

/// Whether a request may be replayed on another endpoint after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Idempotent: safe to send again anywhere.
    Read,
    /// May change state: replay only if it certainly was never sent.
    Write,
    /// Changes state, but applying it twice leaves the state applying it once does (the
    /// catalog's Register, a create-or-replace by id, and Deregister): replayed after "could not
    /// connect" and after `Unavailable` (no leader, leader changed, "request timed out"), the
    /// answers a member gives when it could not get the write committed in time.
    IdempotentWrite,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("current", &self.inner.current.load(Ordering::Relaxed))
            .finish()
    }
}

impl Client {
    /// A client over `endpoints` (`host:port` or `http://host:port`). Connections are opened on
    /// first use, so this fails only on malformed endpoints, never on unreachable ones.
    pub async fn connect(
        endpoints: Vec<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let endpoints = endpoints
            .into_iter()
            .map(|name| {
                let channel = open_channel(&name, &options)?;
                Ok(EndpointChannel { name, channel })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                current: AtomicUsize::new(0),
                options,
            }),
        })
    }

    /// The endpoints, as given to [`Client::connect`].
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|endpoint| endpoint.name.clone())
            .collect()
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Reads `key` (or the range selected by `options`).
    pub async fn get(
        &self,
        key: impl AsRef<[u8]>,
        options: GetOptions,
    ) -> Result<pb::RangeResponse, ClientError> {
        let request = options.to_request(key.as_ref());
        self.call(RequestKind::Read, move |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).range(request).await }
        })
        .await
    }

    /// Reads from one specific endpoint, without failover (health checks use it).
    pub async fn get_from_endpoint(
        &self,
        endpoint: &str,
        key: impl AsRef<[u8]>,
        options: GetOptions,
    ) -> Result<pb::RangeResponse, ClientError> {
        let request = options.to_request(key.as_ref());
        let channel = self.channel_for(endpoint)?;
        self.call_once(endpoint, KvClient::new(channel).range(request))
            .await
    }

    /// Writes `value` at `key`.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: PutOptions,
    ) -> Result<pb::PutResponse, ClientError> {
        let request = options.to_request(key.as_ref(), value.as_ref());
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).put(request).await }
        })
        .await
    }

    /// Deletes `key` (or the range selected by `options`).
    pub async fn delete(
        &self,
        key: impl AsRef<[u8]>,
        options: DeleteOptions,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        let request = options.to_request(key.as_ref());
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).delete_range(request).await }
        })
        .await
    }

    /// Runs a transaction. A transaction whose branches only read is retried like a read.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        let kind = if txn_is_read_only(&request) {
            RequestKind::Read
        } else {
            RequestKind::Write
        };
        self.call(kind, move |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).txn(request).await }
        })
        .await
    }

    /// Compacts the key-value history up to `revision`; with `physical`, waits until the space
    /// is reclaimed.
    pub async fn compact(
        &self,
        revision: i64,
        physical: bool,
    ) -> Result<pb::CompactionResponse, ClientError> {
        let request = pb::CompactionRequest { revision, physical };
        self.call(RequestKind::Write, move |channel| async move {
            KvClient::new(channel).compact(request).await
        })
        .await
    }

    /// Lists the cluster's members.
    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.call(RequestKind::Read, |channel| async move {
            ClusterClient::new(channel)
                .member_list(pb::MemberListRequest {
                    linearizable: false,
                })
                .await
        })
        .await
    }

    /// Adds a member with this peer URL, as a learner or a voter; the answer holds its new id.
    pub async fn member_add(
        &self,
        peer_url: &str,
        learner: bool,
    ) -> Result<pb::MemberAddResponse, ClientError> {
        let request = pb::MemberAddRequest {
            peer_ur_ls: vec![peer_url.to_string()],
            is_learner: learner,
        };
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { ClusterClient::new(channel).member_add(request).await }
        })
        .await
    }

    /// Removes member `id` (the leader too).
    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.call(RequestKind::Write, move |channel| async move {
            ClusterClient::new(channel)
                .member_remove(pb::MemberRemoveRequest { id })
                .await
        })
        .await
    }

    /// Makes learner `id` a voter (refused until it has caught up).
    pub async fn member_promote(&self, id: u64) -> Result<pb::MemberPromoteResponse, ClientError> {
        self.call(RequestKind::Write, move |channel| async move {
            ClusterClient::new(channel)
                .member_promote(pb::MemberPromoteRequest { id })
                .await
        })
        .await
    }

    /// Changes member `id`'s peer URL.
    pub async fn member_update(
        &self,
        id: u64,
        peer_url: &str,
    ) -> Result<pb::MemberUpdateResponse, ClientError> {
        let request = pb::MemberUpdateRequest {
            id,
            peer_ur_ls: vec![peer_url.to_string()],
        };
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { ClusterClient::new(channel).member_update(request).await }
        })
        .await
    }

    /// Hands leadership to voter `target` (etcd's MoveLeader; any member forwards it).
    pub async fn move_leader(&self, target: u64) -> Result<pb::MoveLeaderResponse, ClientError> {
        self.call(RequestKind::Write, move |channel| async move {
            MaintenanceClient::new(channel)
                .move_leader(pb::MoveLeaderRequest { target_id: target })
                .await
        })
        .await
    }

    /// The status of one endpoint (no failover: the answer is about that member).
    pub async fn status(&self, endpoint: &str) -> Result<pb::StatusResponse, ClientError> {
        let channel = self.channel_for(endpoint)?;
        self.call_once(
            endpoint,
            MaintenanceClient::new(channel).status(pb::StatusRequest {}),
        )
        .await
    }

    /// etcd's `HashKV` of one endpoint at `revision` (0: its current revision). Members that
    /// applied the same entries answer the same hash for the same revision and compaction.
    pub async fn hash_kv(
        &self,
        endpoint: &str,
        revision: i64,
    ) -> Result<pb::HashKvResponse, ClientError> {
        let channel = self.channel_for(endpoint)?;
        self.call_once(
            endpoint,
            MaintenanceClient::new(channel).hash_kv(pb::HashKvRequest { revision }),
        )
        .await
    }

    /// A backup of one endpoint's state as etcd's `Maintenance.Snapshot` stream: the blobs in
    /// order make the backup file. Only opening the stream is bounded by the request timeout.
    pub async fn snapshot(
        &self,
        endpoint: &str,
    ) -> Result<tonic::Streaming<pb::SnapshotResponse>, ClientError> {
        let channel = self.channel_for(endpoint)?;
        self.call_once(
            endpoint,
            MaintenanceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .snapshot(pb::SnapshotRequest {}),
        )
        .await
    }

    /// A raw KV client on the shared channel of `endpoint`, for callers that manage their own
    /// requests (the bench). No timeout or failover applies.
    pub fn kv_client_for(&self, endpoint: &str) -> Result<KvClient<Channel>, ClientError> {
        Ok(KvClient::new(self.channel_for(endpoint)?))
    }

    /// Number of endpoints (at least one).
    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// The name and shared channel of endpoint `index` (taken modulo the endpoint count).
    pub(crate) fn endpoint_at(&self, index: usize) -> (String, Channel) {
        let endpoint = &self.inner.endpoints[index % self.inner.endpoints.len()];
        (endpoint.name.clone(), endpoint.channel.clone())
    }

    /// Index of the endpoint the next call starts with.
    pub(crate) fn current_index(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len()
    }

    /// Makes endpoint `index` the one later calls start with (it just worked).
    pub(crate) fn set_current(&self, index: usize) {
        self.inner
            .current
            .store(index % self.inner.endpoints.len(), Ordering::Relaxed);
    }

    fn channel_for(&self, endpoint: &str) -> Result<Channel, ClientError> {
        let wanted = endpoint_uri(endpoint)?;
        self.inner
            .endpoints
            .iter()
            .find(|candidate| {
                candidate.name == endpoint
                    || endpoint_uri(&candidate.name).is_ok_and(|uri| uri == wanted)
            })
            .map(|candidate| candidate.channel.clone())
            .ok_or_else(|| ClientError::UnknownEndpoint(endpoint.to_string()))
    }

    /// One attempt on one endpoint, bounded by the request timeout.
    async fn call_once<T>(
        &self,
        endpoint: &str,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        let timeout = self.inner.options.request_timeout;
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_error(endpoint, &status)),
            Err(_) => Err(ClientError::Timeout {
                endpoint: endpoint.to_string(),
                timeout,
            }),
        }
    }

    /// Runs `attempt` on the current endpoint and fails over by the module's rule.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        kind: RequestKind,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let endpoints = &self.inner.endpoints;
        let count = endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed) % count;
        let mut last_error = None;
        let mut never_connected = true;
        for offset in 0..count {
            let index = (start + offset) % count;
            let endpoint = &endpoints[index];
            let timeout = self.inner.options.request_timeout;
            let (error, not_connected) =
                match tokio::time::timeout(timeout, attempt(endpoint.channel.clone())).await {
                    Ok(Ok(response)) => {
                        if offset > 0 {
                            self.inner.current.store(index, Ordering::Relaxed);
                        }
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => (
                        status_error(&endpoint.name, &status),
                        is_not_connected(&status),
                    ),
                    Err(_) => (
                        ClientError::Timeout {
                            endpoint: endpoint.name.clone(),
                            timeout,
                        },
                        false,
                    ),
                };
            never_connected &= not_connected;
            let may_retry = match kind {
                RequestKind::Read => not_connected || read_may_retry(&error),
                RequestKind::Write => not_connected,
                RequestKind::IdempotentWrite => {
                    not_connected || error.code() == Some(tonic::Code::Unavailable)
                }
            };
            if !may_retry {
                return Err(error);
            }
            // Later calls start at the next endpoint; a concurrent call may already have moved on.
            let _ = self.inner.current.compare_exchange(
                index,
                (index + 1) % count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            last_error = Some(error);
        }
        Err(self.every_endpoint_failed(last_error, never_connected))
    }
}

pub(crate) fn status_error(endpoint: &str, status: &tonic::Status) -> ClientError {
    ClientError::Status {
        endpoint: endpoint.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

/// Failures after which a read is worth sending to another member: the member or the path to
/// it is in trouble. Answers about the request itself (compacted, invalid, …) are final.
fn read_may_retry(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout { .. } | ClientError::Unreachable { .. } => true,
        ClientError::Status { code, .. } => matches!(
            code,
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    }
}

/// Whether every operation in both branches (recursively) is a Range.
pub fn txn_is_read_only(request: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(nested)) => txn_is_read_only(nested),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        })
}

impl Client {
    /// The error once every endpoint was tried: `Unreachable` when none could even be connected
    /// to (the cluster is down or the endpoints are wrong), else the last endpoint's error.
    pub(crate) fn every_endpoint_failed(
        &self,
        last_error: Option<ClientError>,
        never_connected: bool,
    ) -> ClientError {
        let last_error = last_error.expect("the loop ran at least once: endpoints is non-empty");
        if never_connected {
            ClientError::Unreachable {
                endpoints: self.endpoints(),
                last: last_error.to_string(),
            }
        } else {
            last_error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_op::Request;

    fn op(request: Request) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request),
        }
    }

    #[test]
    fn txn_with_only_ranges_is_a_read() {
        let read_only = pb::TxnRequest {
            success: vec![op(Request::RequestRange(Default::default()))],
            failure: vec![op(Request::RequestTxn(pb::TxnRequest {
                success: vec![op(Request::RequestRange(Default::default()))],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(txn_is_read_only(&read_only));
    }

    #[test]
    fn txn_with_a_nested_put_is_a_write() {
        let write = pb::TxnRequest {
            failure: vec![op(Request::RequestTxn(pb::TxnRequest {
                success: vec![op(Request::RequestPut(Default::default()))],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(!txn_is_read_only(&write));
    }

    #[test]
    fn only_member_trouble_makes_a_read_retry() {
        let status = |code| ClientError::Status {
            endpoint: "e".into(),
            code,
            message: String::new(),
        };
        assert!(read_may_retry(&status(tonic::Code::Unavailable)));
        assert!(!read_may_retry(&status(tonic::Code::OutOfRange)));
        assert!(!read_may_retry(&status(tonic::Code::InvalidArgument)));
    }
}
