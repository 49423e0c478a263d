//! The catalog's etcd key layout: everything under [`RESERVED_PREFIX`]: one key per instance at
//! `/_beacon/instances/{service}/{instance_id}`, one per service with settings at
//! `/_beacon/services/{service}`, and the checker-member set at [`CHECKERS_KEY`].
//!
//! Because a service's instances share the prefix `/_beacon/instances/{service}/`, one etcd range
//! or watch over [`service_prefix`] reads or follows exactly that service. The service segment
//! is a DNS label and the id holds no `/`, so the layout is unambiguous: no service's prefix is a
//! prefix of another's (the trailing `/` sees to that).

/// Keys starting with this prefix belong to the catalog; plain etcd writes may only put valid
/// instance records there (see [`crate::validate_kv_write`]).
pub const RESERVED_PREFIX: &str = "/_beacon/";

/// Prefix of every instance record: `/_beacon/instances/{service}/{instance_id}`.
pub const INSTANCES_PREFIX: &str = "/_beacon/instances/";

/// True when `key` is under [`RESERVED_PREFIX`] (the key `/_beacon` itself is not).
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX.as_bytes())
}

/// `/_beacon/instances/{service}/`: the prefix holding exactly the instances of `service`.
///
/// `service` is expected to be a valid service name (see [`crate::validate_service_name`]); a
/// name holding `/` would produce a prefix that also covers other services.
pub fn service_prefix(service: &str) -> Vec<u8> {
    format!("{INSTANCES_PREFIX}{service}/").into_bytes()
}

/// `/_beacon/instances/{service}/{instance_id}`: the key of one instance record.
///
/// Both parts are expected to be valid (see [`crate::validate_instance`]); then
/// [`parse_instance_key`] gives them back.
pub fn instance_key(service: &str, instance_id: &str) -> Vec<u8> {
    format!("{INSTANCES_PREFIX}{service}/{instance_id}").into_bytes()
}

/// The `(service, instance_id)` an instance key names, or `None` when `key` does not have the
/// shape `/_beacon/instances/{service}/{instance_id}` with two non-empty UTF-8 segments free of
/// `/`.
///
/// This checks the shape only: whether the names obey the naming rules is
/// [`crate::validate_instance`]'s job, so a reader still recognises (and can delete) a record
/// written before a rule was tightened.
pub fn parse_instance_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(INSTANCES_PREFIX.as_bytes())?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (service, instance_id) = rest.split_once('/')?;
    if service.is_empty() || instance_id.is_empty() || instance_id.contains('/') {
        return None;
    }
    Some((service.to_owned(), instance_id.to_owned()))
}

/// True when `key` is an instance key of `service` (not merely a key under its prefix).
pub fn is_instance_key_of(key: &[u8], service: &str) -> bool {
    parse_instance_key(key).is_some_and(|(key_service, _)| key_service == service)
}

/// Prefix of every service settings record: `/_beacon/services/{service}`.
pub const SERVICES_PREFIX: &str = "/_beacon/services/";

/// The checker-member set: which members run health checks, written only by the leader (plain
/// etcd writes to it are refused, see [`crate::validate_kv_write`]).
pub const CHECKERS_KEY: &str = "/_beacon/checkers";

/// `/_beacon/services/{service}`: the key of a service's settings record.
///
/// `service` is expected to be a valid service name (see [`crate::validate_service_name`]);
/// then [`parse_service_settings_key`] gives it back.
pub fn service_settings_key(service: &str) -> Vec<u8> {
    format!("{SERVICES_PREFIX}{service}").into_bytes()
}

/// The service a settings key names, or `None` when `key` does not have the shape
/// `/_beacon/services/{service}` with one non-empty UTF-8 segment free of `/`. Like
/// [`parse_instance_key`], this checks the shape only.
pub fn parse_service_settings_key(key: &[u8]) -> Option<String> {
    let service = key.strip_prefix(SERVICES_PREFIX.as_bytes())?;
    let service = std::str::from_utf8(service).ok()?;
    if service.is_empty() || service.contains('/') {
        return None;
    }
    Some(service.to_owned())
}
