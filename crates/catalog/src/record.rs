//! The JSON document stored as the value of an instance key, and its conversion to and from
//! [`Instance`]. See the crate documentation for the format.
//!
//! The record types mirror the proto messages field by field; they exist so that the stored
//! format has readable names, lowercase status strings and a deterministic byte encoding (maps
//! are written in key order), independent of prost's representation.

use std::collections::BTreeMap;

use beacon_proto::beacon::v1::{
    check, Check, CheckState, GrpcCheck, HealthStatus, HttpCheck, Instance, Maintenance, TcpCheck,
    TtlCheck,
};
use beacon_proto::mvccpb::KeyValue;
use serde::{Deserialize, Serialize};

use crate::error::{quote, CatalogError};
use crate::health::health_of;
use crate::key::parse_instance_key;

/// The instance record at `/_beacon/instances/{service}/{id}`. Unknown fields are ignored when
/// reading, so a record written by a newer version stays readable.
#[derive(Debug, Serialize, Deserialize)]
struct InstanceRecord {
    service: String,
    id: String,
    address: String,
    port: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maintenance: Option<MaintenanceRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MaintenanceRecord {
    #[serde(default, skip_serializing_if = "is_false")]
    enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

/// A check: its kind is whichever one of `http`, `tcp`, `grpc`, `ttl` is present.
#[derive(Debug, Serialize, Deserialize)]
struct CheckRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<TcpRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grpc: Option<GrpcRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<TtlRecord>,
    #[serde(default, skip_serializing_if = "is_zero")]
    interval_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    timeout_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    success_before_passing: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    failures_before_warning: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    failures_before_critical: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    deregister_critical_after_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initial_status: Option<StatusRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<CheckStateRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HttpRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_false")]
    tls_skip_verify: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TcpRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    address: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrpcRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    service: String,
    #[serde(default, skip_serializing_if = "is_false")]
    tls: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TtlRecord {
    #[serde(default, skip_serializing_if = "is_zero")]
    ttl_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckStateRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<StatusRecord>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    output: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    since_unix_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

/// A health status as stored; `HEALTH_STATUS_UNSPECIFIED` is an absent field.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StatusRecord {
    Passing,
    Warning,
    Critical,
}

/// `value` parsed as a JSON object into `T`. serde would also read a struct from a JSON array of
/// its fields in order; records are objects only, so an array is refused.
pub(crate) fn from_json_object<T: serde::de::DeserializeOwned>(
    value: &[u8],
) -> Result<T, serde_json::Error> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)?;
    T::deserialize(serde_json::Value::Object(object))
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The JSON record stored as the value of the instance's key. Output-only and key-level data is
/// left out: the lease (the etcd key's own lease), `health` (derived from the check states) and
/// the revisions (the key's). Equal instances always encode to equal bytes. The instance should
/// be valid; an enum value this version does not know is written as absent.
pub fn encode_instance(instance: &Instance) -> Vec<u8> {
    let record = InstanceRecord::from(instance);
    serde_json::to_vec(&record)
        .expect("a record of strings, numbers and string-keyed maps always serializes")
}

/// The instance stored in `kv`, an instance key-value as etcd returns it: the record decoded, with
/// `lease`, `create_revision` and `mod_revision` taken from `kv` and `health` derived by
/// [`health_of`]. Fails when the key is not an instance key, the value is not a record, or the
/// record's service and id differ from the key's. The instance is not validated, so a record
/// that a later version's rules would refuse stays readable.
pub fn decode_instance(kv: &KeyValue) -> Result<Instance, CatalogError> {
    let mut instance = decode_record(&kv.key, &kv.value)?;
    instance.lease = kv.lease;
    instance.create_revision = kv.create_revision;
    instance.mod_revision = kv.mod_revision;
    instance.health = health_of(&instance) as i32;
    Ok(instance)
}

/// The instance a record at `key` describes, without anything taken from the key-value's
/// metadata (lease, revisions, health).
pub(crate) fn decode_record(key: &[u8], value: &[u8]) -> Result<Instance, CatalogError> {
    let Some((key_service, key_id)) = parse_instance_key(key) else {
        return Err(CatalogError::not_instance_key(key));
    };
    let record: InstanceRecord = serde_json::from_slice(value).map_err(|error| {
        CatalogError::invalid_record(key, format!("not a JSON instance record: {error}"))
    })?;
    if record.service != key_service || record.id != key_id {
        return Err(CatalogError::invalid_record(
            key,
            format!(
                "the record names service {} and id {}, but the key names service {} and id {}",
                quote(&record.service),
                quote(&record.id),
                quote(&key_service),
                quote(&key_id),
            ),
        ));
    }
    record
        .into_instance()
        .map_err(|reason| CatalogError::invalid_record(key, reason))
}

impl From<&Instance> for InstanceRecord {
    fn from(instance: &Instance) -> Self {
        InstanceRecord {
            service: instance.service.clone(),
            id: instance.id.clone(),
            address: instance.address.clone(),
            port: instance.port,
            tags: instance.tags.clone(),
            metadata: sorted(&instance.metadata),
            weight: instance.weight,
            maintenance: instance
                .maintenance
                .as_ref()
                .map(|maintenance| MaintenanceRecord {
                    enabled: maintenance.enabled,
                    reason: maintenance.reason.clone(),
                }),
            checks: instance.checks.iter().map(CheckRecord::from).collect(),
        }
    }
}

impl InstanceRecord {
    /// The instance, or why a check cannot become one (a check naming two kinds).
    fn into_instance(self) -> Result<Instance, String> {
        let checks = self
            .checks
            .into_iter()
            .map(CheckRecord::into_check)
            .collect::<Result<_, _>>()?;
        Ok(Instance {
            service: self.service,
            id: self.id,
            address: self.address,
            port: self.port,
            tags: self.tags,
            metadata: self.metadata.into_iter().collect(),
            weight: self.weight,
            lease: 0,
            checks,
            maintenance: self.maintenance.map(|maintenance| Maintenance {
                enabled: maintenance.enabled,
                reason: maintenance.reason,
            }),
            health: HealthStatus::Unspecified as i32,
            create_revision: 0,
            mod_revision: 0,
        })
    }
}

impl From<&Check> for CheckRecord {
    fn from(check: &Check) -> Self {
        let (mut http, mut tcp, mut grpc, mut ttl) = (None, None, None, None);
        match &check.kind {
            Some(check::Kind::Http(kind)) => {
                http = Some(HttpRecord {
                    url: kind.url.clone(),
                    method: kind.method.clone(),
                    headers: sorted(&kind.headers),
                    tls_skip_verify: kind.tls_skip_verify,
                })
            }
            Some(check::Kind::Tcp(kind)) => {
                tcp = Some(TcpRecord {
                    address: kind.address.clone(),
                })
            }
            Some(check::Kind::Grpc(kind)) => {
                grpc = Some(GrpcRecord {
                    address: kind.address.clone(),
                    service: kind.service.clone(),
                    tls: kind.tls,
                })
            }
            Some(check::Kind::Ttl(kind)) => {
                ttl = Some(TtlRecord {
                    ttl_ms: kind.ttl_ms,
                })
            }
            None => {}
        }
        CheckRecord {
            id: check.id.clone(),
            http,
            tcp,
            grpc,
            ttl,
            interval_ms: check.interval_ms,
            timeout_ms: check.timeout_ms,
            success_before_passing: check.success_before_passing,
            failures_before_warning: check.failures_before_warning,
            failures_before_critical: check.failures_before_critical,
            deregister_critical_after_ms: check.deregister_critical_after_ms,
            initial_status: StatusRecord::from_proto(check.initial_status),
            state: check.state.as_ref().map(|state| CheckStateRecord {
                status: StatusRecord::from_proto(state.status),
                output: state.output.clone(),
                since_unix_ms: state.since_unix_ms,
                reason: state.reason.clone(),
            }),
        }
    }
}

impl CheckRecord {
    fn into_check(self) -> Result<Check, String> {
        let kinds = [
            self.http.map(|http| {
                check::Kind::Http(HttpCheck {
                    url: http.url,
                    method: http.method,
                    headers: http.headers.into_iter().collect(),
                    tls_skip_verify: http.tls_skip_verify,
                })
            }),
            self.tcp.map(|tcp| {
                check::Kind::Tcp(TcpCheck {
                    address: tcp.address,
                })
            }),
            self.grpc.map(|grpc| {
                check::Kind::Grpc(GrpcCheck {
                    address: grpc.address,
                    service: grpc.service,
                    tls: grpc.tls,
                })
            }),
            self.ttl
                .map(|ttl| check::Kind::Ttl(TtlCheck { ttl_ms: ttl.ttl_ms })),
        ];
        let mut kinds = kinds.into_iter().flatten();
        let kind = kinds.next();
        if kinds.next().is_some() {
            return Err(format!(
                "check {} names more than one kind: a check is exactly one of http, tcp, grpc \
                 or ttl",
                quote(&self.id)
            ));
        }
        Ok(Check {
            id: self.id,
            kind,
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            success_before_passing: self.success_before_passing,
            failures_before_warning: self.failures_before_warning,
            failures_before_critical: self.failures_before_critical,
            deregister_critical_after_ms: self.deregister_critical_after_ms,
            initial_status: StatusRecord::to_proto(self.initial_status),
            state: self.state.map(|state| CheckState {
                status: StatusRecord::to_proto(state.status),
                output: state.output,
                since_unix_ms: state.since_unix_ms,
                reason: state.reason,
            }),
            // Not part of the record: GetService gathers it from the members.
            last_probe: None,
        })
    }
}

impl StatusRecord {
    /// `None` for unspecified and for values this version does not know.
    fn from_proto(status: i32) -> Option<Self> {
        match HealthStatus::try_from(status) {
            Ok(HealthStatus::Passing) => Some(StatusRecord::Passing),
            Ok(HealthStatus::Warning) => Some(StatusRecord::Warning),
            Ok(HealthStatus::Critical) => Some(StatusRecord::Critical),
            Ok(HealthStatus::Unspecified) | Err(_) => None,
        }
    }

    fn to_proto(status: Option<Self>) -> i32 {
        let status = match status {
            Some(StatusRecord::Passing) => HealthStatus::Passing,
            Some(StatusRecord::Warning) => HealthStatus::Warning,
            Some(StatusRecord::Critical) => HealthStatus::Critical,
            None => HealthStatus::Unspecified,
        };
        status as i32
    }
}

fn sorted(map: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}
