//! One table per rule of `validate_instance`: each row edits a valid instance and states whether
//! the result is valid, or which words the error message must hold (the field, at least).

use beacon_proto::beacon::v1::{check, Check, Instance};

use super::{grpc_check, http_check, instance, tcp_check, ttl_check};
use crate::{normalize_instance, validate_instance, validate_instance_id, validate_service_name};

type Edit = Box<dyn Fn(&mut Instance)>;

/// Applies each edit to a valid instance and checks the verdict: `None` for valid, `Some(words)`
/// for an error whose message contains `words`. Normalizing must not change the verdict.
fn assert_rules(cases: Vec<(Edit, Option<&str>)>) {
    for (index, (edit, expected)) in cases.into_iter().enumerate() {
        let mut candidate = instance("web", "web-1");
        edit(&mut candidate);
        let verdict = validate_instance(&candidate);
        match (expected, &verdict) {
            (None, Ok(())) => {}
            (Some(words), Err(error)) => assert!(
                error.to_string().contains(words),
                "case {index}: {error:?} should mention {words:?}"
            ),
            _ => panic!("case {index}: expected {expected:?}, got {verdict:?} for {candidate:?}"),
        }
        assert_eq!(
            validate_instance(&normalize_instance(candidate.clone())).is_ok(),
            verdict.is_ok(),
            "case {index}: normalizing changed the verdict for {candidate:?}"
        );
    }
}

fn edit(function: impl Fn(&mut Instance) + 'static) -> Edit {
    Box::new(function)
}

fn set_service(service: &str) -> Edit {
    let service = service.to_owned();
    edit(move |instance| instance.service = service.clone())
}

fn set_id(id: String) -> Edit {
    edit(move |instance| instance.id = id.clone())
}

fn set_address(address: String) -> Edit {
    edit(move |instance| instance.address = address.clone())
}

/// An instance holding only `check`.
fn with_check(check: Check) -> Edit {
    edit(move |instance| instance.checks = vec![check.clone()])
}

/// An instance holding only `check`, after `change`.
fn change_check(check: Check, change: impl Fn(&mut Check) + 'static) -> Edit {
    edit(move |instance| {
        let mut check = check.clone();
        change(&mut check);
        instance.checks = vec![check];
    })
}

fn http() -> Check {
    http_check("http://10.0.0.1:8080/health")
}

#[test]
fn the_base_instance_is_valid() {
    assert_eq!(validate_instance(&instance("web", "web-1")), Ok(()));
}

#[test]
fn service_name_message_names_field_and_rule() {
    let error = validate_service_name("Web_1").expect_err("uppercase and '_' are not allowed");
    assert_eq!(
        error.to_string(),
        "invalid service name \"Web_1\": must be a DNS label (lowercase letters, digits, '-', 1 \
         to 63 characters, not starting or ending with '-')"
    );
}

#[test]
fn service_name_is_a_dns_label() {
    let long = "a".repeat(63);
    let too_long = "a".repeat(64);
    assert_rules(vec![
        (set_service("web"), None),
        (set_service("a"), None),
        (set_service("0"), None),
        (set_service("api-v2"), None),
        (set_service(&long), None),
        (set_service(""), Some("invalid service name \"\"")),
        (set_service("Web"), Some("service name")),
        (set_service("web_1"), Some("service name")),
        (set_service("-web"), Some("service name")),
        (set_service("web-"), Some("service name")),
        (set_service("we b"), Some("service name")),
        (set_service("wéb"), Some("service name")),
        (set_service("a/b"), Some("service name")),
        (set_service(&too_long), Some("service name")),
    ]);
}

#[test]
fn instance_id_is_letters_digits_dot_underscore_dash() {
    assert_rules(vec![
        (set_id("web-1".into()), None),
        (set_id("A.b_c-9".into()), None),
        (set_id("x".repeat(128)), None),
        (set_id(String::new()), Some("invalid instance id \"\"")),
        (set_id("x".repeat(129)), Some("instance id")),
        (set_id("a/b".into()), Some("instance id")),
        (set_id("a b".into()), Some("instance id")),
        (set_id("ü".into()), Some("instance id")),
        (set_id("a:b".into()), Some("instance id")),
    ]);
    assert!(validate_instance_id("web-1").is_ok());
}

