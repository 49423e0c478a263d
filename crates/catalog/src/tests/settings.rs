use beacon_proto::beacon::v1::ServiceSettings;
use beacon_proto::mvccpb::KeyValue;

use crate::{
    decode_service_settings, default_service_settings, encode_service_settings,
    parse_service_settings_key, service_settings_key, validate_service_settings, CatalogError,
    DEFAULT_DNS_TTL_S, SERVICES_PREFIX,
};

fn settings(service: &str, min_healthy: f64, dns_ttl_s: u32) -> ServiceSettings {
    ServiceSettings {
        service: service.into(),
        min_healthy,
        dns_ttl_s,
    }
}

fn kv(key: &[u8], value: &str) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.as_bytes().to_vec(),
        ..KeyValue::default()
    }
}

#[test]
fn settings_keys_round_trip() {
    assert_eq!(service_settings_key("web"), b"/_beacon/services/web");
    assert!(service_settings_key("web").starts_with(SERVICES_PREFIX.as_bytes()));
    assert_eq!(
        parse_service_settings_key(b"/_beacon/services/web"),
        Some("web".to_owned())
    );
    for key in [
        &b"/_beacon/services/"[..],
        b"/_beacon/services/web/",
        b"/_beacon/services/web/x",
        b"/_beacon/services/\xff",
        b"/_beacon/instances/web/web-1",
        b"/_beacon/service/web",
    ] {
        assert_eq!(parse_service_settings_key(key), None, "{key:?}");
    }
}

#[test]
fn encoding_is_the_documented_format() {
    assert_eq!(
        encode_service_settings(&settings("web", 0.5, 5)),
        br#"{"min_healthy":0.5,"dns_ttl_s":5}"#
    );
    // Both fields are always written: a TTL of 0 is not the default.
    assert_eq!(
        encode_service_settings(&settings("web", 0.0, 0)),
        br#"{"min_healthy":0.0,"dns_ttl_s":0}"#
    );
    let documentation = include_str!("../lib.rs");
    assert!(documentation.contains(r#"//! {"min_healthy":0.5,"dns_ttl_s":5}"#));
}

#[test]
fn decoding_fills_in_the_defaults() {
    let key = service_settings_key("web");
    // (value, min_healthy, dns_ttl_s)
    let cases = [
        (r#"{"min_healthy":0.5,"dns_ttl_s":5}"#, 0.5, 5),
        (r#"{}"#, 0.0, DEFAULT_DNS_TTL_S),
        (r#"{"min_healthy":1}"#, 1.0, DEFAULT_DNS_TTL_S),
        (r#"{"dns_ttl_s":0}"#, 0.0, 0),
        (
            r#"{"min_healthy":null,"dns_ttl_s":null}"#,
            0.0,
            DEFAULT_DNS_TTL_S,
        ),
        (r#"{"dns_ttl_s":30,"future":[1]}"#, 0.0, 30),
    ];
    for (value, min_healthy, dns_ttl_s) in cases {
        assert_eq!(
            decode_service_settings(&kv(&key, value)),
            Ok(settings("web", min_healthy, dns_ttl_s)),
            "{value}"
        );
    }
    assert_eq!(
        default_service_settings("web"),
        settings("web", 0.0, DEFAULT_DNS_TTL_S)
    );
    for value in [0.0, 0.25, 1.0] {
        let written = settings("web", value, 60);
        let read = decode_service_settings(&kv(
            &key,
            std::str::from_utf8(&encode_service_settings(&written)).expect("UTF-8"),
        ));
        assert_eq!(read, Ok(written));
    }
}

#[test]
fn undecodable_records_are_refused() {
    let key = service_settings_key("web");
    for value in [
        "",
        "null",
        "[]",
        "[0.5,5]",
        r#"{"min_healthy":"half"}"#,
        r#"{"dns_ttl_s":-1}"#,
        r#"{"dns_ttl_s":1.5}"#,
        r#"{"dns_ttl_s":4294967296}"#,
    ] {
        let error = decode_service_settings(&kv(&key, value)).expect_err(value);
        assert!(
            matches!(error, CatalogError::InvalidRecord { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(r#"invalid service settings record at key "/_beacon/services/web": "#),
            "{error}"
        );
    }
    let error = decode_service_settings(&kv(b"/_beacon/services/", "{}")).expect_err("no service");
    assert!(error.to_string().contains("not a settings key"), "{error}");
}

#[test]
fn settings_rules() {
    // (settings, words of the error, or None when valid)
    let cases = [
        (settings("web", 0.0, 0), None),
        (settings("web", 1.0, 86_400), None),
        (settings("web", 0.5, 5), None),
        (
            settings("Web", 0.5, 5),
            Some("invalid service name \"Web\""),
        ),
        (
            settings("web", -0.1, 5),
            Some("invalid min_healthy -0.1: must be a ratio"),
        ),
        (settings("web", 1.5, 5), Some("invalid min_healthy 1.5")),
        (
            settings("web", f64::NAN, 5),
            Some("invalid min_healthy NaN"),
        ),
        (
            settings("web", 0.5, 86_401),
            Some("invalid dns_ttl_s 86401: must be 0 to 86400"),
        ),
    ];
    for (service_settings, words) in cases {
        match (validate_service_settings(&service_settings), words) {
            (Ok(()), None) => {}
            (Err(error), Some(words)) => {
                assert!(
                    error.to_string().contains(words),
                    "{error} should mention {words}"
                );
            }
            (result, _) => panic!("{service_settings:?}: {result:?}"),
        }
    }
}
