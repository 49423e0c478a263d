//! The guard on plain etcd writes: keys under the reserved prefix `/_beacon/` belong to the
//! catalog, so a put there must be a valid catalog record of the key's kind. This keeps every
//! record a reader meets decodable, whichever API wrote it.

use crate::error::CatalogError;
use crate::key::{is_reserved, parse_instance_key, parse_service_settings_key, CHECKERS_KEY};
use crate::record::decode_record;
use crate::settings::{decode_settings_record, validate_service_settings};
use crate::validate::validate_instance;

/// Whether an etcd put of `value` at `key` may be proposed by a client. Keys outside `/_beacon/`
/// are always accepted. Under it:
///
/// - an instance key `/_beacon/instances/{service}/{instance_id}` takes a JSON instance record
///   naming the same service and id and obeying [`validate_instance`];
/// - a settings key `/_beacon/services/{service}` takes a JSON service settings record obeying
///   [`validate_service_settings`];
/// - [`CHECKERS_KEY`] is refused with [`CatalogError::ClusterOwnedKey`]: only the leader writes
///   it, bypassing this guard;
/// - any other key is refused with [`CatalogError::ReservedKey`].
///
/// Deletes need no guard: removing a record is deregistering it, or dropping the settings.
pub fn validate_kv_write(key: &[u8], value: &[u8]) -> Result<(), CatalogError> {
    if !is_reserved(key) {
        return Ok(());
    }
    if parse_instance_key(key).is_some() {
        let instance = decode_record(key, value)?;
        return validate_instance(&instance);
    }
    if parse_service_settings_key(key).is_some() {
        let settings = decode_settings_record(key, value)?;
        return validate_service_settings(&settings);
    }
    if key == CHECKERS_KEY.as_bytes() {
        return Err(CatalogError::cluster_owned_key(key));
    }
    Err(CatalogError::reserved_key(key))
}
