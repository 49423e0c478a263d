//! Txn: compares on every target and result, ranges and missing keys, branches, nested txns,
//! revisions within a txn, checks that leave the store untouched on error, read-only txns.

use super::*;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::Mutation;

fn compare(
    key: &str,
    range_end: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: range_end.into(),
        target_union: Some(union),
    }
}

fn txn(
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success,
        failure,
    }
}

/// a: create 2, mod 4, version 2, value "a2", lease 7; b: create 3, mod 3, version 1, value "b1".
fn sample() -> Harness {
    let mut harness = Harness::new();
    harness
        .put_request(pb::PutRequest {
            lease: 7,
            ..put_req("a", "a1")
        })
        .expect("put"); // 2
    harness.put("b", "b1"); // 3
    harness
        .put_request(pb::PutRequest {
            lease: 7,
            ..put_req("a", "a2")
        })
        .expect("put"); // 4
    harness
}

fn holds(harness: &mut Harness, compare: pb::Compare) -> bool {
    let response = harness
        .txn(txn(vec![compare], vec![], vec![]))
        .expect("txn");
    response.succeeded
}

#[test]
fn every_target_and_result_on_a_live_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut harness = sample();
    // (target, union for a value below, equal to, above the key's)
    let targets = [
        (
            Version,
            TargetUnion::Version(1),
            TargetUnion::Version(2),
            TargetUnion::Version(3),
        ),
        (
            Create,
            TargetUnion::CreateRevision(1),
            TargetUnion::CreateRevision(2),
            TargetUnion::CreateRevision(3),
        ),
        (
            Mod,
            TargetUnion::ModRevision(3),
            TargetUnion::ModRevision(4),
            TargetUnion::ModRevision(5),
        ),
        (
            Value,
            TargetUnion::Value(b"a1".to_vec()),
            TargetUnion::Value(b"a2".to_vec()),
            TargetUnion::Value(b"a3".to_vec()),
        ),
        (
            Lease,
            TargetUnion::Lease(6),
            TargetUnion::Lease(7),
            TargetUnion::Lease(8),
        ),
    ];
    for (target, below, equal, above) in targets {
        // key's value vs the compare's: (below => key is GREATER), (equal), (above => key LESS)
        let expectations = [
            (Equal, [false, true, false]),
            (NotEqual, [true, false, true]),
            (Greater, [true, false, false]),
            (Less, [false, false, true]),
        ];
        for (result, expected) in expectations {
            for (union, want) in [below.clone(), equal.clone(), above.clone()]
                .into_iter()
                .zip(expected)
            {
                let c = compare("a", "", target, result, union.clone());
                assert_eq!(
                    holds(&mut harness, c),
                    want,
                    "{target:?} {result:?} {union:?}"
                );
            }
        }
    }
    assert_eq!(harness.revision(), 4, "compares alone never write");
}

#[test]
fn missing_keys_compare_as_zero_except_value() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut harness = sample();
    let cases = [
        (Version, Equal, TargetUnion::Version(0), true),
        (Version, Less, TargetUnion::Version(1), true),
        (Create, Equal, TargetUnion::CreateRevision(0), true),
        (Mod, Greater, TargetUnion::ModRevision(0), false),
        (Lease, Equal, TargetUnion::Lease(0), true),
        (Value, Equal, TargetUnion::Value(vec![]), false),
        (Value, NotEqual, TargetUnion::Value(b"x".to_vec()), false),
        (Value, Less, TargetUnion::Value(b"x".to_vec()), false),
    ];
    for (target, result, union, want) in cases {
        assert_eq!(
            holds(
                &mut harness,
                compare("zz", "", target, result, union.clone())
            ),
            want,
            "{target:?} {result:?} {union:?}"
        );
        // An empty range behaves like a missing key.
        assert_eq!(
            holds(&mut harness, compare("x", "y", target, result, union)),
            want
        );
    }
    // A deleted key is missing too.
    harness.delete("b", "");
    assert!(holds(
        &mut harness,
        compare("b", "", Version, Equal, TargetUnion::Version(0))
    ));
}

