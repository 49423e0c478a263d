//! Leases: grant, attach by put, revoke in one revision, renewal generations and the leader's
//! expiry that loses to a renewal, restore of attachments.

use crate::pb::{self, request_op::Request};
use crate::{
    apply, mvccpb::event::EventType, KvStore, LeaseChange, LeaseExpiry, LeaseRecord, LeaseTable,
    MemoryRevisions, MvccError, WriteRequest, WriteResponse,
};

/// A store and a lease table persisted after every write, as storage does.
struct Node {
    kv: KvStore,
    leases: LeaseTable,
    records: MemoryRevisions,
    index: u64,
}

impl Node {
    fn new() -> Self {
        Node {
            kv: KvStore::new(),
            leases: LeaseTable::default(),
            records: MemoryRevisions::new(),
            index: 0,
        }
    }

    fn apply(&mut self, request: WriteRequest) -> Result<crate::Applied, MvccError> {
        self.index += 1;
        let result = apply(
            &mut self.kv,
            &mut self.leases,
            &self.records,
            &request,
            self.index,
        );
        self.records.apply(self.kv.take_mutations());
        result
    }

    fn grant(&mut self, id: i64, ttl: i64) -> Result<pb::LeaseGrantResponse, MvccError> {
        match self
            .apply(WriteRequest::LeaseGrant(pb::LeaseGrantRequest { ttl, id }))?
            .response
        {
            WriteResponse::LeaseGrant(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn put(&mut self, key: &str, lease: i64) -> Result<(), MvccError> {
        self.apply(WriteRequest::Put(pb::PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }))
        .map(|_| ())
    }

    fn renew(&mut self, id: i64) -> i64 {
        match self
            .apply(WriteRequest::LeaseRenew(pb::LeaseKeepAliveRequest { id }))
            .expect("renew never fails")
            .response
        {
            WriteResponse::LeaseRenew(response) => response.ttl,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn live_keys(&self) -> Vec<String> {
        let everything = pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        self.kv
            .range(&self.records, &everything)
            .expect("range")
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).expect("utf8"))
            .collect()
    }
}

#[test]
fn grant_errors_match_etcd() {
    let mut node = Node::new();
    assert_eq!(node.grant(5, 10).expect("grant").ttl, 10);
    assert_eq!(node.grant(5, 10), Err(MvccError::LeaseExists));
    assert_eq!(
        node.grant(6, crate::MAX_LEASE_TTL + 1),
        Err(MvccError::LeaseTtlTooLarge)
    );
    assert!(matches!(node.grant(0, 10), Err(MvccError::Storage(_))));
    assert_eq!(
        MvccError::LeaseExists.to_string(),
        "etcdserver: lease already exists"
    );
    assert_eq!(
        MvccError::LeaseTtlTooLarge.to_string(),
        "etcdserver: too large lease TTL"
    );
}

#[test]
fn put_with_unknown_lease_is_refused_and_changes_nothing() {
    let mut node = Node::new();
    assert_eq!(node.put("a", 42), Err(MvccError::LeaseNotFound));
    assert_eq!(node.kv.current_revision(), 1);
}

#[test]
fn revoke_deletes_every_attached_key_in_one_revision() {
    let mut node = Node::new();
    node.grant(7, 10).expect("grant");
    node.put("a", 7).expect("put");
    node.put("b", 7).expect("put");
    node.put("c", 0).expect("put");
    // Re-put without the lease detaches "b"; a txn put attaches "d".
    node.put("b", 0).expect("put");
    node.apply(WriteRequest::Txn(pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: b"d".to_vec(),
                lease: 7,
                ..Default::default()
            })),
        }],
        ..Default::default()
    }))
    .expect("txn");
    assert_eq!(node.leases.keys(7), vec![b"a".to_vec(), b"d".to_vec()]);
    let before = node.kv.current_revision();
    let applied = node
        .apply(WriteRequest::LeaseRevoke(pb::LeaseRevokeRequest { id: 7 }))
        .expect("revoke");
    assert_eq!(node.kv.current_revision(), before + 1);
    assert_eq!(applied.events.len(), 2);
    assert!(applied
        .events
        .iter()
        .all(|e| e.r#type == EventType::Delete as i32
            && e.kv.as_ref().map(|kv| kv.mod_revision) == Some(before + 1)));
    assert_eq!(node.live_keys(), vec!["b", "c"]);
    assert!(node.leases.get(7).is_none());
    assert_eq!(
        node.apply(WriteRequest::LeaseRevoke(pb::LeaseRevokeRequest { id: 7 }))
            .map(|_| ()),
        Err(MvccError::LeaseNotFound)
    );
}

#[test]
fn revoking_a_lease_without_keys_keeps_the_revision() {
    let mut node = Node::new();
    node.grant(3, 10).expect("grant");
    let before = node.kv.current_revision();
    node.apply(WriteRequest::LeaseRevoke(pb::LeaseRevokeRequest { id: 3 }))
        .expect("revoke");
    assert_eq!(node.kv.current_revision(), before);
}

