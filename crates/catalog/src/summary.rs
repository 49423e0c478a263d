//! Per-service instance counts for `ListServices`.

use std::collections::BTreeMap;

use beacon_proto::beacon::v1::{HealthStatus, Instance, ServiceSummary};

use crate::health::health_of;

/// One summary per service among `instances`, sorted by service name, counting its instances
/// and each health bucket (by [`health_of`], not the possibly stale `health` field). An instance
/// in maintenance is counted in `maintenance` and also in its health bucket, so
/// `passing + warning + critical == instances` always holds.
pub fn summarize(instances: impl IntoIterator<Item = Instance>) -> Vec<ServiceSummary> {
    let mut summaries: BTreeMap<String, ServiceSummary> = BTreeMap::new();
    for instance in instances {
        let health = health_of(&instance);
        let in_maintenance = instance
            .maintenance
            .as_ref()
            .is_some_and(|maintenance| maintenance.enabled);
        let summary = summaries
            .entry(instance.service)
            .or_insert_with_key(|service| ServiceSummary {
                name: service.clone(),
                ..ServiceSummary::default()
            });
        summary.instances += 1;
        match health {
            HealthStatus::Passing => summary.passing += 1,
            HealthStatus::Warning => summary.warning += 1,
            HealthStatus::Critical | HealthStatus::Unspecified => summary.critical += 1,
        }
        if in_maintenance {
            summary.maintenance += 1;
        }
    }
    summaries.into_values().collect()
}