#[test]
fn range_compares_need_every_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut harness = sample();
    assert!(holds(
        &mut harness,
        compare("a", "c", Version, Greater, TargetUnion::Version(0))
    ));
    assert!(!holds(
        &mut harness,
        compare("a", "c", Version, Greater, TargetUnion::Version(1))
    ));
    assert!(holds(
        &mut harness,
        compare("a", "\0", Create, Less, TargetUnion::CreateRevision(4))
    ));
    assert!(holds(
        &mut harness,
        compare("\0", "\0", Mod, Less, TargetUnion::ModRevision(5))
    ));
    assert!(!holds(
        &mut harness,
        compare("\0", "\0", Mod, Less, TargetUnion::ModRevision(4))
    ));
    assert!(holds(
        &mut harness,
        compare("a", "c", Value, Greater, TargetUnion::Value(b"a".to_vec()))
    ));
}

#[test]
fn mismatched_or_unknown_compare_fields_follow_etcd() {
    let mut harness = sample();
    // Wrong union kind: compared against 0.
    let c = compare(
        "a",
        "",
        CompareTarget::Version,
        CompareResult::Greater,
        TargetUnion::ModRevision(100),
    );
    assert!(holds(&mut harness, c));
    let mut c = compare(
        "a",
        "",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(vec![]),
    );
    c.target_union = None;
    assert!(!holds(&mut harness, c), "value a2 != empty");
    // Unknown result holds; unknown target compares equal.
    let mut c = compare(
        "a",
        "",
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(9),
    );
    c.result = 42;
    assert!(holds(&mut harness, c));
    let mut c = compare(
        "a",
        "",
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(9),
    );
    c.target = 42;
    assert!(holds(&mut harness, c));
}

