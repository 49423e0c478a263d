//! The space quota and etcd's alarms.
//!
//! Each member compares its database size (RocksDB's SST files plus memtables, as Status
//! reports it) with `limits.quota_backend_bytes` (default 8 GiB) every few seconds. Over the
//! quota, it raises etcd's NOSPACE alarm through Raft: the alarm is a key under the reserved
//! prefix `/_beacon/alarms/` (`{member id, 16 hex digits}/NOSPACE`), so every member knows it,
//! it survives restarts and snapshots, and `etcdctl alarm list|disarm` see and clear it. While
//! any NOSPACE alarm stands, the leader refuses what etcd refuses then — puts, transactions that
//! put, lease grants — with etcd's `etcdserver: mvcc: database space exceeded`; reads, deletes,
//! revokes and compactions still work, so an operator can free space (compact, defragment),
//! then disarm. A member still over its quota raises the alarm again.

use std::sync::Arc;
use std::time::Duration;

use beacon_mvcc::{pb, WriteRequest};
use tonic::Code;

use crate::api_error::ApiError;
use crate::raft_node::RaftNode;

/// Where alarms live in the key space.
pub const ALARM_PREFIX: &str = "/_beacon/alarms/";
/// How often a member compares its size with the quota.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// etcd's error for writes refused under the NOSPACE alarm.
pub fn no_space() -> ApiError {
    ApiError::Etcd(
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded".into(),
    )
}

/// The key of `member`'s `alarm` (etcd's alarm type name, e.g. `NOSPACE`).
pub fn alarm_key(member: u64, alarm: pb::AlarmType) -> Vec<u8> {
    format!("{ALARM_PREFIX}{member:016x}/{}", alarm.as_str_name()).into_bytes()
}

fn alarm_range() -> pb::RangeRequest {
    pb::RangeRequest {
        key: ALARM_PREFIX.as_bytes().to_vec(),
        range_end: crate::catalog_service::prefix_end(ALARM_PREFIX.as_bytes()),
        keys_only: true,
        ..Default::default()
    }
}

/// Every alarm standing in this member's applied state.
pub fn alarms(node: &RaftNode) -> Result<Vec<pb::AlarmMember>, ApiError> {
    let response = node.reader.range(&alarm_range())?;
    Ok(response
        .kvs
        .iter()
        .filter_map(|kv| {
            let rest = kv.key.strip_prefix(ALARM_PREFIX.as_bytes())?;
            let rest = std::str::from_utf8(rest).ok()?;
            let (member, alarm) = rest.split_once('/')?;
            Some(pb::AlarmMember {
                member_id: u64::from_str_radix(member, 16).ok()?,
                alarm: pb::AlarmType::from_str_name(alarm)? as i32,
            })
        })
        .collect())
}

/// Whether a NOSPACE alarm stands.
pub fn space_exceeded(node: &RaftNode) -> bool {
    alarms(node).is_ok_and(|alarms| {
        alarms
            .iter()
            .any(|alarm| alarm.alarm == pb::AlarmType::Nospace as i32)
    })
}

fn txn_puts(txn: &pb::TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(_)) => true,
            Some(pb::request_op::Request::RequestTxn(inner)) => txn_puts(inner),
            _ => false,
        })
}

/// Whether etcd refuses `request` while NOSPACE stands (alarm writes themselves never are).
pub fn refused_without_space(request: &WriteRequest) -> bool {
    match request {
        WriteRequest::Put(put) => !put.key.starts_with(ALARM_PREFIX.as_bytes()),
        WriteRequest::Txn(txn) => txn_puts(txn),
        WriteRequest::LeaseGrant(_) => true,
        _ => false,
    }
}

/// Raises this member's NOSPACE alarm whenever its database is larger than `quota` bytes.
pub async fn monitor(node: Arc<RaftNode>, quota: u64) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = node.identity.member_id;
    loop {
        ticks.tick().await;
        let size = u64::try_from(node.reader.db_size()).unwrap_or(0);
        if size <= quota {
            continue;
        }
        let raised = alarms(&node).is_ok_and(|alarms| {
            alarms
                .iter()
                .any(|alarm| alarm.member_id == me && alarm.alarm == pb::AlarmType::Nospace as i32)
        });
        if raised {
            continue;
        }
        tracing::warn!(
            size,
            quota,
            "database larger than its quota: raising the NOSPACE alarm"
        );
        let put = WriteRequest::Put(pb::PutRequest {
            key: alarm_key(me, pb::AlarmType::Nospace),
            value: b"NOSPACE".to_vec(),
            ..Default::default()
        });
        if let Err(error) = node.write(put).await {
            tracing::warn!(%error, "the NOSPACE alarm could not be raised yet");
        }
    }
}
