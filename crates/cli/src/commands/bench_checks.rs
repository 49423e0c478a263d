//! `bench checks`: capacity of the cluster's health checker (Beacon only). The bench serves the
//! checked endpoints itself, so it sees every probe the members send.
//!
//! Phases (fixed here so runs compare):
//! 1. An HTTP/1.1 server on `--listen` answers `GET /health/N` with 200 (500 once N is made to
//!    fail), keeping connections alive, and counts probes per path and per probing member (the
//!    `X-Beacon-Member` header every member sends).
//! 2. Leftover instances of `--service` are deregistered; the members' idle CPU is sampled;
//!    then `--checks` persistent instances `c0..cN` are registered (`--concurrency` Register
//!    calls in flight), each with one HTTP check of `/health/N` at `--interval` and
//!    `--check-timeout`, thresholds left at their defaults. A WatchService stream opened before
//!    follows every instance's health; the bench waits until all pass (confirmed by GetService).
//! 3. Steady state over `--window` (3 intervals by default): probes/s at the server, whether
//!    every check was probed on schedule (each path between window/interval − 1 and
//!    window/interval + 1 times), the gaps between probes of one path, the split by member, and
//!    the CPU time (utime + stime in `/proc/<pid>/stat`) each member used.
//! 4. Detection lag: `--failing` endpoints, spread over the fleet, answer 500 from time T; the
//!    lag of each is the time from T until the watch shows its instance critical, compared with
//!    the target `interval × failures_before_critical + 1 s`.
//! 5. The instances are deregistered (unless `--keep`).
//!
//! The report is formatted here rather than in `crate::output` (where the other bench reports
//! live) because its shape, phases with prose lines and a member table, is its own; move it
//! there if another command ever shares it.
//!
//! The HTTP server is a minimal hand-written HTTP/1.1 responder (request line, headers,
//! Content-Length bodies, keep-alive): it only ever talks to the members' reqwest clients, and
//! it keeps the CLI free of a server stack for the sake of one benchmark.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_client::beaconpb::instance_event::EventType;
use beacon_client::beaconpb::{check, Check, HealthStatus, HttpCheck, Instance};
use beacon_client::{Client, ServiceUpdate, ServiceWatcher};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch as signal;
use tokio::task::JoinSet;

use crate::args::parse_duration;
use crate::commands::bench_watch::new_histogram;
use crate::output::Format;

/// `bench checks`.
#[derive(Debug, Args)]
pub struct ChecksBench {
    /// Instances to register, one HTTP check each.
    #[arg(long, default_value_t = 10_000)]
    pub checks: usize,
    /// Interval of every check.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Timeout of every check (default: 2 s, or half the interval when that is shorter, since
    /// the server wants a timeout below the interval).
    #[arg(long, value_parser = parse_duration)]
    pub check_timeout: Option<Duration>,
    /// Steady-state measurement window (default: 3 intervals).
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// Endpoints made to fail for the detection-lag measurement.
    #[arg(long, default_value_t = 10)]
    pub failing: usize,
    /// Register (and Deregister) calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// PIDs of the members, in the order of --endpoints, whose CPU time is sampled (default:
    /// the processes listening on the endpoints' ports, when those are on this machine).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// How long the members' idle CPU is sampled before registering.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Where the checked endpoints are served (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The registered service.
    #[arg(long, default_value = "bench-checks")]
    pub service: String,
    /// Leave the instances registered at the end.
    #[arg(long)]
    pub keep: bool,
}

/// Linux reports CPU times in clock ticks of `sysconf(_SC_CLK_TCK)`, which is 100 on every
/// architecture Linux supports today (USER_HZ); reading it would need libc for one constant.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// The checked endpoints.

/// What the HTTP server counts. Per-path counters are atomics so that probes from every
/// connection count without a lock; only the per-member split and the gap histogram lock.
struct Endpoints {
    started: Instant,
    /// Probes per path since the start.
    probes: Vec<AtomicU64>,
    /// Microseconds since `started` of each path's last probe (0: never probed).
    last_probe_us: Vec<AtomicU64>,
    /// The member that last probed each path (0: none, or no header).
    last_member: Vec<AtomicU64>,
    /// Paths answering 500.
    failing: Vec<AtomicBool>,
    /// Microseconds since `started` of the first 500 each path answered (0: none yet).
    first_failure_us: Vec<AtomicU64>,
    /// For failing paths: the member that owned the path when it started failing.
    owner_at_failure: Vec<AtomicU64>,
    /// Probes of failing paths by another member than their owner (second-member confirmations).
    foreign_probes: AtomicU64,
    /// Probes of every path.
    total: AtomicU64,
    /// Requests for anything but `/health/N`.
    unknown: AtomicU64,
    /// Probes by member id (0: without the header).
    by_member: Mutex<BTreeMap<u64, u64>>,
    /// While set, gaps between probes of a path and owner changes are recorded.
    recording: AtomicBool,
    gaps: Mutex<Histogram<u64>>,
    owner_changes: AtomicU64,
}

