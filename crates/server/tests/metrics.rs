//! The HTTP endpoint of real members: `/metrics` scraped over HTTP and parsed strictly as
//! Prometheus' text format (a small parser below, with its own negative tests), and `/health`,
//! `/livez`, `/readyz` as quorum comes and goes.
//!
//! The scrape test drives writes, watches, leases and catalog registrations with checks, then
//! checks each family's values against what was done: one leader, commit and apply indexes past
//! the writes, gRPC calls counted by method and code, fsync and apply histograms filled, watch
//! gauges exact per member, leases, instances by health, check runs and transitions.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use beacon_proto::beacon::v1::{check, Check, Instance, RegisterRequest, TcpCheck};
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    LeaseGrantRequest, RangeRequest, WatchCancelRequest, WatchCreateRequest,
};
use common::{free_port, TestCluster, WatchSession, DEADLINE};

// ---------------------------------------------------------------------------------------------
// Prometheus text format (version 0.0.4), parsed strictly

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// The sample's own name (`x_bucket`, `x_sum`, … for histograms).
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Clone)]
struct Family {
    kind: Kind,
    /// A TYPE line was seen (HELP may come first; a family without TYPE is untyped).
    typed: bool,
    help: Option<String>,
    samples: Vec<Sample>,
}

/// A parsed exposition: families by name.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("bad value {text:?}")),
    }
}

/// `{a="1",b="x\"y"}` at the start of `text`: the labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("expected label=\"value\"")?;
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((index, '"')) => break index,
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(families: &BTreeMap<String, Family>, name: &'a str) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match families.get(base).map(|family| family.kind) {
                Some(Kind::Histogram) => return Some(base),
                Some(Kind::Summary) if suffix != "_bucket" => return Some(base),
                _ => {}
            }
        }
    }
    None
}

impl Exposition {
    /// The family `name`, created untyped when this is its first mention.
    fn declare(&mut self, name: &str) -> &mut Family {
        self.families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                kind: Kind::Untyped,
                typed: false,
                help: None,
                samples: Vec::new(),
            })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut exposition = Exposition::default();
        let mut seen_series = std::collections::HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let context = |error: String| format!("line {}: {error}: {line:?}", number + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        let kind = match kind {
                            "counter" => Kind::Counter,
                            "gauge" => Kind::Gauge,
                            "histogram" => Kind::Histogram,
                            "summary" => Kind::Summary,
                            "untyped" => Kind::Untyped,
                            other => return Err(context(format!("unknown type {other:?}"))),
                        };
                        if !valid_metric_name(name) {
                            return Err(context("bad metric name".into()));
                        }
                        let family = exposition.declare(name);
                        if !family.samples.is_empty() || family.typed {
                            return Err(context("TYPE after samples, or twice".into()));
                        }
                        family.kind = kind;
                        family.typed = true;
                    }
                    (Some("HELP"), Some(name), help) => {
                        let family = exposition.declare(name);
                        if family
                            .help
                            .replace(help.unwrap_or("").to_string())
                            .is_some()
                        {
                            return Err(context("HELP twice".into()));
                        }
                    }
                    _ => {} // Other comments are allowed.
                }
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| context("no value".into()))?;
            let name = &line[..name_end];
            if !valid_metric_name(name) {
                return Err(context("bad metric name".into()));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(context)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields = rest.split_whitespace();
            let value = parse_value(fields.next().ok_or_else(|| context("no value".into()))?)
                .map_err(context)?;
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .map_err(|_| context("bad timestamp".into()))?;
            }
            if fields.next().is_some() || !rest.starts_with(' ') {
                return Err(context("trailing text".into()));
            }
            let base = family_of(&exposition.families, name)
                .ok_or_else(|| context("sample of an undeclared family".into()))?
                .to_string();
            if !seen_series.insert((name.to_string(), labels.clone())) {
                return Err(context("duplicate series".into()));
            }
            let family = exposition
                .families
                .get_mut(&base)
                .expect("family_of found it");
            family.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        for (name, family) in &exposition.families {
            if family.kind == Kind::Histogram {
                check_histogram(name, family)?;
            }
        }
        Ok(exposition)
    }

    fn family(&self, name: &str) -> &Family {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}; have {:?}", self.families.keys()))
    }

    /// Samples of `name` (the sample name) whose labels include `labels`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .values()
            .flat_map(|family| family.samples.iter())
            .filter(move |sample| {
                sample.name == name
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(*value)
                    })
            })
    }

    /// The sum of the matching samples (0 when there are none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(|sample| sample.value).sum()
    }

    /// The value of the one sample of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples(name, labels)
            .filter(|sample| sample.labels.len() == labels.len())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one {name}{labels:?} expected: {matching:?}"
        );
        matching[0].value
    }
}

