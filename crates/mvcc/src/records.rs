//! Persisted records: the [`RevisionReader`] the store reads values through, the [`Mutation`]s it
//! asks the caller to persist, and [`MemoryRevisions`], an in-memory record store for tests and
//! tools.
//!
//! A record is the `KeyValue` written at one revision. A record with `version == 0` is a
//! tombstone: the key was deleted at `mod_revision`.

use std::collections::BTreeMap;

use crate::{mvccpb, MvccError, Revision};

/// Read access to persisted records by revision (storage implements it over RocksDB).
pub trait RevisionReader {
    /// The record written at `revision`, or `None` when there is none.
    fn read(&self, revision: Revision) -> Result<Option<mvccpb::KeyValue>, MvccError>;
}

/// A change the caller must persist, in order, atomically with the Raft applied log id.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Store this record under this revision.
    PutRecord(Revision, mvccpb::KeyValue),
    /// Remove the record at this revision (compaction).
    DeleteRecord(Revision),
}

/// Records in memory, ordered by revision: the reference [`RevisionReader`].
#[derive(Default, Debug, Clone)]
pub struct MemoryRevisions {
    records: BTreeMap<Revision, mvccpb::KeyValue>,
}

impl MemoryRevisions {
    /// An empty record store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Persist mutations in order, as storage does.
    pub fn apply(&mut self, mutations: Vec<Mutation>) {
        for mutation in mutations {
            match mutation {
                Mutation::PutRecord(revision, kv) => {
                    self.records.insert(revision, kv);
                }
                Mutation::DeleteRecord(revision) => {
                    self.records.remove(&revision);
                }
            }
        }
    }

    /// Every record in revision order: what [`crate::KvStore::restore`] takes.
    pub fn records(&self) -> impl Iterator<Item = (Revision, mvccpb::KeyValue)> + '_ {
        self.records
            .iter()
            .map(|(revision, kv)| (*revision, kv.clone()))
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl RevisionReader for MemoryRevisions {
    fn read(&self, revision: Revision) -> Result<Option<mvccpb::KeyValue>, MvccError> {
        Ok(self.records.get(&revision).cloned())
    }
}
