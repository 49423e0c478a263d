use std::collections::HashMap;

use beacon_proto::beacon::v1::{
    check, Check, CheckState, GrpcCheck, HealthStatus, HttpCheck, Instance, Maintenance, TcpCheck,
    TtlCheck,
};
use beacon_proto::mvccpb::KeyValue;
use proptest::prelude::*;

use super::{http_check, instance, kv_of};
use crate::{
    decode_instance, encode_instance, health_of, instance_key, normalize_instance,
    validate_instance, validate_kv_write, CatalogError,
};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        create_revision: 3,
        mod_revision: 7,
        version: 2,
        lease: 99,
    }
}

/// The instance of the crate documentation's example.
fn documented_instance() -> Instance {
    let mut web = instance("web", "web-1");
    web.tags = vec!["v1".into()];
    web.metadata = [("zone".to_owned(), "a".to_owned())].into();
    web.maintenance = Some(Maintenance {
        enabled: true,
        reason: "deploy".into(),
    });
    let mut check = http_check("http://10.0.0.1:8080/health");
    if let Some(check::Kind::Http(http)) = &mut check.kind {
        http.headers.insert("Host".into(), "web".into());
    }
    check.deregister_critical_after_ms = 600_000;
    let mut web = normalize_instance(Instance {
        checks: vec![check],
        ..web
    });
    web.checks[0].state = Some(CheckState {
        status: HealthStatus::Passing as i32,
        output: "HTTP 200 OK".into(),
        since_unix_ms: 1_700_000_000_000,
        reason: String::new(),
    });
    web
}

#[test]
fn encoding_matches_the_documented_example() {
    let documentation = include_str!("../lib.rs");
    let start = documentation
        .find("//! ```json\n")
        .expect("lib.rs documents the record")
        + 12;
    let end = start
        + documentation[start..]
            .find("//! ```")
            .expect("the example ends");
    let documented: String = documentation[start..end]
        .lines()
        .map(|line| line.trim_start_matches("//!").trim())
        .collect();
    let encoded =
        String::from_utf8(encode_instance(&documented_instance())).expect("JSON is UTF-8");
    assert_eq!(encoded, documented);
}

#[test]
fn encoding_of_a_registered_instance() {
    let mut web = instance("web", "web-1");
    web.tags = vec!["v1".into()];
    web.metadata = [("zone".to_owned(), "a".to_owned())].into();
    web.lease = 42;
    web.checks = vec![http_check("http://10.0.0.1:8080/health")];
    let encoded = encode_instance(&normalize_instance(web));
    assert_eq!(
        String::from_utf8(encoded).expect("JSON is UTF-8"),
        concat!(
            r#"{"service":"web","id":"web-1","address":"10.0.0.1","port":8080,"tags":["v1"],"#,
            r#""metadata":{"zone":"a"},"weight":1,"checks":[{"id":"http","#,
            r#""http":{"url":"http://10.0.0.1:8080/health","method":"GET"},"#,
            r#""interval_ms":10000,"timeout_ms":5000,"success_before_passing":1,"#,
            r#""failures_before_warning":1,"failures_before_critical":3,"#,
            r#""initial_status":"critical","state":{"status":"critical"}}]}"#,
        ),
        "no lease, no health, no revisions; zero values omitted"
    );
}

