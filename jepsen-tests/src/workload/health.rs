//! The health part of `--workload health`: the catalog workload plus instances whose HTTP checks
//! the cluster runs, against endpoints this process serves and takes down on a schedule.
//! [`crate::checker::health`] states and checks the properties.
//!
//! - **Endpoints.** One small HTTP endpoint per instance (hyper), each on its own port of the
//!   bridge address: every node's namespace reaches it directly, partitions and packet loss never
//!   drop it (they only drop peer addresses), and a port per endpoint lets one node's path to one
//!   endpoint be cut. They run on their own thread and runtime, so the client load cannot delay
//!   an answer; a ticker there records *stalls* (the thread unscheduled for ≥ [`STALL`]), during
//!   which the test cannot claim its endpoints answered. Every request is recorded with the
//!   probing node (source address) and member (`X-Beacon-Member`).
//! - **Instances.** Service [`SERVICE`], one instance per endpoint, registered (recorded Register
//!   ops, so the catalog checks cover them) before the clients start, each with one HTTP check:
//!   interval [`INTERVAL_MS`], timeout [`TIMEOUT_MS`], success_before_passing
//!   [`SUCCESS_BEFORE_PASSING`], failures_before_critical [`FAILURES_BEFORE_CRITICAL`],
//!   failures_before_warning 1 or 3 (see `plans`), initial status critical. No client op touches
//!   them; the WatchService watchers follow the service too.
//! - **Endpoint nemesis** (part of the workload, whatever `--nemesis` says): `s0`, `s1` are always
//!   up; `b0`–`b2` are always up but get *bad paths* — an nftables rule in one node's namespace
//!   dropping that node's packets to the endpoint ([`Cluster::set_bad_paths`]) — for 5–12 s at a
//!   time, 3 of 4 times on the node that probed it most in the last 3 s (its owner); `f0` flips
//!   down and up slowly (up 8–14 s, down 6–10 s); `f1` flips fast (1–3 s; flap damping holds it)
//!   and is left up when the load stops; `d0` goes down once, 10–20 s in; `h0` stays up. Down is
//!   a 503 answer or (one time in three) a hang past the probe timeout. When the load stops, bad
//!   paths are removed; after the heal `f0` flips once more, `d0` comes back and `h0` goes down,
//!   so the healed cluster has changes to detect, and the endpoints are *settled*: no more
//!   changes.
//! - **After the heal**: linearizable GetService of the service every 0.5 s, on each node in turn
//!   (final reads), until three reads in a row show every check settled as its endpoint implies,
//!   or [`LIVENESS_BOUND`] + 3 s passed.
//!
//! Everything the endpoints and the nemesis did goes to `health.jsonl` ([`HealthEntry`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_proto::beacon::v1::{check, Check, HealthStatus, HttpCheck, Instance};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::history::History;
use crate::nemesis::sleep_unless_stopped;

