//! `bench dns`: a DNS load generator for one member's DNS port (UDP).
//!
//! `--sockets` connected UDP sockets, each driven by its own task that keeps `--in-flight`
//! queries outstanding: every answer is timed (HDR histogram, µs) and immediately replaced by
//! the next query. The query is encoded once with hickory-proto and only its id changes;
//! answers are checked by their header (id, response code, TC bit, answer count). A socket that
//! hears nothing for a second counts its outstanding queries as lost and sends new ones.
//!
//! With `--instances N` the run first registers N persistent instances of `--service` (passing:
//! no checks; addresses 10.x.y.z, weights 1..4) and deregisters them at the end, so the answer
//! size is known: `beacon bench dns --instances 10 --type SRV`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_client::beaconpb::Instance;
use beacon_client::Client;
use clap::Args;
use hdrhistogram::Histogram;
use hickory_proto::op::{Edns, Header, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::args::parse_duration;
use crate::commands::bench_watch::new_histogram;
use crate::output::{self, BenchReport, Format};

/// `bench dns`.
#[derive(Debug, Args)]
pub struct DnsBench {
    /// The member's DNS address (UDP).
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub server: SocketAddr,
    /// Service whose name is queried (`SERVICE.service.DOMAIN`).
    #[arg(long, default_value = "bench-dns")]
    pub service: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "beacon")]
    pub domain: String,
    /// Query this name instead of the service's.
    #[arg(long)]
    pub name: Option<String>,
    /// Record type: A, AAAA, SRV, TXT, ...
    #[arg(long = "type", default_value = "A")]
    pub record_type: String,
    /// Register this many instances of --service first (deregistered at the end); 0: none.
    #[arg(long, default_value_t = 0)]
    pub instances: u32,
    /// UDP sockets, one task each.
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Queries outstanding per socket.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// How long to send queries.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Advertise this EDNS0 UDP buffer size (0: no EDNS0, so answers are cut at 512 bytes).
    #[arg(long, default_value_t = 1232)]
    pub edns: u16,
}

/// What one socket saw.
struct SocketResult {
    histogram: Histogram<u64>,
    answered: u64,
    errors: u64,
    lost: u64,
    truncated: u64,
    answer_records: u64,
}

