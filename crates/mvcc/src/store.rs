//! [`KvStore`]: the key index over caller-persisted records, the store and compaction revisions,
//! and the pending overlay of records written since the caller last took the mutations.

use std::collections::BTreeMap;

use crate::key_index::KeyIndex;
use crate::write::WriteTxn;
use crate::{
    mvccpb, pb, Applied, LeaseRegistry, Mutation, MvccError, Revision, RevisionReader,
    WriteRequest, WriteResponse,
};

/// The MVCC key-value store: an in-memory key index (key -> generations of revisions, like
/// etcd's treeIndex/keyIndex) over records kept by the caller.
///
/// Values are not kept in memory except for records written since the last
/// [`KvStore::take_mutations`]: that pending overlay is consulted before the reader, so a later
/// request in the same Raft apply batch sees earlier ones.
#[derive(Debug, Clone)]
pub struct KvStore {
    pub(crate) index: KeyIndex,
    pub(crate) current_revision: i64,
    /// Reads below this revision fail with `Compacted`; -1 until the first compaction, as in
    /// etcd (so `Compact(0)` on a fresh store succeeds).
    pub(crate) compact_revision: i64,
    pub(crate) pending: BTreeMap<Revision, mvccpb::KeyValue>,
    pub(crate) mutations: Vec<Mutation>,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A response header carrying only the store revision; the server fills the other fields.
pub(crate) fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl KvStore {
    /// An empty store at revision 1, like a fresh etcd.
    pub fn new() -> Self {
        KvStore {
            index: KeyIndex::default(),
            current_revision: 1,
            compact_revision: -1,
            pending: BTreeMap::new(),
            mutations: Vec::new(),
        }
    }

    /// Rebuild the index at startup from every persisted record, in revision order, plus the
    /// persisted meta (etcd's `restore`). A tombstone without earlier records is the one a
    /// compaction at its revision kept. The current revision is never below the newest record.
    pub fn restore(
        records: impl IntoIterator<Item = (Revision, mvccpb::KeyValue)>,
        current_revision: i64,
        compact_revision: i64,
    ) -> Self {
        let mut store = KvStore::new();
        let mut newest = 1;
        for (revision, kv) in records {
            newest = newest.max(revision.main);
            if kv.version == 0 {
                if !store.index.tombstone(&kv.key, revision) {
                    // A tombstone kept by a compaction at its revision, without its history.
                    store.index.restore_tombstone(&kv.key, revision);
                }
            } else if store.index.contains(&kv.key) {
                store.index.put(&kv.key, revision);
            } else {
                // The oldest surviving record may not be the generation's first put (compaction
                // removed those), so creation and version come from the record itself.
                let created = Revision::new(kv.create_revision, 0);
                store
                    .index
                    .restore_first(&kv.key, created, revision, kv.version);
            }
        }
        store.current_revision = current_revision.max(newest);
        store.compact_revision = compact_revision;
        store
    }

    /// The store revision: the main revision of the last write that changed something.
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// The revision of the last compaction (-1 if none): reads below it fail with `Compacted`.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// etcd's `KV.Range` at the current revision.
    pub fn range<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        req: &pb::RangeRequest,
    ) -> Result<pb::RangeResponse, MvccError> {
        self.range_at(reader, req, self.current_revision)
    }

    /// Read-only txn (see [`crate::txn_is_read_only`]) evaluated at the current revision without
    /// changing anything. A txn whose executed branch writes is refused with a `Storage` error:
    /// it belongs in [`KvStore::apply`].
    pub fn read_txn<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        req: &pb::TxnRequest,
    ) -> Result<pb::TxnResponse, MvccError> {
        crate::txn::read_txn(self, reader, req)
    }

    /// Apply one committed key-value write (lease operations go through [`crate::apply`], which
    /// also keeps lease attachments). Deterministic: identical on every replica. On `Err` nothing
    /// changed (no revision, no index entry, no mutation).
    pub fn apply<R: RevisionReader + ?Sized, L: LeaseRegistry + ?Sized>(
        &mut self,
        reader: &R,
        leases: &L,
        req: &WriteRequest,
    ) -> Result<Applied, MvccError> {
        match req {
            WriteRequest::Put(put) => {
                // etcd checks the lease before reading the previous value.
                if put.lease != 0 && !leases.exists(put.lease) {
                    return Err(MvccError::LeaseNotFound);
                }
                let (response, events) = self.write(|txn| txn.put(reader, put))?;
                Ok(Applied {
                    response: WriteResponse::Put(response),
                    events,
                })
            }
            WriteRequest::DeleteRange(delete) => {
                let (response, events) = self.write(|txn| txn.delete_range(reader, delete))?;
                Ok(Applied {
                    response: WriteResponse::DeleteRange(response),
                    events,
                })
            }
            WriteRequest::Txn(txn) => crate::txn::apply_txn(self, reader, leases, txn),
            WriteRequest::Compact(compaction) => self.compact(compaction),
            WriteRequest::LeaseGrant(_)
            | WriteRequest::LeaseRevoke(_)
            | WriteRequest::LeaseRenew(_)
            | WriteRequest::LeaseExpire(_) => Err(MvccError::Storage(
                "a lease operation reached the key-value store; apply it with beacon_mvcc::apply"
                    .to_string(),
            )),
        }
    }

    /// Drain the mutations produced since the last call, in order, and clear the pending overlay
    /// (the caller has persisted them, so the reader now answers for those records).
    pub fn take_mutations(&mut self) -> Vec<Mutation> {
        self.pending.clear();
        std::mem::take(&mut self.mutations)
    }

    /// Run `change` as one write request: committed when it succeeds, undone when it fails.
    pub(crate) fn write<T>(
        &mut self,
        change: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, MvccError>,
    ) -> Result<(T, Vec<mvccpb::Event>), MvccError> {
        let mut txn = WriteTxn::new(self);
        match change(&mut txn) {
            Ok(value) => Ok((value, txn.commit())),
            Err(error) => {
                txn.rollback();
                Err(error)
            }
        }
    }

    /// The record at `revision`: from the pending overlay, else from the reader. A revision the
    /// index refers to must have a record, so a missing one is a storage error.
    pub(crate) fn record<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        revision: Revision,
    ) -> Result<mvccpb::KeyValue, MvccError> {
        if let Some(kv) = self.pending.get(&revision) {
            return Ok(kv.clone());
        }
        reader.read(revision)?.ok_or_else(|| {
            MvccError::Storage(format!(
                "no record at revision {}.{} although the key index refers to it",
                revision.main, revision.sub
            ))
        })
    }

    /// etcd's compaction: forget every revision no read at or after `revision` needs, and ask the
    /// caller to delete their records. Never changes the store revision.
    fn compact(&mut self, req: &pb::CompactionRequest) -> Result<Applied, MvccError> {
        if req.revision <= self.compact_revision {
            return Err(MvccError::Compacted);
        }
        if req.revision > self.current_revision {
            return Err(MvccError::FutureRevision);
        }
        let removed = self.index.compact(req.revision);
        self.compact_revision = req.revision;
        for revision in removed {
            self.pending.remove(&revision);
            self.mutations.push(Mutation::DeleteRecord(revision));
        }
        Ok(Applied {
            response: WriteResponse::Compact(pb::CompactionResponse {
                header: header(self.current_revision),
            }),
            events: Vec::new(),
        })
    }
}