#[test]
fn address_is_an_ip_or_a_dns_name() {
    let label = "a".repeat(63);
    let longest = [label.as_str(); 4].join(".")[..253].to_owned();
    assert_rules(vec![
        (set_address("10.0.0.1".into()), None),
        (set_address("::1".into()), None),
        (set_address("2001:db8::1".into()), None),
        (set_address("localhost".into()), None),
        (set_address("web-1.example.com".into()), None),
        (set_address("web-1.example.com.".into()), None),
        (set_address(format!("{label}.com")), None),
        (set_address(longest.clone()), None),
        (set_address(format!("{longest}.")), None),
        (set_address(String::new()), Some("invalid address \"\"")),
        (set_address(format!("{longest}a")), Some("address")),
        (set_address(format!("{label}a.com")), Some("address")),
        (set_address("10.0.0.1:80".into()), Some("address")),
        (set_address("[::1]".into()), Some("address")),
        (set_address("a b".into()), Some("address")),
        (set_address("a_b.com".into()), Some("address")),
        (set_address("a..b".into()), Some("address")),
        (set_address(".".into()), Some("address")),
        (set_address("-a.com".into()), Some("address")),
        (set_address("a-.com".into()), Some("address")),
    ]);
}

#[test]
fn port_is_1_to_65535() {
    assert_rules(vec![
        (edit(|instance| instance.port = 1), None),
        (edit(|instance| instance.port = 65535), None),
        (
            edit(|instance| instance.port = 0),
            Some("invalid port 0: must be 1 to 65535"),
        ),
        (edit(|instance| instance.port = 65536), Some("port")),
    ]);
}

#[test]
fn tags_are_few_short_printable_and_unique() {
    assert_rules(vec![
        (
            edit(|instance| instance.tags = (0..64).map(|index| format!("t{index}")).collect()),
            None,
        ),
        (
            edit(|instance| instance.tags = vec!["x".repeat(255), "v1 beta".into()]),
            None,
        ),
        (
            edit(|instance| instance.tags = (0..65).map(|index| format!("t{index}")).collect()),
            Some("too many tags: 65, at most 64"),
        ),
        (
            edit(|instance| instance.tags = vec![String::new()]),
            Some("invalid tag \"\""),
        ),
        (
            edit(|instance| instance.tags = vec!["x".repeat(256)]),
            Some("tag"),
        ),
        (
            edit(|instance| instance.tags = vec!["a\nb".into()]),
            Some("tag"),
        ),
        (
            edit(|instance| instance.tags = vec!["v1".into(), "v2".into(), "v1".into()]),
            Some("duplicate tag \"v1\""),
        ),
    ]);
}

#[test]
fn metadata_is_bounded() {
    assert_rules(vec![
        (
            edit(|instance| {
                instance.metadata = (0..64)
                    .map(|index| (format!("k{index}"), String::new()))
                    .collect()
            }),
            None,
        ),
        (
            edit(|instance| {
                instance.metadata = [
                    ("A.b_c-1".into(), "x".repeat(512)),
                    ("k".repeat(128), "v".into()),
                ]
                .into()
            }),
            None,
        ),
        (
            edit(|instance| {
                instance.metadata = (0..65)
                    .map(|index| (format!("k{index}"), String::new()))
                    .collect()
            }),
            Some("too many metadata entries: 65"),
        ),
        (
            edit(|instance| instance.metadata = [(String::new(), "v".into())].into()),
            Some("invalid metadata key \"\""),
        ),
        (
            edit(|instance| instance.metadata = [("a b".into(), "v".into())].into()),
            Some("metadata key"),
        ),
        (
            edit(|instance| instance.metadata = [("k".repeat(129), "v".into())].into()),
            Some("metadata key"),
        ),
        (
            edit(|instance| instance.metadata = [("zone".into(), "x".repeat(513))].into()),
            Some("invalid metadata value for key \"zone\""),
        ),
    ]);
}

#[test]
fn weight_is_at_most_10000() {
    assert_rules(vec![
        (edit(|instance| instance.weight = 0), None),
        (edit(|instance| instance.weight = 10_000), None),
        (
            edit(|instance| instance.weight = 10_001),
            Some("invalid weight 10001"),
        ),
    ]);
}

