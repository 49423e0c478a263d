//! Range: key range rules, revisions, limit/more/count, sorting, filters, keys_only, count_only.

use super::*;
use crate::pb::range_request::{SortOrder, SortTarget};

/// Keys a..e written so that every sort target orders them differently from key order.
fn sample() -> Harness {
    let mut harness = Harness::new();
    harness.put("c", "3"); // 2
    harness.put("a", "5"); // 3
    harness.put("e", "1"); // 4
    harness.put("b", "4"); // 5
    harness.put("d", "2"); // 6
    harness.put("a", "5"); // 7: a version 2
    harness.put("a", "5"); // 8: a version 3
    harness.put("e", "1"); // 9: e version 2
    harness
}

#[test]
fn key_range_rules() {
    let harness = sample();
    let cases = [
        ("b", "", vec!["b"]),
        ("bb", "", vec![]),
        ("b", "d", vec!["b", "c"]),
        ("b", "\0", vec!["b", "c", "d", "e"]),
        ("\0", "\0", vec!["a", "b", "c", "d", "e"]),
        ("d", "b", vec![]),
        ("b", "b", vec![]),
        ("a", "a\0", vec!["a"]),
    ];
    for (key, end, expected) in cases {
        let response = harness.range(&range_req(key, end, 0)).expect("range");
        assert_eq!(keys(&response.kvs), expected, "[{key:?}, {end:?})");
        assert_eq!(response.count, expected.len() as i64);
        assert!(!response.more);
    }
}

#[test]
fn revisions_past_future_and_current() {
    let harness = sample();
    let at = |revision| harness.range(&range_req("\0", "\0", revision));
    assert_eq!(at(10), Err(MvccError::FutureRevision));
    for revision in [0, -1, -100, 9] {
        assert_eq!(at(revision).expect("range").kvs.len(), 5);
    }
    let past = at(4).expect("range");
    assert_eq!(keys(&past.kvs), vec!["a", "c", "e"]);
    assert_eq!(
        past.header.map(|h| h.revision),
        Some(9),
        "header is the current revision"
    );
    assert_eq!(at(1).expect("range").kvs, vec![]);
    let a_at = |revision| {
        harness
            .get_at("a", revision)
            .expect("range")
            .map(|kv| kv.version)
    };
    assert_eq!(
        (a_at(3), a_at(6), a_at(7), a_at(8)),
        (Some(1), Some(1), Some(2), Some(3))
    );
}

#[test]
fn limit_more_and_count() {
    let harness = sample();
    let cases = [
        (0, 5, false),
        (-3, 5, false),
        (2, 2, true),
        (4, 4, true),
        (5, 5, false),
        (9, 5, false),
        (i64::MAX, 5, false),
    ];
    for (limit, returned, more) in cases {
        let response = harness
            .range(&pb::RangeRequest {
                limit,
                ..range_req("\0", "\0", 0)
            })
            .expect("range");
        assert_eq!(
            (response.kvs.len(), response.more, response.count),
            (returned, more, 5),
            "limit {limit}"
        );
    }
    let response = harness
        .range(&pb::RangeRequest {
            limit: 2,
            ..range_req("\0", "\0", 0)
        })
        .expect("range");
    assert_eq!(keys(&response.kvs), vec!["a", "b"]);
}