type Labels = BTreeMap<String, String>;
/// A histogram's buckets (upper bound, cumulative count) and `_count`, for one label set.
type HistogramSeries = (Vec<(f64, f64)>, Option<f64>);

/// Buckets per label set: cumulative, ending at `+Inf`, which equals `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut series: HashMap<Labels, HistogramSeries> = HashMap::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        if sample.name.ends_with("_bucket") {
            let bound = labels
                .remove("le")
                .ok_or_else(|| format!("{name}: bucket without le"))?;
            let bound = parse_value(&bound)?;
            series
                .entry(labels)
                .or_default()
                .0
                .push((bound, sample.value));
        } else if sample.name.ends_with("_count") {
            series.entry(labels).or_default().1 = Some(sample.value);
        }
    }
    for (labels, (buckets, count)) in series {
        let count = count.ok_or_else(|| format!("{name}{labels:?}: no _count"))?;
        let ordered = buckets
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        let last = buckets.last().copied();
        if !ordered || last.map(|(bound, _)| bound) != Some(f64::INFINITY) {
            return Err(format!(
                "{name}{labels:?}: buckets not cumulative to +Inf: {buckets:?}"
            ));
        }
        if last.map(|(_, value)| value) != Some(count) {
            return Err(format!("{name}{labels:?}: +Inf bucket differs from _count"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_accepts_the_format_and_rejects_malformed_text() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"v\\\"q\\\\\",z=\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
                # TYPE g gauge\ng 1.5e3 1700000000000\n";
    let parsed = Exposition::parse(good).expect("valid text");
    assert_eq!(parsed.family("a_total").kind, Kind::Counter);
    assert_eq!(parsed.family("a_total").help.as_deref(), Some("Things."));
    assert_eq!(parsed.value("a_total", &[("k", "v\"q\\"), ("z", "")]), 3.0);
    assert_eq!(parsed.value("g", &[]), 1500.0);
    assert_eq!(parsed.value("h_count", &[]), 2.0);
    let bad = [
        "undeclared 1\n",
        "# TYPE a counter\na{k=\"v} 1\n",
        "# TYPE a counter\na{k=\"v\",k=\"w\"} 1\n",
        "# TYPE a counter\na{1k=\"v\"} 1\n",
        "# TYPE a counter\na one\n",
        "# TYPE a counter\na 1 2 3\n",
        "# TYPE a counter\na 1\na 2\n",
        "# TYPE a counter\na 1\n# TYPE a gauge\n",
        "# TYPE a bogus\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
        "# TYPE h histogram\nh_bucket 1\nh_count 1\n",
    ];
    for text in bad {
        assert!(Exposition::parse(text).is_err(), "accepted: {text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// GET `path` on member `index`: status and body.
async fn get(cluster: &TestCluster, index: usize, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", cluster.nodes[index].http_addr);
    let response = http_client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}\n{}", cluster.logs()));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn scrape(cluster: &TestCluster, index: usize) -> Exposition {
    let url = format!("http://{}/metrics", cluster.nodes[index].http_addr);
    let response = http_client().get(&url).send().await.expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    Exposition::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// Scrapes `members` until `condition` holds for their scrapes (in the same order), or fails
/// with the last scrapes.
async fn scrape_until(
    cluster: &TestCluster,
    members: &[usize],
    what: &str,
    condition: impl Fn(&[Exposition]) -> bool,
) -> Vec<Exposition> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut scrapes = Vec::new();
        for &index in members {
            scrapes.push(scrape(cluster, index).await);
        }
        if condition(&scrapes) {
            return scrapes;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}; last scrapes: {scrapes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

fn tcp_check(id: &str, address: String) -> Check {
    Check {
        id: id.into(),
        kind: Some(check::Kind::Tcp(TcpCheck { address })),
        interval_ms: 1000,
        timeout_ms: 500,
        ..Default::default()
    }
}

fn instance(service: &str, id: &str, checks: Vec<Check>) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        address: "127.0.0.1".into(),
        port: 8080,
        checks,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_the_cluster() {
    const WRITES: usize = 40;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let all = [0, 1, 2];

    // Writes through member 1 (a follower or the leader: counted where they arrive).
    for n in 0..WRITES {
        cluster.put(1, &format!("metrics/{n}"), "value").await;
    }
    // One call that fails with a known code: a range at a future revision is OutOfRange.
    let future = cluster
        .kv(1)
        .await
        .range(RangeRequest {
            key: b"metrics/0".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .expect_err("future revision");
    assert_eq!(future.code(), tonic::Code::OutOfRange);

    // Watches on member 0: two streams, three watches after one cancel.
    let mut first = WatchSession::open(&cluster, 0).await;
    let mut second = WatchSession::open(&cluster, 0).await;
    let watch = |key: &str| WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let cancelled = first.create(watch("metrics/a")).await;
    first.create(watch("metrics/b")).await;
    second.create(watch("metrics/c")).await;
    second.create(watch("metrics/d")).await;
    first
        .send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: cancelled,
        }))
        .await;
    assert!(first.next().await.canceled);

    // Two leases, granted through member 2.
    let mut leases = cluster.lease(2).await;
    for _ in 0..2 {
        leases
            .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
            .await
            .expect("grant");
    }

    // Catalog: "web" with an instance without checks and one whose TCP endpoint listens (both
    // passing once probed), "db" with one whose endpoint never listens (critical).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
        .await
        .expect("bind");
    let open = listener.local_addr().expect("address").to_string();
    let acceptor = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let closed = format!("127.0.0.1:{}", free_port());
    let mut catalog = cluster.catalog(0).await;
    for instance in [
        instance("web", "web-1", Vec::new()),
        instance("web", "web-2", vec![tcp_check("tcp", open)]),
        instance("db", "db-1", vec![tcp_check("tcp", closed)]),
    ] {
        catalog
            .register(RegisterRequest {
                instance: Some(instance),
            })
            .await
            .expect("register");
    }

    // The check's transition is counted by its owner once the write returns, a moment after
    // every member applied it.
    let tcp_runs = |scrapes: &[Exposition], result: &str| -> f64 {
        scrapes
            .iter()
            .map(|scrape| {
                scrape.sum(
                    "beacon_check_runs_total",
                    &[("kind", "tcp"), ("result", result)],
                )
            })
            .sum()
    };
    let transitions = |scrapes: &[Exposition]| -> f64 {
        scrapes
            .iter()
            .map(|scrape| {
                scrape.sum(
                    "beacon_check_transitions_total",
                    &[("kind", "tcp"), ("status", "passing")],
                )
            })
            .sum()
    };
    let scrapes = scrape_until(
        &cluster,
        &all,
        "catalog health and leases everywhere",
        |scrapes| {
            transitions(scrapes) >= 1.0
                && tcp_runs(scrapes, "critical") >= 1.0
                && scrapes.iter().all(|scrape| {
                    scrape.value("beacon_catalog_instances", &[("health", "passing")]) == 2.0
                        && scrape.value("beacon_catalog_instances", &[("health", "critical")])
                            == 1.0
                        && scrape.value("beacon_lease_active", &[]) == 2.0
                        && scrape.value("beacon_server_proposals_committed_total", &[])
                            >= WRITES as f64
                })
        },
    )
    .await;

    // Leadership: everyone has one, exactly one member is it, all in the same term.
    for (index, scrape) in scrapes.iter().enumerate() {
        assert_eq!(scrape.family("beacon_server_has_leader").kind, Kind::Gauge);
        assert_eq!(scrape.value("beacon_server_has_leader", &[]), 1.0);
        let is_leader = scrape.value("beacon_server_is_leader", &[]);
        assert_eq!(
            is_leader,
            if index == leader { 1.0 } else { 0.0 },
            "member {index}"
        );
        assert_eq!(
            scrape
                .family("beacon_server_leader_changes_seen_total")
                .kind,
            Kind::Counter
        );
        assert!(scrape.value("beacon_server_leader_changes_seen_total", &[]) >= 1.0);
        assert!(scrape.value("beacon_server_term", &[]) >= 1.0);
        assert_eq!(
            scrape.value("beacon_server_term", &[]),
            scrapes[0].value("beacon_server_term", &[])
        );
        // Progress: the applied index trails the commit index by exactly the reported lag.
        let committed = scrape.value("beacon_server_proposals_committed_total", &[]);
        let applied = scrape.value("beacon_server_proposals_applied_total", &[]);
        assert!(
            applied <= committed && applied > 0.0,
            "{applied} > {committed}"
        );
        assert_eq!(
            scrape.value("beacon_server_apply_lag_entries", &[]),
            committed - applied
        );
        assert_eq!(scrape.sum("beacon_server_proposals_failed_total", &[]), 0.0);
        // Small known label sets are listed at 0 before their first event.
        let failed = [("reason", "timeout")];
        assert_eq!(
            scrape.value("beacon_server_proposals_failed_total", &failed),
            0.0
        );
        let grpc_warning = [("kind", "grpc"), ("result", "warning")];
        assert_eq!(scrape.value("beacon_check_runs_total", &grpc_warning), 0.0);
        // Every member fsynced its log and applied entries: histograms with samples.
        for histogram in [
            "beacon_disk_wal_fsync_duration_seconds",
            "beacon_server_apply_duration_seconds",
        ] {
            assert_eq!(scrape.family(histogram).kind, Kind::Histogram);
            assert!(
                scrape.family(histogram).help.is_some(),
                "{histogram} has HELP"
            );
            assert!(
                scrape.value(&format!("{histogram}_count"), &[]) > 0.0,
                "{histogram}"
            );
            assert!(
                scrape.value(&format!("{histogram}_sum"), &[]) > 0.0,
                "{histogram}"
            );
        }
        assert_eq!(
            scrape.value("beacon_catalog_instances", &[("health", "warning")]),
            0.0
        );
        assert_eq!(scrape.value("beacon_catalog_services", &[]), 2.0);
        assert_eq!(
            scrape.value("beacon_catalog_instances_in_maintenance", &[]),
            0.0
        );
    }
    assert_eq!(
        scrapes[leader].value("beacon_server_proposals_pending", &[]),
        0.0,
        "nothing in flight once every write was answered"
    );

    // gRPC: member 1 counted every Put with OK and the failed Range with OutOfRange.
    let put = [
        ("grpc_type", "unary"),
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Put"),
    ];
    let member1 = &scrapes[1];
    assert_eq!(
        member1.family("beacon_grpc_server_handled_total").kind,
        Kind::Counter
    );
    assert!(member1.sum("beacon_grpc_server_started_total", &put) >= WRITES as f64);
    let ok: Vec<_> = put.iter().copied().chain([("grpc_code", "OK")]).collect();
    assert!(member1.value("beacon_grpc_server_handled_total", &ok) >= WRITES as f64);
    let out_of_range = [
        ("grpc_type", "unary"),
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Range"),
        ("grpc_code", "OutOfRange"),
    ];
    assert_eq!(
        member1.value("beacon_grpc_server_handled_total", &out_of_range),
        1.0
    );
    assert!(member1.value("beacon_grpc_server_handling_seconds_count", &put) >= WRITES as f64);
    // Calls never made are not listed (no empty series for every method).
    assert_eq!(
        member1.sum(
            "beacon_grpc_server_started_total",
            &[("grpc_method", "Defragment")]
        ),
        0.0
    );
    // The registrations went through member 0's Catalog service.
    assert!(
        scrapes[0].sum(
            "beacon_grpc_server_handled_total",
            &[
                ("grpc_service", "beacon.v1.Catalog"),
                ("grpc_method", "Register"),
                ("grpc_code", "OK")
            ]
        ) >= 3.0
    );

    // Watch gauges are exact per member: all watches are on member 0.
    assert_eq!(scrapes[0].value("beacon_watch_streams", &[]), 2.0);
    assert_eq!(scrapes[0].value("beacon_watch_watchers", &[]), 3.0);
    for scrape in &scrapes[1..] {
        assert_eq!(scrape.sum("beacon_watch_streams", &[]), 0.0);
        assert_eq!(scrape.sum("beacon_watch_watchers", &[]), 0.0);
    }

    // Checks: the listening endpoint was probed passing and its instance's check turned passing
    // (one transition, committed by the check's owner); the closed one was probed critical.
    assert!(tcp_runs(&scrapes, "passing") >= 1.0);
    assert!(tcp_runs(&scrapes, "critical") >= 1.0);
    assert_eq!(transitions(&scrapes), 1.0);

    // A stream that ends leaves the gauges and is counted as a handled Watch call.
    drop(second);
    scrape_until(
        &cluster,
        &[0],
        "the ended stream leaves the gauges",
        |scrapes| {
            let scrape = &scrapes[0];
            scrape.value("beacon_watch_streams", &[]) == 1.0
                && scrape.value("beacon_watch_watchers", &[]) == 1.0
                && scrape.sum(
                    "beacon_grpc_server_handled_total",
                    &[("grpc_type", "bidi_stream"), ("grpc_method", "Watch")],
                ) == 1.0
        },
    )
    .await;
    drop(first);
    acceptor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_follow_the_quorum() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    for index in 0..3 {
        let (status, body) = get(&cluster, index, "/health").await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#)
        );
        assert_eq!(get(&cluster, index, "/livez").await.0, 200);
        let (status, body) = get(&cluster, index, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("[+]leader ok") && body.contains("[+]applied ok"),
            "{body}"
        );
        assert_eq!(get(&cluster, index, "/nothing-here").await.0, 404);
    }

    // The leader alone: it cannot confirm a linearizable read, so it is not healthy, though
    // the process is alive.
    let followers: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    for &index in &followers {
        cluster.stop(index);
    }
    let body = wait_for_status(&cluster, leader, "/health", 503).await;
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["health"], "false");
    assert!(
        !health["reason"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    assert_eq!(get(&cluster, leader, "/livez").await.0, 200);

    // A follower back: quorum again (the returning member may even win an election), healthy
    // again.
    cluster.start_node(followers[0]);
    let leader_now = cluster.wait_for_leader().await;
    let survivor = if leader_now == leader {
        followers[0]
    } else {
        leader
    };
    for index in [leader_now, survivor] {
        wait_for_status(&cluster, index, "/health", 200).await;
        wait_for_status(&cluster, index, "/readyz", 200).await;
    }

    // Without its leader, a follower alone knows no leader: not healthy, not ready, alive.
    cluster.stop(leader_now);
    // (Until its election timeout it still names the stopped leader, and reads fail.)
    wait_for(&cluster, survivor, "/health", |status, body| {
        status == 503 && body == r#"{"health":"false","reason":"RAFT NO LEADER"}"#
    })
    .await;
    wait_for(&cluster, survivor, "/readyz", |status, body| {
        status == 503 && body.contains("[-]leader failed: no leader")
    })
    .await;
    assert_eq!(get(&cluster, survivor, "/livez").await.0, 200);
    let scrape = scrape(&cluster, survivor).await;
    assert_eq!(scrape.value("beacon_server_has_leader", &[]), 0.0);
    assert_eq!(scrape.value("beacon_server_is_leader", &[]), 0.0);
}

/// Polls `path` on member `index` until it answers `status`; returns the body.
async fn wait_for_status(cluster: &TestCluster, index: usize, path: &str, status: u16) -> String {
    wait_for(cluster, index, path, |got, _| got == status).await
}

/// Polls `path` on member `index` until its answer satisfies `expected`; returns the body.
async fn wait_for(
    cluster: &TestCluster,
    index: usize,
    path: &str,
    expected: impl Fn(u16, &str) -> bool,
) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(cluster, index, path).await;
        if expected(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on member {index}: {status} {body}, not as expected within {DEADLINE:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
