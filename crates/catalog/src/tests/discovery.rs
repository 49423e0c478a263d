use std::collections::HashMap;

use beacon_proto::beacon::v1::{
    DiscoverRequest, HealthFilter, HealthStatus, Instance, Order, ServiceSettings,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{in_maintenance, instance, with_checks};
use crate::{default_service_settings, discover, discover_with_settings, failed_open};
use HealthStatus::{Critical, Passing, Warning};

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    let mut ids: Vec<&str> = instances
        .iter()
        .map(|instance| instance.id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

fn request(health: HealthFilter) -> DiscoverRequest {
    DiscoverRequest {
        service: "web".into(),
        health: health as i32,
        ..DiscoverRequest::default()
    }
}

/// passing, warning, critical, a passing one in maintenance, and one without checks.
fn mixed() -> Vec<Instance> {
    vec![
        with_checks(instance("web", "passing"), &[Passing]),
        with_checks(instance("web", "warning"), &[Passing, Warning]),
        with_checks(instance("web", "critical"), &[Passing, Critical]),
        in_maintenance(with_checks(instance("web", "drained"), &[Passing])),
        instance("web", "unchecked"),
    ]
}

#[test]
fn health_filters() {
    let cases = [
        (
            HealthFilter::Passing,
            vec!["passing", "unchecked", "warning"],
        ),
        (
            HealthFilter::PassingOrElseAll,
            vec!["passing", "unchecked", "warning"],
        ),
        (
            HealthFilter::All,
            vec!["critical", "passing", "unchecked", "warning"],
        ),
    ];
    for (filter, expected) in cases {
        let discovery = discover(mixed(), &request(filter), &mut rng());
        assert_eq!(ids(&discovery.instances), expected, "{filter:?}");
        assert!(!discovery.failed_open, "{filter:?}");
    }
}

#[test]
fn passing_or_else_all_fails_open_when_none_passes() {
    let unhealthy = vec![
        with_checks(instance("web", "a"), &[Critical]),
        with_checks(instance("web", "b"), &[Critical, Passing]),
        in_maintenance(with_checks(instance("web", "drained"), &[Passing])),
    ];
    let discovery = discover(
        unhealthy.clone(),
        &request(HealthFilter::PassingOrElseAll),
        &mut rng(),
    );
    assert_eq!(
        ids(&discovery.instances),
        ["a", "b"],
        "maintenance stays out even failing open"
    );
    assert!(discovery.failed_open);

    let strict = discover(unhealthy, &request(HealthFilter::Passing), &mut rng());
    assert!(strict.instances.is_empty());
    assert!(!strict.failed_open);
}

#[test]
fn nothing_to_fail_open_to() {
    for instances in [
        vec![],
        vec![in_maintenance(with_checks(
            instance("web", "a"),
            &[Critical],
        ))],
    ] {
        let discovery = discover(
            instances,
            &request(HealthFilter::PassingOrElseAll),
            &mut rng(),
        );
        assert!(discovery.instances.is_empty());
        assert!(
            !discovery.failed_open,
            "an empty answer is not failing open"
        );
    }
}

#[test]
fn fail_open_considers_only_matching_instances() {
    let instances = vec![
        Instance {
            tags: vec!["canary".into()],
            ..with_checks(instance("web", "canary"), &[Critical])
        },
        with_checks(instance("web", "stable"), &[Passing]),
    ];
    let discovery = discover(
        instances,
        &DiscoverRequest {
            tags: vec!["canary".into()],
            ..request(HealthFilter::PassingOrElseAll)
        },
        &mut rng(),
    );
    assert_eq!(ids(&discovery.instances), ["canary"]);
    assert!(discovery.failed_open);
}

#[test]
fn tags_and_metadata_must_all_match() {
    let tagged = |id: &str, tags: &[&str], metadata: &[(&str, &str)]| Instance {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        metadata: metadata
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        ..instance("web", id)
    };
    let instances = vec![
        tagged("both", &["v1", "blue"], &[("zone", "a"), ("rack", "1")]),
        tagged("v1-only", &["v1"], &[("zone", "a")]),
        tagged("zone-b", &["v1", "blue"], &[("zone", "b")]),
        tagged("none", &[], &[]),
    ];
    // (requested tags, requested metadata, expected ids)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (&[], &[], &["both", "none", "v1-only", "zone-b"]),
        (&["v1"], &[], &["both", "v1-only", "zone-b"]),
        (&["v1", "blue"], &[], &["both", "zone-b"]),
        (&["v1"], &[("zone", "a")], &["both", "v1-only"]),
        (&["blue"], &[("zone", "a"), ("rack", "2")], &[]),
    ];
    for (tags, metadata, expected) in cases {
        let discover_request = DiscoverRequest {
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            metadata: metadata
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<HashMap<_, _>>(),
            ..request(HealthFilter::All)
        };
        let discovery = discover(instances.clone(), &discover_request, &mut rng());
        assert_eq!(
            ids(&discovery.instances),
            expected,
            "tags {tags:?} metadata {metadata:?}"
        );
    }
}

#[test]
fn limit_truncates_after_ordering() {
    let instances: Vec<Instance> = (0..10)
        .map(|index| instance("web", &format!("i{index}")))
        .collect();
    for (limit, expected) in [(0, 10), (3, 3), (10, 10), (50, 10)] {
        for order in [Order::Shuffle, Order::Weighted] {
            let discover_request = DiscoverRequest {
                limit,
                order: order as i32,
                ..request(HealthFilter::All)
            };
            let discovery = discover(instances.clone(), &discover_request, &mut rng());
            assert_eq!(
                discovery.instances.len(),
                expected,
                "limit {limit} {order:?}"
            );
        }
    }
}

#[test]
fn shuffle_is_uniform_enough() {
    let instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|id| instance("web", id))
        .collect();
    let mut firsts: HashMap<String, u32> = HashMap::new();
    let mut generator = rng();
    let rounds = 6_000;
    for _ in 0..rounds {
        let discovery = discover(
            instances.clone(),
            &request(HealthFilter::All),
            &mut generator,
        );
        assert_eq!(discovery.instances.len(), 3);
        *firsts.entry(discovery.instances[0].id.clone()).or_default() += 1;
    }
    for id in ["a", "b", "c"] {
        let share = f64::from(firsts[id]) / f64::from(rounds);
        assert!(
            (0.30..0.37).contains(&share),
            "{id} first in {share} of rounds"
        );
    }
}

