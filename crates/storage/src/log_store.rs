//! The Raft log in RocksDB, with group fsync.
//!
//! `append` writes the entries at once without sync, so they are immediately readable (the
//! leader replicates entries before its own flush completes), and hands openraft's completion
//! callback to the syncer thread. The syncer drains every pending callback, syncs the WAL once
//! (`FlushWAL(sync)`), then acknowledges them all: every entry is on disk before openraft counts
//! it, and a burst of appends costs one fsync.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::db::{cf, CF_RAFT_LOG, CF_RAFT_STATE};
use crate::error::StorageError;
use crate::{NodeId, TypeConfig};

type RaftStorageError = openraft::StorageError<NodeId>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// openraft's log storage over the member's RocksDB database. Cheap to clone (it is also its
/// own log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Result<Self, StorageError> {
        let (syncer, pending) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // A weak handle: the database closes when the stores are dropped, not when this thread
        // gets around to noticing (reopening a directory must not find it still locked).
        let sync_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || run_syncer(&sync_db, &pending))
            .map_err(StorageError::Thread)?;
        Ok(Self { db, syncer })
    }

    fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, RaftStorageError> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_STATE), key)
            .map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|bytes| bincode::deserialize(&bytes))
            .transpose()
            .map_err(|e| StorageIOError::read(&e).into())
    }

    fn put_state<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), RaftStorageError> {
        let bytes = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT_STATE), key, bytes);
        let written = if sync {
            crate::db::write_synced(&self.db, batch)
        } else {
            self.db.write(batch)
        };
        written.map_err(|e| StorageIOError::write(&e).into())
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, RaftStorageError> {
        let mut iter = self
            .db
            .iterator_cf(cf(&self.db, CF_RAFT_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry =
                    bincode::deserialize(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry))
            }
        }
    }
}

fn run_syncer(db: &Weak<DB>, pending: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut callbacks = vec![first];
        callbacks.extend(pending.try_iter());
        let started = std::time::Instant::now();
        let result = match db.upgrade() {
            Some(db) => crate::db::flush_wal_synced(&db).map_err(|e| e.to_string()),
            None => Err("the database is closed".to_string()),
        };
        metrics::histogram!(crate::METRIC_WAL_FSYNC_SECONDS).record(started.elapsed());
        for callback in callbacks {
            let result = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.clone()));
            callback.log_io_completed(result);
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let from = index_key(start);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_RAFT_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                    StorageIOError::read_logs(&std::io::Error::other("bad log key"))
                })?);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> =
                bincode::deserialize(&value).map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_state(KEY_LAST_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(*entry.get_log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        // A vote must survive a crash before it is acted on: synced.
        self.put_state(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.get_state(KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), RaftStorageError> {
        // An optimisation only (openraft re-learns the commit index); no sync needed.
        self.put_state(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        Ok(self
            .get_state::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_RAFT_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = bincode::serialize(&entry)
                .map_err(|e| StorageIOError::write_log_entry(*entry.get_log_id(), &e))?;
            batch.put_cf(log, index_key(entry.get_log_id().index), bytes);
        }
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Durability comes from the syncer: openraft hears of these entries only after an fsync.
        self.syncer.send(callback).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("log syncer stopped"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_RAFT_LOG),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        batch.delete_cf(cf(&self.db, CF_RAFT_LOG), index_key(u64::MAX));
        crate::db::write_synced(&self.db, batch).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        // The state machine's records are written without sync; make them durable before the
        // log entries that could rebuild them disappear.
        crate::db::flush_wal_synced(&self.db).map_err(|e| StorageIOError::write_logs(&e))?;
        self.put_state(KEY_LAST_PURGED, &log_id, true)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_RAFT_LOG),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
