//! [`Revision`]: a point in the store's history, and its byte encoding.
//!
//! The encoding is what storage uses as the record key, so byte order must equal revision order.

use serde::{Deserialize, Serialize};

/// A point in etcd's history: `main` is the store revision of a write request, `sub` orders the
/// changes within it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Revision {
    /// The store revision of the write request that made the change.
    pub main: i64,
    /// The position of the change within its write request (0, 1, 2…).
    pub sub: i64,
}

impl Revision {
    /// A revision from its two parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian `main` then `sub`. Revisions are never negative in a store, so comparing the
    /// bytes orders revisions exactly as comparing the values does.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.main.to_be_bytes());
        bytes[8..].copy_from_slice(&self.sub.to_be_bytes());
        bytes
    }

    /// The inverse of [`Revision::to_bytes`]; `None` unless `bytes` is exactly 16 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Revision> {
        let main: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let sub: [u8; 8] = bytes.get(8..)?.try_into().ok()?;
        Some(Revision {
            main: i64::from_be_bytes(main),
            sub: i64::from_be_bytes(sub),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_rejects_wrong_lengths() {
        let revision = Revision::new(42, 7);
        assert_eq!(Revision::from_bytes(&revision.to_bytes()), Some(revision));
        assert_eq!(Revision::from_bytes(&[0; 15]), None);
        assert_eq!(Revision::from_bytes(&[0; 17]), None);
        assert_eq!(Revision::from_bytes(&[]), None);
    }

    proptest! {
        #[test]
        fn byte_order_is_revision_order(
            a in (0i64..i64::MAX, 0i64..i64::MAX),
            b in (0i64..i64::MAX, 0i64..i64::MAX),
        ) {
            let (a, b) = (Revision::new(a.0, a.1), Revision::new(b.0, b.1));
            prop_assert_eq!(a.to_bytes().cmp(&b.to_bytes()), a.cmp(&b));
            prop_assert_eq!(Revision::from_bytes(&a.to_bytes()), Some(a));
        }
    }
}