#[test]
fn weighted_order_favours_heavy_instances() {
    let heavy = Instance {
        weight: 10,
        ..instance("web", "heavy")
    };
    let light = Instance {
        weight: 1,
        ..instance("web", "light")
    };
    let discover_request = DiscoverRequest {
        order: Order::Weighted as i32,
        ..request(HealthFilter::All)
    };
    let mut generator = rng();
    let rounds = 10_000;
    let mut heavy_first = 0u32;
    for _ in 0..rounds {
        let discovery = discover(
            vec![light.clone(), heavy.clone()],
            &discover_request,
            &mut generator,
        );
        assert_eq!(discovery.instances.len(), 2);
        if discovery.instances[0].id == "heavy" {
            heavy_first += 1;
        }
    }
    // Expected share: 10 / 11 ≈ 0.909.
    let share = f64::from(heavy_first) / f64::from(rounds);
    assert!(
        (0.89..0.93).contains(&share),
        "heavy first in {share} of rounds"
    );
}

#[test]
fn weight_zero_counts_as_one() {
    let zero = Instance {
        weight: 0,
        ..instance("web", "zero")
    };
    let one = Instance {
        weight: 1,
        ..instance("web", "one")
    };
    let discover_request = DiscoverRequest {
        order: Order::Weighted as i32,
        ..request(HealthFilter::All)
    };
    let mut generator = rng();
    let rounds = 10_000;
    let zero_first = (0..rounds)
        .filter(|_| {
            discover(
                vec![zero.clone(), one.clone()],
                &discover_request,
                &mut generator,
            )
            .instances[0]
                .id
                == "zero"
        })
        .count();
    let share = zero_first as f64 / f64::from(rounds);
    assert!(
        (0.47..0.53).contains(&share),
        "zero first in {share} of rounds"
    );
}

fn min_healthy(ratio: f64) -> ServiceSettings {
    ServiceSettings {
        min_healthy: ratio,
        ..default_service_settings("web")
    }
}

/// Two passing, one warning and two critical instances, and a critical one in maintenance: 3
/// of 5 serving instances are healthy.
fn three_of_five() -> Vec<Instance> {
    vec![
        with_checks(instance("web", "p1"), &[Passing]),
        with_checks(instance("web", "p2"), &[Passing]),
        with_checks(instance("web", "w1"), &[Warning]),
        with_checks(instance("web", "c1"), &[Critical]),
        with_checks(instance("web", "c2"), &[Critical]),
        in_maintenance(with_checks(instance("web", "drained"), &[Critical])),
    ]
}

