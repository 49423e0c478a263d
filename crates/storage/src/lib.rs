//! RocksDB persistence for a Beacon member: one database per node holding the Raft log, the Raft
//! vote, the state machine (etcd MVCC records) and the node's identity, in column families.
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage`. Appends are written at once (so they are
//!   readable for replication) and acknowledged to openraft only after a group fsync of the
//!   write-ahead log by the [`log_store`] syncer thread: the log is durable before a write is
//!   acknowledged, and concurrent appends share one fsync.
//! - [`StateMachineStore`] implements `RaftStateMachine`: it applies commands to the MVCC
//!   [`beacon_mvcc::KvStore`] and writes the resulting records together with the applied log id in
//!   one atomic batch, so a restart neither loses nor re-applies anything.
//! - Raft snapshots are files streamed from a consistent RocksDB view and installed in bounded
//!   batches, crash-safe (module `snapshot_store`); backups are the same stream
//!   ([`snapshot_format`]), and [`restore`] builds a new member's data directory from one.
//! - [`Identity`] is the cluster and member id a data directory belongs to.
//!
//! Timings are recorded through the `metrics` facade (names below); the server installs the
//! recorder and serves them, so nothing here knows about Prometheus or HTTP.

mod command;
mod db;
mod error;
mod log_store;
pub mod snapshot_format;
mod snapshot_store;
mod state_machine;

pub use command::{Command, CommandResponse, Member, TypeConfig, WriteBatch};
pub use db::{open, restore, stored_identity, Identity, OpenedStore, STORAGE_FORMAT};
pub use error::StorageError;
pub use log_store::LogStore;
pub use snapshot_format::{SnapshotHeader, SnapshotSummary};
pub use snapshot_store::{SnapshotFile, INSTALL_BATCH_BYTES};
pub use state_machine::{AppliedChanges, ApplyListener, KvHash, KvReader, StateMachineStore};

/// openraft's node id: the etcd member id of a Beacon member.
pub type NodeId = u64;

/// Histogram: seconds each group fsync of the write-ahead log took (the Raft log's durability).
pub const METRIC_WAL_FSYNC_SECONDS: &str = "beacon_disk_wal_fsync_duration_seconds";
/// Histogram: seconds each `apply` call took (a run of committed entries, RocksDB write included).
pub const METRIC_APPLY_SECONDS: &str = "beacon_server_apply_duration_seconds";