#[test]
fn every_check_kind_encodes_under_its_name() {
    let kinds = [
        (
            check::Kind::Tcp(TcpCheck {
                address: "db:5432".into(),
            }),
            r#""tcp":{"address":"db:5432"}"#,
        ),
        (
            check::Kind::Grpc(GrpcCheck {
                address: "api:9090".into(),
                service: "api.v1".into(),
                tls: true,
            }),
            r#""grpc":{"address":"api:9090","service":"api.v1","tls":true}"#,
        ),
        (
            check::Kind::Ttl(TtlCheck { ttl_ms: 15_000 }),
            r#""ttl":{"ttl_ms":15000}"#,
        ),
        (
            check::Kind::Http(HttpCheck {
                url: "https://x/".into(),
                tls_skip_verify: true,
                ..HttpCheck::default()
            }),
            r#""http":{"url":"https://x/","tls_skip_verify":true}"#,
        ),
    ];
    for (kind, expected) in kinds {
        let mut web = instance("web", "web-1");
        web.checks = vec![Check {
            kind: Some(kind),
            ..Check::default()
        }];
        let encoded = String::from_utf8(encode_instance(&web)).expect("JSON is UTF-8");
        assert!(
            encoded.contains(&format!(r#""checks":[{{{expected}}}]"#)),
            "{encoded}"
        );
        let decoded = decode_instance(&kv_of(&web, 0, 1, 1)).expect("decodes");
        assert_eq!(decoded.checks, web.checks);
    }
}

#[test]
fn decoding_fills_lease_revisions_and_health() {
    let decoded = decode_instance(&kv(
        "/_beacon/instances/web/web-1",
        r#"{"service":"web","id":"web-1","address":"10.0.0.1","port":8080}"#,
    ))
    .expect("the four required fields are enough");
    assert_eq!(
        decoded,
        Instance {
            lease: 99,
            create_revision: 3,
            mod_revision: 7,
            health: HealthStatus::Passing as i32,
            ..instance("web", "web-1")
        }
    );
    let critical = decode_instance(&kv(
        "/_beacon/instances/web/web-1",
        r#"{"service":"web","id":"web-1","address":"10.0.0.1","port":8080,
            "checks":[{"ttl":{"ttl_ms":5000},"state":{"status":"warning"}},
                      {"id":"b","tcp":{},"state":{"status":"critical"}}]}"#,
    ))
    .expect("decodes");
    assert_eq!(critical.health(), HealthStatus::Critical);
}

#[test]
fn optional_fields_may_be_missing_or_null() {
    let decoded = decode_instance(&kv(
        "/_beacon/instances/web/web-1",
        r#"{"service":"web","id":"web-1","address":"h","port":1,"maintenance":null,
            "checks":[{}],"future_field":{"x":1}}"#,
    ))
    .expect("null objects, empty checks and unknown fields are accepted");
    assert_eq!(decoded.maintenance, None);
    assert_eq!(decoded.checks, vec![Check::default()]);
}

#[test]
fn decoding_refuses_malformed_records() {
    let key = "/_beacon/instances/web/web-1";
    let cases = [
        ("not json", "not a JSON instance record"),
        ("", "not a JSON instance record"),
        (
            r#"{"service":"web","id":"web-1","address":"h"}"#,
            "missing field `port`",
        ),
        (
            r#"{"id":"web-1","address":"h","port":1}"#,
            "missing field `service`",
        ),
        (
            r#"{"service":"web","address":"h","port":1}"#,
            "missing field `id`",
        ),
        (
            r#"{"service":"web","id":"web-1","port":1}"#,
            "missing field `address`",
        ),
        (
            r#"{"service":"web","id":"web-1","address":"h","port":-1}"#,
            "expected u32",
        ),
        (
            r#"{"service":"api","id":"web-1","address":"h","port":1}"#,
            r#"the record names service "api" and id "web-1", but the key names service "web" and id "web-1""#,
        ),
        (
            r#"{"service":"web","id":"web-2","address":"h","port":1}"#,
            "id \"web-2\"",
        ),
        (
            r#"{"service":"web","id":"web-1","address":"h","port":1,"checks":[{"id":"x","tcp":{},"ttl":{}}]}"#,
            "check \"x\" names more than one kind",
        ),
        (
            r#"{"service":"web","id":"web-1","address":"h","port":1,"checks":[{"state":{"status":"ok"}}]}"#,
            "unknown variant `ok`",
        ),
        (
            r#"{"service":"web","id":"web-1","address":"h","port":1,"checks":[{"initial_status":"PASSING"}]}"#,
            "unknown variant `PASSING`",
        ),
    ];
    for (value, words) in cases {
        let error = decode_instance(&kv(key, value)).expect_err(value);
        let message = error.to_string();
        assert!(
            message
                .starts_with("invalid instance record at key \"/_beacon/instances/web/web-1\": "),
            "{message}"
        );
        assert!(message.contains(words), "{message} should mention {words}");
    }
}

