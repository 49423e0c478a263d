//! The catalog workload (`beacon.v1.Catalog`): clients register, deregister, put into and take
//! out of maintenance, and heartbeat instances of two services, and read the services with
//! GetService (linearizable); watchers follow the services with WatchService.
//!
//! - **Instances.** Each service has four persistent slots `p0..p3` and two ephemeral slots
//!   `e0, e1`; the instance id is `<slot>-g<generation>`, and the generation moves on every
//!   [`OPS_PER_GENERATION`] client ops, so each instance's history stays small enough for the
//!   linearizability search (as the register workload rotates keys). Every registration carries
//!   a unique value (metadata `op`, and the port derived from it), so reads tell registrations
//!   apart.
//! - **Ops** (client loop): GetService 35 %; register a persistent slot 20 %; an ephemeral
//!   registration 10 % (LeaseGrant of the minimum TTL, then Register with that lease — the
//!   instance is deleted when the lease ends); deregister 8 %; SetMaintenance on or off 10 %;
//!   Heartbeat (renews an ephemeral instance's lease) 17 %. Ephemeral instances of past
//!   generations get no more heartbeats and expire.
//! - **Watchers** (one per node, background): WatchService sessions of 1–5 s on a random
//!   service and node, starting with a snapshot (start revision 0), resuming from the last
//!   revision seen + 1, or at a recent revision; a compacted start (the stream ends with
//!   `compact_revision`) restarts with a snapshot. Recorded in `catalog-watch.jsonl`.
//! - **Ground truth**: a plain etcd watch of the catalog's key prefix `/_beacon/instances/` from
//!   revision 1 with `prev_kv` (the watch workload's truth watcher, [`Recording`]), with the
//!   compactor staying behind it; recorded in `watch.jsonl` with the final linearizable reads of
//!   the prefix, so the watch checker's truth validation applies.
//! - **After the heal**: GetService on every node (linearizable, recorded as final reads), the
//!   final prefix reads, then rounds of serializable GetService on every node until all report
//!   the same revision (`catalog-convergence.jsonl`).
//! - **Health** (`--workload health`, [`health`]): also the instances of `jepsen-h`, with HTTP
//!   checks against endpoints this process serves and an endpoint nemesis; the watchers and the
//!   final reads cover that service too, and before the final reads the health checks are given
//!   time to settle after the heal.
//!
//! [`crate::checker::catalog`] judges all of it ([`crate::checker::health`] the health part).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::beacon::v1::catalog_client::CatalogClient;
use beacon_proto::beacon::v1::{
    instance_event, DeregisterRequest, GetServiceRequest, HealthStatus, HeartbeatRequest, Instance,
    RegisterRequest, SetMaintenanceRequest, WatchServiceRequest, WatchServiceResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::checker::catalog::{
    CatalogWatchEntry, ConvergenceEntry, InstanceEventRecord, WatchEntryKind,
};
use crate::checker::watch::WatchEntry;
use crate::client::NodeClient;
use crate::cluster::Cluster;
use crate::history::{CheckRecord, Function, History, InstanceRecord, Op, OpType};
use crate::workload::health::{self, Health, HealthEntry};
use crate::workload::watch::{watch_channel, Recording};

/// The services the clients work on.
pub const SERVICES: [&str; 2] = ["jepsen-a", "jepsen-b"];
/// The catalog's instance keys (the ground truth watches all of it).
pub const PREFIX: &str = "/_beacon/instances/";
/// Client ops per generation of instance ids.
pub const OPS_PER_GENERATION: u64 = 300;
const PERSISTENT_SLOTS: u64 = 4;
const EPHEMERAL_SLOTS: u64 = 2;
/// The TTL asked for ephemeral registrations' leases (beacond raises it to its minimum).
const TTL_ASKED: i64 = 1;
/// The address every instance registers (the port tells registrations apart).
const ADDRESS: &str = "10.0.0.1";
/// The metadata entry holding a registration's unique value.
pub const VALUE_KEY: &str = "op";

/// The port of the registration with value `value` (1..=65535, unique within 65,535 values;
/// the metadata value is unique always).
pub fn port_of(value: u64) -> u32 {
    u32::try_from((value - 1) % 65_535 + 1).expect("below 65536")
}

/// An instance as the checkers record it.
pub fn record_of(instance: &Instance) -> InstanceRecord {
    InstanceRecord {
        id: instance.id.clone(),
        value: instance
            .metadata
            .get(VALUE_KEY)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0),
        port: instance.port,
        maintenance: instance
            .maintenance
            .as_ref()
            .is_some_and(|maintenance| maintenance.enabled),
        lease: instance.lease,
        create_revision: instance.create_revision,
        mod_revision: instance.mod_revision,
        checks: instance
            .checks
            .iter()
            .map(|check| {
                let state = check.state.clone().unwrap_or_default();
                CheckRecord {
                    id: check.id.clone(),
                    status: status_name(state.status()).to_string(),
                    reason: state.reason,
                    since_unix_ms: state.since_unix_ms,
                }
            })
            .collect(),
    }
}

