//! etcd 3.5's MVCC key-value semantics for Beacon: revisions, the key index, range, put, delete
//! range, txn (compares, nested txns), compaction, and the watch events each write produces.
//!
//! The crate is pure: no IO, no clock. [`KvStore`] keeps only the key index in memory; values
//! live in records the caller persists ([`Mutation`]) and reads back through a
//! [`RevisionReader`]. Applying a write ([`KvStore::apply`]) is deterministic, so every Raft
//! replica reaches the same state, and all-or-nothing: on `Err` nothing changed. Requests are
//! checked before they are proposed with the `validate_*` functions, as etcd's gRPC layer does.
//!
//! Code map: `revision` (the [`Revision`] type), `key_range` (etcd's `range_end` rules),
//! `key_index` (per-key generations of revisions), `store` (the [`KvStore`] and compaction),
//! `range` (reads), `history` (records replayed as watch events), `write` (one write request's changes, undoable), `compare` and `txn`
//! (transactions), `validate` (pre-proposal checks), `records`, `lease` (the lease table and [`apply`], the entry point for every replicated write), `request`, `error`.

pub use beacon_proto::{etcdserverpb as pb, mvccpb};

mod compare;
mod error;
mod history;
mod key_index;
mod key_range;
mod lease;
mod range;
mod records;
mod request;
mod revision;
mod store;
mod txn;
mod validate;
mod write;

#[cfg(test)]
mod tests;

pub use error::MvccError;
pub use key_range::KeyRange;
pub use lease::{
    apply, LeaseChange, LeaseExpiry, LeaseRecord, LeaseRegistry, LeaseTable, NoLeases,
    MAX_LEASE_TTL,
};
pub use records::{MemoryRevisions, Mutation, RevisionReader};
pub use request::{Applied, WriteRequest, WriteResponse};
pub use revision::Revision;
pub use store::KvStore;
pub use validate::{
    txn_is_read_only, validate_delete_range, validate_put, validate_range, validate_txn,
};
