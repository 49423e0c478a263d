//! The replicated state machine: etcd MVCC over RocksDB records.
//!
//! The key index lives in memory ([`KvStore`]); records (one per revision) live in the `kv`
//! column family; leases ([`LeaseTable`]) live in memory and in `meta` under `lease/{id}`, their
//! attached keys derived from the records. Each `apply` call writes the records it produced, the applied log id, the
//! membership and the store revisions in one RocksDB batch: after a crash the state machine is
//! exactly at some applied log id and openraft replays the rest of the log from there. The batch
//! is not synced on its own; the Raft log is the durable record and the next log fsync (same WAL)
//! covers these writes too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use beacon_mvcc::{
    pb, KvStore, LeaseChange, LeaseRecord, LeaseTable, Mutation, MvccError, Revision,
    RevisionReader,
};
use beacon_proto::mvccpb::{Event as KvEvent, KeyValue};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::Serialize;

use crate::db::{cf, CF_KV, CF_META};
use crate::error::StorageError;
use crate::snapshot_format::{SnapshotHeader, SnapshotSummary};
use crate::snapshot_store::{
    load_state, scan_options, verify_file, write_state, InstallTarget, SnapshotFile, SnapshotStore,
    KEY_INSTALL_PENDING,
};
use crate::{Command, CommandResponse, Identity, Member, NodeId, TypeConfig};

type RaftStorageError = openraft::StorageError<NodeId>;

pub(crate) const KEY_APPLIED: &[u8] = b"applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_REVISION: &[u8] = b"revision";
pub(crate) const KEY_COMPACT_REVISION: &[u8] = b"compact_revision";
/// Lease records: `lease/` ‖ id (i64 big-endian) → bincode [`LeaseRecord`].
pub(crate) const LEASE_PREFIX: &[u8] = b"lease/";
/// The first key after every lease record ('/' + 1).
pub(crate) const LEASE_PREFIX_END: &[u8] = b"lease0";

/// What one `apply` call (or a snapshot install) changed, handed to the [`ApplyListener`].
#[derive(Debug, Clone, Default)]
pub struct AppliedChanges {
    /// The store revision after the change.
    pub revision: i64,
    /// The compaction revision after the change.
    pub compact_revision: i64,
    /// Every event of the applied writes, in order: revisions never decrease and the events of
    /// one revision are contiguous. Each carries `prev_kv` when the key existed before.
    pub events: Vec<KvEvent>,
    /// A snapshot replaced the whole state: the events between the previous revision and
    /// `revision` are not listed and must be read from storage ([`KvReader::history`]), and
    /// the leases must be read again ([`KvReader::leases`]).
    pub reset: bool,
    /// Leases granted, renewed, revoked or expired, in order: a `Set` means the lease's deadline
    /// restarts now, at this apply.
    pub lease_changes: Vec<LeaseChange>,
}

/// Told about every change to the applied state, in order, exactly once, right after it is
/// written and while the state is still locked for writing: implementations must only hand the
/// changes on (a channel, a queue) and never read the [`KvReader`] from inside the call.
pub trait ApplyListener: Send + Sync + 'static {
    fn applied(&self, changes: AppliedChanges);
}

struct Applied {
    kv: KvStore,
    leases: LeaseTable,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
}

/// The state machine handed to openraft.
pub struct StateMachineStore {
    reader: KvReader,
    snapshot_seq: u64,
    listeners: Vec<Arc<dyn ApplyListener>>,
}

/// A cheap, cloneable read handle on the applied state, for the API services.
#[derive(Clone)]
pub struct KvReader {
    db: Arc<DB>,
    state: Arc<RwLock<Applied>>,
    snapshots: Arc<SnapshotStore>,
    identity: Identity,
}

/// The answer to etcd's `HashKV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32 (IEEE) of the records up to `revision`.
    pub hash: u32,
    /// The revision hashed up to (etcd's `hash_revision`).
    pub revision: i64,
    /// The compaction revision of the hashed state: hashes are comparable only when it is equal.
    pub compact_revision: i64,
}

/// Reads MVCC records from the `kv` column family.
struct DbRecords<'a> {
    db: &'a DB,
}

