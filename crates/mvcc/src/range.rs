//! Reads: etcd's `Range` (revision checks, count, limit and `more`, sort, min/max filters,
//! keys_only, count_only), plus the key lookups writes and compares share.

use std::cmp::Ordering;

use crate::key_range::KeyRange;
use crate::pb::range_request::{SortOrder, SortTarget};
use crate::store::header;
use crate::{mvccpb, pb, KvStore, MvccError, RevisionReader};

impl KvStore {
    /// The key's live value at main revision `at`, if it was live then.
    pub(crate) fn live<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        key: &[u8],
        at: i64,
    ) -> Result<Option<mvccpb::KeyValue>, MvccError> {
        match self.index.get(key, at) {
            Some(state) => Ok(Some(self.record(reader, state.modified)?)),
            None => Ok(None),
        }
    }

    /// Every key in `range` live at `at`, in key order, with its value then.
    pub(crate) fn live_range<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        range: &KeyRange,
        at: i64,
    ) -> Result<Vec<mvccpb::KeyValue>, MvccError> {
        self.index
            .range(range, at)
            .map(|(_, state)| self.record(reader, state.modified))
            .collect()
    }

    /// etcd's applier `Range` as seen from a view at `view_revision` (the current revision, or
    /// inside a write txn the txn's revision once it has written). The header carries the view
    /// revision, not the requested one.
    pub(crate) fn range_at<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        req: &pb::RangeRequest,
        view_revision: i64,
    ) -> Result<pb::RangeResponse, MvccError> {
        if req.revision > view_revision {
            return Err(MvccError::FutureRevision);
        }
        let at = if req.revision <= 0 {
            view_revision
        } else {
            req.revision
        };
        // The compaction revision itself stays readable.
        if at < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // Like etcd: sorting or filtering needs every key; otherwise fetch one more than the
        // limit so `more` can be told.
        let fetch_limit = if req.sort_order != SortOrder::None as i32 || filtered || req.limit <= 0
        {
            usize::MAX
        } else {
            usize::try_from(req.limit.saturating_add(1)).unwrap_or(usize::MAX)
        };

        let mut count: i64 = 0;
        let mut revisions = Vec::new();
        for (_, state) in self.index.range(&range, at) {
            count += 1;
            if !req.count_only && revisions.len() < fetch_limit {
                revisions.push(state.modified);
            }
        }
        if req.count_only {
            return Ok(pb::RangeResponse {
                header: header(view_revision),
                kvs: Vec::new(),
                more: false,
                count,
            });
        }

        let mut kvs = revisions
            .into_iter()
            .map(|revision| self.record(reader, revision))
            .collect::<Result<Vec<_>, _>>()?;
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
        sort(&mut kvs, req.sort_order, req.sort_target);

        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(pb::RangeResponse {
            header: header(view_revision),
            kvs,
            more,
            count,
        })
    }
}

/// etcd's sort rules: a non-key target without an order sorts ascending; ascending by key is the
/// natural order. The sort is stable, so ties stay in key order (etcd's unstable sort leaves
/// their order unspecified). Unknown enum values, which etcd would crash on, leave key order.
fn sort(kvs: &mut [mvccpb::KeyValue], order: i32, target: i32) {
    let Ok(target) = SortTarget::try_from(target) else {
        return;
    };
    let order = match SortOrder::try_from(order) {
        Ok(SortOrder::None) if target != SortTarget::Key => SortOrder::Ascend,
        Ok(order) => order,
        Err(_) => return,
    };
    let by_target = |a: &mvccpb::KeyValue, b: &mvccpb::KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by_target),
        SortOrder::Descend => kvs.sort_by(|a, b| by_target(b, a)),
    }
}
