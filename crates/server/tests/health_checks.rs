//! Health checks run by a real 3-member cluster against real local endpoints: an HTTP server
//! (hyper), a TCP listener and a `grpc.health.v1` server (tonic-health), all started by the
//! tests. Probes carry `X-Beacon-Member`, so the HTTP server records which member sent each
//! one and can answer members differently; that is how ownership, re-assignment and the second
//! member's confirmation are observed from outside.
//!
//! Covered: transitions by thresholds and their watch events; TCP and gRPC checks; exactly one
//! owner per check, the one rendezvous hashing names; re-assignment when the owner is killed
//! (follower or leader) and back when it returns; a failure only the owner sees never turns an
//! instance critical; an isolated owner stops probing and commits no critical verdict, during
//! the isolation or after it; fail-open discovery; flap damping (hold and release);
//! `deregister_critical_after` (after passing, and for a check that never passed); TTL checks
//! (reports through a member that does not own the check, expiry one TTL after the last report,
//! survival of the owner's death); each check's latest probe through any member.
//!
//! Checks probe every second (`interval_ms` 1000, the validation minimum) with a 500 ms timeout.
//! Bounds on time are generous multiples of what the design promises (the machine may be busy);
//! counts of probes are exact where the design makes them exact.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_catalog::rendezvous;
use beacon_proto::beacon::v1::catalog_client::CatalogClient;
use beacon_proto::beacon::v1::{
    check, instance_event::EventType, Check, CheckState, DiscoverRequest, GetServiceRequest,
    GrpcCheck, HealthFilter, HealthStatus, HeartbeatRequest, HttpCheck, Instance, InstanceEvent,
    ListServicesRequest, RegisterRequest, TcpCheck, TtlCheck, WatchServiceRequest,
};
use common::{free_port, TestCluster, DEADLINE};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use HealthStatus::{Critical, Passing, Warning};

/// The probe interval of every check here.
const INTERVAL: Duration = Duration::from_millis(1000);
/// The harness's `election_timeout_max_ms`: the window in which a member notices it is cut off
/// (and the leader notices a member is gone).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(600);
/// Slack for a busy machine on top of what the design promises.
const SLACK: Duration = Duration::from_secs(3);
/// The cluster's member ids (the harness numbers them from 1).
const MEMBERS: [u64; 3] = [1, 2, 3];

// ---------------------------------------------------------------------------------------------
// A test HTTP endpoint
// ---------------------------------------------------------------------------------------------

/// How the test HTTP server answers one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 to everyone.
    Healthy,
    /// 500 to everyone.
    Failing,
    /// 500 to this member, 200 to the others.
    FailingFor(u64),
    /// To this member alternately 200 (its 1st, 3rd, … request) and 500; to the others
    /// whatever it got last (so a confirmer agrees with the owner).
    Flapping { owner: u64 },
}

/// One request the server answered.
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    /// From `X-Beacon-Member` (0 without one).
    member: u64,
    path: String,
    status: u16,
}

#[derive(Default)]
struct Endpoints {
    answers: HashMap<String, Answer>,
    /// Requests per (path, member) since the path's answer was last set.
    counts: HashMap<(String, u64), u32>,
    /// The last status a flapping path gave its owner.
    flap_last: HashMap<String, u16>,
    probes: Vec<Probe>,
}

/// A local HTTP/1.1 server whose answers the test sets per path (default: healthy). Each body
/// is `ok N` or `fail N`, N counting the requests of that member for that path since its answer
/// was set, so a verdict's stored output tells which probe produced it. Its port is below the
/// ephemeral range, so it can be stopped and started again on the same address.
struct HttpServer {
    address: SocketAddr,
    state: Arc<Mutex<Endpoints>>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    async fn start() -> Self {
        let deadline = Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", free_port())).await {
                Ok(listener) => break listener,
                Err(error) => assert!(Instant::now() < deadline, "bind: {error}"),
            }
        };
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(Endpoints::default()));
        let task = Some(tokio::spawn(serve_http(listener, state.clone())));
        HttpServer {
            address,
            state,
            task,
        }
    }

    fn port(&self) -> u32 {
        u32::from(self.address.port())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sets how `path` is answered from now on, and restarts its counts.
    fn set(&self, path: &str, answer: Answer) {
        let mut state = self.state.lock().expect("endpoints lock");
        state.answers.insert(path.to_string(), answer);
        state.counts.retain(|(counted, _), _| counted != path);
    }

    /// Every request to `path` so far, in order.
    fn probes(&self, path: &str) -> Vec<Probe> {
        let state = self.state.lock().expect("endpoints lock");
        state
            .probes
            .iter()
            .filter(|probe| probe.path == path)
            .cloned()
            .collect()
    }

    /// Requests to `path` at or after `since` (and before `until`, when given).
    fn probes_between(&self, path: &str, since: Instant, until: Option<Instant>) -> Vec<Probe> {
        self.probes(path)
            .into_iter()
            .filter(|probe| probe.at >= since && until.is_none_or(|until| probe.at < until))
            .collect()
    }

    /// Closes the listener and every connection: probes are refused.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address, with the same answers and history.
    async fn restart(&mut self) {
        assert!(self.task.is_none(), "the server is running");
        let deadline = Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "rebind {}: {error}",
                        self.address
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(serve_http(listener, self.state.clone())));
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve_http(listener: TcpListener, state: Arc<Mutex<Endpoints>>) {
    // Owned here, so aborting the server aborts its connections too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| respond(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: hyper::Request<Incoming>,
    state: Arc<Mutex<Endpoints>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let member = request
        .headers()
        .get("x-beacon-member")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let path = request.uri().path().to_string();
    let (status, count) = {
        let mut state = state.lock().expect("endpoints lock");
        let answer = state.answers.get(&path).copied().unwrap_or(Answer::Healthy);
        let count = {
            let count = state.counts.entry((path.clone(), member)).or_insert(0);
            *count += 1;
            *count
        };
        let status = match answer {
            Answer::Healthy => 200,
            Answer::Failing => 500,
            Answer::FailingFor(failing) if failing == member => 500,
            Answer::FailingFor(_) => 200,
            Answer::Flapping { owner } if owner == member => {
                let status = if count % 2 == 1 { 200 } else { 500 };
                state.flap_last.insert(path.clone(), status);
                status
            }
            Answer::Flapping { .. } => state.flap_last.get(&path).copied().unwrap_or(200),
        };
        state.probes.push(Probe {
            at: Instant::now(),
            member,
            path,
            status,
        });
        (status, count)
    };
    let word = if status == 200 { "ok" } else { "fail" };
    Ok(hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(format!("{word} {count}"))))
        .expect("valid response"))
}

/// The members that sent `probes`, with how many each.
fn senders(probes: &[Probe]) -> BTreeMap<u64, usize> {
    let mut senders = BTreeMap::new();
    for probe in probes {
        *senders.entry(probe.member).or_insert(0) += 1;
    }
    senders
}

// ---------------------------------------------------------------------------------------------
// A test gRPC health endpoint
// ---------------------------------------------------------------------------------------------

