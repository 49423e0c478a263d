//! The lease workload: clients grant leases (the shortest TTL beacond allows), bind fresh keys
//! `jepsen/l/<n>` to them with lease-bound puts, and read those keys and the leases' remaining
//! TTL; every granted lease gets a keeper (a background task) that keeps it alive continuously —
//! one keepalive every TTL/4 on a long-lived `LeaseKeepAlive` stream, or (30 % of the keepers) on
//! a fresh stream each time — for a random 2–20 s, and then either just stops or revokes it.
//! Every keepalive and revoke is an op in the history (invoke and completion times), under the
//! keeper's own process id; a keepalive that times out is `info` and the keeper continues on
//! another node under a new process id.
//!
//! The ordinary client loop does the grants (when fewer than [`MIN_KEEPING`] leases are being
//! kept alive, else 12 % up to [`MAX_KEEPING`]), puts (28 %, mostly on kept-alive leases, some on
//! leases that just ended), time-to-live queries (10 %) and linearizable reads (the rest; of keys
//! of kept-alive leases and of leases that ended in the last TTL + 15 s, so expiries are seen).
//! After the heal every key is read on every node until all are gone (at most 2 × TTL + 15 s), and
//! every lease's time-to-live is asked once: nothing outlives its lease.
//!
//! [`crate::checker::lease`] judges the history.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::lease_client::LeaseClient;
use beacon_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::client::{CallError, NodeClient};
use crate::history::{Function, History, Op, OpType};
use crate::workload::watch::watch_channel;

pub const PREFIX: &str = "jepsen/l/";
/// The TTL asked for: beacond raises it to its minimum (1.5 election timeouts, 3 s with the
/// netns configs), which is what the workload wants — the shortest lease the cluster grants.
const TTL_ASKED: i64 = 1;
/// Below this many kept-alive leases a client grants a new one.
pub const MIN_KEEPING: usize = 2;
/// At most this many leases are kept alive at once.
pub const MAX_KEEPING: usize = 8;
/// Keepers' process ids start here (clients use small ids, final reads 1,000,000,000 and up).
const FIRST_KEEPER_PROCESS: u64 = 500_000_000;

/// Where a lease is in its life, as the workload drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Keeping,
    /// Not kept alive any more (stopped, revoked, or found gone): since then.
    Ended(Instant),
}

#[derive(Debug)]
struct LeaseEntry {
    id: i64,
    ttl: i64,
    phase: Phase,
    /// Keys put (or attempted) with this lease.
    keys: Vec<u64>,
}

/// What keepers need, set by [`Lease::start`].
#[derive(Debug, Clone)]
struct KeeperContext {
    /// Per node: unary calls (revoke) under the client deadline.
    clients: Vec<NodeClient>,
    /// Per node: channels for keepalive streams (no per-request timeout).
    channels: Vec<Channel>,
    deadline: Duration,
    stop: Arc<AtomicBool>,
    history: History,
    seed: u64,
}

/// The workload's shared state.
#[derive(Debug, Default)]
pub struct Lease {
    leases: Arc<Mutex<Vec<LeaseEntry>>>,
    next_key: AtomicU64,
    next_process: Arc<AtomicU64>,
    context: Mutex<Option<KeeperContext>>,
    keepers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn key_name(number: u64) -> String {
    format!("{PREFIX}{number:06}")
}

fn end_lease(leases: &Mutex<Vec<LeaseEntry>>, id: i64) {
    if let Some(entry) = lock(leases).iter_mut().find(|entry| entry.id == id) {
        if entry.phase == Phase::Keeping {
            entry.phase = Phase::Ended(Instant::now());
        }
    }
}

/// One open keepalive stream: requests go in through `sender`, answers come out of `responses`.
struct KeepAliveStream {
    sender: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// Sends one keepalive (opening a stream on `channel` when there is none) and waits for its
/// answer under `deadline`: the TTL, or why there is none (the stream is then dropped).
async fn keep_alive_once(
    stream: &mut Option<KeepAliveStream>,
    channel: &Channel,
    lease_id: i64,
    deadline: Duration,
) -> Result<i64, CallError> {
    let request = LeaseKeepAliveRequest { id: lease_id };
    let attempt = async {
        if let Some(open) = stream.as_mut() {
            if open.sender.send(request).await.is_err() {
                return Err(CallError::Status(
                    tonic::Code::Unavailable,
                    "keepalive stream closed".to_string(),
                ));
            }
        } else {
            let (sender, receiver) = mpsc::channel(4);
            // Queued before the stream opens, so it is sent as soon as it does.
            let _ = sender.send(request).await;
            let mut client = LeaseClient::new(channel.clone());
            let responses = client
                .lease_keep_alive(ReceiverStream::new(receiver))
                .await
                .map_err(|status| CallError::Status(status.code(), status.message().to_string()))?
                .into_inner();
            *stream = Some(KeepAliveStream { sender, responses });
        }
        let open = stream.as_mut().expect("opened above");
        match open.responses.message().await {
            Ok(Some(response)) => Ok(response.ttl),
            Ok(None) => Err(CallError::Status(
                tonic::Code::Unavailable,
                "keepalive stream ended".to_string(),
            )),
            Err(status) => Err(CallError::Status(
                status.code(),
                status.message().to_string(),
            )),
        }
    };
    let result = match tokio::time::timeout(deadline, attempt).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(CallError::Status(tonic::Code::DeadlineExceeded, _))) => Err(CallError::Timeout),
        Ok(result) => result,
    };
    if result.is_err() {
        *stream = None;
    }
    result
}