/// How long a socket waits for any answer before it counts its queries as lost.
const LOSS_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for the catalog view of the queried member to catch up after the registrations.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, format: Format, bench: DnsBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        bench.sockets > 0 && bench.in_flight > 0,
        "--sockets and --in-flight must be at least 1"
    );
    anyhow::ensure!(
        bench.in_flight <= 4096,
        "--in-flight must be at most 4096 per socket"
    );
    let record_type: RecordType = bench
        .record_type
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| anyhow::anyhow!("--type {:?} is not a record type", bench.record_type))?;
    let name = match &bench.name {
        Some(name) => name.clone(),
        None => format!("{}.service.{}", bench.service, bench.domain),
    };
    let name = Name::from_ascii(&name).with_context(|| format!("{name:?} is not a DNS name"))?;
    let mut query = Message::query();
    query.metadata.recursion_desired = false;
    query.queries.push(Query::query(name.clone(), record_type));
    if bench.edns > 0 {
        let mut edns = Edns::new();
        edns.set_max_payload(bench.edns.max(512));
        query.edns = Some(edns);
    }
    let template = Arc::new(query.to_vec().context("cannot encode the query")?);

    let mut registered = Vec::new();
    for index in 0..bench.instances {
        let instance = Instance {
            service: bench.service.clone(),
            id: format!("bench-{index}"),
            address: format!(
                "10.{}.{}.{}",
                (index >> 16) & 0xff,
                (index >> 8) & 0xff,
                index & 0xff
            ),
            port: 8000 + index % 1000,
            weight: 1 + index % 4,
            ..Default::default()
        };
        client
            .register(instance)
            .await
            .with_context(|| format!("cannot register instance bench-{index}"))?;
        registered.push(format!("bench-{index}"));
    }
    if !registered.is_empty() {
        tokio::time::sleep(SETTLE).await;
    }

    let started = Instant::now();
    let deadline = started + bench.duration;
    let mut sockets = JoinSet::new();
    for _ in 0..bench.sockets {
        let template = template.clone();
        let (server, in_flight) = (bench.server, bench.in_flight);
        sockets.spawn(async move { drive(server, template, in_flight, deadline).await });
    }
    let mut total = SocketResult {
        histogram: new_histogram(),
        answered: 0,
        errors: 0,
        lost: 0,
        truncated: 0,
        answer_records: 0,
    };
    let mut failure = None;
    while let Some(result) = sockets.join_next().await {
        match result.context("socket task")? {
            Ok(result) => {
                total.histogram.add(&result.histogram).ok();
                total.answered += result.answered;
                total.errors += result.errors;
                total.lost += result.lost;
                total.truncated += result.truncated;
                total.answer_records += result.answer_records;
            }
            Err(error) => failure = Some(error),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for id in &registered {
        let _ = client.deregister(&bench.service, id).await;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let millis = |micros: u64| Duration::from_micros(micros).as_secs_f64() * 1000.0;
    let histogram = &total.histogram;
    let report = BenchReport {
        case: format!("dns-{record_type}"),
        requests: total.answered,
        errors: total.errors + total.lost,
        seconds,
        latency_ms: [
            millis(histogram.value_at_quantile(0.5)),
            millis(histogram.value_at_quantile(0.9)),
            millis(histogram.value_at_quantile(0.99)),
            millis(histogram.max()),
        ],
    };
    println!("{}", output::bench(format, &report));
    if matches!(format, Format::Table) {
        let per_answer = if total.answered > 0 {
            total.answer_records as f64 / total.answered as f64
        } else {
            0.0
        };
        println!(
            "name {name} {record_type}: {per_answer:.1} answer records per response, \
             {} truncated (TC), {} error codes, {} lost",
            total.truncated, total.errors, total.lost
        );
    }
    Ok(())
}

/// One socket's loop; see the module docs.
async fn drive(
    server: SocketAddr,
    template: Arc<Vec<u8>>,
    in_flight: usize,
    deadline: Instant,
) -> anyhow::Result<SocketResult> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .context("bind address")?;
    let socket = UdpSocket::bind(bind)
        .await
        .context("cannot open a UDP socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let mut result = SocketResult {
        histogram: new_histogram(),
        answered: 0,
        errors: 0,
        lost: 0,
        truncated: 0,
        answer_records: 0,
    };
    // Send times by query id; ids rotate through the 16-bit space.
    let mut sent_at: Vec<Option<Instant>> = vec![None; 1 << 16];
    let mut next_id: u16 = rand::random();
    let mut outstanding = 0usize;
    let mut query = template.as_ref().clone();
    let mut answer = vec![0u8; 65_535];
    loop {
        while outstanding < in_flight && Instant::now() < deadline {
            next_id = next_id.wrapping_add(1);
            query[..2].copy_from_slice(&next_id.to_be_bytes());
            socket.send(&query).await.context("send")?;
            sent_at[usize::from(next_id)] = Some(Instant::now());
            outstanding += 1;
        }
        if outstanding == 0 {
            return Ok(result);
        }
        let received = match tokio::time::timeout(LOSS_TIMEOUT, socket.recv(&mut answer)).await {
            Ok(received) => received.context("receive")?,
            Err(_) => {
                result.lost += outstanding as u64;
                outstanding = 0;
                sent_at.iter_mut().for_each(|slot| *slot = None);
                continue;
            }
        };
        let mut decoder = BinDecoder::new(&answer[..received]);
        let Ok(header) = Header::read(&mut decoder) else {
            result.errors += 1;
            continue;
        };
        let Some(sent) = sent_at[usize::from(header.metadata.id)].take() else {
            // A late answer to a query already counted as lost.
            continue;
        };
        outstanding -= 1;
        result
            .histogram
            .record(sent.elapsed().as_micros().max(1) as u64)
            .ok();
        if header.metadata.response_code == ResponseCode::NoError {
            result.answered += 1;
            result.answer_records += u64::from(header.counts.answers);
            if header.metadata.truncation {
                result.truncated += 1;
            }
        } else {
            result.errors += 1;
        }
    }
}