#[test]
fn decoding_needs_an_instance_key() {
    let error =
        decode_instance(&kv("/_beacon/instances/web", "{}")).expect_err("not an instance key");
    assert_eq!(
        error,
        CatalogError::NotInstanceKey {
            key: "\"/_beacon/instances/web\"".into()
        }
    );
}

#[test]
fn encoding_is_deterministic() {
    let entries: Vec<(String, String)> = (0..32)
        .map(|index| (format!("k{index}"), format!("v{index}")))
        .collect();
    let forward: HashMap<String, String> = entries.iter().cloned().collect();
    let backward: HashMap<String, String> = entries.iter().rev().cloned().collect();
    let mut first = instance("web", "web-1");
    first.metadata = forward;
    let mut second = first.clone();
    second.metadata = backward;
    assert_eq!(encode_instance(&first), encode_instance(&second));
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|octets| std::net::Ipv4Addr::from(octets).to_string()),
        any::<[u16; 8]>().prop_map(|segments| std::net::Ipv6Addr::from(segments).to_string()),
        "[a-z][a-z0-9-]{0,8}[a-z0-9](\\.[a-z]{1,6}){0,2}",
    ]
}

/// `host` in a URL or a host:port pair, where IPv6 needs brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn check_kind() -> impl Strategy<Value = check::Kind> {
    prop_oneof![
        (
            host(),
            prop::option::of(1..=65535u16),
            "(/[a-z0-9]{0,6}){0,2}",
            prop::sample::select(vec!["", "GET", "HEAD", "POST", "PUT", "OPTIONS"]),
            prop::collection::hash_map("[A-Za-z][A-Za-z0-9-]{0,8}", "[ -~]{0,12}", 0..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(host, port, path, method, headers, tls, tls_skip_verify)| {
                    let scheme = if tls { "https" } else { "http" };
                    let port = port.map(|port| format!(":{port}")).unwrap_or_default();
                    check::Kind::Http(HttpCheck {
                        url: format!("{scheme}://{}{port}{path}", bracketed(&host)),
                        method: method.to_owned(),
                        headers,
                        tls_skip_verify,
                    })
                }
            ),
        (host(), 1..=65535u16).prop_map(|(host, port)| check::Kind::Tcp(TcpCheck {
            address: format!("{}:{port}", bracketed(&host)),
        })),
        (host(), 1..=65535u16, "[a-z.]{0,10}", any::<bool>()).prop_map(
            |(host, port, service, tls)| check::Kind::Grpc(GrpcCheck {
                address: format!("{}:{port}", bracketed(&host)),
                service,
                tls,
            })
        ),
        (1_000..1_000_000u64).prop_map(|ttl_ms| check::Kind::Ttl(TtlCheck { ttl_ms })),
    ]
}

fn health_status() -> impl Strategy<Value = i32> {
    0..=3i32
}

prop_compose! {
    fn valid_check()(
        kind in check_kind(),
        interval_ms in prop_oneof![Just(0u64), 1_000..100_000u64],
        timeout_seed in any::<u64>(),
        success_before_passing in 0..=100u32,
        failures_before_critical in 0..=100u32,
        warning_seed in any::<u32>(),
        deregister_critical_after_ms in prop_oneof![Just(0u64), 60_000..10_000_000u64],
        initial_status in health_status(),
        state in prop::option::of((health_status(), "\\PC{0,20}", any::<i64>(), "\\PC{0,20}")),
    ) -> Check {
        let effective_interval = if interval_ms == 0 { 10_000 } else { interval_ms };
        let effective_critical = if failures_before_critical == 0 { 3 } else { failures_before_critical };
        Check {
            id: String::new(),
            kind: Some(kind),
            interval_ms,
            timeout_ms: timeout_seed % effective_interval,
            success_before_passing,
            failures_before_warning: warning_seed % (effective_critical + 1),
            failures_before_critical,
            deregister_critical_after_ms,
            initial_status,
            state: state.map(|(status, output, since_unix_ms, reason)| CheckState {
                status,
                output,
                since_unix_ms,
                reason,
            }),
            last_probe: None,
        }
    }
}

