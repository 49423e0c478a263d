//! Compaction: bounds, what reads survive, tombstone removal, DeleteRecord mutations.

use super::*;
use crate::{Mutation, Revision};

/// a: put 2, put 3, del 4, put 5; b: put 6, del 7; c: put 8, put 9.
fn sample() -> Harness {
    let mut harness = Harness::new();
    harness.put("a", "a1");
    harness.put("a", "a2");
    harness.delete("a", "");
    harness.put("a", "a3");
    harness.put("b", "b1");
    harness.delete("b", "");
    harness.put("c", "c1");
    harness.put("c", "c2");
    assert_eq!(harness.revision(), 9);
    harness
}

#[test]
fn compaction_bounds() {
    let mut harness = sample();
    assert_eq!(harness.compact(10).err(), Some(MvccError::FutureRevision));
    // As in etcd, nothing is compacted yet (-1), so compacting at 0 is accepted once.
    harness
        .compact(0)
        .expect("compact at 0 on an uncompacted store");
    assert_eq!(harness.compact(0).err(), Some(MvccError::Compacted));
    let applied = harness.compact(4).expect("compact");
    assert!(applied.events.is_empty());
    let WriteResponse::Compact(response) = applied.response else {
        panic!("wrong response")
    };
    assert_eq!(
        response.header.map(|h| h.revision),
        Some(9),
        "compaction never bumps"
    );
    assert_eq!(harness.revision(), 9);
    assert_eq!(harness.store.compact_revision(), 4);
    assert_eq!(harness.compact(4).err(), Some(MvccError::Compacted));
    assert_eq!(harness.compact(3).err(), Some(MvccError::Compacted));
    harness.compact(9).expect("compact at current");
}

#[test]
fn reads_below_fail_and_surviving_state_is_unchanged() {
    let original = sample();
    for at in 1..=9 {
        let mut harness = sample();
        harness.compact(at).expect("compact");
        for revision in 1..=9 {
            let req = range_req("\0", "\0", revision);
            if revision < at {
                assert_eq!(
                    harness.range(&req),
                    Err(MvccError::Compacted),
                    "compact {at} read {revision}"
                );
            } else {
                assert_eq!(
                    harness.range(&req),
                    original.range(&req),
                    "compact {at} read {revision}"
                );
            }
        }
        // Current reads (revision 0) always work.
        assert_eq!(
            harness.range(&range_req("\0", "\0", 0)),
            original.range(&range_req("\0", "\0", 0))
        );
    }
}

#[test]
fn delete_record_mutations_remove_exactly_the_unreachable_records() {
    // (compact at, record mains left afterwards)
    let cases: [(i64, &[i64]); 8] = [
        (2, &[2, 3, 4, 5, 6, 7, 8, 9]),
        (3, &[3, 4, 5, 6, 7, 8, 9]),
        (4, &[4, 5, 6, 7, 8, 9]), // a's tombstone at the compaction revision stays (etcd #18089)
        (5, &[5, 6, 7, 8, 9]),    // ...and goes with the next compaction
        (6, &[5, 6, 7, 8, 9]),
        (7, &[5, 7, 8, 9]), // b's tombstone at 7 stays
        (8, &[5, 8, 9]),    // b is gone entirely
        (9, &[5, 9]),
    ];
    for (at, left) in cases {
        let mut harness = sample();
        harness.persist = false;
        harness.compact(at).expect("compact");
        let mutations = harness.store.take_mutations();
        assert!(mutations
            .iter()
            .all(|m| matches!(m, Mutation::DeleteRecord(_))));
        harness.records.apply(mutations);
        let mains: Vec<i64> = harness
            .records
            .records()
            .map(|(revision, _)| revision.main)
            .collect();
        assert_eq!(mains, left, "compact at {at}");
        assert_eq!(
            harness.store.index.all_revisions(),
            harness
                .records
                .records()
                .map(|(revision, _)| revision)
                .collect(),
            "index and records agree"
        );
    }
}

#[test]
fn compaction_of_pending_records_and_later_writes() {
    let mut harness = Harness::new();
    harness.persist = false;
    harness.put("k", "1"); // 2
    harness.put("k", "2"); // 3
    harness.compact(3).expect("compact");
    let mutations = harness.store.take_mutations();
    assert_eq!(
        mutations.last(),
        Some(&Mutation::DeleteRecord(Revision::new(2, 0)))
    );
    harness.records.apply(mutations);
    harness.persist = true;
    assert_eq!(harness.records.len(), 1);
    // Versions and creation revision carry on after compaction.
    harness.put("k", "3");
    assert_eq!(harness.get("k"), Some(kv("k", "3", 2, 4, 3)));
    // A txn range below the compaction revision is refused before anything runs.
    let req = pb::TxnRequest {
        compare: vec![],
        success: vec![op_range("k", "", 2)],
        failure: vec![],
    };
    assert_eq!(harness.txn(req), Err(MvccError::Compacted));
}
