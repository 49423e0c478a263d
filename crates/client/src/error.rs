//! [`ClientError`]: every way a client call can fail, keeping the gRPC status code and message
//! so callers can match on etcd's error strings (e.g. `"etcdserver: mvcc: required revision has
//! been compacted"`).

use std::time::Duration;

/// An error from a [`crate::Client`] call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `Client::connect` was given no endpoints.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint string is not a valid `host:port` or `http://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A per-endpoint call named an endpoint the client was not built with.
    #[error("unknown endpoint {0:?} (not in the client's endpoint list)")]
    UnknownEndpoint(String),
    /// The server (or the transport) answered with a gRPC status.
    #[error("{endpoint}: {message} (grpc code {code:?})")]
    Status {
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message, verbatim (etcd's error strings).
        message: String,
    },
    /// No answer within the request timeout. For a write the outcome is unknown.
    #[error("{endpoint}: request timed out after {timeout:?}")]
    Timeout {
        /// The endpoint that did not answer.
        endpoint: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// No endpoint could be connected to, so the request was never sent anywhere.
    #[error("could not connect to any endpoint ({}); last error: {last}", endpoints.join(", "))]
    Unreachable {
        /// Every endpoint tried.
        endpoints: Vec<String>,
        /// The last connection error.
        last: String,
    },
    /// A watch's next revision has been compacted away, so it cannot continue without a gap.
    /// The caller must re-read the state and watch again from a newer revision.
    #[error("{endpoint}: watch canceled: revision {compact_revision} and older are compacted")]
    Compacted {
        /// The endpoint that canceled the watch.
        endpoint: String,
        /// The compaction revision: the oldest revision a new watch may start at.
        compact_revision: i64,
    },
    /// The server refused to create a watch (etcd's `canceled` on creation).
    #[error("{endpoint}: watch canceled: {reason}")]
    WatchCanceled {
        /// The endpoint that refused.
        endpoint: String,
        /// The server's `cancel_reason`.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC status code, when the failure was a gRPC status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            ClientError::Unreachable { .. } => Some(tonic::Code::Unavailable),
            ClientError::Compacted { .. } => Some(tonic::Code::OutOfRange),
            _ => None,
        }
    }

    /// The server's status message, when the failure was a gRPC status.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}
