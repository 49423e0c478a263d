//! The replicated command, its response and the openraft type configuration.

use std::fmt;

use beacon_mvcc::{MvccError, WriteRequest, WriteResponse};
use beacon_proto::beacon::v1;
use prost::Message;
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
    /// etcd KV writes (Put, DeleteRange, Txn, Compact) and lease operations, applied in order, each with its own
    /// revision. Concurrent client writes are batched into one entry so that they share one log
    /// append and one fsync on every member.
    Writes(WriteBatch),
}

/// Writes encoded as a protobuf `beacon.v1.WriteBatch` (see `proto/beacon/v1/command.proto`):
/// a log entry then serializes as one byte string instead of walking every value byte by byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteBatch(#[serde(with = "serde_bytes")] Vec<u8>);

impl WriteBatch {
    /// Encodes `writes`, in order.
    pub fn from_writes(writes: Vec<WriteRequest>) -> Self {
        let writes = writes
            .into_iter()
            .map(|write| v1::WriteOp {
                op: Some(match write {
                    WriteRequest::Put(put) => v1::write_op::Op::Put(put),
                    WriteRequest::DeleteRange(delete) => v1::write_op::Op::DeleteRange(delete),
                    WriteRequest::Txn(txn) => v1::write_op::Op::Txn(txn),
                    WriteRequest::Compact(compact) => v1::write_op::Op::Compact(compact),
                    WriteRequest::LeaseGrant(grant) => v1::write_op::Op::LeaseGrant(grant),
                    WriteRequest::LeaseRevoke(revoke) => v1::write_op::Op::LeaseRevoke(revoke),
                    WriteRequest::LeaseRenew(renew) => v1::write_op::Op::LeaseRenew(renew),
                    WriteRequest::LeaseExpire(expiry) => v1::write_op::Op::LeaseExpire(expiry),
                }),
            })
            .collect();
        WriteBatch(v1::WriteBatch { writes }.encode_to_vec())
    }

    /// The writes, in order. Fails only on a corrupt entry.
    pub fn writes(&self) -> Result<Vec<WriteRequest>, prost::DecodeError> {
        let batch = v1::WriteBatch::decode(self.0.as_slice())?;
        batch
            .writes
            .into_iter()
            .map(|write| match write.op {
                Some(v1::write_op::Op::Put(put)) => Ok(WriteRequest::Put(put)),
                Some(v1::write_op::Op::DeleteRange(delete)) => {
                    Ok(WriteRequest::DeleteRange(delete))
                }
                Some(v1::write_op::Op::Txn(txn)) => Ok(WriteRequest::Txn(txn)),
                Some(v1::write_op::Op::Compact(compact)) => Ok(WriteRequest::Compact(compact)),
                Some(v1::write_op::Op::LeaseGrant(grant)) => Ok(WriteRequest::LeaseGrant(grant)),
                Some(v1::write_op::Op::LeaseRevoke(revoke)) => {
                    Ok(WriteRequest::LeaseRevoke(revoke))
                }
                Some(v1::write_op::Op::LeaseRenew(renew)) => Ok(WriteRequest::LeaseRenew(renew)),
                Some(v1::write_op::Op::LeaseExpire(expiry)) => {
                    Ok(WriteRequest::LeaseExpire(expiry))
                }
                None => Err(prost::DecodeError::new("a write without an operation")),
            })
            .collect()
    }
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
        SnapshotData = crate::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);
