//! The client side of the peer protocol: openraft's `RaftNetwork` over tonic, plus the calls a
//! follower makes to the leader (forwarded writes, read index).
//!
//! Raft messages are openraft's own types encoded with bincode inside `beacon.v1.RaftPayload`;
//! every message carries the cluster id so that members of different clusters never talk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beacon_proto::beacon::v1::raft_peer_client::RaftPeerClient;
use beacon_proto::beacon::v1::{
    Check, CheckProbeReport, ConfirmProbeRequest, ConfirmProbeResponse, ProbeReportsRequest,
    RaftPayload, ReadIndexRequest, ReadIndexResponse, ReportTtlRequest,
};
use beacon_storage::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;

use crate::liveness::Liveness;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Connections to other members by peer address, shared by Raft replication and forwarding.
#[derive(Clone)]
pub struct PeerClients {
    cluster_id: u64,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Who answered this member's Raft traffic, and when.
    pub liveness: Arc<Liveness>,
    /// Set when the leader said this member was removed from the cluster: it must stop.
    pub removed: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A peer call failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {addr} unreachable: {source}")]
    Transport { addr: String, source: tonic::Status },
    #[error("peer message could not be encoded or decoded: {0}")]
    Codec(#[from] bincode::Error),
}

impl PeerError {
    /// True when the request was certainly not sent (safe to send a write elsewhere): the
    /// connection could not be opened (tonic's "tcp connect error"), or hyper handed the request
    /// back unsent because the connection had closed or was not ready (its `Canceled` error,
    /// "operation was canceled": a member killed since the connection was made).
    pub fn never_sent(&self) -> bool {
        match self {
            PeerError::Transport { source, .. } => {
                (source.code() == tonic::Code::Unavailable
                    && source.message() == "tcp connect error")
                    || (source.code() == tonic::Code::Cancelled
                        && source.message() == "operation was canceled")
            }
            PeerError::Codec(_) => false,
        }
    }
}

impl PeerClients {
    pub fn new(cluster_id: u64) -> Self {
        Self {
            cluster_id,
            channels: Arc::new(Mutex::new(HashMap::new())),
            liveness: Arc::new(Liveness::default()),
            removed: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// A client for `addr`; channels are created lazily, kept, and reconnect by themselves.
    pub fn client(&self, addr: &str) -> RaftPeerClient<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = channels
            .entry(addr.to_string())
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap_or_else(|_| Endpoint::from_static("http://0.0.0.0:1"))
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy()
            })
            .clone();
        RaftPeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Sends a bincode-encoded request through `call` and decodes the bincode answer.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        timeout: Duration,
        request: &Req,
        call: F,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let payload = RaftPayload {
            cluster_id: self.cluster_id,
            data: bincode::serialize(request)?,
        };
        let mut request = tonic::Request::new(payload);
        request.set_timeout(timeout);
        let response =
            call(self.client(addr), request)
                .await
                .map_err(|source| PeerError::Transport {
                    addr: addr.to_string(),
                    source,
                })?;
        Ok(bincode::deserialize(&response.into_inner().data)?)
    }

    /// Asks the member at `addr` to probe `check` once (a second opinion on a critical verdict).
    pub async fn confirm_probe(
        &self,
        addr: &str,
        check: &Check,
        timeout: Duration,
    ) -> Result<ConfirmProbeResponse, PeerError> {
        let mut request = tonic::Request::new(ConfirmProbeRequest {
            cluster_id: self.cluster_id,
            check: Some(check.clone()),
        });
        request.set_timeout(timeout);
        let response = self
            .client(addr)
            .confirm_probe(request)
            .await
            .map_err(|source| PeerError::Transport {
                addr: addr.to_string(),
                source,
            })?;
        Ok(response.into_inner())
    }

    /// Hands a TTL check's report to the member at `addr`, which owns the check.
    pub async fn report_ttl(
        &self,
        addr: &str,
        mut report: ReportTtlRequest,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        report.cluster_id = self.cluster_id;
        let mut request = tonic::Request::new(report);
        request.set_timeout(timeout);
        self.client(addr)
            .report_ttl(request)
            .await
            .map_err(|source| PeerError::Transport {
                addr: addr.to_string(),
                source,
            })?;
        Ok(())
    }

    /// The latest probes the member at `addr` ran of `service`'s checks.
    pub async fn probe_reports(
        &self,
        addr: &str,
        service: &str,
        timeout: Duration,
    ) -> Result<Vec<CheckProbeReport>, PeerError> {
        let mut request = tonic::Request::new(ProbeReportsRequest {
            cluster_id: self.cluster_id,
            service: service.to_string(),
        });
        request.set_timeout(timeout);
        let response = self
            .client(addr)
            .probe_reports(request)
            .await
            .map_err(|source| PeerError::Transport {
                addr: addr.to_string(),
                source,
            })?;
        Ok(response.into_inner().reports)
    }

    /// Asks the leader at `addr` for a read index confirmed by a quorum.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<ReadIndexResponse, PeerError> {
        let mut request = tonic::Request::new(ReadIndexRequest {
            cluster_id: self.cluster_id,
        });
        request.set_timeout(timeout);
        let response = self
            .client(addr)
            .read_index(request)
            .await
            .map_err(|source| PeerError::Transport {
                addr: addr.to_string(),
                source,
            })?;
        Ok(response.into_inner())
    }
}

/// openraft's network factory: one [`PeerConnection`] per target.
pub struct PeerNetwork {
    pub clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            clients: self.clients.clone(),
        }
    }
}

/// The Raft connection to one member.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    clients: PeerClients,
}

impl PeerConnection {
    async fn send<Req, Resp, E, F, Fut>(
        &self,
        option: &RPCOption,
        request: &Req,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .clients
            .call(&self.addr, option.hard_ttl(), request, call)
            .await
            .map_err(|error| match error {
                PeerError::Transport { .. } => RPCError::Unreachable(Unreachable::new(&error)),
                PeerError::Codec(_) => RPCError::Network(NetworkError::new(&error)),
            })?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let answer = self
            .send(&option, &rpc, |mut client, request| async move {
                client.append_entries(request).await
            })
            .await;
        if answer.is_ok() {
            self.clients.liveness.answered_by(self.target);
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(&option, &rpc, |mut client, request| async move {
            client.install_snapshot(request).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let answer = self
            .send(&option, &rpc, |mut client, request| async move {
                client.vote(request).await
            })
            .await;
        if let Err(RPCError::Unreachable(error)) = &answer {
            if error
                .to_string()
                .contains(crate::peer_service::REMOVED_MEMBER)
            {
                tracing::error!(leader = self.target, %error, "the leader says this member was removed from the cluster");
                self.clients.removed.send_replace(true);
            }
        }
        answer
    }
}