prop_compose! {
    fn valid_instance()(
        service in "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        id in "[A-Za-z0-9._-]{1,40}",
        address in host(),
        port in 1..=65535u32,
        tags in prop::collection::hash_set("[a-z0-9 =:/]{1,12}", 0..6),
        metadata in prop::collection::hash_map("[A-Za-z0-9._-]{1,12}", "\\PC{0,16}", 0..6),
        weight in 0..=10_000u32,
        lease in 0..i64::MAX,
        maintenance in prop::option::of((any::<bool>(), "\\PC{0,16}")),
        checks in prop::collection::vec(valid_check(), 0..5),
        named_checks in any::<bool>(),
    ) -> Instance {
        let checks = checks.into_iter().enumerate().map(|(index, check)| Check {
            // Either every check gets its own id, or only the first may default to its kind.
            id: if named_checks || index > 0 { format!("check-{index}") } else { String::new() },
            ..check
        }).collect();
        Instance {
            service,
            id,
            address,
            port,
            tags: tags.into_iter().collect(),
            metadata,
            weight,
            lease,
            checks,
            maintenance: maintenance.map(|(enabled, reason)| Maintenance { enabled, reason }),
            ..Instance::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_instances_round_trip(original in valid_instance(), normalize in any::<bool>(), revision in 1..1_000i64) {
        let original = if normalize { normalize_instance(original) } else { original };
        prop_assert_eq!(validate_instance(&original), Ok(()));
        let stored = kv_of(&original, original.lease, revision, revision + 5);
        prop_assert_eq!(validate_kv_write(&stored.key, &stored.value), Ok(()));
        let decoded = decode_instance(&stored).expect("a valid instance decodes");
        let expected = Instance {
            create_revision: revision,
            mod_revision: revision + 5,
            health: health_of(&original) as i32,
            ..original.clone()
        };
        prop_assert_eq!(&decoded, &expected);
        prop_assert_eq!(encode_instance(&decoded), stored.value);
        prop_assert_eq!(decoded.lease, original.lease);
    }
}

#[test]
fn the_lease_is_not_in_the_record() {
    let mut web = instance("web", "web-1");
    web.lease = 42;
    web.create_revision = 5;
    web.health = HealthStatus::Critical as i32;
    let stored = KeyValue {
        key: instance_key("web", "web-1"),
        value: encode_instance(&web),
        ..KeyValue::default()
    };
    let text = String::from_utf8(stored.value.clone()).expect("JSON is UTF-8");
    assert!(
        !text.contains("lease") && !text.contains("revision") && !text.contains("health"),
        "{text}"
    );
    let decoded = decode_instance(&stored).expect("decodes");
    assert_eq!(
        (decoded.lease, decoded.create_revision, decoded.health()),
        (0, 0, HealthStatus::Passing)
    );
}

#[test]
fn a_check_states_reason_is_stored_after_its_time() {
    let mut web = instance("web", "web-1");
    web.checks = vec![Check {
        state: Some(CheckState {
            status: HealthStatus::Warning as i32,
            output: "HTTP 429".into(),
            since_unix_ms: 5,
            reason: "flapping".into(),
        }),
        ..crate::tests::ttl_check(5_000)
    }];
    let encoded = encode_instance(&web);
    assert!(
        String::from_utf8_lossy(&encoded).contains(
            r#""state":{"status":"warning","output":"HTTP 429","since_unix_ms":5,"reason":"flapping"}"#
        ),
        "{}",
        String::from_utf8_lossy(&encoded)
    );
    let decoded = decode_instance(&kv_of(&web, 0, 1, 1)).expect("decodes");
    assert_eq!(decoded.checks, web.checks);
}
