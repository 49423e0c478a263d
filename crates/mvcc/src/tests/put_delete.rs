//! Put and delete range: revisions, key-value fields, tombstones, events, flags and errors.

use super::*;
use crate::{mvccpb::event::EventType, Mutation, NoLeases, Revision};

#[test]
fn fresh_store_is_at_revision_one() {
    let harness = Harness::new();
    assert_eq!(harness.revision(), 1);
    assert_eq!(
        harness.store.compact_revision(),
        -1,
        "nothing compacted yet, as etcd"
    );
    let response = harness.range(&range_req("a", "\0", 0)).expect("range");
    assert_eq!(response.header.map(|h| h.revision), Some(1));
    assert!(response.kvs.is_empty());
    assert_eq!(response.count, 0);
}

#[test]
fn puts_set_create_mod_and_version() {
    let mut harness = Harness::new();
    // (key, value, expected header revision, expected kv after)
    let steps = [
        ("a", "1", 2, kv("a", "1", 2, 2, 1)),
        ("b", "1", 3, kv("b", "1", 3, 3, 1)),
        ("a", "2", 4, kv("a", "2", 2, 4, 2)),
        ("a", "3", 5, kv("a", "3", 2, 5, 3)),
    ];
    for (key, value, revision, expected) in steps {
        let response = harness.put(key, value);
        assert_eq!(response.header.map(|h| h.revision), Some(revision));
        assert_eq!(response.prev_kv, None, "prev_kv only when asked");
        assert_eq!(harness.revision(), revision);
        assert_eq!(harness.get(key), Some(expected));
    }
    // Putting the same value again still makes a revision.
    harness.put("a", "3");
    assert_eq!(harness.get("a"), Some(kv("a", "3", 2, 6, 4)));
}

#[test]
fn delete_writes_a_tombstone_and_recreation_starts_a_new_generation() {
    let mut harness = Harness::new();
    harness.put("k", "v1"); // 2
    harness.put("k", "v2"); // 3
    let applied = harness
        .apply(WriteRequest::DeleteRange(pb::DeleteRangeRequest {
            key: b"k".to_vec(),
            range_end: vec![],
            prev_kv: true,
        }))
        .expect("delete");
    let WriteResponse::DeleteRange(response) = applied.response else {
        panic!("wrong response");
    };
    assert_eq!(response.deleted, 1);
    assert_eq!(response.header.map(|h| h.revision), Some(4));
    assert_eq!(response.prev_kvs, vec![kv("k", "v2", 2, 3, 2)]);
    let tombstone = mvccpb::KeyValue {
        key: b"k".to_vec(),
        mod_revision: 4,
        ..Default::default()
    };
    assert_eq!(
        applied.events,
        vec![mvccpb::Event {
            r#type: EventType::Delete as i32,
            kv: Some(tombstone.clone()),
            prev_kv: Some(kv("k", "v2", 2, 3, 2)),
        }]
    );
    assert_eq!(
        crate::RevisionReader::read(&harness.records, Revision::new(4, 0)),
        Ok(Some(tombstone))
    );
    assert_eq!(harness.get("k"), None);

    harness.put("k", "v3"); // 5
    assert_eq!(harness.get("k"), Some(kv("k", "v3", 5, 5, 1)));
    // History stays readable.
    assert_eq!(harness.get_at("k", 3), Ok(Some(kv("k", "v2", 2, 3, 2))));
    assert_eq!(harness.get_at("k", 4), Ok(None));
    assert_eq!(harness.get_at("k", 1), Ok(None));
}

#[test]
fn delete_of_nothing_does_not_bump_the_revision() {
    let mut harness = Harness::new();
    harness.put("a", "1"); // 2
    harness.delete("a", ""); // 3
    for (key, end) in [
        ("a", ""),
        ("missing", ""),
        ("b", "z"),
        ("z", "b"),
        ("x", "\0"),
    ] {
        let applied = harness
            .apply(WriteRequest::DeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                prev_kv: true,
            }))
            .expect("delete");
        let WriteResponse::DeleteRange(response) = applied.response else {
            panic!("wrong response");
        };
        assert_eq!(response.deleted, 0);
        assert!(response.prev_kvs.is_empty());
        assert_eq!(response.header.map(|h| h.revision), Some(3));
        assert!(applied.events.is_empty());
        assert_eq!(harness.revision(), 3);
    }
    assert!(harness.store.take_mutations().is_empty());
}

#[test]
fn delete_range_uses_one_revision_with_increasing_subs() {
    let mut harness = Harness::new();
    for key in ["a", "b", "c", "d"] {
        harness.put(key, key);
    } // revisions 2..=5
    harness.persist = false;
    let response = harness.delete("b", "d");
    assert_eq!(response.deleted, 2);
    assert_eq!(keys(&response.prev_kvs), vec!["b", "c"]);
    assert_eq!(response.header.map(|h| h.revision), Some(6));
    let mutations = harness.store.take_mutations();
    let revisions: Vec<Revision> = mutations
        .iter()
        .map(|m| match m {
            Mutation::PutRecord(revision, kv) => {
                assert_eq!(kv.version, 0, "tombstone");
                *revision
            }
            Mutation::DeleteRecord(_) => panic!("no deletes"),
        })
        .collect();
    assert_eq!(revisions, vec![Revision::new(6, 0), Revision::new(6, 1)]);
    harness.records.apply(mutations);
    harness.persist = true;
    let all = harness.range(&range_req("\0", "\0", 0)).expect("range");
    assert_eq!(keys(&all.kvs), vec!["a", "d"]);
    // Delete everything with "\0"/"\0".
    assert_eq!(harness.delete("\0", "\0").deleted, 2);
    assert_eq!(
        harness
            .range(&range_req("\0", "\0", 0))
            .expect("range")
            .count,
        0
    );
}

