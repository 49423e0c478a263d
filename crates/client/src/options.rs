//! Typed request options and their one mapping to etcd wire requests. The CLI, the bench and
//! library users all build requests here, so etcd's conventions (empty key with `prefix` means the
//! whole keyspace, `from_key` means `range_end = "\0"`) are encoded once.

use crate::key_range::{prefix_range_end, FROM_KEY_RANGE_END};
use crate::pb;

/// What a range is sorted by (etcd's `RangeRequest.SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// By key (the server's natural order).
    #[default]
    Key,
    /// By the key's version.
    Version,
    /// By create revision.
    Create,
    /// By last modification revision.
    Modify,
    /// By value bytes.
    Value,
}

/// Sort direction (etcd's `RangeRequest.SortOrder`); `None` leaves the server's default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// No sorting requested.
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// Options of [`crate::Client::get`]. The default reads one key, linearizably, at the latest
/// revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Read every key starting with the key.
    pub prefix: bool,
    /// Read every key greater than or equal to the key.
    pub from_key: bool,
    /// Explicit exclusive range end; ignored when `prefix` or `from_key` is set.
    pub range_end: Option<Vec<u8>>,
    /// Read at this revision (0 = latest).
    pub revision: i64,
    /// At most this many keys (0 = no limit).
    pub limit: i64,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Serve from the contacted member's local state, possibly stale.
    pub serializable: bool,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Sort order.
    pub sort_order: SortOrder,
}

/// Options of [`crate::Client::put`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Attach the key to this lease (0 = none).
    pub lease: i64,
    /// Keep the current value (the value argument must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (`lease` must be 0).
    pub ignore_lease: bool,
}

/// Options of [`crate::Client::delete`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete every key starting with the key.
    pub prefix: bool,
    /// Delete every key greater than or equal to the key.
    pub from_key: bool,
    /// Explicit exclusive range end; ignored when `prefix` or `from_key` is set.
    pub range_end: Option<Vec<u8>>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// Options of [`crate::Client::watch`]. The default watches one key from the next revision on,
/// and requires the member to have a leader (see `require_leader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the key.
    pub prefix: bool,
    /// Watch every key greater than or equal to the key.
    pub from_key: bool,
    /// Explicit exclusive range end; ignored when `prefix` or `from_key` is set.
    pub range_end: Option<Vec<u8>>,
    /// Deliver events from this revision on (0 = from the next revision).
    pub start_revision: i64,
    /// Attach the previous key-value to each event.
    pub prev_kv: bool,
    /// Ask the server for periodic progress notifications while no events flow.
    pub progress_notify: bool,
    /// Leave out PUT events.
    pub no_put: bool,
    /// Leave out DELETE events.
    pub no_delete: bool,
    /// Let the server split very large revisions over several responses (the client reassembles
    /// them, so callers still see one batch per revision).
    pub fragment: bool,
    /// Send gRPC metadata `hasleader: true`, as etcd's clientv3 `WithRequireLeader` does: a member
    /// that loses its leader cancels the watch, and the client resumes it on another member
    /// instead of waiting on a member that cannot see new writes.
    pub require_leader: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            prefix: false,
            from_key: false,
            range_end: None,
            start_revision: 0,
            prev_kv: false,
            progress_notify: false,
            no_put: false,
            no_delete: false,
            fragment: false,
            require_leader: true,
        }
    }
}

/// The `(key, range_end)` pair etcd expects for a key plus range flags. Like etcd's clientv3, an
/// empty key with `prefix` or `from_key` becomes `"\0"` so it selects the whole keyspace.
fn key_range(
    key: &[u8],
    prefix: bool,
    from_key: bool,
    range_end: Option<&[u8]>,
) -> (Vec<u8>, Vec<u8>) {
    if (prefix || from_key) && key.is_empty() {
        return (vec![0], vec![0]);
    }
    let end = if prefix {
        prefix_range_end(key)
    } else if from_key {
        FROM_KEY_RANGE_END.to_vec()
    } else {
        range_end.map(<[u8]>::to_vec).unwrap_or_default()
    };
    (key.to_vec(), end)
}

impl SortTarget {
    fn to_wire(self) -> pb::range_request::SortTarget {
        use pb::range_request::SortTarget as Wire;
        match self {
            SortTarget::Key => Wire::Key,
            SortTarget::Version => Wire::Version,
            SortTarget::Create => Wire::Create,
            SortTarget::Modify => Wire::Mod,
            SortTarget::Value => Wire::Value,
        }
    }
}

