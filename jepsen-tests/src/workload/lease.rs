//! The lease workload's plan, to be built when beacond has leases (it answers `Unimplemented`
//! today). Interface it will fill:
//!
//! - new [`crate::history::Function`] variants `Grant { ttl }`, `KeepAlive`, `Revoke`,
//!   `PutWithLease`, `ReadLeased`, and a `lease` field on [`crate::history::Op`];
//! - clients: some grant a lease, bind keys to it and keep it alive continuously; others stop
//!   keeping alive or revoke;
//! - checker (`checker::lease`): with continuous keepalive a lease never expires early (a read
//!   never misses a key whose lease had an acknowledged keepalive within its TTL), also across
//!   leader changes; after an acknowledged revoke or an expiry no read sees the key again;
//!   negative control: a crafted history with an early expiry must be rejected.
//!
//! [`crate::workload::Workload::new`] refuses `--workload lease` with [`NOT_YET`].

/// Why `--workload lease` is refused.
pub const NOT_YET: &str =
    "the lease workload needs leases in beacond, which do not exist yet (see workload/lease.rs)";
