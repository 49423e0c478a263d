//! Translation of etcd watch events on instance keys into `WatchService`'s [`InstanceEvent`]s.

use beacon_proto::beacon::v1::{instance_event, Instance, InstanceEvent};
use beacon_proto::mvccpb::{event::EventType, Event};

use crate::error::CatalogError;
use crate::key::parse_instance_key;
use crate::record::decode_instance;

/// The catalog event an etcd watch event stands for, or `None` when the event's key is not an
/// instance key (or the event has no key-value).
///
/// - PUT: `instance` is the record in `kv`; `prev_instance` the one in `prev_kv`, when the watch
///   asked for previous values and the key existed.
/// - DELETE: `instance` is the record as it was, from `prev_kv`; without `prev_kv` it holds only
///   the service and id from the key (and the deletion's `mod_revision`). `prev_instance` is
///   left empty: `instance` already is the state before the change.
///
/// `revision` is the change's own revision (the event's `mod_revision`) in both cases.
///
/// Fails when a record cannot be decoded (see [`decode_instance`]).
pub fn instance_event(event: &Event) -> Result<Option<InstanceEvent>, CatalogError> {
    let Some(kv) = &event.kv else {
        return Ok(None);
    };
    let Some((service, instance_id)) = parse_instance_key(&kv.key) else {
        return Ok(None);
    };
    let prev_instance = event.prev_kv.as_ref().map(decode_instance).transpose()?;
    let catalog_event = match event.r#type() {
        EventType::Put => InstanceEvent {
            r#type: instance_event::EventType::Put as i32,
            instance: Some(decode_instance(kv)?),
            prev_instance,
            revision: kv.mod_revision,
        },
        EventType::Delete => InstanceEvent {
            r#type: instance_event::EventType::Delete as i32,
            instance: Some(prev_instance.unwrap_or_else(|| Instance {
                service,
                id: instance_id,
                mod_revision: kv.mod_revision,
                ..Instance::default()
            })),
            prev_instance: None,
            revision: kv.mod_revision,
        },
    };
    Ok(Some(catalog_event))
}
