//! The watch hub: the member-wide index of synced watchers and the fan-out of applied changes.
//!
//! The state machine calls [`WatchHub::applied`] (as its [`ApplyListener`]) after every apply,
//! in order, under its write lock. The hub only matches and enqueues: it looks up the watchers of
//! each changed key (single-key watchers in a `HashMap` by key, range watchers apart), and pushes
//! one [`Delivery`] per matching watcher into its stream's bounded [`StreamInbox`]. It never
//! blocks on a stream and never reads storage.
//!
//! A watcher whose inbox is full is *lagged*: it leaves the index and a `Lagged` marker (which
//! ignores the bound, at most one per watcher) tells its stream to catch it up from storage from
//! the first revision it missed. The stream rejoins it under the hub lock only when it has
//! caught up to the hub's revision ([`HubIndex::insert`] inside [`WatchHub::with_index`]), so
//! no apply can slip in between: no gap, no duplicate.
//!
//! Markers the stream asks for (progress) are pushed into its own inbox with the hub revision
//! read under the same lock, so every event up to that revision is ahead of the marker.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use beacon_mvcc::KeyRange;
use beacon_proto::mvccpb::Event;
use beacon_storage::{AppliedChanges, ApplyListener};
use tokio::sync::Notify;

/// Applied batches one stream may have queued before its watchers are lagged.
pub const MAX_QUEUED_BATCHES: usize = 1024;
/// Bytes of applied batches (keys and values, counted per delivery) one stream may have queued
/// before its watchers are lagged: the bound on a slow stream's live memory.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// The events of one apply call, shared by every delivery.
#[derive(Debug)]
pub struct AppliedBatch {
    /// The store revision after the apply: every event up to it is in this or an earlier batch.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Approximate size (keys and values), for the inbox byte bound.
    pub bytes: usize,
}

impl AppliedBatch {
    pub fn new(revision: i64, events: Vec<Event>) -> Self {
        let bytes = events
            .iter()
            .map(|event| {
                let kv = event
                    .kv
                    .as_ref()
                    .map_or(0, |kv| kv.key.len() + kv.value.len());
                let prev = event
                    .prev_kv
                    .as_ref()
                    .map_or(0, |kv| kv.key.len() + kv.value.len());
                kv + prev + 64
            })
            .sum();
        Self {
            revision,
            events,
            bytes,
        }
    }
}

/// Why a stream was woken up; consumed in order.
#[derive(Debug)]
pub enum Delivery {
    /// New events that may concern the watcher in `slot` (the stream filters them).
    Events {
        slot: u32,
        generation: u32,
        batch: Arc<AppliedBatch>,
    },
    /// The watcher left the index: it received everything below `from_revision` through the
    /// inbox and must read the rest from storage.
    Lagged {
        slot: u32,
        generation: u32,
        from_revision: i64,
    },
    /// Every event up to `revision` is ahead of this marker (progress request answer point).
    Progress { revision: i64 },
    /// Same guarantee, for the periodic progress notification.
    Tick { revision: i64 },
}

/// A stream's bounded queue of deliveries, shared between the hub (producer) and the stream.
#[derive(Debug, Default)]
pub struct StreamInbox {
    state: Mutex<InboxState>,
    /// Woken when something was queued; a permit is kept if the stream is not waiting.
    pub notify: Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    items: VecDeque<Delivery>,
    batches: usize,
    bytes: usize,
}

impl StreamInbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic while holding it cannot leave the queue half-updated (push/pop are atomic).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next delivery, oldest first.
    pub fn pop(&self) -> Option<Delivery> {
        let mut state = self.lock();
        let item = state.items.pop_front()?;
        if let Delivery::Events { batch, .. } = &item {
            state.batches -= 1;
            state.bytes -= batch.bytes;
        }
        if state.items.is_empty() && state.items.capacity() > 64 {
            // Give back what a burst made it grow to: idle streams stay small.
            state.items.shrink_to(16);
        }
        Some(item)
    }

    /// Whether something is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    fn push_marker(&self, item: Delivery) {
        self.lock().items.push_back(item);
        self.notify.notify_one();
    }
}

/// A watcher as the index knows it: its stream, its slot there and the slot's generation (a
/// reused slot has a new generation, so stale deliveries are recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub stream: u32,
    pub slot: u32,
    pub generation: u32,
}

/// The watchers of one key. Most keys have one: kept inline, without a heap allocation
/// (memory per watch is a target: 100,000 watches must stay under 500 bytes each).
#[derive(Debug)]
enum KeyWatchers {
    One(Target),
    Many(Vec<Target>),
}