#[test]
fn branches_share_one_revision_and_later_ops_see_earlier_ones() {
    let mut harness = sample();
    harness.persist = false;
    let success = vec![
        op_range("a", "", 0),
        op_put("a", "a3"),
        op_range("a", "", 0),
        op_put("c", "c1"),
        op_delete("b", ""),
        op_range("\0", "\0", 0),
        op_range("a", "", 4),
    ];
    let applied = harness
        .apply(WriteRequest::Txn(txn(
            vec![compare(
                "a",
                "",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value(b"a2".to_vec()),
            )],
            success,
            vec![op_put("never", "x")],
        )))
        .expect("txn");
    let WriteResponse::Txn(response) = applied.response else {
        panic!("wrong response")
    };
    assert!(response.succeeded);
    assert_eq!(response.header.map(|h| h.revision), Some(5));
    let r = &response.responses;
    assert_eq!(values(&range_kvs(&r[0])), vec!["a2"]);
    assert_eq!(
        range_kvs(&r[2]),
        vec![mvccpb::KeyValue {
            lease: 0,
            ..kv("a", "a3", 2, 5, 3)
        }]
    );
    assert_eq!(keys(&range_kvs(&r[5])), vec!["a", "c"]);
    assert_eq!(values(&range_kvs(&r[6])), vec!["a2"]);
    let header_revision = |op: &pb::ResponseOp| match &op.response {
        Some(Response::ResponseRange(x)) => x.header.map(|h| h.revision),
        Some(Response::ResponsePut(x)) => x.header.map(|h| h.revision),
        Some(Response::ResponseDeleteRange(x)) => x.header.map(|h| h.revision),
        _ => None,
    };
    // Reads before the first write see the old revision, later ones the txn's.
    let headers: Vec<Option<i64>> = r.iter().map(header_revision).collect();
    assert_eq!(
        headers,
        vec![
            Some(4),
            Some(5),
            Some(5),
            Some(5),
            Some(5),
            Some(5),
            Some(5)
        ]
    );
    let revisions: Vec<(i64, i64)> = harness
        .store
        .take_mutations()
        .iter()
        .map(|m| match m {
            Mutation::PutRecord(revision, _) => (revision.main, revision.sub),
            Mutation::DeleteRecord(_) => panic!("no deletes"),
        })
        .collect();
    assert_eq!(revisions, vec![(5, 0), (5, 1), (5, 2)]);
    let kinds: Vec<i32> = applied.events.iter().map(|e| e.r#type).collect();
    assert_eq!(kinds, vec![0, 0, 1]);
    assert_eq!(
        applied.events[0]
            .prev_kv
            .as_ref()
            .map(|kv| kv.value.clone()),
        Some(b"a2".to_vec())
    );
    assert_eq!(applied.events[1].prev_kv, None);
    assert_eq!(
        applied.events[2]
            .prev_kv
            .as_ref()
            .map(|kv| kv.value.clone()),
        Some(b"b1".to_vec())
    );
}

#[test]
fn failure_branch_and_no_change_txns() {
    let mut harness = sample();
    let response = harness
        .txn(txn(
            vec![compare(
                "a",
                "",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(99),
            )],
            vec![op_put("x", "1")],
            vec![op_put("y", "1"), op_range("y", "", 0)],
        ))
        .expect("txn");
    assert!(!response.succeeded);
    assert_eq!(response.header.map(|h| h.revision), Some(5));
    assert_eq!(harness.get("x"), None);
    assert_eq!(harness.get("y"), Some(kv("y", "1", 5, 5, 1)));

    // A txn that changes nothing keeps the revision: ranges only, or deletes of nothing.
    for ops in [
        vec![op_range("a", "", 0)],
        vec![op_delete("nothing", "")],
        vec![],
    ] {
        let response = harness.txn(txn(vec![], ops, vec![])).expect("txn");
        assert_eq!(response.header.map(|h| h.revision), Some(5));
        assert_eq!(harness.revision(), 5);
    }
    // A delete of nothing after a write reports the txn's revision.
    let response = harness
        .txn(txn(
            vec![],
            vec![op_put("z", "1"), op_delete("nothing", "")],
            vec![],
        ))
        .expect("txn");
    match &response.responses[1].response {
        Some(Response::ResponseDeleteRange(d)) => {
            assert_eq!((d.deleted, d.header.map(|h| h.revision)), (0, Some(6)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nested_txns_compare_against_the_state_before_the_outer_txn() {
    let mut harness = sample();
    let inner = txn(
        // "c" does not exist before the outer txn, even though the outer txn creates it first.
        vec![compare(
            "c",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        vec![op_put("inner-success", "1"), op_range("c", "", 0)],
        vec![op_put("inner-failure", "1")],
    );
    let response = harness
        .txn(txn(
            vec![],
            vec![op_put("c", "c1"), op_txn(inner), op_put("d", "d1")],
            vec![],
        ))
        .expect("txn");
    assert!(response.succeeded);
    assert_eq!(response.header.map(|h| h.revision), Some(5));
    let Some(Response::ResponseTxn(nested)) = &response.responses[1].response else {
        panic!("nested")
    };
    assert!(nested.succeeded);
    assert_eq!(
        nested.header,
        Some(pb::ResponseHeader::default()),
        "nested headers stay zero"
    );
    assert_eq!(
        values(&range_kvs(&nested.responses[1])),
        vec!["c1"],
        "nested ops see earlier writes"
    );
    assert_eq!(
        harness.get("inner-success").map(|kv| kv.mod_revision),
        Some(5)
    );
    assert_eq!(harness.get("inner-failure"), None);
    assert_eq!(harness.get("d").map(|kv| kv.mod_revision), Some(5));
    // Nested failure branch, two levels deep.
    let deepest = txn(vec![], vec![op_put("deep", "1")], vec![]);
    let middle = txn(
        vec![compare(
            "a",
            "",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"nope".to_vec()),
        )],
        vec![op_put("wrong", "1")],
        vec![op_txn(deepest)],
    );
    let response = harness
        .txn(txn(vec![], vec![op_txn(middle)], vec![]))
        .expect("txn");
    assert_eq!(response.header.map(|h| h.revision), Some(6));
    assert_eq!(harness.get("deep").map(|kv| kv.version), Some(1));
    assert_eq!(harness.get("wrong"), None);
}

#[test]
fn errors_in_the_executed_branch_leave_the_store_untouched() {
    let mut harness = sample();
    harness.compact(3).expect("compact");
    let ignore_missing = pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        })),
    };
    let bad_lease = pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            lease: 99,
            ..put_req("x", "1")
        })),
    };
    let cases = [
        (
            vec![op_put("x", "1"), ignore_missing.clone()],
            MvccError::KeyNotFound,
        ),
        (
            vec![op_put("x", "1"), bad_lease.clone()],
            MvccError::LeaseNotFound,
        ),
        (
            vec![op_put("x", "1"), op_range("a", "", 5)],
            MvccError::FutureRevision,
        ),
        (
            vec![op_put("x", "1"), op_range("a", "", 2)],
            MvccError::Compacted,
        ),
        (
            vec![
                op_put("x", "1"),
                op_txn(txn(
                    vec![],
                    vec![ignore_missing.clone()],
                    vec![op_delete("a", "")],
                )),
            ],
            MvccError::KeyNotFound,
        ),
        (
            vec![
                op_delete("\0", "\0"),
                op_txn(txn(vec![], vec![bad_lease.clone()], vec![])),
            ],
            MvccError::LeaseNotFound,
        ),
    ];
    for (ops, error) in cases {
        let before = harness.range(&range_req("\0", "\0", 0)).expect("range");
        assert_eq!(
            harness.txn(txn(vec![], ops.clone(), vec![])),
            Err(error.clone()),
            "{ops:?}"
        );
        assert_eq!(harness.revision(), 4);
        assert!(harness.store.take_mutations().is_empty());
        assert_eq!(
            harness.range(&range_req("\0", "\0", 0)).expect("range"),
            before
        );
        // The same ops in the branch that does not run are never checked.
        let never = compare(
            "a",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(99),
        );
        let response = harness.txn(txn(vec![never], ops, vec![])).expect("txn");
        assert!(!response.succeeded);
    }
    // ignore_value on a key the same txn creates is still "not found": checks see the state
    // before the txn, as etcd's do.
    let ops = vec![
        op_txn(txn(vec![], vec![op_put("new", "1")], vec![])),
        ignore_missing,
    ];
    assert_eq!(
        harness.txn(txn(vec![], ops, vec![])),
        Err(MvccError::KeyNotFound)
    );
}

