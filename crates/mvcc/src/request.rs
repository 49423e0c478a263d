//! The replicated write requests and what applying one produces.

use serde::{Deserialize, Serialize};

use crate::{mvccpb, pb};

/// The replicated write requests (they travel in Raft log entries, so serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteRequest {
    /// etcd's `KV.Put`.
    Put(pb::PutRequest),
    /// etcd's `KV.DeleteRange`.
    DeleteRange(pb::DeleteRangeRequest),
    /// etcd's `KV.Txn` when it may write (see [`crate::txn_is_read_only`]).
    Txn(pb::TxnRequest),
    /// etcd's `KV.Compact`.
    Compact(pb::CompactionRequest),
    /// etcd's `Lease.LeaseGrant`, with the id already chosen (never 0).
    LeaseGrant(pb::LeaseGrantRequest),
    /// etcd's `Lease.LeaseRevoke`: deletes the attached keys in one revision.
    LeaseRevoke(pb::LeaseRevokeRequest),
    /// One keepalive of etcd's `Lease.LeaseKeepAlive`: the lease's deadline restarts.
    LeaseRenew(pb::LeaseKeepAliveRequest),
    /// The leader's expiry decision (see [`crate::LeaseExpiry`]).
    LeaseExpire(crate::LeaseExpiry),
}

/// The response to a [`WriteRequest`], of the matching kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteResponse {
    /// Answer to [`WriteRequest::Put`].
    Put(pb::PutResponse),
    /// Answer to [`WriteRequest::DeleteRange`].
    DeleteRange(pb::DeleteRangeResponse),
    /// Answer to [`WriteRequest::Txn`].
    Txn(pb::TxnResponse),
    /// Answer to [`WriteRequest::Compact`].
    Compact(pb::CompactionResponse),
    /// Answer to [`WriteRequest::LeaseGrant`].
    LeaseGrant(pb::LeaseGrantResponse),
    /// Answer to [`WriteRequest::LeaseRevoke`].
    LeaseRevoke(pb::LeaseRevokeResponse),
    /// Answer to [`WriteRequest::LeaseRenew`]: TTL 0 when the lease does not exist.
    LeaseRenew(pb::LeaseKeepAliveResponse),
    /// Answer to [`WriteRequest::LeaseExpire`]: false when the lease was renewed or gone.
    LeaseExpire { expired: bool },
}

/// What applying a write produced: the response (header.revision set to the store revision after
/// the write; other header fields left 0 for the server to fill) and the events in order, each
/// with prev_kv filled when a previous version existed (the watch hub filters what clients asked
/// for).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The response for the client.
    pub response: WriteResponse,
    /// One event per changed key, in the order the changes were made.
    pub events: Vec<mvccpb::Event>,
}
