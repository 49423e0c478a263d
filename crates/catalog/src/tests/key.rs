use crate::{
    instance_key, is_instance_key_of, is_reserved, parse_instance_key, service_prefix,
    INSTANCES_PREFIX, RESERVED_PREFIX,
};

#[test]
fn prefixes_are_nested() {
    assert!(INSTANCES_PREFIX.starts_with(RESERVED_PREFIX));
    assert_eq!(service_prefix("web"), b"/_beacon/instances/web/");
    assert_eq!(
        instance_key("web", "web-1"),
        b"/_beacon/instances/web/web-1"
    );
    assert!(instance_key("web", "web-1").starts_with(&service_prefix("web")));
}

#[test]
fn instance_keys_round_trip() {
    for (service, id) in [("web", "web-1"), ("a", "x.y_z-1"), ("api-v2", "ID")] {
        assert_eq!(
            parse_instance_key(&instance_key(service, id)),
            Some((service.to_owned(), id.to_owned())),
        );
    }
}

#[test]
fn malformed_instance_keys_are_not_parsed() {
    let cases: &[&[u8]] = &[
        b"",
        b"/_beacon/",
        b"/_beacon/instances/",
        b"/_beacon/instances/web",
        b"/_beacon/instances/web/",
        b"/_beacon/instances//web-1",
        b"/_beacon/instances/web/web-1/",
        b"/_beacon/instances/web/web-1/extra",
        b"/_beacon/instance/web/web-1",
        b"/_beacon/instances/web/\xff",
        b"/other/instances/web/web-1",
        b"_beacon/instances/web/web-1",
    ];
    for key in cases {
        assert_eq!(
            parse_instance_key(key),
            None,
            "{:?}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn reserved_means_under_the_prefix() {
    let cases: &[(&[u8], bool)] = &[
        (b"/_beacon/", true),
        (b"/_beacon/anything", true),
        (b"/_beacon/instances/web/web-1", true),
        (b"/_beacon", false),
        (b"/_beaconx/", false),
        (b"/app/config", false),
        (b"", false),
    ];
    for (key, reserved) in cases {
        assert_eq!(
            is_reserved(key),
            *reserved,
            "{:?}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn instance_key_of_a_service_only() {
    assert!(is_instance_key_of(b"/_beacon/instances/web/web-1", "web"));
    assert!(!is_instance_key_of(b"/_beacon/instances/web/web-1", "we"));
    assert!(!is_instance_key_of(b"/_beacon/instances/web2/web-1", "web"));
    assert!(!is_instance_key_of(b"/_beacon/instances/web/", "web"));
    assert!(!is_instance_key_of(b"/_beacon/instances/web/a/b", "web"));
}
