//! Leases (etcd's lessor, minus the clock): the table of granted leases, the keys attached to
//! each, and the replicated lease operations — grant, revoke, renew and the leader's expiry.
//!
//! Time never enters here. A lease records its TTL and its *generation*: the Raft log index of
//! the grant or of the last renewal, supplied by the caller. Every member measures a lease's
//! deadline from the moment it applied that generation; only the leader acts on it, by proposing
//! a [`LeaseExpiry`] naming the generation it measured from. The expiry applies only if the lease
//! was not renewed since (same generation), so a renewal committed just before an expiry always
//! wins, and a deposed leader's stale decision changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::store::header;
use crate::{mvccpb, pb, Applied, KvStore, MvccError, RevisionReader, WriteRequest, WriteResponse};

pub use beacon_proto::beacon::v1::LeaseExpiry;

/// etcd's largest TTL (`MaxLeaseTTL`, in seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Lease existence, consulted by a put that attaches a lease.
pub trait LeaseRegistry {
    /// Whether a lease with this id is currently granted.
    fn exists(&self, lease_id: i64) -> bool;
}

/// A registry in which no lease exists: a put with a lease fails with
/// [`MvccError::LeaseNotFound`] as etcd does for an unknown lease.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLeases;

impl LeaseRegistry for NoLeases {
    fn exists(&self, _lease_id: i64) -> bool {
        false
    }
}

/// The persisted part of a lease (attached keys are derived from the key-value store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// Log index of the grant or the last renewal.
    pub generation: u64,
}

/// A change to the lease table, for the caller to persist and to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// Granted or renewed: the lease lives `record.ttl` seconds from now (the apply).
    Set(i64, LeaseRecord),
    /// Revoked or expired.
    Removed(i64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lease {
    record: LeaseRecord,
    keys: BTreeSet<Vec<u8>>,
}

/// Every granted lease with its attached keys.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    leases: BTreeMap<i64, Lease>,
    /// The lease each attached key belongs to (the reverse of `Lease::keys`). Events cannot
    /// tell: a delete's `prev_kv` is the key before the whole txn, not before the delete.
    attached: HashMap<Vec<u8>, i64>,
    changes: Vec<LeaseChange>,
}

impl LeaseRegistry for LeaseTable {
    fn exists(&self, lease_id: i64) -> bool {
        self.leases.contains_key(&lease_id)
    }
}

impl LeaseTable {
    /// Rebuilds the table from persisted records; keys are attached from the store's live keys
    /// (the `lease` of each key's latest version).
    pub fn restore<R: RevisionReader + ?Sized>(
        records: impl IntoIterator<Item = (i64, LeaseRecord)>,
        kv: &KvStore,
        reader: &R,
    ) -> Result<Self, MvccError> {
        let mut table = LeaseTable::default();
        for (id, record) in records {
            table.leases.insert(
                id,
                Lease {
                    record,
                    keys: BTreeSet::new(),
                },
            );
        }
        if !table.leases.is_empty() {
            // One record at a time straight from the index (not a Range, which would hold every
            // live value at once): memory stays bounded whatever the store's size.
            let everything = crate::KeyRange::new(&[0], &[0]);
            for (_, state) in kv.index.range(&everything, kv.current_revision) {
                let record = kv.record(reader, state.modified)?;
                table.attach(record.key, record.lease);
            }
        }
        Ok(table)
    }

