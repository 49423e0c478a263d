//! [`CatalogView`]: this member's decoded copy of the catalog — every instance, every service's
//! settings and the checker set — kept in step with the applied state by an apply listener.
//!
//! The health checker schedules probes from it and DNS answers from it, without ranging over
//! RocksDB for every decision. It is exactly the member's applied state (same revision), so a
//! follower's view can lag the leader by the replication delay, like a serializable read. Each
//! change is also announced on a channel as the key that changed, so a consumer updates what it
//! derived from one instance instead of rescanning the catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use beacon_catalog::{
    decode_checker_set, decode_instance, decode_service_settings, parse_instance_key,
    parse_service_settings_key, CheckerSet, CHECKERS_KEY, RESERVED_PREFIX,
};
use beacon_mvcc::pb;
use beacon_proto::beacon::v1::{Instance, ServiceSettings};
use beacon_proto::mvccpb::{event::EventType, KeyValue};
use beacon_storage::{AppliedChanges, ApplyListener, KvReader};
use tokio::sync::mpsc;

/// What changed in the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewChange {
    /// An instance was registered, changed or removed.
    Instance { service: String, id: String },
    /// A service's settings changed.
    Settings { service: String },
    /// The checker set changed.
    Checkers,
    /// Everything may have changed (a snapshot was installed): re-read the whole view.
    Reset,
}

/// The decoded catalog at one revision.
#[derive(Debug, Default)]
pub struct ViewState {
    /// The store revision the view reflects.
    pub revision: i64,
    /// Every instance by (service, id), with its lease, revisions and derived health.
    pub instances: BTreeMap<(String, String), Instance>,
    /// Settings of the services that have any.
    pub settings: HashMap<String, ServiceSettings>,
    /// The members that run health checks, as the leader last committed them.
    pub checkers: Option<CheckerSet>,
}

impl ViewState {
    /// The instances of one service, in id order.
    pub fn service<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        let start = (service.to_string(), String::new());
        self.instances
            .range(start..)
            .take_while(move |((name, _), _)| name == service)
            .map(|(_, instance)| instance)
    }

    fn load(&mut self, kv: &KeyValue) {
        if let Some((service, id)) = parse_instance_key(&kv.key) {
            match decode_instance(kv) {
                Ok(instance) => {
                    self.instances.insert((service, id), instance);
                }
                Err(error) => tracing::warn!(%error, "undecodable catalog record ignored"),
            }
        } else if let Some(service) = parse_service_settings_key(&kv.key) {
            match decode_service_settings(kv) {
                Ok(settings) => {
                    self.settings.insert(service, settings);
                }
                Err(error) => tracing::warn!(%error, "undecodable service settings ignored"),
            }
        } else if kv.key == CHECKERS_KEY.as_bytes() {
            match decode_checker_set(&kv.value) {
                Ok(checkers) => self.checkers = Some(checkers),
                Err(error) => tracing::warn!(%error, "undecodable checker set ignored"),
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some((service, id)) = parse_instance_key(key) {
            self.instances.remove(&(service, id));
        } else if let Some(service) = parse_service_settings_key(key) {
            self.settings.remove(&service);
        } else if key == CHECKERS_KEY.as_bytes() {
            self.checkers = None;
        }
    }
}

fn change_of(key: &[u8]) -> Option<ViewChange> {
    if let Some((service, id)) = parse_instance_key(key) {
        Some(ViewChange::Instance { service, id })
    } else if let Some(service) = parse_service_settings_key(key) {
        Some(ViewChange::Settings { service })
    } else if key == CHECKERS_KEY.as_bytes() {
        Some(ViewChange::Checkers)
    } else {
        None
    }
}

/// This member's decoded catalog; see the module docs.
pub struct CatalogView {
    state: RwLock<ViewState>,
    /// A snapshot replaced the state: the view reloads from the reader on next use (the apply
    /// listener must not read the state it is told about).
    stale: AtomicBool,
    /// Counts applies, so a reload can tell whether one slipped in while it read.
    applies: AtomicU64,
    reader: KvReader,
    subscribers: RwLock<Vec<mpsc::UnboundedSender<ViewChange>>>,
}

impl CatalogView {
    /// A view loaded from the applied state in `reader`.
    pub fn new(reader: KvReader) -> Arc<Self> {
        let view = Arc::new(CatalogView {
            state: RwLock::new(ViewState::default()),
            stale: AtomicBool::new(true),
            applies: AtomicU64::new(0),
            reader,
            subscribers: RwLock::new(Vec::new()),
        });
        view.reload_if_stale();
        view
    }

    fn write(&self) -> RwLockWriteGuard<'_, ViewState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read lock on the view (reloaded first if a snapshot made it stale). Hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, ViewState> {
        self.reload_if_stale();
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes from now on, in apply order. A receiver that falls behind only costs memory.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ViewChange> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(sender);
        receiver
    }

    fn publish(&self, changes: impl IntoIterator<Item = ViewChange>) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for change in changes {
            subscribers.retain(|subscriber| subscriber.send(change.clone()).is_ok());
        }
    }

    fn reload_if_stale(&self) {
        if !self.stale.swap(false, Ordering::AcqRel) {
            return;
        }
        let prefix = RESERVED_PREFIX.as_bytes();
        let range_end = crate::catalog_service::prefix_end(prefix);
        // The range cannot be read under the view's lock (an apply holds the state machine's
        // lock while it waits for ours), so read, then install only if no apply came between.
        loop {
            let applies = self.applies.load(Ordering::Acquire);
            let response = self.reader.range(&pb::RangeRequest {
                key: prefix.to_vec(),
                range_end: range_end.clone(),
                ..Default::default()
            });
            let mut fresh = ViewState::default();
            match response {
                Ok(response) => {
                    fresh.revision = response.header.map(|h| h.revision).unwrap_or_default();
                    for kv in &response.kvs {
                        fresh.load(kv);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot load the catalog view; retrying on next use");
                    self.stale.store(true, Ordering::Release);
                    return;
                }
            }
            let mut state = self.write();
            if self.applies.load(Ordering::Acquire) == applies {
                *state = fresh;
                break;
            }
        }
        self.publish([ViewChange::Reset]);
    }
}

impl ApplyListener for CatalogView {
    fn applied(&self, changes: AppliedChanges) {
        if changes.reset {
            self.applies.fetch_add(1, Ordering::AcqRel);
            self.stale.store(true, Ordering::Release);
            self.publish([ViewChange::Reset]);
            return;
        }
        let prefix = RESERVED_PREFIX.as_bytes();
        let mut published = Vec::new();
        {
            let mut state = self.write();
            self.applies.fetch_add(1, Ordering::AcqRel);
            state.revision = changes.revision;
            for event in &changes.events {
                let Some(kv) = &event.kv else { continue };
                if !kv.key.starts_with(prefix) {
                    continue;
                }
                if event.r#type() == EventType::Delete {
                    state.remove(&kv.key);
                } else {
                    state.load(kv);
                }
                published.extend(change_of(&kv.key));
            }
        }
        if !published.is_empty() {
            self.publish(published);
        }
    }
}
