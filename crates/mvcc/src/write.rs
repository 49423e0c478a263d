//! [`WriteTxn`]: the changes of one write request (a put, a delete range or a whole txn), all at
//! main revision `current + 1` with increasing sub revisions, and undoable until committed.
//!
//! Undo is cheap because a write touches few keys: the first time a key changes, its index
//! history is saved; records go to the pending overlay and mutation list, which are truncated.

use std::collections::BTreeMap;

use crate::key_index::KeyHistory;
use crate::key_range::KeyRange;
use crate::store::header;
use crate::{mvccpb, pb, KvStore, Mutation, MvccError, Revision, RevisionReader};

/// One write request in progress (etcd's `storeTxnWrite`).
pub(crate) struct WriteTxn<'s> {
    store: &'s mut KvStore,
    /// The store revision before this write.
    begin: i64,
    /// Changes so far: the sub revision of the next one.
    changes: i64,
    events: Vec<mvccpb::Event>,
    saved_histories: BTreeMap<Vec<u8>, Option<KeyHistory>>,
    saved_mutations: usize,
}

impl<'s> WriteTxn<'s> {
    pub(crate) fn new(store: &'s mut KvStore) -> Self {
        WriteTxn {
            begin: store.current_revision,
            saved_mutations: store.mutations.len(),
            store,
            changes: 0,
            events: Vec::new(),
            saved_histories: BTreeMap::new(),
        }
    }

    pub(crate) fn store(&self) -> &KvStore {
        self.store
    }

    /// The revision reads inside this write see: the write's own revision once it has changed
    /// something, so later ops of a txn see earlier ones.
    pub(crate) fn view_revision(&self) -> i64 {
        if self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    /// etcd's applier `Put` inside a write: honour `ignore_value`, `ignore_lease` and `prev_kv`.
    /// Lease existence is checked by the caller before anything is written.
    pub(crate) fn put<R: RevisionReader + ?Sized>(
        &mut self,
        reader: &R,
        req: &pb::PutRequest,
    ) -> Result<pb::PutResponse, MvccError> {
        let previous = if req.ignore_value || req.ignore_lease || req.prev_kv {
            self.store.live(reader, &req.key, self.view_revision())?
        } else {
            None
        };
        let (mut value, mut lease) = (req.value.clone(), req.lease);
        if req.ignore_value || req.ignore_lease {
            let Some(previous) = &previous else {
                return Err(MvccError::KeyNotFound);
            };
            if req.ignore_value {
                value = previous.value.clone();
            }
            if req.ignore_lease {
                lease = previous.lease;
            }
        }
        self.put_key(reader, &req.key, value, lease)?;
        Ok(pb::PutResponse {
            header: header(self.begin + 1),
            prev_kv: if req.prev_kv { previous } else { None },
        })
    }

    /// etcd's applier `DeleteRange` inside a write: one tombstone per live key in the range.
    pub(crate) fn delete_range<R: RevisionReader + ?Sized>(
        &mut self,
        reader: &R,
        req: &pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, MvccError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let at = self.view_revision();
        let prev_kvs = if req.prev_kv {
            self.store.live_range(reader, &range, at)?
        } else {
            Vec::new()
        };
        let keys: Vec<Vec<u8>> = self
            .store
            .index
            .range(&range, at)
            .map(|(key, _)| key.to_vec())
            .collect();
        for key in &keys {
            self.delete_key(reader, key)?;
        }
        let deleted = i64::try_from(keys.len()).unwrap_or(i64::MAX);
        // A delete that removed nothing leaves the revision alone, unless earlier ops of the same
        // txn already claimed the next one.
        let revision = if deleted != 0 || self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        };
        Ok(pb::DeleteRangeResponse {
            header: header(revision),
            deleted,
            prev_kvs,
        })
    }

    /// Make the changes visible: bump the store revision if anything changed; return the events.
    pub(crate) fn commit(self) -> Vec<mvccpb::Event> {
        if self.changes > 0 {
            self.store.current_revision = self.begin + 1;
        }
        self.events
    }

    /// Undo every change: the store is as it was before [`WriteTxn::new`].
    pub(crate) fn rollback(self) {
        for (key, history) in self.saved_histories {
            self.store.index.reset(key, history);
        }
        self.store
            .pending
            .retain(|revision, _| revision.main <= self.begin);
        self.store.mutations.truncate(self.saved_mutations);
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin + 1, self.changes)
    }

    fn save_history(&mut self, key: &[u8]) {
        if !self.saved_histories.contains_key(key) {
            let history = self.store.index.history(key).cloned();
            self.saved_histories.insert(key.to_vec(), history);
        }
    }

    fn write_record(&mut self, revision: Revision, kv: mvccpb::KeyValue) {
        self.store.pending.insert(revision, kv.clone());
        self.store.mutations.push(Mutation::PutRecord(revision, kv));
        self.changes += 1;
    }

    /// The key as a watcher's `prev_kv` sees it: its state before this whole write request
    /// (etcd reads prev_kv at `mod_revision - 1`).
    fn state_before<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        key: &[u8],
    ) -> Result<Option<mvccpb::KeyValue>, MvccError> {
        self.store.live(reader, key, self.begin)
    }

    fn put_key<R: RevisionReader + ?Sized>(
        &mut self,
        reader: &R,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Result<(), MvccError> {
        let revision = self.next_revision();
        let (create_revision, version) = match self.store.index.get(key, revision.main) {
            Some(state) => (state.created.main, state.version),
            None => (revision.main, 0),
        };
        let kv = mvccpb::KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: revision.main,
            version: version + 1,
            value,
            lease,
        };
        // A put that creates the key has no previous version for watchers, as in etcd.
        let prev_kv = if create_revision == revision.main {
            None
        } else {
            self.state_before(reader, key)?
        };
        self.save_history(key);
        if !self.store.index.put(key, revision) {
            return Err(MvccError::Storage(format!(
                "key index refused revision {}.{}",
                revision.main, revision.sub
            )));
        }
        self.events.push(mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv,
        });
        self.write_record(revision, kv);
        Ok(())
    }

    fn delete_key<R: RevisionReader + ?Sized>(
        &mut self,
        reader: &R,
        key: &[u8],
    ) -> Result<(), MvccError> {
        let revision = self.next_revision();
        let prev_kv = self.state_before(reader, key)?;
        self.save_history(key);
        if !self.store.index.tombstone(key, revision) {
            return Err(MvccError::Storage(format!(
                "key index refused tombstone at revision {}.{}",
                revision.main, revision.sub
            )));
        }
        // A tombstone record: only the key and the deletion revision; version 0 marks it.
        let tombstone = mvccpb::KeyValue {
            key: key.to_vec(),
            mod_revision: revision.main,
            ..Default::default()
        };
        self.events.push(mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(tombstone.clone()),
            prev_kv,
        });
        self.write_record(revision, tombstone);
        Ok(())
    }
}