#[test]
fn a_from_key_delete_and_a_put_may_touch_one_key_in_one_revision() {
    // etcd's duplicate check lets `del --from-key a` and `put b` share a txn.
    let mut harness = sample();
    let applied = harness
        .apply(WriteRequest::Txn(txn(
            vec![],
            vec![op_delete("a", "\0"), op_put("b", "new")],
            vec![],
        )))
        .expect("txn");
    assert_eq!(harness.revision(), 5);
    assert_eq!(harness.get("a"), None);
    assert_eq!(harness.get("b"), Some(kv("b", "new", 5, 5, 1)));
    assert_eq!(applied.events.len(), 3);
    // The recreated key's put is a create event: no prev_kv.
    assert_eq!(applied.events[2].prev_kv, None);
    // And the reverse order: put then delete in the same revision leaves it deleted.
    harness
        .txn(txn(
            vec![],
            vec![op_put("c", "1"), op_delete("a", "\0")],
            vec![],
        ))
        .expect("txn");
    assert_eq!(
        harness
            .range(&range_req("\0", "\0", 0))
            .expect("range")
            .count,
        0
    );
    assert_eq!(
        harness.get_at("b", 5).expect("read").map(|kv| kv.value),
        Some(b"new".to_vec())
    );
}

#[test]
fn read_only_txns_are_served_without_changes() {
    let harness = sample();
    let req = txn(
        vec![compare(
            "b",
            "",
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(3),
        )],
        vec![
            op_range("a", "", 0),
            op_range("a", "", 2),
            op_txn(txn(vec![], vec![op_range("b", "", 0)], vec![])),
        ],
        vec![],
    );
    let response = harness
        .store
        .read_txn(&harness.records, &req)
        .expect("read txn");
    assert!(response.succeeded);
    assert_eq!(response.header.map(|h| h.revision), Some(4));
    assert_eq!(values(&range_kvs(&response.responses[0])), vec!["a2"]);
    assert_eq!(values(&range_kvs(&response.responses[1])), vec!["a1"]);
    let bad = txn(vec![], vec![op_range("a", "", 9)], vec![]);
    assert_eq!(
        harness.store.read_txn(&harness.records, &bad),
        Err(MvccError::FutureRevision)
    );
    let writes = txn(vec![], vec![op_put("a", "x")], vec![]);
    assert!(matches!(
        harness.store.read_txn(&harness.records, &writes),
        Err(MvccError::Storage(_))
    ));
    // An empty op gives an empty response op rather than a panic.
    let empty = txn(vec![], vec![pb::RequestOp { request: None }], vec![]);
    let response = harness
        .store
        .read_txn(&harness.records, &empty)
        .expect("read txn");
    assert_eq!(response.responses, vec![pb::ResponseOp { response: None }]);
}
