//! Per-service instance counts for `ListServices`, and whether each service's discovery fails
//! open.

use std::collections::BTreeMap;

use beacon_proto::beacon::v1::{HealthStatus, Instance, ServiceSettings, ServiceSummary};

use crate::discovery::{fails_open, in_maintenance, is_healthy};
use crate::health::health_of;

/// [`summarize_with_settings`] with every service at its default settings.
pub fn summarize(instances: impl IntoIterator<Item = Instance>) -> Vec<ServiceSummary> {
    summarize_with_settings(instances, &[])
}

/// One summary per service among `instances`, sorted by service name, counting its instances
/// and each health bucket (by [`health_of`], not the possibly stale `health` field). An instance
/// in maintenance is counted in `maintenance` and also in its health bucket, so
/// `passing + warning + critical == instances` always holds. `failed_open` is
/// [`crate::failed_open`] of the service's instances under its entry in `settings` (matched by
/// `ServiceSettings::service`; a service without one has the defaults).
pub fn summarize_with_settings(
    instances: impl IntoIterator<Item = Instance>,
    settings: &[ServiceSettings],
) -> Vec<ServiceSummary> {
    // Per service: the summary, and (healthy, candidates) among instances not in maintenance,
    // the counts the fail-open rule reads.
    let mut summaries: BTreeMap<String, (ServiceSummary, usize, usize)> = BTreeMap::new();
    for instance in instances {
        let health = health_of(&instance);
        let in_maintenance = in_maintenance(&instance);
        let healthy = is_healthy(&instance);
        let (summary, healthy_count, candidate_count) = summaries
            .entry(instance.service)
            .or_insert_with_key(|service| {
                let summary = ServiceSummary {
                    name: service.clone(),
                    ..ServiceSummary::default()
                };
                (summary, 0, 0)
            });
        summary.instances += 1;
        match health {
            HealthStatus::Passing => summary.passing += 1,
            HealthStatus::Warning => summary.warning += 1,
            HealthStatus::Critical | HealthStatus::Unspecified => summary.critical += 1,
        }
        if in_maintenance {
            summary.maintenance += 1;
        } else {
            *candidate_count += 1;
            if healthy {
                *healthy_count += 1;
            }
        }
    }
    summaries
        .into_values()
        .map(|(mut summary, healthy_count, candidate_count)| {
            let service_settings = settings
                .iter()
                .find(|service_settings| service_settings.service == summary.name);
            summary.failed_open = fails_open(healthy_count, candidate_count, service_settings);
            summary
        })
        .collect()
}