/// A keeper: keeps one lease alive until its lifetime is over (or the run stops), then stops or
/// revokes it.
struct Keeper {
    context: KeeperContext,
    leases: Arc<Mutex<Vec<LeaseEntry>>>,
    next_process: Arc<AtomicU64>,
    lease_id: i64,
    ttl: i64,
}

impl Keeper {
    fn new_process(&self) -> u64 {
        FIRST_KEEPER_PROCESS + self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Sleeps up to `duration`; returns whether the run is stopping.
    async fn pause(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if self.context.stop.load(Ordering::Relaxed) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
        self.context.stop.load(Ordering::Relaxed)
    }

    /// One keepalive op in the history; returns the TTL answered (`None`: no answer).
    async fn keep_alive(
        &self,
        stream: &mut Option<KeepAliveStream>,
        process: u64,
        node: usize,
    ) -> (OpType, Option<i64>) {
        let history = &self.context.history;
        let mut invoke = Op::invoke(process, Function::KeepAlive, node, None);
        invoke.lease = Some(self.lease_id);
        let mut done = history.record(invoke);
        let result = keep_alive_once(
            stream,
            &self.context.channels[node],
            self.lease_id,
            self.context.deadline,
        )
        .await;
        let ttl = match result {
            Ok(ttl) => {
                done.op_type = OpType::Ok;
                done.ttl = Some(ttl);
                Some(ttl)
            }
            Err(error) => {
                done.write_failed(&error);
                None
            }
        };
        (history.record(done).op_type, ttl)
    }

    async fn run(self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = self.context.channels.len();
        let lifetime = Duration::from_millis(rng.gen_range(2_000..20_000));
        let revoke_at_end = rng.gen_bool(0.5);
        let fresh_stream_each_time = rng.gen_bool(0.3);
        let interval = Duration::from_millis(u64::try_from(self.ttl * 1000 / 4).unwrap_or(750));
        let began = Instant::now();
        let mut process = self.new_process();
        let mut node = rng.gen_range(0..nodes);
        let mut stream = None;
        loop {
            if self.pause(interval).await {
                break;
            }
            if began.elapsed() >= lifetime {
                if revoke_at_end {
                    self.revoke(&mut process, node).await;
                    // The lease is gone: one more keepalive must say so (TTL 0).
                    end_lease(&self.leases, self.lease_id);
                    stream = None;
                    self.keep_alive(&mut stream, process, node).await;
                }
                break;
            }
            let (outcome, ttl) = self.keep_alive(&mut stream, process, node).await;
            if outcome != OpType::Ok {
                if outcome == OpType::Info {
                    process = self.new_process();
                }
                node = (node + rng.gen_range(1..nodes.max(2))) % nodes;
            }
            if ttl == Some(0) {
                // Gone (expired while a keepalive could not get through): nothing to keep.
                break;
            }
            if fresh_stream_each_time {
                stream = None;
            }
        }
        end_lease(&self.leases, self.lease_id);
    }

    async fn revoke(&self, process: &mut u64, node: usize) {
        let history = &self.context.history;
        let client = &self.context.clients[node];
        let mut invoke = Op::invoke(*process, Function::Revoke, node, None);
        invoke.lease = Some(self.lease_id);
        let mut done = history.record(invoke);
        match client.revoke(self.lease_id).await {
            Ok(revision) => {
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
            }
            Err(error) => done.write_failed(&error),
        }
        if history.record(done).op_type == OpType::Info {
            *process = self.new_process();
        }
    }
}

impl Lease {
    /// Remembers what keepers need; they are spawned by grants.
    pub fn start(
        &self,
        addresses: &[String],
        seed: u64,
        deadline: Duration,
        stop: Arc<AtomicBool>,
        history: &History,
    ) -> anyhow::Result<()> {
        let channels = addresses
            .iter()
            .map(|address| watch_channel(address))
            .collect::<anyhow::Result<Vec<_>>>()?;
        *lock(&self.context) = Some(KeeperContext {
            clients: crate::cluster::clients(addresses, deadline)?,
            channels,
            deadline,
            stop,
            history: history.clone(),
            seed,
        });
        Ok(())
    }

