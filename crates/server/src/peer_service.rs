//! The server side of the peer protocol (port 2380): Raft RPCs into openraft, writes forwarded by
//! followers, and read-index requests.

use std::sync::Arc;

use beacon_mvcc::WriteRequest;
use beacon_proto::beacon::v1::raft_peer_server::RaftPeer;
use beacon_proto::beacon::v1::{
    ConfirmProbeRequest, ConfirmProbeResponse, ProbeReportsRequest, ProbeReportsResponse,
    RaftPayload, ReadIndexRequest, ReadIndexResponse, ReportTtlRequest, ReportTtlResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::checker::health_checker::HealthChecker;
use crate::raft_node::RaftNode;

/// The start of the error a leader answers a removed member's vote request with.
pub const REMOVED_MEMBER: &str = "removed from the cluster";

/// Implements `beacon.v1.RaftPeer`.
pub struct PeerService {
    pub node: Arc<RaftNode>,
    /// Runs the second-opinion probes other members ask for, takes TTL reports for the checks
    /// this member owns, and keeps this member's latest probes.
    pub checker: Arc<HealthChecker>,
}

impl PeerService {
    fn decode<T: DeserializeOwned>(&self, payload: &RaftPayload) -> Result<T, Status> {
        self.check_cluster(payload.cluster_id)?;
        bincode::deserialize(&payload.data)
            .map_err(|error| Status::invalid_argument(format!("undecodable peer message: {error}")))
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.node.identity.cluster_id {
            return Err(Status::failed_precondition(format!(
                "peer belongs to cluster {cluster_id:016x}, this member to {:016x}",
                self.node.identity.cluster_id
            )));
        }
        Ok(())
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Response<RaftPayload>, Status> {
        let data = bincode::serialize(value)
            .map_err(|error| Status::internal(format!("cannot encode peer message: {error}")))?;
        Ok(Response::new(RaftPayload {
            cluster_id: self.node.identity.cluster_id,
            data,
        }))
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.decode(request.get_ref())?;
        let answer = self.node.raft.append_entries(rpc).await;
        if answer.is_ok() {
            self.node.peers.liveness.heard_from_leader();
        }
        self.encode(&answer)
    }

    async fn confirm_probe(
        &self,
        request: Request<ConfirmProbeRequest>,
    ) -> Result<Response<ConfirmProbeResponse>, Status> {
        let request = request.into_inner();
        self.check_cluster(request.cluster_id)?;
        let check = request
            .check
            .ok_or_else(|| Status::invalid_argument("confirm probe without a check"))?;
        let result = self.checker.prober().probe(&check).await;
        Ok(Response::new(ConfirmProbeResponse {
            status: result.status as i32,
            output: result.output,
        }))
    }

    async fn report_ttl(
        &self,
        request: Request<ReportTtlRequest>,
    ) -> Result<Response<ReportTtlResponse>, Status> {
        let report = request.into_inner();
        self.check_cluster(report.cluster_id)?;
        let status = report.status();
        self.checker.touch_ttl(
            &report.service,
            &report.instance_id,
            &report.check_id,
            status,
            report.note,
        );
        Ok(Response::new(ReportTtlResponse {}))
    }

    async fn probe_reports(
        &self,
        request: Request<ProbeReportsRequest>,
    ) -> Result<Response<ProbeReportsResponse>, Status> {
        let request = request.into_inner();
        self.check_cluster(request.cluster_id)?;
        Ok(Response::new(ProbeReportsResponse {
            reports: self.checker.probe_reports(&request.service),
        }))
    }

    async fn control(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let control: crate::membership::Control = self.decode(request.get_ref())?;
        let outcome = crate::membership::handle(&self.node, control).await;
        self.encode(&outcome)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::VoteRequest<beacon_storage::NodeId> =
            self.decode(request.get_ref())?;
        // A member removed from the cluster that comes back with its old data campaigns with
        // its stale membership. The leader knows every member (it proposed each change), so it
        // tells the candidate; the candidate stops (see `peer_network`).
        let candidate = rpc.vote.leader_id().voted_for();
        if let Some(candidate) = candidate {
            let known = self
                .node
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&candidate)
                .is_some();
            if self.node.is_leader() && !known {
                return Err(Status::failed_precondition(format!(
                    "{REMOVED_MEMBER}: member {candidate:x} is not a member of cluster {:016x}",
                    self.node.identity.cluster_id
                )));
            }
        }
        let answer = self.node.raft.vote(rpc).await;
        self.encode(&answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.decode(request.get_ref())?;
        let answer = self.node.raft.install_snapshot(rpc).await;
        self.encode(&answer)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let write: WriteRequest = self.decode(request.get_ref())?;
        let outcome = self.node.propose_as_leader(write).await;
        self.encode(&outcome)
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.check_cluster(request.get_ref().cluster_id)?;
        let leader_id = self
            .node
            .raft
            .metrics()
            .borrow()
            .current_leader
            .unwrap_or(0);
        let response = match self.node.leader_read_index().await {
            Ok(read_index) => ReadIndexResponse {
                read_index: read_index.unwrap_or(0),
                error: String::new(),
                leader_id,
            },
            Err(error) => ReadIndexResponse {
                read_index: 0,
                error: error.to_string(),
                leader_id,
            },
        };
        Ok(Response::new(response))
    }
}