#[test]
fn min_healthy_fails_open_below_the_ratio() {
    let healthy = vec!["p1", "p2", "w1"];
    let all = vec!["c1", "c2", "p1", "p2", "w1"];
    // (min_healthy, expected ids, failed_open)
    let cases = [
        (None, &healthy, false),
        (Some(0.0), &healthy, false),
        (Some(0.5), &healthy, false),
        (Some(0.6), &healthy, false),
        (Some(0.61), &all, true),
        (Some(1.0), &all, true),
    ];
    for (ratio, expected, expected_failed_open) in cases {
        let settings = ratio.map(min_healthy);
        let discovery = discover_with_settings(
            three_of_five(),
            &request(HealthFilter::PassingOrElseAll),
            settings.as_ref(),
            &mut rng(),
        );
        assert_eq!(
            &ids(&discovery.instances),
            expected,
            "min_healthy {ratio:?}"
        );
        assert_eq!(
            discovery.failed_open, expected_failed_open,
            "min_healthy {ratio:?}"
        );
        assert_eq!(
            failed_open(&three_of_five(), settings.as_ref()),
            expected_failed_open,
            "failed_open agrees with discovery, min_healthy {ratio:?}"
        );
        // PASSING never fails open; ALL has nothing to fail open to.
        let strict = discover_with_settings(
            three_of_five(),
            &request(HealthFilter::Passing),
            settings.as_ref(),
            &mut rng(),
        );
        assert_eq!(ids(&strict.instances), healthy);
        assert!(!strict.failed_open);
        let everything = discover_with_settings(
            three_of_five(),
            &request(HealthFilter::All),
            settings.as_ref(),
            &mut rng(),
        );
        assert_eq!(ids(&everything.instances), all);
        assert!(!everything.failed_open);
    }
}

#[test]
fn the_ratio_is_exact_at_the_boundary() {
    // 3 of 10 healthy against 0.3: not below, so no fail-open (a product 0.3 * 10 would be
    // 3.0000000000000004 and say otherwise).
    let instances: Vec<Instance> = (0..10)
        .map(|index| {
            let status = if index < 3 { Passing } else { Critical };
            with_checks(instance("web", &format!("i{index}")), &[status])
        })
        .collect();
    assert!(!failed_open(&instances, Some(&min_healthy(0.3))));
    assert!(failed_open(&instances, Some(&min_healthy(0.31))));
}

#[test]
fn the_ratio_counts_only_matching_instances() {
    // Among canaries 1 of 2 passes; among all, 3 of 4.
    let canary = |id: &str, status: HealthStatus| Instance {
        tags: vec!["canary".into()],
        ..with_checks(instance("web", id), &[status])
    };
    let instances = vec![
        canary("canary-1", Passing),
        canary("canary-2", Critical),
        with_checks(instance("web", "stable-1"), &[Passing]),
        with_checks(instance("web", "stable-2"), &[Passing]),
    ];
    let canaries = DiscoverRequest {
        tags: vec!["canary".into()],
        ..request(HealthFilter::PassingOrElseAll)
    };
    let discovery = discover_with_settings(
        instances.clone(),
        &canaries,
        Some(&min_healthy(0.7)),
        &mut rng(),
    );
    assert_eq!(ids(&discovery.instances), ["canary-1", "canary-2"]);
    assert!(discovery.failed_open);
    assert!(!failed_open(&instances, Some(&min_healthy(0.7))));
}

#[test]
fn discover_is_discovery_with_default_settings() {
    for filter in [
        HealthFilter::PassingOrElseAll,
        HealthFilter::Passing,
        HealthFilter::All,
    ] {
        for instances in [mixed(), three_of_five(), vec![]] {
            let plain = discover(instances.clone(), &request(filter), &mut rng());
            for settings in [None, Some(default_service_settings("web"))] {
                assert_eq!(
                    discover_with_settings(
                        instances.clone(),
                        &request(filter),
                        settings.as_ref(),
                        &mut rng()
                    ),
                    plain,
                    "{filter:?} {settings:?}"
                );
            }
        }
    }
    assert!(!failed_open(&[], None));
    assert!(!failed_open(
        &[in_maintenance(with_checks(
            instance("web", "a"),
            &[Critical]
        ))],
        None
    ));
    assert!(failed_open(
        &[with_checks(instance("web", "a"), &[Critical])],
        None
    ));
}

#[test]
fn weighted_prefix_is_the_prefix_of_the_weighted_order() {
    use crate::{weighted_order_by, weighted_prefix_by};
    // Same seed, same draws: the prefix equals the first items of the full order.
    let items: Vec<u32> = (1..=50).collect();
    for count in [0, 1, 7, 50, 80] {
        let full = weighted_order_by(items.clone(), |item| *item, &mut rng());
        let prefix = weighted_prefix_by(items.clone(), count, |item| *item, &mut rng());
        assert_eq!(prefix, full[..count.min(50)].to_vec(), "count {count}");
    }
    // Heavy items come first nearly always.
    let mut random = rng();
    for _ in 0..20 {
        let prefix = weighted_prefix_by(
            (0..100u32).collect(),
            5,
            |item| if *item < 3 { 10_000 } else { 1 },
            &mut random,
        );
        assert!((0..3).all(|heavy| prefix.contains(&heavy)), "{prefix:?}");
    }
}