impl RevisionReader for DbRecords<'_> {
    fn read(&self, revision: Revision) -> Result<Option<KeyValue>, MvccError> {
        let bytes = self
            .db
            .get_cf(cf(self.db, CF_KV), revision.to_bytes())
            .map_err(|e| MvccError::Storage(e.to_string()))?;
        bytes
            .map(|bytes| KeyValue::decode(bytes.as_slice()))
            .transpose()
            .map_err(|e| MvccError::Storage(e.to_string()))
    }
}

impl KvReader {
    fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A panic while holding the lock already stopped the node; the data is still consistent
        // because records and the index change together under the write lock.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An etcd Range over the applied state.
    pub fn range(&self, request: &pb::RangeRequest) -> Result<pb::RangeResponse, MvccError> {
        let state = self.read();
        state.kv.range(&DbRecords { db: &self.db }, request)
    }

    /// A read-only etcd Txn over the applied state.
    pub fn read_txn(&self, request: &pb::TxnRequest) -> Result<pb::TxnResponse, MvccError> {
        let state = self.read();
        state.kv.read_txn(&DbRecords { db: &self.db }, request)
    }

    /// The current store revision (etcd's header revision).
    pub fn current_revision(&self) -> i64 {
        self.read().kv.current_revision()
    }

    /// The compaction revision: history below it is gone.
    pub fn compact_revision(&self) -> i64 {
        self.read().kv.compact_revision()
    }

