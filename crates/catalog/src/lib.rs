//! Beacon's service catalog: services, instances and their checks, stored as ordinary etcd keys
//! so that plain etcd clients can read and watch them. This crate holds the key layout, the record
//! format, validation, defaults, discovery filters, service summaries and the translation of etcd
//! watch events. It is pure: no IO, no clock (check states carry times the leader stamped), and
//! randomness only from a generator the caller passes in.
//!
//! # Key layout
//!
//! Every key starting with `/_beacon/` ([`RESERVED_PREFIX`]) belongs to the catalog. The keys
//! there are:
//!
//! ```text
//! /_beacon/instances/{service}/{instance_id}   instance record     (clients and the cluster)
//! /_beacon/services/{service}                  service settings    (clients)
//! /_beacon/checkers                            checker-member set  (the leader only)
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
//! - A service's settings live at `/_beacon/services/{service}` ([`service_settings_key`]), one
//!   key per service that has settings; a range over `/_beacon/services/` ([`SERVICES_PREFIX`])
//!   lists them. A service without the key has the default settings.
//! - [`CHECKERS_KEY`] `/_beacon/checkers` names the members that run health checks; it has no
//!   lease.
//!
//! Plain etcd puts under `/_beacon/` are checked by [`validate_kv_write`]: a valid instance
//! record at an instance key whose service and id match the record, and a valid settings record
//! at a settings key, are accepted; `/_beacon/checkers` and every other key are refused (the
//! leader writes `/_beacon/checkers` without going through the guard).
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
//!   `state`: `{"status", "output": string, "since_unix_ms": number, "reason": string}`
//!   (milliseconds since the Unix epoch; `reason` says why the check has this status, e.g.
//!   `"3 failed probes in a row (failures_before_critical 3)"`).
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
//! # Service settings record
//!
//! The value of `/_beacon/services/{service}` is a UTF-8 JSON object ([`encode_service_settings`],
//! [`decode_service_settings`], proto message `ServiceSettings`):
//!
//! ```json
//! {"min_healthy":0.5,"dns_ttl_s":5}
//! ```
//!
//! - `min_healthy`: number, a ratio from 0.0 to 1.0; absent means 0 ([`DEFAULT_MIN_HEALTHY`]).
//!   With the `PASSING_OR_ELSE_ALL` filter, discovery fails open (returns every matching
//!   instance not in maintenance, with `failed_open` set) when none of them is passing or
//!   warning, or when the passing and warning ones are fewer than `min_healthy` of them
//!   (compared as `healthy / all < min_healthy`, so 1 of 2 against 0.5 does not fail open).
//!   `PASSING` never fails open. See [`discover_with_settings`] and [`failed_open`].
//! - `dns_ttl_s`: integer 0 to 86400, the TTL of the service's DNS answers in seconds; absent
//!   means 5 ([`DEFAULT_DNS_TTL_S`]), and 0 means 0.
//! - The service is the key's; the value does not name it. Both fields are always written, in
//!   this order; unknown fields are ignored when reading; the decoded `ServiceSettings` holds
//!   the effective values (defaults filled in).
//!
//! # Checker set record
//!
//! The value of `/_beacon/checkers` is a UTF-8 JSON object ([`encode_checker_set`],
//! [`decode_checker_set`], [`CheckerSet`]), written by the leader:
//!
//! ```json
//! {"members":[1,2,3],"epoch":7}
//! ```
//!
//! - `members`: the node ids of the members that run health checks, ascending, without
//!   duplicates (encoding sorts and deduplicates; so does decoding).
//! - `epoch`: integer, incremented by the leader on every change of `members`.
//! - Both fields are required; unknown fields are ignored when reading.
//!
//! # Health checks
//!
//! - Ownership ([`rendezvous`]): each check is ranked by the key
//!   `{service}/{instance_id}/{check_id}` ([`rendezvous::check_key`]) over the checker members;
//!   the first member runs it ([`rendezvous::owner`]) and the second confirms a failure before
//!   it turns critical ([`rendezvous::confirmer`]). The weight of member `m` for key `k` is
//!   `fmix64(fnv1a64(le_bytes_u64(m) ++ k))`, fixed forever.
//! - Verdicts ([`CheckTracker`]): the owner feeds each probe's outcome to the check's tracker,
//!   which applies Consul's `success_before_passing`, `failures_before_warning` and
//!   `failures_before_critical` (counting from zero; a failure never improves a status) and
//!   returns a [`Verdict`] `{status, output, reason}` only while the resulting status differs
//!   from the committed one, so steady probes write nothing.
//! - Flap damping ([`FlapPolicy`], default: more than 5 committed changes within 60 s, released
//!   after 60 s stable): a flapping check is proposed as warning with the reason
//!   `flapping: {n} transitions in {window}; held as warning until stable for {stable}`, and
//!   proposed as what its probes imply once that has not changed for `stable_ms`, with the
//!   reason `stable for {stable}, released from the flapping hold; {threshold reason}`.
//!   Threshold reasons read `{n} successful probes in a row (success_before_passing {k})`,
//!   `{n} successful probes in a row, the last answering with a warning
//!   (success_before_passing {k})`, `{n} failed probes in a row (failures_before_warning {k})`
//!   and `{n} failed probes in a row (failures_before_critical {k})`.
//! - A committed verdict ([`Verdict::into_state`]) is written into the record by
//!   [`set_check_state`]. An instance some of whose checks have been critical (by
//!   [`critical_since`]: a critical state with a non-zero `since_unix_ms`) for longer than their
//!   non-zero `deregister_critical_after_ms` is due for deregistration ([`should_deregister`]).
//!
//! # Code map
//!
//! `key` (layout), `record` (instance JSON encoding), `settings` (service settings record),
//! `checkers` (checker set record), `validate` (rules), `defaults` (what zero values mean,
//! normalization), `address` (hosts, `host:port`, URLs), `guard` (plain etcd writes), `health`,
//! `discovery` (filters, fail-open rule), `summary`, `event` (watch translation),
//! `check_tracker` (per-check state machine), `rendezvous` (check ownership), `check_state`
//! (verdicts applied to records, deregistration), `error`.

