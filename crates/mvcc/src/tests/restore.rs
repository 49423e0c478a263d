//! restore(): a store rebuilt from persisted records answers exactly as the original did, and
//! keeps numbering versions and revisions the same way.

use super::*;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};

fn history() -> Harness {
    let mut harness = Harness::new();
    harness.put("a", "a1"); // 2
    harness.put("b", "b1"); // 3
    harness.put("a", "a2"); // 4
    harness.delete("b", ""); // 5
    harness.put("b", "b2"); // 6
    harness
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: b"a".to_vec(),
                range_end: vec![],
                target_union: Some(TargetUnion::Version(2)),
            }],
            success: vec![op_put("c", "c1"), op_put("a", "a3"), op_delete("b", "")],
            failure: vec![],
        })
        .expect("txn"); // 7
    harness.put("d", "d1"); // 8
    harness.delete("d", ""); // 9
    harness.compact(5).expect("compact");
    harness.put("a", "a4"); // 10
    harness
}

fn answers(harness: &Harness) -> Vec<Result<pb::RangeResponse, MvccError>> {
    (-1..=harness.revision() + 1)
        .flat_map(|revision| {
            [("\0", "\0"), ("a", ""), ("b", "d"), ("d", "")]
                .map(|(key, end)| harness.range(&range_req(key, end, revision)))
        })
        .collect()
}

#[test]
fn restored_store_answers_like_the_original() {
    let mut original = history();
    let mut restored = Harness::new();
    restored.records = original.records.clone();
    restored.store = KvStore::restore(
        original.records.records(),
        original.store.current_revision(),
        original.store.compact_revision(),
    );
    assert_eq!(restored.revision(), 10);
    assert_eq!(restored.store.compact_revision(), 5);
    assert_eq!(answers(&restored), answers(&original));
    assert_eq!(
        restored.store.index.all_revisions(),
        original.store.index.all_revisions()
    );

    // The same writes produce the same results and records on both.
    let writes = [
        WriteRequest::Put(put_req("a", "a5")),
        WriteRequest::Put(put_req("b", "b3")),
        WriteRequest::Put(put_req("c", "c2")),
        WriteRequest::DeleteRange(pb::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
        }),
        WriteRequest::Put(put_req("d", "d2")),
        WriteRequest::Compact(pb::CompactionRequest {
            revision: 12,
            physical: false,
        }),
    ];
    for write in writes {
        assert_eq!(
            restored.apply(write.clone()),
            original.apply(write.clone()),
            "{write:?}"
        );
    }
    assert_eq!(answers(&restored), answers(&original));
    assert_eq!(
        restored.records.records().collect::<Vec<_>>(),
        original.records.records().collect::<Vec<_>>()
    );
    assert_eq!(original.get("c"), Some(kv("c", "c2", 7, 13, 2)));
}

#[test]
fn restore_tolerates_odd_input() {
    // A tombstone for an unknown key, an out-of-order record, a current revision below the
    // newest record: skipped or corrected, never a panic.
    let tombstone = mvccpb::KeyValue {
        key: b"x".to_vec(),
        mod_revision: 3,
        ..Default::default()
    };
    let records = vec![
        (crate::Revision::new(3, 0), tombstone),
        (crate::Revision::new(5, 0), kv("k", "v2", 4, 5, 2)),
        (crate::Revision::new(4, 0), kv("k", "v1", 4, 4, 1)),
    ];
    let store = KvStore::restore(records, 1, 0);
    assert_eq!(store.current_revision(), 5);
    let memory = crate::MemoryRevisions::new();
    assert!(matches!(
        store.range(&memory, &range_req("k", "", 0)),
        Err(MvccError::Storage(_))
    ));
    assert_eq!(KvStore::restore(Vec::new(), 0, 0).current_revision(), 1);
}
