//! A thin etcd v3 (KV, Lease, Maintenance) and `beacon.v1.Catalog` client over `beacon-proto`'s
//! generated stubs: one lazily connected channel per node, every request under a deadline, no
//! retries (a retried write could apply twice, which the history could not express). Errors come
//! back as [`CallError`] so workloads can tell a definite failure from an unknown outcome.
//! Streams (keepalive, watches) open their own channels without the per-request timeout.

use std::time::Duration;

use beacon_proto::beacon::v1::catalog_client::CatalogClient;
use beacon_proto::etcdserverpb::{
    cluster_client::ClusterClient, compare, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, request_op, Compare, LeaseGrantRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, Member, MemberAddRequest, MemberListRequest,
    MemberPromoteRequest, MemberRemoveRequest, PutRequest, RangeRequest, RequestOp, StatusRequest,
    TxnRequest, TxnResponse,
};
use beacon_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

/// Why a call did not return a response.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The deadline passed: the request may or may not have been applied.
    Timeout,
    /// The server or transport answered with an error status.
    Status(tonic::Code, String),
}

impl CallError {
    /// Whether a failed write certainly did not take effect: a request refused by validation, or
    /// one that could not even connect. Everything else (timeouts, broken connections) may have
    /// been applied and must be recorded as `info`.
    pub fn write_certainly_failed(&self) -> bool {
        match self {
            CallError::Timeout => false,
            // NotFound is an apply outcome ("requested lease not found") or the answer of the
            // read a catalog change starts with ("instance … not found"): nothing was written.
            CallError::Status(code, message) => {
                *code == tonic::Code::InvalidArgument
                    || *code == tonic::Code::NotFound
                    || (*code == tonic::Code::Unavailable && message.contains("Connection refused"))
            }
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "timeout"),
            CallError::Status(code, message) => write!(f, "{code:?}: {message}"),
        }
    }
}

/// A client bound to one node.
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub node: usize,
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    lease: LeaseClient<Channel>,
    catalog: CatalogClient<Channel>,
    cluster: ClusterClient<Channel>,
    deadline: Duration,
}

