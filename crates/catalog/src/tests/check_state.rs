use beacon_proto::beacon::v1::{Check, CheckState, HealthStatus, Instance};

use super::{http_check, instance, ttl_check};
use crate::{critical_since, set_check_state, should_deregister, CatalogError};
use HealthStatus::{Critical, Passing, Warning};

const MINUTE: i64 = 60_000;
const NOW: i64 = 1_700_000_000_000;

fn state(status: HealthStatus, since_unix_ms: i64) -> CheckState {
    CheckState {
        status: status as i32,
        output: "output".into(),
        since_unix_ms,
        reason: "reason".into(),
    }
}

/// An instance with an `http` check (id left empty: it stands for the kind) and a `ttl` check
/// named "heartbeat", deregistered after ten minutes critical.
fn web() -> Instance {
    let mut web = instance("web", "web-1");
    web.checks = vec![
        Check {
            state: Some(state(Passing, NOW - MINUTE)),
            ..http_check("http://10.0.0.1/health")
        },
        Check {
            id: "heartbeat".into(),
            deregister_critical_after_ms: 10 * 60_000,
            state: Some(state(Passing, NOW - MINUTE)),
            ..ttl_check(5_000)
        },
    ];
    web
}

#[test]
fn a_verdict_is_set_on_its_check_and_the_health_follows() {
    let mut web = web();
    set_check_state(&mut web, "heartbeat", state(Critical, NOW)).expect("known check");
    assert_eq!(web.checks[1].state, Some(state(Critical, NOW)));
    assert_eq!(web.health(), Critical);
    // An empty stored id is addressed by the kind's name.
    set_check_state(&mut web, "http", state(Warning, NOW)).expect("known check");
    assert_eq!(web.checks[0].state, Some(state(Warning, NOW)));
    set_check_state(&mut web, "heartbeat", state(Passing, NOW)).expect("known check");
    assert_eq!(web.health(), Warning);
}

#[test]
fn an_unknown_check_is_refused() {
    let mut web = web();
    let before = web.clone();
    let error = set_check_state(&mut web, "grpc", state(Critical, NOW)).expect_err("no such check");
    assert!(
        matches!(error, CatalogError::UnknownCheck { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        r#"instance "web/web-1" has no check "grpc""#
    );
    assert_eq!(web, before, "nothing changed");
}

#[test]
fn critical_since_needs_a_stamped_critical_state() {
    let mut web = web();
    assert_eq!(critical_since(&web, "heartbeat"), None, "passing");
    web.checks[1].state = Some(state(Critical, NOW - 5 * MINUTE));
    assert_eq!(critical_since(&web, "heartbeat"), Some(NOW - 5 * MINUTE));
    assert_eq!(critical_since(&web, "missing"), None);
    // A fresh state (critical before any verdict) carries no time.
    web.checks[1].state = Some(state(Critical, 0));
    assert_eq!(critical_since(&web, "heartbeat"), None);
    web.checks[1].state = None;
    assert_eq!(critical_since(&web, "heartbeat"), None);
}

#[test]
fn deregistration_after_being_critical_too_long() {
    // (status of "heartbeat", since, deregister after, expected)
    let cases = [
        (Critical, NOW - 11 * MINUTE, 10 * 60_000, true),
        (Critical, NOW - 10 * MINUTE, 10 * 60_000, false),
        (Critical, NOW - 10 * MINUTE - 1, 10 * 60_000, true),
        (Critical, NOW - 9 * MINUTE, 10 * 60_000, false),
        (Critical, NOW - 1_000 * MINUTE, 0, false),
        (Critical, 0, 10 * 60_000, false),
        (Warning, NOW - 11 * MINUTE, 10 * 60_000, false),
        (Passing, NOW - 11 * MINUTE, 10 * 60_000, false),
        (Critical, i64::MIN + 1, u64::MAX, false),
        (Critical, NOW - 11 * MINUTE, u64::MAX, false),
    ];
    for (status, since, after_ms, expected) in cases {
        let mut web = web();
        web.checks[1].deregister_critical_after_ms = after_ms;
        web.checks[1].state = Some(state(status, since));
        assert_eq!(
            should_deregister(&web, NOW),
            expected,
            "{status:?} since {since} after {after_ms}"
        );
    }
    // Only a check with a deregister time counts: the http check has none.
    let mut web = web();
    web.checks[0].state = Some(state(Critical, NOW - 1_000 * MINUTE));
    assert!(!should_deregister(&web, NOW));
    assert!(!should_deregister(&instance("web", "bare"), NOW));
}
