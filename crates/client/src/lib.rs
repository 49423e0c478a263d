//! Rust client for Beacon (and, for the etcd API, any etcd v3 server): a [`Client`] over a list
//! of endpoints that fails over between them without ever replaying a write that may already
//! have been applied.
//!
//! The pieces, in the order a request meets them:
//! - [`options`]: typed options (`GetOptions`, `PutOptions`, …) and their mapping to wire requests;
//! - [`key_range`]: etcd's key-range rules (prefix → range end);
//! - [`client`]: the [`Client`] and its failover rule (reads retry anywhere, writes only when the
//!   request certainly never left this process, idempotent catalog writes also after
//!   `Unavailable`);
//! - [`watch`]: [`Client::watch`] and the [`Watcher`] that resumes on another member without a gap
//!   or a duplicate;
//! - [`lease`]: lease grant, revoke, time-to-live, list, and [`Client::keep_alive`], whose
//!   [`LeaseKeepAlive`] renews a lease in the background and reports when it is lost;
//! - [`catalog`]: Beacon's service catalog (register, deregister, heartbeat, maintenance, list,
//!   get, discover) and [`Client::watch_service`], whose [`ServiceWatcher`] delivers a snapshot
//!   and then every change, resuming like [`Watcher`];
//! - [`registration`]: [`Client::register_and_keep_alive`], an instance that lives as long as its
//!   [`Registration`] (lease + register + keepalive, re-registering after a lost lease);
//! - [`rotation`]: the order and backoff with which long-lived streams retry endpoints;
//! - [`connection`]: endpoint parsing and the TCP connector that makes "could not connect"
//!   recognisable;
//! - [`error`]: [`ClientError`], which keeps the gRPC code and message.
//!
//! Wire types are re-exported as [`pb`] (`etcdserverpb`), [`mvccpb`] and [`beaconpb`]
//! (`beacon.v1`, the catalog).

pub mod catalog;
pub mod client;
pub mod connection;
pub mod error;
pub mod key_range;
pub mod lease;
pub mod options;
pub mod registration;
pub mod rotation;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

pub use beacon_proto::beacon::v1 as beaconpb;
pub use beacon_proto::etcdserverpb as pb;
pub use beacon_proto::mvccpb;
pub use catalog::{ServiceUpdate, ServiceWatcher};
pub use client::Client;
pub use connection::ClientOptions;
pub use error::ClientError;
pub use key_range::prefix_range_end;
pub use lease::{LeaseKeepAlive, LeaseState};
pub use options::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, WatchOptions};
pub use registration::{Registration, RegistrationState};
pub use watch::{WatchBatch, Watcher};
