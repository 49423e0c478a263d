use beacon_proto::beacon::v1::{instance_event, HealthStatus, Instance, InstanceEvent};
use beacon_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::{instance, kv_of, with_checks};
use crate::{decode_instance, instance_event};

fn put(kv: KeyValue, prev_kv: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv,
    }
}

fn delete(key: &[u8], prev_kv: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.to_vec(),
            mod_revision: 12,
            ..KeyValue::default()
        }),
        prev_kv,
    }
}

#[test]
fn put_carries_the_new_and_previous_instance() {
    let before = with_checks(instance("web", "web-1"), &[HealthStatus::Critical]);
    let after = with_checks(instance("web", "web-1"), &[HealthStatus::Passing]);
    let (before_kv, after_kv) = (kv_of(&before, 5, 3, 3), kv_of(&after, 5, 3, 8));

    let event = instance_event(&put(after_kv.clone(), Some(before_kv.clone())))
        .expect("decodes")
        .expect("an instance key");
    assert_eq!(
        event,
        InstanceEvent {
            r#type: instance_event::EventType::Put as i32,
            instance: Some(decode_instance(&after_kv).expect("decodes")),
            prev_instance: Some(decode_instance(&before_kv).expect("decodes")),
            revision: 8,
        }
    );
    let instance = event.instance.expect("set");
    assert_eq!(
        (instance.health(), instance.lease, instance.mod_revision),
        (HealthStatus::Passing, 5, 8)
    );

    let created = instance_event(&put(after_kv, None))
        .expect("decodes")
        .expect("an instance key");
    assert_eq!(created.prev_instance, None);
}

#[test]
fn delete_carries_the_instance_as_it_was() {
    let before = instance("web", "web-1");
    let before_kv = kv_of(&before, 5, 3, 8);
    let event = instance_event(&delete(&before_kv.key, Some(before_kv.clone())))
        .expect("decodes")
        .expect("an instance key");
    assert_eq!(
        event,
        InstanceEvent {
            r#type: instance_event::EventType::Delete as i32,
            instance: Some(decode_instance(&before_kv).expect("decodes")),
            prev_instance: None,
            // The deletion's revision, not the deleted record's.
            revision: 12,
        }
    );
}

#[test]
fn delete_without_previous_value_names_the_instance() {
    let event = instance_event(&delete(b"/_beacon/instances/web/web-1", None))
        .expect("nothing to decode")
        .expect("an instance key");
    assert_eq!(event.r#type(), instance_event::EventType::Delete);
    assert_eq!(event.revision, 12);
    assert_eq!(
        event.instance,
        Some(Instance {
            service: "web".into(),
            id: "web-1".into(),
            mod_revision: 12,
            ..Instance::default()
        })
    );
}

#[test]
fn other_keys_are_not_instance_events() {
    let other = KeyValue {
        key: b"/app/config".to_vec(),
        value: b"x".to_vec(),
        ..KeyValue::default()
    };
    assert_eq!(instance_event(&put(other, None)), Ok(None));
    assert_eq!(
        instance_event(&delete(b"/_beacon/instances/web", None)),
        Ok(None)
    );
    let no_kv = Event {
        r#type: EventType::Put as i32,
        kv: None,
        prev_kv: None,
    };
    assert_eq!(instance_event(&no_kv), Ok(None));
}

#[test]
fn undecodable_records_are_errors() {
    let broken = KeyValue {
        key: b"/_beacon/instances/web/web-1".to_vec(),
        value: b"not json".to_vec(),
        ..KeyValue::default()
    };
    let error = instance_event(&put(broken.clone(), None)).expect_err("not a record");
    assert!(
        error.to_string().contains("not a JSON instance record"),
        "{error}"
    );
    assert!(instance_event(&delete(&broken.key.clone(), Some(broken))).is_err());
}
