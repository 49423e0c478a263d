//! Opening a member's RocksDB database: column families, tuning and the identity check.
//!
//! Column families (the persistence layout, also in ARCHITECTURE.md):
//! - `raft_log`: log index (u64, big-endian) -> bincode `Entry<TypeConfig>`;
//! - `raft_state`: `vote`, `committed`, `last_purged` -> bincode;
//! - `kv`: MVCC revision (main, sub; 16 bytes big-endian) -> protobuf `mvccpb.KeyValue`
//!   (a record with version 0 is a tombstone);
//! - `meta`: `cluster_id`, `member_id`, `format` (u64 BE), `applied` and `membership` (bincode),
//!   `revision` and `compact_revision` (i64 BE), written atomically with the records they describe;
//! - `snapshot`: `current` -> bincode openraft `SnapshotMeta` and the file name of the current
//!   Raft snapshot in `{data_dir}/snapshots/` (see [`crate::snapshot_store`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::error::StorageError;
use crate::log_store::LogStore;
use crate::snapshot_format::SnapshotSummary;
use crate::snapshot_store::{load_state, sync_dir, verify_file, InstallTarget};
use crate::state_machine::StateMachineStore;

pub(crate) const CF_RAFT_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_STATE: &str = "raft_state";
pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
pub(crate) const COLUMN_FAMILIES: [&str; 5] =
    [CF_RAFT_LOG, CF_RAFT_STATE, CF_KV, CF_META, CF_SNAPSHOT];

const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const KEY_MEMBER_ID: &[u8] = b"member_id";
const KEY_FORMAT: &[u8] = b"format";
/// The on-disk format this build reads and writes. Bump it when an encoding changes (the Raft
/// command enum, a column family's layout); a directory with another format is refused with a
/// clear message instead of failing to decode somewhere deep in openraft.
pub const STORAGE_FORMAT: u64 = 4;

/// The cluster and member a data directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// etcd's cluster_id: derived from the initial membership, equal on every member.
    pub cluster_id: u64,
    /// etcd's member_id: the node id.
    pub member_id: u64,
}

/// Everything opened from one data directory.
pub struct OpenedStore {
    /// The Raft log store, handed to openraft.
    pub log_store: LogStore,
    /// The state machine, handed to openraft; clone its [`crate::KvReader`] for reads first.
    pub state_machine: StateMachineStore,
    /// True when the directory was created by this call (a pristine member).
    pub fresh: bool,
}

/// Opens (creating if needed) the database in `path` for `identity`. A directory created for
/// another cluster or member is refused, so a misconfigured node never joins the wrong cluster.
pub fn open(path: &Path, identity: Identity) -> Result<OpenedStore, StorageError> {
    let db = open_db(path)?;
    let fresh = check_identity(&db, path, identity)?;
    let log_store = LogStore::new(db.clone())?;
    let state_machine = StateMachineStore::open(db, path, identity)?;
    Ok(OpenedStore {
        log_store,
        state_machine,
        fresh,
    })
}

fn open_db(path: &Path) -> Result<Arc<DB>, StorageError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // One WAL for all column families: a single WAL sync makes log entries, votes and state
    // machine records durable together.
    options.set_max_background_jobs(2);
    options.set_bytes_per_sync(1 << 20);
    let descriptors = COLUMN_FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(
        &options,
        path,
        descriptors,
    )?))
}

/// Builds the data directory of a member of a **new** cluster from a backup (the stream
/// `Maintenance.Snapshot` sends): the backup is verified end to end first (a truncated or
/// corrupted file is refused before anything is created), then written into a staging
/// directory beside `data_dir` that is renamed into place only when complete, so a failed
/// restore leaves nothing behind. `data_dir` must not exist or be empty.
///
/// The member gets `identity` (the new cluster's id) and a pristine Raft state: started with
/// the new cluster's config it initializes the cluster as a fresh member would, and the MVCC
/// state (revisions, history since the last compaction, leases) continues from the backup.
/// Lease generations restart at 0 (they are log indexes of the old cluster).
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    identity: Identity,
) -> Result<SnapshotSummary, StorageError> {
    let summary = verify_file(backup)?;
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(|e| StorageError::io(format!("cannot read {}", data_dir.display()), e))?;
        if entries.next().is_some() {
            return Err(StorageError::NotEmpty(data_dir.display().to_string()));
        }
    }
    let name = data_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            StorageError::io(
                format!("{} has no directory name", data_dir.display()),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| StorageError::io(format!("cannot create {}", parent.display()), e))?;
    let staging = parent.join(format!(".{name}.restoring"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| StorageError::io(format!("cannot remove {}", staging.display()), e))?;
    }
    let built = (|| {
        let db = open_db(&staging)?;
        check_identity(&db, &staging, identity)?;
        load_state(
            &db,
            backup,
            &InstallTarget {
                last_applied: None,
                membership: Default::default(),
                reset_lease_generations: true,
            },
        )?;
        db.flush()?;
        Ok::<_, StorageError>(())
    })();
    if let Err(error) = built {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .map_err(|e| StorageError::io(format!("cannot replace {}", data_dir.display()), e))?;
    }
    std::fs::rename(&staging, data_dir).map_err(|e| {
        StorageError::io(
            format!("cannot move the restored data to {}", data_dir.display()),
            e,
        )
    })?;
    sync_dir(&parent)?;
    Ok(summary)
}

