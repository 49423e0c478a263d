//! The replicated state machine: etcd MVCC over RocksDB records.
//!
//! The key index lives in memory ([`KvStore`]); records (one per revision) live in the `kv`
//! column family; leases ([`LeaseTable`]) live in memory and in `meta` under `lease/{id}`, their
//! attached keys derived from the records. Each `apply` call writes the records it produced, the applied log id, the
//! membership and the store revisions in one RocksDB batch: after a crash the state machine is
//! exactly at some applied log id and openraft replays the rest of the log from there. The batch
//! is not synced on its own; the Raft log is the durable record and the next log fsync (same WAL)
//! covers these writes too.

use std::io::Cursor;
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
use serde::{Deserialize, Serialize};

use crate::db::{cf, synced, CF_KV, CF_META, CF_SNAPSHOT};
use crate::error::StorageError;
use crate::{Command, CommandResponse, Member, NodeId, TypeConfig};

type RaftStorageError = openraft::StorageError<NodeId>;

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISION: &[u8] = b"revision";
const KEY_COMPACT_REVISION: &[u8] = b"compact_revision";
/// Lease records: `lease/` ‖ id (i64 big-endian) → bincode [`LeaseRecord`].
const LEASE_PREFIX: &[u8] = b"lease/";
/// The first key after every lease record ('/' + 1).
const LEASE_PREFIX_END: &[u8] = b"lease0";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

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