    /// The events of revisions `from..=to` read back from storage, in order, for a watcher
    /// catching up. Reads about `limit` records, never splitting a revision (a txn's events stay
    /// together); the caller continues from the last event's revision + 1. Fails with
    /// `Compacted` when `from` is below the compaction revision.
    pub fn history(&self, from: i64, to: i64, limit: usize) -> Result<Vec<KvEvent>, MvccError> {
        let state = self.read();
        if from < state.kv.compact_revision() {
            return Err(MvccError::Compacted);
        }
        let records = DbRecords { db: &self.db };
        let start = Revision { main: from, sub: 0 }.to_bytes();
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_KV),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut events = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| MvccError::Storage(e.to_string()))?;
            let revision = Revision::from_bytes(&key)
                .ok_or_else(|| MvccError::Storage("bad revision key in kv".to_string()))?;
            if revision.main > to {
                break;
            }
            let last_main = events
                .last()
                .and_then(|e: &KvEvent| e.kv.as_ref())
                .map(|kv| kv.mod_revision);
            if events.len() >= limit && last_main != Some(revision.main) {
                break;
            }
            let record =
                KeyValue::decode(value.as_ref()).map_err(|e| MvccError::Storage(e.to_string()))?;
            events.push(state.kv.event_for_record(&records, revision, record)?);
        }
        Ok(events)
    }

    /// Every granted lease, by id.
    pub fn leases(&self) -> Vec<(i64, LeaseRecord)> {
        self.read().leases.records().collect()
    }

    /// One lease and the keys attached to it.
    pub fn lease(&self, lease_id: i64) -> Option<(LeaseRecord, Vec<Vec<u8>>)> {
        let state = self.read();
        let record = state.leases.get(lease_id)?;
        Some((record, state.leases.keys(lease_id)))
    }

    /// The last applied Raft log id.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.read().last_applied
    }

    /// The membership as of the last applied entry.
    pub fn membership(&self) -> StoredMembership<NodeId, Member> {
        self.read().membership.clone()
    }

    /// Flushes the memtables and compacts every column family fully, so deleted and
    /// compacted-away records give their space back (etcd's defragment, for RocksDB).
    pub fn compact_storage(&self) -> Result<(), rocksdb::Error> {
        for name in crate::db::COLUMN_FAMILIES {
            let handle = cf(&self.db, name);
            self.db.flush_cf(handle)?;
            self.db
                .compact_range_cf(handle, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Bytes the database occupies on disk (SST files plus memtables), for Maintenance.Status.
    pub fn db_size(&self) -> i64 {
        let property = |name: &str| -> u64 {
            [crate::db::CF_KV, crate::db::CF_RAFT_LOG, CF_META]
                .iter()
                .filter_map(|family| {
                    self.db
                        .property_int_value_cf(cf(&self.db, family), name)
                        .ok()
                        .flatten()
                })
                .sum()
        };
        let bytes =
            property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables");
        i64::try_from(bytes).unwrap_or(i64::MAX)
    }

    /// The snapshot header describing `state` on this member.
    fn header(&self, state: &Applied) -> SnapshotHeader {
        SnapshotHeader {
            current_revision: state.kv.current_revision(),
            compact_revision: state.kv.compact_revision(),
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            applied_index: state.last_applied.map(|id| id.index).unwrap_or(0),
            applied_term: state.last_applied.map(|id| id.leader_id.term).unwrap_or(0),
        }
    }

    /// A consistent backup of the applied state, in the snapshot format (the same stream a Raft
    /// snapshot is, ending with its SHA-256): written to a temporary file in the snapshot
    /// directory, which is unlinked once open, so the returned handle is all that is left of it.
    /// Blocking; memory stays bounded whatever the size of the state.
    pub fn backup(&self) -> Result<(std::fs::File, SnapshotSummary), StorageError> {
        let (view, header) = {
            let state = self.read();
            (self.db.snapshot(), self.header(&state))
        };
        let path = self.snapshots.new_path("backup", "tmp");
        let written = write_state(&self.db, &view, header, &path);
        drop(view);
        let opened = written.and_then(|summary| {
            std::fs::File::open(&path)
                .map(|file| (file, summary))
                .map_err(|e| StorageError::io(format!("cannot open {}", path.display()), e))
        });
        let _ = std::fs::remove_file(&path);
        opened
    }

    /// etcd's `HashKV`: a CRC-32 of every MVCC record (revision key and encoded record) up to
    /// `revision` (0: the current revision), read from a consistent view. Members that applied
    /// the same entries and compacted at the same revision agree on it. Blocking.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        let (view, current, compact_revision) = {
            let state = self.read();
            (
                self.db.snapshot(),
                state.kv.current_revision(),
                state.kv.compact_revision(),
            )
        };
        let revision = if revision <= 0 { current } else { revision };
        if revision > current {
            return Err(MvccError::FutureRevision);
        }
        if revision < compact_revision {
            return Err(MvccError::Compacted);
        }
        let end = Revision::new(revision.saturating_add(1), 0).to_bytes();
        let mut hasher = crc32fast::Hasher::new();
        for item in view.iterator_cf_opt(cf(&self.db, CF_KV), scan_options(), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| MvccError::Storage(e.to_string()))?;
            if key.as_ref() >= &end[..] {
                break;
            }
            hasher.update(&key);
            hasher.update(&value);
        }
        Ok(KvHash {
            hash: hasher.finalize(),
            revision,
            compact_revision,
        })
    }

    /// etcd's `Hash`: a CRC-32 of the whole replicated state (every record, every lease, the
    /// store and compaction revisions), read from a consistent view; equal on members at the
    /// same applied entry. Blocking.
    pub fn hash(&self) -> Result<(u32, i64), StorageError> {
        let (view, current, compact) = {
            let state = self.read();
            (
                self.db.snapshot(),
                state.kv.current_revision(),
                state.kv.compact_revision(),
            )
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&current.to_be_bytes());
        hasher.update(&compact.to_be_bytes());
        for item in view.iterator_cf_opt(cf(&self.db, CF_KV), scan_options(), IteratorMode::Start) {
            let (key, value) = item?;
            hasher.update(&key);
            hasher.update(&value);
        }
        let leases = view.iterator_cf_opt(
            cf(&self.db, CF_META),
            scan_options(),
            IteratorMode::From(LEASE_PREFIX, rocksdb::Direction::Forward),
        );
        for item in leases {
            let (key, value) = item?;
            if !key.starts_with(LEASE_PREFIX) {
                break;
            }
            hasher.update(&key);
            hasher.update(&value);
        }
        Ok((hasher.finalize(), current))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &DB,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let bytes = db.get_cf(cf(db, CF_META), key)?;
        bytes
            .map(|bytes| bincode::deserialize(&bytes))
            .transpose()
            .map_err(|e| StorageError::Corrupt {
                what: "meta",
                detail: e.to_string(),
            })
    }
}