    /// The granted leases, by id.
    pub fn records(&self) -> impl Iterator<Item = (i64, LeaseRecord)> + '_ {
        self.leases.iter().map(|(id, lease)| (*id, lease.record))
    }

    /// One lease's record.
    pub fn get(&self, lease_id: i64) -> Option<LeaseRecord> {
        self.leases.get(&lease_id).map(|lease| lease.record)
    }

    /// The keys attached to a lease, in key order.
    pub fn keys(&self, lease_id: i64) -> Vec<Vec<u8>> {
        self.leases
            .get(&lease_id)
            .map(|lease| lease.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drains the changes made since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.changes)
    }

    /// Keeps attachments in step with the store, in event order: any change detaches the key
    /// from its lease, and a put attaches it to the put's lease.
    fn track(&mut self, events: &[mvccpb::Event]) {
        for event in events {
            let Some(kv) = &event.kv else { continue };
            self.detach(&kv.key);
            if event.r#type == mvccpb::event::EventType::Put as i32 {
                self.attach(kv.key.clone(), kv.lease);
            }
        }
    }

    fn attach(&mut self, key: Vec<u8>, lease_id: i64) {
        if let Some(lease) = self.leases.get_mut(&lease_id) {
            lease.keys.insert(key.clone());
            self.attached.insert(key, lease_id);
        }
    }

    fn detach(&mut self, key: &[u8]) {
        if let Some(lease_id) = self.attached.remove(key) {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                lease.keys.remove(key);
            }
        }
    }

    fn grant(
        &mut self,
        request: &pb::LeaseGrantRequest,
        generation: u64,
    ) -> Result<Applied, MvccError> {
        if request.id <= 0 {
            // The proposing member picks the id; zero or negative never reaches the log.
            return Err(MvccError::Storage(format!(
                "lease grant with id {} in the log",
                request.id
            )));
        }
        if request.ttl > MAX_LEASE_TTL {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&request.id) {
            return Err(MvccError::LeaseExists);
        }
        let record = LeaseRecord {
            ttl: request.ttl,
            generation,
        };
        self.leases.insert(
            request.id,
            Lease {
                record,
                keys: BTreeSet::new(),
            },
        );
        self.changes.push(LeaseChange::Set(request.id, record));
        Ok(Applied {
            response: WriteResponse::LeaseGrant(pb::LeaseGrantResponse {
                header: None,
                id: request.id,
                ttl: request.ttl,
                error: String::new(),
            }),
            events: Vec::new(),
        })
    }

    /// Deletes every attached key in one revision, then forgets the lease.
    fn revoke<R: RevisionReader + ?Sized>(
        &mut self,
        kv: &mut KvStore,
        reader: &R,
        lease_id: i64,
    ) -> Result<Vec<mvccpb::Event>, MvccError> {
        let keys = self.keys(lease_id);
        let (_, events) = kv.write(|txn| {
            for key in &keys {
                txn.delete_range(
                    reader,
                    &pb::DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    },
                )?;
            }
            Ok(())
        })?;
        if let Some(lease) = self.leases.remove(&lease_id) {
            for key in &lease.keys {
                self.attached.remove(key);
            }
        }
        self.changes.push(LeaseChange::Removed(lease_id));
        Ok(events)
    }

    fn renew(&mut self, lease_id: i64, generation: u64) -> pb::LeaseKeepAliveResponse {
        let Some(lease) = self.leases.get_mut(&lease_id) else {
            // etcd answers a keepalive for an unknown lease with TTL 0, not an error.
            return pb::LeaseKeepAliveResponse {
                header: None,
                id: lease_id,
                ttl: 0,
            };
        };
        lease.record.generation = generation;
        self.changes.push(LeaseChange::Set(lease_id, lease.record));
        pb::LeaseKeepAliveResponse {
            header: None,
            id: lease_id,
            ttl: lease.record.ttl,
        }
    }
}

/// Applies one committed write — a key-value write or a lease operation — to the store and the
/// lease table. `generation` is the Raft log index of the entry that carries it. Deterministic
/// and all-or-nothing, like [`KvStore::apply`].
pub fn apply<R: RevisionReader + ?Sized>(
    kv: &mut KvStore,
    leases: &mut LeaseTable,
    reader: &R,
    request: &WriteRequest,
    generation: u64,
) -> Result<Applied, MvccError> {
    match request {
        WriteRequest::Put(_)
        | WriteRequest::DeleteRange(_)
        | WriteRequest::Txn(_)
        | WriteRequest::Compact(_) => {
            let applied = kv.apply(reader, &*leases, request)?;
            leases.track(&applied.events);
            Ok(applied)
        }
        WriteRequest::LeaseGrant(grant) => leases.grant(grant, generation),
        WriteRequest::LeaseRevoke(revoke) => {
            if !leases.exists(revoke.id) {
                return Err(MvccError::LeaseNotFound);
            }
            let events = leases.revoke(kv, reader, revoke.id)?;
            Ok(Applied {
                response: WriteResponse::LeaseRevoke(pb::LeaseRevokeResponse {
                    header: header(kv.current_revision()),
                }),
                events,
            })
        }
        WriteRequest::LeaseRenew(renew) => Ok(Applied {
            response: WriteResponse::LeaseRenew(leases.renew(renew.id, generation)),
            events: Vec::new(),
        }),
        WriteRequest::LeaseExpire(expiry) => {
            let current = leases.get(expiry.id).map(|record| record.generation);
            if current != Some(expiry.generation) {
                // Renewed (or already gone) since the leader measured its deadline.
                return Ok(Applied {
                    response: WriteResponse::LeaseExpire { expired: false },
                    events: Vec::new(),
                });
            }
            let events = leases.revoke(kv, reader, expiry.id)?;
            Ok(Applied {
                response: WriteResponse::LeaseExpire { expired: true },
                events,
            })
        }
    }
}