#[test]
fn checks_are_few_with_unique_ids_and_one_kind() {
    assert_rules(vec![
        (
            edit(|instance| {
                instance.checks = (0..16)
                    .map(|index| Check {
                        id: format!("c{index}"),
                        ..ttl_check(5_000)
                    })
                    .collect()
            }),
            None,
        ),
        (
            edit(|instance| {
                instance.checks = vec![
                    http(),
                    tcp_check("10.0.0.1:8080"),
                    grpc_check("10.0.0.1:9090"),
                    ttl_check(5_000),
                ]
            }),
            None,
        ),
        (
            edit(|instance| {
                instance.checks = (0..17)
                    .map(|index| Check {
                        id: format!("c{index}"),
                        ..ttl_check(5_000)
                    })
                    .collect()
            }),
            Some("too many checks: 17, at most 16"),
        ),
        (
            edit(|instance| instance.checks = vec![http(), http()]),
            Some("duplicate check id \"http\""),
        ),
        (
            edit(|instance| {
                instance.checks = vec![
                    Check {
                        id: "tcp".into(),
                        ..http()
                    },
                    tcp_check("10.0.0.1:80"),
                ]
            }),
            Some("duplicate check id \"tcp\""),
        ),
        (
            with_check(Check {
                id: "bare".into(),
                ..Check::default()
            }),
            Some("invalid check \"bare\": must set exactly one kind"),
        ),
        (
            with_check(Check {
                id: "a b".into(),
                ..http()
            }),
            Some("invalid check id \"a b\""),
        ),
    ]);
}

#[test]
fn http_check_url_method_and_headers() {
    let url = |url: &'static str| change_check(http(), move |check| set_url(check, url));
    let method = |method: &'static str| {
        change_check(http(), move |check| {
            if let Some(check::Kind::Http(http)) = &mut check.kind {
                http.method = method.to_owned();
            }
        })
    };
    let header = |name: &'static str, value: &'static str| {
        change_check(http(), move |check| {
            if let Some(check::Kind::Http(http)) = &mut check.kind {
                http.headers.insert(name.to_owned(), value.to_owned());
            }
        })
    };
    assert_rules(vec![
        (url("https://example.com/health?full=1#top"), None),
        (url("http://[::1]:8080/"), None),
        (url("http://user:secret@10.0.0.1:80/x"), None),
        (url("http://localhost"), None),
        (url(""), Some("invalid check \"http\" url \"\"")),
        (url("ftp://example.com/"), Some("check \"http\" url")),
        (url("example.com/health"), Some("check \"http\" url")),
        (url("http://"), Some("check \"http\" url")),
        (url("http:///health"), Some("check \"http\" url")),
        (url("http://host:0/"), Some("check \"http\" url")),
        (url("http://host:99999/"), Some("check \"http\" url")),
        (url("http://host:/"), Some("check \"http\" url")),
        (url("http://::1/"), Some("check \"http\" url")),
        (url("http://ho st/"), Some("check \"http\" url")),
        (url("http://host/a b"), Some("check \"http\" url")),
        (method(""), None),
        (method("GET"), None),
        (method("HEAD"), None),
        (method("POST"), None),
        (method("PUT"), None),
        (method("OPTIONS"), None),
        (
            method("get"),
            Some("invalid check \"http\" method \"get\": must be one of GET, HEAD"),
        ),
        (method("DELETE"), Some("check \"http\" method")),
        (header("X-Token", "abc def"), None),
        (
            header("Bad Name", "v"),
            Some("check \"http\" header name \"Bad Name\""),
        ),
        (header("", "v"), Some("check \"http\" header name")),
        (
            header("X-Token", "a\r\nInjected: 1"),
            Some("check \"http\" header \"X-Token\" value"),
        ),
    ]);
}

fn set_url(check: &mut Check, url: &str) {
    if let Some(check::Kind::Http(http)) = &mut check.kind {
        http.url = url.to_owned();
    }
}

