//! One `Watch` gRPC stream: its watchers, the requests that create and cancel them, and the
//! responses it sends, produced one at a time as the client reads them.
//!
//! The stream is a pull loop ([`WatchStream::next_response`]): it is polled only when the
//! transport can take another response, so a client that stops reading stops this loop, its
//! [`StreamInbox`] fills, and the hub lags its watchers instead of blocking anyone. A lagged
//! (or newly created past-revision) watcher is *unsynced*: the loop reads history in chunks
//! ([`KvReader::history`]) for all its unsynced watchers at once, sends each its events, and
//! rejoins it to the hub's index under the hub lock once it reached the hub's revision.
//!
//! Per watcher the stream keeps one small [`Watcher`] in a slab, plus its id in a map.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use beacon_mvcc::{KeyRange, MvccError};
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use beacon_proto::mvccpb::Event;
use beacon_storage::KvReader;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tonic::Status;

use crate::observability::{WATCHERS, WATCH_STREAMS};
use crate::watch_hub::{Delivery, StreamInbox, Target, WatchHub};

/// Events read from storage per catch-up step: bounds a lagging stream's memory and how long
/// one read holds the state machine's read lock.
pub const CATCH_UP_CHUNK: usize = 128;

/// The requests of one stream: a client's gRPC stream, or requests made inside the member (the
/// catalog's service watch).
pub type WatchRequests = std::pin::Pin<Box<dyn Stream<Item = Result<WatchRequest, Status>> + Send>>;

/// The watch id etcd uses for responses that concern the whole stream (progress requests).
const STREAM_WATCH_ID: i64 = -1;

const NO_PUT: u8 = 1;
const NO_DELETE: u8 = 1 << 1;
const PREV_KV: u8 = 1 << 2;
const PROGRESS_NOTIFY: u8 = 1 << 3;
const FRAGMENT: u8 = 1 << 4;
/// In the hub's index (live delivery); otherwise catching up from storage.
const SYNCED: u8 = 1 << 5;
/// Sent events since the last progress tick (etcd skips the notification then).
const SENT_SINCE_TICK: u8 = 1 << 6;

/// One watch on this stream.
struct Watcher {
    watch_id: i64,
    range: KeyRange,
    /// Every matching event below it was sent (or precedes the watch's start revision).
    next_revision: i64,
    generation: u32,
    flags: u8,
}

impl Watcher {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the watch wants `event` (range, start revision, filters).
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = event.kv.as_ref() else {
            return false;
        };
        let filtered = if event.r#type == 1 {
            self.has(NO_DELETE)
        } else {
            self.has(NO_PUT)
        };
        !filtered && kv.mod_revision >= self.next_revision && self.range.contains(&kv.key)
    }

    /// The events of `events` this watch wants, with prev_kv only when asked.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|event| self.wants(event))
            .map(|event| {
                let mut event = event.clone();
                if !self.has(PREV_KV) {
                    event.prev_kv = None;
                }
                event
            })
            .collect()
    }
}

/// Builds response headers (cluster, member, term) for a revision.
pub type HeaderSource = Arc<dyn Fn(i64) -> Option<ResponseHeader> + Send + Sync>;

/// Settings every stream of a member shares.
#[derive(Clone)]
pub struct StreamSettings {
    pub header: HeaderSource,
    /// Responses above this size are split when the watch asked for fragments.
    pub max_response_bytes: usize,
    pub progress_notify_interval: Duration,
}

/// A history chunk being handed out to the unsynced watchers that need it.
struct CatchUp {
    events: Arc<Vec<Event>>,
    /// Every event up to this revision is in `events` (or matches nobody).
    covered: i64,
    pending: Vec<(u32, u32)>,
}

/// One gRPC watch stream's state; see the module docs.
pub struct WatchStream {
    hub: Arc<WatchHub>,
    reader: KvReader,
    settings: StreamSettings,
    stream_id: u32,
    inbox: Arc<StreamInbox>,
    watchers: Vec<Option<Watcher>>,
    free_slots: Vec<u32>,
    ids: HashMap<i64, u32>,
    next_auto_id: i64,
    next_generation: u32,
    unsynced: usize,
    progress_requested: bool,
    outbox: VecDeque<WatchResponse>,
    catch_up: Option<CatchUp>,
    requests: Option<WatchRequests>,
    ticker: Option<Interval>,
    leader_lost: Option<watch::Receiver<bool>>,
    finished: bool,
}