/// The service of the health instances.
pub const SERVICE: &str = "jepsen-h";
/// The id of every instance's one check.
pub const CHECK_ID: &str = "http";
/// The checks' probe interval (the validation minimum).
pub const INTERVAL_MS: u64 = 1_000;
/// The checks' probe timeout.
pub const TIMEOUT_MS: u64 = 500;
pub const SUCCESS_BEFORE_PASSING: u32 = 2;
pub const FAILURES_BEFORE_CRITICAL: u32 = 3;
/// `failures_before_warning` of the endpoints that show single failures as warning; the
/// others have it equal to `failures_before_critical` (see `plans`).
pub const FAILURES_BEFORE_WARNING: u32 = 1;
/// `election_timeout_max_ms` of the netns cluster configs.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(2_000);
/// After the heal (and the endpoints' last change), every check must show what its endpoint
/// implies within this long: two election timeouts (the leader finds every member back and the
/// checker set returns to all of them; ownership moves), one interval before a check taken over
/// is first probed, the larger threshold's worth of intervals plus one, two probe timeouts (the
/// last probe and the confirmation), and 5 s of slack for commit, apply and a busy machine.
pub const LIVENESS_BOUND: Duration = Duration::from_millis(
    2 * 2_000
        + INTERVAL_MS
        + (max_u32(SUCCESS_BEFORE_PASSING, FAILURES_BEFORE_CRITICAL) as u64 + 1) * INTERVAL_MS
        + 2 * TIMEOUT_MS
        + 5_000,
);
/// A gap of the endpoints' ticker this long is recorded as a stall (half the probe timeout).
pub const STALL: Duration = Duration::from_millis(TIMEOUT_MS / 2);
/// How long a "hang" answer is held (past the probe timeout; the prober has given up by then).
const HANG: Duration = Duration::from_millis(TIMEOUT_MS * 3);
/// Health registrations' process ids (clients use small ids, lease keepers 500,000,000 and up,
/// final reads 1,000,000,000 and up).
pub const FIRST_SETUP_PROCESS: u64 = 600_000_000;

const fn max_u32(a: u32, b: u32) -> u32 {
    if a > b {
        a
    } else {
        b
    }
}

/// What the endpoint nemesis does to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Up for the whole run.
    Steady,
    /// Up for the whole run; one node at a time cannot reach it now and then.
    BadPath,
    /// Down and up on a schedule.
    Flipping,
    /// Down once during the load, up again after the heal.
    DownOnce,
    /// Up during the load, down after the heal.
    DownAfterHeal,
}

impl Role {
    /// Up from registration to the end of the run (bad paths aside).
    pub fn never_down(self) -> bool {
        matches!(self, Role::Steady | Role::BadPath)
    }
}

/// How an endpoint answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// 200.
    Up,
    /// 503.
    Failing,
    /// 503 after `HANG` (1.5 s), long past the probe timeout.
    Hanging,
}

impl Mode {
    pub fn is_up(self) -> bool {
        self == Mode::Up
    }
}

/// One record of `health.jsonl`; `time` is nanoseconds since the run started (the history's
/// clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HealthEntry {
    /// An endpoint started (up) and its instance `SERVICE/endpoint` was registered.
    Endpoint {
        time: u64,
        endpoint: String,
        role: Role,
        port: u16,
        /// Its check's `failures_before_warning`.
        #[serde(default)]
        failures_before_warning: u32,
    },
    /// An endpoint's answer changed.
    Flip {
        time: u64,
        endpoint: String,
        mode: Mode,
    },
    /// A bad path from `node` to the endpoint was put in place (`on`) or removed. `owner`: the
    /// node that probed the endpoint most in the 3 s before (when putting it in place).
    BadPath {
        time: u64,
        endpoint: String,
        node: usize,
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The endpoints' thread was not scheduled from `time` for `millis`.
    Stall { time: u64, millis: u64 },
    /// A request an endpoint received (`status` is what it answered or, hanging, would answer).
    Probe {
        time: u64,
        endpoint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<usize>,
        member: u64,
        status: u16,
    },
    /// The load stopped: bad paths removed and every endpoint's final mode fixed.
    Settle { time: u64 },
}

impl HealthEntry {
    pub fn time(&self) -> u64 {
        match self {
            HealthEntry::Endpoint { time, .. }
            | HealthEntry::Flip { time, .. }
            | HealthEntry::BadPath { time, .. }
            | HealthEntry::Stall { time, .. }
            | HealthEntry::Probe { time, .. }
            | HealthEntry::Settle { time } => *time,
        }
    }
}

/// What the endpoint nemesis does with one endpoint.
#[derive(Debug, Clone)]
enum Plan {
    Steady,
    BadPaths,
    Flipping {
        up: Range<f64>,
        down: Range<f64>,
        /// Left up when the load stops (else flipped once more after the heal).
        end_up: bool,
    },
    DownOnce {
        after: Range<f64>,
    },
    DownAfterHeal,
}