#[test]
fn sorting_by_every_target() {
    let harness = sample();
    let sorted = |order: SortOrder, target: SortTarget, limit: i64| {
        let req = pb::RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            ..range_req("\0", "\0", 0)
        };
        let response = harness.range(&req).expect("range");
        (keys(&response.kvs), response.more, response.count)
    };
    use SortOrder::*;
    use SortTarget::*;
    let v = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    // Sample: value a=5 b=4 c=3 d=2 e=1; create c=2 a=3 e=4 b=5 d=6; mod c=2 b=5 d=6 a=8 e=9;
    // version a=3 e=2 others 1.
    let cases = [
        (None, Key, v(&["a", "b", "c", "d", "e"])),
        (Ascend, Key, v(&["a", "b", "c", "d", "e"])),
        (Descend, Key, v(&["e", "d", "c", "b", "a"])),
        (Ascend, Value, v(&["e", "d", "c", "b", "a"])),
        (None, Value, v(&["e", "d", "c", "b", "a"])),
        (Descend, Value, v(&["a", "b", "c", "d", "e"])),
        (Ascend, Create, v(&["c", "a", "e", "b", "d"])),
        (Descend, Create, v(&["d", "b", "e", "a", "c"])),
        (None, Mod, v(&["c", "b", "d", "a", "e"])),
        (Descend, Mod, v(&["e", "a", "d", "b", "c"])),
        // Ties keep key order.
        (Ascend, Version, v(&["b", "c", "d", "e", "a"])),
        (Descend, Version, v(&["a", "e", "b", "c", "d"])),
    ];
    for (order, target, expected) in cases {
        assert_eq!(
            sorted(order, target, 0),
            (expected.clone(), false, 5),
            "{order:?} {target:?}"
        );
        // The limit applies after sorting when an order is given.
        if order != None || target == Key {
            assert_eq!(
                sorted(order, target, 2),
                (expected[..2].to_vec(), true, 5),
                "{order:?} {target:?} limit"
            );
        }
    }
    // etcd quirk: with sort_order NONE it fetches only limit + 1 keys (in key order: a, b, c)
    // before sorting by the non-key target, then truncates.
    assert_eq!(sorted(None, Value, 2), (v(&["c", "b"]), true, 5));
    assert_eq!(sorted(None, Mod, 2), (v(&["c", "b"]), true, 5));
    // Unknown enum values never panic; key order is kept.
    let req = pb::RangeRequest {
        sort_order: 9,
        sort_target: 9,
        ..range_req("\0", "\0", 0)
    };
    assert_eq!(
        keys(&harness.range(&req).expect("range").kvs),
        v(&["a", "b", "c", "d", "e"])
    );
}

#[test]
fn filters_leave_count_alone_and_limit_applies_after_them() {
    let harness = sample();
    let filtered = |f: fn(&mut pb::RangeRequest), limit: i64| {
        let mut req = pb::RangeRequest {
            limit,
            ..range_req("\0", "\0", 0)
        };
        f(&mut req);
        let response = harness.range(&req).expect("range");
        (keys(&response.kvs), response.more, response.count)
    };
    let v = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    type Filter = fn(&mut pb::RangeRequest);
    let cases: [(Filter, Vec<String>); 5] = [
        (|r| r.min_mod_revision = 6, v(&["a", "d", "e"])),
        (|r| r.max_mod_revision = 6, v(&["b", "c", "d"])),
        (|r| r.min_create_revision = 4, v(&["b", "d", "e"])),
        (|r| r.max_create_revision = 4, v(&["a", "c", "e"])),
        (
            |r| {
                r.min_mod_revision = 5;
                r.max_create_revision = 5
            },
            v(&["a", "b", "e"]),
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(filtered(filter, 0), (expected.clone(), false, 5));
        assert_eq!(filtered(filter, 2), (expected[..2].to_vec(), true, 5));
        assert_eq!(filtered(filter, 3), (expected.clone(), false, 5));
    }
}

#[test]
fn keys_only_and_count_only() {
    let harness = sample();
    let response = harness
        .range(&pb::RangeRequest {
            keys_only: true,
            ..range_req("a", "c", 0)
        })
        .expect("range");
    assert_eq!(keys(&response.kvs), vec!["a", "b"]);
    assert!(response
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version > 0));
    let response = harness
        .range(&pb::RangeRequest {
            count_only: true,
            limit: 1,
            ..range_req("\0", "\0", 0)
        })
        .expect("range");
    assert_eq!(
        (response.kvs.len(), response.count, response.more),
        (0, 5, false)
    );
    let response = harness
        .range(&pb::RangeRequest {
            count_only: true,
            ..range_req("\0", "\0", 3)
        })
        .expect("range");
    assert_eq!(response.count, 2);
}
