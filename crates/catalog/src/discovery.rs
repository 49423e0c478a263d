//! `Discover`'s answer: which of a service's instances a client should call, and in which order.
//!
//! Filters apply in this order: maintenance (never offered), tags and metadata (the instance must
//! carry every requested one), then health, which may fail open (see [`failed_open`]). Ordering
//! is random per request, from the caller's random number generator, so the crate stays
//! deterministic under a seeded one in tests.

use beacon_proto::beacon::v1::{
    DiscoverRequest, HealthFilter, HealthStatus, Instance, Order, ServiceSettings,
};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::defaults::weight_of;
use crate::health::health_of;
use crate::settings::DEFAULT_MIN_HEALTHY;

/// The instances chosen for a `Discover` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Discovery {
    /// Filtered, ordered and truncated to the request's limit.
    pub instances: Vec<Instance>,
    /// True when the request allowed failing open, too few candidates were passing or warning
    /// (none, or fewer than the service's `min_healthy` ratio), and every candidate was returned
    /// instead.
    pub failed_open: bool,
}

/// [`discover_with_settings`] for a service without settings: `PASSING_OR_ELSE_ALL` fails open
/// only when no candidate passes.
pub fn discover(
    instances: Vec<Instance>,
    request: &DiscoverRequest,
    rng: &mut impl Rng,
) -> Discovery {
    discover_with_settings(instances, request, None, rng)
}

/// Chooses among `instances` (those of `request.service`, as read from the store) for `request`,
/// under the service's `settings` (`None`: the defaults):
///
/// - instances in maintenance (`maintenance.enabled`) are never returned;
/// - an instance must carry every tag in `request.tags` and every `request.metadata` entry with
///   an equal value;
/// - health, by [`health_of`]: `PASSING` keeps passing and warning instances (possibly none);
///   `PASSING_OR_ELSE_ALL` does the same, but when candidates remain and none of them is passing
///   or warning, or their share is below `settings.min_healthy`, it returns every candidate
///   with `failed_open` set (like Nacos's protection threshold and Cloud Map's
///   `HEALTHY_OR_ELSE_ALL`); `ALL` keeps every candidate;
/// - order: `SHUFFLE` is a uniform random permutation; `WEIGHTED` is a weighted random order
///   without replacement (each next instance is picked with probability proportional to its
///   weight among those left, weight 0 meaning 1);
/// - finally at most `request.limit` instances are kept (0: all).
///
/// Unknown filter or order values are read as the defaults (`PASSING_OR_ELSE_ALL`, `SHUFFLE`).
pub fn discover_with_settings(
    instances: Vec<Instance>,
    request: &DiscoverRequest,
    settings: Option<&ServiceSettings>,
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
            let candidate_count = candidates.len();
            let (healthy, unhealthy) = healthy(candidates);
            if fails_open(healthy.len(), candidate_count, settings) {
                let mut all = healthy;
                all.extend(unhealthy);
                (all, true)
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

/// Whether discovery of a service whose instances are `instances` (all of them, unfiltered by
/// tags or metadata) with `PASSING_OR_ELSE_ALL` fails open under `settings` (`None`: the
/// defaults): when, among the instances not in maintenance, none is passing or warning, or
/// their share is below `min_healthy`. DNS answers and service summaries use it, so they fail
/// open exactly when `Discover` does.
pub fn failed_open(instances: &[Instance], settings: Option<&ServiceSettings>) -> bool {
    let candidates = instances
        .iter()
        .filter(|instance| !in_maintenance(instance));
    let (mut healthy_count, mut candidate_count) = (0, 0);
    for instance in candidates {
        candidate_count += 1;
        if is_healthy(instance) {
            healthy_count += 1;
        }
    }
    fails_open(healthy_count, candidate_count, settings)
}

/// The fail-open rule, on counts: candidates exist, and either none is healthy or the healthy
/// share is below `min_healthy`. The share is compared as a quotient, so 3 of 10 against 0.3
/// does not fail open (the quotient rounds to the same double as the literal). A NaN
/// `min_healthy` never triggers it.
pub(crate) fn fails_open(
    healthy_count: usize,
    candidate_count: usize,
    settings: Option<&ServiceSettings>,
) -> bool {
    if candidate_count == 0 {
        return false;
    }
    if healthy_count == 0 {
        return true;
    }
    let min_healthy = settings.map_or(DEFAULT_MIN_HEALTHY, |settings| settings.min_healthy);
    // Counts are far below 2^53, so the conversions are exact.
    (healthy_count as f64) / (candidate_count as f64) < min_healthy
}

pub(crate) fn in_maintenance(instance: &Instance) -> bool {
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
    instances.into_iter().partition(is_healthy)
}

/// Passing or warning: offered by the `PASSING` filters.
pub(crate) fn is_healthy(instance: &Instance) -> bool {
    matches!(
        health_of(instance),
        HealthStatus::Passing | HealthStatus::Warning
    )
}

fn weighted_order(instances: Vec<Instance>, rng: &mut impl Rng) -> Vec<Instance> {
    weighted_order_by(instances, weight_of, rng)
}

/// Efraimidis–Spirakis weighted sampling without replacement: each item draws u ~ Uniform(0, 1]
/// and gets the key u^(1/weight); sorting by key, largest first, yields each next item with
/// probability proportional to its weight among those left (weight 0 counts as 1). The key is
/// compared as ln(u) / weight, which orders the same and does not underflow for large weights.
/// `Discover`'s `WEIGHTED` order and DNS answers (which keep a prefix when cut) share it.
pub fn weighted_order_by<T>(
    items: Vec<T>,
    weight: impl Fn(&T) -> u32,
    rng: &mut impl Rng,
) -> Vec<T> {
    let count = items.len();
    weighted_prefix_by(items, count, weight, rng)
}

/// The first `count` items of a [`weighted_order_by`] order, found without sorting the rest
/// (a DNS answer that holds 70 of 500 instances orders only those 70).
pub fn weighted_prefix_by<T>(
    items: Vec<T>,
    count: usize,
    weight: impl Fn(&T) -> u32,
    rng: &mut impl Rng,
) -> Vec<T> {
    let mut keyed: Vec<(f64, T)> = items
        .into_iter()
        .map(|item| {
            // gen() is in [0, 1); 1 - gen() is in (0, 1], whose logarithm is finite.
            let uniform = 1.0 - rng.gen::<f64>();
            (uniform.ln() / f64::from(weight(&item).max(1)), item)
        })
        .collect();
    let descending = |(left, _): &(f64, T), (right, _): &(f64, T)| right.total_cmp(left);
    if count == 0 {
        return Vec::new();
    }
    if count < keyed.len() {
        keyed.select_nth_unstable_by(count - 1, descending);
        keyed.truncate(count);
    }
    keyed.sort_by(descending);
    keyed.into_iter().map(|(_, item)| item).collect()
}
