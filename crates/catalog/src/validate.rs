//! The rules an instance must obey to enter the catalog, checked before a write is proposed
//! (Register, and plain etcd puts under the reserved prefix). Each rule fails with a
//! [`CatalogError`] naming the field and the rule. Output-only fields (`health`, revisions, check
//! states) are not checked: the cluster sets them.

use std::collections::{BTreeMap, HashSet};

use beacon_proto::beacon::v1::{check, Check, HealthStatus, HttpCheck, Instance};

use crate::address::{self, HOST_PORT_RULE, HOST_RULE, HTTP_URL_RULE};
use crate::defaults::{
    check_id_of, failures_before_critical_of, failures_before_warning_of, interval_ms_of, is_ttl,
    timeout_ms_of, DEFAULT_HTTP_METHOD,
};
use crate::error::CatalogError;

const MAX_SERVICE_NAME_LEN: usize = 63;
const MAX_ID_LEN: usize = 128;
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 255;
const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_KEY_LEN: usize = 128;
const MAX_METADATA_VALUE_LEN: usize = 512;
const MAX_WEIGHT: u32 = 10_000;
const MAX_CHECKS: usize = 16;
const MIN_INTERVAL_MS: u64 = 1_000;
const MIN_TTL_MS: u64 = 1_000;
const MAX_THRESHOLD: u32 = 100;
const MIN_DEREGISTER_CRITICAL_AFTER_MS: u64 = 60_000;
const HTTP_METHODS: [&str; 5] = ["GET", "HEAD", "POST", "PUT", "OPTIONS"];

const SERVICE_NAME_RULE: &str = "must be a DNS label (lowercase letters, digits, '-', 1 to 63 \
     characters, not starting or ending with '-')";
const ID_RULE: &str = "must be 1 to 128 characters of letters, digits, '.', '_' and '-'";

/// Checks that `service` is a DNS label: lowercase ASCII letters, digits and '-', 1 to 63
/// characters, not starting or ending with '-'. Service names are DNS labels so that every
/// service can be resolved by name and its key prefix is unambiguous.
pub fn validate_service_name(service: &str) -> Result<(), CatalogError> {
    let valid = (1..=MAX_SERVICE_NAME_LEN).contains(&service.len())
        && service
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !service.starts_with('-')
        && !service.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(CatalogError::invalid_text(
            "service name",
            service,
            SERVICE_NAME_RULE,
        ))
    }
}

/// Checks that `instance_id` is 1 to 128 characters of ASCII letters, digits, '.', '_' and '-':
/// safe in a key segment, a DNS name and a shell.
pub fn validate_instance_id(instance_id: &str) -> Result<(), CatalogError> {
    if is_id(instance_id) {
        Ok(())
    } else {
        Err(CatalogError::invalid_text(
            "instance id",
            instance_id,
            ID_RULE,
        ))
    }
}

