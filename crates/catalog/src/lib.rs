//! Beacon's service catalog: services, instances and their checks, stored as ordinary etcd keys
//! so that plain etcd clients can read and watch them. This crate holds the key layout, the record
//! format, validation, defaults, discovery filters, service summaries and the translation of etcd
//! watch events. It is pure: no IO, no clock (check states carry times the leader stamped), and
//! randomness only from a generator the caller passes in.
//!
//! # Key layout
//!
//! Every key starting with `/_beacon/` ([`RESERVED_PREFIX`]) belongs to the catalog. Today the
//! only keys there are instance records:
//!
//! ```text
//! /_beacon/instances/{service}/{instance_id}
//! ```
//!
//! - `{service}` is a DNS label: lowercase letters, digits and `-`, 1 to 63 characters, not
//!   starting or ending with `-`.
//! - `{instance_id}` is 1 to 128 characters of letters, digits, `.`, `_` and `-`.
//! - All instances of a service share the prefix `/_beacon/instances/{service}/`
//!   ([`service_prefix`]): one etcd range reads a service, one prefix watch follows it, and a
//!   range over `/_beacon/instances/` ([`INSTANCES_PREFIX`]) lists every service.
//! - The instance's lease is the key's own etcd lease: when it expires etcd deletes the key,
//!   which deregisters the instance. A persistent instance has no lease.
//! - The record's `create_revision` and `mod_revision` are the key's.
//!
//! Plain etcd puts under `/_beacon/` are checked by [`validate_kv_write`]: only a valid record at
//! an instance key whose service and id match the record is accepted.
//!
//! # Record encoding
//!
//! The value of an instance key is a UTF-8 JSON object ([`encode_instance`],
//! [`decode_instance`]), field names as in `proto/beacon/v1/catalog.proto`:
//!
//! ```json
//! {"service":"web","id":"web-1","address":"10.0.0.1","port":8080,"tags":["v1"],
//!  "metadata":{"zone":"a"},"weight":1,"maintenance":{"enabled":true,"reason":"deploy"},
//!  "checks":[{"id":"http",
//!    "http":{"url":"http://10.0.0.1:8080/health","method":"GET","headers":{"Host":"web"}},
//!    "interval_ms":10000,"timeout_ms":5000,"success_before_passing":1,
//!    "failures_before_warning":1,"failures_before_critical":3,
//!    "deregister_critical_after_ms":600000,"initial_status":"critical",
//!    "state":{"status":"passing","output":"HTTP 200 OK","since_unix_ms":1700000000000}}]}
//! ```
//!
//! - `service` (string), `id` (string), `address` (string) and `port` (number) are required and
//!   always written; `service` and `id` must equal the key's segments.
//! - Every other field is omitted when it holds its zero value (`0`, `""`, `false`, an empty
//!   list or map, an absent object), and a missing field (or `null` for an object) reads as that
//!   zero value. A present but empty object (`"maintenance":{}`, `"state":{}`) stays present.
//! - `tags`: list of strings. `metadata`: object of string values. `weight`: number (0 means 1).
//! - `maintenance`: `{"enabled": bool, "reason": string}`.
//! - `checks`: list of check objects. A check's kind is whichever one of these members it has
//!   (more than one is an error): `"http": {"url", "method", "headers": {name: value},
//!   "tls_skip_verify": bool}`, `"tcp": {"address": "host:port"}`,
//!   `"grpc": {"address": "host:port", "service", "tls": bool}`, `"ttl": {"ttl_ms"}`. Then
//!   `interval_ms`, `timeout_ms`, `success_before_passing`, `failures_before_warning`,
//!   `failures_before_critical`, `deregister_critical_after_ms` (numbers), `initial_status`, and
//!   `state`: `{"status", "output": string, "since_unix_ms": number}` (milliseconds since the
//!   Unix epoch).
//! - Health statuses are the strings `"passing"`, `"warning"` and `"critical"`; unspecified is
//!   an absent field.
//! - Not stored: the lease, the revisions (both the key's) and the instance's `health`, which is
//!   derived from the check states on every read ([`health_of`]).
//! - Writing is deterministic: fields in the order above, map entries sorted by key, no
//!   whitespace, so equal instances give equal bytes. Reading ignores unknown fields, so records
//!   written by a newer version stay readable.
//!
//! Instances are stored as [`normalize_instance`] leaves them, so stored records spell out every
//! default; records put by plain etcd clients may rely on the zero-value defaults instead.
//!
//! # Code map
//!
//! `key` (layout), `record` (JSON encoding), `validate` (rules), `defaults` (what zero values
//! mean, normalization), `address` (hosts, `host:port`, URLs), `guard` (plain etcd writes),
//! `health`, `discovery`, `summary`, `event` (watch translation), `error`.

mod address;
mod defaults;
mod discovery;
mod error;
mod event;
mod guard;
mod health;
mod key;
mod record;
mod summary;
mod validate;

#[cfg(test)]
mod tests;

pub use defaults::{
    fresh_check_states, normalize_instance, weight_of, DEFAULT_FAILURES_BEFORE_CRITICAL,
    DEFAULT_FAILURES_BEFORE_WARNING, DEFAULT_HTTP_METHOD, DEFAULT_INITIAL_STATUS,
    DEFAULT_INTERVAL_MS, DEFAULT_SUCCESS_BEFORE_PASSING, DEFAULT_WEIGHT, MAX_DEFAULT_TIMEOUT_MS,
};
pub use discovery::{discover, Discovery};
pub use error::CatalogError;
pub use event::instance_event;
pub use guard::validate_kv_write;
pub use health::health_of;
pub use key::{
    instance_key, is_instance_key_of, is_reserved, parse_instance_key, service_prefix,
    INSTANCES_PREFIX, RESERVED_PREFIX,
};
pub use record::{decode_instance, encode_instance};
pub use summary::summarize;
pub use validate::{validate_instance, validate_instance_id, validate_service_name};