impl StateMachineStore {
    /// Loads the applied state: finishes an install a crash interrupted (see
    /// [`crate::snapshot_store`]), then reads the meta and streams every record into the key index.
    pub(crate) fn open(
        db: Arc<DB>,
        data_dir: &Path,
        identity: Identity,
    ) -> Result<Self, StorageError> {
        let snapshots = Arc::new(SnapshotStore::open(db.clone(), data_dir)?);
        if db.get_cf(cf(&db, CF_META), KEY_INSTALL_PENDING)?.is_some() {
            let (meta, path) = snapshots.current()?.ok_or_else(|| StorageError::Corrupt {
                what: "snapshot",
                detail: "an install was interrupted and its snapshot is not recorded".into(),
            })?;
            tracing::info!(snapshot = %meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
            verify_file(&path)?;
            load_state(
                &db,
                &path,
                &InstallTarget {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                    reset_lease_generations: false,
                },
            )?;
        }
        let state = load_applied(&db)?;
        Ok(Self {
            reader: KvReader {
                db,
                state: Arc::new(RwLock::new(state)),
                snapshots,
                identity,
            },
            snapshot_seq: 0,
            listeners: Vec::new(),
        })
    }

    /// Registers a listener told about every applied change (the watch hub, the lease keeper),
    /// in registration order.
    pub fn add_listener(&mut self, listener: Arc<dyn ApplyListener>) {
        self.listeners.push(listener);
    }

    /// A read handle sharing this state machine's state.
    pub fn reader(&self) -> KvReader {
        self.reader.clone()
    }
}

/// Tells every listener, in registration order, about a change to `state`.
fn notify(
    listeners: &[Arc<dyn ApplyListener>],
    state: &Applied,
    events: Vec<KvEvent>,
    lease_changes: Vec<LeaseChange>,
    reset: bool,
) {
    let Some((last, others)) = listeners.split_last() else {
        return;
    };
    let changes = AppliedChanges {
        revision: state.kv.current_revision(),
        compact_revision: state.kv.compact_revision(),
        events,
        reset,
        lease_changes,
    };
    for listener in others {
        listener.applied(changes.clone());
    }
    last.applied(changes);
}

/// Reads the applied state from the column families: the meta, the key index (records streamed
/// one at a time: only keys and revisions stay in memory) and the leases.
fn load_applied(db: &DB) -> Result<Applied, StorageError> {
    let last_applied = KvReader::get_meta(db, KEY_APPLIED)?.flatten();
    let membership = KvReader::get_meta(db, KEY_MEMBERSHIP)?.unwrap_or_default();
    let current_revision: Option<i64> = KvReader::get_meta(db, KEY_REVISION)?;
    let compact_revision: i64 = KvReader::get_meta(db, KEY_COMPACT_REVISION)?.unwrap_or(-1);
    let kv = match current_revision {
        None => KvStore::new(),
        Some(current_revision) => {
            let mut failure = None;
            let records = db
                .iterator_cf_opt(cf(db, CF_KV), scan_options(), IteratorMode::Start)
                .map_while(|item| match decode_record(item) {
                    Ok(record) => Some(record),
                    Err(error) => {
                        failure = Some(error);
                        None
                    }
                });
            let kv = KvStore::restore(records, current_revision, compact_revision);
            if let Some(error) = failure {
                return Err(error);
            }
            kv
        }
    };
    let leases = LeaseTable::restore(load_leases(db)?, &kv, &DbRecords { db }).map_err(|e| {
        StorageError::Corrupt {
            what: "lease",
            detail: e.to_string(),
        }
    })?;
    Ok(Applied {
        kv,
        leases,
        last_applied,
        membership,
    })
}

/// A `kv` entry as a RocksDB iterator yields it.
type RawEntry = (Box<[u8]>, Box<[u8]>);

fn decode_record(
    item: Result<RawEntry, rocksdb::Error>,
) -> Result<(Revision, KeyValue), StorageError> {
    let (key, value) = item?;
    let revision = Revision::from_bytes(&key).ok_or_else(|| StorageError::Corrupt {
        what: "kv",
        detail: format!("bad revision key of {} bytes", key.len()),
    })?;
    let kv = KeyValue::decode(value.as_ref()).map_err(|e| StorageError::Corrupt {
        what: "kv",
        detail: e.to_string(),
    })?;
    Ok((revision, kv))
}

fn load_leases(db: &DB) -> Result<Vec<(i64, LeaseRecord)>, StorageError> {
    let mut leases = Vec::new();
    let iter = db.iterator_cf(
        cf(db, CF_META),
        IteratorMode::From(LEASE_PREFIX, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        let Some(id) = key.strip_prefix(LEASE_PREFIX) else {
            break;
        };
        let corrupt = |detail: String| StorageError::Corrupt {
            what: "lease",
            detail,
        };
        let id = <[u8; 8]>::try_from(id)
            .map(i64::from_be_bytes)
            .map_err(|_| corrupt(format!("bad lease key of {} bytes", key.len())))?;
        let record = bincode::deserialize(&value).map_err(|e| corrupt(e.to_string()))?;
        leases.push((id, record));
    }
    Ok(leases)
}

pub(crate) fn lease_key(lease_id: i64) -> Vec<u8> {
    [LEASE_PREFIX, &lease_id.to_be_bytes()].concat()
}

/// Writes every lease change into the batch.
fn write_lease_changes(
    batch: &mut WriteBatch,
    db: &DB,
    changes: &[LeaseChange],
) -> Result<(), RaftStorageError> {
    for change in changes {
        match change {
            LeaseChange::Set(id, record) => put_meta(batch, db, &lease_key(*id), record)?,
            LeaseChange::Removed(id) => batch.delete_cf(cf(db, CF_META), lease_key(*id)),
        }
    }
    Ok(())
}

fn put_meta<T: Serialize>(
    batch: &mut WriteBatch,
    db: &DB,
    key: &[u8],
    value: &T,
) -> Result<(), RaftStorageError> {
    let bytes = bincode::serialize(value).map_err(|e| StorageIOError::write_state_machine(&e))?;
    batch.put_cf(cf(db, CF_META), key, bytes);
    Ok(())
}

fn write_applied_meta(
    batch: &mut WriteBatch,
    db: &DB,
    state: &Applied,
) -> Result<(), RaftStorageError> {
    put_meta(batch, db, KEY_APPLIED, &state.last_applied)?;
    put_meta(batch, db, KEY_MEMBERSHIP, &state.membership)?;
    put_meta(batch, db, KEY_REVISION, &state.kv.current_revision())?;
    put_meta(
        batch,
        db,
        KEY_COMPACT_REVISION,
        &state.kv.compact_revision(),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Writes the applied state to a snapshot file from a consistent RocksDB view (applies go on
    /// meanwhile) and makes it the current snapshot.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        self.snapshot_seq += 1;
        let reader = self.reader.clone();
        let sequence = self.snapshot_seq;
        let (meta, file, path) =
            tokio::task::spawn_blocking(move || build_snapshot_file(&reader, sequence))
                .await
                .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e)))?
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::from_std(file, path)),
        })
    }
}

