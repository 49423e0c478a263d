//! Model-based property test: random puts, deletes, txns and compactions, with and without
//! persisting between them, checked against full snapshots of every revision; then a restore
//! from the records must answer the same.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8),
    Delete(usize, Option<usize>),
    /// A txn putting one key and deleting another when `KEYS[0]`'s version equals the number.
    Txn(i64, usize, usize),
    Compact(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..KEYS.len(), proptest::option::of(0..=KEYS.len())).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => (0..3i64, 0..KEYS.len(), 0..KEYS.len()).prop_map(|(v, p, d)| Op::Txn(v, p, d)),
        1 => (0..40i64).prop_map(Op::Compact),
    ]
}

/// `snapshots[r]`: every live key at revision `r` (index 0 unused).
struct Model {
    snapshots: Vec<BTreeMap<Vec<u8>, mvccpb::KeyValue>>,
    compact: i64,
}

impl Model {
    fn current(&self) -> i64 {
        self.snapshots.len() as i64 - 1
    }

    fn latest(&self) -> BTreeMap<Vec<u8>, mvccpb::KeyValue> {
        self.snapshots.last().cloned().unwrap_or_default()
    }

    fn put(
        state: &mut BTreeMap<Vec<u8>, mvccpb::KeyValue>,
        key: &[u8],
        value: Vec<u8>,
        revision: i64,
    ) {
        let previous = state.get(key);
        let kv = mvccpb::KeyValue {
            key: key.to_vec(),
            create_revision: previous.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.map_or(0, |p| p.version) + 1,
            value,
            lease: 0,
        };
        state.insert(key.to_vec(), kv);
    }

    fn delete(
        state: &mut BTreeMap<Vec<u8>, mvccpb::KeyValue>,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> usize {
        let doomed: Vec<Vec<u8>> = state
            .keys()
            .filter(|k| match end {
                None => k.as_slice() == start,
                Some(end) => k.as_slice() >= start && k.as_slice() < end,
            })
            .cloned()
            .collect();
        for key in &doomed {
            state.remove(key);
        }
        doomed.len()
    }

    fn commit(&mut self, state: BTreeMap<Vec<u8>, mvccpb::KeyValue>, changed: bool) {
        if changed {
            self.snapshots.push(state);
        }
    }
}

fn end_key(end: Option<usize>) -> Option<Vec<u8>> {
    end.map(|e| KEYS.get(e).map_or(b"z".to_vec(), |k| k.as_bytes().to_vec()))
}

fn check(harness: &Harness, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(harness.revision(), model.current());
    for revision in -1..=model.current() + 1 {
        let response = harness.range(&range_req("\0", "\0", revision));
        if revision > model.current() {
            prop_assert_eq!(response, Err(MvccError::FutureRevision));
        } else if revision > 0 && revision < model.compact {
            prop_assert_eq!(response, Err(MvccError::Compacted));
        } else {
            let at = if revision <= 0 {
                model.current()
            } else {
                revision
            };
            let expected: Vec<mvccpb::KeyValue> =
                model.snapshots[at as usize].values().cloned().collect();
            let response = response.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(response.count, expected.len() as i64);
            prop_assert_eq!(&response.kvs, &expected, "at {}", at);
            let limited = harness
                .range(&pb::RangeRequest {
                    limit: 2,
                    ..range_req("\0", "\0", revision)
                })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(limited.more, expected.len() > 2);
            prop_assert_eq!(limited.kvs.as_slice(), &expected[..expected.len().min(2)]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn store_matches_a_snapshot_model(ops in proptest::collection::vec((op(), any::<bool>()), 1..40)) {
        let mut harness = Harness::new();
        let mut model = Model { snapshots: vec![BTreeMap::new(), BTreeMap::new()], compact: -1 };
        for (op, persist) in ops {
            harness.persist = persist;
            let next = model.current() + 1;
            match op {
                Op::Put(key, value) => {
                    harness.put(KEYS[key], &value.to_string());
                    let mut state = model.latest();
                    Model::put(&mut state, KEYS[key].as_bytes(), value.to_string().into_bytes(), next);
                    model.commit(state, true);
                }
                Op::Delete(key, end) => {
                    let end = end_key(end);
                    let range_end = end.as_ref().map(|e| String::from_utf8_lossy(e).into_owned()).unwrap_or_default();
                    let response = harness.delete(KEYS[key], &range_end);
                    let mut state = model.latest();
                    let deleted = Model::delete(&mut state, KEYS[key].as_bytes(), end.as_deref());
                    prop_assert_eq!(response.deleted, deleted as i64);
                    model.commit(state, deleted > 0);
                }
                Op::Txn(version, put, delete) => {
                    use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
                    let req = pb::TxnRequest {
                        compare: vec![pb::Compare {
                            result: CompareResult::Equal as i32,
                            target: CompareTarget::Version as i32,
                            key: KEYS[0].into(),
                            range_end: vec![],
                            target_union: Some(TargetUnion::Version(version)),
                        }],
                        success: vec![op_put(KEYS[put], "txn")],
                        failure: vec![op_delete(KEYS[delete], "")],
                    };
                    let response = harness.txn(req).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut state = model.latest();
                    let holds = state.get(KEYS[0].as_bytes()).map_or(0, |kv| kv.version) == version;
                    prop_assert_eq!(response.succeeded, holds);
                    let changed = if holds {
                        Model::put(&mut state, KEYS[put].as_bytes(), b"txn".to_vec(), next);
                        true
                    } else {
                        Model::delete(&mut state, KEYS[delete].as_bytes(), None) > 0
                    };
                    model.commit(state, changed);
                }
                Op::Compact(revision) => {
                    let result = harness.compact(revision).map(|_| ());
                    if revision <= model.compact {
                        prop_assert_eq!(result, Err(MvccError::Compacted));
                    } else if revision > model.current() {
                        prop_assert_eq!(result, Err(MvccError::FutureRevision));
                    } else {
                        prop_assert_eq!(result, Ok(()));
                        model.compact = revision;
                    }
                }
            }
            check(&harness, &model)?;
        }
        harness.flush();
        let mut restored = Harness::new();
        restored.records = harness.records.clone();
        restored.store = KvStore::restore(
            harness.records.records(),
            harness.store.current_revision(),
            harness.store.compact_revision(),
        );
        check(&restored, &model)?;
        prop_assert_eq!(restored.store.index.all_revisions(), harness.store.index.all_revisions());
        // Records hold exactly what the index refers to: compaction leaked nothing.
        prop_assert_eq!(
            harness.records.records().map(|(revision, _)| revision).collect::<std::collections::BTreeSet<_>>(),
            harness.store.index.all_revisions()
        );
    }
}