impl Endpoints {
    fn new(checks: usize) -> Self {
        let counters = || (0..checks).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Endpoints {
            started: Instant::now(),
            probes: counters(),
            last_probe_us: counters(),
            last_member: counters(),
            failing: (0..checks).map(|_| AtomicBool::new(false)).collect(),
            first_failure_us: counters(),
            owner_at_failure: counters(),
            foreign_probes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            by_member: Mutex::new(BTreeMap::new()),
            recording: AtomicBool::new(false),
            gaps: Mutex::new(new_histogram()),
            owner_changes: AtomicU64::new(0),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_micros().max(1) as u64
    }

    /// Counts one request for `target` from `member`; returns the status line to answer.
    fn on_request(&self, target: &str, member: u64) -> &'static str {
        let index = target
            .strip_prefix("/health/")
            .and_then(|number| number.parse::<usize>().ok())
            .filter(|index| *index < self.probes.len());
        let Some(index) = index else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return "404 Not Found";
        };
        let now = self.micros(Instant::now());
        self.total.fetch_add(1, Ordering::Relaxed);
        self.probes[index].fetch_add(1, Ordering::Relaxed);
        *self
            .by_member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(member)
            .or_default() += 1;
        let previous_at = self.last_probe_us[index].swap(now, Ordering::Relaxed);
        let previous_member = self.last_member[index].swap(member, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            if previous_at != 0 {
                self.gaps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(now.saturating_sub(previous_at).max(1));
            }
            if previous_member != 0 && previous_member != member {
                self.owner_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !self.failing[index].load(Ordering::Relaxed) {
            return "200 OK";
        }
        let _ = self.first_failure_us[index].compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let owner = self.owner_at_failure[index].load(Ordering::Relaxed);
        if owner != 0 && owner != member {
            self.foreign_probes.fetch_add(1, Ordering::Relaxed);
        }
        "500 Internal Server Error"
    }

    /// Makes `index` answer 500 from now on, remembering which member owned it.
    fn fail(&self, index: usize) {
        let owner = self.last_member[index].load(Ordering::Relaxed);
        self.owner_at_failure[index].store(owner, Ordering::Relaxed);
        self.failing[index].store(true, Ordering::Relaxed);
    }

    fn probe_counts(&self) -> Vec<u64> {
        self.probes
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    fn member_counts(&self) -> BTreeMap<u64, u64> {
        self.by_member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Accepts connections until the task is aborted.
async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let endpoints = endpoints.clone();
                tokio::spawn(async move {
                    // A connection that breaks mid-request only loses that request; the member
                    // counts it as a failed probe, which the report shows.
                    let _ = serve_connection(stream, endpoints).await;
                });
            }
            // Out of file descriptors and the like: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The longest request line or header line accepted.
const MAX_LINE: usize = 8 * 1024;

/// Answers the requests of one keep-alive connection in turn.
async fn serve_connection(stream: TcpStream, endpoints: Arc<Endpoints>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue; // Tolerated between requests (RFC 9112 §2.2).
        }
        let mut parts = line.split_ascii_whitespace();
        let target = parts.nth(1).unwrap_or("").to_string();
        let mut close = parts.next() == Some("HTTP/1.0");
        let mut member = 0;
        let mut body = 0u64;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("x-beacon-member") {
                member = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("content-length") {
                body = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if body > 0 {
            tokio::io::copy(&mut (&mut reader).take(body), &mut tokio::io::sink()).await?;
        }
        let status = endpoints.on_request(&target, member);
        let text = if status.starts_with('2') {
            "ok\n"
        } else {
            "failing\n"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        writer.write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet as the service watch shows it.

/// Each instance's health as delivered by the watch, and every change of it.
struct Fleet {
    /// By index; `Unspecified` while not registered.
    health: Vec<HealthStatus>,
    passing: usize,
    /// (index, new health, when the watch delivered it).
    transitions: Vec<(usize, HealthStatus, Instant)>,
    /// `failures_before_critical` of the checks as stored (normalized by the server).
    failures_before_critical: Option<u32>,
}

impl Fleet {
    fn set(&mut self, index: usize, health: HealthStatus, at: Instant) {
        let previous = std::mem::replace(&mut self.health[index], health);
        if previous == health {
            return;
        }
        if previous == HealthStatus::Passing {
            self.passing -= 1;
        }
        if health == HealthStatus::Passing {
            self.passing += 1;
        }
        self.transitions.push((index, health, at));
    }

    fn apply(&mut self, instance: &Instance, health: HealthStatus, at: Instant) {
        let index = instance
            .id
            .strip_prefix('c')
            .and_then(|number| number.parse::<usize>().ok())
            .filter(|index| *index < self.health.len());
        if let Some(index) = index {
            if let Some(check) = instance.checks.first() {
                self.failures_before_critical
                    .get_or_insert(check.failures_before_critical);
            }
            self.set(index, health, at);
        }
    }
}

/// Applies every update of `watcher` to `fleet`, bumping `changed` after each.
async fn follow(
    mut watcher: ServiceWatcher,
    fleet: Arc<Mutex<Fleet>>,
    changed: signal::Sender<u64>,
) -> anyhow::Result<()> {
    loop {
        let update = watcher.next().await.context("service watch failed")?;
        let at = Instant::now();
        {
            let mut fleet = fleet.lock().unwrap_or_else(PoisonError::into_inner);
            match &update {
                ServiceUpdate::Snapshot { instances, .. } => {
                    for instance in instances {
                        fleet.apply(instance, instance.health(), at);
                    }
                }
                ServiceUpdate::Changes { events, .. } => {
                    for event in events {
                        let Some(instance) = &event.instance else {
                            continue;
                        };
                        let health = match event.r#type() {
                            EventType::Put => instance.health(),
                            EventType::Delete => HealthStatus::Unspecified,
                        };
                        fleet.apply(instance, health, at);
                    }
                }
            }
        }
        changed.send_modify(|count| *count += 1);
    }
}

/// Waits until `done` holds for the fleet, or until `deadline`; returns whether it held.
async fn wait_for(
    fleet: &Mutex<Fleet>,
    changed: &mut signal::Receiver<u64>,
    deadline: tokio::time::Instant,
    done: impl Fn(&Fleet) -> bool,
) -> anyhow::Result<bool> {
    loop {
        if done(&fleet.lock().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => anyhow::bail!("the service watch ended"),
            Err(_) => return Ok(false),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Members and their CPU.

/// One member as the bench sees it.
#[derive(Debug, Clone)]
struct Member {
    endpoint: String,
    id: u64,
    pid: Option<u32>,
}

/// `host:port` of an endpoint given as `host:port` or `http(s)://host:port`.
fn host_port(endpoint: &str) -> &str {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    rest.trim_end_matches('/')
}

/// The process listening on TCP `port` on this machine: the listening socket's inode from
/// `/proc/net/tcp{,6}`, then the process holding a descriptor of it.
fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_ascii_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if listening && local_port == Some(port) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            let Ok(link) = std::fs::read_link(descriptor.path()) else {
                continue;
            };
            if link.to_str().is_some_and(|link| inodes.contains(link)) {
                return Some(pid);
            }
        }
    }
    None
}

/// utime + stime of process `pid` in seconds (`None` when it cannot be read).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from its end.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are fields[11] and fields[12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// Each member's CPU seconds (by position in `members`) and the bench's own.
fn cpu_sample(members: &[Member]) -> (Vec<Option<f64>>, Option<f64>) {
    let per_member = members
        .iter()
        .map(|member| member.pid.and_then(|pid| cpu_seconds(&pid.to_string())))
        .collect();
    (per_member, cpu_seconds("self"))
}

/// Cores used between two samples `seconds` apart.
fn cores(before: Option<f64>, after: Option<f64>, seconds: f64) -> Option<f64> {
    Some((after? - before?) / seconds)
}

async fn members(client: &Client, pids: &[u32]) -> anyhow::Result<Vec<Member>> {
    let endpoints = client.endpoints();
    anyhow::ensure!(
        pids.is_empty() || pids.len() == endpoints.len(),
        "--pids needs one PID per endpoint, in the order of --endpoints"
    );
    let mut members = Vec::new();
    for (position, endpoint) in endpoints.into_iter().enumerate() {
        let status = client
            .status(&endpoint)
            .await
            .with_context(|| format!("status of {endpoint}"))?;
        let id = status.header.unwrap_or_default().member_id;
        let pid = match pids.get(position) {
            Some(pid) => Some(*pid),
            None => {
                let host_port = host_port(&endpoint);
                let local = ["127.", "localhost:", "[::1]:"]
                    .iter()
                    .any(|prefix| host_port.starts_with(prefix));
                let port = host_port
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse().ok());
                port.filter(|_| local).and_then(pid_listening_on)
            }
        };
        members.push(Member { endpoint, id, pid });
    }
    Ok(members)
}

// ---------------------------------------------------------------------------------------------
// Registration.

fn instance_id(index: usize) -> String {
    format!("c{index}")
}

/// Runs `call` for every index with at most `concurrency` calls in flight; returns the number
/// of failures and the first error.
async fn for_each_index<F, Fut>(
    count: usize,
    concurrency: usize,
    call: F,
) -> (usize, Option<String>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut next = 0;
    let (mut failures, mut first_error) = (0, None);
    loop {
        while next < count && tasks.len() < concurrency {
            tasks.spawn(call(next));
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(panic) => panic.to_string(),
        };
        failures += 1;
        first_error.get_or_insert(error);
    }
    (failures, first_error)
}

async fn deregister_all(
    client: &Client,
    service: &str,
    ids: Vec<String>,
    concurrency: usize,
) -> (usize, Option<String>) {
    let ids = Arc::new(ids);
    for_each_index(ids.len(), concurrency, |index| {
        let (client, service, ids) = (client.clone(), service.to_string(), ids.clone());
        async move {
            client
                .deregister(&service, &ids[index])
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One member's row of the report.
#[derive(Debug, Clone)]
pub struct MemberReport {
    pub id: u64,
    pub endpoint: Option<String>,
    pub pid: Option<u32>,
    /// Probes per second it sent during the window.
    pub probes_per_second: f64,
    /// Distinct checks it probed last during the window.
    pub checks: u64,
    /// Cores it used during the window, and while idle before registering.
    pub cpu_cores: Option<f64>,
    pub idle_cores: Option<f64>,
}

/// The detection-lag phase.
#[derive(Debug, Clone)]
pub struct DetectionReport {
    pub endpoints: usize,
    pub failures_before_critical: u32,
    pub target_seconds: f64,
    /// Seconds from T to each event, sorted; missing ones never arrived before the deadline.
    pub first_failed_probe: Vec<f64>,
    pub warning: Vec<f64>,
    pub critical: Vec<f64>,
    /// Probes of the failing endpoints by a member other than their owner (confirmations).
    pub confirmation_probes: u64,
}

/// Everything `bench checks` measured.
#[derive(Debug, Clone)]
pub struct ChecksReport {
    pub checks: usize,
    pub interval_seconds: f64,
    pub check_timeout_seconds: f64,
    pub listen: SocketAddr,
    pub removed_leftovers: usize,
    pub register_seconds: f64,
    pub register_errors: usize,
    pub first_register_error: Option<String>,
    /// From the first Register sent until the watch showed every instance passing.
    pub all_passing_seconds: Option<f64>,
    /// Passing instances when the wait ended (all of them when `all_passing_seconds` is set).
    pub passing: usize,
    pub window_seconds: f64,
    pub probes: u64,
    pub probes_per_second: f64,
    pub expected_per_second: f64,
    /// Probes counted in each whole second of the window: min and max.
    pub per_second_min: u64,
    pub per_second_max: u64,
    pub expected_per_check: f64,
    pub late: usize,
    pub never_probed: usize,
    pub duplicated: usize,
    /// Gaps between consecutive probes of one path that ended in the window, in seconds:
    /// p50, p99, max.
    pub gap_seconds: [f64; 3],
    pub owner_changes: u64,
    /// Instances not made to fail that left passing after all passed.
    pub left_passing: usize,
    pub unknown_requests: u64,
    pub members: Vec<MemberReport>,
    pub bench_cores: Option<f64>,
    pub detection: Option<DetectionReport>,
    /// Deregistered instances and errors; `None` with `--keep`.
    pub cleanup: Option<(usize, usize, f64)>,
}

impl ChecksReport {
    /// Every path probed between expected − 1 and expected + 1 times.
    pub fn on_schedule(&self) -> bool {
        self.late == 0 && self.duplicated == 0
    }

    pub fn cluster_cores(&self) -> Option<f64> {
        self.members.iter().map(|member| member.cpu_cores).sum()
    }

    pub fn cluster_idle_cores(&self) -> Option<f64> {
        self.members.iter().map(|member| member.idle_cores).sum()
    }
}

impl DetectionReport {
    /// Every failing endpoint turned critical within the target.
    pub fn pass(&self) -> bool {
        self.critical.len() == self.endpoints
            && self
                .critical
                .last()
                .is_some_and(|max| *max <= self.target_seconds)
    }
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], quantile: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Runs `bench checks`; see the module docs.
pub async fn run(client: &Client, bench: ChecksBench) -> anyhow::Result<ChecksReport> {
    anyhow::ensure!(
        bench.checks > 0 && bench.concurrency > 0,
        "--checks and --concurrency must be at least 1"
    );
    anyhow::ensure!(
        bench.failing <= bench.checks,
        "--failing cannot exceed --checks"
    );
    let members = members(client, &bench.pids).await?;
    let listener = TcpListener::bind(bench.listen)
        .await
        .with_context(|| format!("cannot listen on {}", bench.listen))?;
    let listen = listener.local_addr().context("listener address")?;
    let endpoints = Arc::new(Endpoints::new(bench.checks));
    let server = tokio::spawn(serve(listener, endpoints.clone()));
    let outcome = measure(client, &bench, &members, listen, &endpoints).await;
    server.abort();
    outcome
}

async fn measure(
    client: &Client,
    bench: &ChecksBench,
    members: &[Member],
    listen: SocketAddr,
    endpoints: &Arc<Endpoints>,
) -> anyhow::Result<ChecksReport> {
    let service = bench.service.as_str();
    let checks = bench.checks;
    for member in members {
        eprintln!(
            "member {} at {}: pid {}",
            member.id,
            member.endpoint,
            member
                .pid
                .map_or("unknown (no CPU figures)".to_string(), |pid| pid
                    .to_string())
        );
    }

    // Leftovers of an earlier run (--keep, or an interrupted run) would be probed too.
    let leftovers: Vec<String> = client
        .get_service(service, false)
        .await
        .context("reading the service")?
        .instances
        .into_iter()
        .map(|instance| instance.id)
        .collect();
    let removed_leftovers = leftovers.len();
    if removed_leftovers > 0 {
        eprintln!("deregistering {removed_leftovers} instances left over in {service}");
        let (failures, error) = deregister_all(client, service, leftovers, bench.concurrency).await;
        anyhow::ensure!(
            failures == 0,
            "could not deregister {failures} leftovers: {}",
            error.unwrap_or_default()
        );
    }

    eprintln!("sampling idle CPU for {:?}", bench.idle);
    let (idle_before, _) = cpu_sample(members);
    let idle_started = Instant::now();
    tokio::time::sleep(bench.idle).await;
    let (idle_after, _) = cpu_sample(members);
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let idle_cores: Vec<Option<f64>> = idle_before
        .iter()
        .zip(&idle_after)
        .map(|(before, after)| cores(*before, *after, idle_seconds))
        .collect();

    let fleet = Arc::new(Mutex::new(Fleet {
        health: vec![HealthStatus::Unspecified; checks],
        passing: 0,
        transitions: Vec::new(),
        failures_before_critical: None,
    }));
    let (changed, mut changes) = signal::channel(0u64);
    let watcher = client
        .watch_service(service, 0)
        .await
        .context("opening the service watch")?;
    let follower = tokio::spawn(follow(watcher, fleet.clone(), changed));

    let outcome = measure_registered(
        client,
        bench,
        members,
        listen,
        endpoints,
        &fleet,
        &mut changes,
        &idle_cores,
    )
    .await;
    follower.abort();

    let cleanup = if bench.keep {
        None
    } else {
        eprintln!("deregistering {checks} instances");
        let started = Instant::now();
        let ids = (0..checks).map(instance_id).collect();
        let (failures, _) = deregister_all(client, service, ids, bench.concurrency).await;
        Some((checks - failures, failures, started.elapsed().as_secs_f64()))
    };
    let mut report = outcome?;
    report.removed_leftovers = removed_leftovers;
    report.cleanup = cleanup;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn measure_registered(
    client: &Client,
    bench: &ChecksBench,
    members: &[Member],
    listen: SocketAddr,
    endpoints: &Arc<Endpoints>,
    fleet: &Arc<Mutex<Fleet>>,
    changes: &mut signal::Receiver<u64>,
    idle_cores: &[Option<f64>],
) -> anyhow::Result<ChecksReport> {
    let checks = bench.checks;
    let interval = bench.interval;
    let check_timeout = bench
        .check_timeout
        .unwrap_or((interval / 2).min(Duration::from_secs(2)));

    // Phase 2: register, wait until all pass.
    eprintln!("registering {checks} instances with HTTP checks every {interval:?}");
    let started = Instant::now();
    let template = Instance {
        service: bench.service.clone(),
        address: listen.ip().to_string(),
        port: u32::from(listen.port()),
        tags: vec!["bench".to_string()],
        ..Default::default()
    };
    let check_template = Check {
        id: "http".to_string(),
        interval_ms: interval.as_millis() as u64,
        timeout_ms: check_timeout.as_millis() as u64,
        ..Default::default()
    };
    let (register_errors, first_register_error) =
        for_each_index(checks, bench.concurrency, |index| {
            let client = client.clone();
            let mut instance = template.clone();
            instance.id = instance_id(index);
            let mut check = check_template.clone();
            check.kind = Some(check::Kind::Http(HttpCheck {
                url: format!("http://{listen}/health/{index}"),
                method: "GET".to_string(),
                ..Default::default()
            }));
            instance.checks = vec![check];
            async move {
                client
                    .register(instance)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            }
        })
        .await;
    let register_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "registered in {register_seconds:.1} s ({register_errors} errors); waiting until all pass"
    );
    if register_errors == checks {
        anyhow::bail!(
            "every Register failed, e.g. {}",
            first_register_error.unwrap_or_default()
        );
    }
    let wanted = checks - register_errors;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60) + interval * 3;
    let all_passed = wait_for(fleet, changes, deadline, |fleet| fleet.passing >= wanted).await?;
    let all_passing_seconds = all_passed.then(|| started.elapsed().as_secs_f64());
    let settled_at = Instant::now();
    let passing = fleet.lock().unwrap_or_else(PoisonError::into_inner).passing;
    let confirmed = client
        .get_service(&bench.service, false)
        .await
        .context("GetService after registering")?
        .instances
        .iter()
        .filter(|instance| instance.health() == HealthStatus::Passing)
        .count();
    eprintln!(
        "{} passing by the watch, {confirmed} by GetService",
        passing
    );

    // Phase 3: steady state.
    let window = bench.window.unwrap_or(interval * 3);
    eprintln!("measuring the steady state for {window:?}");
    let (cpu_before, bench_before) = cpu_sample(members);
    let counts_before = endpoints.probe_counts();
    let members_before = endpoints.member_counts();
    let total_before = endpoints.total.load(Ordering::Relaxed);
    endpoints.recording.store(true, Ordering::Relaxed);
    let window_started = Instant::now();
    let mut per_second = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut last_total = total_before;
    while window_started.elapsed() + Duration::from_secs(1) <= window {
        ticks.tick().await;
        let total = endpoints.total.load(Ordering::Relaxed);
        per_second.push(total - last_total);
        last_total = total;
    }
    tokio::time::sleep(window.saturating_sub(window_started.elapsed())).await;
    endpoints.recording.store(false, Ordering::Relaxed);
    let window_seconds = window_started.elapsed().as_secs_f64();
    let (cpu_after, bench_after) = cpu_sample(members);
    let counts_after = endpoints.probe_counts();
    let members_after = endpoints.member_counts();
    let probes = endpoints.total.load(Ordering::Relaxed) - total_before;

    let expected_per_check = window.as_secs_f64() / interval.as_secs_f64();
    let mut late = 0;
    let mut never_probed = 0;
    let mut duplicated = 0;
    for (before, after) in counts_before.iter().zip(&counts_after) {
        let count = (after - before) as f64;
        if count < expected_per_check - 1.0 {
            late += 1;
        }
        if count == 0.0 {
            never_probed += 1;
        }
        if count > expected_per_check + 1.0 {
            duplicated += 1;
        }
    }
    let gap_seconds = {
        let gaps = endpoints
            .gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seconds = |micros: u64| micros as f64 / 1e6;
        [
            seconds(gaps.value_at_quantile(0.50)),
            seconds(gaps.value_at_quantile(0.99)),
            seconds(gaps.max()),
        ]
    };

    // The split by member: probes in the window, and the checks each member probed last.
    let mut checks_by_member: HashMap<u64, u64> = HashMap::new();
    for (index, (before, after)) in counts_before.iter().zip(&counts_after).enumerate() {
        if after > before {
            let member = endpoints.last_member[index].load(Ordering::Relaxed);
            *checks_by_member.entry(member).or_default() += 1;
        }
    }
    let mut member_ids: Vec<u64> = members.iter().map(|member| member.id).collect();
    for id in members_after.keys() {
        if !member_ids.contains(id) {
            member_ids.push(*id);
        }
    }
    let member_reports = member_ids
        .iter()
        .map(|id| {
            let position = members.iter().position(|member| member.id == *id);
            let sent = members_after.get(id).copied().unwrap_or(0)
                - members_before.get(id).copied().unwrap_or(0);
            MemberReport {
                id: *id,
                endpoint: position.map(|position| members[position].endpoint.clone()),
                pid: position.and_then(|position| members[position].pid),
                probes_per_second: sent as f64 / window_seconds,
                checks: checks_by_member.get(id).copied().unwrap_or(0),
                cpu_cores: position.and_then(|position| {
                    cores(cpu_before[position], cpu_after[position], window_seconds)
                }),
                idle_cores: position.and_then(|position| idle_cores[position]),
            }
        })
        .collect();

    // Phase 4: detection lag.
    let detection = if bench.failing == 0 {
        None
    } else {
        let failing: Vec<usize> = (0..bench.failing)
            .map(|number| number * checks / bench.failing)
            .collect();
        eprintln!(
            "making {} endpoints fail (c{}…); waiting for critical",
            failing.len(),
            failing[0]
        );
        let stored_threshold = fleet
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failures_before_critical;
        let failures_before_critical = stored_threshold
            .filter(|threshold| *threshold > 0)
            .unwrap_or(3);
        let target = interval * failures_before_critical + Duration::from_secs(1);
        let failed_at = Instant::now();
        let failed_at_us = endpoints.micros(failed_at);
        for index in &failing {
            endpoints.fail(*index);
        }
        let deadline = tokio::time::Instant::now() + target * 2 + Duration::from_secs(10);
        let failing_set: HashSet<usize> = failing.iter().copied().collect();
        wait_for(fleet, changes, deadline, |fleet| {
            failing
                .iter()
                .all(|index| fleet.health[*index] == HealthStatus::Critical)
        })
        .await?;
        let fleet = fleet.lock().unwrap_or_else(PoisonError::into_inner);
        let first_after = |status: HealthStatus| {
            let mut lags: Vec<f64> = failing
                .iter()
                .filter_map(|index| {
                    fleet
                        .transitions
                        .iter()
                        .find(|(changed, health, at)| {
                            changed == index && *health == status && *at >= failed_at
                        })
                        .map(|(_, _, at)| at.duration_since(failed_at).as_secs_f64())
                })
                .collect();
            lags.sort_by(f64::total_cmp);
            lags
        };
        let mut first_failed_probe: Vec<f64> = failing
            .iter()
            .filter_map(|index| {
                let at = endpoints.first_failure_us[*index].load(Ordering::Relaxed);
                (at != 0).then(|| at.saturating_sub(failed_at_us) as f64 / 1e6)
            })
            .collect();
        first_failed_probe.sort_by(f64::total_cmp);
        let report = DetectionReport {
            endpoints: failing.len(),
            failures_before_critical,
            target_seconds: target.as_secs_f64(),
            first_failed_probe,
            warning: first_after(HealthStatus::Warning),
            critical: first_after(HealthStatus::Critical),
            confirmation_probes: endpoints.foreign_probes.load(Ordering::Relaxed),
        };
        drop(fleet);
        // Leave the endpoints healthy again for whatever follows (--keep).
        for index in &failing_set {
            endpoints.failing[*index].store(false, Ordering::Relaxed);
        }
        Some((report, failing_set))
    };

    let failing_set = detection
        .as_ref()
        .map(|(_, set)| set.clone())
        .unwrap_or_default();
    let left_passing = fleet
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .transitions
        .iter()
        .filter(|(index, health, at)| {
            *at >= settled_at && *health != HealthStatus::Passing && !failing_set.contains(index)
        })
        .map(|(index, _, _)| *index)
        .collect::<HashSet<_>>()
        .len();

    Ok(ChecksReport {
        checks,
        interval_seconds: interval.as_secs_f64(),
        check_timeout_seconds: check_timeout.as_secs_f64(),
        listen,
        removed_leftovers: 0,
        register_seconds,
        register_errors,
        first_register_error,
        all_passing_seconds,
        passing,
        window_seconds,
        probes,
        probes_per_second: probes as f64 / window_seconds,
        expected_per_second: checks as f64 / interval.as_secs_f64(),
        per_second_min: per_second.iter().copied().min().unwrap_or(0),
        per_second_max: per_second.iter().copied().max().unwrap_or(0),
        expected_per_check,
        late,
        never_probed,
        duplicated,
        gap_seconds,
        owner_changes: endpoints.owner_changes.load(Ordering::Relaxed),
        left_passing,
        unknown_requests: endpoints.unknown.load(Ordering::Relaxed),
        members: member_reports,
        bench_cores: cores(bench_before, bench_after, window_seconds),
        detection: detection.map(|(report, _)| report),
        cleanup: None,
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".to_string(), |value| format!("{value:.digits$}"))
}

/// Cores per 1,000 checks.
fn per_thousand(cores: Option<f64>, checks: u64) -> Option<f64> {
    (checks > 0).then_some(())?;
    Some(cores? / (checks as f64 / 1000.0))
}

/// Left-aligned columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths = Vec::new();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if widths.len() <= column {
                widths.push(0);
            }
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The report as text (`-o table`) or one JSON document (`-o json`).
pub fn render(format: Format, report: &ChecksReport) -> String {
    match format {
        Format::Json => render_json(report).to_string(),
        Format::Table => render_text(report),
    }
}

fn render_text(report: &ChecksReport) -> String {
    let mut lines = Vec::new();
    lines.push(format!(
        "bench checks: {} HTTP checks every {} s (timeout {} s), endpoints at http://{}/health/N",
        report.checks, report.interval_seconds, report.check_timeout_seconds, report.listen
    ));
    let mut register = format!(
        "register:   {} instances in {:.1} s ({:.0}/s, {} errors",
        report.checks,
        report.register_seconds,
        report.checks as f64 / report.register_seconds,
        report.register_errors
    );
    if let Some(error) = &report.first_register_error {
        register.push_str(&format!(", first: {error}"));
    }
    register.push_str("); ");
    register.push_str(&match report.all_passing_seconds {
        Some(seconds) => format!(
            "all passing {seconds:.1} s after the first Register ({:.1} s after the last)",
            seconds - report.register_seconds
        ),
        None => format!("NOT all passing: {} of {}", report.passing, report.checks),
    });
    lines.push(register);
    lines.push(format!(
        "probes:     {:.0}/s over {:.1} s (expected {:.0}/s; whole seconds min {} max {})",
        report.probes_per_second,
        report.window_seconds,
        report.expected_per_second,
        report.per_second_min,
        report.per_second_max
    ));
    lines.push(format!(
        "schedule:   on schedule: {} ({} late, {} duplicated; {} never probed; expected {:.1} \
         probes per check); gap between probes p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        if report.on_schedule() { "yes" } else { "no" },
        report.late,
        report.duplicated,
        report.never_probed,
        report.expected_per_check,
        report.gap_seconds[0],
        report.gap_seconds[1],
        report.gap_seconds[2]
    ));
    lines.push(format!(
        "stability:  {} checks changed prober during the window; {} healthy instances left \
         passing after all passed{}",
        report.owner_changes,
        report.left_passing,
        if report.unknown_requests > 0 {
            format!("; {} requests for unknown paths", report.unknown_requests)
        } else {
            String::new()
        }
    ));
    let mut rows = vec![[
        "MEMBER",
        "ENDPOINT",
        "PID",
        "PROBES/S",
        "CHECKS",
        "CPU",
        "IDLE CPU",
        "CPU/1K CHECKS",
        "NET/1K CHECKS",
    ]
    .map(String::from)
    .to_vec()];
    for member in &report.members {
        let net = member
            .cpu_cores
            .zip(member.idle_cores)
            .map(|(cores, idle)| cores - idle);
        rows.push(vec![
            if member.id == 0 {
                "(no header)".to_string()
            } else {
                member.id.to_string()
            },
            member.endpoint.clone().unwrap_or("-".to_string()),
            member.pid.map_or("-".to_string(), |pid| pid.to_string()),
            format!("{:.1}", member.probes_per_second),
            member.checks.to_string(),
            optional(member.cpu_cores, 3),
            optional(member.idle_cores, 3),
            optional(per_thousand(member.cpu_cores, member.checks), 4),
            optional(per_thousand(net, member.checks), 4),
        ]);
    }
    lines.push("members (CPU in cores = CPU seconds per second):".to_string());
    lines.push(columns(&rows));
    let total = report.cluster_cores();
    let idle = report.cluster_idle_cores();
    let net = total.zip(idle).map(|(total, idle)| total - idle);
    lines.push(format!(
        "cpu:        cluster {} cores ({} idle) = {} cores per 1,000 checks ({} net of idle); \
         bench process {} cores",
        optional(total, 3),
        optional(idle, 3),
        optional(per_thousand(total, report.checks as u64), 4),
        optional(per_thousand(net, report.checks as u64), 4),
        optional(report.bench_cores, 3)
    ));
    if let Some(detection) = &report.detection {
        let p50_max = |values: &[f64]| {
            format!(
                "p50 {} s, max {} s ({}/{})",
                optional(percentile(values, 0.5), 2),
                optional(values.last().copied(), 2),
                values.len(),
                detection.endpoints
            )
        };
        lines.push(format!(
            "detection:  {} endpoints failing from T: critical in the watch {}",
            detection.endpoints,
            p50_max(&detection.critical)
        ));
        lines.push(format!(
            "            target {:.1} s (interval {} s × failures_before_critical {} + 1 s): {}",
            detection.target_seconds,
            report.interval_seconds,
            detection.failures_before_critical,
            if detection.pass() { "pass" } else { "MISS" }
        ));
        lines.push(format!(
            "            first failed probe {}; warning {}; {} confirmation probes by other \
             members",
            p50_max(&detection.first_failed_probe),
            p50_max(&detection.warning),
            detection.confirmation_probes
        ));
    }
    lines.push(match report.cleanup {
        None => "cleanup:    kept (--keep)".to_string(),
        Some((deregistered, errors, seconds)) => format!(
            "cleanup:    deregistered {deregistered} in {seconds:.1} s ({errors} errors){}",
            if report.removed_leftovers > 0 {
                format!(
                    "; {} leftovers were deregistered first",
                    report.removed_leftovers
                )
            } else {
                String::new()
            }
        ),
    });
    lines.join("\n")
}

fn render_json(report: &ChecksReport) -> serde_json::Value {
    let members: Vec<serde_json::Value> = report
        .members
        .iter()
        .map(|member| {
            json!({
                "member_id": member.id,
                "endpoint": member.endpoint,
                "pid": member.pid,
                "probes_per_second": member.probes_per_second,
                "checks": member.checks,
                "cpu_cores": member.cpu_cores,
                "idle_cores": member.idle_cores,
                "cpu_cores_per_1000_checks": per_thousand(member.cpu_cores, member.checks),
            })
        })
        .collect();
    let detection = report.detection.as_ref().map(|detection| {
        json!({
            "endpoints": detection.endpoints,
            "failures_before_critical": detection.failures_before_critical,
            "target_seconds": detection.target_seconds,
            "critical_seconds": detection.critical,
            "critical_p50_seconds": percentile(&detection.critical, 0.5),
            "critical_max_seconds": detection.critical.last(),
            "warning_seconds": detection.warning,
            "first_failed_probe_seconds": detection.first_failed_probe,
            "confirmation_probes": detection.confirmation_probes,
            "pass": detection.pass(),
        })
    });
    json!({
        "case": "checks",
        "checks": report.checks,
        "interval_seconds": report.interval_seconds,
        "check_timeout_seconds": report.check_timeout_seconds,
        "register_seconds": report.register_seconds,
        "register_errors": report.register_errors,
        "all_passing_seconds": report.all_passing_seconds,
        "passing": report.passing,
        "window_seconds": report.window_seconds,
        "probes": report.probes,
        "probes_per_second": report.probes_per_second,
        "expected_probes_per_second": report.expected_per_second,
        "per_second_min": report.per_second_min,
        "per_second_max": report.per_second_max,
        "on_schedule": report.on_schedule(),
        "late": report.late,
        "duplicated": report.duplicated,
        "never_probed": report.never_probed,
        "gap_p50_seconds": report.gap_seconds[0],
        "gap_p99_seconds": report.gap_seconds[1],
        "gap_max_seconds": report.gap_seconds[2],
        "owner_changes": report.owner_changes,
        "left_passing": report.left_passing,
        "members": members,
        "cluster_cores": report.cluster_cores(),
        "cluster_idle_cores": report.cluster_idle_cores(),
        "cluster_cores_per_1000_checks": per_thousand(report.cluster_cores(), report.checks as u64),
        "bench_cores": report.bench_cores,
        "detection": detection,
        "deregistered": report.cleanup.map(|(deregistered, _, _)| deregistered),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_reads_this_process() {
        assert!(cpu_seconds("self").is_some());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&values, 0.5), Some(2.0));
        assert_eq!(percentile(&values, 1.0), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn the_endpoint_server_counts_by_path_and_member_and_fails_on_demand() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let endpoints = Arc::new(Endpoints::new(3));
        let server = tokio::spawn(serve(listener, endpoints.clone()));
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut responses = Vec::new();
        for (path, member) in [("/health/1", 7), ("/health/1", 8), ("/nothing", 7)] {
            if path == "/health/1" && member == 8 {
                endpoints.fail(1);
            }
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nX-Beacon-Member: {member}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut buffer = vec![0; 1024];
            let read = stream.read(&mut buffer).await.expect("read");
            responses.push(String::from_utf8_lossy(&buffer[..read]).to_string());
        }
        assert!(
            responses[0].starts_with("HTTP/1.1 200 OK"),
            "{}",
            responses[0]
        );
        assert!(responses[1].starts_with("HTTP/1.1 500"), "{}", responses[1]);
        assert!(responses[2].starts_with("HTTP/1.1 404"), "{}", responses[2]);
        assert_eq!(endpoints.probe_counts(), vec![0, 2, 0]);
        assert_eq!(endpoints.member_counts(), BTreeMap::from([(7, 1), (8, 1)]));
        assert_eq!(endpoints.unknown.load(Ordering::Relaxed), 1);
        assert_eq!(endpoints.foreign_probes.load(Ordering::Relaxed), 1);
        server.abort();
    }
}
