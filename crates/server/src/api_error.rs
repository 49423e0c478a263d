//! Every error an API call can end with, and its gRPC status: etcd's codes and exact message
//! strings (clients match on the text), in one table.

use beacon_mvcc::MvccError;
use tonic::{Code, Status};

/// Why an API request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApiError {
    /// An MVCC outcome (compacted, future revision, bad request, …).
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A catalog request or record breaks a catalog rule; the message names the field and rule.
    #[error("beacon: {0}")]
    InvalidCatalog(String),
    /// The catalog has no such instance.
    #[error("beacon: instance {id} of service {service} not found")]
    InstanceNotFound { service: String, id: String },
    /// An etcd error with its code and etcd's exact message (membership errors, …).
    #[error("{1}")]
    Etcd(#[serde(with = "code_as_i32")] Code, String),
    /// This member is not the leader (internal: the request goes to the leader instead).
    #[error("etcdserver: not leader")]
    NotLeaderHere,
    /// A member this request needs cannot be reached now; the client may retry.
    #[error("beacon: {0}")]
    Unavailable(String),
    /// Part of the etcd API Beacon does not offer (yet); the message says which.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug or storage failure; the message is logged and returned.
    #[error("etcdserver: {0}")]
    Internal(String),
}

/// gRPC codes travel between members as their numbers.
mod code_as_i32 {
    use serde::{Deserialize, Deserializer, Serializer};
    use tonic::Code;

    pub fn serialize<S: Serializer>(code: &Code, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(*code as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Code, D::Error> {
        Ok(Code::from(i32::deserialize(deserializer)?))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let code = match &error {
            ApiError::Mvcc(mvcc) => match mvcc {
                MvccError::EmptyKey
                | MvccError::KeyNotFound
                | MvccError::ValueProvided
                | MvccError::LeaseProvided
                | MvccError::TooManyOps
                | MvccError::DuplicateKey => Code::InvalidArgument,
                MvccError::Compacted | MvccError::FutureRevision | MvccError::LeaseTtlTooLarge => {
                    Code::OutOfRange
                }
                MvccError::LeaseNotFound => Code::NotFound,
                MvccError::LeaseExists => Code::FailedPrecondition,
                MvccError::Storage(_) => Code::Internal,
            },
            ApiError::RequestTooLarge | ApiError::InvalidCatalog(_) => Code::InvalidArgument,
            ApiError::InstanceNotFound { .. } => Code::NotFound,
            ApiError::NoLeader
            | ApiError::LeaderChanged
            | ApiError::Timeout
            | ApiError::Stopped
            | ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Etcd(code, _) => *code,
            ApiError::NotLeaderHere => Code::FailedPrecondition,
            ApiError::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_codes_and_strings() {
        let cases = [
            (
                ApiError::Mvcc(MvccError::Compacted),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ApiError::Mvcc(MvccError::FutureRevision),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                ApiError::Mvcc(MvccError::TooManyOps),
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                ApiError::Mvcc(MvccError::DuplicateKey),
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                ApiError::Mvcc(MvccError::EmptyKey),
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                ApiError::Mvcc(MvccError::LeaseNotFound),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                ApiError::Mvcc(MvccError::LeaseExists),
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                ApiError::Mvcc(MvccError::LeaseTtlTooLarge),
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                ApiError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ApiError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ApiError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
    }
}