impl SortOrder {
    fn to_wire(self) -> pb::range_request::SortOrder {
        use pb::range_request::SortOrder as Wire;
        match self {
            SortOrder::None => Wire::None,
            SortOrder::Ascend => Wire::Ascend,
            SortOrder::Descend => Wire::Descend,
        }
    }
}

impl GetOptions {
    /// The wire request reading `key` with these options.
    pub fn to_request(&self, key: &[u8]) -> pb::RangeRequest {
        let (key, range_end) =
            key_range(key, self.prefix, self.from_key, self.range_end.as_deref());
        pb::RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order: self.sort_order.to_wire() as i32,
            sort_target: self.sort_target.to_wire() as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            ..Default::default()
        }
    }
}

impl PutOptions {
    /// The wire request writing `value` at `key` with these options.
    pub fn to_request(&self, key: &[u8], value: &[u8]) -> pb::PutRequest {
        pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

impl DeleteOptions {
    /// The wire request deleting `key` (or its range) with these options.
    pub fn to_request(&self, key: &[u8]) -> pb::DeleteRangeRequest {
        let (key, range_end) =
            key_range(key, self.prefix, self.from_key, self.range_end.as_deref());
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

impl WatchOptions {
    /// The create request watching `key` with these options, starting at `start_revision`
    /// (the caller passes `self.start_revision`, or the resume point after a failure).
    pub fn to_create_request(&self, key: &[u8], start_revision: i64) -> pb::WatchCreateRequest {
        use pb::watch_create_request::FilterType;
        let (key, range_end) =
            key_range(key, self.prefix, self.from_key, self.range_end.as_deref());
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        pb::WatchCreateRequest {
            key,
            range_end,
            start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: 0,
            fragment: self.fragment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_get_reads_one_key_linearizably() {
        let request = GetOptions::default().to_request(b"k");
        assert_eq!(request.key, b"k");
        assert!(request.range_end.is_empty());
        assert!(!request.serializable);
        assert_eq!(
            request.sort_order,
            pb::range_request::SortOrder::None as i32
        );
    }

    #[test]
    fn prefix_get_uses_prefix_range_end() {
        let options = GetOptions {
            prefix: true,
            limit: 10,
            revision: 7,
            keys_only: true,
            serializable: true,
            sort_target: SortTarget::Modify,
            sort_order: SortOrder::Descend,
            ..Default::default()
        };
        let request = options.to_request(b"dir/");
        assert_eq!(request.key, b"dir/");
        assert_eq!(request.range_end, b"dir0");
        assert_eq!(request.limit, 10);
        assert_eq!(request.revision, 7);
        assert!(request.keys_only && request.serializable && !request.count_only);
        assert_eq!(
            request.sort_target,
            pb::range_request::SortTarget::Mod as i32
        );
        assert_eq!(
            request.sort_order,
            pb::range_request::SortOrder::Descend as i32
        );
    }

    #[test]
    fn from_key_and_empty_prefix_cover_the_keyspace() {
        let from_key = GetOptions {
            from_key: true,
            ..Default::default()
        };
        assert_eq!(from_key.to_request(b"b").range_end, b"\0");
        let everything = DeleteOptions {
            prefix: true,
            ..Default::default()
        }
        .to_request(b"");
        assert_eq!((everything.key, everything.range_end), (vec![0], vec![0]));
    }

    #[test]
    fn explicit_range_end_is_kept() {
        let options = DeleteOptions {
            range_end: Some(b"z".to_vec()),
            prev_kv: true,
            ..Default::default()
        };
        let request = options.to_request(b"a");
        assert_eq!(request.range_end, b"z");
        assert!(request.prev_kv);
    }

    #[test]
    fn watch_options_map_filters_and_range() {
        let options = WatchOptions {
            prefix: true,
            no_put: true,
            no_delete: true,
            prev_kv: true,
            ..Default::default()
        };
        assert!(options.require_leader, "hasleader is on by default");
        let request = options.to_create_request(b"dir/", 42);
        assert_eq!(
            (request.key.as_slice(), request.range_end.as_slice()),
            (&b"dir/"[..], &b"dir0"[..])
        );
        assert_eq!(request.start_revision, 42);
        assert_eq!(request.filters, vec![0, 1]);
        assert!(request.prev_kv && !request.progress_notify);
    }

    #[test]
    fn put_options_map_field_by_field() {
        let options = PutOptions {
            prev_kv: true,
            lease: 42,
            ignore_value: false,
            ignore_lease: false,
        };
        let request = options.to_request(b"k", b"v");
        assert_eq!(
            request,
            pb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 42,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: false,
            }
        );
    }
}
