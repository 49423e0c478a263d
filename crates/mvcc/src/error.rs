//! [`MvccError`]: every way a key-value request can fail, with etcd's exact error strings.

use serde::{Deserialize, Serialize};

/// Why a key-value request failed. The Display strings are etcd's own: etcd clients match on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MvccError {
    /// A request (or a compare) names no key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// The requested revision is older than the compaction revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put with `ignore_value`/`ignore_lease` names a missing key, or a txn holds an empty op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put sets both `ignore_value` and a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put sets both `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn has more compares or ops in one branch than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes a key twice (two puts, or a put inside a delete range).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A put attaches a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease grant names an id that is already granted.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A lease grant asks for more than etcd's maximum TTL.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// Reading a persisted record failed, or a record the index refers to is missing.
    #[error("storage error: {0}")]
    Storage(String),
}
