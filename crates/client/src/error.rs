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
}

impl ClientError {
    /// The gRPC status code, when the failure was a gRPC status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            ClientError::Unreachable { .. } => Some(tonic::Code::Unavailable),
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