/// Checks every rule of the catalog on a client-supplied or stored instance, in field order, and
/// reports the first broken one. Zero values meaning a default are accepted, so the result is
/// the same before and after [`crate::normalize_instance`].
///
/// - `service`: see [`validate_service_name`]; `id`: see [`validate_instance_id`].
/// - `address`: an IPv4 or IPv6 address, or a DNS name (labels of letters, digits and '-', 1 to
///   63 characters each, not starting or ending with '-', at most 253 in all, optional trailing
///   dot).
/// - `port`: 1 to 65535.
/// - `tags`: at most 64, each 1 to 255 bytes without control characters, no duplicates.
/// - `metadata`: at most 64 entries; keys 1 to 128 bytes of letters, digits, '.', '_' and '-';
///   values at most 512 bytes.
/// - `weight`: at most 10000 (0 means 1).
/// - `checks`: at most 16, with unique ids (an empty id stands for the kind's name), each with
///   an id following the instance id rule and exactly one kind:
///   - HTTP: a URL starting with `http://` or `https://` that names a host; method GET, HEAD,
///     POST, PUT or OPTIONS (empty means GET); header names are HTTP tokens, values hold no
///     control characters;
///   - TCP and gRPC: an address `host:port` (IPv6 hosts in brackets);
///   - TTL: `ttl_ms` at least 1000;
///   - except for TTL checks, `interval_ms` 0 (meaning 10000) or at least 1000, and the timeout
///     (0 meaning min(interval / 2, 5000)) below the interval;
///   - thresholds at most 100, the effective `failures_before_warning` not above the effective
///     `failures_before_critical` (0 means 1 and 3);
///   - `deregister_critical_after_ms` 0 (never) or at least 60000;
///   - `initial_status` a known status.
pub fn validate_instance(instance: &Instance) -> Result<(), CatalogError> {
    validate_service_name(&instance.service)?;
    validate_instance_id(&instance.id)?;
    if !address::is_host(&instance.address) {
        return Err(CatalogError::invalid_text(
            "address",
            &instance.address,
            HOST_RULE,
        ));
    }
    if !(1..=u32::from(u16::MAX)).contains(&instance.port) {
        return Err(CatalogError::invalid_value(
            "port",
            instance.port,
            "must be 1 to 65535",
        ));
    }
    validate_tags(&instance.tags)?;
    validate_metadata(&instance.metadata)?;
    if instance.weight > MAX_WEIGHT {
        return Err(CatalogError::invalid_value(
            "weight",
            instance.weight,
            "must be at most 10000 (0 means the default, 1)",
        ));
    }
    validate_checks(&instance.checks)
}

fn is_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn validate_tags(tags: &[String]) -> Result<(), CatalogError> {
    if tags.len() > MAX_TAGS {
        return Err(CatalogError::too_many("tags", tags.len(), MAX_TAGS));
    }
    let mut seen = HashSet::with_capacity(tags.len());
    for tag in tags {
        let valid = (1..=MAX_TAG_LEN).contains(&tag.len())
            && !tag.chars().any(|character| character.is_control());
        if !valid {
            return Err(CatalogError::invalid_text(
                "tag",
                tag,
                "must be 1 to 255 bytes without control characters",
            ));
        }
        if !seen.insert(tag.as_str()) {
            return Err(CatalogError::duplicate("tag", tag));
        }
    }
    Ok(())
}

fn validate_metadata(
    metadata: &std::collections::HashMap<String, String>,
) -> Result<(), CatalogError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(CatalogError::too_many(
            "metadata entries",
            metadata.len(),
            MAX_METADATA_ENTRIES,
        ));
    }
    // Sorted, so that the first error reported does not depend on hash order.
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    for (key, value) in sorted {
        let valid_key = (1..=MAX_METADATA_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
        if !valid_key {
            return Err(CatalogError::invalid_text(
                "metadata key",
                key,
                "must be 1 to 128 bytes of letters, digits, '.', '_' and '-'",
            ));
        }
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(CatalogError::invalid_text(
                format!("metadata value for key {key:?}"),
                value,
                "must be at most 512 bytes",
            ));
        }
    }
    Ok(())
}

fn validate_checks(checks: &[Check]) -> Result<(), CatalogError> {
    if checks.len() > MAX_CHECKS {
        return Err(CatalogError::too_many("checks", checks.len(), MAX_CHECKS));
    }
    let mut seen = HashSet::with_capacity(checks.len());
    for check in checks {
        let check_id = check_id_of(check);
        let Some(kind) = &check.kind else {
            return Err(CatalogError::invalid_text(
                "check",
                check_id,
                "must set exactly one kind: http, tcp, grpc or ttl",
            ));
        };
        if !is_id(check_id) {
            return Err(CatalogError::invalid_text(
                "check id",
                check_id,
                format!("{ID_RULE} (empty means the kind's name)"),
            ));
        }
        if !seen.insert(check_id) {
            return Err(CatalogError::duplicate("check id", check_id));
        }
        validate_check(check, check_id, kind)?;
    }
    Ok(())
}