    fn keeping(&self) -> usize {
        lock(&self.leases)
            .iter()
            .filter(|entry| entry.phase == Phase::Keeping)
            .count()
    }

    pub async fn step(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let keeping = self.keeping();
        let roll: f64 = rng.gen();
        if keeping < MIN_KEEPING || (roll < 0.12 && keeping < MAX_KEEPING) {
            return self.grant(client, process, history).await;
        }
        if roll < 0.40 {
            self.put(client, process, rng, history).await
        } else if roll < 0.50 {
            self.time_to_live(client, process, rng, history).await
        } else {
            self.read_some(client, process, rng, history).await
        }
    }

    async fn grant(&self, client: &NodeClient, process: u64, history: &History) -> OpType {
        let mut invoke = Op::invoke(process, Function::Grant, client.node, None);
        invoke.ttl = Some(TTL_ASKED);
        let mut done = history.record(invoke);
        let granted = match client.grant(TTL_ASKED).await {
            Ok((id, ttl)) => {
                done.op_type = OpType::Ok;
                done.lease = Some(id);
                done.ttl = Some(ttl);
                Some((id, ttl))
            }
            Err(error) => {
                done.write_failed(&error);
                None
            }
        };
        let outcome = history.record(done).op_type;
        if let Some((id, ttl)) = granted {
            lock(&self.leases).push(LeaseEntry {
                id,
                ttl,
                phase: Phase::Keeping,
                keys: Vec::new(),
            });
            let context = lock(&self.context).clone();
            if let Some(context) = context {
                let seed = context.seed ^ (id as u64);
                let keeper = Keeper {
                    context,
                    leases: self.leases.clone(),
                    next_process: self.next_process.clone(),
                    lease_id: id,
                    ttl,
                };
                lock(&self.keepers).push(tokio::spawn(keeper.run(seed)));
            }
        }
        outcome
    }

    /// A lease to use: mostly one being kept alive, sometimes one that ended in the last
    /// `recent` (then puts may race with its expiry).
    fn pick_lease(&self, rng: &mut StdRng, ended_share: f64, recent: Duration) -> Option<i64> {
        let leases = lock(&self.leases);
        let keeping: Vec<i64> = leases
            .iter()
            .filter(|entry| entry.phase == Phase::Keeping)
            .map(|entry| entry.id)
            .collect();
        let ended: Vec<i64> = leases
            .iter()
            .filter(|entry| {
                matches!(entry.phase, Phase::Ended(at) if at.elapsed() < recent + Duration::from_secs(u64::try_from(entry.ttl).unwrap_or(0)))
            })
            .map(|entry| entry.id)
            .collect();
        if !ended.is_empty() && (keeping.is_empty() || rng.gen_bool(ended_share)) {
            ended.choose(rng).copied()
        } else {
            keeping.choose(rng).copied()
        }
    }

    async fn put(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let Some(lease_id) = self.pick_lease(rng, 0.15, Duration::from_secs(3)) else {
            return self.grant(client, process, history).await;
        };
        let number = self.next_key.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(entry) = lock(&self.leases).iter_mut().find(|e| e.id == lease_id) {
            entry.keys.push(number);
        }
        let key = key_name(number);
        let mut invoke = Op::invoke(process, Function::PutLeased, client.node, Some(key.clone()));
        invoke.value = Some(number);
        invoke.lease = Some(lease_id);
        let mut done = history.record(invoke);
        match client
            .put_with_lease(&key, number.to_string().as_bytes(), lease_id)
            .await
        {
            Ok(revision) => {
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
            }
            Err(error) => done.write_failed(&error),
        }
        history.record(done).op_type
    }