impl Plan {
    fn role(&self) -> Role {
        match self {
            Plan::Steady => Role::Steady,
            Plan::BadPaths => Role::BadPath,
            Plan::Flipping { .. } => Role::Flipping,
            Plan::DownOnce { .. } => Role::DownOnce,
            Plan::DownAfterHeal => Role::DownAfterHeal,
        }
    }
}

/// One endpoint: its name (the instance id), plan, port and its check's
/// `failures_before_warning`.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    plan: Plan,
    port: u16,
    failures_before_warning: u32,
}

/// The endpoints and their `failures_before_warning`. beacond's flap damping holds a check at
/// warning after more than 5 status changes within 60 s, so most endpoints are set up to change
/// status rarely, and their checks turn straight to critical (`failures_before_warning` =
/// `failures_before_critical`): a bad path then changes nothing unless a critical verdict
/// commits without a second opinion, and the liveness after the heal stays meaningful. `s0`,
/// `b0`, `f1` and `d0` show single failures as warning (and `b0`, `f1` flap).
fn plans() -> Vec<(&'static str, Plan, u32)> {
    let warn = FAILURES_BEFORE_WARNING;
    let critical = FAILURES_BEFORE_CRITICAL;
    vec![
        ("s0", Plan::Steady, warn),
        ("s1", Plan::Steady, critical),
        ("b0", Plan::BadPaths, warn),
        ("b1", Plan::BadPaths, critical),
        ("b2", Plan::BadPaths, critical),
        (
            "f0",
            Plan::Flipping {
                up: 8.0..14.0,
                down: 6.0..10.0,
                end_up: false,
            },
            critical,
        ),
        (
            "f1",
            Plan::Flipping {
                up: 1.0..3.0,
                down: 1.0..3.0,
                end_up: true,
            },
            warn,
        ),
        ("d0", Plan::DownOnce { after: 10.0..20.0 }, warn),
        ("h0", Plan::DownAfterHeal, critical),
    ]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the endpoints' thread and the nemesis share.
#[derive(Debug)]
struct Shared {
    history: History,
    /// Current mode by endpoint name.
    modes: Mutex<HashMap<String, Mode>>,
    entries: Mutex<Vec<HealthEntry>>,
    /// The nodes' addresses (to name the node a probe came from).
    node_ips: Vec<Ipv4Addr>,
}

impl Shared {
    fn record(&self, entry: HealthEntry) {
        lock(&self.entries).push(entry);
    }

    fn mode(&self, endpoint: &str) -> Mode {
        lock(&self.modes).get(endpoint).copied().unwrap_or(Mode::Up)
    }

    /// Sets an endpoint's mode; records the flip if it changed.
    fn set_mode(&self, endpoint: &str, mode: Mode) {
        // The flip is recorded under the modes lock, so no probe sees the new mode with an
        // earlier time than the flip's.
        let mut modes = lock(&self.modes);
        if modes.insert(endpoint.to_string(), mode) != Some(mode) {
            self.record(HealthEntry::Flip {
                time: self.history.now(),
                endpoint: endpoint.to_string(),
                mode,
            });
        }
    }

    /// The node that sent most requests to `endpoint` in the last `window`.
    fn recent_prober(&self, endpoint: &str, window: Duration) -> Option<usize> {
        let since = self
            .history
            .now()
            .saturating_sub(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX));
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for entry in lock(&self.entries).iter().rev() {
            if entry.time() < since {
                break;
            }
            if let HealthEntry::Probe {
                endpoint: probed,
                node: Some(node),
                ..
            } = entry
            {
                if probed == endpoint {
                    *counts.entry(*node).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(node, _)| node)
    }
}

/// One node's bad paths, applied to its namespace as a whole (one nftables table).
#[derive(Debug)]
struct PathFaults {
    cluster: Arc<Mutex<Cluster>>,
    host: Ipv4Addr,
    /// Per node: the endpoint ports it cannot reach. Held across the update so concurrent
    /// changes for one node cannot apply out of order.
    blocked: tokio::sync::Mutex<Vec<BTreeSet<u16>>>,
}

impl PathFaults {
    async fn set(&self, node: usize, port: u16, on: bool) -> anyhow::Result<()> {
        let mut blocked = self.blocked.lock().await;
        let Some(ports) = blocked.get_mut(node) else {
            anyhow::bail!("no node {node}");
        };
        if on {
            ports.insert(port);
        } else {
            ports.remove(&port);
        }
        let paths: Vec<(Ipv4Addr, u16)> = ports.iter().map(|port| (self.host, *port)).collect();
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .set_bad_paths(node, &paths)
        })
        .await
        .context("bad path task")?
    }
}

