//! [`KeyRange`]: etcd's reading of a `(key, range_end)` pair, shared by range, delete range and
//! compare so the three agree.

use std::ops::Bound;

/// Lower and upper bound of a key range, as `BTreeMap::range` takes them.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `range_end == "\0"`: every key `>= start` (with `start == "\0"`, every key).
    From(Vec<u8>),
    /// `[start, end)`; empty when `end <= start`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// etcd's rules: empty `range_end` is a single key, `"\0"` means "to the end".
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::From(key.to_vec()),
            end => KeyRange::Between(key.to_vec(), end.to_vec()),
        }
    }

    /// Bounds for a `BTreeMap` range, or `None` when the range is empty (a reversed `BTreeMap`
    /// range would panic, so the empty case never reaches it).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::From(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Between(start, end) if end > start => {
                Some((Bound::Included(start), Bound::Excluded(end)))
            }
            KeyRange::Between(..) => None,
        }
    }

    /// Whether `key` lies in the range (watch filtering uses it).
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(single) => key == single.as_slice(),
            KeyRange::From(start) => key >= start.as_slice(),
            KeyRange::Between(start, end) => key >= start.as_slice() && key < end.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_range_end_rules() {
        // (key, range_end, keys inside, keys outside)
        type Case<'a> = (&'a [u8], &'a [u8], &'a [&'a [u8]], &'a [&'a [u8]]);
        let cases: &[Case] = &[
            (b"b", b"", &[b"b"], &[b"a", b"b\0", b"c"]),
            (b"b", b"\0", &[b"b", b"c", b"zzz"], &[b"a", b"a\xff"]),
            (b"\0", b"\0", &[b"\0", b"a", b"\xff"], &[]),
            (b"b", b"d", &[b"b", b"c", b"c\xff"], &[b"a", b"d", b"e"]),
            (b"b", b"b", &[], &[b"a", b"b", b"c"]),
            (b"c", b"b", &[], &[b"a", b"b", b"c"]),
        ];
        for (key, end, inside, outside) in cases {
            let range = KeyRange::new(key, end);
            for k in *inside {
                assert!(range.contains(k), "{range:?} should contain {k:?}");
            }
            for k in *outside {
                assert!(!range.contains(k), "{range:?} should not contain {k:?}");
            }
        }
        assert_eq!(KeyRange::new(b"c", b"b").bounds(), None);
        assert_eq!(KeyRange::new(b"b", b"b").bounds(), None);
    }
}