/// What a snapshot carries besides openraft's meta: every record and the store revisions.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    current_revision: i64,
    compact_revision: i64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    leases: Vec<(i64, LeaseRecord)>,
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
    /// Loads the applied state: meta, then every record into the key index.
    pub(crate) fn open(db: Arc<DB>) -> Result<Self, StorageError> {
        let last_applied = KvReader::get_meta(&db, KEY_APPLIED)?.flatten();
        let membership = KvReader::get_meta(&db, KEY_MEMBERSHIP)?.unwrap_or_default();
        let current_revision: Option<i64> = KvReader::get_meta(&db, KEY_REVISION)?;
        let compact_revision: i64 = KvReader::get_meta(&db, KEY_COMPACT_REVISION)?.unwrap_or(-1);
        let kv = match current_revision {
            None => KvStore::new(),
            Some(current_revision) => {
                let records = load_records(&db)?;
                KvStore::restore(records, current_revision, compact_revision)
            }
        };
        let leases =
            LeaseTable::restore(load_leases(&db)?, &kv, &DbRecords { db: &db }).map_err(|e| {
                StorageError::Corrupt {
                    what: "lease",
                    detail: e.to_string(),
                }
            })?;
        let state = Applied {
            kv,
            leases,
            last_applied,
            membership,
        };
        Ok(Self {
            reader: KvReader {
                db,
                state: Arc::new(RwLock::new(state)),
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

    fn notify(
        &self,
        state: &Applied,
        events: Vec<KvEvent>,
        lease_changes: Vec<LeaseChange>,
        reset: bool,
    ) {
        let Some((last, others)) = self.listeners.split_last() else {
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

    /// A read handle sharing this state machine's state.
    pub fn reader(&self) -> KvReader {
        self.reader.clone()
    }
}

/// Reads records from a snapshot payload (sorted by revision key) before it is written.
struct SnapshotRecords<'a>(&'a [(Vec<u8>, Vec<u8>)]);

impl RevisionReader for SnapshotRecords<'_> {
    fn read(&self, revision: Revision) -> Result<Option<KeyValue>, MvccError> {
        let key = revision.to_bytes();
        match self.0.binary_search_by(|(k, _)| k.as_slice().cmp(&key[..])) {
            Ok(at) => KeyValue::decode(self.0[at].1.as_slice())
                .map(Some)
                .map_err(|e| MvccError::Storage(e.to_string())),
            Err(_) => Ok(None),
        }
    }
}

fn load_records(db: &DB) -> Result<Vec<(Revision, KeyValue)>, StorageError> {
    let mut records = Vec::new();
    for item in db.iterator_cf(cf(db, CF_KV), IteratorMode::Start) {
        let (key, value) = item?;
        let revision = Revision::from_bytes(&key).ok_or_else(|| StorageError::Corrupt {
            what: "kv",
            detail: format!("bad revision key of {} bytes", key.len()),
        })?;
        let kv = KeyValue::decode(value.as_ref()).map_err(|e| StorageError::Corrupt {
            what: "kv",
            detail: e.to_string(),
        })?;
        records.push((revision, kv));
    }
    Ok(records)
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

fn lease_key(lease_id: i64) -> Vec<u8> {
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
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let db = self.reader.db.clone();
        let (payload, last_log_id, membership) = {
            let state = self.reader.read();
            let mut records = Vec::new();
            for item in db.iterator_cf(cf(&db, CF_KV), IteratorMode::Start) {
                let (key, value) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
                records.push((key.to_vec(), value.to_vec()));
            }
            let payload = SnapshotPayload {
                current_revision: state.kv.current_revision(),
                compact_revision: state.kv.compact_revision(),
                records,
                leases: state.leases.records().collect(),
            };
            (payload, state.last_applied, state.membership.clone())
        };
        let data =
            bincode::serialize(&payload).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.snapshot_seq += 1;
        let snapshot_id = match last_log_id {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id, log_id.index, self.snapshot_seq
            ),
            None => format!("none-{}", self.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: membership,
            snapshot_id,
        };
        save_snapshot(&db, &meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn save_snapshot(
    db: &DB,
    meta: &SnapshotMeta<NodeId, Member>,
    data: &[u8],
) -> Result<(), RaftStorageError> {
    let meta_bytes =
        bincode::serialize(meta).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_SNAPSHOT), KEY_SNAPSHOT_META, meta_bytes);
    batch.put_cf(cf(db, CF_SNAPSHOT), KEY_SNAPSHOT_DATA, data);
    db.write_opt(batch, &synced())
        .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
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
        self.notify(&state, events, lease_changes, false);
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_inner();
        let payload: SnapshotPayload =
            bincode::deserialize(&data).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let db = self.reader.db.clone();
        let mut records = Vec::with_capacity(payload.records.len());
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&db, CF_KV), &[0u8; 16][..], &[0xffu8; 17][..]);
        for (key, value) in &payload.records {
            let revision = Revision::from_bytes(key).ok_or_else(|| {
                StorageIOError::read_snapshot(None, &std::io::Error::other("bad revision key"))
            })?;
            let kv = KeyValue::decode(value.as_slice())
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            batch.put_cf(cf(&db, CF_KV), key, value);
            records.push((revision, kv));
        }
        let mut state = self.reader.write();
        let kv = KvStore::restore(records, payload.current_revision, payload.compact_revision);
        // Attachments are rebuilt from the snapshot's records, still in the batch: read them
        // from the restored index with the pending overlay.
        let snapshot_records = SnapshotRecords(&payload.records);
        let leases = LeaseTable::restore(payload.leases.iter().copied(), &kv, &snapshot_records)
            .map_err(|e| StorageIOError::read_snapshot(None, &std::io::Error::other(e)))?;
        batch.delete_range_cf(cf(&db, CF_META), LEASE_PREFIX, LEASE_PREFIX_END);
        let changes: Vec<LeaseChange> = payload
            .leases
            .iter()
            .map(|(id, record)| LeaseChange::Set(*id, *record))
            .collect();
        write_lease_changes(&mut batch, &db, &changes)?;
        state.kv = kv;
        state.leases = leases;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        write_applied_meta(&mut batch, &db, &state)?;
        db.write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.notify(&state, Vec::new(), Vec::new(), true);
        drop(state);
        save_snapshot(&db, meta, &data)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let db = &self.reader.db;
        let meta = db
            .get_cf(cf(db, CF_SNAPSHOT), KEY_SNAPSHOT_META)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let data = db
            .get_cf(cf(db, CF_SNAPSHOT), KEY_SNAPSHOT_DATA)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        match (meta, data) {
            (Some(meta), Some(data)) => {
                let meta = bincode::deserialize(&meta)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
            _ => Ok(None),
        }
    }
}
