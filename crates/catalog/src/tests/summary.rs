use beacon_proto::beacon::v1::{Check, HealthStatus, ServiceSummary};

use super::{in_maintenance, instance, ttl_check, with_checks};
use crate::{health_of, summarize};
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
    let summary = |name: &str, counts: [u32; 5]| ServiceSummary {
        name: name.into(),
        instances: counts[0],
        passing: counts[1],
        warning: counts[2],
        critical: counts[3],
        maintenance: counts[4],
    };
    assert_eq!(
        summarize(instances),
        vec![
            summary("api", [1, 1, 0, 0, 0]),
            summary("db", [1, 0, 0, 1, 0]),
            summary("web", [4, 2, 1, 1, 2]),
        ]
    );
    assert_eq!(summarize(Vec::new()), Vec::new());
}