/// Builds a snapshot file of the applied state and publishes it; returns its meta and an open
/// handle (still readable if a newer snapshot replaced it meanwhile).
fn build_snapshot_file(
    reader: &KvReader,
    sequence: u64,
) -> Result<(SnapshotMeta<NodeId, Member>, std::fs::File, PathBuf), StorageError> {
    let started = std::time::Instant::now();
    let db = &reader.db;
    let (view, header, last_applied, membership) = {
        let state = reader.read();
        // Taken under the lock: applies write their batch while holding it for writing, so the
        // view holds exactly the state at `last_applied`.
        let view = db.snapshot();
        let header = reader.header(&state);
        (view, header, state.last_applied, state.membership.clone())
    };
    let building = reader.snapshots.new_path("building", "tmp");
    let summary = write_state(db, &view, header, &building);
    drop(view);
    let summary = summary.inspect_err(|_| {
        let _ = std::fs::remove_file(&building);
    })?;
    let snapshot_id = match last_applied {
        Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, sequence),
        None => format!("none-{sequence}"),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    };
    let file = std::fs::File::open(&building)
        .map_err(|e| StorageError::io(format!("cannot open {}", building.display()), e))?;
    let published = reader.snapshots.publish(&meta, &building, false, |_| {})?;
    tracing::info!(
        snapshot = %meta.snapshot_id,
        records = summary.records,
        leases = summary.leases,
        bytes = summary.bytes,
        took_ms = started.elapsed().as_millis() as u64,
        current = published.is_some(),
        "built a snapshot"
    );
    Ok((meta, file, published.unwrap_or(building)))
}

