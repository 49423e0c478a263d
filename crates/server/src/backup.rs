//! Backups: `Maintenance.Snapshot`, a consistent backup of this member's applied state streamed
//! in chunks as etcd does (`remaining_bytes` counts down to 0 on the last message), and
//! [`restore`], which builds a member of a new cluster from one (`beacond restore`).
//!
//! The stream is Beacon's snapshot format (`beacon_storage::snapshot_format`, the same bytes a
//! Raft snapshot is), ending with the SHA-256 of everything before it, as etcd's backups end
//! with theirs. It is written first to a temporary file the storage unlinks once open (so its
//! size is known and nothing is left behind), then read back in [`BACKUP_CHUNK_BYTES`] pieces
//! into a bounded channel: memory stays at a few chunks whatever the size of the state.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use beacon_storage::{Identity, SnapshotSummary};

use beacon_mvcc::pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::api_error::ApiError;
use crate::config::ServerConfig;
use crate::maintenance_service::ETCD_API_VERSION;
use crate::raft_node::RaftNode;

/// Blob size of each `SnapshotResponse` (etcd sends 32 KiB; clients accept 4 MiB messages).
pub const BACKUP_CHUNK_BYTES: usize = 256 * 1024;

/// The backup as a response stream. A failure ends the stream with an error status, so a
/// client never mistakes a partial backup for a whole one.
pub fn backup_stream(
    node: Arc<RaftNode>,
) -> impl Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static {
    let (sender, receiver) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(status) = send_backup(&node, &sender) {
            let _ = sender.blocking_send(Err(status));
        }
    });
    ReceiverStream::new(receiver)
}

fn send_backup(
    node: &RaftNode,
    sender: &mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> Result<(), Status> {
    let started = std::time::Instant::now();
    let (mut file, summary) = node
        .reader
        .backup()
        .map_err(|error| Status::from(ApiError::Internal(format!("backup failed: {error}"))))?;
    let header = node.header(summary.header.current_revision);
    let mut remaining = summary.bytes;
    loop {
        let length = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(BACKUP_CHUNK_BYTES);
        let mut blob = vec![0u8; length];
        file.read_exact(&mut blob)
            .map_err(|error| Status::from(ApiError::Internal(format!("backup failed: {error}"))))?;
        remaining -= length as u64;
        let response = pb::SnapshotResponse {
            header,
            remaining_bytes: remaining,
            blob,
            version: ETCD_API_VERSION.to_string(),
        };
        if sender.blocking_send(Ok(response)).is_err() {
            tracing::info!("backup stream closed by the client before its end");
            return Ok(());
        }
        if remaining == 0 {
            break;
        }
    }
    tracing::info!(
        revision = summary.header.current_revision,
        records = summary.records,
        bytes = summary.bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "sent a backup"
    );
    Ok(())
}

/// Builds `config`'s data directory from `backup` for the cluster `config` describes: the
/// member gets the config's cluster id (from its `cluster_token` and `initial_members`) and
/// member id, and a pristine Raft state, so starting every member of the new cluster with its
/// config forms the cluster with the backup's data. The backup is verified (SHA-256, framing)
/// before anything is written; the data directory must not exist or be empty.
pub fn restore(config: &ServerConfig, backup: &Path) -> anyhow::Result<SnapshotSummary> {
    config.validate()?;
    let identity = Identity {
        cluster_id: config.cluster_id(),
        member_id: config.id,
    };
    beacon_storage::restore(backup, &config.data_dir, identity).with_context(|| {
        format!(
            "cannot restore {} into {}",
            backup.display(),
            config.data_dir.display()
        )
    })
}