impl KeyWatchers {
    fn push(&mut self, target: Target) {
        match self {
            KeyWatchers::One(first) => *self = KeyWatchers::Many(vec![*first, target]),
            KeyWatchers::Many(targets) => targets.push(target),
        }
    }

    /// Removes `target`; true when no watcher is left.
    fn remove(&mut self, target: Target) -> bool {
        match self {
            KeyWatchers::One(only) => *only == target,
            KeyWatchers::Many(targets) => {
                if let Some(position) = targets.iter().position(|t| *t == target) {
                    targets.swap_remove(position);
                }
                targets.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = Target> + '_ {
        let targets: &[Target] = match self {
            KeyWatchers::One(only) => std::slice::from_ref(only),
            KeyWatchers::Many(targets) => targets,
        };
        targets.iter().copied()
    }

    fn len(&self) -> usize {
        match self {
            KeyWatchers::One(_) => 1,
            KeyWatchers::Many(targets) => targets.len(),
        }
    }
}

/// The member-wide watch index; see the module docs.
#[derive(Debug)]
pub struct WatchHub {
    state: Mutex<HubIndex>,
}

/// The index, locked: what [`WatchHub::with_index`] hands out.
#[derive(Debug)]
pub struct HubIndex {
    revision: i64,
    compact_revision: i64,
    streams: Vec<Option<Arc<StreamInbox>>>,
    free_streams: Vec<u32>,
    /// Single-key watchers by a hash of their key. The key itself is not stored here (the
    /// stream's watcher has it): a hash collision only causes a delivery the stream filters out
    /// (`Watcher::wants` checks the range), and saves a key copy per watched key.
    by_key: HashMap<u64, KeyWatchers>,
    key_hasher: RandomState,
    ranges: HashMap<Target, KeyRange>,
}

impl WatchHub {
    /// A hub at the state machine's current position (read before any apply can run).
    pub fn new(revision: i64, compact_revision: i64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HubIndex {
                revision,
                compact_revision,
                streams: Vec::new(),
                free_streams: Vec::new(),
                by_key: HashMap::new(),
                key_hasher: RandomState::new(),
                ranges: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubIndex> {
        // Index updates are single insert/remove calls; a panic cannot leave half of one.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the index locked: applies wait, so what `f` sees of the revision and does
    /// to the index is atomic with respect to deliveries.
    pub fn with_index<T>(&self, f: impl FnOnce(&mut HubIndex) -> T) -> T {
        f(&mut self.lock())
    }

    /// The revision of the last apply the hub has dispatched, and the compaction revision.
    pub fn revisions(&self) -> (i64, i64) {
        let index = self.lock();
        (index.revision, index.compact_revision)
    }

    /// A new stream's id and inbox.
    pub fn register_stream(&self) -> (u32, Arc<StreamInbox>) {
        let mut index = self.lock();
        let inbox = Arc::new(StreamInbox::default());
        let id = match index.free_streams.pop() {
            Some(id) => {
                index.streams[id as usize] = Some(inbox.clone());
                id
            }
            None => {
                index.streams.push(Some(inbox.clone()));
                u32::try_from(index.streams.len() - 1).expect("fewer than 2^32 watch streams")
            }
        };
        (id, inbox)
    }

    /// Removes a stream and its watchers (`watchers`: every watcher it has, synced or not).
    pub fn unregister_stream<'a>(
        &self,
        stream: u32,
        watchers: impl Iterator<Item = (Target, &'a KeyRange)>,
    ) {
        let mut index = self.lock();
        for (target, range) in watchers {
            index.remove(target, range);
        }
        if let Some(slot) = index.streams.get_mut(stream as usize) {
            *slot = None;
            index.free_streams.push(stream);
        }
    }

    /// Approximate count of synced watchers (tests and metrics).
    pub fn synced_watchers(&self) -> usize {
        let index = self.lock();
        index.by_key.values().map(KeyWatchers::len).sum::<usize>() + index.ranges.len()
    }
}

impl HubIndex {
    /// The revision of the last dispatched apply: every event up to it has been queued to every
    /// synced watcher it concerns, and is readable from storage.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Adds a synced watcher: it gets every event applied after [`HubIndex::revision`].
    pub fn insert(&mut self, target: Target, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => {
                let hash = self.key_hasher.hash_one(key);
                match self.by_key.get_mut(&hash) {
                    Some(watchers) => watchers.push(target),
                    None => {
                        self.by_key.insert(hash, KeyWatchers::One(target));
                    }
                }
            }
            _ => {
                self.ranges.insert(target, range.clone());
            }
        }
    }

    /// Removes a watcher if it is indexed (a lagged one already is not).
    pub fn remove(&mut self, target: Target, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => self.remove_single(self.key_hasher.hash_one(key), target),
            _ => {
                self.ranges.remove(&target);
            }
        }
    }

    fn remove_single(&mut self, hash: u64, target: Target) {
        if let Some(watchers) = self.by_key.get_mut(&hash) {
            if watchers.remove(target) {
                self.by_key.remove(&hash);
            }
        }
    }

    /// Queues a progress marker for `stream` at the current revision.
    pub fn push_progress(&self, stream: u32, tick: bool) {
        if let Some(Some(inbox)) = self.streams.get(stream as usize) {
            let revision = self.revision;
            inbox.push_marker(if tick {
                Delivery::Tick { revision }
            } else {
                Delivery::Progress { revision }
            });
        }
    }

    fn inbox(&self, stream: u32) -> Option<&Arc<StreamInbox>> {
        self.streams.get(stream as usize).and_then(Option::as_ref)
    }

    /// Every indexed watcher must catch up from storage from `from_revision` (a snapshot
    /// replaced the state: the events in between were never listed).
    fn lag_everyone(&mut self, from_revision: i64) {
        let targets: Vec<Target> = self
            .by_key
            .values()
            .flat_map(KeyWatchers::iter)
            .chain(self.ranges.keys().copied())
            .collect();
        self.by_key.clear();
        self.ranges.clear();
        for target in targets {
            if let Some(inbox) = self.inbox(target.stream) {
                inbox.push_marker(Delivery::Lagged {
                    slot: target.slot,
                    generation: target.generation,
                    from_revision,
                });
            }
        }
    }

    fn dispatch(&mut self, batch: Arc<AppliedBatch>, from_revision: i64) {
        // (target, the event key that matched it when it is a single-key watcher)
        let mut matched: Vec<(Target, Option<usize>)> = Vec::new();
        for (position, event) in batch.events.iter().enumerate() {
            let Some(key) = event.kv.as_ref().map(|kv| kv.key.as_slice()) else {
                continue;
            };
            if let Some(watchers) = self.by_key.get(&self.key_hasher.hash_one(key)) {
                matched.extend(watchers.iter().map(|target| (target, Some(position))));
            }
            matched.extend(
                self.ranges
                    .iter()
                    .filter(|(_, range)| range.contains(key))
                    .map(|(target, _)| (*target, None)),
            );
        }
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by_key(|(target, _)| *target);
        matched.dedup_by_key(|(target, _)| *target);

        let mut lagged = Vec::new();
        for group in matched.chunk_by(|a, b| a.0.stream == b.0.stream) {
            let Some(inbox) = self.inbox(group[0].0.stream) else {
                continue;
            };
            let mut queue = inbox.lock();
            for &(target, key_position) in group {
                let full = queue.batches >= MAX_QUEUED_BATCHES
                    || (queue.batches > 0 && queue.bytes + batch.bytes > MAX_QUEUED_BYTES);
                if full {
                    queue.items.push_back(Delivery::Lagged {
                        slot: target.slot,
                        generation: target.generation,
                        from_revision,
                    });
                    lagged.push((target, key_position));
                } else {
                    queue.batches += 1;
                    queue.bytes += batch.bytes;
                    queue.items.push_back(Delivery::Events {
                        slot: target.slot,
                        generation: target.generation,
                        batch: batch.clone(),
                    });
                }
            }
            drop(queue);
            inbox.notify.notify_one();
        }
        for (target, key_position) in lagged {
            match key_position {
                Some(position) => {
                    let key = batch.events[position]
                        .kv
                        .as_ref()
                        .map(|kv| kv.key.as_slice())
                        .unwrap_or_default();
                    self.remove_single(self.key_hasher.hash_one(key), target);
                }
                None => {
                    self.ranges.remove(&target);
                }
            }
        }
    }
}

impl ApplyListener for WatchHub {
    /// Matches and enqueues only: called under the state machine's write lock.
    fn applied(&self, changes: AppliedChanges) {
        let mut index = self.lock();
        let previous = index.revision;
        index.revision = changes.revision;
        index.compact_revision = changes.compact_revision;
        if changes.reset {
            index.lag_everyone(previous + 1);
            return;
        }
        if changes.events.is_empty() {
            return;
        }
        let batch = Arc::new(AppliedBatch::new(changes.revision, changes.events));
        index.dispatch(batch, previous + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_proto::mvccpb::KeyValue;

    fn put(key: &str, revision: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: revision,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn apply(hub: &WatchHub, revision: i64, events: Vec<Event>) {
        hub.applied(AppliedChanges {
            revision,
            compact_revision: 0,
            events,
            ..Default::default()
        });
    }

    fn drain(inbox: &StreamInbox) -> Vec<Delivery> {
        std::iter::from_fn(|| inbox.pop()).collect()
    }

    fn target(stream: u32, slot: u32) -> Target {
        Target {
            stream,
            slot,
            generation: 0,
        }
    }

    #[test]
    fn single_key_and_range_watchers_match_once_per_batch() {
        let hub = WatchHub::new(1, 0);
        let (stream, inbox) = hub.register_stream();
        let single = KeyRange::new(b"a", b"");
        let prefix = KeyRange::new(b"a", b"b");
        hub.with_index(|index| {
            index.insert(target(stream, 0), &single);
            index.insert(target(stream, 1), &prefix);
        });
        // One txn touching a, a1 and c: the single-key watcher and the prefix watcher each get
        // the batch once; nobody gets anything for c alone.
        apply(&hub, 2, vec![put("a", 2), put("a1", 2), put("c", 2)]);
        apply(&hub, 3, vec![put("c", 3)]);
        let slots: Vec<u32> = drain(&inbox)
            .into_iter()
            .map(|delivery| match delivery {
                Delivery::Events { slot, batch, .. } => {
                    assert_eq!(batch.revision, 2);
                    slot
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(slots, vec![0, 1]);
    }

    #[test]
    fn a_full_inbox_lags_the_watcher_once_and_unindexes_it() {
        let hub = WatchHub::new(0, 0);
        let (stream, inbox) = hub.register_stream();
        let range = KeyRange::new(b"k", b"");
        hub.with_index(|index| index.insert(target(stream, 3), &range));
        let total = MAX_QUEUED_BATCHES as i64 + 10;
        for revision in 1..=total {
            apply(&hub, revision, vec![put("k", revision)]);
        }
        let deliveries = drain(&inbox);
        assert_eq!(deliveries.len(), MAX_QUEUED_BATCHES + 1);
        match deliveries.last() {
            Some(Delivery::Lagged { from_revision, .. }) => {
                assert_eq!(*from_revision, MAX_QUEUED_BATCHES as i64 + 1)
            }
            other => panic!("expected a lag marker, got {other:?}"),
        }
        assert_eq!(hub.synced_watchers(), 0);
    }

    #[test]
    fn a_snapshot_reset_lags_every_watcher_from_the_next_revision() {
        let hub = WatchHub::new(5, 0);
        let (stream, inbox) = hub.register_stream();
        hub.with_index(|index| {
            index.insert(target(stream, 0), &KeyRange::new(b"a", b""));
            index.insert(target(stream, 1), &KeyRange::new(b"a", b"\0"));
        });
        hub.applied(AppliedChanges {
            revision: 50,
            compact_revision: 10,
            events: Vec::new(),
            reset: true,
            lease_changes: Vec::new(),
        });
        let lagged = drain(&inbox)
            .into_iter()
            .filter(|d| {
                matches!(
                    d,
                    Delivery::Lagged {
                        from_revision: 6,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(lagged, 2);
        assert_eq!(hub.revisions(), (50, 10));
        assert_eq!(hub.synced_watchers(), 0);
    }

    #[test]
    fn progress_markers_follow_earlier_events() {
        let hub = WatchHub::new(0, 0);
        let (stream, inbox) = hub.register_stream();
        hub.with_index(|index| index.insert(target(stream, 0), &KeyRange::new(b"a", b"")));
        apply(&hub, 1, vec![put("a", 1)]);
        hub.with_index(|index| index.push_progress(stream, false));
        let deliveries = drain(&inbox);
        assert!(matches!(deliveries[0], Delivery::Events { .. }));
        assert!(matches!(deliveries[1], Delivery::Progress { revision: 1 }));
    }

    #[test]
    fn unregistering_removes_watchers_and_reuses_the_id() {
        let hub = WatchHub::new(0, 0);
        let (stream, _inbox) = hub.register_stream();
        let range = KeyRange::new(b"a", b"");
        hub.with_index(|index| index.insert(target(stream, 0), &range));
        hub.unregister_stream(stream, [(target(stream, 0), &range)].into_iter());
        assert_eq!(hub.synced_watchers(), 0);
        let (again, _) = hub.register_stream();
        assert_eq!(again, stream);
    }
}