impl WatchStream {
    /// A stream reading `requests`; `leader_lost` (for `hasleader` streams) ends it with etcd's
    /// "no leader" once it turns true.
    pub fn new(
        hub: Arc<WatchHub>,
        reader: KvReader,
        settings: StreamSettings,
        requests: WatchRequests,
        leader_lost: Option<watch::Receiver<bool>>,
    ) -> Self {
        let (stream_id, inbox) = hub.register_stream();
        metrics::gauge!(WATCH_STREAMS).increment(1.0);
        Self {
            hub,
            reader,
            settings,
            stream_id,
            inbox,
            watchers: Vec::new(),
            free_slots: Vec::new(),
            ids: HashMap::new(),
            next_auto_id: 0,
            next_generation: 0,
            unsynced: 0,
            progress_requested: false,
            outbox: VecDeque::new(),
            catch_up: None,
            requests: Some(requests),
            ticker: None,
            leader_lost,
            finished: false,
        }
    }

    /// The next response to send; `None` ends the stream. Responses for one watch come in
    /// revision order, each revision whole, none twice.
    pub async fn next_response(&mut self) -> Option<Result<WatchResponse, Status>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(response) = self.outbox.pop_front() {
                return Some(Ok(response));
            }
            if self.leader_lost.as_ref().is_some_and(|lost| *lost.borrow()) {
                self.finished = true;
                return Some(Err(Status::unavailable("etcdserver: no leader")));
            }
            // Requests first when they are ready, so creates and cancels are never starved by
            // a busy stream (reading one is cancel-safe).
            if let Some(requests) = self.requests.as_mut() {
                if let Some(message) = requests.next().now_or_never() {
                    let message = message.transpose();
                    match self.on_message(message) {
                        Ok(()) => continue,
                        Err(status) => return self.fail(status),
                    }
                }
            }
            if let Some(delivery) = self.inbox.pop() {
                self.on_delivery(delivery);
                continue;
            }
            if self.catch_up.is_some() {
                self.next_catch_up_response();
                continue;
            }
            if self.unsynced > 0 {
                if let Err(status) = self.read_history().await {
                    return self.fail(status);
                }
                continue;
            }
            if let Err(status) = self.wait().await {
                return self.fail(status);
            }
        }
    }

    fn fail(&mut self, status: Status) -> Option<Result<WatchResponse, Status>> {
        self.finished = true;
        if status.code() == tonic::Code::Cancelled {
            return None;
        }
        Some(Err(status))
    }

    /// Waits for a request, a delivery, a progress tick or the loss of the leader.
    async fn wait(&mut self) -> Result<(), Status> {
        let requests = self.requests.as_mut();
        let request = async {
            match requests {
                Some(requests) => Some(requests.next().await.transpose()),
                None => std::future::pending().await,
            }
        };
        let ticker = self.ticker.as_mut();
        let tick = async {
            match ticker {
                Some(ticker) => ticker.tick().await,
                None => std::future::pending().await,
            }
        };
        let leader_lost = self.leader_lost.as_mut();
        let lost = async {
            match leader_lost {
                Some(receiver) => {
                    if receiver.wait_for(|lost| *lost).await.is_err() {
                        // The monitor stopped: the member is shutting down.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let inbox = self.inbox.clone();
        tokio::select! {
            message = request => {
                if let Some(message) = message {
                    self.on_message(message)?;
                }
            }
            _ = inbox.notify.notified() => {}
            _ = tick => {
                let stream = self.stream_id;
                self.hub.with_index(|index| index.push_progress(stream, true));
            }
            _ = lost => {}
        }
        Ok(())
    }

    fn on_message(&mut self, message: Result<Option<WatchRequest>, Status>) -> Result<(), Status> {
        match message {
            // The client closed its side: keep delivering until it goes away (as etcd does).
            Ok(None) => {
                self.requests = None;
                Ok(())
            }
            Ok(Some(request)) => {
                match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => self.create(create),
                    Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id),
                    Some(RequestUnion::ProgressRequest(_)) => {
                        self.progress_requested = true;
                        let stream = self.stream_id;
                        self.hub
                            .with_index(|index| index.push_progress(stream, false));
                    }
                    None => {}
                }
                Ok(())
            }
            Err(status) => Err(status),
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        (self.settings.header)(revision)
    }

    fn create(&mut self, request: WatchCreateRequest) {
        let range = KeyRange::new(&request.key, &request.range_end);
        let refusal = if matches!(&range, KeyRange::Between(start, end) if end <= start) {
            Some("mvcc: watcher range is empty")
        } else if request.watch_id != 0 && self.ids.contains_key(&request.watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else {
            None
        };
        if let Some(reason) = refusal {
            let (revision, _) = self.hub.revisions();
            self.outbox.push_back(WatchResponse {
                header: self.header(revision),
                watch_id: STREAM_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            });
            return;
        }
        let watch_id = if request.watch_id != 0 {
            request.watch_id
        } else {
            // etcd's automatic ids: the lowest unused from a counter that only moves forward.
            while self.ids.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        let mut flags = 0;
        for filter in &request.filters {
            match filter {
                0 => flags |= NO_PUT,
                1 => flags |= NO_DELETE,
                _ => {}
            }
        }
        for (wanted, flag) in [
            (request.prev_kv, PREV_KV),
            (request.progress_notify, PROGRESS_NOTIFY),
            (request.fragment, FRAGMENT),
        ] {
            if wanted {
                flags |= flag;
            }
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.watchers.push(None);
                u32::try_from(self.watchers.len() - 1).expect("fewer than 2^32 watches a stream")
            }
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let target = Target {
            stream: self.stream_id,
            slot,
            generation,
        };
        // Under the hub lock: the revision the created response reports and the point from
        // which live events flow are the same.
        let (revision, next_revision, synced) = self.hub.with_index(|index| {
            let revision = index.revision();
            let next_revision = if request.start_revision > 0 {
                request.start_revision
            } else {
                revision + 1
            };
            // A future start revision waits in the index; older events are filtered out.
            let synced = next_revision > revision;
            if synced {
                index.insert(target, &range);
            }
            (revision, next_revision, synced)
        });
        if synced {
            flags |= SYNCED;
        } else {
            self.unsynced += 1;
        }
        self.watchers[slot as usize] = Some(Watcher {
            watch_id,
            range,
            next_revision,
            generation,
            flags,
        });
        self.ids.insert(watch_id, slot);
        metrics::gauge!(WATCHERS).increment(1.0);
        if flags & PROGRESS_NOTIFY != 0 && self.ticker.is_none() {
            let period = self.settings.progress_notify_interval;
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.ticker = Some(ticker);
        }
        self.outbox.push_back(WatchResponse {
            header: self.header(revision),
            watch_id,
            created: true,
            ..Default::default()
        });
    }

    /// Removes a watcher; `true` when it existed.
    fn remove(&mut self, slot: u32) -> Option<Watcher> {
        let watcher = self.watchers.get_mut(slot as usize)?.take()?;
        let target = Target {
            stream: self.stream_id,
            slot,
            generation: watcher.generation,
        };
        if watcher.has(SYNCED) {
            self.hub
                .with_index(|index| index.remove(target, &watcher.range));
        } else {
            self.unsynced -= 1;
        }
        self.ids.remove(&watcher.watch_id);
        self.free_slots.push(slot);
        metrics::gauge!(WATCHERS).decrement(1.0);
        if self.unsynced == 0 {
            self.on_all_synced();
        }
        Some(watcher)
    }

    fn cancel(&mut self, watch_id: i64) {
        // etcd answers only cancels of watches that exist.
        let Some(&slot) = self.ids.get(&watch_id) else {
            return;
        };
        if self.remove(slot).is_some() {
            let (revision, _) = self.hub.revisions();
            self.outbox.push_back(WatchResponse {
                header: self.header(revision),
                watch_id,
                canceled: true,
                ..Default::default()
            });
        }
    }

    fn watcher_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Watcher> {
        self.watchers
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|watcher| watcher.generation == generation)
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Events {
                slot,
                generation,
                batch,
            } => {
                let Some(watcher) = self.watcher_mut(slot, generation) else {
                    return;
                };
                if !watcher.has(SYNCED) {
                    return;
                }
                let events = watcher.select(&batch.events);
                watcher.next_revision = watcher.next_revision.max(batch.revision + 1);
                if events.is_empty() {
                    return;
                }
                watcher.flags |= SENT_SINCE_TICK;
                let (watch_id, fragment) = (watcher.watch_id, watcher.has(FRAGMENT));
                self.send_events(watch_id, batch.revision, events, fragment);
            }
            Delivery::Lagged {
                slot,
                generation,
                from_revision,
            } => {
                let Some(watcher) = self.watcher_mut(slot, generation) else {
                    return;
                };
                if watcher.has(SYNCED) {
                    tracing::debug!(
                        watch_id = watcher.watch_id,
                        from_revision,
                        "watch lagged; catching up from storage"
                    );
                    watcher.flags &= !SYNCED;
                    watcher.next_revision = watcher.next_revision.max(from_revision);
                    self.unsynced += 1;
                }
            }
            Delivery::Progress { revision } => {
                if self.progress_requested && self.unsynced == 0 {
                    self.progress_requested = false;
                    self.outbox.push_back(WatchResponse {
                        header: self.header(revision),
                        watch_id: STREAM_WATCH_ID,
                        ..Default::default()
                    });
                }
                // Otherwise it is answered when the last unsynced watcher rejoins.
            }
            Delivery::Tick { revision } => {
                let mut notify = Vec::new();
                for watcher in self.watchers.iter_mut().flatten() {
                    if watcher.has(PROGRESS_NOTIFY)
                        && watcher.has(SYNCED)
                        && !watcher.has(SENT_SINCE_TICK)
                    {
                        notify.push(watcher.watch_id);
                    }
                    watcher.flags &= !SENT_SINCE_TICK;
                }
                for watch_id in notify {
                    self.outbox.push_back(WatchResponse {
                        header: self.header(revision),
                        watch_id,
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// Queues an events response, split into fragments when the watch asked and it is large.
    fn send_events(&mut self, watch_id: i64, revision: i64, events: Vec<Event>, fragment: bool) {
        let response = WatchResponse {
            header: self.header(revision),
            watch_id,
            events,
            ..Default::default()
        };
        let limit = self.settings.max_response_bytes;
        if !fragment || response.events.len() < 2 || response.encoded_len() < limit {
            self.outbox.push_back(response);
            return;
        }
        // etcd's rule: add events to a fragment until it reaches the limit (at least one
        // event each); all but the last carry fragment=true.
        let base = WatchResponse {
            events: Vec::new(),
            ..response.clone()
        };
        let base_len = base.encoded_len();
        let mut current = base.clone();
        let mut current_len = base_len;
        for event in response.events {
            let event_len = event.encoded_len() + 4;
            if !current.events.is_empty() && current_len + event_len >= limit {
                let mut full = std::mem::replace(&mut current, base.clone());
                full.fragment = true;
                self.outbox.push_back(full);
                current_len = base_len;
            }
            current_len += event_len;
            current.events.push(event);
        }
        self.outbox.push_back(current);
    }

    /// Reads the next history chunk for the unsynced watchers (from the lowest revision one of
    /// them needs up to the hub's revision), or rejoins those already caught up.
    async fn read_history(&mut self) -> Result<(), Status> {
        let (to, _) = self.hub.revisions();
        let from = self
            .watchers
            .iter()
            .flatten()
            .filter(|watcher| !watcher.has(SYNCED))
            .map(|watcher| watcher.next_revision)
            .min()
            .unwrap_or(to + 1);
        if from > to {
            self.rejoin();
            return Ok(());
        }
        let reader = self.reader.clone();
        let read = tokio::task::spawn_blocking(move || {
            let events = reader.history(from, to, CATCH_UP_CHUNK);
            (events, reader.compact_revision())
        })
        .await
        .map_err(|error| Status::internal(format!("etcdserver: history read failed: {error}")))?;
        match read {
            (Ok(events), _) => {
                let covered = if events.len() >= CATCH_UP_CHUNK {
                    events
                        .last()
                        .and_then(|event| event.kv.as_ref())
                        .map_or(to, |kv| kv.mod_revision)
                } else {
                    to
                };
                let pending = self
                    .watchers
                    .iter()
                    .flatten()
                    .filter(|w| !w.has(SYNCED) && w.next_revision <= covered)
                    .map(|w| (self.slot_of(w.watch_id), w.generation))
                    .collect();
                self.catch_up = Some(CatchUp {
                    events: Arc::new(events),
                    covered,
                    pending,
                });
                Ok(())
            }
            (Err(MvccError::Compacted), compact_revision) => {
                self.cancel_compacted(compact_revision);
                Ok(())
            }
            (Err(error), _) => {
                tracing::error!(%error, "reading watch history failed");
                Err(Status::internal(format!("etcdserver: {error}")))
            }
        }
    }

    fn slot_of(&self, watch_id: i64) -> u32 {
        *self
            .ids
            .get(&watch_id)
            .expect("every watcher's id is in the id map")
    }

    /// Cancels every unsynced watcher that needs a compacted revision, as etcd does: a
    /// response with canceled=true and the compaction revision (header revision 0, as etcd).
    fn cancel_compacted(&mut self, compact_revision: i64) {
        let doomed: Vec<(u32, i64)> = self
            .watchers
            .iter()
            .flatten()
            .filter(|w| !w.has(SYNCED) && w.next_revision < compact_revision)
            .map(|w| (self.slot_of(w.watch_id), w.watch_id))
            .collect();
        for (slot, watch_id) in doomed {
            self.remove(slot);
            self.outbox.push_back(WatchResponse {
                header: self.header(0),
                watch_id,
                canceled: true,
                compact_revision,
                ..Default::default()
            });
        }
    }

    /// Hands the current chunk to the next pending watcher.
    fn next_catch_up_response(&mut self) {
        let Some(catch_up) = self.catch_up.as_mut() else {
            return;
        };
        let Some((slot, generation)) = catch_up.pending.pop() else {
            self.catch_up = None;
            self.rejoin();
            return;
        };
        let (events, covered) = (catch_up.events.clone(), catch_up.covered);
        let Some(watcher) = self.watcher_mut(slot, generation) else {
            return;
        };
        let selected = watcher.select(&events);
        watcher.next_revision = watcher.next_revision.max(covered + 1);
        if selected.is_empty() {
            return;
        }
        watcher.flags |= SENT_SINCE_TICK;
        let (watch_id, fragment) = (watcher.watch_id, watcher.has(FRAGMENT));
        self.send_events(watch_id, covered, selected, fragment);
    }

    /// Moves every unsynced watcher that reached the hub's revision back into the index, under
    /// the hub lock so no apply falls between its last history event and its first live one.
    fn rejoin(&mut self) {
        let stream = self.stream_id;
        let watchers = &mut self.watchers;
        let mut joined = 0;
        self.hub.with_index(|index| {
            let revision = index.revision();
            for (slot, watcher) in watchers.iter_mut().enumerate() {
                let Some(watcher) = watcher.as_mut() else {
                    continue;
                };
                if watcher.has(SYNCED) || watcher.next_revision <= revision {
                    continue;
                }
                let target = Target {
                    stream,
                    slot: u32::try_from(slot).expect("slots fit u32"),
                    generation: watcher.generation,
                };
                index.insert(target, &watcher.range);
                watcher.flags |= SYNCED;
                joined += 1;
            }
        });
        self.unsynced -= joined;
        if joined > 0 && self.unsynced == 0 {
            self.on_all_synced();
        }
    }

    fn on_all_synced(&self) {
        if self.progress_requested {
            let stream = self.stream_id;
            self.hub
                .with_index(|index| index.push_progress(stream, false));
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let stream = self.stream_id;
        metrics::gauge!(WATCH_STREAMS).decrement(1.0);
        metrics::gauge!(WATCHERS).decrement(self.ids.len() as f64);
        let watchers = self.watchers.iter().enumerate().filter_map(|(slot, w)| {
            w.as_ref().map(|w| {
                (
                    Target {
                        stream,
                        slot: slot as u32,
                        generation: w.generation,
                    },
                    &w.range,
                )
            })
        });
        self.hub.unregister_stream(stream, watchers);
    }
}
