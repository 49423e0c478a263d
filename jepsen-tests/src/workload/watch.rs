//! The watch workload: writers change keys under `jepsen/w/` (puts of unique values, deletes,
//! unconditional multi-key txns of puts and deletes) through the ordinary client loop; watchers
//! (background tasks, one stream with one watch at a time) start at random recent revisions on
//! random nodes, some with `prev_kv`, some with a NOPUT or NODELETE filter, some on one key
//! instead of the prefix; they ask for progress now and then, and after 1–5 s cancel and resume
//! from the last revision they know (last event or progress) + 1, on a random node. A compactor
//! compacts a little behind the head every few seconds.
//!
//! Ground truth: watcher 0 watches the whole prefix from revision 1 with `prev_kv` for the whole
//! run and resumes from its last revision + 1 (on another node) when its stream breaks or stalls.
//! The compactor never compacts above the truth watcher's position, so the truth always covers
//! every revision from 1; the checker does not trust it blindly (it replays it, and checks it
//! against every acknowledged write and the final reads). Compaction can still overtake the other
//! watchers, whose resumes are then cancelled with `compact_revision` (allowed; they restart from
//! the compact revision).
//!
//! Writes go to `history.jsonl` (f `write`: key, and for a txn the keys joined by `,`) for the op
//! counts; every watch request/response, compaction, acknowledged write and final read goes to
//! `watch.jsonl` ([`WatchEntry`]), which the watch checker judges.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::kv_client::KvClient;
use beacon_proto::etcdserverpb::watch_client::WatchClient;
use beacon_proto::etcdserverpb::watch_create_request::FilterType;
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use beacon_proto::mvccpb::{event::EventType, KeyValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::checker::watch::{EntryKind, Ev, Filter, Kv, WatchEntry, Write};
use crate::client::{prefix_end, CallError, NodeClient};
use crate::history::{Function, History, Op, OpType};

pub const PREFIX: &str = "jepsen/w/";
/// Keys the writers touch: few, so keys are created, changed and deleted often.
const KEYS: u64 = 8;
/// Writers/compactor in `watch.jsonl`.
const NO_WATCHER: u64 = u64::MAX;

/// The workload's shared state.
#[derive(Debug, Default)]
pub struct Watch {
    recording: Recording,
    next_value: AtomicU64,
    /// The writers' KV clients per node (with the client deadline), set by [`Watch::start`].
    writers: Mutex<Vec<KvClient<Channel>>>,
    deadline: Mutex<Duration>,
}

/// What the watchers of a prefix share: the recorded entries, the head, the truth watcher's
/// position, and the background tasks. The watch workload runs the truth and checked watchers
/// on `jepsen/w/`; the catalog workload runs only the truth watcher (and the compactor) on the
/// catalog's key prefix, as the ground truth for its service watches.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    entries: Arc<Mutex<Vec<WatchEntry>>>,
    /// The highest revision any response reported.
    head: Arc<AtomicI64>,
    /// Every revision ≤ this is in the truth watcher's stream.
    truth_through: Arc<AtomicI64>,
    truth_stop: Arc<AtomicBool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Shared handle the background tasks use to record entries.
#[derive(Clone)]
pub(crate) struct Recorder {
    entries: Arc<Mutex<Vec<WatchEntry>>>,
    history: History,
}

impl Recorder {
    pub(crate) fn record(&self, mut entry: WatchEntry) {
        let mut entries = lock(&self.entries);
        entry.time = self.history.now();
        entries.push(entry);
    }
}

pub(crate) fn kv_of(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn response_entry(watcher: u64, session: u64, node: usize, response: &WatchResponse) -> WatchEntry {
    let mut entry = WatchEntry::new(EntryKind::Response, watcher, session, node);
    entry.watch_id = response.watch_id;
    entry.revision = response.header.as_ref().map_or(0, |header| header.revision);
    entry.created = response.created;
    entry.canceled = response.canceled;
    entry.compact_revision = response.compact_revision;
    if !response.cancel_reason.is_empty() {
        entry.error = Some(response.cancel_reason.clone());
    }
    entry.events = response
        .events
        .iter()
        .map(|event| Ev {
            delete: event.r#type == EventType::Delete as i32,
            kv: event.kv.as_ref().map(kv_of).unwrap_or(Kv {
                key: String::new(),
                value: String::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
            }),
            prev: event.prev_kv.as_ref().map(kv_of),
        })
        .collect();
    entry
}

/// A channel for long-lived streams: no per-request timeout.
pub(crate) fn watch_channel(address: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy())
}

/// What one watch asks for.
#[derive(Debug, Clone)]
struct WatchSpec {
    key: String,
    prefix: bool,
    start: i64,
    prev_kv: bool,
    filter: Option<Filter>,
    progress_notify: bool,
}

/// How one watch session ended.
enum Ended {
    /// Cancelled by us (lifetime over or stop): resume from `next`.
    Done,
    /// The start was compacted: restart from the compact revision.
    Compacted(i64),
    /// The stream broke or stalled.
    Broken,
}

struct WatcherCtx {
    watcher: u64,
    /// The watched prefix (the truth watches all of it).
    prefix: String,
    channels: Vec<Channel>,
    recorder: Recorder,
    head: Arc<AtomicI64>,
    truth_through: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl WatcherCtx {
    fn is_truth(&self) -> bool {
        self.watcher == 0
    }

    /// One stream with one watch; returns how it ended and the next start revision.
    async fn session(
        &self,
        session: u64,
        node: usize,
        spec: &WatchSpec,
        lifetime: Duration,
        rng: &mut StdRng,
    ) -> (Ended, i64) {
        let mut next = spec.start;
        let (sender, receiver) = mpsc::channel::<WatchRequest>(16);
        let mut client = WatchClient::new(self.channels[node].clone());
        let error = |message: String| {
            let mut entry = WatchEntry::new(EntryKind::Error, self.watcher, session, node);
            entry.error = Some(message);
            self.recorder.record(entry);
        };
        let mut request = WatchEntry::new(EntryKind::Create, self.watcher, session, node);
        request.key = spec.key.clone();
        request.prefix = spec.prefix;
        request.start_revision = spec.start;
        request.prev_kv = spec.prev_kv;
        request.filter = spec.filter;
        let create = WatchCreateRequest {
            key: spec.key.as_bytes().to_vec(),
            range_end: if spec.prefix {
                prefix_end(&spec.key)
            } else {
                vec![]
            },
            start_revision: spec.start,
            progress_notify: spec.progress_notify,
            filters: spec
                .filter
                .map(|filter| match filter {
                    Filter::NoPut => FilterType::Noput as i32,
                    Filter::NoDelete => FilterType::Nodelete as i32,
                })
                .into_iter()
                .collect(),
            prev_kv: spec.prev_kv,
            ..Default::default()
        };
        // Record the request before it can be answered.
        self.recorder.record(request);
        let _ = sender
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await;
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            client.watch(ReceiverStream::new(receiver)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                error(format!("open: {:?}: {}", status.code(), status.message()));
                return (Ended::Broken, next);
            }
            Err(_) => {
                error("open: timeout".to_string());
                return (Ended::Broken, next);
            }
        };
        let began = Instant::now();
        let mut watch_id = None;
        let mut cancel_sent = false;
        let mut last_message = Instant::now();
        let mut progress_at = Instant::now() + Duration::from_millis(rng.gen_range(300..1500));
        loop {
            let stopping = if self.is_truth() {
                false
            } else {
                self.stop.load(Ordering::Relaxed) || began.elapsed() >= lifetime
            };
            if stopping && !cancel_sent {
                if let Some(watch_id) = watch_id {
                    let mut entry = WatchEntry::new(EntryKind::Cancel, self.watcher, session, node);
                    entry.watch_id = watch_id;
                    self.recorder.record(entry);
                    let _ = sender
                        .send(WatchRequest {
                            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                                watch_id,
                            })),
                        })
                        .await;
                    cancel_sent = true;
                    last_message = Instant::now();
                } else {
                    return (Ended::Done, next);
                }
            }
            if cancel_sent && last_message.elapsed() > Duration::from_secs(1) {
                // No cancel confirmation: drop the stream.
                return (Ended::Done, next);
            }
            if self.is_truth() {
                // The truth watcher ends only when told to and caught up; it reconnects when its
                // node stops answering (progress requests go unanswered).
                if self.stop.load(Ordering::Relaxed)
                    && self.truth_through.load(Ordering::Relaxed)
                        >= self.head.load(Ordering::Relaxed)
                {
                    return (Ended::Done, next);
                }
                if last_message.elapsed() > Duration::from_secs(3) {
                    error("stalled".to_string());
                    return (Ended::Broken, next);
                }
            }
            if Instant::now() >= progress_at && watch_id.is_some() && !cancel_sent {
                self.recorder.record(WatchEntry::new(
                    EntryKind::Progress,
                    self.watcher,
                    session,
                    node,
                ));
                let _ = sender
                    .send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    })
                    .await;
                progress_at = Instant::now() + Duration::from_millis(rng.gen_range(300..1500));
            }
            let message = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            let response = match message {
                Err(_) => continue,
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => {
                    error("stream ended".to_string());
                    return (Ended::Broken, next);
                }
                Ok(Err(status)) => {
                    error(format!("{:?}: {}", status.code(), status.message()));
                    return (Ended::Broken, next);
                }
            };
            last_message = Instant::now();
            let entry = response_entry(self.watcher, session, node, &response);
            self.recorder.record(entry);
            if let Some(header) = &response.header {
                self.head.fetch_max(header.revision, Ordering::Relaxed);
            }
            if response.created {
                watch_id = Some(response.watch_id);
            }
            if let Some(last) = response.events.last().and_then(|event| event.kv.as_ref()) {
                next = next.max(last.mod_revision + 1);
            }
            let progress = response.events.is_empty() && !response.created && !response.canceled;
            if progress {
                if let Some(header) = &response.header {
                    next = next.max(header.revision + 1);
                }
            }
            if self.is_truth() {
                self.truth_through.fetch_max(next - 1, Ordering::Relaxed);
            }
            if response.canceled {
                if response.compact_revision > 0 {
                    return (Ended::Compacted(response.compact_revision), next);
                }
                return (
                    if cancel_sent {
                        Ended::Done
                    } else {
                        Ended::Broken
                    },
                    next,
                );
            }
        }
    }

    async fn run(self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = self.channels.len();
        let mut node = rng.gen_range(0..nodes);
        let mut next = if self.is_truth() {
            1
        } else {
            recent_start(&mut rng, self.head.load(Ordering::Relaxed))
        };
        let mut session = 0u64;
        loop {
            if self.is_truth() {
                if self.stop.load(Ordering::Relaxed)
                    && self.truth_through.load(Ordering::Relaxed)
                        >= self.head.load(Ordering::Relaxed)
                {
                    return;
                }
            } else if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let spec = if self.is_truth() {
                WatchSpec {
                    key: self.prefix.clone(),
                    prefix: true,
                    start: next,
                    prev_kv: true,
                    filter: None,
                    progress_notify: false,
                }
            } else {
                let one_key = rng.gen_bool(0.25);
                WatchSpec {
                    key: if one_key {
                        format!("{}{}", self.prefix, rng.gen_range(0..KEYS))
                    } else {
                        self.prefix.clone()
                    },
                    prefix: !one_key,
                    start: next,
                    prev_kv: rng.gen_bool(0.5),
                    filter: match rng.gen_range(0..10) {
                        0 | 1 => Some(Filter::NoPut),
                        2 | 3 => Some(Filter::NoDelete),
                        _ => None,
                    },
                    progress_notify: rng.gen_bool(0.3),
                }
            };
            let lifetime = Duration::from_millis(rng.gen_range(1000..5000));
            let (ended, resume) = self.session(session, node, &spec, lifetime, &mut rng).await;
            session += 1;
            match ended {
                Ended::Done => {
                    // Sometimes jump to a fresh recent revision instead of resuming.
                    next = if !self.is_truth() && rng.gen_bool(0.2) {
                        recent_start(&mut rng, self.head.load(Ordering::Relaxed))
                    } else {
                        resume
                    };
                    node = rng.gen_range(0..nodes);
                }
                Ended::Compacted(at) => next = at,
                Ended::Broken => {
                    next = resume;
                    node = (node + rng.gen_range(1..nodes.max(2))) % nodes;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// A start revision for a fresh watch: mostly a little behind the head, sometimes anywhere
/// (then usually compacted: the watch is cancelled with `compact_revision` and restarts there).
fn recent_start(rng: &mut StdRng, head: i64) -> i64 {
    if rng.gen_bool(0.15) {
        rng.gen_range(1..=head.max(1))
    } else {
        (head - rng.gen_range(0..20)).max(1)
    }
}

async fn compactor(
    kvs: Vec<KvClient<Channel>>,
    recorder: Recorder,
    head: Arc<AtomicI64>,
    truth_through: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    lag: std::ops::Range<i64>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut compacted = 0i64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2000..6000))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Behind the head by a little, and never above the truth watcher.
        let target = (head.load(Ordering::Relaxed) - rng.gen_range(lag.clone()))
            .min(truth_through.load(Ordering::Relaxed) - 1);
        if target <= compacted.max(1) {
            continue;
        }
        let node = rng.gen_range(0..kvs.len());
        let mut kv = kvs[node].clone();
        let mut entry = WatchEntry::new(EntryKind::Compact, NO_WATCHER, 0, node);
        entry.revision = target;
        let result = tokio::time::timeout(
            Duration::from_secs(2),
            kv.compact(CompactionRequest {
                revision: target,
                physical: false,
            }),
        )
        .await;
        match result {
            Ok(Ok(_)) => compacted = target,
            Ok(Err(status)) => {
                entry.error = Some(format!("{:?}: {}", status.code(), status.message()))
            }
            Err(_) => entry.error = Some("timeout".to_string()),
        }
        recorder.record(entry);
    }
}

impl Recording {
    fn recorder(&self, history: &History) -> Recorder {
        Recorder {
            entries: self.entries.clone(),
            history: history.clone(),
        }
    }

    /// Notes a revision some answer reported (the truth watcher runs until it reaches the
    /// highest).
    pub(crate) fn saw_revision(&self, revision: i64) {
        self.head.fetch_max(revision, Ordering::Relaxed);
    }

    /// Starts the truth watcher on `prefix`, `checked` checked watchers and the compactor, which
    /// compacts every 2–6 s at head − `compact_lag` (never at or above the truth watcher).
    /// `stop` ends the checked watchers and the compactor; the truth watcher runs until
    /// [`Recording::final_reads`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &self,
        prefix: &str,
        addresses: &[String],
        checked: usize,
        compact_lag: std::ops::Range<i64>,
        seed: u64,
        stop: Arc<AtomicBool>,
        history: &History,
    ) -> anyhow::Result<()> {
        let channels = addresses
            .iter()
            .map(|address| watch_channel(address))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let recorder = self.recorder(history);
        let mut tasks = lock(&self.tasks);
        for watcher in 0..=checked as u64 {
            let ctx = WatcherCtx {
                watcher,
                prefix: prefix.to_string(),
                channels: channels.clone(),
                recorder: recorder.clone(),
                head: self.head.clone(),
                truth_through: self.truth_through.clone(),
                stop: if watcher == 0 {
                    self.truth_stop.clone()
                } else {
                    stop.clone()
                },
            };
            tasks.push(tokio::spawn(
                ctx.run(seed.wrapping_mul(31).wrapping_add(watcher)),
            ));
        }
        tasks.push(tokio::spawn(compactor(
            channels.iter().cloned().map(KvClient::new).collect(),
            recorder,
            self.head.clone(),
            self.truth_through.clone(),
            stop,
            compact_lag,
            seed.wrapping_add(977),
        )));
        Ok(())
    }

    /// Records an acknowledged write (for the truth check).
    pub(crate) fn record_write(
        &self,
        history: &History,
        process: u64,
        node: usize,
        revision: i64,
        writes: Vec<Write>,
    ) {
        self.saw_revision(revision);
        let mut entry = WatchEntry::new(EntryKind::Write, NO_WATCHER, process, node);
        entry.revision = revision;
        entry.writes = writes;
        self.recorder(history).record(entry);
    }

    /// After the heal: a linearizable read of `prefix` on every node (recorded as final reads),
    /// then waits (≤ 60 s) for the truth watcher to reach the highest revision seen and stops
    /// it. Returns the next free process id.
    pub(crate) async fn final_reads(
        &self,
        prefix: &str,
        clients: &[NodeClient],
        first_process: u64,
        history: &History,
    ) -> u64 {
        let recorder = self.recorder(history);
        let mut process = first_process;
        for client in clients {
            for _attempt in 0..10 {
                process += 1;
                let invoke = history.record(Op::invoke(
                    process,
                    Function::ReadSet,
                    client.node,
                    Some(prefix.to_string()),
                ));
                let mut done = invoke.clone();
                match client
                    .range(prefix.as_bytes(), &prefix_end(prefix), 0, false)
                    .await
                {
                    Ok((kvs, revision)) => {
                        done.op_type = OpType::Ok;
                        done.revision = Some(revision);
                        history.record(done);
                        self.saw_revision(revision);
                        let mut entry =
                            WatchEntry::new(EntryKind::Final, NO_WATCHER, 0, client.node);
                        entry.revision = revision;
                        entry.kvs = kvs.iter().map(kv_of).collect();
                        recorder.record(entry);
                        break;
                    }
                    Err(error) => {
                        done.op_type = OpType::Fail;
                        done.error = Some(error.to_string());
                        history.record(done);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        self.truth_stop.store(true, Ordering::Relaxed);
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for mut task in tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut task).await.is_err() {
                eprintln!("jepsen-tests: a watch task did not finish in time; aborted");
                task.abort();
            }
        }
        process + 1
    }

    /// The recorded entries (for `watch.jsonl` and the checkers).
    pub(crate) fn entries(&self) -> Vec<WatchEntry> {
        lock(&self.entries).clone()
    }
}

impl Watch {
    /// Starts the truth watcher, `watchers` checked watchers and the compactor. `stop` ends the
    /// checked watchers and the compactor; the truth watcher runs until [`Watch::final_reads`].
    pub fn start(
        &self,
        addresses: &[String],
        watchers: usize,
        seed: u64,
        deadline: Duration,
        stop: Arc<AtomicBool>,
        history: &History,
    ) -> anyhow::Result<()> {
        *lock(&self.deadline) = deadline;
        *lock(&self.writers) = addresses
            .iter()
            .map(|address| {
                Ok(KvClient::new(
                    Endpoint::from_shared(format!("http://{address}"))?
                        .connect_timeout(deadline)
                        .timeout(deadline)
                        .connect_lazy(),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.recording
            .start(PREFIX, addresses, watchers, 5..40, seed, stop, history)
    }

    /// One writer op: a put (50 %), a delete (20 %) or a txn of 2–3 puts/deletes on distinct keys.
    pub async fn step(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let roll = rng.gen_range(0..10);
        let count = if roll < 7 { 1 } else { rng.gen_range(2..=3) };
        let mut keys: Vec<u64> = Vec::new();
        while keys.len() < count {
            let key = rng.gen_range(0..KEYS);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let writes: Vec<Write> = keys
            .iter()
            .map(|key| {
                let delete = if count == 1 {
                    roll >= 5
                } else {
                    rng.gen_bool(0.3)
                };
                let value = self.next_value.fetch_add(1, Ordering::Relaxed) + 1;
                (
                    format!("{PREFIX}{key}"),
                    (!delete).then(|| format!("v{value}")),
                )
            })
            .collect();
        let joined: Vec<&str> = writes.iter().map(|(key, _)| key.as_str()).collect();
        let mut invoke = Op::invoke(
            process,
            Function::Write,
            client.node,
            Some(joined.join(",")),
        );
        if let [(_, Some(value))] = writes.as_slice() {
            invoke.value = value[1..].parse().ok();
        }
        let invoke = history.record(invoke);
        let mut done = invoke.clone();
        let kv = lock(&self.writers).get(client.node).cloned();
        let deadline = *lock(&self.deadline);
        let result = match kv {
            Some(kv) => txn(kv, deadline, &writes).await,
            None => Err(CallError::Status(
                tonic::Code::FailedPrecondition,
                "watch workload not started".to_string(),
            )),
        };
        match result {
            Ok(revision) => {
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
                self.recording
                    .record_write(history, process, client.node, revision, writes);
            }
            Err(error) => done.write_failed(&error),
        }
        history.record(done).op_type
    }

    /// After the heal: a linearizable read of the prefix on every node (recorded as final reads),
    /// then waits (≤ 60 s) for the truth watcher to reach the highest revision seen and stops it.
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        self.recording
            .final_reads(PREFIX, clients, first_process, history)
            .await;
    }

    /// The recorded watch entries (for `watch.jsonl` and the checker).
    pub fn entries(&self) -> Vec<WatchEntry> {
        self.recording.entries()
    }
}

/// An unconditional txn of puts and deletes; returns the revision.
async fn txn(
    mut kv: KvClient<Channel>,
    deadline: Duration,
    writes: &[Write],
) -> Result<i64, CallError> {
    let success = writes
        .iter()
        .map(|(key, value)| RequestOp {
            request: Some(match value {
                Some(value) => request_op::Request::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                }),
                None => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                }),
            }),
        })
        .collect();
    let request = kv.txn(TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    });
    match tokio::time::timeout(deadline, request).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            Err(CallError::Timeout)
        }
        Ok(Err(status)) => Err(CallError::Status(
            status.code(),
            status.message().to_string(),
        )),
        Ok(Ok(response)) => Ok(response
            .into_inner()
            .header
            .map_or(0, |header| header.revision)),
    }
}
