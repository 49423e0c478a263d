//! The replicated command, its response and the openraft type configuration.

use std::fmt;
use std::io::Cursor;

use beacon_mvcc::{MvccError, WriteRequest, WriteResponse};
use serde::{Deserialize, Serialize};

/// A member as the Raft membership stores it: what every node needs to reach it and to list it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human-readable name (etcd's member name).
    pub name: String,
    /// host:port for Raft and forwarding traffic.
    pub peer_addr: String,
    /// host:port for client (etcd API) traffic.
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (peer {}, client {})",
            self.name, self.peer_addr, self.client_addr
        )
    }
}

/// A command in the Raft log. Applying it is deterministic on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// etcd KV writes (Put, DeleteRange, Txn, Compact), applied in order, each with its own
    /// revision. Concurrent client writes are batched into one entry so that they share one log
    /// append and one fsync on every member.
    Writes(Vec<WriteRequest>),
}

/// The outcome of applying a command. User-level failures (a compacted revision, a missing key
/// for ignore_value) are outcomes, identical on every replica, not storage errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A blank or membership entry: nothing to report.
    None,
    /// The result of each write of a [`Command::Writes`], in order.
    Writes(Vec<Result<WriteResponse, MvccError>>),
}

openraft::declare_raft_types!(
    /// Beacon's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
