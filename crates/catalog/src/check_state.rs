//! Committed check verdicts applied to instance records, and the `deregister_critical_after`
//! rule read from them.

use beacon_proto::beacon::v1::{Check, CheckState, HealthStatus, Instance};

use crate::defaults::check_id_of;
use crate::error::CatalogError;
use crate::health::health_of;

/// Sets the state of the instance's check `check_id` (an empty stored id stands for the kind's
/// name, as everywhere) and refreshes the instance's derived `health`. Fails with
/// [`CatalogError::UnknownCheck`] when the instance has no such check, e.g. because it was
/// re-registered with other checks after the verdict was reached.
pub fn set_check_state(
    instance: &mut Instance,
    check_id: &str,
    state: CheckState,
) -> Result<(), CatalogError> {
    let Some(check) = instance
        .checks
        .iter_mut()
        .find(|check| check_id_of(check) == check_id)
    else {
        return Err(CatalogError::unknown_check(
            &instance.service,
            &instance.id,
            check_id,
        ));
    };
    check.state = Some(state);
    instance.health = health_of(instance) as i32;
    Ok(())
}

/// Since when (milliseconds since the Unix epoch) the check `check_id` has been critical, or
/// `None` when it is not critical, the instance has no such check, or the time is unknown: a
/// state without a status or with `since_unix_ms` 0 is one no verdict has stamped yet (see
/// [`crate::fresh_check_states`]).
pub fn critical_since(instance: &Instance, check_id: &str) -> Option<i64> {
    instance
        .checks
        .iter()
        .find(|check| check_id_of(check) == check_id)
        .and_then(critical_since_of)
}

/// True when some check with a non-zero `deregister_critical_after_ms` has been critical (by
/// [`critical_since`]) for longer than that at `now_ms` (milliseconds since the Unix epoch):
/// the instance should then be deregistered, as Consul's `deregister_critical_service_after`
/// does.
pub fn should_deregister(instance: &Instance, now_ms: i64) -> bool {
    instance.checks.iter().any(|check| {
        if check.deregister_critical_after_ms == 0 {
            return false;
        }
        let Some(since_ms) = critical_since_of(check) else {
            return false;
        };
        let after_ms = i64::try_from(check.deregister_critical_after_ms).unwrap_or(i64::MAX);
        now_ms.saturating_sub(since_ms) > after_ms
    })
}

fn critical_since_of(check: &Check) -> Option<i64> {
    let state = check.state.as_ref()?;
    (state.status() == HealthStatus::Critical && state.since_unix_ms != 0)
        .then_some(state.since_unix_ms)
}
