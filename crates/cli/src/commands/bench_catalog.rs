//! `bench register` and `bench service-watch`: catalog benchmarks (Beacon only), over raw
//! `beacon.v1.Catalog` calls on their own connections, like the etcd cases.
//!
//! Shapes (fixed here so runs compare):
//! - `register`: `--concurrency` Register RPCs in flight over `--conns` connections spread over
//!   the endpoints ([`super::bench::drive`], shared with `bench put`). Request `n` registers the
//!   persistent instance `i-n` of service `bench-register-{n / instances-per-service}`, so ids are
//!   distinct within a run and a re-run replaces the same instances instead of piling up new ones.
//! - `service-watch`: `--watchers` WatchService streams (from revision 0, so each first gets the
//!   snapshot) on one service, spread round-robin over `--connections` connections, which are
//!   spread round-robin over the endpoints. Registrations go one at a time to the first endpoint
//!   on their own connection, each with an id unique to the run; each waits until every watcher
//!   got its event. Latency = time the watcher's task received the event − time the Register was
//!   sent. The run's instances are deregistered at the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_client::beaconpb::catalog_client::CatalogClient;
use beacon_client::beaconpb::instance_event::EventType;
use beacon_client::beaconpb::{Instance, RegisterRequest, WatchServiceRequest};
use beacon_client::Client;
use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::commands::bench::{Load, Workload};
use crate::commands::bench_watch::{connections, new_histogram};
use crate::output::ServiceWatchReport;

/// `bench register`.
#[derive(Debug, Args)]
pub struct RegisterBench {
    /// Registrations to send in total.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Independent connections (HTTP/2 channels).
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Instances per service (request n goes to service n / this).
    #[arg(long, default_value_t = 100)]
    pub instances_per_service: u64,
}

/// `bench service-watch`.
#[derive(Debug, Args)]
pub struct ServiceWatchBench {
    /// WatchService streams on the one service.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Connections carrying the streams.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Registrations to send (one at a time, each waiting for every watcher).
    #[arg(long, default_value_t = 200)]
    pub registrations: u64,
    /// The watched service.
    #[arg(long, default_value = "bench-watch")]
    pub service: String,
}

/// The Register workload of `bench register`.
pub struct RegisterWorkload {
    instances_per_service: u64,
}

impl RegisterWorkload {
    /// Registers instance number `sequence`.
    pub async fn issue(&self, channel: &Channel, sequence: u64) -> Result<(), tonic::Status> {
        let instance = Instance {
            service: format!("bench-register-{}", sequence / self.instances_per_service),
            id: format!("i-{sequence:08}"),
            address: format!(
                "10.{}.{}.{}",
                (sequence >> 16) % 256,
                (sequence >> 8) % 256,
                sequence % 256
            ),
            port: 8080,
            tags: vec!["bench".to_string()],
            metadata: HashMap::from([("zone".to_string(), format!("z{}", sequence % 3))]),
            ..Default::default()
        };
        let request = RegisterRequest {
            instance: Some(instance),
        };
        CatalogClient::new(channel.clone())
            .register(request)
            .await
            .map(drop)
    }
}

/// The load shape and workload of `bench register`, for [`super::bench::drive`].
pub fn register_load(bench: &RegisterBench) -> anyhow::Result<(Load, Workload)> {
    anyhow::ensure!(
        bench.instances_per_service > 0,
        "--instances-per-service must be at least 1"
    );
    let load = Load {
        conns: bench.conns,
        clients: bench.concurrency,
        total: bench.total,
    };
    let workload = Workload::Register(RegisterWorkload {
        instances_per_service: bench.instances_per_service,
    });
    Ok((load, workload))
}

/// When each watcher got each registration's event. Watchers record into it directly and only
/// the watcher completing a registration wakes the coordinator: a wake-up per event would cost
/// the client more CPU than everything else in the measurement.
struct Arrivals {
    /// Registration number → arrival times so far.
    times: Mutex<HashMap<u64, Vec<Instant>>>,
    /// Notified when a registration has reached every watcher.
    complete: Notify,
    watchers: usize,
}

impl Arrivals {
    fn record(&self, number: u64, at: Instant) {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = times.entry(number).or_default();
        entry.push(at);
        if entry.len() == self.watchers {
            self.complete.notify_one();
        }
    }

    /// The arrival times of `number` once every watcher has it; otherwise how many have.
    fn take_complete(&self, number: u64) -> Result<Vec<Instant>, usize> {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        match times.get(&number) {
            Some(entry) if entry.len() >= self.watchers => {
                Ok(times.remove(&number).unwrap_or_default())
            }
            entry => Err(entry.map_or(0, Vec::len)),
        }
    }
}

