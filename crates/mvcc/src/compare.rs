//! Txn compares: etcd's `applyCompare` and `compareKV`.

use std::cmp::Ordering;

use crate::key_range::KeyRange;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::{mvccpb, pb, KvStore, MvccError, RevisionReader};

/// Whether `compare` holds at main revision `at`: every live key in its range must satisfy it.
/// With no live key, a VALUE compare fails (a missing value cannot be told from an empty one)
/// and any other target is compared against an all-zero key-value, as in etcd.
pub(crate) fn compare_holds<R: RevisionReader + ?Sized>(
    store: &KvStore,
    reader: &R,
    compare: &pb::Compare,
    at: i64,
) -> Result<bool, MvccError> {
    let range = KeyRange::new(&compare.key, &compare.range_end);
    let kvs = store.live_range(reader, &range, at)?;
    if kvs.is_empty() {
        if compare.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(compare, &mvccpb::KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(compare, kv)))
}

/// etcd's `compareKV`: a target union of the wrong kind compares against zero/empty; an unknown
/// target compares equal; an unknown result holds.
fn compare_kv(compare: &pb::Compare, kv: &mvccpb::KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let wanted = match union {
                Some(TargetUnion::Value(value)) => value.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        Ok(CompareTarget::Create) => {
            let wanted = match union {
                Some(TargetUnion::CreateRevision(revision)) => *revision,
                _ => 0,
            };
            kv.create_revision.cmp(&wanted)
        }
        Ok(CompareTarget::Mod) => {
            let wanted = match union {
                Some(TargetUnion::ModRevision(revision)) => *revision,
                _ => 0,
            };
            kv.mod_revision.cmp(&wanted)
        }
        Ok(CompareTarget::Version) => {
            let wanted = match union {
                Some(TargetUnion::Version(version)) => *version,
                _ => 0,
            };
            kv.version.cmp(&wanted)
        }
        Ok(CompareTarget::Lease) => {
            let wanted = match union {
                Some(TargetUnion::Lease(lease)) => *lease,
                _ => 0,
            };
            kv.lease.cmp(&wanted)
        }
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}
