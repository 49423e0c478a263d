use beacon_proto::beacon::v1::{Check, HealthStatus, ServiceSettings, ServiceSummary};

use super::{in_maintenance, instance, ttl_check, with_checks};
use crate::{default_service_settings, health_of, summarize, summarize_with_settings};
use HealthStatus::{Critical, Passing, Unspecified, Warning};

#[test]
fn health_is_the_worst_check_state() {
    let cases: [(&[HealthStatus], HealthStatus); 7] = [
        (&[], Passing),
        (&[Passing], Passing),
        (&[Passing, Warning], Warning),
        (&[Warning, Passing, Critical], Critical),
        (&[Critical, Warning], Critical),
        (&[Warning, Warning], Warning),
        (&[Passing, Unspecified], Critical),
    ];
    for (statuses, expected) in cases {
        assert_eq!(
            health_of(&with_checks(instance("web", "a"), statuses)),
            expected,
            "{statuses:?}"
        );
    }
}

#[test]
fn a_check_without_a_verdict_is_critical() {
    let mut unchecked = instance("web", "a");
    unchecked.checks = vec![Check {
        state: None,
        ..ttl_check(5_000)
    }];
    assert_eq!(health_of(&unchecked), Critical);
}

#[test]
fn maintenance_does_not_change_health() {
    assert_eq!(health_of(&in_maintenance(instance("web", "a"))), Passing);
}

#[test]
fn summaries_count_by_service_and_health() {
    let instances = vec![
        with_checks(instance("web", "1"), &[Passing]),
        with_checks(instance("web", "2"), &[Warning]),
        in_maintenance(with_checks(instance("web", "3"), &[Critical])),
        in_maintenance(instance("web", "4")),
        instance("api", "1"),
        with_checks(instance("db", "1"), &[Critical]),
    ];
    assert_eq!(
        summarize(instances),
        vec![
            summary("api", [1, 1, 0, 0, 0], false),
            summary("db", [1, 0, 0, 1, 0], true),
            summary("web", [4, 2, 1, 1, 2], false),
        ]
    );
    assert_eq!(summarize(Vec::new()), Vec::new());
}

/// A summary with `counts` = [instances, passing, warning, critical, maintenance].
fn summary(name: &str, counts: [u32; 5], failed_open: bool) -> ServiceSummary {
    ServiceSummary {
        name: name.into(),
        instances: counts[0],
        passing: counts[1],
        warning: counts[2],
        critical: counts[3],
        maintenance: counts[4],
        failed_open,
    }
}

#[test]
fn summaries_fail_open_by_each_services_settings() {
    // web: 1 of 3 serving instances passes (the one in maintenance does not count);
    // api: 2 of 2 pass; db: none of 1 passes.
    let instances = vec![
        with_checks(instance("web", "1"), &[Passing]),
        with_checks(instance("web", "2"), &[Critical]),
        with_checks(instance("web", "3"), &[Critical]),
        in_maintenance(with_checks(instance("web", "4"), &[Passing])),
        instance("api", "1"),
        with_checks(instance("api", "2"), &[Warning]),
        with_checks(instance("db", "1"), &[Critical]),
    ];
    let settings = |service: &str, min_healthy: f64| ServiceSettings {
        min_healthy,
        ..default_service_settings(service)
    };
    // (settings, failed_open of api, db, web)
    let cases: [(Vec<ServiceSettings>, [bool; 3]); 4] = [
        (vec![], [false, true, false]),
        (vec![settings("web", 0.5)], [false, true, true]),
        (
            vec![settings("web", 0.3), settings("api", 1.0)],
            [false, true, false],
        ),
        (
            vec![settings("web", 0.34), settings("db", 0.0)],
            [false, true, true],
        ),
    ];
    for (service_settings, expected) in cases {
        let failed_open: Vec<bool> = summarize_with_settings(instances.clone(), &service_settings)
            .iter()
            .map(|summary| summary.failed_open)
            .collect();
        assert_eq!(failed_open, expected, "{service_settings:?}");
    }
    assert_eq!(
        summarize_with_settings(instances.clone(), &[]),
        summarize(instances),
        "no settings means the defaults"
    );
}