#[test]
fn tcp_and_grpc_addresses_are_host_port() {
    let tcp = |address: &'static str| with_check(tcp_check(address));
    let grpc = |address: &'static str| with_check(grpc_check(address));
    assert_rules(vec![
        (tcp("10.0.0.1:80"), None),
        (tcp("[::1]:80"), None),
        (tcp("db.local:5432"), None),
        (tcp("db.local.:65535"), None),
        (
            tcp("10.0.0.1"),
            Some("invalid check \"tcp\" address \"10.0.0.1\": must be host:port"),
        ),
        (tcp("::1:80"), Some("check \"tcp\" address")),
        (tcp("[::1]"), Some("check \"tcp\" address")),
        (tcp("[db]:80"), Some("check \"tcp\" address")),
        (tcp("host:"), Some("check \"tcp\" address")),
        (tcp(":80"), Some("check \"tcp\" address")),
        (tcp("host:0"), Some("check \"tcp\" address")),
        (tcp("host:+80"), Some("check \"tcp\" address")),
        (tcp("a_b:80"), Some("check \"tcp\" address")),
        (grpc("10.0.0.1:9090"), None),
        (grpc("[2001:db8::1]:9090"), None),
        (grpc("grpc.local"), Some("check \"grpc\" address")),
    ]);
}

#[test]
fn ttl_is_at_least_a_second() {
    assert_rules(vec![
        (with_check(ttl_check(1_000)), None),
        (
            with_check(ttl_check(999)),
            Some("invalid check \"ttl\" ttl_ms 999: must be at least 1000"),
        ),
        (with_check(ttl_check(0)), Some("check \"ttl\" ttl_ms")),
        // Interval and timeout do not apply to TTL checks.
        (
            change_check(ttl_check(1_000), |check| check.interval_ms = 5),
            None,
        ),
    ]);
}

#[test]
fn interval_and_timeout() {
    let timing = |interval_ms: u64, timeout_ms: u64| {
        change_check(http(), move |check| {
            check.interval_ms = interval_ms;
            check.timeout_ms = timeout_ms;
        })
    };
    assert_rules(vec![
        (timing(0, 0), None),
        (timing(1_000, 0), None),
        (timing(10_000, 9_999), None),
        (timing(0, 9_999), None),
        (timing(999, 0), Some("invalid check \"http\" interval_ms 999: must be 0 (the default, 10000) or at least 1000")),
        (timing(10_000, 10_000), Some("invalid check \"http\" timeout_ms 10000: must be less than the interval (10000 ms)")),
        (timing(0, 10_000), Some("check \"http\" timeout_ms")),
        (timing(2_000, 3_000), Some("check \"http\" timeout_ms")),
    ]);
}

#[test]
fn thresholds() {
    let thresholds = |success: u32, warning: u32, critical: u32| {
        change_check(http(), move |check| {
            check.success_before_passing = success;
            check.failures_before_warning = warning;
            check.failures_before_critical = critical;
        })
    };
    assert_rules(vec![
        (thresholds(0, 0, 0), None),
        (thresholds(100, 100, 100), None),
        (thresholds(1, 3, 3), None),
        (thresholds(1, 3, 0), None),
        (thresholds(1, 0, 1), None),
        (thresholds(101, 0, 0), Some("invalid check \"http\" success_before_passing 101: must be at most 100")),
        (thresholds(0, 101, 0), Some("check \"http\" failures_before_warning 101")),
        (thresholds(0, 0, 101), Some("check \"http\" failures_before_critical 101")),
        (thresholds(0, 4, 3), Some("invalid check \"http\" failures_before_warning 4: must not exceed failures_before_critical (3")),
        (thresholds(0, 4, 0), Some("check \"http\" failures_before_warning 4")),
    ]);
}

#[test]
fn deregister_critical_after_is_never_or_at_least_a_minute() {
    let after = |milliseconds: u64| {
        change_check(http(), move |check| {
            check.deregister_critical_after_ms = milliseconds
        })
    };
    assert_rules(vec![
        (after(0), None),
        (after(60_000), None),
        (after(59_999), Some("invalid check \"http\" deregister_critical_after_ms 59999: must be 0 (never) or at least 60000")),
    ]);
}

#[test]
fn initial_status_is_known() {
    let initial = |status: i32| change_check(http(), move |check| check.initial_status = status);
    assert_rules(vec![
        (initial(0), None),
        (initial(1), None),
        (initial(3), None),
        (initial(9), Some("invalid check \"http\" initial_status 9")),
    ]);
}

#[test]
fn long_values_are_cut_in_messages() {
    let error = validate_service_name(&"x".repeat(10_000)).expect_err("too long");
    assert!(error.to_string().len() < 400, "{error}");
    assert!(error.to_string().contains("\"..."), "{error}");
}
