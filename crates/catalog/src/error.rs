//! [`CatalogError`]: every way catalog input can be refused. The messages are shown to users as
//! they are (gRPC status messages, CLI output), so each names the field and the rule it breaks.

/// Longest rendering of a user-supplied value inside an error message; longer values are cut so
/// that a 10 kB tag does not produce a 10 kB error.
const MAX_VALUE_CHARS: usize = 80;

/// Why an instance, a catalog record or a write under the reserved prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A field's value breaks a rule, e.g. `invalid port 0: must be 1 to 65535`.
    #[error("invalid {field} {value}: {rule}")]
    Invalid {
        /// The field, as users name it (`service name`, `check "http" interval_ms`).
        field: String,
        /// The offending value, quoted when it is a string and cut when it is long.
        value: String,
        /// The rule, starting with "must".
        rule: String,
    },
    /// A list or map holds more entries than allowed.
    #[error("too many {field}: {count}, at most {max} allowed")]
    TooMany {
        /// The list (`tags`, `metadata entries`, `checks`).
        field: String,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A list that must hold distinct values holds one twice.
    #[error("duplicate {field} {value}: each must be unique")]
    Duplicate {
        /// The field (`tag`, `check id`).
        field: String,
        /// The repeated value, quoted.
        value: String,
    },
    /// A key-value write under the reserved prefix at a key that holds no catalog record.
    #[error(
        "key {key} is under the reserved prefix \"/_beacon/\", which holds only the service \
         catalog: the only keys that may be written there are \
         \"/_beacon/instances/{{service}}/{{instance_id}}\", with a JSON instance record as \
         value, and \"/_beacon/services/{{service}}\", with a JSON service settings record as \
         value"
    )]
    ReservedKey {
        /// The refused key, quoted.
        key: String,
    },
    /// A key-value write to a catalog key only the cluster itself writes.
    #[error(
        "key {key} is written only by the cluster: its leader records there which members run \
         health checks"
    )]
    ClusterOwnedKey {
        /// The refused key, quoted.
        key: String,
    },
    /// A key that was expected to be an instance key is not one.
    #[error(
        "key {key} is not an instance key: expected \"/_beacon/instances/{{service}}/{{instance_id}}\""
    )]
    NotInstanceKey {
        /// The key, quoted.
        key: String,
    },
    /// The value stored at a catalog key is not a readable record of the key's kind.
    #[error("invalid {kind} record at key {key}: {reason}")]
    InvalidRecord {
        /// The record's kind: `instance`, `service settings` or `checker set`.
        kind: String,
        /// The key, quoted.
        key: String,
        /// What is wrong with the record (a JSON error, or service/id not matching the key).
        reason: String,
    },
    /// A check state was to be set on a check the instance does not have.
    #[error("instance {instance} has no check {check_id}")]
    UnknownCheck {
        /// The instance as `service/id`, quoted.
        instance: String,
        /// The check id, quoted.
        check_id: String,
    },
}

impl CatalogError {
    /// An [`CatalogError::Invalid`] for a string value (quoted and cut in the message).
    pub fn invalid_text(field: impl Into<String>, value: &str, rule: impl Into<String>) -> Self {
        CatalogError::Invalid {
            field: field.into(),
            value: quote(value),
            rule: rule.into(),
        }
    }

    /// An [`CatalogError::Invalid`] for a number or other value shown as is.
    pub fn invalid_value(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        CatalogError::Invalid {
            field: field.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    pub(crate) fn too_many(field: impl Into<String>, count: usize, max: usize) -> Self {
        CatalogError::TooMany {
            field: field.into(),
            count,
            max,
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: &str) -> Self {
        CatalogError::Duplicate {
            field: field.into(),
            value: quote(value),
        }
    }

    pub(crate) fn reserved_key(key: &[u8]) -> Self {
        CatalogError::ReservedKey {
            key: quote_key(key),
        }
    }

    pub(crate) fn not_instance_key(key: &[u8]) -> Self {
        CatalogError::NotInstanceKey {
            key: quote_key(key),
        }
    }

    pub(crate) fn cluster_owned_key(key: &[u8]) -> Self {
        CatalogError::ClusterOwnedKey {
            key: quote_key(key),
        }
    }

    /// An [`CatalogError::InvalidRecord`] for the instance record at `key`.
    pub(crate) fn invalid_record(key: &[u8], reason: impl Into<String>) -> Self {
        Self::invalid_record_of("instance", key, reason)
    }

    /// An [`CatalogError::InvalidRecord`] for a record of `kind` at `key`.
    pub(crate) fn invalid_record_of(kind: &str, key: &[u8], reason: impl Into<String>) -> Self {
        CatalogError::InvalidRecord {
            kind: kind.to_owned(),
            key: quote_key(key),
            reason: reason.into(),
        }
    }

    pub fn unknown_check(service: &str, instance_id: &str, check_id: &str) -> Self {
        CatalogError::UnknownCheck {
            instance: quote(&format!("{service}/{instance_id}")),
            check_id: quote(check_id),
        }
    }
}

/// `value` in double quotes with Rust's escapes (so control characters stay visible), cut to
/// [`MAX_VALUE_CHARS`] characters.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// A key for an error message: keys are bytes, shown as text with invalid UTF-8 replaced.
fn quote_key(key: &[u8]) -> String {
    quote(&String::from_utf8_lossy(key))
}