#[test]
fn deleting_a_key_detaches_it() {
    let mut node = Node::new();
    node.grant(7, 10).expect("grant");
    node.put("a", 7).expect("put");
    node.apply(WriteRequest::DeleteRange(pb::DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    }))
    .expect("delete");
    assert!(node.leases.keys(7).is_empty());
}

#[test]
fn renewal_moves_the_generation_and_unknown_leases_answer_ttl_zero() {
    let mut node = Node::new();
    node.grant(9, 30).expect("grant");
    assert_eq!(node.leases.get(9).map(|r| r.generation), Some(1));
    assert_eq!(node.renew(9), 30);
    assert_eq!(node.leases.get(9).map(|r| r.generation), Some(2));
    assert_eq!(node.renew(10), 0);
    let changes = node.leases.take_changes();
    assert_eq!(
        changes,
        vec![
            LeaseChange::Set(
                9,
                LeaseRecord {
                    ttl: 30,
                    generation: 1
                }
            ),
            LeaseChange::Set(
                9,
                LeaseRecord {
                    ttl: 30,
                    generation: 2
                }
            ),
        ]
    );
}

#[test]
fn an_expiry_measured_before_a_renewal_does_nothing() {
    let mut node = Node::new();
    node.grant(9, 5).expect("grant");
    node.put("k", 9).expect("put");
    node.renew(9); // generation 3
    let stale = node
        .apply(WriteRequest::LeaseExpire(LeaseExpiry {
            id: 9,
            generation: 1,
        }))
        .expect("expire");
    assert_eq!(
        stale.response,
        WriteResponse::LeaseExpire { expired: false }
    );
    assert_eq!(node.live_keys(), vec!["k"]);
    let current = node
        .apply(WriteRequest::LeaseExpire(LeaseExpiry {
            id: 9,
            generation: 3,
        }))
        .expect("expire");
    assert_eq!(
        current.response,
        WriteResponse::LeaseExpire { expired: true }
    );
    assert!(node.live_keys().is_empty());
    assert_eq!(
        node.leases.take_changes().last(),
        Some(&LeaseChange::Removed(9))
    );
}

#[test]
fn restore_reattaches_keys_from_the_store() {
    let mut node = Node::new();
    node.grant(1, 10).expect("grant");
    node.grant(2, 10).expect("grant");
    node.put("a", 1).expect("put");
    node.put("b", 2).expect("put");
    node.put("a2", 1).expect("put");
    node.put("b", 0).expect("put");
    let restored = LeaseTable::restore(
        node.leases.records().collect::<Vec<_>>(),
        &node.kv,
        &node.records,
    )
    .expect("restore");
    assert_eq!(restored.keys(1), vec![b"a".to_vec(), b"a2".to_vec()]);
    assert!(restored.keys(2).is_empty());
    assert_eq!(restored.get(2), node.leases.get(2));
}

#[test]
fn restore_reattaches_keys_across_range_pages() {
    let mut node = Node::new();
    node.grant(1, 10).expect("grant");
    node.grant(2, 10).expect("grant");
    for index in 0..2500 {
        let lease = if index % 2 == 0 { 1 } else { 2 };
        node.put(&format!("k{index:05}"), lease).expect("put");
    }
    let restored = LeaseTable::restore(
        node.leases.records().collect::<Vec<_>>(),
        &node.kv,
        &node.records,
    )
    .expect("restore");
    assert_eq!(restored.keys(1).len(), 1250);
    assert_eq!(restored.keys(2).len(), 1250);
    assert_eq!(restored.keys(1), node.leases.keys(1));
    assert_eq!(restored.keys(2).last(), Some(&b"k02499".to_vec()));
}

/// Found by the etcd differential test (seed 5): a txn that puts a key with a lease and then
/// deletes it left the key attached, because the delete event's prev_kv is the key as it was
/// before the whole txn (without the lease).
#[test]
fn a_key_put_with_a_lease_and_deleted_in_the_same_txn_is_not_attached() {
    let mut node = Node::new();
    node.grant(1, 10).expect("grant");
    node.put("a", 0).expect("put");
    let put = pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            key: b"a".to_vec(),
            lease: 1,
            ..Default::default()
        })),
    };
    let delete_all = pb::RequestOp {
        request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })),
    };
    node.apply(WriteRequest::Txn(pb::TxnRequest {
        success: vec![put, delete_all],
        ..Default::default()
    }))
    .expect("txn");
    assert!(node.leases.keys(1).is_empty());
    node.put("a", 0).expect("put");
    node.apply(WriteRequest::LeaseRevoke(pb::LeaseRevokeRequest { id: 1 }))
        .expect("revoke");
    assert_eq!(
        node.live_keys(),
        vec!["a"],
        "revoking must not touch the re-put key"
    );
}
