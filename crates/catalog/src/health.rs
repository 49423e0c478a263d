//! An instance's health, derived from its checks' last committed verdicts.

use beacon_proto::beacon::v1::{HealthStatus, Instance};

/// The worst status among the instance's check states (critical, then warning, then passing);
/// passing when it has no checks. A check without a state, or with an unspecified or unknown
/// status, counts as critical: an instance is only offered as healthy on a verdict. Maintenance
/// does not change health (discovery excludes such instances separately).
pub fn health_of(instance: &Instance) -> HealthStatus {
    instance
        .checks
        .iter()
        .map(
            |check| match check.state.as_ref().map(|state| state.status()) {
                Some(status @ (HealthStatus::Passing | HealthStatus::Warning)) => status,
                Some(HealthStatus::Critical | HealthStatus::Unspecified) | None => {
                    HealthStatus::Critical
                }
            },
        )
        .max_by_key(|status| severity(*status))
        .unwrap_or(HealthStatus::Passing)
}

/// Orders statuses from best to worst.
fn severity(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        HealthStatus::Critical | HealthStatus::Unspecified => 2,
    }
}