/// Opens one WatchService stream, reports when its snapshot arrived, then reports every PUT of
/// this run's instances (ids `{prefix}{number}`).
async fn run_watcher(
    channel: Channel,
    service: String,
    prefix: String,
    ready: mpsc::UnboundedSender<()>,
    arrivals: Arc<Arrivals>,
) -> anyhow::Result<()> {
    let request = WatchServiceRequest {
        service,
        start_revision: 0,
    };
    let mut stream = CatalogClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .watch_service(request)
        .await
        .context("opening a service watch")?
        .into_inner();
    let snapshot = stream
        .message()
        .await
        .context("service watch failed before its snapshot")?
        .context("service watch closed before its snapshot")?;
    anyhow::ensure!(snapshot.snapshot, "the first response is not a snapshot");
    let _ = ready.send(());
    while let Some(response) = stream.message().await.context("service watch failed")? {
        let received = Instant::now();
        for event in &response.events {
            if event.r#type() != EventType::Put {
                continue;
            }
            let number = event
                .instance
                .as_ref()
                .and_then(|instance| instance.id.strip_prefix(&prefix))
                .and_then(|number| number.parse().ok());
            if let Some(number) = number {
                arrivals.record(number, received);
            }
        }
    }
    anyhow::bail!("service watch ended")
}

/// Runs `service-watch`; see the module docs.
pub async fn service_watch(
    client: &Client,
    bench: ServiceWatchBench,
) -> anyhow::Result<ServiceWatchReport> {
    anyhow::ensure!(
        bench.connections > 0 && bench.watchers >= bench.connections && bench.registrations > 0,
        "need at least one connection, one watcher per connection and one registration"
    );
    let timeout = client.options().request_timeout;
    let mut register = CatalogClient::new(connections(client, 1).await?.remove(0));
    let channels = connections(client, bench.connections).await?;
    let prefix = format!("w{:08x}-", rand::thread_rng().gen::<u32>());

    let (ready, mut readied) = mpsc::unbounded_channel();
    let arrivals = Arc::new(Arrivals {
        times: Mutex::new(HashMap::new()),
        complete: Notify::new(),
        watchers: bench.watchers,
    });
    let mut watchers = JoinSet::new();
    for index in 0..bench.watchers {
        watchers.spawn(run_watcher(
            channels[index % channels.len()].clone(),
            bench.service.clone(),
            prefix.clone(),
            ready.clone(),
            arrivals.clone(),
        ));
    }
    drop(ready);
    let open_deadline = tokio::time::Instant::now() + timeout.max(Duration::from_secs(60));
    for _ in 0..bench.watchers {
        tokio::select! {
            Some(()) = readied.recv() => {}
            Some(failed) = watchers.join_next() => {
                failed.context("a watcher panicked")??;
                anyhow::bail!("a watcher ended before the run started");
            }
            _ = tokio::time::sleep_until(open_deadline) => {
                anyhow::bail!("not every watcher got its snapshot within {timeout:?}");
            }
        }
    }

    let mut all = new_histogram();
    let mut last = new_histogram();
    let mut registered = Vec::new();
    let started = Instant::now();
    for number in 0..bench.registrations {
        let id = format!("{prefix}{number}");
        let instance = Instance {
            service: bench.service.clone(),
            id: id.clone(),
            address: "127.0.0.1".to_string(),
            port: 8080,
            ..Default::default()
        };
        let sent = Instant::now();
        tokio::time::timeout(
            timeout,
            register.register(RegisterRequest {
                instance: Some(instance),
            }),
        )
        .await
        .map_err(|_| anyhow::anyhow!("register timed out after {timeout:?}"))?
        .map_err(|status| anyhow::anyhow!("register failed: {}", status.message()))?;
        registered.push(id);
        let deadline = tokio::time::Instant::now() + timeout;
        let times = loop {
            let seen = match arrivals.take_complete(number) {
                Ok(times) => break times,
                Err(seen) => seen,
            };
            // A stale permit (a completion noticed before waiting) only costs one more check.
            if tokio::time::timeout_at(deadline, arrivals.complete.notified())
                .await
                .is_err()
            {
                anyhow::bail!(
                    "only {seen} of {} watchers saw registration {number} within {timeout:?}",
                    bench.watchers
                );
            }
        };
        let micros = |at: &Instant| at.duration_since(sent).as_micros().max(1) as u64;
        for at in &times {
            all.saturating_record(micros(at));
        }
        let slowest = times.iter().map(micros).max().unwrap_or(1);
        last.saturating_record(slowest);
    }
    let seconds = started.elapsed().as_secs_f64();
    watchers.abort_all();
    // Best effort: leave the service as it was.
    for id in &registered {
        let _ = client.deregister(&bench.service, id).await;
    }
    Ok(ServiceWatchReport {
        watchers: bench.watchers as u64,
        connections: bench.connections as u64,
        registrations: bench.registrations,
        seconds,
        all_ms: percentiles(&all),
        last_ms: percentiles(&last),
    })
}

/// p50, p99 and max in milliseconds.
fn percentiles(histogram: &Histogram<u64>) -> [f64; 3] {
    let millis = |micros: u64| Duration::from_micros(micros).as_secs_f64() * 1000.0;
    [
        millis(histogram.value_at_quantile(0.50)),
        millis(histogram.value_at_quantile(0.99)),
        millis(histogram.max()),
    ]
}
