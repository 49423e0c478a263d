//! `bench put` and `bench range` (and dispatch to the watch cases in [`super::bench_watch`], the
//! catalog cases in [`super::bench_catalog`], the health-check case in [`super::bench_checks`]
//! and the DNS case in [`super::bench_dns`]): a load generator. The put, range and watch cases
//! speak only the etcd v3 API, so the same program measures etcd and Beacon; the catalog, check
//! and DNS cases need Beacon.
//!
//! `--clients` requests are kept in flight (one task each), spread round-robin over `--conns`
//! independent HTTP/2 connections, which are themselves spread round-robin over the endpoints
//! (like etcd's `benchmark` tool). Every connection is warmed up before the clock starts, so
//! connection setup is not measured. Latencies go into an HDR histogram (µs resolution).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_client::connection::open_channel;
use beacon_client::pb::kv_client::KvClient;
use beacon_client::{pb, Client, GetOptions};
use clap::{Args, Subcommand, ValueEnum};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::commands::bench_catalog::{self, RegisterBench, RegisterWorkload, ServiceWatchBench};
use crate::commands::bench_checks::{self, ChecksBench};
use crate::commands::bench_dns::{self, DnsBench};
use crate::commands::bench_watch::{
    self, new_histogram, WatchCapacityBench, WatchFanoutBench, WatchLatencyBench,
};
use crate::output::{self, BenchReport, Format};

/// Benchmark cases.
#[derive(Debug, Subcommand)]
pub enum BenchCase {
    /// Puts of random (or sequential) keys.
    Put(PutBench),
    /// Ranges (gets) of one key.
    Range(RangeBench),
    /// Watch notification latency: put sent → event received, one watcher.
    WatchLatency(WatchLatencyBench),
    /// Watch fan-out: put sent → event received by the last of many watchers of one key.
    WatchFanout(WatchFanoutBench),
    /// Watch capacity: time to create many watches over many streams, then hold them open.
    WatchCapacity(WatchCapacityBench),
    /// Catalog registrations (Beacon only): Register RPCs of distinct, persistent instances.
    Register(RegisterBench),
    /// Service watch propagation (Beacon only): Register sent → event received by each of many
    /// WatchService streams.
    ServiceWatch(ServiceWatchBench),
    /// Health-check capacity (Beacon only): HTTP checks of endpoints this process serves;
    /// probes/s, schedule, CPU per member, and the lag from an endpoint failing to the event.
    Checks(ChecksBench),
    /// DNS queries per second and latency against one member's DNS port (Beacon only), UDP,
    /// many queries in flight; optionally registers the queried service's instances first.
    Dns(DnsBench),
}

/// Load shape shared by every case.
#[derive(Debug, Args)]
pub struct Load {
    /// Independent connections (HTTP/2 channels).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in total.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
}

/// `bench put`.
#[derive(Debug, Args)]
pub struct PutBench {
    /// Load shape.
    #[command(flatten)]
    pub load: Load,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space: u64,
    /// Write keys 0, 1, 2, … (modulo --key-space) instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
}

/// Read consistency of `bench range`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable (local, possibly stale).
    S,
}

/// `bench range`.
#[derive(Debug, Args)]
pub struct RangeBench {
    /// Load shape.
    #[command(flatten)]
    pub load: Load,
    /// Read consistency.
    #[arg(long, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,
    /// The key to read.
    #[arg(long, default_value = "bench-key")]
    pub key: String,
}

/// What each request does.
pub enum Workload {
    /// etcd Put of a random or sequential key.
    Put {
        key_size: usize,
        value: Vec<u8>,
        key_space: u64,
        sequential: bool,
    },
    /// etcd Range.
    Range(pb::RangeRequest),
    /// Catalog Register (see [`RegisterWorkload`]).
    Register(RegisterWorkload),
}

