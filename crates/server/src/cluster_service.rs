//! etcd's `Cluster` service over the Raft membership: MemberList (voters and learners, with the
//! addresses each member advertised), MemberAdd (as a learner or a voter), MemberPromote,
//! MemberRemove and MemberUpdate, executed by [`crate::membership`] on the leader.

use std::sync::Arc;

use beacon_mvcc::pb;
use beacon_proto::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::membership::MembershipRequest;
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
                // A member added but not started yet has no client address (etcd: "unstarted").
                client_ur_ls: if member.client_addr.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("http://{}", member.client_addr)]
                },
                is_learner: learners.contains(id),
            })
            .collect()
    }

    fn member(&self, id: u64) -> Option<pb::Member> {
        self.members().into_iter().find(|member| member.id == id)
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        self.node.header(self.node.reader.current_revision())
    }

    /// A fresh member id: random, non-zero, unused (etcd derives one from the URLs and time),
    /// below 2^63 so that it fits a TOML integer in the new member's config file.
    fn new_member_id(&self) -> u64 {
        let taken: Vec<u64> = self.members().iter().map(|member| member.id).collect();
        loop {
            let id: u64 = rand::random::<u64>() >> 1;
            if id != 0 && !taken.contains(&id) {
                return id;
            }
        }
    }
}

/// etcd's error for peer URLs it cannot use.
fn bad_urls() -> Status {
    ApiError::Etcd(
        tonic::Code::InvalidArgument,
        "etcdserver: given member URLs are invalid".into(),
    )
    .into()
}

/// The one peer address (`host:port`) of a MemberAdd or MemberUpdate: exactly one URL,
/// `http://host:port` or `host:port` (Beacon members listen on one plain peer address).
pub fn peer_address(urls: &[String]) -> Result<String, Status> {
    let [url] = urls else {
        return Err(bad_urls());
    };
    let address = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if !valid || address.contains("://") {
        return Err(bad_urls());
    }
    Ok(address.to_string())
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
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let peer_addr = peer_address(&request.peer_ur_ls)?;
        let id = self.new_member_id();
        self.node
            .change_membership(MembershipRequest::Add {
                id,
                peer_addr: peer_addr.clone(),
                learner: request.is_learner,
            })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![format!("http://{peer_addr}")],
                client_ur_ls: Vec::new(),
                is_learner: request.is_learner,
            }),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.node
            .change_membership(MembershipRequest::Remove { id })
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let peer_addr = peer_address(&request.peer_ur_ls)?;
        self.node
            .change_membership(MembershipRequest::Update {
                id: request.id,
                peer_addr,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        self.node
            .change_membership(MembershipRequest::Promote { id })
            .await?;
        if self.member(id).is_none() {
            return Err(crate::membership::member_not_found().into());
        }
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}