/// The identity recorded in the data directory at `path`, or `None` when there is no database
/// there yet or it has none (a member that never started).
pub fn stored_identity(path: &Path) -> Result<Option<Identity>, StorageError> {
    if !path.join("CURRENT").exists() {
        return Ok(None);
    }
    let db = DB::open_cf_for_read_only(&Options::default(), path, COLUMN_FAMILIES, false)?;
    let meta = cf(&db, CF_META);
    let cluster_id = db
        .get_cf(meta, KEY_CLUSTER_ID)?
        .map(|v| decode_u64(&v))
        .transpose()?;
    let member_id = db
        .get_cf(meta, KEY_MEMBER_ID)?
        .map(|v| decode_u64(&v))
        .transpose()?;
    Ok(match (cluster_id, member_id) {
        (Some(cluster_id), Some(member_id)) => Some(Identity {
            cluster_id,
            member_id,
        }),
        _ => None,
    })
}

/// Returns true when the directory had no identity yet (and records `identity` in it).
fn check_identity(db: &DB, path: &Path, identity: Identity) -> Result<bool, StorageError> {
    let meta = cf(db, CF_META);
    let stored_cluster = db
        .get_cf(meta, KEY_CLUSTER_ID)?
        .map(|v| decode_u64(&v))
        .transpose()?;
    let stored_member = db
        .get_cf(meta, KEY_MEMBER_ID)?
        .map(|v| decode_u64(&v))
        .transpose()?;
    match (stored_cluster, stored_member) {
        (Some(cluster_id), Some(member_id)) => {
            let format = db
                .get_cf(meta, KEY_FORMAT)?
                .map(|v| decode_u64(&v))
                .transpose()?;
            if format != Some(STORAGE_FORMAT) {
                return Err(StorageError::IncompatibleFormat {
                    path: path.display().to_string(),
                    found: format.map_or_else(|| "none".to_string(), |f| f.to_string()),
                    expected: STORAGE_FORMAT,
                });
            }
            if cluster_id != identity.cluster_id || member_id != identity.member_id {
                return Err(StorageError::IdentityMismatch {
                    path: path.display().to_string(),
                    found: format!("cluster {cluster_id:016x} member {member_id:x}"),
                    expected: format!(
                        "cluster {:016x} member {:x}",
                        identity.cluster_id, identity.member_id
                    ),
                });
            }
            Ok(false)
        }
        _ => {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(meta, KEY_CLUSTER_ID, identity.cluster_id.to_be_bytes());
            batch.put_cf(meta, KEY_MEMBER_ID, identity.member_id.to_be_bytes());
            batch.put_cf(meta, KEY_FORMAT, STORAGE_FORMAT.to_be_bytes());
            write_synced(db, batch)?;
            Ok(true)
        }
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the database is opened")
}

/// RocksDB 7.8 aborts on an assertion (`sync_without_flush_called_`) when a WAL sync
/// (`FlushWAL(true)`) runs while a write with `sync` set syncs the same WAL. Every synced write
/// and every WAL sync in this process takes this lock first (see [`write_synced`],
/// [`flush_wal_synced`]); the syncer's group commit still batches all appends behind one sync.
static WAL_SYNC: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wal_sync_lock() -> std::sync::MutexGuard<'static, ()> {
    WAL_SYNC
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `batch` with `sync` set (see [`WAL_SYNC`]).
pub(crate) fn write_synced(db: &DB, batch: rocksdb::WriteBatch) -> Result<(), rocksdb::Error> {
    let _serialized = wal_sync_lock();
    db.write_opt(batch, &synced())
}

/// Flushes and syncs the WAL (see [`WAL_SYNC`]).
pub(crate) fn flush_wal_synced(db: &DB) -> Result<(), rocksdb::Error> {
    let _serialized = wal_sync_lock();
    db.flush_wal(true)
}

fn synced() -> rocksdb::WriteOptions {
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    options
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        what: "meta",
        detail: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}