/// A health status as the stored records spell it (empty: unspecified).
pub fn status_name(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical => "critical",
        HealthStatus::Unspecified => "",
    }
}

/// The history key of an instance: `service/id`.
pub fn instance_key(service: &str, id: &str) -> String {
    format!("{service}/{id}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The workload's shared state.
#[derive(Debug, Default)]
pub struct Catalog {
    /// `--workload health`: also the health instances, their endpoints and endpoint nemesis.
    with_health: bool,
    health: std::sync::OnceLock<Health>,
    recording: Recording,
    next_value: AtomicU64,
    ops: AtomicU64,
    watch_entries: Arc<Mutex<Vec<CatalogWatchEntry>>>,
    convergence: Mutex<Vec<ConvergenceEntry>>,
    watchers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The highest revision any catalog answer reported.
    head: Arc<AtomicI64>,
}

/// A finished op's completion, recorded.
fn finish<T>(
    history: &History,
    mut done: Op,
    result: Result<T, crate::client::CallError>,
    on_ok: impl FnOnce(&mut Op, T),
) -> OpType {
    match result {
        Ok(response) => {
            done.op_type = OpType::Ok;
            on_ok(&mut done, response);
        }
        Err(error) => done.write_failed(&error),
    }
    history.record(done).op_type
}

impl Catalog {
    /// The catalog workload; with `health`, also the health instances (`--workload health`).
    pub fn new(health: bool) -> Self {
        Catalog {
            with_health: health,
            ..Default::default()
        }
    }

    /// The services watchers follow and the final reads read.
    fn services(&self) -> Vec<&'static str> {
        let mut services = SERVICES.to_vec();
        if self.with_health {
            services.push(health::SERVICE);
        }
        services
    }

    /// Starts the truth watcher and compactor on the catalog prefix and one WatchService watcher
    /// per node (`watchers`); with health, starts the endpoints, registers their instances and
    /// starts the endpoint nemesis.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        cluster: &Arc<Mutex<Cluster>>,
        addresses: &[String],
        watchers: usize,
        seed: u64,
        deadline: Duration,
        stop: Arc<AtomicBool>,
        history: &History,
    ) -> anyhow::Result<()> {
        // Compaction well behind the head, so most resumes find their revision still there.
        self.recording
            .start(PREFIX, addresses, 0, 100..300, seed, stop.clone(), history)?;
        if self.with_health {
            let endpoints = Health::start_endpoints(&lock(cluster), history)?;
            let clients = crate::cluster::clients(addresses, deadline)?;
            let mut process = health::FIRST_SETUP_PROCESS;
            for instance in endpoints.instances() {
                let id = instance.id.clone();
                let mut registered = false;
                for attempt in 0..10 {
                    let client = &clients[attempt % clients.len()];
                    process += 1;
                    let outcome = self
                        .register_instance(client, process, instance.clone(), history)
                        .await;
                    if outcome == OpType::Ok {
                        registered = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !registered {
                    anyhow::bail!("could not register health instance {id}");
                }
            }
            endpoints.start_nemesis(cluster.clone(), seed, stop.clone());
            if self.health.set(endpoints).is_err() {
                anyhow::bail!("the health workload was started twice");
            }
        }
        let channels = addresses
            .iter()
            .map(|address| watch_channel(address))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut tasks = lock(&self.watchers);
        for watcher in 0..watchers as u64 {
            let context = Watcher {
                watcher,
                services: self.services(),
                channels: channels.clone(),
                entries: self.watch_entries.clone(),
                head: self.head.clone(),
                history: history.clone(),
                stop: stop.clone(),
            };
            tasks.push(tokio::spawn(
                context.run(seed.wrapping_mul(17).wrapping_add(watcher)),
            ));
        }
        Ok(())
    }

    fn saw_revision(&self, revision: i64) {
        self.head.fetch_max(revision, Ordering::Relaxed);
        self.recording.saw_revision(revision);
    }

    pub async fn step(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let generation = self.ops.fetch_add(1, Ordering::Relaxed) / OPS_PER_GENERATION;
        let service = SERVICES[rng.gen_range(0..SERVICES.len())];
        let persistent = format!("p{}-g{generation}", rng.gen_range(0..PERSISTENT_SLOTS));
        let ephemeral = format!("e{}-g{generation}", rng.gen_range(0..EPHEMERAL_SLOTS));
        let any = if rng.gen_bool(0.3) {
            ephemeral.clone()
        } else {
            persistent.clone()
        };
        let roll: f64 = rng.gen();
        if roll < 0.35 {
            self.get_service(client, process, service, history).await
        } else if roll < 0.55 {
            self.register(client, process, service, &persistent, 0, history)
                .await
        } else if roll < 0.65 {
            self.register_ephemeral(client, process, service, &ephemeral, history)
                .await
        } else if roll < 0.73 {
            self.deregister(client, process, service, &any, history)
                .await
        } else if roll < 0.83 {
            let enabled = rng.gen_bool(0.5);
            self.set_maintenance(client, process, service, &any, enabled, history)
                .await
        } else {
            let id = if rng.gen_bool(0.85) {
                &ephemeral
            } else {
                &persistent
            };
            self.heartbeat(client, process, service, id, history).await
        }
    }

    async fn register(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        id: &str,
        lease: i64,
        history: &History,
    ) -> OpType {
        let instance = Instance {
            service: service.to_string(),
            id: id.to_string(),
            address: ADDRESS.to_string(),
            lease,
            ..Default::default()
        };
        self.register_instance(client, process, instance, history)
            .await
    }

    /// Registers `instance` with a fresh unique value (metadata [`VALUE_KEY`]; the port derived
    /// from it unless the instance has one).
    async fn register_instance(
        &self,
        client: &NodeClient,
        process: u64,
        mut instance: Instance,
        history: &History,
    ) -> OpType {
        let value = self.next_value.fetch_add(1, Ordering::Relaxed) + 1;
        if instance.port == 0 {
            instance.port = port_of(value);
        }
        instance
            .metadata
            .insert(VALUE_KEY.to_string(), value.to_string());
        let lease = instance.lease;
        let mut invoke = Op::invoke(
            process,
            Function::Register,
            client.node,
            Some(instance_key(&instance.service, &instance.id)),
        );
        invoke.value = Some(value);
        invoke.lease = (lease != 0).then_some(lease);
        let done = history.record(invoke);
        let mut catalog = client.catalog();
        let result = client
            .call(catalog.register(RegisterRequest {
                instance: Some(instance),
            }))
            .await;
        finish(history, done, result, |done, response| {
            let revision = response.header.map_or(0, |header| header.revision);
            done.revision = Some(revision);
            done.flag = Some(!response.created);
            self.saw_revision(revision);
        })
    }

    /// A lease grant, then a registration bound to it (two ops of one process).
    async fn register_ephemeral(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        id: &str,
        history: &History,
    ) -> OpType {
        let mut invoke = Op::invoke(process, Function::Grant, client.node, None);
        invoke.ttl = Some(TTL_ASKED);
        let done = history.record(invoke);
        let mut lease = None;
        let outcome = finish(
            history,
            done,
            client.grant(TTL_ASKED).await,
            |done, (id, ttl)| {
                done.lease = Some(id);
                done.ttl = Some(ttl);
                lease = Some(id);
            },
        );
        match lease {
            Some(lease) => {
                self.register(client, process, service, id, lease, history)
                    .await
            }
            None => outcome,
        }
    }

    async fn deregister(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        id: &str,
        history: &History,
    ) -> OpType {
        let done = history.record(Op::invoke(
            process,
            Function::Deregister,
            client.node,
            Some(instance_key(service, id)),
        ));
        let mut catalog = client.catalog();
        let result = client
            .call(catalog.deregister(DeregisterRequest {
                service: service.to_string(),
                id: id.to_string(),
            }))
            .await;
        finish(history, done, result, |done, response| {
            let revision = response.header.map_or(0, |header| header.revision);
            done.revision = Some(revision);
            done.flag = Some(response.deleted);
            self.saw_revision(revision);
        })
    }

    async fn set_maintenance(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        id: &str,
        enabled: bool,
        history: &History,
    ) -> OpType {
        let mut invoke = Op::invoke(
            process,
            Function::SetMaintenance,
            client.node,
            Some(instance_key(service, id)),
        );
        invoke.flag = Some(enabled);
        let done = history.record(invoke);
        let mut catalog = client.catalog();
        let result = client
            .call(catalog.set_maintenance(SetMaintenanceRequest {
                service: service.to_string(),
                id: id.to_string(),
                enabled,
                reason: if enabled {
                    "jepsen".to_string()
                } else {
                    String::new()
                },
            }))
            .await;
        finish(history, done, result, |done, response| {
            let revision = response.header.map_or(0, |header| header.revision);
            done.revision = Some(revision);
            done.value = response
                .instance
                .as_ref()
                .map(|instance| record_of(instance).value);
            self.saw_revision(revision);
        })
    }

    async fn heartbeat(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        id: &str,
        history: &History,
    ) -> OpType {
        let done = history.record(Op::invoke(
            process,
            Function::Heartbeat,
            client.node,
            Some(instance_key(service, id)),
        ));
        let mut catalog = client.catalog();
        let result = client
            .call(catalog.heartbeat(HeartbeatRequest {
                service: service.to_string(),
                id: id.to_string(),
                ..Default::default()
            }))
            .await;
        finish(history, done, result, |done, response| {
            done.revision = response.header.map(|header| header.revision);
            done.ttl = Some(response.ttl);
        })
    }

    async fn get_service(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        history: &History,
    ) -> OpType {
        match self.read_service(client, process, service, history).await {
            Some(_) => OpType::Ok,
            None => OpType::Fail,
        }
    }

    /// A recorded linearizable GetService; the instances read, or `None` when it failed.
    async fn read_service(
        &self,
        client: &NodeClient,
        process: u64,
        service: &str,
        history: &History,
    ) -> Option<Vec<InstanceRecord>> {
        let mut done = history.record(Op::invoke(
            process,
            Function::GetService,
            client.node,
            Some(service.to_string()),
        ));
        let mut catalog = client.catalog();
        let result = client
            .call(catalog.get_service(GetServiceRequest {
                service: service.to_string(),
                serializable: false,
                include_probes: false,
            }))
            .await;
        match result {
            Ok(response) => {
                let revision = response.header.map_or(0, |header| header.revision);
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
                done.instances = Some(response.instances.iter().map(record_of).collect());
                self.saw_revision(revision);
            }
            // A read has no effect: any error is a definite failure.
            Err(error) => {
                done.op_type = OpType::Fail;
                done.error = Some(error.to_string());
            }
        }
        history.record(done).instances
    }

    /// After the heal: stops the watchers, reads every service on every node (linearizable,
    /// retried), reads the prefix for the truth check and stops the truth watcher, then reads
    /// every service on every node locally until all nodes answer at one revision.
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        let watchers: Vec<_> = lock(&self.watchers).drain(..).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        for mut watcher in watchers {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut watcher).await.is_err() {
                watcher.abort();
            }
        }
        let mut process = first_process;
        if let Some(health) = self.health.get() {
            process = self.await_health(health, clients, process, history).await;
        }
        for client in clients {
            for service in self.services() {
                for _attempt in 0..10 {
                    process += 1;
                    if self.get_service(client, process, service, history).await == OpType::Ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.recording
            .final_reads(PREFIX, clients, process + 1, history)
            .await;
        self.converge(clients, history).await;
        if let Some(health) = self.health.get() {
            health.stop_endpoints();
        }
    }

    /// After the heal: lets the endpoint nemesis settle, then reads the health service
    /// (linearizable, recorded) every 0.5 s on each node in turn until three reads in a row
    /// show every check settled, or the liveness bound + 3 s passed (a check held by flap damping
    /// stays warning for a minute; the checker decides whether a hold explains it). Returns the
    /// last process id used.
    async fn await_health(
        &self,
        health: &Health,
        clients: &[NodeClient],
        mut process: u64,
        history: &History,
    ) -> u64 {
        health.settle().await;
        let deadline = Instant::now() + health::LIVENESS_BOUND + Duration::from_secs(3);
        let mut settled_in_a_row = 0;
        for round in 0.. {
            process += 1;
            let client = &clients[round % clients.len()];
            match self
                .read_service(client, process, health::SERVICE, history)
                .await
            {
                Some(instances) if health.settled(&instances) => settled_in_a_row += 1,
                _ => settled_in_a_row = 0,
            }
            if settled_in_a_row >= 3 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        process
    }

    /// Rounds of serializable GetService on every node until one round finds every node at the
    /// same revision (≤ 30 s; leases may still be expiring). Every round is recorded.
    async fn converge(&self, clients: &[NodeClient], history: &History) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for round in 0.. {
            let mut entries = Vec::new();
            for client in clients {
                for service in self.services() {
                    let mut catalog = client.catalog();
                    let result = client
                        .call(catalog.get_service(GetServiceRequest {
                            service: service.to_string(),
                            serializable: true,
                            include_probes: false,
                        }))
                        .await;
                    let mut entry = ConvergenceEntry {
                        time: history.now(),
                        round,
                        node: client.node,
                        service: service.to_string(),
                        revision: 0,
                        instances: Vec::new(),
                        error: None,
                    };
                    match result {
                        Ok(response) => {
                            entry.revision = response.header.map_or(0, |header| header.revision);
                            entry.instances = response.instances.iter().map(record_of).collect();
                        }
                        Err(error) => entry.error = Some(error.to_string()),
                    }
                    entries.push(entry);
                }
            }
            let settled = entries.iter().all(|entry| entry.error.is_none())
                && entries
                    .windows(2)
                    .all(|pair| pair[0].revision == pair[1].revision);
            lock(&self.convergence).extend(entries);
            if settled || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The truth watcher's entries, compactions and final prefix reads (`watch.jsonl`).
    pub fn truth_entries(&self) -> Vec<WatchEntry> {
        self.recording.entries()
    }

    /// The WatchService sessions (`catalog-watch.jsonl`).
    pub fn watch_entries(&self) -> Vec<CatalogWatchEntry> {
        lock(&self.watch_entries).clone()
    }

    /// The convergence rounds (`catalog-convergence.jsonl`).
    pub fn convergence_entries(&self) -> Vec<ConvergenceEntry> {
        lock(&self.convergence).clone()
    }

    /// The health records (`health.jsonl`), if this is the health workload.
    pub fn health_entries(&self) -> Option<Vec<HealthEntry>> {
        self.with_health
            .then(|| self.health.get().map(Health::entries).unwrap_or_default())
    }
}

/// One WatchService watcher task.
struct Watcher {
    watcher: u64,
    services: Vec<&'static str>,
    channels: Vec<Channel>,
    entries: Arc<Mutex<Vec<CatalogWatchEntry>>>,
    head: Arc<AtomicI64>,
    history: History,
    stop: Arc<AtomicBool>,
}

/// How a session ended.
enum Ended {
    /// Lifetime over (or the run stopped).
    Done,
    /// The start was compacted: start again with a snapshot.
    Compacted,
    /// The stream failed: resume elsewhere.
    Broken,
}

impl Watcher {
    fn record(&self, mut entry: CatalogWatchEntry) {
        let mut entries = lock(&self.entries);
        entry.time = self.history.now();
        entries.push(entry);
    }

    fn entry(
        &self,
        kind: WatchEntryKind,
        session: u64,
        node: usize,
        service: &str,
    ) -> CatalogWatchEntry {
        CatalogWatchEntry::new(kind, self.watcher, session, node, service)
    }

    /// One WatchService stream; returns how it ended and the last revision it delivered.
    async fn session(
        &self,
        session: u64,
        node: usize,
        service: &str,
        start: i64,
        lifetime: Duration,
    ) -> (Ended, Option<i64>) {
        let mut request = self.entry(WatchEntryKind::Start, session, node, service);
        request.start_revision = start;
        self.record(request);
        let error = |message: String| {
            let mut entry = self.entry(WatchEntryKind::Error, session, node, service);
            entry.error = Some(message);
            self.record(entry);
        };
        let mut client = CatalogClient::new(self.channels[node].clone());
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            client.watch_service(WatchServiceRequest {
                service: service.to_string(),
                start_revision: start,
            }),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                error(format!("open: {:?}: {}", status.code(), status.message()));
                return (Ended::Broken, None);
            }
            Err(_) => {
                error("open: timeout".to_string());
                return (Ended::Broken, None);
            }
        };
        let began = Instant::now();
        let mut last = None;
        loop {
            if self.stop.load(Ordering::Relaxed) || began.elapsed() >= lifetime {
                return (Ended::Done, last);
            }
            let message = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            let response: WatchServiceResponse = match message {
                Err(_) => continue,
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => {
                    error("stream ended".to_string());
                    return (Ended::Broken, last);
                }
                Ok(Err(status)) => {
                    error(format!("{:?}: {}", status.code(), status.message()));
                    return (Ended::Broken, last);
                }
            };
            let revision = response.header.as_ref().map_or(0, |header| header.revision);
            self.head.fetch_max(revision, Ordering::Relaxed);
            let mut entry = self.entry(WatchEntryKind::Response, session, node, service);
            entry.revision = revision;
            entry.snapshot = response.snapshot;
            entry.compact_revision = response.compact_revision;
            entry.instances = response.instances.iter().map(record_of).collect();
            entry.events = response
                .events
                .iter()
                .map(|event| InstanceEventRecord {
                    delete: event.r#type == instance_event::EventType::Delete as i32,
                    instance: event.instance.as_ref().map(record_of).unwrap_or_default(),
                    prev: event.prev_instance.as_ref().map(record_of),
                })
                .collect();
            self.record(entry);
            if response.compact_revision > 0 {
                return (Ended::Compacted, last);
            }
            last = Some(revision);
        }
    }

    async fn run(self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = self.channels.len();
        let mut node = rng.gen_range(0..nodes);
        // Per service: where to resume (last revision delivered + 1).
        let mut resume: HashMap<&str, i64> = HashMap::new();
        let mut session = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let service = self.services[rng.gen_range(0..self.services.len())];
            let roll: f64 = rng.gen();
            let start = match resume.get(service) {
                Some(next) if roll < 0.6 => *next,
                _ if roll < 0.75 => {
                    (self.head.load(Ordering::Relaxed) - rng.gen_range(0..20)).max(1)
                }
                _ => 0,
            };
            let lifetime = Duration::from_millis(rng.gen_range(1000..5000));
            let (ended, last) = self.session(session, node, service, start, lifetime).await;
            session += 1;
            match (ended, last) {
                (Ended::Compacted, _) => {
                    resume.remove(service);
                }
                (ended, last) => {
                    if let Some(last) = last {
                        resume.insert(service, last + 1);
                    } else if start > 0 {
                        resume.insert(service, start);
                    }
                    node = match ended {
                        Ended::Broken => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            (node + rng.gen_range(1..nodes.max(2))) % nodes
                        }
                        _ => rng.gen_range(0..nodes),
                    };
                }
            }
        }
    }
}