#[test]
fn put_flags_prev_kv_ignore_value_ignore_lease() {
    let mut harness = Harness::new();
    let response = harness
        .put_request(pb::PutRequest {
            prev_kv: true,
            lease: 7,
            ..put_req("k", "v1")
        })
        .expect("put");
    assert_eq!(response.prev_kv, None);
    assert_eq!(harness.get("k").map(|kv| kv.lease), Some(7));

    let response = harness
        .put_request(pb::PutRequest {
            prev_kv: true,
            ignore_value: true,
            lease: 8,
            ..put_req("k", "")
        })
        .expect("put");
    assert_eq!(response.prev_kv.map(|kv| kv.value), Some(b"v1".to_vec()));
    let current = harness.get("k").expect("live");
    assert_eq!(
        (current.value.as_slice(), current.lease, current.version),
        (&b"v1"[..], 8, 2)
    );

    harness
        .put_request(pb::PutRequest {
            ignore_lease: true,
            ..put_req("k", "v3")
        })
        .expect("put");
    let current = harness.get("k").expect("live");
    assert_eq!((current.value.as_slice(), current.lease), (&b"v3"[..], 8));

    harness.put_request(put_req("k", "v4")).expect("put");
    assert_eq!(
        harness.get("k").map(|kv| kv.lease),
        Some(0),
        "a plain put drops the lease"
    );
}

#[test]
fn failing_puts_change_nothing() {
    let mut harness = Harness::new();
    harness.put("present", "v"); // 2
    harness.delete("gone", "");
    harness.put("gone", "v"); // 3
    harness.delete("gone", ""); // 4
    let cases = [
        (
            pb::PutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            },
            MvccError::KeyNotFound,
        ),
        (
            pb::PutRequest {
                ignore_lease: true,
                ..put_req("missing", "v")
            },
            MvccError::KeyNotFound,
        ),
        (
            pb::PutRequest {
                ignore_value: true,
                ..put_req("gone", "")
            },
            MvccError::KeyNotFound,
        ),
        (
            pb::PutRequest {
                lease: 99,
                ..put_req("present", "v")
            },
            MvccError::LeaseNotFound,
        ),
        (
            pb::PutRequest {
                lease: 99,
                ignore_value: true,
                ..put_req("missing", "")
            },
            MvccError::LeaseNotFound,
        ),
    ];
    for (req, error) in cases {
        assert_eq!(harness.put_request(req.clone()), Err(error), "{req:?}");
        assert_eq!(harness.revision(), 4);
        assert!(harness.store.take_mutations().is_empty());
    }
    assert_eq!(harness.get("missing"), None);
    // NoLeases knows no lease.
    let result = harness.store.apply(
        &harness.records,
        &NoLeases,
        &WriteRequest::Put(pb::PutRequest {
            lease: 7,
            ..put_req("k", "v")
        }),
    );
    assert_eq!(result, Err(MvccError::LeaseNotFound));
}

#[test]
fn put_events_carry_prev_kv_except_on_creation() {
    let mut harness = Harness::new();
    let first = harness
        .apply(WriteRequest::Put(put_req("k", "v1")))
        .expect("put");
    assert_eq!(
        first.events,
        vec![mvccpb::Event {
            r#type: EventType::Put as i32,
            kv: Some(kv("k", "v1", 2, 2, 1)),
            prev_kv: None,
        }]
    );
    let second = harness
        .apply(WriteRequest::Put(put_req("k", "v2")))
        .expect("put");
    assert_eq!(second.events[0].prev_kv, Some(kv("k", "v1", 2, 2, 1)));
    assert_eq!(second.events[0].kv, Some(kv("k", "v2", 2, 3, 2)));
}

#[test]
fn pending_overlay_serves_reads_until_mutations_are_taken() {
    let mut harness = Harness::new();
    harness.persist = false;
    harness.put("a", "1");
    harness.put("a", "2");
    harness.delete("a", "");
    harness.put("a", "3");
    assert!(harness.records.is_empty());
    assert_eq!(harness.get("a"), Some(kv("a", "3", 5, 5, 1)));
    assert_eq!(harness.get_at("a", 3), Ok(Some(kv("a", "2", 2, 3, 2))));
    let mutations = harness.store.take_mutations();
    let order: Vec<i64> = mutations
        .iter()
        .map(|m| match m {
            Mutation::PutRecord(revision, _) => revision.main,
            Mutation::DeleteRecord(revision) => -revision.main,
        })
        .collect();
    assert_eq!(order, vec![2, 3, 4, 5]);
    // Without persisting, the records are gone: reads report a storage error, never panic.
    assert!(matches!(harness.get_at("a", 0), Err(MvccError::Storage(_))));
    harness.records.apply(mutations);
    assert_eq!(harness.get("a"), Some(kv("a", "3", 5, 5, 1)));
    assert!(harness.store.take_mutations().is_empty());
}
