//! etcd's `Cluster` service. MemberList reports the Raft membership (voters and learners, with
//! the addresses each member advertised). Membership changes come with the operations issue.

use std::sync::Arc;

use beacon_mvcc::pb;
use beacon_proto::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::raft_node::RaftNode;

/// Implements `etcdserverpb.Cluster`.
pub struct ClusterService {
    pub node: Arc<RaftNode>,
}

impl ClusterService {
    fn members(&self) -> Vec<pb::Member> {
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        let learners: Vec<u64> = membership.learner_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| pb::Member {
                id: *id,
                name: member.name.clone(),
                peer_ur_ls: vec![format!("http://{}", member.peer_addr)],
                client_ur_ls: vec![format!("http://{}", member.client_addr)],
                is_learner: learners.contains(id),
            })
            .collect()
    }

    fn not_yet(operation: &str) -> Status {
        ApiError::Unimplemented(format!(
            "etcdserver: {operation} is not supported by this Beacon version"
        ))
        .into()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.node.linearize().await?;
        }
        let revision = self.node.reader.current_revision();
        Ok(Response::new(pb::MemberListResponse {
            header: self.node.header(revision),
            members: self.members(),
        }))
    }

    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(Self::not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(Self::not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Self::not_yet("member update"))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(Self::not_yet("member promote"))
    }
}
