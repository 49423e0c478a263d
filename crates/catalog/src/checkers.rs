//! The checker-member set: the record at [`CHECKERS_KEY`](crate::CHECKERS_KEY) in which the
//! leader names the members that run health checks. Each check's owner and confirmer are chosen
//! among them by [`crate::rendezvous`]; the epoch grows with every change, so a member can tell
//! a newer set from an older one.

use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::key::CHECKERS_KEY;
use crate::record::from_json_object;

/// What the record kind is called in error messages.
const RECORD_KIND: &str = "checker set";

/// The members that run health checks, as the leader last recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckerSet {
    /// Member (node) ids, ascending and distinct once encoded or decoded.
    pub members: Vec<u64>,
    /// Incremented by the leader on every change of `members`.
    pub epoch: u64,
}

/// The JSON record `{"members":[1,2,3],"epoch":7}`: members sorted ascending and deduplicated,
/// so equal sets give equal bytes whatever order they were listed in.
pub fn encode_checker_set(checkers: &CheckerSet) -> Vec<u8> {
    let record = CheckerSet {
        members: sorted_members(checkers.members.clone()),
        epoch: checkers.epoch,
    };
    serde_json::to_vec(&record).expect("a list of numbers and a number always serialize")
}

/// The set stored as the value of [`CHECKERS_KEY`]; both fields are required, unknown fields
/// are ignored, and members come back sorted and deduplicated.
pub fn decode_checker_set(value: &[u8]) -> Result<CheckerSet, CatalogError> {
    let record: CheckerSet = from_json_object(value).map_err(|error| {
        CatalogError::invalid_record_of(
            RECORD_KIND,
            CHECKERS_KEY.as_bytes(),
            format!("not a JSON checker set record: {error}"),
        )
    })?;
    Ok(CheckerSet {
        members: sorted_members(record.members),
        epoch: record.epoch,
    })
}

fn sorted_members(mut members: Vec<u64>) -> Vec<u64> {
    members.sort_unstable();
    members.dedup();
    members
}