impl NodeClient {
    /// A client for `address` (host:port); connects on first use.
    pub fn new(node: usize, address: &str, deadline: Duration) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(deadline)
            .timeout(deadline)
            .connect_lazy();
        Ok(NodeClient {
            node,
            kv: KvClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            catalog: CatalogClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
            deadline,
        })
    }

    /// The Catalog stub (requests go through [`NodeClient::call`] for the deadline).
    pub fn catalog(&self) -> CatalogClient<Channel> {
        self.catalog.clone()
    }

    /// Runs a request under the client deadline (used with [`NodeClient::catalog`]).
    pub async fn call<T, F>(&self, future: F) -> Result<T, CallError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.deadline, future).await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(CallError::Timeout)
            }
            Ok(Err(status)) => Err(CallError::Status(
                status.code(),
                status.message().to_string(),
            )),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// Linearizable (or, with `serializable`, local) get of one key: the kv if present and the
    /// header revision.
    pub async fn get(
        &self,
        key: &str,
        serializable: bool,
    ) -> Result<(Option<KeyValue>, i64), CallError> {
        let mut kv = self.kv.clone();
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..Default::default()
        };
        let response = self.call(kv.range(request)).await?;
        let revision = response.header.map_or(0, |header| header.revision);
        Ok((response.kvs.into_iter().next(), revision))
    }

    /// Range over `[start, end)` (end empty: one key; `"\0"`: everything from start) at
    /// `revision` (0: current).
    pub async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        serializable: bool,
    ) -> Result<(Vec<KeyValue>, i64), CallError> {
        let mut kv = self.kv.clone();
        let request = RangeRequest {
            key: start.to_vec(),
            range_end: end.to_vec(),
            revision,
            serializable,
            ..Default::default()
        };
        let response = self.call(kv.range(request)).await?;
        let revision = response.header.map_or(0, |header| header.revision);
        Ok((response.kvs, revision))
    }

    /// Put; returns the header revision (the write's revision).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<i64, CallError> {
        let mut kv = self.kv.clone();
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        let response = self.call(kv.put(request)).await?;
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// Txn: if `compare` holds, put `key = value`; returns whether it succeeded and the revision.
    pub async fn put_if(
        &self,
        compare: Compare,
        key: &str,
        value: &[u8],
    ) -> Result<(bool, i64), CallError> {
        let mut kv = self.kv.clone();
        let request = TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let response: TxnResponse = self.call(kv.txn(request)).await?;
        Ok((
            response.succeeded,
            response.header.map_or(0, |header| header.revision),
        ))
    }

    /// Put of `key` attached to `lease`; returns the header revision.
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<i64, CallError> {
        let mut kv = self.kv.clone();
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let response = self.call(kv.put(request)).await?;
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// LeaseGrant with the server choosing the id: (id, granted TTL in seconds).
    pub async fn grant(&self, ttl: i64) -> Result<(i64, i64), CallError> {
        let mut lease = self.lease.clone();
        let response = self
            .call(lease.lease_grant(LeaseGrantRequest { ttl, id: 0 }))
            .await?;
        if !response.error.is_empty() {
            return Err(CallError::Status(tonic::Code::Unknown, response.error));
        }
        Ok((response.id, response.ttl))
    }

    /// LeaseRevoke; returns the header revision.
    pub async fn revoke(&self, id: i64) -> Result<i64, CallError> {
        let mut lease = self.lease.clone();
        let response = self
            .call(lease.lease_revoke(LeaseRevokeRequest { id }))
            .await?;
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// LeaseTimeToLive: the remaining TTL in seconds (-1: no such lease).
    pub async fn time_to_live(&self, id: i64) -> Result<i64, CallError> {
        let mut lease = self.lease.clone();
        let response = self
            .call(lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false }))
            .await?;
        Ok(response.ttl)
    }

    /// MemberAdd of `peer_url`; returns the new member's id.
    pub async fn member_add(&self, peer_url: &str, learner: bool) -> Result<u64, CallError> {
        let mut cluster = self.cluster.clone();
        let response = self
            .call(cluster.member_add(MemberAddRequest {
                peer_ur_ls: vec![peer_url.to_string()],
                is_learner: learner,
            }))
            .await?;
        response
            .member
            .map(|member| member.id)
            .ok_or_else(|| CallError::Status(tonic::Code::Internal, "no member in answer".into()))
    }

    pub async fn member_promote(&self, id: u64) -> Result<(), CallError> {
        let mut cluster = self.cluster.clone();
        self.call(cluster.member_promote(MemberPromoteRequest { id }))
            .await
            .map(|_| ())
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), CallError> {
        let mut cluster = self.cluster.clone();
        self.call(cluster.member_remove(MemberRemoveRequest { id }))
            .await
            .map(|_| ())
    }

    /// Linearizable MemberList.
    pub async fn member_list(&self) -> Result<Vec<Member>, CallError> {
        let mut cluster = self.cluster.clone();
        let response = self
            .call(cluster.member_list(MemberListRequest { linearizable: true }))
            .await?;
        Ok(response.members)
    }

    /// The node's Raft log index (Maintenance.Status `raft_index`).
    pub async fn raft_index(&self) -> Result<u64, CallError> {
        let mut maintenance = self.maintenance.clone();
        let response = self.call(maintenance.status(StatusRequest {})).await?;
        Ok(response.raft_index)
    }

    /// The node's view of the leader (member id, 0 when none).
    pub async fn leader(&self) -> Result<u64, CallError> {
        let mut maintenance = self.maintenance.clone();
        let response = self.call(maintenance.status(StatusRequest {})).await?;
        Ok(response.leader)
    }
}

/// `value(key) == value`.
pub fn value_equals(key: &str, value: &[u8]) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Value(value.to_vec())),
        range_end: vec![],
    }
}

/// `create_revision(key) == 0`: the key does not exist.
pub fn absent(key: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        range_end: vec![],
    }
}

/// The end of a prefix range (etcd's `--prefix`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
