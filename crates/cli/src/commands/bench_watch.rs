//! `bench watch-latency`, `bench watch-fanout`, `bench watch-capacity`: watch benchmarks over raw
//! etcd v3 `Watch` streams, so they measure etcd and Beacon alike.
//!
//! Shapes (fixed here so runs compare):
//! - Puts go to the *first* endpoint on their own connection; watch connections are spread
//!   round-robin over all endpoints, starting with the first.
//! - One `Watch` stream per connection, many watches per stream: what etcd's clientv3 does for
//!   the watches of one client (and what etcd's own `benchmark watch-latency` does per stream).
//! - Every connection is warmed up (a serializable read) before the clock starts.
//! - Watches are created with `start_revision` 0 (from now), server-assigned watch ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_client::connection::open_channel;
use beacon_client::pb::kv_client::KvClient;
use beacon_client::pb::watch_client::WatchClient;
use beacon_client::{pb, Client};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::args::parse_duration;
use crate::output::{BenchReport, WatchCapacityReport};

/// `bench watch-latency`.
#[derive(Debug, Args)]
pub struct WatchLatencyBench {
    /// Puts to send (one at a time, each waiting for its event).
    #[arg(long, default_value_t = 1_000)]
    pub total: u64,
    /// The watched (and written) key.
    #[arg(long, default_value = "bench-watch-key")]
    pub key: String,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
}

/// `bench watch-fanout`.
#[derive(Debug, Args)]
pub struct WatchFanoutBench {
    /// Watchers of the one key, spread evenly over the connections' streams.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: u64,
    /// Connections, one watch stream each.
    #[arg(long, default_value_t = 10)]
    pub conns: usize,
    /// Puts to send (one at a time, each waiting for its last watcher).
    #[arg(long, default_value_t = 200)]
    pub total: u64,
    /// The watched (and written) key.
    #[arg(long, default_value = "bench-watch-key")]
    pub key: String,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
}

/// `bench watch-capacity`.
#[derive(Debug, Args)]
pub struct WatchCapacityBench {
    /// Watches to create.
    #[arg(long, default_value_t = 100_000)]
    pub watches: u64,
    /// Watch streams, spread evenly over the connections; watches spread evenly over streams.
    #[arg(long, default_value_t = 1_000)]
    pub streams: usize,
    /// Connections carrying the streams (HTTP/2 multiplexes streams on a connection).
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Distinct keys watched (watch i watches key i modulo this); default: one key per watch.
    #[arg(long)]
    pub keys: Option<u64>,
    /// How long to keep every watch open once created (the script measures memory meanwhile).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
}