/// Verifies a received snapshot file, makes it current with the install marker, and replaces
/// the state with it under the write lock; then the listeners hear of a reset. A file that fails
/// verification is deleted and the state left untouched; the error stops the member (openraft
/// treats every storage error as fatal), which is right: its leader's snapshot is corrupt.
fn install_snapshot_file(
    reader: &KvReader,
    listeners: &[Arc<dyn ApplyListener>],
    meta: &SnapshotMeta<NodeId, Member>,
    received: &Path,
) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let db = &reader.db;
    let received = &reader.snapshots.adopt(received)?;
    let summary = verify_file(received).inspect_err(|_| {
        let _ = std::fs::remove_file(received);
    })?;
    let path = reader
        .snapshots
        .publish(meta, received, true, |batch| {
            batch.put_cf(cf(db, CF_META), KEY_INSTALL_PENDING, b"");
        })?
        .ok_or_else(|| StorageError::Corrupt {
            what: "snapshot",
            detail: "an installed snapshot was not made current".into(),
        })?;
    let mut state = reader.write();
    load_state(
        db,
        &path,
        &InstallTarget {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            reset_lease_generations: false,
        },
    )?;
    // Free the old key index before building the new one: one index in memory at a time.
    state.kv = KvStore::new();
    state.leases = LeaseTable::default();
    *state = load_applied(db)?;
    notify(listeners, &state, Vec::new(), Vec::new(), true);
    tracing::info!(
        snapshot = %meta.snapshot_id,
        records = summary.records,
        leases = summary.leases,
        bytes = summary.bytes,
        revision = state.kv.current_revision(),
        took_ms = started.elapsed().as_millis() as u64,
        "installed a snapshot"
    );
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), RaftStorageError> {
        let state = self.reader.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let db = self.reader.db.clone();
        let mut state = self.reader.write();
        let mut responses = Vec::new();
        let mut events = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResponse::None
                }
                EntryPayload::Normal(Command::Writes(batch)) => {
                    let requests = batch
                        .writes()
                        .map_err(|e| StorageIOError::apply(entry.log_id, &e))?;
                    let mut results = Vec::with_capacity(requests.len());
                    let state = &mut *state;
                    for request in &requests {
                        let result = beacon_mvcc::apply(
                            &mut state.kv,
                            &mut state.leases,
                            &DbRecords { db: &db },
                            request,
                            entry.log_id.index,
                        )
                        .map(|applied| {
                            events.extend(applied.events);
                            applied.response
                        });
                        if let Err(MvccError::Storage(detail)) = &result {
                            let error = std::io::Error::other(detail.clone());
                            return Err(StorageIOError::apply(entry.log_id, &error).into());
                        }
                        results.push(result);
                    }
                    CommandResponse::Writes(results)
                }
            };
            responses.push(response);
        }
        let mut batch = WriteBatch::default();
        for mutation in state.kv.take_mutations() {
            match mutation {
                Mutation::PutRecord(revision, kv) => {
                    batch.put_cf(cf(&db, CF_KV), revision.to_bytes(), kv.encode_to_vec());
                }
                Mutation::DeleteRecord(revision) => {
                    batch.delete_cf(cf(&db, CF_KV), revision.to_bytes());
                }
            }
        }
        let lease_changes = state.leases.take_changes();
        write_lease_changes(&mut batch, &db, &lease_changes)?;
        write_applied_meta(&mut batch, &db, &state)?;
        db.write(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        notify(&self.listeners, &state, events, lease_changes, false);
        metrics::histogram!(crate::METRIC_APPLY_SECONDS).record(started.elapsed());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            reader: self.reader.clone(),
            snapshot_seq: self.snapshot_seq + 1000,
            // A snapshot builder never applies anything.
            listeners: Vec::new(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, RaftStorageError> {
        let file = self
            .reader
            .snapshots
            .begin_receiving()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), RaftStorageError> {
        let signature = meta.signature();
        let received = snapshot
            .finish()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?;
        let reader = self.reader.clone();
        let listeners = self.listeners.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            install_snapshot_file(&reader, &listeners, &meta, &received)
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(signature.clone()), &std::io::Error::other(e))
        })?
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let current = self
            .reader
            .snapshots
            .open_current()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