mod address;
mod check_state;
mod check_tracker;
mod checkers;
mod defaults;
mod discovery;
mod error;
mod event;
mod guard;
mod health;
mod key;
mod record;
pub mod rendezvous;
mod settings;
mod summary;
mod validate;

#[cfg(test)]
mod tests;

pub use check_state::{critical_since, set_check_state, should_deregister};
pub use check_tracker::{CheckTracker, FlapPolicy, ProbeOutcome, Thresholds, Verdict};
pub use checkers::{decode_checker_set, encode_checker_set, CheckerSet};
pub use defaults::{
    fresh_check_states, normalize_instance, weight_of, DEFAULT_FAILURES_BEFORE_CRITICAL,
    DEFAULT_FAILURES_BEFORE_WARNING, DEFAULT_HTTP_METHOD, DEFAULT_INITIAL_STATUS,
    DEFAULT_INTERVAL_MS, DEFAULT_SUCCESS_BEFORE_PASSING, DEFAULT_WEIGHT, MAX_DEFAULT_TIMEOUT_MS,
};
pub use discovery::{
    discover, discover_with_settings, failed_open, weighted_order_by, weighted_prefix_by, Discovery,
};
pub use error::CatalogError;
pub use event::instance_event;
pub use guard::validate_kv_write;
pub use health::health_of;
pub use key::{
    instance_key, is_instance_key_of, is_reserved, parse_instance_key, parse_service_settings_key,
    service_prefix, service_settings_key, CHECKERS_KEY, INSTANCES_PREFIX, RESERVED_PREFIX,
    SERVICES_PREFIX,
};
pub use record::{decode_instance, encode_instance};
pub use settings::{
    decode_service_settings, default_service_settings, encode_service_settings,
    validate_service_settings, DEFAULT_DNS_TTL_S, DEFAULT_MIN_HEALTHY,
};
pub use summary::{summarize, summarize_with_settings};
pub use validate::{validate_instance, validate_instance_id, validate_service_name};
