//! etcd's `Maintenance` service: Status (truthful Raft and storage fields, standing alarms),
//! Alarm (the space quota's NOSPACE, see [`crate::quota`]), Defragment (a full RocksDB
//! compaction), Snapshot (a backup stream, [`crate::backup`]), Hash and HashKV (CRC-32s of the
//! replicated state, equal on members at the same applied entry) and MoveLeader (see
//! [`crate::membership`]).

use std::pin::Pin;
use std::sync::Arc;

use beacon_mvcc::pb;
use beacon_proto::etcdserverpb::maintenance_server::Maintenance;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::quota;
use crate::raft_node::RaftNode;
use beacon_mvcc::WriteRequest;

/// The etcd API version Beacon implements; clients use it to decide which features they may use.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Implements `etcdserverpb.Maintenance`.
pub struct MaintenanceService {
    pub node: Arc<RaftNode>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// etcd's alarms: list, activate and disarm (NOSPACE; see [`crate::quota`]). Raising and
    /// clearing are writes through Raft, so every member agrees on them.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let request = request.into_inner();
        let action = pb::alarm_request::AlarmAction::try_from(request.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        let alarm = pb::AlarmType::try_from(request.alarm).unwrap_or(pb::AlarmType::None);
        match action {
            pb::alarm_request::AlarmAction::Get => {}
            pb::alarm_request::AlarmAction::Activate => {
                if alarm != pb::AlarmType::Nospace || request.member_id == 0 {
                    return Err(Status::invalid_argument(
                        "beacon: only a member's NOSPACE alarm can be activated",
                    ));
                }
                let put = WriteRequest::Put(pb::PutRequest {
                    key: quota::alarm_key(request.member_id, alarm),
                    value: alarm.as_str_name().as_bytes().to_vec(),
                    ..Default::default()
                });
                self.node.write(put).await?;
            }
            pb::alarm_request::AlarmAction::Deactivate => {
                // etcdctl disarms each listed alarm by member and type; member 0 or type NONE
                // match every member or type.
                for standing in quota::alarms(&self.node)? {
                    let member_matches =
                        request.member_id == 0 || request.member_id == standing.member_id;
                    let alarm_matches =
                        alarm == pb::AlarmType::None || standing.alarm == alarm as i32;
                    if member_matches && alarm_matches {
                        let delete = WriteRequest::DeleteRange(pb::DeleteRangeRequest {
                            key: quota::alarm_key(
                                standing.member_id,
                                pb::AlarmType::try_from(standing.alarm)
                                    .unwrap_or(pb::AlarmType::Nospace),
                            ),
                            ..Default::default()
                        });
                        self.node.write(delete).await?;
                    }
                }
            }
        }
        self.node.linearize().await?;
        Ok(Response::new(pb::AlarmResponse {
            header: self.node.header(self.node.reader.current_revision()),
            alarms: quota::alarms(&self.node)?,
        }))
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
        for alarm in quota::alarms(node).unwrap_or_default() {
            errors.push(format!(
                "memberID:{} alarm:{}",
                alarm.member_id,
                pb::AlarmType::try_from(alarm.alarm)
                    .unwrap_or(pb::AlarmType::None)
                    .as_str_name()
            ));
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

    /// RocksDB has no free pages to give back the way bbolt does; the equivalent is a full
    /// compaction of this member's column families, which rewrites the SST files without the
    /// deleted and compacted-away records and so returns their space. It runs on this member
    /// only (as etcd's defragment does), off the async threads.
    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let reader = self.node.reader.clone();
        tokio::task::spawn_blocking(move || reader.compact_storage())
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.node.header(self.node.reader.current_revision()),
        }))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let reader = self.node.reader.clone();
        let (hash, revision) = tokio::task::spawn_blocking(move || reader.hash())
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok(Response::new(pb::HashResponse {
            header: self.node.header(revision),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let reader = self.node.reader.clone();
        let revision = request.get_ref().revision;
        let hashed = tokio::task::spawn_blocking(move || reader.hash_kv(revision))
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.node.header(self.node.reader.current_revision()),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
            hash_revision: hashed.revision,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Ok(Response::new(Box::pin(crate::backup::backup_stream(
            self.node.clone(),
        ))))
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