impl Workload {
    /// Sends request number `sequence` on `channel`.
    async fn issue(
        &self,
        channel: &Channel,
        sequence: u64,
        random: &mut StdRng,
    ) -> Result<(), tonic::Status> {
        let mut kv = KvClient::new(channel.clone());
        match self {
            Workload::Put {
                key_size,
                value,
                key_space,
                sequential,
            } => {
                let index = if *sequential {
                    sequence % key_space
                } else {
                    random.gen_range(0..*key_space)
                };
                let request = pb::PutRequest {
                    key: format!("{index:0key_size$}").into_bytes(),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(request).await.map(drop)
            }
            Workload::Range(request) => kv.range(request.clone()).await.map(drop),
            Workload::Register(register) => register.issue(channel, sequence).await,
        }
    }
}

/// Runs a benchmark case and prints its report.
pub async fn run(client: &Client, format: Format, case: BenchCase) -> anyhow::Result<()> {
    let (name, load, workload) = match case {
        BenchCase::Put(bench) => {
            anyhow::ensure!(bench.key_space > 0, "--key-space must be at least 1");
            let mut random = StdRng::from_entropy();
            let value = (0..bench.val_size)
                .map(|_| random.gen_range(b'a'..=b'z'))
                .collect();
            let workload = Workload::Put {
                key_size: bench.key_size,
                value,
                key_space: bench.key_space,
                sequential: bench.sequential_keys,
            };
            ("put".to_string(), bench.load, workload)
        }
        BenchCase::Range(bench) => {
            let options = GetOptions {
                serializable: matches!(bench.consistency, Consistency::S),
                ..Default::default()
            };
            let name = match bench.consistency {
                Consistency::L => "range-l",
                Consistency::S => "range-s",
            };
            let request = options.to_request(bench.key.as_bytes());
            (name.to_string(), bench.load, Workload::Range(request))
        }
        BenchCase::WatchLatency(bench) => {
            let report = bench_watch::latency(client, bench).await?;
            println!("{}", output::bench(format, &report));
            return Ok(());
        }
        BenchCase::WatchFanout(bench) => {
            let report = bench_watch::fanout(client, bench).await?;
            println!("{}", output::bench(format, &report));
            return Ok(());
        }
        BenchCase::WatchCapacity(bench) => {
            let report = bench_watch::capacity(client, bench).await?;
            println!("{}", output::watch_capacity(format, &report));
            return Ok(());
        }
        BenchCase::Register(bench) => {
            let (load, workload) = bench_catalog::register_load(&bench)?;
            ("register".to_string(), load, workload)
        }
        BenchCase::ServiceWatch(bench) => {
            let report = bench_catalog::service_watch(client, bench).await?;
            println!("{}", output::bench_service_watch(format, &report));
            return Ok(());
        }
        BenchCase::Checks(bench) => {
            let report = bench_checks::run(client, bench).await?;
            println!("{}", bench_checks::render(format, &report));
            return Ok(());
        }
        BenchCase::Dns(bench) => return bench_dns::run(client, format, bench).await,
    };
    anyhow::ensure!(
        load.conns > 0 && load.clients > 0 && load.total > 0,
        "--conns, --clients and --total must be at least 1"
    );
    let report = drive(client, name, &load, Arc::new(workload)).await?;
    println!("{}", output::bench(format, &report));
    anyhow::ensure!(
        report.requests > 0,
        "every request failed ({} errors)",
        report.errors
    );
    Ok(())
}

/// Opens the connections, warms them up, runs the load and merges the histograms.
pub async fn drive(
    client: &Client,
    case: String,
    load: &Load,
    workload: Arc<Workload>,
) -> anyhow::Result<BenchReport> {
    let endpoints = client.endpoints();
    let timeout = client.options().request_timeout;
    let mut channels = Vec::with_capacity(load.conns);
    for index in 0..load.conns {
        let endpoint = &endpoints[index % endpoints.len()];
        let channel = open_channel(endpoint, client.options())?;
        let mut kv = KvClient::new(channel.clone());
        // Warm-up: connect now so that connection setup is not measured, and fail early with a
        // clear message when the cluster is unreachable.
        let warm_up = pb::RangeRequest {
            key: b"bench-warm-up".to_vec(),
            serializable: true,
            ..Default::default()
        };
        tokio::time::timeout(timeout, kv.range(warm_up))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))
            .and_then(|result| result.map_err(|status| anyhow::anyhow!("{}", status.message())))
            .with_context(|| format!("cannot reach {endpoint}"))?;
        channels.push(channel);
    }

    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let total = load.total;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..load.clients {
        let channel = channels[index % channels.len()].clone();
        let (next, errors, workload) = (next.clone(), errors.clone(), workload.clone());
        tasks.spawn(async move {
            let mut histogram = new_histogram();
            let mut random = StdRng::from_entropy();
            loop {
                let sequence = next.fetch_add(1, Ordering::Relaxed);
                if sequence >= total {
                    break;
                }
                let sent = Instant::now();
                let request = workload.issue(&channel, sequence, &mut random);
                match tokio::time::timeout(timeout, request).await {
                    Ok(Ok(())) => {
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        histogram.saturating_record(micros);
                    }
                    Ok(Err(_)) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        });
    }
    let mut histogram = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let worker = joined.context("a benchmark worker panicked")?;
        histogram
            .add(&worker)
            .context("merging latency histograms")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let millis = |micros: u64| Duration::from_micros(micros).as_secs_f64() * 1000.0;
    Ok(BenchReport {
        case,
        requests: histogram.len(),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        latency_ms: [
            millis(histogram.value_at_quantile(0.50)),
            millis(histogram.value_at_quantile(0.90)),
            millis(histogram.value_at_quantile(0.99)),
            millis(histogram.max()),
        ],
    })
}
