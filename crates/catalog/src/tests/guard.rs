use super::{http_check, instance};
use crate::{encode_instance, instance_key, validate_kv_write, CatalogError};

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
    }
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
