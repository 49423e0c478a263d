//! [`LeaseRegistry`]: the one question the key-value store asks about leases.

/// Lease existence, consulted by a put that attaches a lease.
pub trait LeaseRegistry {
    /// Whether a lease with this id is currently granted.
    fn exists(&self, lease_id: i64) -> bool;
}

/// The registry used until Beacon has leases: no lease exists, so a put with a lease fails with
/// [`crate::MvccError::LeaseNotFound`] as etcd does for an unknown lease.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLeases;

impl LeaseRegistry for NoLeases {
    fn exists(&self, _lease_id: i64) -> bool {
        false
    }
}
