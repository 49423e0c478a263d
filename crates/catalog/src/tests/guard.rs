use super::{http_check, instance};
use crate::{
    default_service_settings, encode_checker_set, encode_instance, encode_service_settings,
    instance_key, service_settings_key, validate_kv_write, CatalogError, CheckerSet, CHECKERS_KEY,
};

#[test]
fn keys_outside_the_prefix_are_not_guarded() {
    for key in [
        &b"/app/config"[..],
        b"/_beacon",
        b"/_beaconx/instances/web/web-1",
        b"",
        b"\xff",
    ] {
        assert_eq!(validate_kv_write(key, b"anything, not JSON"), Ok(()));
    }
}

#[test]
fn a_valid_record_at_its_key_is_accepted() {
    let mut web = instance("web", "web-1");
    web.checks = vec![http_check("http://10.0.0.1:8080/health")];
    assert_eq!(
        validate_kv_write(&instance_key("web", "web-1"), &encode_instance(&web)),
        Ok(())
    );
    // Plain etcd clients may rely on defaults.
    assert_eq!(
        validate_kv_write(
            b"/_beacon/instances/web/web-2",
            br#"{"service":"web","id":"web-2","address":"web-2.local","port":80}"#,
        ),
        Ok(())
    );
}

#[test]
fn other_reserved_keys_are_refused() {
    for key in [
        &b"/_beacon/"[..],
        b"/_beacon/config",
        b"/_beacon/instances/",
        b"/_beacon/instances/web",
        b"/_beacon/instances/web/",
        b"/_beacon/instances/web/web-1/checks",
        b"/_beacon/services/",
        b"/_beacon/services/web/",
        b"/_beacon/services/web/x",
        b"/_beacon/checkers/",
        b"/_beacon/checkers/1",
    ] {
        let error = validate_kv_write(key, &encode_instance(&instance("web", "web-1")))
            .expect_err("not an instance key");
        assert!(
            matches!(error, CatalogError::ReservedKey { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("reserved prefix \"/_beacon/\""),
            "{message}"
        );
        assert!(
            message.contains("/_beacon/instances/{service}/{instance_id}"),
            "{message}"
        );
        assert!(message.contains("/_beacon/services/{service}"), "{message}");
    }
}

#[test]
fn valid_settings_are_accepted_at_their_key() {
    for value in [
        &br#"{"min_healthy":0.5,"dns_ttl_s":5}"#[..],
        br#"{}"#,
        br#"{"dns_ttl_s":0}"#,
        &encode_service_settings(&default_service_settings("web")),
    ] {
        assert_eq!(
            validate_kv_write(&service_settings_key("web"), value),
            Ok(()),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn bad_settings_are_refused() {
    let cases: [(&[u8], &[u8], &str); 5] = [
        (
            b"/_beacon/services/web",
            b"0.5",
            "not a JSON service settings record",
        ),
        (
            b"/_beacon/services/web",
            br#"{"min_healthy":2}"#,
            "invalid min_healthy 2",
        ),
        (
            b"/_beacon/services/web",
            br#"{"dns_ttl_s":100000}"#,
            "invalid dns_ttl_s 100000",
        ),
        (
            b"/_beacon/services/web",
            br#"{"dns_ttl_s":-5}"#,
            "not a JSON service settings record",
        ),
        (
            b"/_beacon/services/Web",
            b"{}",
            "invalid service name \"Web\"",
        ),
    ];
    for (key, value, words) in cases {
        let error = validate_kv_write(key, value).expect_err("refused");
        assert!(
            error.to_string().contains(words),
            "{error} should mention {words}"
        );
    }
}

#[test]
fn the_checker_set_is_written_only_by_the_cluster() {
    let value = encode_checker_set(&CheckerSet {
        members: vec![1, 2, 3],
        epoch: 7,
    });
    let error = validate_kv_write(CHECKERS_KEY.as_bytes(), &value).expect_err("reserved");
    assert!(
        matches!(error, CatalogError::ClusterOwnedKey { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "key \"/_beacon/checkers\" is written only by the cluster: its leader records there \
         which members run health checks"
    );
}

#[test]
fn bad_records_at_instance_keys_are_refused() {
    let key = instance_key("web", "web-1");
    let cases: [(&[u8], &str); 4] = [
        (b"hello", "not a JSON instance record"),
        (
            br#"{"service":"api","id":"web-1","address":"h","port":1}"#,
            "but the key names service \"web\"",
        ),
        (
            br#"{"service":"web","id":"web-1","address":"h","port":0}"#,
            "invalid port 0",
        ),
        (
            br#"{"service":"web","id":"web-1","address":"a b","port":1}"#,
            "invalid address",
        ),
    ];
    for (value, words) in cases {
        let error = validate_kv_write(&key, value).expect_err("refused");
        assert!(
            error.to_string().contains(words),
            "{error} should mention {words}"
        );
    }
    // The key's own segments must obey the naming rules too.
    let error = validate_kv_write(
        b"/_beacon/instances/Web/web-1",
        br#"{"service":"Web","id":"web-1","address":"h","port":1}"#,
    )
    .expect_err("uppercase service");
    assert!(
        error.to_string().contains("invalid service name \"Web\""),
        "{error}"
    );
}
