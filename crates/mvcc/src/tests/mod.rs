//! Store-level tests through the public API, one file per area, sharing the [`Harness`].

mod compaction;
mod lease;
mod model;
mod put_delete;
mod range;
mod restore;
mod txn;

use std::collections::HashSet;

use crate::pb::{self, request_op::Request, response_op::Response};
use crate::{
    mvccpb, Applied, KvStore, LeaseRegistry, MemoryRevisions, MvccError, WriteRequest,
    WriteResponse,
};

/// Leases that exist in a test.
#[derive(Default)]
pub(crate) struct Leases(pub(crate) HashSet<i64>);

impl LeaseRegistry for Leases {
    fn exists(&self, lease_id: i64) -> bool {
        self.0.contains(&lease_id)
    }
}

/// A store plus its persisted records, persisting after each write as storage does.
pub(crate) struct Harness {
    pub(crate) store: KvStore,
    pub(crate) records: MemoryRevisions,
    pub(crate) leases: Leases,
    /// When false, mutations stay pending (several requests in one apply batch).
    pub(crate) persist: bool,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Harness {
            store: KvStore::new(),
            records: MemoryRevisions::new(),
            leases: Leases([7, 8].into_iter().collect()),
            persist: true,
        }
    }

    pub(crate) fn apply(&mut self, req: WriteRequest) -> Result<Applied, MvccError> {
        let result = self.store.apply(&self.records, &self.leases, &req);
        if self.persist {
            self.flush();
        }
        result
    }

    pub(crate) fn flush(&mut self) {
        let mutations = self.store.take_mutations();
        self.records.apply(mutations);
    }

    pub(crate) fn put(&mut self, key: &str, value: &str) -> pb::PutResponse {
        self.put_request(put_req(key, value)).expect("put succeeds")
    }

    pub(crate) fn put_request(
        &mut self,
        req: pb::PutRequest,
    ) -> Result<pb::PutResponse, MvccError> {
        match self.apply(WriteRequest::Put(req))?.response {
            WriteResponse::Put(response) => Ok(response),
            other => panic!("unexpected response {other:?}"),
        }
    }

    pub(crate) fn delete(&mut self, key: &str, range_end: &str) -> pb::DeleteRangeResponse {
        let req = pb::DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        };
        match self
            .apply(WriteRequest::DeleteRange(req))
            .expect("delete succeeds")
            .response
        {
            WriteResponse::DeleteRange(response) => response,
            other => panic!("unexpected response {other:?}"),
        }
    }

    pub(crate) fn txn(&mut self, req: pb::TxnRequest) -> Result<pb::TxnResponse, MvccError> {
        match self.apply(WriteRequest::Txn(req))?.response {
            WriteResponse::Txn(response) => Ok(response),
            other => panic!("unexpected response {other:?}"),
        }
    }

    pub(crate) fn compact(&mut self, revision: i64) -> Result<Applied, MvccError> {
        self.apply(WriteRequest::Compact(pb::CompactionRequest {
            revision,
            physical: false,
        }))
    }

    pub(crate) fn range(&self, req: &pb::RangeRequest) -> Result<pb::RangeResponse, MvccError> {
        self.store.range(&self.records, req)
    }

    /// The live kv of `key` at `revision` (0 = current).
    pub(crate) fn get_at(
        &self,
        key: &str,
        revision: i64,
    ) -> Result<Option<mvccpb::KeyValue>, MvccError> {
        let response = self.range(&range_req(key, "", revision))?;
        Ok(response.kvs.into_iter().next())
    }

    pub(crate) fn get(&self, key: &str) -> Option<mvccpb::KeyValue> {
        self.get_at(key, 0).expect("read succeeds")
    }

    pub(crate) fn revision(&self) -> i64 {
        self.store.current_revision()
    }
}

pub(crate) fn put_req(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub(crate) fn range_req(key: &str, range_end: &str, revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        revision,
        ..Default::default()
    }
}

pub(crate) fn kv(
    key: &str,
    value: &str,
    create: i64,
    modified: i64,
    version: i64,
) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

pub(crate) fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

pub(crate) fn op_delete(key: &str, range_end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        })),
    }
}

pub(crate) fn op_range(key: &str, range_end: &str, revision: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestRange(range_req(key, range_end, revision))),
    }
}

pub(crate) fn op_txn(req: pb::TxnRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestTxn(req)),
    }
}

/// The kvs of a range response inside a txn response.
pub(crate) fn range_kvs(response: &pb::ResponseOp) -> Vec<mvccpb::KeyValue> {
    match &response.response {
        Some(Response::ResponseRange(range)) => range.kvs.clone(),
        other => panic!("not a range response: {other:?}"),
    }
}

pub(crate) fn values(kvs: &[mvccpb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect()
}

pub(crate) fn keys(kvs: &[mvccpb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}