    async fn time_to_live(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let Some(lease_id) = self.pick_lease(rng, 0.4, Duration::from_secs(15)) else {
            return self.grant(client, process, history).await;
        };
        time_to_live(client, process, lease_id, history).await
    }

    async fn read_some(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let key = {
            let Some(lease_id) = self.pick_lease(rng, 0.35, Duration::from_secs(15)) else {
                return self.grant(client, process, history).await;
            };
            let leases = lock(&self.leases);
            leases
                .iter()
                .find(|entry| entry.id == lease_id)
                .and_then(|entry| entry.keys.choose(rng).copied())
        };
        match key {
            Some(number) => read(client, process, number, history).await,
            None => self.put(client, process, rng, history).await,
        }
    }

    /// After the heal: waits for the keepers, then reads every key on every node until all are
    /// gone (≤ 2 × TTL + 15 s), and asks every lease's time-to-live once.
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        let keepers: Vec<_> = lock(&self.keepers).drain(..).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        for mut keeper in keepers {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut keeper).await.is_err() {
                keeper.abort();
            }
        }
        let (keys, leases, ttl) = {
            let leases = lock(&self.leases);
            let keys: Vec<u64> = leases
                .iter()
                .flat_map(|entry| entry.keys.iter().copied())
                .collect();
            let ids: Vec<i64> = leases.iter().map(|entry| entry.id).collect();
            let ttl = leases.iter().map(|entry| entry.ttl).max().unwrap_or(3);
            (keys, ids, ttl)
        };
        let until = Instant::now() + Duration::from_secs(u64::try_from(2 * ttl + 15).unwrap_or(21));
        let mut tasks = Vec::new();
        for client in clients {
            let client = client.clone();
            let history = history.clone();
            let mut pending = keys.clone();
            let mut process = first_process + client.node as u64 * 10_000_000;
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut present = Vec::new();
                    for number in &pending {
                        process += 1;
                        // A failed read says nothing: read the key again next round.
                        let (outcome, seen) = read_key(&client, process, *number, &history).await;
                        if outcome != OpType::Ok || seen {
                            present.push(*number);
                        }
                    }
                    pending = present;
                    if pending.is_empty() || Instant::now() >= until {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                process
            }));
        }
        let mut process = first_process + clients.len() as u64 * 10_000_000;
        for task in tasks {
            if let Ok(last) = task.await {
                process = process.max(last);
            }
        }
        if let Some(client) = clients.first() {
            for lease_id in leases {
                process += 1;
                time_to_live(client, process, lease_id, history).await;
            }
        }
    }
}

async fn time_to_live(
    client: &NodeClient,
    process: u64,
    lease_id: i64,
    history: &History,
) -> OpType {
    let mut invoke = Op::invoke(process, Function::TimeToLive, client.node, None);
    invoke.lease = Some(lease_id);
    let mut done = history.record(invoke);
    match client.time_to_live(lease_id).await {
        Ok(ttl) => {
            done.op_type = OpType::Ok;
            done.ttl = Some(ttl);
        }
        // A query has no effect: any error is a definite failure.
        Err(error) => {
            done.op_type = OpType::Fail;
            done.error = Some(error.to_string());
        }
    }
    history.record(done).op_type
}

async fn read(client: &NodeClient, process: u64, number: u64, history: &History) -> OpType {
    read_key(client, process, number, history).await.0
}

/// A linearizable get of key `number`: the outcome and whether the key was there.
async fn read_key(
    client: &NodeClient,
    process: u64,
    number: u64,
    history: &History,
) -> (OpType, bool) {
    let key = key_name(number);
    let mut done = history.record(Op::invoke(
        process,
        Function::ReadLeased,
        client.node,
        Some(key.clone()),
    ));
    let mut present = false;
    match client.get(&key, false).await {
        Ok((kv, revision)) => {
            done.op_type = OpType::Ok;
            done.revision = Some(revision);
            if let Some(kv) = kv {
                present = true;
                done.value = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|text| text.parse().ok());
                done.lease = Some(kv.lease);
                done.mod_revision = Some(kv.mod_revision);
                if done.value.is_none() {
                    done.error = Some(format!("unparseable value {:?}", kv.value));
                }
            }
        }
        Err(error) => {
            done.op_type = OpType::Fail;
            done.error = Some(error.to_string());
        }
    }
    (history.record(done).op_type, present)
}
