//! `Discover`'s answer: which of a service's instances a client should call, and in which order.
//!
//! Filters apply in this order: maintenance (never offered), tags and metadata (the instance must
//! carry every requested one), then health. Ordering is random per request, from the caller's
//! random number generator, so the crate stays deterministic under a seeded one in tests.

use beacon_proto::beacon::v1::{DiscoverRequest, HealthFilter, HealthStatus, Instance, Order};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::defaults::weight_of;
use crate::health::health_of;

/// The instances chosen for a `Discover` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Discovery {
    /// Filtered, ordered and truncated to the request's limit.
    pub instances: Vec<Instance>,
    /// True when the request allowed failing open, no candidate was passing or warning, and
    /// every candidate was returned instead.
    pub failed_open: bool,
}

/// Chooses among `instances` (those of `request.service`, as read from the store) for `request`:
///
/// - instances in maintenance (`maintenance.enabled`) are never returned;
/// - an instance must carry every tag in `request.tags` and every `request.metadata` entry with
///   an equal value;
/// - health, by [`health_of`]: `PASSING` keeps passing and warning instances (possibly none);
///   `PASSING_OR_ELSE_ALL` does the same, but when candidates remain and none of them is passing
///   or warning it returns them all with `failed_open` set; `ALL` keeps every candidate;
/// - order: `SHUFFLE` is a uniform random permutation; `WEIGHTED` is a weighted random order
///   without replacement (each next instance is picked with probability proportional to its
///   weight among those left, weight 0 meaning 1);
/// - finally at most `request.limit` instances are kept (0: all).
///
/// Unknown filter or order values are read as the defaults (`PASSING_OR_ELSE_ALL`, `SHUFFLE`).
pub fn discover(
    instances: Vec<Instance>,
    request: &DiscoverRequest,
    rng: &mut impl Rng,
) -> Discovery {
    let candidates: Vec<Instance> = instances
        .into_iter()
        .filter(|instance| !in_maintenance(instance) && matches_request(instance, request))
        .collect();
    let (mut chosen, failed_open) = match request.health() {
        HealthFilter::All => (candidates, false),
        HealthFilter::Passing => (healthy(candidates).0, false),
        HealthFilter::PassingOrElseAll => {
            let (healthy, unhealthy) = healthy(candidates);
            if healthy.is_empty() && !unhealthy.is_empty() {
                (unhealthy, true)
            } else {
                (healthy, false)
            }
        }
    };
    match request.order() {
        Order::Shuffle => chosen.shuffle(rng),
        Order::Weighted => chosen = weighted_order(chosen, rng),
    }
    if request.limit != 0 {
        chosen.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
    }
    Discovery {
        instances: chosen,
        failed_open,
    }
}

fn in_maintenance(instance: &Instance) -> bool {
    instance
        .maintenance
        .as_ref()
        .is_some_and(|maintenance| maintenance.enabled)
}

fn matches_request(instance: &Instance, request: &DiscoverRequest) -> bool {
    request.tags.iter().all(|tag| instance.tags.contains(tag))
        && request
            .metadata
            .iter()
            .all(|(key, value)| instance.metadata.get(key) == Some(value))
}

/// Splits instances into (passing or warning, critical), keeping their order.
fn healthy(instances: Vec<Instance>) -> (Vec<Instance>, Vec<Instance>) {
    instances.into_iter().partition(|instance| {
        matches!(
            health_of(instance),
            HealthStatus::Passing | HealthStatus::Warning
        )
    })
}

/// Efraimidis–Spirakis weighted sampling without replacement: each instance draws
/// u ~ Uniform(0, 1] and gets the key u^(1/weight); sorting by key, largest first, yields each
/// next instance with probability proportional to its weight among those left. The key is
/// compared as ln(u) / weight, which orders the same and does not underflow for large weights.
fn weighted_order(instances: Vec<Instance>, rng: &mut impl Rng) -> Vec<Instance> {
    let mut keyed: Vec<(f64, Instance)> = instances
        .into_iter()
        .map(|instance| {
            // gen() is in [0, 1); 1 - gen() is in (0, 1], whose logarithm is finite.
            let uniform = 1.0 - rng.gen::<f64>();
            (uniform.ln() / f64::from(weight_of(&instance)), instance)
        })
        .collect();
    keyed.sort_by(|(left, _), (right, _)| right.total_cmp(left));
    keyed.into_iter().map(|(_, instance)| instance).collect()
}