fn validate_check(check: &Check, check_id: &str, kind: &check::Kind) -> Result<(), CatalogError> {
    let field = |name: &str| format!("check {check_id:?} {name}");
    match kind {
        check::Kind::Http(http) => validate_http(http, check_id)?,
        check::Kind::Tcp(tcp) => {
            if !address::is_host_port(&tcp.address) {
                return Err(CatalogError::invalid_text(
                    field("address"),
                    &tcp.address,
                    HOST_PORT_RULE,
                ));
            }
        }
        check::Kind::Grpc(grpc) => {
            if !address::is_host_port(&grpc.address) {
                return Err(CatalogError::invalid_text(
                    field("address"),
                    &grpc.address,
                    HOST_PORT_RULE,
                ));
            }
        }
        check::Kind::Ttl(ttl) => {
            if ttl.ttl_ms < MIN_TTL_MS {
                return Err(CatalogError::invalid_value(
                    field("ttl_ms"),
                    ttl.ttl_ms,
                    "must be at least 1000",
                ));
            }
        }
    }
    if !is_ttl(check) {
        if check.interval_ms != 0 && check.interval_ms < MIN_INTERVAL_MS {
            return Err(CatalogError::invalid_value(
                field("interval_ms"),
                check.interval_ms,
                "must be 0 (the default, 10000) or at least 1000",
            ));
        }
        let interval_ms = interval_ms_of(check);
        if timeout_ms_of(check) >= interval_ms {
            return Err(CatalogError::invalid_value(
                field("timeout_ms"),
                check.timeout_ms,
                format!(
                    "must be less than the interval ({interval_ms} ms); 0 means the default, \
                     min(interval / 2, 5000)"
                ),
            ));
        }
    }
    for (name, value) in [
        ("success_before_passing", check.success_before_passing),
        ("failures_before_warning", check.failures_before_warning),
        ("failures_before_critical", check.failures_before_critical),
    ] {
        if value > MAX_THRESHOLD {
            return Err(CatalogError::invalid_value(
                field(name),
                value,
                "must be at most 100",
            ));
        }
    }
    let failures_before_critical = failures_before_critical_of(check);
    if failures_before_warning_of(check) > failures_before_critical {
        return Err(CatalogError::invalid_value(
            field("failures_before_warning"),
            check.failures_before_warning,
            format!(
                "must not exceed failures_before_critical ({failures_before_critical}; 0 means 3)"
            ),
        ));
    }
    if check.deregister_critical_after_ms != 0
        && check.deregister_critical_after_ms < MIN_DEREGISTER_CRITICAL_AFTER_MS
    {
        return Err(CatalogError::invalid_value(
            field("deregister_critical_after_ms"),
            check.deregister_critical_after_ms,
            "must be 0 (never) or at least 60000",
        ));
    }
    if HealthStatus::try_from(check.initial_status).is_err() {
        return Err(CatalogError::invalid_value(
            field("initial_status"),
            check.initial_status,
            "must be passing, warning or critical (unspecified means critical)",
        ));
    }
    Ok(())
}

fn validate_http(http: &HttpCheck, check_id: &str) -> Result<(), CatalogError> {
    let field = |name: &str| format!("check {check_id:?} {name}");
    if !address::is_http_url(&http.url) {
        return Err(CatalogError::invalid_text(
            field("url"),
            &http.url,
            HTTP_URL_RULE,
        ));
    }
    if !http.method.is_empty() && !HTTP_METHODS.contains(&http.method.as_str()) {
        return Err(CatalogError::invalid_text(
            field("method"),
            &http.method,
            format!(
                "must be one of {} (empty means {DEFAULT_HTTP_METHOD})",
                HTTP_METHODS.join(", ")
            ),
        ));
    }
    // Sorted, so that the first error reported does not depend on hash order.
    let headers: BTreeMap<&String, &String> = http.headers.iter().collect();
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_http_token_byte) {
            return Err(CatalogError::invalid_text(
                field("header name"),
                name,
                "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
        if value.chars().any(|character| character.is_control()) {
            return Err(CatalogError::invalid_text(
                field(&format!("header {name:?} value")),
                value,
                "must hold no control characters",
            ));
        }
    }
    Ok(())
}

/// RFC 9110 `tchar`: the bytes a header name may hold.
fn is_http_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
