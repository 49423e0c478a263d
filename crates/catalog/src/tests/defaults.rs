use beacon_proto::beacon::v1::{check, Check, CheckState, HealthStatus, Instance};

use super::{grpc_check, http_check, instance, tcp_check, ttl_check};
use crate::{fresh_check_states, normalize_instance, weight_of};

fn fresh(status: HealthStatus) -> Option<CheckState> {
    Some(CheckState {
        status: status as i32,
        output: String::new(),
        since_unix_ms: 0,
        reason: String::new(),
    })
}

#[test]
fn zero_values_become_defaults() {
    let mut raw = instance("web", "web-1");
    raw.checks = vec![
        http_check("http://10.0.0.1/health"),
        tcp_check("10.0.0.1:80"),
        grpc_check("10.0.0.1:90"),
        ttl_check(5_000),
    ];
    let normalized = normalize_instance(raw);
    assert_eq!(normalized.weight, 1);
    let ids: Vec<&str> = normalized
        .checks
        .iter()
        .map(|check| check.id.as_str())
        .collect();
    assert_eq!(ids, ["http", "tcp", "grpc", "ttl"]);
    for check in &normalized.checks[..3] {
        assert_eq!(check.interval_ms, 10_000);
        assert_eq!(check.timeout_ms, 5_000);
    }
    // TTL checks are not probed: no interval or timeout.
    assert_eq!(normalized.checks[3].interval_ms, 0);
    assert_eq!(normalized.checks[3].timeout_ms, 0);
    for check in &normalized.checks {
        assert_eq!(check.success_before_passing, 1);
        assert_eq!(check.failures_before_warning, 1);
        assert_eq!(check.failures_before_critical, 3);
        assert_eq!(check.initial_status(), HealthStatus::Critical);
        assert_eq!(check.state, fresh(HealthStatus::Critical));
    }
    let Some(check::Kind::Http(http)) = &normalized.checks[0].kind else {
        panic!("the first check is the HTTP one");
    };
    assert_eq!(http.method, "GET");
}

#[test]
fn explicit_values_are_kept() {
    let mut raw = instance("web", "web-1");
    raw.weight = 7;
    raw.lease = 42;
    raw.checks = vec![Check {
        id: "live".into(),
        interval_ms: 2_000,
        timeout_ms: 1_500,
        success_before_passing: 2,
        failures_before_warning: 2,
        failures_before_critical: 5,
        initial_status: HealthStatus::Passing as i32,
        ..http_check("http://10.0.0.1/health")
    }];
    let normalized = normalize_instance(raw.clone());
    assert_eq!(normalized.weight, 7);
    assert_eq!(normalized.lease, 42, "the lease is kept");
    let check = &normalized.checks[0];
    assert_eq!(check.id, "live");
    assert_eq!((check.interval_ms, check.timeout_ms), (2_000, 1_500));
    assert_eq!(
        (
            check.success_before_passing,
            check.failures_before_warning,
            check.failures_before_critical
        ),
        (2, 2, 5)
    );
    assert_eq!(check.state, fresh(HealthStatus::Passing));
}

#[test]
fn default_timeout_is_half_the_interval_up_to_five_seconds() {
    for (interval_ms, timeout_ms) in [
        (1_000, 500),
        (4_000, 2_000),
        (10_000, 5_000),
        (60_000, 5_000),
    ] {
        let mut raw = instance("web", "web-1");
        raw.checks = vec![Check {
            interval_ms,
            ..tcp_check("10.0.0.1:80")
        }];
        assert_eq!(
            normalize_instance(raw).checks[0].timeout_ms,
            timeout_ms,
            "interval {interval_ms}"
        );
    }
}

#[test]
fn default_warning_threshold_never_exceeds_critical() {
    let mut raw = instance("web", "web-1");
    raw.checks = vec![Check {
        failures_before_critical: 1,
        ..tcp_check("10.0.0.1:80")
    }];
    let check = &normalize_instance(raw).checks[0];
    assert_eq!(
        (
            check.failures_before_warning,
            check.failures_before_critical
        ),
        (1, 1)
    );
}

#[test]
fn output_fields_are_cleared_and_client_states_ignored() {
    let mut raw = instance("web", "web-1");
    raw.health = HealthStatus::Passing as i32;
    raw.create_revision = 5;
    raw.mod_revision = 9;
    raw.checks = vec![Check {
        state: Some(CheckState {
            status: HealthStatus::Passing as i32,
            output: "claimed by the client".into(),
            since_unix_ms: 123,
            reason: "claimed by the client".into(),
        }),
        ..ttl_check(5_000)
    }];
    let normalized = normalize_instance(raw);
    assert_eq!(normalized.health, 0);
    assert_eq!(
        (normalized.create_revision, normalized.mod_revision),
        (0, 0)
    );
    assert_eq!(normalized.checks[0].state, fresh(HealthStatus::Critical));
}

#[test]
fn normalizing_twice_changes_nothing_more() {
    let mut raw = instance("web", "web-1");
    raw.tags = vec!["b".into(), "a".into()];
    raw.checks = vec![http_check("http://10.0.0.1/"), ttl_check(3_000)];
    let once = normalize_instance(raw);
    assert_eq!(normalize_instance(once.clone()), once);
    assert_eq!(once.tags, ["b", "a"], "nothing is sorted");
}

#[test]
fn fresh_states_follow_the_initial_status() {
    let mut registered = Instance {
        checks: vec![
            Check {
                initial_status: HealthStatus::Warning as i32,
                ..ttl_check(5_000)
            },
            Check {
                id: "other".into(),
                ..ttl_check(5_000)
            },
        ],
        ..instance("web", "web-1")
    };
    fresh_check_states(&mut registered);
    assert_eq!(registered.checks[0].state, fresh(HealthStatus::Warning));
    assert_eq!(registered.checks[1].state, fresh(HealthStatus::Critical));
}

#[test]
fn weight_zero_means_one() {
    let mut candidate = instance("web", "web-1");
    assert_eq!(weight_of(&candidate), 1);
    candidate.weight = 25;
    assert_eq!(weight_of(&candidate), 25);
}
