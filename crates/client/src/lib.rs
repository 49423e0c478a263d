//! Rust client for Beacon (and any etcd v3 server): a [`Client`] over a list of endpoints that
//! fails over between them without ever replaying a write that may already have been applied.
//!
//! The pieces, in the order a request meets them:
//! - [`options`]: typed options (`GetOptions`, `PutOptions`, …) and their mapping to wire requests;
//! - [`key_range`]: etcd's key-range rules (prefix → range end);
//! - [`client`]: the [`Client`] and its failover rule (reads retry anywhere, writes only when the
//!   request certainly never left this process);
//! - [`watch`]: [`Client::watch`] and the [`Watcher`] that resumes on another member without a gap
//!   or a duplicate;
//! - [`connection`]: endpoint parsing and the TCP connector that makes "could not connect"
//!   recognisable;
//! - [`error`]: [`ClientError`], which keeps the gRPC code and message.
//!
//! Wire types are re-exported as [`pb`] (`etcdserverpb`) and [`mvccpb`].

pub mod client;
pub mod connection;
pub mod error;
pub mod key_range;
pub mod options;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

pub use beacon_proto::etcdserverpb as pb;
pub use beacon_proto::mvccpb;
pub use client::Client;
pub use connection::ClientOptions;
pub use error::ClientError;
pub use key_range::prefix_range_end;
pub use options::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, WatchOptions};
pub use watch::{WatchBatch, Watcher};
