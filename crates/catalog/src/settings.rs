//! Per-service settings: the record at `/_beacon/services/{service}` holding a service's
//! fail-open threshold (`min_healthy`) and DNS TTL (`dns_ttl_s`), its JSON encoding and its
//! rules. A service without a record has [`default_service_settings`].

use beacon_proto::beacon::v1::ServiceSettings;
use beacon_proto::mvccpb::KeyValue;
use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::key::parse_service_settings_key;
use crate::record::from_json_object;
use crate::validate::validate_service_name;

/// `min_healthy` of a service without settings (or whose record leaves it out): discovery fails
/// open only when no instance passes.
pub const DEFAULT_MIN_HEALTHY: f64 = 0.0;
/// `dns_ttl_s` of a service without settings (or whose record leaves it out).
pub const DEFAULT_DNS_TTL_S: u32 = 5;
/// Longest DNS TTL a service may ask for: one day.
const MAX_DNS_TTL_S: u32 = 86_400;

/// What the record kind is called in error messages.
const RECORD_KIND: &str = "service settings";

/// The JSON record. Both fields are optional when read (absent means the default) and always
/// written, since `dns_ttl_s` 0 is a valid TTL and not the default.
#[derive(Debug, Serialize, Deserialize)]
struct SettingsRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_healthy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns_ttl_s: Option<u32>,
}

/// The settings of a service that has no settings record: [`DEFAULT_MIN_HEALTHY`] and
/// [`DEFAULT_DNS_TTL_S`]. (The proto's own `Default` would give a TTL of 0.)
pub fn default_service_settings(service: &str) -> ServiceSettings {
    ServiceSettings {
        service: service.to_owned(),
        min_healthy: DEFAULT_MIN_HEALTHY,
        dns_ttl_s: DEFAULT_DNS_TTL_S,
    }
}

/// Checks the settings' rules: `service` a valid service name, `min_healthy` a ratio from 0.0
/// to 1.0, `dns_ttl_s` at most 86400.
pub fn validate_service_settings(settings: &ServiceSettings) -> Result<(), CatalogError> {
    validate_service_name(&settings.service)?;
    if !(0.0..=1.0).contains(&settings.min_healthy) {
        return Err(CatalogError::invalid_value(
            "min_healthy",
            settings.min_healthy,
            "must be a ratio from 0.0 to 1.0 (0 fails open only when no instance passes)",
        ));
    }
    if settings.dns_ttl_s > MAX_DNS_TTL_S {
        return Err(CatalogError::invalid_value(
            "dns_ttl_s",
            settings.dns_ttl_s,
            "must be 0 to 86400 seconds",
        ));
    }
    Ok(())
}

/// The JSON record stored at the service's settings key: `{"min_healthy":0.5,"dns_ttl_s":5}`,
/// both fields always written, in this order. The service is the key's, not part of the value.
pub fn encode_service_settings(settings: &ServiceSettings) -> Vec<u8> {
    let record = SettingsRecord {
        min_healthy: Some(settings.min_healthy),
        dns_ttl_s: Some(settings.dns_ttl_s),
    };
    serde_json::to_vec(&record).expect("a record of two numbers always serializes")
}

/// The settings stored in `kv`, a settings key-value as etcd returns it: the service from the
/// key, absent fields as their defaults. Fails when the key is not a settings key or the value
/// is not a settings record. The settings are not validated, so a record that a later
/// version's rules would refuse stays readable.
pub fn decode_service_settings(kv: &KeyValue) -> Result<ServiceSettings, CatalogError> {
    decode_settings_record(&kv.key, &kv.value)
}

/// [`decode_service_settings`] from a key and value.
pub(crate) fn decode_settings_record(
    key: &[u8],
    value: &[u8],
) -> Result<ServiceSettings, CatalogError> {
    let Some(service) = parse_service_settings_key(key) else {
        return Err(CatalogError::invalid_record_of(
            RECORD_KIND,
            key,
            "not a settings key: expected \"/_beacon/services/{service}\"",
        ));
    };
    let record: SettingsRecord = from_json_object(value).map_err(|error| {
        CatalogError::invalid_record_of(
            RECORD_KIND,
            key,
            format!("not a JSON service settings record: {error}"),
        )
    })?;
    Ok(ServiceSettings {
        service,
        min_healthy: record.min_healthy.unwrap_or(DEFAULT_MIN_HEALTHY),
        dns_ttl_s: record.dns_ttl_s.unwrap_or(DEFAULT_DNS_TTL_S),
    })
}
