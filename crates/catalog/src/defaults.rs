//! The defaults an instance's zero values stand for, and [`normalize_instance`], which writes them
//! out before an instance is stored. Validation reads the same helpers, so "0 means the default"
//! is decided in one place.

use beacon_proto::beacon::v1::{check, Check, CheckState, HealthStatus, Instance};

/// Weight of an instance registered with weight 0.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Probe interval of an HTTP, TCP or gRPC check registered with `interval_ms` 0.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Upper bound of the default probe timeout, which is otherwise half the interval.
pub const MAX_DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Consecutive successes that turn a check passing, when registered as 0.
pub const DEFAULT_SUCCESS_BEFORE_PASSING: u32 = 1;
/// Consecutive failures that turn a check warning, when registered as 0 (never more than
/// `failures_before_critical`).
pub const DEFAULT_FAILURES_BEFORE_WARNING: u32 = 1;
/// Consecutive failures that turn a check critical, when registered as 0.
pub const DEFAULT_FAILURES_BEFORE_CRITICAL: u32 = 3;
/// Method of an HTTP check registered without one.
pub const DEFAULT_HTTP_METHOD: &str = "GET";
/// Status of a check before its first verdict, when registered as unspecified: an instance is
/// not offered to clients until its checks have passed once.
pub const DEFAULT_INITIAL_STATUS: HealthStatus = HealthStatus::Critical;

/// The instance's weight for weighted ordering and DNS: its `weight`, or [`DEFAULT_WEIGHT`] for
/// 0 (records written by plain etcd clients need not be normalized).
pub fn weight_of(instance: &Instance) -> u32 {
    if instance.weight == 0 {
        DEFAULT_WEIGHT
    } else {
        instance.weight
    }
}

/// The instance as it is stored on registration: zero values replaced by their defaults, output
/// fields (`health`, `create_revision`, `mod_revision`) cleared, and every check's state reset to
/// its initial status (see [`fresh_check_states`]): states are the cluster's verdicts, never the
/// client's. The lease is kept. Nothing is sorted or deduplicated. Applying it twice changes
/// nothing more than applying it once, and it keeps a valid instance valid.
pub fn normalize_instance(mut instance: Instance) -> Instance {
    instance.weight = weight_of(&instance);
    for check in &mut instance.checks {
        normalize_check(check);
    }
    instance.health = HealthStatus::Unspecified as i32;
    instance.create_revision = 0;
    instance.mod_revision = 0;
    fresh_check_states(&mut instance);
    instance
}

/// Sets every check's state to its initial status (unspecified meaning
/// [`DEFAULT_INITIAL_STATUS`]) with empty output and reason and `since_unix_ms` 0: the state of a
/// check that has not been run yet.
pub fn fresh_check_states(instance: &mut Instance) {
    for check in &mut instance.checks {
        check.state = Some(CheckState {
            status: initial_status_of(check) as i32,
            output: String::new(),
            since_unix_ms: 0,
            reason: String::new(),
        });
    }
}

fn normalize_check(check: &mut Check) {
    check.id = check_id_of(check).to_owned();
    if let Some(check::Kind::Http(http)) = &mut check.kind {
        if http.method.is_empty() {
            http.method = DEFAULT_HTTP_METHOD.to_owned();
        }
    }
    if !is_ttl(check) {
        check.interval_ms = interval_ms_of(check);
        check.timeout_ms = timeout_ms_of(check);
    }
    check.success_before_passing = success_before_passing_of(check);
    check.failures_before_warning = failures_before_warning_of(check);
    check.failures_before_critical = failures_before_critical_of(check);
    // Only unspecified is replaced: a value this version does not know is left for validation
    // to refuse.
    if check.initial_status == HealthStatus::Unspecified as i32 {
        check.initial_status = DEFAULT_INITIAL_STATUS as i32;
    }
}

/// The name of a check's kind, which is also the default check id.
pub(crate) fn kind_name(kind: &check::Kind) -> &'static str {
    match kind {
        check::Kind::Http(_) => "http",
        check::Kind::Tcp(_) => "tcp",
        check::Kind::Grpc(_) => "grpc",
        check::Kind::Ttl(_) => "ttl",
    }
}

/// The check's id, or its kind's name when empty (still empty when the kind is missing too).
pub(crate) fn check_id_of(check: &Check) -> &str {
    match &check.kind {
        Some(kind) if check.id.is_empty() => kind_name(kind),
        _ => &check.id,
    }
}

/// TTL checks are not probed, so interval and timeout do not apply to them.
pub(crate) fn is_ttl(check: &Check) -> bool {
    matches!(check.kind, Some(check::Kind::Ttl(_)))
}

pub(crate) fn interval_ms_of(check: &Check) -> u64 {
    if check.interval_ms == 0 {
        DEFAULT_INTERVAL_MS
    } else {
        check.interval_ms
    }
}

pub(crate) fn timeout_ms_of(check: &Check) -> u64 {
    if check.timeout_ms == 0 {
        (interval_ms_of(check) / 2).min(MAX_DEFAULT_TIMEOUT_MS)
    } else {
        check.timeout_ms
    }
}

pub(crate) fn success_before_passing_of(check: &Check) -> u32 {
    if check.success_before_passing == 0 {
        DEFAULT_SUCCESS_BEFORE_PASSING
    } else {
        check.success_before_passing
    }
}

pub(crate) fn failures_before_critical_of(check: &Check) -> u32 {
    if check.failures_before_critical == 0 {
        DEFAULT_FAILURES_BEFORE_CRITICAL
    } else {
        check.failures_before_critical
    }
}

pub(crate) fn failures_before_warning_of(check: &Check) -> u32 {
    if check.failures_before_warning == 0 {
        DEFAULT_FAILURES_BEFORE_WARNING.min(failures_before_critical_of(check))
    } else {
        check.failures_before_warning
    }
}

/// The check's initial status; unspecified (or a value this version does not know) means
/// [`DEFAULT_INITIAL_STATUS`].
pub(crate) fn initial_status_of(check: &Check) -> HealthStatus {
    match check.initial_status() {
        HealthStatus::Unspecified => DEFAULT_INITIAL_STATUS,
        status => status,
    }
}