/// The health part of the workload: endpoints, their nemesis and the records.
#[derive(Debug)]
pub struct Health {
    shared: Arc<Shared>,
    endpoints: Vec<Spec>,
    host: Ipv4Addr,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Health {
    /// Starts the endpoints (all up) on the cluster's bridge address, on their own thread.
    pub fn start_endpoints(cluster: &Cluster, history: &History) -> anyhow::Result<Self> {
        let host = cluster.host_ip();
        let shared = Arc::new(Shared {
            history: history.clone(),
            modes: Mutex::new(HashMap::new()),
            entries: Mutex::new(Vec::new()),
            node_ips: cluster.ips(),
        });
        let mut endpoints = Vec::new();
        let mut listeners = Vec::new();
        for (name, plan, failures_before_warning) in plans() {
            let listener = std::net::TcpListener::bind((host, 0))
                .with_context(|| format!("binding endpoint {name} on {host}"))?;
            listener.set_nonblocking(true)?;
            let port = listener.local_addr()?.port();
            lock(&shared.modes).insert(name.to_string(), Mode::Up);
            endpoints.push(Spec {
                name: name.to_string(),
                plan,
                port,
                failures_before_warning,
            });
            listeners.push((name.to_string(), listener));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("endpoint runtime")?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("jepsen-endpoints".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut servers = Vec::new();
                    for (name, listener) in listeners {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => servers.push(tokio::spawn(serve(
                                listener,
                                Arc::from(name.as_str()),
                                serving.clone(),
                            ))),
                            Err(error) => eprintln!("jepsen-tests: endpoint {name}: {error}"),
                        }
                    }
                    tokio::select! {
                        _ = stopped => {}
                        _ = watch_stalls(serving.clone()) => {}
                    }
                    for server in servers {
                        server.abort();
                    }
                });
            })
            .context("endpoint thread")?;
        Ok(Health {
            shared,
            endpoints,
            host,
            shutdown: Mutex::new(Some(shutdown)),
            thread: Mutex::new(Some(thread)),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The instances to register, one per endpoint, each with its HTTP check.
    pub fn instances(&self) -> Vec<Instance> {
        self.endpoints
            .iter()
            .map(|spec| Instance {
                service: SERVICE.to_string(),
                id: spec.name.clone(),
                address: self.host.to_string(),
                port: u32::from(spec.port),
                checks: vec![Check {
                    id: CHECK_ID.to_string(),
                    kind: Some(check::Kind::Http(HttpCheck {
                        url: format!("http://{}:{}/health", self.host, spec.port),
                        ..Default::default()
                    })),
                    interval_ms: INTERVAL_MS,
                    timeout_ms: TIMEOUT_MS,
                    success_before_passing: SUCCESS_BEFORE_PASSING,
                    failures_before_warning: spec.failures_before_warning,
                    failures_before_critical: FAILURES_BEFORE_CRITICAL,
                    initial_status: HealthStatus::Critical as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect()
    }

    /// Records the endpoints (after their instances were registered) and starts the endpoint
    /// nemesis; it stops with `stop`, leaving the final modes in place.
    pub fn start_nemesis(&self, cluster: Arc<Mutex<Cluster>>, seed: u64, stop: Arc<AtomicBool>) {
        let now = self.shared.history.now();
        for spec in &self.endpoints {
            self.shared.record(HealthEntry::Endpoint {
                time: now,
                endpoint: spec.name.clone(),
                role: spec.plan.role(),
                port: spec.port,
                failures_before_warning: spec.failures_before_warning,
            });
        }
        let nodes = self.shared.node_ips.len();
        let faults = Arc::new(PathFaults {
            cluster,
            host: self.host,
            blocked: tokio::sync::Mutex::new(vec![BTreeSet::new(); nodes]),
        });
        let mut tasks = lock(&self.tasks);
        for (index, spec) in self.endpoints.iter().enumerate() {
            let shared = self.shared.clone();
            let name = spec.name.clone();
            let port = spec.port;
            let stop = stop.clone();
            let seed = seed.wrapping_mul(7_919).wrapping_add(index as u64);
            let task = match spec.plan.clone() {
                Plan::Steady | Plan::DownAfterHeal => continue,
                Plan::BadPaths => tokio::spawn(bad_paths(
                    shared,
                    faults.clone(),
                    name,
                    port,
                    nodes,
                    seed,
                    stop,
                )),
                Plan::Flipping { up, down, end_up } => {
                    tokio::spawn(flipping(shared, name, up, down, end_up, seed, stop))
                }
                Plan::DownOnce { after } => {
                    tokio::spawn(down_once(shared, name, after, seed, stop))
                }
            };
            tasks.push(task);
        }
    }

    /// After the load stopped and the cluster healed: waits for the nemesis to remove its bad
    /// paths and fix the final modes, flips the slow flipper once more (so the healed cluster
    /// has a change to detect), and records the settle time.
    pub async fn settle(&self) {
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            if let Err(error) = task.await {
                eprintln!("jepsen-tests: endpoint nemesis task: {error}");
            }
        }
        for spec in &self.endpoints {
            let up = self.shared.mode(&spec.name).is_up();
            let mode = match spec.plan {
                Plan::Flipping { end_up: false, .. } if up => Mode::Failing,
                Plan::Flipping { end_up: false, .. } | Plan::DownOnce { .. } => Mode::Up,
                Plan::DownAfterHeal => Mode::Failing,
                _ => continue,
            };
            self.shared.set_mode(&spec.name, mode);
        }
        self.shared.record(HealthEntry::Settle {
            time: self.shared.history.now(),
        });
    }

    /// Whether `instances` (a GetService answer) shows every endpoint's check settled as its
    /// current mode implies ([`crate::checker::health::settled`]).
    pub fn settled(&self, instances: &[crate::history::InstanceRecord]) -> bool {
        self.endpoints.iter().all(|spec| {
            let up = self.shared.mode(&spec.name).is_up();
            instances
                .iter()
                .find(|instance| instance.id == spec.name)
                .and_then(|instance| instance.checks.iter().find(|check| check.id == CHECK_ID))
                .is_some_and(|check| crate::checker::health::settled(up, check))
        })
    }

    /// Stops the endpoints (after the final reads).
    pub fn stop_endpoints(&self) {
        if let Some(shutdown) = lock(&self.shutdown).take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                eprintln!("jepsen-tests: the endpoint thread panicked");
            }
        }
    }

    /// The records (`health.jsonl`), in time order.
    pub fn entries(&self) -> Vec<HealthEntry> {
        let mut entries = lock(&self.shared.entries).clone();
        entries.sort_by_key(HealthEntry::time);
        entries
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop_endpoints();
    }
}

/// Serves one endpoint until aborted; the connections are owned here, so they end with it.
async fn serve(listener: tokio::net::TcpListener, endpoint: Arc<str>, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let node = match peer {
            SocketAddr::V4(peer) => shared.node_ips.iter().position(|ip| ip == peer.ip()),
            SocketAddr::V6(_) => None,
        };
        let endpoint = endpoint.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let service =
                service_fn(move |request| answer(request, endpoint.clone(), node, shared.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
    endpoint: Arc<str>,
    node: Option<usize>,
    shared: Arc<Shared>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let member = request
        .headers()
        .get("x-beacon-member")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let time = shared.history.now();
    let mode = shared.mode(&endpoint);
    let status: u16 = if mode.is_up() { 200 } else { 503 };
    shared.record(HealthEntry::Probe {
        time,
        endpoint: endpoint.to_string(),
        node,
        member,
        status,
    });
    if mode == Mode::Hanging {
        tokio::time::sleep(HANG).await;
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(format!(
        "{endpoint} {}",
        if status == 200 { "ok" } else { "down" }
    ))));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    Ok(response)
}

/// Records every gap of the endpoints' thread of at least [`STALL`].
async fn watch_stalls(shared: Arc<Shared>) {
    let tick = Duration::from_millis(20);
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let gap = now.duration_since(last);
        if gap >= STALL + tick {
            let gap_nanos = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
            shared.record(HealthEntry::Stall {
                time: shared.history.now().saturating_sub(gap_nanos),
                millis: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            });
        }
        last = now;
    }
}

fn seconds(range: &Range<f64>, rng: &mut StdRng) -> Duration {
    Duration::from_secs_f64(rng.gen_range(range.clone()))
}

fn down_mode(rng: &mut StdRng) -> Mode {
    if rng.gen_bool(1.0 / 3.0) {
        Mode::Hanging
    } else {
        Mode::Failing
    }
}

async fn flipping(
    shared: Arc<Shared>,
    endpoint: String,
    up: Range<f64>,
    down: Range<f64>,
    end_up: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        if sleep_unless_stopped(seconds(&up, &mut rng), &stop).await {
            break;
        }
        shared.set_mode(&endpoint, down_mode(&mut rng));
        if sleep_unless_stopped(seconds(&down, &mut rng), &stop).await {
            break;
        }
        shared.set_mode(&endpoint, Mode::Up);
    }
    if end_up {
        shared.set_mode(&endpoint, Mode::Up);
    }
}

async fn down_once(
    shared: Arc<Shared>,
    endpoint: String,
    after: Range<f64>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    if !sleep_unless_stopped(seconds(&after, &mut rng), &stop).await {
        shared.set_mode(&endpoint, down_mode(&mut rng));
    }
}

async fn bad_paths(
    shared: Arc<Shared>,
    faults: Arc<PathFaults>,
    endpoint: String,
    port: u16,
    nodes: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        if sleep_unless_stopped(seconds(&(2.0..6.0), &mut rng), &stop).await {
            break;
        }
        let owner = shared.recent_prober(&endpoint, Duration::from_secs(3));
        let node = match owner {
            Some(owner) if rng.gen_bool(0.75) => owner,
            _ => rng.gen_range(0..nodes),
        };
        // Recorded from before the rule is loaded: from then on the path counts as cut.
        let time = shared.history.now();
        let error = faults.set(node, port, true).await.err();
        shared.record(HealthEntry::BadPath {
            time,
            endpoint: endpoint.clone(),
            node,
            on: true,
            owner,
            error: error.map(|error| format!("{error:#}")),
        });
        let stopped = sleep_unless_stopped(seconds(&(5.0..12.0), &mut rng), &stop).await;
        let error = faults.set(node, port, false).await.err();
        // Recorded once the rule is gone: until then the path counts as cut.
        shared.record(HealthEntry::BadPath {
            time: shared.history.now(),
            endpoint: endpoint.clone(),
            node,
            on: false,
            owner: None,
            error: error.map(|error| format!("{error:#}")),
        });
        if stopped {
            break;
        }
    }
}