#[cfg(test)]
mod tests {
    use beacon_mvcc::WriteRequest;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::WriteBatch as Writes;

    const IDENTITY: Identity = Identity {
        cluster_id: 1,
        member_id: 1,
    };

    async fn put_many(state_machine: &mut StateMachineStore, first_index: u64, prefix: &str) {
        for index in first_index..first_index + 10 {
            let writes = (0..10)
                .map(|n| {
                    WriteRequest::Put(pb::PutRequest {
                        key: format!("{prefix}/{n}").into_bytes(),
                        value: vec![b'x'; 500],
                        ..Default::default()
                    })
                })
                .collect();
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Command::Writes(Writes::from_writes(writes))),
            };
            state_machine.apply(vec![entry]).await.expect("apply");
        }
    }

    /// A crash in the middle of an install (marker written, old state half deleted, new state
    /// half written) is finished when the member opens again, before anything reads the state.
    #[tokio::test]
    async fn an_install_interrupted_by_a_crash_is_finished_at_open() {
        let source_dir = tempfile::tempdir().expect("temp dir");
        let mut source = crate::open(source_dir.path(), IDENTITY).expect("open");
        put_many(&mut source.state_machine, 1, "new").await;
        let snapshot = source
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let target_dir = tempfile::tempdir().expect("temp dir");
        {
            let mut target = crate::open(target_dir.path(), IDENTITY).expect("open");
            put_many(&mut target.state_machine, 1, "old").await;
            let reader = target.state_machine.reader();
            let db = &reader.db;
            // What `install_snapshot_file` does before the crash: the file made current with
            // the marker, then the first batch (old records gone, a few new ones written).
            let received = reader
                .snapshots
                .adopt(snapshot.snapshot.path())
                .expect("adopt");
            reader
                .snapshots
                .publish(&snapshot.meta, &received, true, |batch| {
                    batch.put_cf(cf(db, CF_META), KEY_INSTALL_PENDING, b"");
                })
                .expect("publish");
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(db, CF_KV), &[0u8; 16][..], &[0xffu8; 17][..]);
            for item in source
                .state_machine
                .reader()
                .db
                .iterator_cf(
                    cf(&source.state_machine.reader().db, CF_KV),
                    IteratorMode::Start,
                )
                .take(7)
            {
                let (key, value) = item.expect("record");
                batch.put_cf(cf(db, CF_KV), key, value);
            }
            db.write(batch).expect("first batch");
        }
        let reopened = crate::open(target_dir.path(), IDENTITY).expect("reopen");
        let expected = source.state_machine.reader();
        let actual = reopened.state_machine.reader();
        assert_eq!(actual.last_applied(), snapshot.meta.last_log_id);
        assert_eq!(actual.current_revision(), expected.current_revision());
        assert_eq!(actual.hash().expect("hash"), expected.hash().expect("hash"));
        let all = pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let keys = |reader: &KvReader| -> Vec<Vec<u8>> {
            reader
                .range(&all)
                .expect("range")
                .kvs
                .into_iter()
                .map(|kv| kv.key)
                .collect()
        };
        assert_eq!(keys(&actual), keys(&expected));
        assert!(actual
            .db
            .get_cf(cf(&actual.db, CF_META), KEY_INSTALL_PENDING)
            .expect("meta")
            .is_none());
    }
}
