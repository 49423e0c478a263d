//! Checks done before a request is proposed to Raft: etcd's `v3rpc/key.go` checks, so a request
//! etcd would reject never reaches the log.

use std::collections::HashSet;

use crate::pb::{self, request_op::Request};
use crate::MvccError;

/// Reject a range with no key.
pub fn validate_range(req: &pb::RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Reject a put with no key, or with `ignore_value`/`ignore_lease` and a value/lease.
pub fn validate_put(req: &pb::PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// Reject a delete range with no key.
pub fn validate_delete_range(req: &pb::DeleteRangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Check a txn as etcd does, in etcd's order: first the shape (at most `max_txn_ops` compares or
/// ops per branch, nested txns sharing what is left of the budget; no empty key; no empty op),
/// recursively; then that no branch writes a key twice (`checkIntervals`).
pub fn validate_txn(req: &pb::TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    check_txn_shape(req, i64::try_from(max_txn_ops).unwrap_or(i64::MAX))?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// True when no branch (recursively) contains a put or delete: the server may serve it as a read.
///
/// etcd itself sends any txn with a nested txn through Raft; the answer is the same either way,
/// because a txn that writes nothing does not change the revision.
pub fn txn_is_read_only(req: &pb::TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(nested)) => txn_is_read_only(nested),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        })
}

fn check_txn_shape(req: &pb::TxnRequest, max_txn_ops: i64) -> Result<(), MvccError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    let ops = i64::try_from(ops).unwrap_or(i64::MAX);
    if ops > max_txn_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(range)) => validate_range(range)?,
            Some(Request::RequestPut(put)) => validate_put(put)?,
            Some(Request::RequestDeleteRange(delete)) => validate_delete_range(delete)?,
            Some(Request::RequestTxn(nested)) => check_txn_shape(nested, max_txn_ops - ops)?,
            // etcd answers an empty op with "key not found".
            None => return Err(MvccError::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted key interval as etcd's `checkIntervals` sees it: `[start, end)`, where a single-key
/// delete is `[key, key + "\0")`. A delete with `range_end == "\0"` ("from key") becomes
/// `[key, "\0")`, which etcd's interval tree never finds intersecting a key: kept as-is so the
/// quirk matches etcd (such a delete may share a txn with a put of a key it covers).
struct DeletedInterval {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl DeletedInterval {
    fn new(delete: &pb::DeleteRangeRequest) -> Self {
        let end = if delete.range_end.is_empty() {
            let mut end = delete.key.clone();
            end.push(0);
            end
        } else {
            delete.range_end.clone()
        };
        DeletedInterval {
            start: delete.key.clone(),
            end,
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }
}

fn intersects(deletes: &[DeletedInterval], key: &[u8]) -> bool {
    deletes.iter().any(|delete| delete.contains(key))
}

/// etcd's `checkIntervals`: within one list of ops (and the txns nested in it) no key may be put
/// twice, and no put may fall inside a delete. Deletes may overlap each other; the success and
/// failure branches of a nested txn may put the same key, as only one of them runs.
fn check_intervals(
    ops: &[pb::RequestOp],
) -> Result<(HashSet<Vec<u8>>, Vec<DeletedInterval>), MvccError> {
    let mut deletes: Vec<DeletedInterval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(delete)) => Some(DeletedInterval::new(delete)),
            _ => None,
        })
        .collect();

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deletes_then) = check_intervals(&nested.success)?;
        let (puts_else, deletes_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || intersects(&deletes, key) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if puts.contains(key) && !puts_then.contains(key) {
                return Err(MvccError::DuplicateKey);
            }
            if intersects(&deletes, key) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }

    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || intersects(&deletes, &put.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn delete(key: &str, range_end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            })),
        }
    }

    fn get(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestTxn(txn(success, failure))),
        }
    }

    fn compare(key: &str) -> pb::Compare {
        pb::Compare {
            key: key.into(),
            ..Default::default()
        }
    }

    #[test]
    fn single_requests() {
        let ok_put = pb::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        let cases: Vec<(pb::PutRequest, Result<(), MvccError>)> = vec![
            (ok_put.clone(), Ok(())),
            (
                pb::PutRequest {
                    key: vec![],
                    ..ok_put.clone()
                },
                Err(MvccError::EmptyKey),
            ),
            (
                pb::PutRequest {
                    ignore_value: true,
                    value: b"v".to_vec(),
                    ..ok_put.clone()
                },
                Err(MvccError::ValueProvided),
            ),
            (
                pb::PutRequest {
                    ignore_value: true,
                    ..ok_put.clone()
                },
                Ok(()),
            ),
            (
                pb::PutRequest {
                    ignore_lease: true,
                    lease: 5,
                    ..ok_put.clone()
                },
                Err(MvccError::LeaseProvided),
            ),
            (
                pb::PutRequest {
                    ignore_lease: true,
                    ..ok_put.clone()
                },
                Ok(()),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(validate_put(&req), want, "{req:?}");
        }
        assert_eq!(
            validate_range(&pb::RangeRequest::default()),
            Err(MvccError::EmptyKey)
        );
        assert_eq!(
            validate_range(&pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            validate_delete_range(&pb::DeleteRangeRequest::default()),
            Err(MvccError::EmptyKey)
        );
        assert_eq!(
            validate_delete_range(&pb::DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            Ok(())
        );
    }

    #[test]
    fn txn_rules() {
        let cases: Vec<(&str, pb::TxnRequest, Result<(), MvccError>)> = vec![
            ("empty txn", txn(vec![], vec![]), Ok(())),
            (
                "same key in both branches",
                txn(vec![put("a")], vec![put("a")]),
                Ok(()),
            ),
            (
                "two puts of one key",
                txn(vec![put("a"), put("a")], vec![]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "two puts in failure",
                txn(vec![], vec![put("b"), put("b")]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "put inside delete range",
                txn(vec![delete("a", "c"), put("b")], vec![]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "put before single delete",
                txn(vec![put("a"), delete("a", "")], vec![]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "put at range end",
                txn(vec![delete("a", "c"), put("c")], vec![]),
                Ok(()),
            ),
            (
                "overlapping deletes",
                txn(
                    vec![delete("a", "c"), delete("b", "d"), delete("b", "")],
                    vec![],
                ),
                Ok(()),
            ),
            (
                "from-key delete (etcd quirk)",
                txn(vec![delete("a", "\0"), put("b")], vec![]),
                Ok(()),
            ),
            (
                "ranges of a put key",
                txn(vec![get("a"), put("a"), get("a")], vec![]),
                Ok(()),
            ),
            (
                "nested put twice",
                txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "nested put in outer delete",
                txn(
                    vec![delete("a", "z"), nested(vec![], vec![put("b")])],
                    vec![],
                ),
                Err(MvccError::DuplicateKey),
            ),
            (
                "nested branches share a key",
                txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]),
                Ok(()),
            ),
            (
                "two nested txns put one key",
                txn(
                    vec![
                        nested(vec![put("a")], vec![]),
                        nested(vec![], vec![put("a")]),
                    ],
                    vec![],
                ),
                Err(MvccError::DuplicateKey),
            ),
            (
                "nested delete covers outer put",
                txn(
                    vec![nested(vec![delete("a", "c")], vec![]), put("b")],
                    vec![],
                ),
                Err(MvccError::DuplicateKey),
            ),
            (
                "nested delete after nested put",
                txn(
                    vec![
                        nested(vec![put("a")], vec![]),
                        nested(vec![delete("a", "")], vec![]),
                    ],
                    vec![],
                ),
                Ok(()),
            ),
            (
                "nested duplicate",
                txn(vec![nested(vec![put("a"), put("a")], vec![])], vec![]),
                Err(MvccError::DuplicateKey),
            ),
            (
                "empty op",
                txn(vec![pb::RequestOp { request: None }], vec![]),
                Err(MvccError::KeyNotFound),
            ),
            (
                "empty key in op",
                txn(vec![get("")], vec![]),
                Err(MvccError::EmptyKey),
            ),
            (
                "empty key in nested op",
                txn(vec![nested(vec![], vec![put("")])], vec![]),
                Err(MvccError::EmptyKey),
            ),
            (
                "empty compare key",
                pb::TxnRequest {
                    compare: vec![compare("")],
                    ..txn(vec![], vec![])
                },
                Err(MvccError::EmptyKey),
            ),
            (
                "ignore_value with value in txn",
                txn(
                    vec![pb::RequestOp {
                        request: Some(Request::RequestPut(pb::PutRequest {
                            key: b"a".to_vec(),
                            value: b"v".to_vec(),
                            ignore_value: true,
                            ..Default::default()
                        })),
                    }],
                    vec![],
                ),
                Err(MvccError::ValueProvided),
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(validate_txn(&req, 128), want, "{name}");
        }
    }

    #[test]
    fn too_many_ops_is_counted_per_branch_with_nested_budget() {
        let puts = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
        let compares = |n: usize| {
            (0..n)
                .map(|i| compare(&format!("k{i}")))
                .collect::<Vec<_>>()
        };
        let cases: Vec<(&str, pb::TxnRequest, Result<(), MvccError>)> = vec![
            ("4 per branch", txn(puts(4), puts(4)), Ok(())),
            (
                "5 in success",
                txn(puts(5), vec![]),
                Err(MvccError::TooManyOps),
            ),
            (
                "5 in failure",
                txn(vec![], puts(5)),
                Err(MvccError::TooManyOps),
            ),
            (
                "5 compares",
                pb::TxnRequest {
                    compare: compares(5),
                    ..txn(vec![], vec![])
                },
                Err(MvccError::TooManyOps),
            ),
            (
                "4 compares",
                pb::TxnRequest {
                    compare: compares(4),
                    ..txn(vec![], vec![])
                },
                Ok(()),
            ),
            // Outer uses 2 of 4, so a nested txn may have 2 per branch.
            (
                "nested within budget",
                txn(vec![put("x"), nested(puts(2), vec![])], vec![]),
                Ok(()),
            ),
            (
                "nested over budget",
                txn(vec![put("x"), nested(puts(3), vec![])], vec![]),
                Err(MvccError::TooManyOps),
            ),
            (
                "empty nested at full budget",
                txn(
                    puts(3)
                        .into_iter()
                        .chain([nested(vec![], vec![])])
                        .collect(),
                    vec![],
                ),
                Ok(()),
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(validate_txn(&req, 4), want, "{name}");
        }
    }

    #[test]
    fn read_only_detection_recurses() {
        assert!(txn_is_read_only(&txn(vec![get("a")], vec![get("b")])));
        assert!(txn_is_read_only(&txn(
            vec![nested(vec![get("a")], vec![])],
            vec![]
        )));
        assert!(!txn_is_read_only(&txn(vec![get("a")], vec![put("b")])));
        assert!(!txn_is_read_only(&txn(
            vec![nested(vec![], vec![delete("a", "")])],
            vec![]
        )));
    }
}