/// Opens `count` independent connections, round-robin over `endpoints`, each warmed up.
pub async fn connections(client: &Client, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoints = client.endpoints();
    let timeout = client.options().request_timeout;
    let mut channels = Vec::with_capacity(count);
    for index in 0..count {
        let endpoint = &endpoints[index % endpoints.len()];
        let channel = open_channel(endpoint, client.options())?;
        let warm_up = pb::RangeRequest {
            key: b"bench-warm-up".to_vec(),
            serializable: true,
            ..Default::default()
        };
        tokio::time::timeout(timeout, KvClient::new(channel.clone()).range(warm_up))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))
            .and_then(|result| result.map_err(|status| anyhow::anyhow!("{}", status.message())))
            .with_context(|| format!("cannot reach {endpoint}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// The put connection: a fresh connection to the first endpoint.
async fn put_connection(client: &Client) -> anyhow::Result<KvClient<Channel>> {
    let mut only_first = connections(client, 1).await?;
    Ok(KvClient::new(only_first.remove(0)))
}

/// One watch stream: its request sender (kept alive to keep the stream open) and responses.
struct WatchStream {
    requests: mpsc::UnboundedSender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

fn create_request(key: Vec<u8>) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

/// Opens a stream on `channel`, sends one create request per key (pipelined) and waits until
/// all are created, calling `on_created` for each.
async fn create_watches(
    channel: Channel,
    keys: Vec<Vec<u8>>,
    on_created: impl Fn(),
) -> anyhow::Result<WatchStream> {
    let (requests, receiver) = mpsc::unbounded_channel();
    let wanted = keys.len();
    for key in keys {
        requests
            .send(create_request(key))
            .expect("the receiver is alive until the stream is opened");
    }
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
    let mut responses = WatchClient::new(channel)
        .watch(stream)
        .await
        .context("opening a watch stream")?
        .into_inner();
    let mut created = 0;
    while created < wanted {
        let response = responses
            .message()
            .await
            .context("watch stream failed during creation")?
            .context("watch stream closed during creation")?;
        anyhow::ensure!(
            !response.canceled,
            "watch creation canceled: {}",
            response.cancel_reason
        );
        if response.created {
            created += 1;
            on_created();
        }
    }
    Ok(WatchStream {
        requests,
        responses,
    })
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

fn report(case: &str, histogram: &Histogram<u64>, errors: u64, seconds: f64) -> BenchReport {
    let millis = |micros: u64| Duration::from_micros(micros).as_secs_f64() * 1000.0;
    BenchReport {
        case: case.to_string(),
        requests: histogram.len(),
        errors,
        seconds,
        latency_ms: [
            millis(histogram.value_at_quantile(0.50)),
            millis(histogram.value_at_quantile(0.90)),
            millis(histogram.value_at_quantile(0.99)),
            millis(histogram.max()),
        ],
    }
}

fn put_request(key: &str, val_size: usize) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'v'; val_size],
        ..Default::default()
    }
}

/// Runs `watch-latency`: put sent → event received by the one watcher.
pub async fn latency(client: &Client, bench: WatchLatencyBench) -> anyhow::Result<BenchReport> {
    let mut kv = put_connection(client).await?;
    let channel = connections(client, 1).await?.remove(0);
    let mut stream = create_watches(channel, vec![bench.key.as_bytes().to_vec()], || {}).await?;
    let timeout = client.options().request_timeout;
    let request = put_request(&bench.key, bench.val_size);
    let mut histogram = new_histogram();
    let mut errors = 0;
    let started = Instant::now();
    for _ in 0..bench.total {
        let sent = Instant::now();
        let put = kv.put(request.clone());
        let event = async {
            loop {
                let response = stream.responses.message().await?;
                let Some(response) = response else {
                    return Err(tonic::Status::unavailable("watch stream closed"));
                };
                if let Some(event) = response.events.last() {
                    let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    return Ok((Instant::now(), revision));
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, async { tokio::join!(put, event) }).await;
        match outcome {
            Ok((Ok(put), Ok((received, revision)))) => {
                let put_revision = put.into_inner().header.unwrap_or_default().revision;
                anyhow::ensure!(
                    revision == put_revision,
                    "event for revision {revision}, expected {put_revision}"
                );
                let micros = received.duration_since(sent).as_micros().max(1) as u64;
                histogram.saturating_record(micros);
            }
            Ok((Err(status), _)) => {
                // The put failed, so no event comes; the stream is still in step.
                errors += 1;
                eprintln!("put failed: {}", status.message());
            }
            Ok((_, Err(status))) => anyhow::bail!("watch stream failed: {}", status.message()),
            Err(_) => anyhow::bail!("no event within {timeout:?}; the stream is out of step"),
        }
    }
    drop(stream.requests);
    Ok(report(
        "watch-latency",
        &histogram,
        errors,
        started.elapsed().as_secs_f64(),
    ))
}

/// Runs `watch-fanout`: put sent → event received by the last of all watchers.
pub async fn fanout(client: &Client, bench: WatchFanoutBench) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        bench.conns > 0 && bench.watchers >= bench.conns as u64,
        "need at least one watcher per connection"
    );
    let mut kv = put_connection(client).await?;
    let channels = connections(client, bench.conns).await?;
    // Stream index → (revision, time its last watcher got the event).
    let (reports, mut reported) = mpsc::unbounded_channel::<(i64, Instant)>();
    let mut readers = JoinSet::new();
    for (index, channel) in channels.into_iter().enumerate() {
        let per_stream = bench.watchers / bench.conns as u64
            + u64::from((index as u64) < bench.watchers % bench.conns as u64);
        let keys = vec![bench.key.as_bytes().to_vec(); per_stream as usize];
        let mut stream = create_watches(channel, keys, || {}).await?;
        let reports = reports.clone();
        readers.spawn(async move {
            let mut counts: HashMap<i64, u64> = HashMap::new();
            while let Ok(Some(response)) = stream.responses.message().await {
                let Some(event) = response.events.last() else {
                    continue;
                };
                let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let count = counts.entry(revision).or_default();
                *count += 1;
                if *count == per_stream {
                    counts.remove(&revision);
                    if reports.send((revision, Instant::now())).is_err() {
                        break;
                    }
                }
            }
            drop(stream.requests);
        });
    }
    drop(reports);
    let timeout = client.options().request_timeout;
    let request = put_request(&bench.key, bench.val_size);
    let mut histogram = new_histogram();
    let mut early: HashMap<i64, (usize, Instant)> = HashMap::new();
    let started = Instant::now();
    for _ in 0..bench.total {
        let sent = Instant::now();
        let put = tokio::time::timeout(timeout, kv.put(request.clone()))
            .await
            .map_err(|_| anyhow::anyhow!("put timed out after {timeout:?}"))?
            .map_err(|status| anyhow::anyhow!("put failed: {}", status.message()))?;
        let revision = put.into_inner().header.unwrap_or_default().revision;
        let deadline = tokio::time::Instant::now() + timeout;
        let last = loop {
            if let Some(&(streams, last)) = early.get(&revision) {
                if streams == bench.conns {
                    early.remove(&revision);
                    break last;
                }
            }
            let (reported_revision, at) = tokio::time::timeout_at(deadline, reported.recv())
                .await
                .map_err(|_| anyhow::anyhow!("not every watcher saw revision {revision}"))?
                .context("a watch stream ended")?;
            let entry = early.entry(reported_revision).or_insert((0, at));
            entry.0 += 1;
            entry.1 = entry.1.max(at);
        };
        histogram.saturating_record(last.duration_since(sent).as_micros().max(1) as u64);
    }
    readers.abort_all();
    Ok(report(
        "watch-fanout",
        &histogram,
        0,
        started.elapsed().as_secs_f64(),
    ))
}

/// The number of watches that the "first 10,000" creation time refers to.
const CREATION_MILESTONE: u64 = 10_000;

/// Runs `watch-capacity`: creates every watch, reports creation times, holds them open.
pub async fn capacity(
    client: &Client,
    bench: WatchCapacityBench,
) -> anyhow::Result<WatchCapacityReport> {
    anyhow::ensure!(
        bench.streams > 0 && bench.conns > 0 && bench.watches >= bench.streams as u64,
        "need at least one connection, one stream, and one watch per stream"
    );
    let key_count = bench.keys.unwrap_or(bench.watches).max(1);
    let channels = connections(client, bench.conns.min(bench.streams)).await?;
    let created = Arc::new(AtomicU64::new(0));
    // Microseconds from the start until the milestone watch was created (0 = not reached).
    let milestone_micros = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut creators = JoinSet::new();
    let streams = bench.streams as u64;
    for index in 0..streams {
        let channel = channels[index as usize % channels.len()].clone();
        // Watch i goes to stream i % streams and watches key i % key_count.
        let keys: Vec<Vec<u8>> = (index..bench.watches)
            .step_by(bench.streams)
            .map(|watch| format!("bench-watch/{:08}", watch % key_count).into_bytes())
            .collect();
        let (created, milestone_micros) = (created.clone(), milestone_micros.clone());
        creators.spawn(create_watches(channel, keys, move || {
            if created.fetch_add(1, Ordering::Relaxed) + 1 == CREATION_MILESTONE {
                let micros = started.elapsed().as_micros().max(1) as u64;
                milestone_micros.store(micros, Ordering::Relaxed);
            }
        }));
    }
    let mut held = Vec::with_capacity(bench.streams);
    while let Some(joined) = creators.join_next().await {
        held.push(joined.context("a watch creator panicked")??);
    }
    let all_seconds = started.elapsed().as_secs_f64();
    // The script waits for this line before it samples the member's memory.
    eprintln!(
        "holding {} watches on {} streams for {:?}",
        bench.watches, bench.streams, bench.hold
    );
    tokio::time::sleep(bench.hold).await;
    drop(held);
    let milestone = milestone_micros.load(Ordering::Relaxed);
    Ok(WatchCapacityReport {
        watches: bench.watches,
        streams: bench.streams as u64,
        conns: channels.len() as u64,
        keys: key_count,
        first_10000_seconds: (milestone > 0)
            .then(|| Duration::from_micros(milestone).as_secs_f64()),
        all_seconds,
        hold_seconds: bench.hold.as_secs_f64(),
    })
}