/// A tonic server with the standard health service (overall status SERVING); the
/// `x-beacon-member` of every request is recorded.
struct GrpcServer {
    address: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    members: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GrpcServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let (reporter, health) = tonic_health::server::health_reporter();
        let members = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let members = members.clone();
            move |request: tonic::Request<()>| {
                let member = request
                    .metadata()
                    .get("x-beacon-member")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                members.lock().expect("members lock").push(member);
                Ok(request)
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .layer(tonic::service::interceptor(record))
            .add_service(health);
        tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        GrpcServer {
            address,
            reporter,
            members,
            stop: Some(stop),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog helpers
// ---------------------------------------------------------------------------------------------

async fn started_cluster() -> TestCluster {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    cluster
}

fn timed(mut check: Check) -> Check {
    check.interval_ms = INTERVAL.as_millis() as u64;
    check.timeout_ms = 500;
    check
}

fn http_check(url: String) -> Check {
    timed(Check {
        id: "http".into(),
        kind: Some(check::Kind::Http(HttpCheck {
            url,
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn tcp_check(address: String) -> Check {
    timed(Check {
        id: "tcp".into(),
        kind: Some(check::Kind::Tcp(TcpCheck { address })),
        ..Default::default()
    })
}

fn grpc_check(address: SocketAddr, service: &str) -> Check {
    timed(Check {
        id: "grpc".into(),
        kind: Some(check::Kind::Grpc(GrpcCheck {
            address: address.to_string(),
            service: service.into(),
            tls: false,
        })),
        ..Default::default()
    })
}

fn instance(service: &str, id: &str, port: u32, checks: Vec<Check>) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        address: "127.0.0.1".into(),
        port,
        checks,
        ..Default::default()
    }
}

/// Registers `instance`; returns it as stored.
async fn register(catalog: &mut CatalogClient<Channel>, instance: Instance) -> Instance {
    catalog
        .register(RegisterRequest {
            instance: Some(instance),
        })
        .await
        .expect("register")
        .into_inner()
        .instance
        .expect("stored instance")
}

/// The instances of `service` (linearizable), or an error while the cluster has no leader.
async fn service_instances(
    catalog: &mut CatalogClient<Channel>,
    service: &str,
) -> Result<Vec<Instance>, tonic::Status> {
    Ok(catalog
        .get_service(GetServiceRequest {
            service: service.into(),
            serializable: false,
            include_probes: false,
        })
        .await?
        .into_inner()
        .instances)
}

/// Polls (linearizable reads) until `condition` holds for every instance of `service` listed in
/// `ids`; returns them by id. Read errors (no leader for a moment) count as "not yet".
async fn wait_instances(
    catalog: &mut CatalogClient<Channel>,
    service: &str,
    ids: &[&str],
    within: Duration,
    what: &str,
    condition: impl Fn(&Instance) -> bool,
) -> BTreeMap<String, Instance> {
    let deadline = Instant::now() + within;
    loop {
        let last = service_instances(catalog, service).await;
        if let Ok(instances) = &last {
            let found: BTreeMap<String, Instance> = instances
                .iter()
                .filter(|instance| ids.contains(&instance.id.as_str()))
                .map(|instance| (instance.id.clone(), instance.clone()))
                .collect();
            if found.len() == ids.len() && found.values().all(&condition) {
                return found;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{service} {ids:?}: not {what} within {within:?}; last read: {}",
            match &last {
                Ok(instances) => describe_instances(instances),
                Err(status) => status.to_string(),
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe_instances(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|instance| {
            let state = state_of(instance);
            format!(
                "\n  {} {:?} rev {} [{}] {}",
                instance.id,
                instance.health(),
                instance.mod_revision,
                state.reason,
                state.output
            )
        })
        .collect()
}

/// The state of the instance's first check.
fn state_of(instance: &Instance) -> CheckState {
    instance
        .checks
        .first()
        .and_then(|check| check.state.clone())
        .unwrap_or_default()
}

/// The N of an output ending in `Output: ok N` or `Output: fail N`.
fn probe_number(output: &str) -> u32 {
    output
        .rsplit(' ')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no probe number at the end of {output:?}"))
}

async fn discover(
    catalog: &mut CatalogClient<Channel>,
    service: &str,
    filter: HealthFilter,
) -> (Vec<String>, bool) {
    let response = catalog
        .discover(DiscoverRequest {
            service: service.into(),
            health: filter as i32,
            ..Default::default()
        })
        .await
        .expect("discover")
        .into_inner();
    let mut ids: Vec<String> = response.instances.into_iter().map(|i| i.id).collect();
    ids.sort();
    (ids, response.failed_open)
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// The member rendezvous hashing makes the owner of `{service}/{id}/http` among `members`.
fn owner_of(service: &str, id: &str, members: &[u64]) -> u64 {
    rendezvous::owner(&rendezvous::check_key(service, id, "http"), members).expect("members")
}

fn confirmer_of(service: &str, id: &str, members: &[u64]) -> u64 {
    rendezvous::confirmer(&rendezvous::check_key(service, id, "http"), members)
        .expect("two members")
}

/// Registers `count` instances `{service}-{n}` of `service`, each with an HTTP check on its own
/// path `/{service}-{n}` of `server`, and waits until all are passing.
async fn register_fleet(
    cluster: &TestCluster,
    server: &HttpServer,
    service: &str,
    count: usize,
) -> Vec<String> {
    let mut catalog = cluster.catalog(0).await;
    let ids: Vec<String> = (0..count).map(|n| format!("{service}-{n}")).collect();
    for id in &ids {
        register(
            &mut catalog,
            instance(
                service,
                id,
                server.port(),
                vec![http_check(server.url(&format!("/{id}")))],
            ),
        )
        .await;
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_instances(&mut catalog, service, &id_refs, DEADLINE, "passing", |i| {
        i.health() == HealthStatus::Passing
    })
    .await;
    ids
}

// ---------------------------------------------------------------------------------------------
// Service watch
// ---------------------------------------------------------------------------------------------

/// A `WatchService` stream read in the background: every event with the time it arrived.
struct ServiceEvents {
    receiver: mpsc::UnboundedReceiver<(Instant, InstanceEvent)>,
    seen: Vec<(Instant, InstanceEvent)>,
    /// Per instance id: where its next match is looked for.
    cursors: HashMap<String, usize>,
    /// Set when the stream ended or failed: a quiet stream then proves nothing.
    ended: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ServiceEvents {
    /// Watches `service` through member `index`, from after its current snapshot.
    async fn open(cluster: &TestCluster, index: usize, service: &str) -> Self {
        let mut stream = cluster
            .catalog(index)
            .await
            .watch_service(WatchServiceRequest {
                service: service.into(),
                start_revision: 0,
            })
            .await
            .expect("watch service")
            .into_inner();
        let snapshot = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("snapshot in time")
            .expect("stream ok")
            .expect("stream open");
        assert!(snapshot.snapshot, "first response is the snapshot");
        let (sender, receiver) = mpsc::unbounded_channel();
        let ended = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let ended = ended.clone();
            async move {
                while let Ok(Some(response)) = stream.message().await {
                    for event in response.events {
                        let _ = sender.send((Instant::now(), event));
                    }
                }
                ended.store(true, Ordering::SeqCst);
            }
        });
        ServiceEvents {
            receiver,
            seen: Vec::new(),
            cursors: HashMap::new(),
            ended,
            task,
        }
    }

    /// Takes in what arrived so far.
    fn pull(&mut self) {
        while let Ok(event) = self.receiver.try_recv() {
            self.seen.push(event);
        }
    }

    /// The next PUT of instance `id` with `health` after the previous match for `id`; events
    /// of other instances do not move its cursor (and are kept for [`ServiceEvents::healths`]).
    async fn wait_put(
        &mut self,
        id: &str,
        health: HealthStatus,
        within: Duration,
    ) -> (Instant, Instance) {
        let deadline = Instant::now() + within;
        loop {
            self.pull();
            let cursor = self.cursors.entry(id.to_string()).or_insert(0);
            while *cursor < self.seen.len() {
                let (at, event) = &self.seen[*cursor];
                *cursor += 1;
                let instance = event.instance.clone().unwrap_or_default();
                if event.r#type() == EventType::Put
                    && instance.id == id
                    && instance.health() == health
                {
                    return (*at, instance);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero() && !self.ended.load(Ordering::SeqCst),
                "no PUT of {id} with {health:?} within {within:?} (stream ended: {}); events:{}",
                self.ended.load(Ordering::SeqCst),
                self.describe()
            );
            if let Ok(Some(event)) = tokio::time::timeout(remaining, self.receiver.recv()).await {
                self.seen.push(event);
            }
        }
    }

    /// Every event so far, for failure messages.
    fn describe(&self) -> String {
        self.seen
            .iter()
            .map(|(_, event)| {
                let instance = event.instance.clone().unwrap_or_default();
                let state = state_of(&instance);
                format!(
                    "\n  rev {} {:?} {} {:?} [{}] {}",
                    event.revision,
                    event.r#type(),
                    instance.id,
                    instance.health(),
                    state.reason,
                    state.output
                )
            })
            .collect()
    }

    /// The healths of every event of `id` so far, in order; panics on anything but a PUT.
    fn healths(&mut self, id: &str) -> Vec<HealthStatus> {
        self.pull();
        self.seen
            .iter()
            .filter(|(_, event)| event.instance.as_ref().is_some_and(|i| i.id == id))
            .map(|(_, event)| {
                assert_eq!(
                    event.r#type(),
                    EventType::Put,
                    "only PUT events expected:{}",
                    self.describe()
                );
                event.instance.as_ref().expect("instance").health()
            })
            .collect()
    }

    /// Asserts the watch is alive and has delivered nothing so far.
    fn assert_quiet(&mut self, context: &str) {
        self.pull();
        assert!(
            !self.ended.load(Ordering::SeqCst),
            "{context}: the service watch ended"
        );
        assert!(
            self.seen.is_empty(),
            "{context}: no catalog change expected, got:{}",
            self.describe()
        );
    }
}

impl Drop for ServiceEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The "done means": three instances of `web` against three local HTTP servers; one
/// server stops and its instance goes warning, then critical, and leaves passing discovery; it
/// comes back and passes again. Every transition is one PUT on the service watch with the new
/// health and the reason, and nothing else is written.
#[tokio::test(flavor = "multi_thread")]
async fn http_check_transitions_follow_the_endpoint_and_each_is_one_watch_event() {
    let cluster = started_cluster().await;
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(HttpServer::start().await);
    }
    let mut events = ServiceEvents::open(&cluster, 1, "web").await;
    let mut catalog = cluster.catalog(0).await;
    let ids = ["web-1", "web-2", "web-3"];
    for (id, server) in ids.iter().zip(&servers) {
        let stored = register(
            &mut catalog,
            instance(
                "web",
                id,
                server.port(),
                vec![http_check(server.url("/health"))],
            ),
        )
        .await;
        // Not offered to clients before a probe passed.
        assert_eq!(stored.health(), Critical);
        assert_eq!(state_of(&stored).status(), Critical);
        assert!(state_of(&stored).reason.is_empty());
    }
    for (id, server) in ids.iter().zip(&servers) {
        let (_, passing) = events.wait_put(id, Passing, DEADLINE).await;
        let state = state_of(&passing);
        assert_eq!(
            state.reason,
            "1 successful probe in a row (success_before_passing 1)"
        );
        assert_eq!(
            state.output,
            format!("HTTP GET {}: 200 OK Output: ok 1", server.url("/health"))
        );
        assert!(state.since_unix_ms > 0);
    }
    assert_eq!(
        discover(&mut catalog, "web", HealthFilter::Passing).await,
        (strings(&ids), false)
    );

    servers[1].stop().await;
    let stopped = Instant::now();
    let (warned_at, warning) = events.wait_put("web-2", Warning, DEADLINE).await;
    let state = state_of(&warning);
    assert_eq!(
        state.reason,
        "1 failed probe in a row (failures_before_warning 1)"
    );
    assert!(
        state.output.contains("Connection refused"),
        "{}",
        state.output
    );
    let (critical_at, critical) = events.wait_put("web-2", Critical, DEADLINE).await;
    assert_eq!(
        state_of(&critical).reason,
        "3 failed probes in a row (failures_before_critical 3)"
    );
    // The target: interval × failures_before_critical + 1 s from the endpoint going
    // down to the event; allowed some slack for a busy machine.
    let lag = critical_at - stopped;
    assert!(
        lag <= INTERVAL * 3 + SLACK,
        "critical {lag:?} after the server stopped (warning after {:?})",
        warned_at - stopped
    );
    assert!(
        lag >= INTERVAL * 3 / 2,
        "critical after {lag:?}: fewer than 3 probes can have failed"
    );
    assert_eq!(
        discover(&mut catalog, "web", HealthFilter::Passing).await,
        (strings(&["web-1", "web-3"]), false)
    );
    assert_eq!(
        discover(&mut catalog, "web", HealthFilter::PassingOrElseAll).await,
        (strings(&["web-1", "web-3"]), false)
    );

    servers[1].restart().await;
    let (_, back) = events.wait_put("web-2", Passing, DEADLINE).await;
    assert_eq!(
        state_of(&back).reason,
        "1 successful probe in a row (success_before_passing 1)"
    );
    assert_eq!(
        discover(&mut catalog, "web", HealthFilter::Passing).await,
        (strings(&ids), false)
    );

    // Probes that change nothing write nothing: every event is a transition.
    assert_eq!(
        events.healths("web-2"),
        vec![Critical, Passing, Warning, Critical, Passing],
        "{}",
        events.describe()
    );
    for id in ["web-1", "web-3"] {
        assert_eq!(
            events.healths(id),
            vec![Critical, Passing],
            "{}",
            events.describe()
        );
    }
}

/// TCP checks pass while something listens and turn critical once it stops; gRPC checks follow
/// the `grpc.health.v1` status of the whole server or of one named service.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_and_grpc_checks_follow_their_endpoints() {
    let cluster = started_cluster().await;
    let mut catalog = cluster.catalog(2).await;

    let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
    let tcp_address = listener.local_addr().expect("local address");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let acceptor = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let mut grpc = GrpcServer::start().await;
    grpc.reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let closed = format!("127.0.0.1:{}", free_port());

    let port = u32::from(tcp_address.port());
    register(
        &mut catalog,
        instance("db", "db-1", port, vec![tcp_check(tcp_address.to_string())]),
    )
    .await;
    register(
        &mut catalog,
        instance("rpc", "whole", 1, vec![grpc_check(grpc.address, "")]),
    )
    .await;
    register(
        &mut catalog,
        instance("rpc", "orders", 1, vec![grpc_check(grpc.address, "orders")]),
    )
    .await;
    // An instance whose TCP endpoint never listens, beside a passing gRPC check: the instance
    // is as bad as its worst check.
    register(
        &mut catalog,
        instance(
            "dead",
            "dead-1",
            1,
            vec![tcp_check(closed.clone()), grpc_check(grpc.address, "")],
        ),
    )
    .await;

    let passing = |i: &Instance| i.health() == Passing;
    let db = wait_instances(&mut catalog, "db", &["db-1"], DEADLINE, "passing", passing).await;
    assert_eq!(
        state_of(&db["db-1"]).output,
        format!("TCP connect {tcp_address}: success")
    );
    let rpc = wait_instances(
        &mut catalog,
        "rpc",
        &["whole", "orders"],
        DEADLINE,
        "passing",
        passing,
    )
    .await;
    assert_eq!(
        state_of(&rpc["whole"]).output,
        format!("gRPC health {}: SERVING", grpc.address)
    );
    let whole_passing_revision = rpc["whole"].mod_revision;
    assert_eq!(
        state_of(&rpc["orders"]).output,
        format!("gRPC health {} service \"orders\": SERVING", grpc.address)
    );
    let dead = wait_instances(
        &mut catalog,
        "dead",
        &["dead-1"],
        DEADLINE,
        "gRPC passing",
        |i| {
            i.checks[1]
                .state
                .as_ref()
                .is_some_and(|s| s.status() == Passing)
        },
    )
    .await;
    assert_eq!(dead["dead-1"].health(), Critical);
    assert_eq!(state_of(&dead["dead-1"]).status(), Critical);

    // The TCP listener goes away: refused connections.
    acceptor.abort();
    let _ = acceptor.await;
    let db = wait_instances(&mut catalog, "db", &["db-1"], DEADLINE, "critical", |i| {
        i.health() == Critical
    })
    .await;
    let state = state_of(&db["db-1"]);
    assert_eq!(
        state.reason,
        "3 failed probes in a row (failures_before_critical 3)"
    );
    assert!(
        state
            .output
            .starts_with(&format!("TCP connect {tcp_address}: Connection refused")),
        "{}",
        state.output
    );

    // One gRPC service stops serving; the server's overall status is unaffected.
    grpc.reporter
        .set_service_status("orders", tonic_health::ServingStatus::NotServing)
        .await;
    let rpc = wait_instances(
        &mut catalog,
        "rpc",
        &["orders"],
        DEADLINE,
        "critical",
        |i| i.health() == Critical,
    )
    .await;
    assert_eq!(
        state_of(&rpc["orders"]).output,
        format!(
            "gRPC health {} service \"orders\": NOT_SERVING",
            grpc.address
        )
    );
    grpc.reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let rpc = wait_instances(
        &mut catalog,
        "rpc",
        &["whole", "orders"],
        DEADLINE,
        "passing",
        passing,
    )
    .await;
    // The overall check never changed: still its first verdict.
    assert_eq!(
        state_of(&rpc["whole"]).reason,
        "1 successful probe in a row (success_before_passing 1)"
    );
    assert_eq!(
        rpc["whole"].mod_revision, whole_passing_revision,
        "the overall check's record was not written again"
    );

    // The whole server stops serving.
    grpc.reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let rpc = wait_instances(&mut catalog, "rpc", &["whole"], DEADLINE, "critical", |i| {
        i.health() == Critical
    })
    .await;
    assert_eq!(
        state_of(&rpc["whole"]).output,
        format!("gRPC health {}: NOT_SERVING", grpc.address)
    );

    // Every gRPC probe named a member of the cluster.
    let members = grpc.members.lock().expect("members lock").clone();
    assert!(!members.is_empty());
    assert!(
        members
            .iter()
            .all(|member| ["1", "2", "3"].contains(&member.as_str())),
        "{members:?}"
    );
}

/// success_before_passing 3, failures_before_warning 2, failures_before_critical 4: the
/// endpoint counts the owner's probes and the verdicts' outputs name the probe that made them.
#[tokio::test(flavor = "multi_thread")]
async fn thresholds_count_consecutive_probes() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let mut events = ServiceEvents::open(&cluster, 2, "api").await;
    let mut catalog = cluster.catalog(1).await;
    let check = Check {
        success_before_passing: 3,
        failures_before_warning: 2,
        failures_before_critical: 4,
        ..http_check(server.url("/health"))
    };
    let registered_at = Instant::now();
    register(
        &mut catalog,
        instance("api", "api-1", server.port(), vec![check]),
    )
    .await;
    let owner = owner_of("api", "api-1", &MEMBERS);

    let (passed_at, passing) = events.wait_put("api-1", Passing, DEADLINE).await;
    let state = state_of(&passing);
    assert_eq!(
        state.reason,
        "3 successful probes in a row (success_before_passing 3)"
    );
    assert!(
        state.output.ends_with(": 200 OK Output: ok 3"),
        "the 3rd probe turns it passing: {}",
        state.output
    );
    // Two good probes had been answered well before: they changed nothing.
    let owner_probes: Vec<Probe> = server
        .probes_between("/health", registered_at, Some(passed_at))
        .into_iter()
        .filter(|probe| probe.member == owner)
        .collect();
    assert!(owner_probes.len() >= 3, "{owner_probes:?}");
    assert!(
        passed_at - owner_probes[1].at >= INTERVAL / 2,
        "passing came right after the 2nd probe"
    );

    server.set("/health", Answer::Failing);
    let (_, warning) = events.wait_put("api-1", Warning, DEADLINE).await;
    let state = state_of(&warning);
    let failed = probe_number(&state.output);
    assert!((2..=3).contains(&failed), "{}", state.output);
    assert_eq!(
        state.reason,
        format!("{failed} failed probes in a row (failures_before_warning 2)")
    );
    let (_, critical) = events.wait_put("api-1", Critical, DEADLINE).await;
    let state = state_of(&critical);
    let failed = probe_number(&state.output);
    assert!((4..=6).contains(&failed), "{}", state.output);
    assert!(state
        .output
        .contains(": 500 Internal Server Error Output: fail "));
    assert_eq!(
        state.reason,
        format!("{failed} failed probes in a row (failures_before_critical 4)")
    );

    server.set("/health", Answer::Healthy);
    let (_, passing) = events.wait_put("api-1", Passing, DEADLINE).await;
    let state = state_of(&passing);
    let passed = probe_number(&state.output);
    assert!((3..=5).contains(&passed), "{}", state.output);
    assert_eq!(
        state.reason,
        format!("{passed} successful probes in a row (success_before_passing 3)")
    );
    assert_eq!(
        events.healths("api-1"),
        vec![Critical, Passing, Warning, Critical, Passing],
        "{}",
        events.describe()
    );
}

/// Every check is probed by exactly one member, the first of its rendezvous ranking, about once
/// per interval; the checks are spread over the members.
#[tokio::test(flavor = "multi_thread")]
async fn each_check_is_probed_by_exactly_one_member_once_per_interval() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let ids = register_fleet(&cluster, &server, "fleet", 9).await;

    let window = Duration::from_secs(6);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let end = Instant::now();
    let mut owners = BTreeSet::new();
    for id in &ids {
        let path = format!("/{id}");
        let owner = owner_of("fleet", id, &MEMBERS);
        owners.insert(owner);
        // From registration on, only the owner ever probed it.
        let all = server.probes(&path);
        assert_eq!(
            senders(&all).keys().copied().collect::<Vec<_>>(),
            vec![owner],
            "{id}: probed by {:?}, owner by rendezvous {owner}",
            senders(&all)
        );
        let in_window = server.probes_between(&path, start, Some(end));
        let expected = (window.as_millis() / INTERVAL.as_millis()) as usize;
        assert!(
            (expected - 2..=expected + 1).contains(&in_window.len()),
            "{id}: {} probes in {window:?} at a {INTERVAL:?} interval",
            in_window.len()
        );
        // Never two probes of one check close together.
        let shortest = all
            .windows(2)
            .map(|pair| pair[1].at - pair[0].at)
            .min()
            .expect("several probes");
        assert!(
            shortest >= INTERVAL / 2,
            "{id}: two probes {shortest:?} apart"
        );
    }
    assert_eq!(
        owners.len(),
        3,
        "these 9 check keys rank every member first at least once"
    );
}

/// Kills the member owning some checks; another member takes them over within a couple of
/// intervals after the leader notices, the others keep their owner, and nothing is written.
/// With `kill_leader` false, the member then comes back and takes its checks back.
async fn owner_killed(kill_leader: bool) {
    let mut cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let ids = register_fleet(&cluster, &server, "fleet", 9).await;
    let leader = cluster.wait_for_leader().await;
    let victim = if kill_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    let victim_id = victim as u64 + 1;
    let survivors: Vec<u64> = MEMBERS.into_iter().filter(|m| *m != victim_id).collect();
    let owners: BTreeMap<&str, u64> = ids
        .iter()
        .map(|id| (id.as_str(), owner_of("fleet", id, &MEMBERS)))
        .collect();
    let orphans: Vec<&str> = owners
        .iter()
        .filter(|(_, owner)| **owner == victim_id)
        .map(|(id, _)| *id)
        .collect();
    assert!(!orphans.is_empty(), "member {victim_id} owns no check");
    let watcher = (victim + 1) % 3;
    let mut events = ServiceEvents::open(&cluster, watcher, "fleet").await;

    let killed_at = Instant::now();
    cluster.kill(victim);
    let mut takeovers = Vec::new();
    for id in &orphans {
        let heir = owner_of("fleet", id, &survivors);
        assert_eq!(heir, confirmer_of("fleet", id, &MEMBERS));
        let deadline = killed_at + DEADLINE;
        let taken_at = loop {
            let probes = server.probes_between(&format!("/{id}"), killed_at, None);
            if let Some(probe) = probes.iter().find(|probe| probe.member == heir) {
                break probe.at;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: member {heir} never took over from {victim_id}: {:?}\n{}",
                senders(&probes),
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        takeovers.push(taken_at - killed_at);
    }
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    // The design: the leader notices within an election timeout and two scans, then the new
    // owner probes within an interval; a killed leader first needs an election.
    let bound = INTERVAL * 2 + ELECTION_TIMEOUT * 2 + SLACK;
    assert!(
        slowest <= bound,
        "slowest takeover {slowest:?} (all: {takeovers:?}), bound {bound:?}"
    );
    eprintln!("takeovers after killing member {victim_id} (leader: {kill_leader}): {takeovers:?}");

    // Settled: each check probed by one member, the ranking's first among the survivors, about
    // once per interval; checks of the survivors never changed hands.
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let window_end = Instant::now();
    for id in &ids {
        let path = format!("/{id}");
        let expected = owner_of("fleet", id, &survivors);
        let in_window = server.probes_between(&path, window_start, Some(window_end));
        assert_eq!(
            senders(&in_window).keys().copied().collect::<Vec<_>>(),
            vec![expected],
            "{id} after the kill"
        );
        assert!((2..=5).contains(&in_window.len()), "{id}: {in_window:?}");
        if owners[id.as_str()] != victim_id {
            let since_kill = server.probes_between(&path, killed_at, None);
            assert_eq!(
                senders(&since_kill).keys().copied().collect::<Vec<_>>(),
                vec![expected],
                "{id} changed hands although its owner lives"
            );
        }
    }
    let mut catalog = cluster.catalog(watcher).await;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_instances(&mut catalog, "fleet", &id_refs, DEADLINE, "passing", |i| {
        i.health() == Passing
    })
    .await;
    events.assert_quiet("the owner's death");

    if kill_leader {
        return;
    }
    cluster.start_node(victim);
    let back_at = Instant::now();
    for id in &orphans {
        let deadline = back_at + DEADLINE;
        while !server
            .probes_between(&format!("/{id}"), back_at, None)
            .iter()
            .any(|probe| probe.member == victim_id)
        {
            assert!(
                Instant::now() < deadline,
                "member {victim_id} never took {id} back\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let a handover in flight finish, then every check is its first owner's again.
    tokio::time::sleep(INTERVAL * 2).await;
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let window_end = Instant::now();
    for id in &ids {
        let in_window = server.probes_between(&format!("/{id}"), window_start, Some(window_end));
        assert_eq!(
            senders(&in_window).keys().copied().collect::<Vec<_>>(),
            vec![owners[id.as_str()]],
            "{id} after member {victim_id} returned"
        );
    }
    events.assert_quiet("the owner's return");
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_of_a_killed_follower_move_to_the_next_member_and_come_back() {
    owner_killed(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_of_a_killed_leader_move_to_the_next_member() {
    owner_killed(true).await;
}

/// The endpoint fails only for the owner (its network path, say): the second member's probe
/// sees it healthy, so the instance never turns critical (warning is allowed: it needs no
/// confirmation). Once the endpoint fails for everyone, critical commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_only_the_owner_sees_never_turns_the_instance_critical() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let ids = register_fleet(&cluster, &server, "pay", 1).await;
    let id = ids[0].as_str();
    let path = format!("/{id}");
    let owner = owner_of("pay", id, &MEMBERS);
    let confirmer = confirmer_of("pay", id, &MEMBERS);
    assert_eq!(
        senders(&server.probes(&path))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![owner]
    );
    let mut events = ServiceEvents::open(&cluster, 0, "pay").await;

    server.set(&path, Answer::FailingFor(owner));
    let failing_since = Instant::now();
    tokio::time::sleep(INTERVAL * 10).await;
    let probes = server.probes_between(&path, failing_since, None);
    let by_owner = probes.iter().filter(|p| p.member == owner).count();
    let by_confirmer = probes.iter().filter(|p| p.member == confirmer).count();
    assert!(
        by_owner >= 7,
        "owner probed {by_owner} times in 10 intervals"
    );
    // Every probe from the 3rd failure on proposes critical and asks the confirmer.
    assert!(
        by_confirmer >= by_owner.saturating_sub(4),
        "confirmer asked {by_confirmer} times for {by_owner} failed probes"
    );
    assert_eq!(
        senders(&probes).len(),
        2,
        "only the owner and its confirmer probe: {:?}",
        senders(&probes)
    );
    assert_eq!(events.healths(id), vec![Warning], "{}", events.describe());

    // Control: a failure everyone sees is confirmed.
    server.set(&path, Answer::Failing);
    let (_, critical) = events.wait_put(id, Critical, DEADLINE).await;
    assert!(
        state_of(&critical)
            .output
            .contains(": 500 Internal Server Error Output: fail "),
        "{}",
        state_of(&critical).output
    );
    assert_eq!(events.healths(id), vec![Warning, Critical]);
}

/// Pauses the two members other than `isolated` (SIGSTOP: on loopback the closest thing to a
/// partition that leaves `isolated` alone) while the endpoints of the checks `isolated` owns
/// fail, then heals the endpoints and resumes the others. The isolated owner must stop probing
/// once it notices it has no quorum (within an election timeout), and no critical verdict may
/// commit: not while the others are paused (no quorum), nor after they resume (its confirmer was
/// paused, and it stopped probing long before 3 failures). On this machine the records do not
/// change at all: the warning verdicts an isolated leader appends to its log from probes in its
/// detection window are discarded when the resumed followers elect a new leader; if one ever
/// commits, it must be such a warning, and it is printed.
async fn owner_isolated(isolate_leader: bool) {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let ids = register_fleet(&cluster, &server, "fleet", 9).await;
    let leader = cluster.wait_for_leader().await;
    let isolated = if isolate_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    let isolated_id = isolated as u64 + 1;
    let owned: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| owner_of("fleet", id, &MEMBERS) == isolated_id)
        .collect();
    assert!(!owned.is_empty(), "member {isolated_id} owns no check");
    let mut catalog = cluster.catalog(isolated).await;
    let before: BTreeMap<String, i64> = service_instances(&mut catalog, "fleet")
        .await
        .expect("read")
        .into_iter()
        .map(|instance| (instance.id, instance.mod_revision))
        .collect();
    let others: Vec<usize> = (0..3).filter(|index| *index != isolated).collect();

    for index in &others {
        cluster.pause(*index, true);
    }
    let paused_at = Instant::now();
    for id in &owned {
        server.set(&format!("/{id}"), Answer::Failing);
    }
    tokio::time::sleep(INTERVAL * 8).await;
    for id in &owned {
        server.set(&format!("/{id}"), Answer::Healthy);
    }
    let resumed_at = Instant::now();
    for index in &others {
        cluster.pause(*index, false);
    }

    let failed_while_cut_off: Vec<(String, Duration)> = owned
        .iter()
        .flat_map(|id| server.probes_between(&format!("/{id}"), paused_at, Some(resumed_at)))
        .filter(|probe| probe.status == 500)
        .map(|probe| (probe.path, probe.at - paused_at))
        .collect();
    eprintln!(
        "member {isolated_id} (leader: {isolate_leader}) saw failures while cut off: \
         {failed_while_cut_off:?}"
    );
    // It stopped probing within an election timeout (plus a probe in flight): later probes
    // could only lead to verdicts it cannot commit.
    let noticed_by = paused_at + ELECTION_TIMEOUT + INTERVAL * 2;
    for id in &owned {
        let late = server.probes_between(&format!("/{id}"), noticed_by, Some(resumed_at));
        assert!(
            late.is_empty(),
            "{id}: member {isolated_id} probed while cut off: {late:?}"
        );
    }
    // Back together: the checks are probed again (healthy now) and settle.
    cluster.wait_for_leader().await;
    for id in &owned {
        let deadline = Instant::now() + DEADLINE;
        while server
            .probes_between(&format!("/{id}"), resumed_at, None)
            .len()
            < 3
        {
            assert!(Instant::now() < deadline, "{id} not probed after the heal");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(INTERVAL * 2).await;
    let deadline = Instant::now() + DEADLINE;
    let after = loop {
        match service_instances(&mut catalog, "fleet").await {
            Ok(after) => break after,
            Err(status) => assert!(Instant::now() < deadline, "read after heal: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let changed: Vec<&Instance> = after
        .iter()
        .filter(|instance| before.get(&instance.id) != Some(&instance.mod_revision))
        .collect();
    assert!(
        after.iter().all(|instance| instance.health() == Passing),
        "after the heal:{}",
        describe_instances(&after)
    );
    if changed.is_empty() {
        return;
    }
    // Something was written after all: only a warning from a probe the owner answered before it
    // noticed its isolation (and the passing that undid it) would be defensible; never critical,
    // and never an instance the isolated member does not own.
    let from = before.values().min().copied().unwrap_or(1) + 1;
    let history = service_history(&cluster, isolated, "fleet", from).await;
    let lines: String = history
        .iter()
        .map(|(revision, instance)| {
            let state = state_of(instance);
            format!(
                "\n  rev {revision} {} {:?} [{}] {}",
                instance.id,
                instance.health(),
                state.reason,
                state.output
            )
        })
        .collect();
    eprintln!(
        "member {isolated_id} (leader: {isolate_leader}) committed verdicts reached while cut \
         off:{lines}"
    );
    for (_, instance) in &history {
        assert!(
            owned.contains(&instance.id.as_str()),
            "an instance member {isolated_id} does not own changed:{lines}"
        );
        assert_ne!(instance.health(), Critical, "history:{lines}");
        if instance.health() == Warning {
            assert_eq!(
                state_of(instance).reason,
                "1 failed probe in a row (failures_before_warning 1)",
                "history:{lines}"
            );
        }
    }
}

/// The instances of `service` written from revision `from` on, read through member `index`
/// until the stream has been quiet for 2 s.
async fn service_history(
    cluster: &TestCluster,
    index: usize,
    service: &str,
    from: i64,
) -> Vec<(i64, Instance)> {
    let mut stream = cluster
        .catalog(index)
        .await
        .watch_service(WatchServiceRequest {
            service: service.into(),
            start_revision: from,
        })
        .await
        .expect("watch history")
        .into_inner();
    let mut history = Vec::new();
    while let Ok(Ok(Some(response))) =
        tokio::time::timeout(Duration::from_secs(2), stream.message()).await
    {
        for event in response.events {
            history.push((event.revision, event.instance.unwrap_or_default()));
        }
    }
    history
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_follower_cannot_flip_the_instances_it_owns() {
    owner_isolated(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_leader_cannot_flip_the_instances_it_owns() {
    owner_isolated(true).await;
}

/// Discovery fails open when every instance is critical (after real failed probes), and stops
/// as soon as one passes.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_fails_open_while_every_instance_is_critical() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let mut catalog = cluster.catalog(1).await;
    let ids = ["a1", "a2", "a3"];
    for id in ids {
        server.set(&format!("/{id}"), Answer::Failing);
        register(
            &mut catalog,
            instance(
                "api",
                id,
                server.port(),
                vec![http_check(server.url(&format!("/{id}")))],
            ),
        )
        .await;
    }
    // The checks run and keep failing.
    let deadline = Instant::now() + DEADLINE;
    while ids
        .iter()
        .any(|id| server.probes(&format!("/{id}")).len() < 3)
    {
        assert!(Instant::now() < deadline, "checks not probed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = strings(&ids);
    assert_eq!(
        discover(&mut catalog, "api", HealthFilter::PassingOrElseAll).await,
        (all.clone(), true)
    );
    assert_eq!(
        discover(&mut catalog, "api", HealthFilter::Passing).await,
        (vec![], false)
    );
    let summary = catalog
        .list_services(ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .services
        .into_iter()
        .find(|summary| summary.name == "api")
        .expect("api listed");
    assert_eq!((summary.critical, summary.failed_open), (3, true));

    server.set("/a1", Answer::Healthy);
    wait_instances(&mut catalog, "api", &["a1"], DEADLINE, "passing", |i| {
        i.health() == Passing
    })
    .await;
    assert_eq!(
        discover(&mut catalog, "api", HealthFilter::PassingOrElseAll).await,
        (strings(&["a1"]), false)
    );

    server.set("/a1", Answer::Failing);
    wait_instances(&mut catalog, "api", &["a1"], DEADLINE, "critical", |i| {
        i.health() == Critical
    })
    .await;
    assert_eq!(
        discover(&mut catalog, "api", HealthFilter::PassingOrElseAll).await,
        (all, true)
    );
}

/// With thresholds of 1 every probe of a flapping endpoint is a transition; after the 6th in a
/// minute the check is held at warning (with the reason) while the endpoint keeps flapping, and
/// released to passing after 60 s of healthy probes.
#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_check_is_held_at_warning_until_stable() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let owner = owner_of("flap", "flap-1", &MEMBERS);
    server.set("/flap", Answer::Flapping { owner });
    let mut events = ServiceEvents::open(&cluster, 0, "flap").await;
    let mut catalog = cluster.catalog(2).await;
    let check = Check {
        failures_before_warning: 1,
        failures_before_critical: 1,
        ..http_check(server.url("/flap"))
    };
    register(
        &mut catalog,
        instance("flap", "flap-1", server.port(), vec![check]),
    )
    .await;

    let flips = [Passing, Critical, Passing, Critical, Passing, Critical];
    for health in flips {
        events.wait_put("flap-1", health, DEADLINE).await;
    }
    let (held_at, held) = events.wait_put("flap-1", Warning, DEADLINE).await;
    assert_eq!(
        state_of(&held).reason,
        "flapping: 6 transitions in 60 s; held as warning until stable for 60 s"
    );
    let mut expected = vec![Critical];
    expected.extend(flips);
    expected.push(Warning);
    assert_eq!(events.healths("flap-1"), expected, "{}", events.describe());

    // Held while it keeps flapping: nothing more is written.
    tokio::time::sleep(INTERVAL * 6).await;
    let flapping = server.probes_between("/flap", held_at, None);
    let statuses: BTreeSet<u16> = flapping
        .iter()
        .filter(|probe| probe.member == owner)
        .map(|probe| probe.status)
        .collect();
    assert_eq!(statuses, BTreeSet::from([200, 500]), "{flapping:?}");
    assert_eq!(events.healths("flap-1"), expected, "{}", events.describe());

    // Stable (healthy) for 60 s: released.
    server.set("/flap", Answer::Healthy);
    let stable_from = Instant::now();
    let (released_at, released) = events
        .wait_put("flap-1", Passing, Duration::from_secs(60) + DEADLINE)
        .await;
    let state = state_of(&released);
    assert!(
        state
            .reason
            .starts_with("stable for 60 s, released from the flapping hold; "),
        "{}",
        state.reason
    );
    // The last flapping probe may have been a good one, up to an interval before the switch.
    let stable_for = released_at - stable_from;
    assert!(
        stable_for >= Duration::from_secs(60) - INTERVAL,
        "released after {stable_for:?}"
    );
    assert!(
        stable_for <= Duration::from_secs(60) + INTERVAL + SLACK,
        "released after {stable_for:?}"
    );
    expected.push(Passing);
    assert_eq!(events.healths("flap-1"), expected, "{}", events.describe());
}

/// An instance critical for longer than `deregister_critical_after` (60 s, the minimum) is
/// deregistered, whether it turned critical after passing or never passed since its
/// registration; its sibling that stays passing is not.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_critical_past_deregister_critical_after_is_deregistered() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let mut events = ServiceEvents::open(&cluster, 1, "job").await;
    let mut catalog = cluster.catalog(0).await;
    server.set("/job-never", Answer::Failing);
    let mut registered_at = HashMap::new();
    for id in ["job-1", "job-2", "job-never"] {
        let check = Check {
            deregister_critical_after_ms: 60_000,
            ..http_check(server.url(&format!("/{id}")))
        };
        register(
            &mut catalog,
            instance("job", id, server.port(), vec![check]),
        )
        .await;
        registered_at.insert(id, Instant::now());
    }
    events.wait_put("job-1", Passing, DEADLINE).await;
    events.wait_put("job-2", Passing, DEADLINE).await;

    server.set("/job-1", Answer::Failing);
    let (critical_at, critical) = events.wait_put("job-1", Critical, DEADLINE).await;
    assert!(state_of(&critical).since_unix_ms > 0);
    // Critical since: job-1 since its verdict, job-never since its registration.
    for (id, since) in [
        ("job-1", critical_at),
        ("job-never", registered_at["job-never"]),
    ] {
        let deadline = since + Duration::from_secs(60) + DEADLINE;
        let deleted_at = loop {
            events.pull();
            let deleted = events.seen.iter().find(|(_, event)| {
                event.r#type() == EventType::Delete
                    && event.instance.as_ref().is_some_and(|i| i.id == id)
            });
            if let Some((at, _)) = deleted {
                break *at;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not deregistered:{}",
                events.describe()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let after = deleted_at - since;
        assert!(
            after >= Duration::from_secs(60) - Duration::from_millis(500),
            "{id} deregistered {after:?} after turning critical"
        );
        assert!(
            after <= Duration::from_secs(60) + INTERVAL + SLACK,
            "{id} deregistered {after:?} after turning critical"
        );
    }
    let left = service_instances(&mut catalog, "job").await.expect("read");
    assert_eq!(
        left.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["job-2"]
    );
    assert_eq!(left[0].health(), Passing);
    // job-never was never written after its registration: only its deletion.
    events.pull();
    let never: Vec<(EventType, HealthStatus)> = events
        .seen
        .iter()
        .filter_map(|(_, event)| {
            let instance = event.instance.as_ref().filter(|i| i.id == "job-never")?;
            Some((event.r#type(), instance.health()))
        })
        .collect();
    assert_eq!(
        never,
        vec![(EventType::Put, Critical), (EventType::Delete, Critical)],
        "{}",
        events.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// TTL checks and the latest probe
// ---------------------------------------------------------------------------------------------

/// The TTL of the TTL checks here (the validation minimum is 1 s).
const TTL: Duration = Duration::from_secs(2);

fn ttl_check() -> Check {
    Check {
        id: "ttl".into(),
        kind: Some(check::Kind::Ttl(TtlCheck {
            ttl_ms: TTL.as_millis() as u64,
        })),
        ..Default::default()
    }
}

/// The member index (0-based) of the member that owns `{service}/{id}/ttl`, and of one that
/// does not, by rendezvous hashing over all three members.
fn ttl_owner_and_other(service: &str, id: &str) -> (usize, usize) {
    let owner = rendezvous::owner(&rendezvous::check_key(service, id, "ttl"), &MEMBERS)
        .expect("members") as usize;
    (owner - 1, owner % 3)
}

async fn report(
    catalog: &mut CatalogClient<Channel>,
    service: &str,
    id: &str,
    status: HealthStatus,
    note: &str,
) -> Result<(), tonic::Status> {
    catalog
        .heartbeat(HeartbeatRequest {
            service: service.into(),
            id: id.into(),
            status: status as i32,
            check_id: String::new(),
            note: note.into(),
        })
        .await
        .map(|_| ())
}

/// A TTL check follows the instance's reports (taken by a member that does not own the check,
/// so each travels to the owner); steady reports write nothing; without reports the owner turns
/// it critical one TTL after the last report, not before. Reports naming no TTL check, or with
/// an unknown status, are refused.
#[tokio::test(flavor = "multi_thread")]
async fn ttl_checks_follow_reports_and_expire_one_ttl_after_the_last() {
    let cluster = started_cluster().await;
    let (owner, other) = ttl_owner_and_other("jobs", "job-1");
    let mut events = ServiceEvents::open(&cluster, other, "jobs").await;
    let mut catalog = cluster.catalog(other).await;
    let stored = register(
        &mut catalog,
        instance("jobs", "job-1", 9000, vec![ttl_check()]),
    )
    .await;
    assert_eq!(stored.health(), Critical, "TTL checks start critical");

    let unknown = catalog
        .heartbeat(HeartbeatRequest {
            service: "jobs".into(),
            id: "job-1".into(),
            check_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown check");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("nope"), "{}", unknown.message());
    let bad_status = catalog
        .heartbeat(HeartbeatRequest {
            service: "jobs".into(),
            id: "job-1".into(),
            status: 9,
            ..Default::default()
        })
        .await
        .expect_err("unknown status");
    assert_eq!(bad_status.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_status.message().contains("status"),
        "{}",
        bad_status.message()
    );

    report(&mut catalog, "jobs", "job-1", Passing, "ready")
        .await
        .expect("report");
    let (_, passing) = events.wait_put("job-1", Passing, DEADLINE).await;
    assert_eq!(state_of(&passing).output, "ready");
    assert!(
        state_of(&passing).reason.contains("reported"),
        "{:?}",
        state_of(&passing)
    );

    // Reports well within the TTL for 3 TTLs: no change, nothing written.
    for tick in 0..12 {
        report(
            &mut catalog,
            "jobs",
            "job-1",
            Passing,
            &format!("tick {tick}"),
        )
        .await
        .expect("report");
        tokio::time::sleep(TTL / 4).await;
    }
    // The registration (critical until reported), then the first report.
    assert_eq!(events.healths("job-1"), vec![Critical, Passing]);
    // The latest report shows through any member, stamped by the owner.
    let shown = catalog
        .get_service(GetServiceRequest {
            service: "jobs".into(),
            serializable: false,
            include_probes: true,
        })
        .await
        .expect("get service")
        .into_inner();
    let probe = shown.instances[0].checks[0]
        .last_probe
        .clone()
        .expect("latest report");
    assert_eq!(probe.output, "tick 11");
    assert_eq!(probe.member_id, owner as u64 + 1);

    report(&mut catalog, "jobs", "job-1", Warning, "degraded")
        .await
        .expect("report");
    let (_, warning) = events.wait_put("job-1", Warning, DEADLINE).await;
    assert_eq!(state_of(&warning).output, "degraded");

    let last_sent = Instant::now();
    report(&mut catalog, "jobs", "job-1", Passing, "last")
        .await
        .expect("report");
    let (expired_at, critical) = events.wait_put("job-1", Critical, TTL + SLACK).await;
    let after = expired_at - last_sent;
    assert!(
        after >= TTL,
        "expired {after:?} after the last report, TTL {TTL:?}"
    );
    assert!(
        state_of(&critical).output.contains("TTL expired"),
        "{:?}",
        state_of(&critical)
    );
    assert_eq!(
        events.healths("job-1"),
        vec![Critical, Passing, Warning, Passing, Critical]
    );
}

/// The owner of a TTL check dies while the instance keeps reporting through the other
/// members: reports may be refused (Unavailable) until the leader moves the check to the next
/// member, but the check never expires; the heir expires it once the reports stop.
#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_check_outlives_its_owner() {
    let mut cluster = started_cluster().await;
    let (owner, other) = ttl_owner_and_other("jobs", "job-2");
    let mut events = ServiceEvents::open(&cluster, other, "jobs").await;
    let mut catalog = cluster.catalog(other).await;
    register(
        &mut catalog,
        instance("jobs", "job-2", 9000, vec![ttl_check()]),
    )
    .await;
    report(&mut catalog, "jobs", "job-2", Passing, "up")
        .await
        .expect("report");
    events.wait_put("job-2", Passing, DEADLINE).await;

    cluster.kill(owner);
    let killed_at = Instant::now();
    let mut refused = Vec::new();
    let mut last_accepted = None;
    while killed_at.elapsed() < TTL * 4 {
        let sent = Instant::now();
        match report(&mut catalog, "jobs", "job-2", Passing, "up").await {
            Ok(()) => last_accepted = Some(sent),
            Err(status) => refused.push((sent - killed_at, status.code())),
        }
        tokio::time::sleep(TTL / 4).await;
    }
    let last_accepted = last_accepted.expect("reports accepted again after the takeover");
    assert!(
        last_accepted > killed_at + TTL * 3,
        "reports still refused late: {refused:?}"
    );
    for (_, code) in &refused {
        assert_eq!(*code, tonic::Code::Unavailable, "{refused:?}");
    }
    eprintln!("reports refused after the owner's death: {refused:?}");
    assert_eq!(
        events.healths("job-2"),
        vec![Critical, Passing],
        "the check must not expire while reported"
    );
    let (expired_at, _) = events.wait_put("job-2", Critical, TTL + SLACK).await;
    assert!(expired_at - last_accepted >= TTL);
}

/// `GetService` with `include_probes` shows each check's latest probe (status, output,
/// latency, time and the member that ran it) through a member that does not run the check.
#[tokio::test(flavor = "multi_thread")]
async fn the_latest_probe_of_a_check_shows_through_every_member() {
    let cluster = started_cluster().await;
    let server = HttpServer::start().await;
    let owner = owner_of("probed", "probed-1", &MEMBERS);
    let other = (owner as usize) % 3;
    let mut catalog = cluster.catalog(other).await;
    register(
        &mut catalog,
        instance(
            "probed",
            "probed-1",
            server.port(),
            vec![http_check(server.url("/health"))],
        ),
    )
    .await;
    wait_instances(
        &mut catalog,
        "probed",
        &["probed-1"],
        DEADLINE,
        "passing",
        |i| i.health() == Passing,
    )
    .await;
    let before = health_checker_now_ms();
    tokio::time::sleep(INTERVAL * 2).await;
    let shown = catalog
        .get_service(GetServiceRequest {
            service: "probed".into(),
            serializable: true,
            include_probes: true,
        })
        .await
        .expect("get service")
        .into_inner();
    let probe = shown.instances[0].checks[0]
        .last_probe
        .clone()
        .expect("latest probe");
    assert_eq!(probe.member_id, owner);
    assert_eq!(probe.status(), Passing);
    assert!(probe.output.contains("200 OK"), "{}", probe.output);
    assert!(probe.latency_us > 0);
    assert!(
        probe.at_unix_ms > before,
        "{probe:?} not newer than {before}"
    );
    // Without include_probes, nothing is gathered.
    let plain = service_instances(&mut catalog, "probed")
        .await
        .expect("read");
    assert!(plain[0].checks[0].last_probe.is_none());
}

fn health_checker_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
