//! The guard on plain etcd writes: keys under the reserved prefix `/_beacon/` belong to the
//! catalog, so a put there must be a valid instance record. This keeps every record a reader
//! meets decodable, whichever API wrote it.

use crate::error::CatalogError;
use crate::key::{is_reserved, parse_instance_key};
use crate::record::decode_record;
use crate::validate::validate_instance;

/// Whether an etcd put of `value` at `key` may be proposed. Keys outside `/_beacon/` are always
/// accepted. A key under it must be an instance key `/_beacon/instances/{service}/{instance_id}`
/// whose value is a JSON instance record naming the same service and id and obeying
/// [`validate_instance`]; any other key under the prefix is refused with
/// [`CatalogError::ReservedKey`]. Deletes need no guard: removing a record is deregistering it.
pub fn validate_kv_write(key: &[u8], value: &[u8]) -> Result<(), CatalogError> {
    if !is_reserved(key) {
        return Ok(());
    }
    if parse_instance_key(key).is_none() {
        return Err(CatalogError::reserved_key(key));
    }
    let instance = decode_record(key, value)?;
    validate_instance(&instance)
}
