//! etcd's `Maintenance` service: Status (truthful Raft and storage fields) and Alarm (no alarm
//! can be raised yet: the space quota comes with the operations issue). Backup, hashes,
//! defragmentation and leader transfer come with that issue too.

use std::pin::Pin;
use std::sync::Arc;

use beacon_mvcc::pb;
use beacon_proto::etcdserverpb::maintenance_server::Maintenance;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::raft_node::RaftNode;

/// The etcd API version Beacon implements; clients use it to decide which features they may use.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Implements `etcdserverpb.Maintenance`.
pub struct MaintenanceService {
    pub node: Arc<RaftNode>,
}

fn not_yet(operation: &str) -> Status {
    ApiError::Unimplemented(format!(
        "etcdserver: {operation} is not supported by this Beacon version"
    ))
    .into()
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let action = pb::alarm_request::AlarmAction::try_from(request.get_ref().action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        match action {
            // No alarm exists, so listing returns none and disarming has nothing to do.
            pb::alarm_request::AlarmAction::Get | pb::alarm_request::AlarmAction::Deactivate => {
                let revision = self.node.reader.current_revision();
                Ok(Response::new(pb::AlarmResponse {
                    header: self.node.header(revision),
                    alarms: Vec::new(),
                }))
            }
            pb::alarm_request::AlarmAction::Activate => Err(not_yet("alarm activate")),
        }
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let node = &self.node;
        let committed = node
            .raft
            .with_raft_state(|state| state.committed)
            .await
            .map_err(|_| Status::from(ApiError::Stopped))?;
        let metrics = node.raft.metrics().borrow().clone();
        let is_learner = metrics
            .membership_config
            .membership()
            .learner_ids()
            .any(|id| id == metrics.id);
        let db_size = node.reader.db_size();
        let mut errors = Vec::new();
        if metrics.current_leader.is_none() {
            errors.push(ApiError::NoLeader.to_string());
        }
        let response = pb::StatusResponse {
            header: node.header(node.reader.current_revision()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: committed.map(|id| id.index).unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
            errors,
            db_size_in_use: db_size,
            is_learner,
        };
        Ok(Response::new(response))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(not_yet("defragment"))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(not_yet("hash"))
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Err(not_yet("hashkv"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("snapshot"))
    }

    /// Hands leadership to `target_id` (a voter); any member forwards the request to the
    /// leader. See [`crate::membership`] for how the transfer works.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.node
            .change_membership(crate::membership::MembershipRequest::MoveLeader { target })
            .await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.node.header(self.node.reader.current_revision()),
        }))
    }
}
