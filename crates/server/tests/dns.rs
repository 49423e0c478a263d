//! The DNS interface of real `beacond` members, queried three ways: raw packets built with
//! hickory-proto (exact flags, codes and sections), the real `dig` (Debian's bind9-dnsutils;
//! its parts are skipped when it is missing, except under `BEACON_TEST_REQUIRE_SERVERS`), and
//! hickory-resolver (UDP with fallback to TCP, as applications resolve).
//!
//! Covered: every name form and record type (service, tag, RFC 2782, instance; A, AAAA, SRV
//! with additional addresses, TXT, CNAME for hostname instances), from every member, any case;
//! per-service TTL; NXDOMAIN with the SOA (negative TTL), NODATA for known names, REFUSED
//! outside the domain; a health change (an HTTP endpoint stopped) leaving the answers within
//! the check's thresholds plus the TTL; truncation with TC over UDP, EDNS0 buffer sizes, the
//! full answer over TCP, weight-aware choice of what fits; garbage packets; SERVFAIL once a
//! member has been without a leader longer than `dns.max_stale_ms`, and answers again after.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use beacon_proto::beacon::v1::catalog_client::CatalogClient;
use beacon_proto::beacon::v1::{
    check, Check, GetServiceRequest, HealthStatus, HttpCheck, Instance, RegisterRequest,
    ServiceSettings, SetMaintenanceRequest, SetServiceSettingsRequest,
};
use common::{free_port, TestCluster, DEADLINE};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::Channel;

/// How long a single query may take before the test calls it lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Querying
// ---------------------------------------------------------------------------------------------

/// One query with hickory-proto over UDP (EDNS0 buffer `edns`, or none) or TCP.
async fn query(
    server: &str,
    name: &str,
    record_type: RecordType,
    edns: Option<u16>,
    tcp: bool,
) -> Message {
    let mut message = Message::query();
    message.queries.push(Query::query(
        Name::from_ascii(name).expect("name"),
        record_type,
    ));
    if let Some(size) = edns {
        let mut options = Edns::new();
        options.set_max_payload(size);
        message.edns = Some(options);
    }
    let packet = message.to_vec().expect("encode query");
    let answer = if tcp {
        exchange_tcp(server, &packet).await
    } else {
        exchange_udp(server, &packet)
            .await
            .unwrap_or_else(|| panic!("no UDP answer from {server} to {name} {record_type}"))
    };
    let response = Message::from_vec(&answer).expect("decodable answer");
    assert_eq!(response.metadata.id, message.metadata.id, "answer id");
    response
}

/// Sends `packet` over UDP; the answer, or `None` after [`QUERY_TIMEOUT`].
async fn exchange_udp(server: &str, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    socket.send(packet).await.expect("send");
    let mut buffer = vec![0; 65_535];
    let length = tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buffer))
        .await
        .ok()?
        .expect("receive");
    buffer.truncate(length);
    Some(buffer)
}

async fn exchange_tcp(server: &str, packet: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let length = u16::try_from(packet.len()).expect("small query");
    stream
        .write_all(&length.to_be_bytes())
        .await
        .expect("write");
    stream.write_all(packet).await.expect("write");
    let mut length = [0; 2];
    tokio::time::timeout(QUERY_TIMEOUT, stream.read_exact(&mut length))
        .await
        .expect("TCP answer in time")
        .expect("read length");
    let mut answer = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await.expect("read answer");
    answer
}

/// The addresses in a response's answer section (A and AAAA).
fn addresses(response: &Message) -> BTreeSet<IpAddr> {
    response
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// (port, weight, target) of the SRV records in the answer section.
fn srv_records(response: &Message) -> BTreeSet<(u16, u16, String)> {
    response
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => {
                assert_eq!(srv.priority, 1, "SRV priority");
                Some((srv.port, srv.weight, srv.target.to_ascii()))
            }
            _ => None,
        })
        .collect()
}

/// Polls `name` on `server` until `condition` holds for the response; returns it.
async fn wait_answer(
    server: &str,
    name: &str,
    record_type: RecordType,
    within: Duration,
    condition: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let response = query(server, name, record_type, Some(1232), false).await;
        if condition(&response) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {record_type} on {server} never met the condition within {within:?}; \
             last answer:\n{response}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dig`'s answer, parsed.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    /// Records per section: name, TTL, class, type, data...
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
    text: String,
}

impl Dig {
    fn answer_data(&self, record_type: &str) -> BTreeSet<String> {
        self.answer
            .iter()
            .filter(|fields| fields[3] == record_type)
            .map(|fields| fields[4..].join(" "))
            .collect()
    }
}

/// Whether `dig` can run here; without it the dig parts are skipped, unless
/// `BEACON_TEST_REQUIRE_SERVERS` forbids skipping (scripts/test.sh and CI install it).
fn dig_installed() -> bool {
    let installed = Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        assert!(
            std::env::var_os("BEACON_TEST_REQUIRE_SERVERS").is_none(),
            "dig is not installed (Debian bind9-dnsutils; scripts/install-deps.sh installs it), \
             and BEACON_TEST_REQUIRE_SERVERS forbids skipping"
        );
        eprintln!("dig is not installed; skipping the dig checks");
    }
    installed
}

/// Runs `dig @server -p port NAME TYPE [options]` (no recursion, one try).
fn dig(server: &str, arguments: &[&str]) -> Dig {
    let address: SocketAddr = server.parse().expect("server address");
    let output = Command::new("dig")
        .arg(format!("@{}", address.ip()))
        .arg("-p")
        .arg(address.port().to_string())
        .args(["+norec", "+time=3", "+tries=1"])
        .args(arguments)
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        text: text.clone(),
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or_default();
            dig.flags = flags.split_whitespace().map(str::to_string).collect();
        }
        match line {
            ";; ANSWER SECTION:" => section = "answer",
            ";; AUTHORITY SECTION:" => section = "authority",
            ";; ADDITIONAL SECTION:" => section = "additional",
            "" => section = "",
            _ if !line.starts_with(';') => {
                let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                match section {
                    "answer" => dig.answer.push(fields),
                    "authority" => dig.authority.push(fields),
                    "additional" => dig.additional.push(fields),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert!(
        !dig.status.is_empty(),
        "dig {arguments:?} printed no status:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dig
}

/// hickory-resolver aimed at one member, without a cache (every lookup asks the member).
fn resolver(server: &str) -> Resolver<TokioRuntimeProvider> {
    let address: SocketAddr = server.parse().expect("server address");
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    let name_server = NameServerConfig::new(address.ip(), true, vec![udp, tcp]);
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 2;
    options.recursion_desired = false;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .expect("resolver")
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

fn instance(service: &str, id: &str, address: &str, port: u32) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        address: address.into(),
        port,
        ..Default::default()
    }
}

async fn register(catalog: &mut CatalogClient<Channel>, instance: Instance) {
    catalog
        .register(RegisterRequest {
            instance: Some(instance),
        })
        .await
        .expect("register");
}

/// Registers many instances concurrently (the leader batches them).
async fn register_all(cluster: &TestCluster, instances: Vec<Instance>) {
    let mut tasks = JoinSet::new();
    for chunk in instances.chunks(50) {
        let mut catalog = cluster.catalog(0).await;
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for instance in chunk {
                register(&mut catalog, instance).await;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("register task");
    }
}

async fn started_cluster(size: usize, dns: &str) -> TestCluster {
    let cluster = TestCluster::start_with_dns(size, "", dns);
    cluster.wait_for_leader().await;
    cluster
}

// ---------------------------------------------------------------------------------------------
// A test HTTP endpoint (for a health check)
// ---------------------------------------------------------------------------------------------

/// Answers 200 to everything until stopped; then connections are refused.
struct HttpEndpoint {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpEndpoint {
    async fn start() -> Self {
        let listener = loop {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", free_port())).await {
                break listener;
            }
        };
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    let service = service_fn(|_request| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpEndpoint { address, task }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every name form and record type, from every member, with raw packets, dig and
/// hickory-resolver; TTLs, negative answers, REFUSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_record_types_and_negative_answers() {
    let cluster = started_cluster(3, "").await;
    let mut catalog = cluster.catalog(0).await;
    let mut web1 = instance("web", "web-1", "10.0.0.1", 8080);
    web1.tags = vec!["v1".into(), "Canary".into()];
    web1.weight = 3;
    web1.metadata = [
        ("zone".to_string(), "a".to_string()),
        ("long".into(), "x".repeat(300)),
    ]
    .into_iter()
    .collect();
    let mut web2 = instance("web", "web-2", "10.0.0.2", 8081);
    web2.tags = vec!["v2".into()];
    let web6 = instance("web", "web.v6", "fd00::6", 8086);
    let web_host = instance("web", "web-host", "backend.example.com", 8443);
    for registered in [web1, web2, web6, web_host] {
        register(&mut catalog, registered).await;
    }
    let mut drained = instance("drained", "d-1", "10.0.1.1", 9000);
    drained.tags = vec!["v1".into()];
    register(&mut catalog, drained).await;
    catalog
        .set_maintenance(SetMaintenanceRequest {
            service: "drained".into(),
            id: "d-1".into(),
            enabled: true,
            reason: "test".into(),
        })
        .await
        .expect("maintenance");
    catalog
        .set_service_settings(SetServiceSettingsRequest {
            settings: Some(ServiceSettings {
                service: "web".into(),
                min_healthy: 0.0,
                dns_ttl_s: 30,
            }),
        })
        .await
        .expect("settings");

    for node in &cluster.nodes {
        let server = node.dns_addr.as_str();
        // NAME.service A: the IPv4 instances (the hostname one only via SRV and its instance
        // name), authoritative, with the service's TTL; any case.
        let response = wait_answer(
            server,
            "web.service.beacon.",
            RecordType::A,
            DEADLINE,
            |r| r.answers.len() == 2 && r.answers.iter().all(|record| record.ttl == 30),
        )
        .await;
        assert!(response.metadata.authoritative);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        let expected: BTreeSet<IpAddr> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect();
        assert_eq!(addresses(&response), expected);
        let upper = query(server, "WEB.Service.BEACON.", RecordType::A, None, false).await;
        assert_eq!(addresses(&upper), expected);
        assert_eq!(upper.queries[0].name().to_ascii(), "WEB.Service.BEACON.");
        // AAAA.
        let response = query(server, "web.service.beacon.", RecordType::AAAA, None, false).await;
        assert_eq!(
            addresses(&response),
            BTreeSet::from(["fd00::6".parse::<IpAddr>().expect("ip")])
        );
        // SRV: every instance, weights and ports; targets resolve in the additional section;
        // the hostname instance's target is its hostname.
        let expected_srv = BTreeSet::from([
            (8080, 3, "web-1.web.instance.beacon.".to_string()),
            (8081, 1, "web-2.web.instance.beacon.".to_string()),
            (8086, 1, "web.v6.web.instance.beacon.".to_string()),
            (8443, 1, "backend.example.com.".to_string()),
        ]);
        for name in ["web.service.beacon.", "_web._tcp.service.beacon."] {
            let response = query(server, name, RecordType::SRV, Some(1232), false).await;
            assert_eq!(srv_records(&response), expected_srv, "{name}");
            let additional: BTreeSet<(String, String)> = response
                .additionals
                .iter()
                .filter(|record| record.record_type() != RecordType::OPT)
                .map(|record| (record.name.to_ascii(), record.data.to_string()))
                .collect();
            assert_eq!(
                additional,
                BTreeSet::from([
                    ("web-1.web.instance.beacon.".into(), "10.0.0.1".into()),
                    ("web-2.web.instance.beacon.".into(), "10.0.0.2".into()),
                    ("web.v6.web.instance.beacon.".into(), "fd00::6".into()),
                ])
            );
        }
        // Tags: TAG.NAME.service and _NAME._TAG.service, ignoring case.
        for name in [
            "v1.web.service.beacon.",
            "_web._v1.service.beacon.",
            "canary.web.service.beacon.",
        ] {
            let response = query(server, name, RecordType::SRV, None, false).await;
            assert_eq!(
                srv_records(&response),
                BTreeSet::from([(8080, 3, "web-1.web.instance.beacon.".to_string())]),
                "{name}"
            );
        }
        // Instances: addresses whatever the health, CNAME for a hostname, TXT metadata (an
        // entry over 255 bytes split into strings of one record), SRV.
        let response = query(
            server,
            "web-1.web.instance.beacon.",
            RecordType::A,
            None,
            false,
        )
        .await;
        assert_eq!(addresses(&response).len(), 1);
        let response = query(
            server,
            "web.v6.web.instance.beacon.",
            RecordType::AAAA,
            None,
            false,
        )
        .await;
        assert_eq!(addresses(&response).len(), 1);
        let response = query(
            server,
            "web-host.web.instance.beacon.",
            RecordType::A,
            None,
            false,
        )
        .await;
        match &response.answers[..] {
            [record] => match &record.data {
                RData::CNAME(cname) => assert_eq!(cname.0.to_ascii(), "backend.example.com."),
                other => panic!("expected a CNAME, got {other:?}"),
            },
            other => panic!("expected one CNAME, got {other:?}"),
        }
        let response = query(
            server,
            "web-1.web.instance.beacon.",
            RecordType::TXT,
            Some(4096),
            false,
        )
        .await;
        let texts: Vec<String> = response
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            vec![format!("long={}", "x".repeat(300)), "zone=a".to_string()]
        );
        let response = query(
            server,
            "web-2.web.instance.beacon.",
            RecordType::SRV,
            None,
            false,
        )
        .await;
        assert_eq!(
            srv_records(&response),
            BTreeSet::from([(8081, 1, "web-2.web.instance.beacon.".to_string())])
        );
        // Negative answers: NXDOMAIN with the SOA (minimum = negative TTL 5 s) for unknown
        // names; NOERROR without records (NODATA) for known names and other types, and for a
        // service whose only instance is in maintenance.
        for name in [
            "nope.service.beacon.",
            "v9.web.service.beacon.",
            "web-9.web.instance.beacon.",
            "web.nothing.beacon.",
        ] {
            let response = query(server, name, RecordType::A, None, false).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(response.answers.is_empty());
            match &response.authorities[..] {
                [record] => match &record.data {
                    RData::SOA(soa) => {
                        assert_eq!(soa.minimum, 5);
                        assert_eq!(record.ttl, 5);
                        assert_eq!(record.name.to_ascii(), "beacon.");
                    }
                    other => panic!("expected the SOA, got {other:?}"),
                },
                other => panic!("expected one SOA in authority for {name}, got {other:?}"),
            }
        }
        for (name, record_type) in [
            ("web.service.beacon.", RecordType::TXT),
            ("web-1.web.instance.beacon.", RecordType::AAAA),
            ("drained.service.beacon.", RecordType::A),
            ("v1.drained.service.beacon.", RecordType::SRV),
            ("service.beacon.", RecordType::A),
            ("web.instance.beacon.", RecordType::A),
        ] {
            let response = query(server, name, record_type, None, false).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NoError,
                "{name} {record_type}"
            );
            assert!(response.answers.is_empty(), "{name} {record_type}");
            assert_eq!(response.authorities.len(), 1, "SOA for {name}");
        }
        let response = query(server, "beacon.", RecordType::SOA, None, false).await;
        assert_eq!(response.answers.len(), 1);
        // Outside the domain: REFUSED, nothing else.
        for name in ["example.com.", "web.service.consul.", "."] {
            let response = query(server, name, RecordType::A, None, false).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(response.answers.is_empty() && response.authorities.is_empty());
        }
    }

    if dig_installed() {
        let server = cluster.nodes[1].dns_addr.as_str();
        let answer = dig(server, &["web.service.beacon", "SRV"]);
        assert_eq!(answer.status, "NOERROR", "{}", answer.text);
        assert!(answer.flags.contains(&"aa".to_string()), "{}", answer.text);
        assert_eq!(
            answer.answer_data("SRV"),
            BTreeSet::from([
                "1 3 8080 web-1.web.instance.beacon.".to_string(),
                "1 1 8081 web-2.web.instance.beacon.".to_string(),
                "1 1 8086 web.v6.web.instance.beacon.".to_string(),
                "1 1 8443 backend.example.com.".to_string(),
            ]),
            "{}",
            answer.text
        );
        assert!(answer.answer.iter().all(|fields| fields[1] == "30"));
        assert_eq!(answer.additional.len(), 3, "{}", answer.text);
        let answer = dig(server, &["web.service.beacon", "A"]);
        assert_eq!(
            answer.answer_data("A"),
            BTreeSet::from(["10.0.0.1".to_string(), "10.0.0.2".to_string()])
        );
        let answer = dig(server, &["_web._tcp.service.beacon", "SRV"]);
        assert_eq!(answer.answer_data("SRV").len(), 4, "{}", answer.text);
        let answer = dig(server, &["v2.web.service.beacon", "A"]);
        assert_eq!(
            answer.answer_data("A"),
            BTreeSet::from(["10.0.0.2".to_string()])
        );
        let answer = dig(server, &["web.v6.web.instance.beacon", "AAAA"]);
        assert_eq!(
            answer.answer_data("AAAA"),
            BTreeSet::from(["fd00::6".to_string()])
        );
        let answer = dig(server, &["web-host.web.instance.beacon", "A"]);
        assert_eq!(
            answer.answer_data("CNAME"),
            BTreeSet::from(["backend.example.com.".to_string()])
        );
        let answer = dig(server, &["web-1.web.instance.beacon", "TXT"]);
        assert!(
            answer.answer_data("TXT").contains("\"zone=a\""),
            "{}",
            answer.text
        );
        let answer = dig(server, &["nope.service.beacon", "A"]);
        assert_eq!(answer.status, "NXDOMAIN");
        assert_eq!(answer.authority.len(), 1, "{}", answer.text);
        assert_eq!(answer.authority[0][3], "SOA");
        let answer = dig(server, &["drained.service.beacon", "A"]);
        assert_eq!(answer.status, "NOERROR");
        assert!(answer.answer.is_empty());
        let answer = dig(server, &["example.com", "A"]);
        assert_eq!(answer.status, "REFUSED");
    }

    // hickory-resolver, as an application would resolve.
    let resolver = resolver(&cluster.nodes[2].dns_addr);
    let ips: BTreeSet<IpAddr> = resolver
        .lookup_ip("web.service.beacon.")
        .await
        .expect("lookup_ip")
        .iter()
        .collect();
    assert!(
        ips.contains(&"10.0.0.1".parse::<IpAddr>().expect("ip")),
        "{ips:?}"
    );
    let srv = resolver
        .lookup("_web._tcp.service.beacon.", RecordType::SRV)
        .await
        .expect("SRV lookup");
    assert_eq!(
        srv.answers()
            .iter()
            .filter(|record| record.record_type() == RecordType::SRV)
            .count(),
        4
    );
    let txt = resolver
        .lookup("web-1.web.instance.beacon.", RecordType::TXT)
        .await
        .expect("TXT lookup");
    assert_eq!(txt.answers().len(), 2);
    let missing = resolver
        .lookup("nope.service.beacon.", RecordType::A)
        .await
        .expect_err("NXDOMAIN");
    assert!(missing.is_nx_domain(), "{missing:?}");
}

/// Stopping an instance's HTTP endpoint removes it from the answers within its check's
/// thresholds plus the TTL; restarting nothing, a second instance keeps answering (no fail-open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_leaves_the_answers() {
    let cluster = started_cluster(3, "").await;
    let mut catalog = cluster.catalog(0).await;
    let endpoints = [HttpEndpoint::start().await, HttpEndpoint::start().await];
    for (index, endpoint) in endpoints.iter().enumerate() {
        let mut registered = instance(
            "shop",
            &format!("shop-{index}"),
            &format!("10.1.0.{}", index + 1),
            8000,
        );
        registered.checks = vec![Check {
            id: "http".into(),
            kind: Some(check::Kind::Http(HttpCheck {
                url: format!("http://{}/health", endpoint.address),
                ..Default::default()
            })),
            interval_ms: 1000,
            timeout_ms: 500,
            failures_before_critical: 2,
            ..Default::default()
        }];
        register(&mut catalog, registered).await;
    }
    catalog
        .set_service_settings(SetServiceSettingsRequest {
            settings: Some(ServiceSettings {
                service: "shop".into(),
                min_healthy: 0.0,
                dns_ttl_s: 2,
            }),
        })
        .await
        .expect("settings");
    let server = cluster.nodes[2].dns_addr.clone();
    // New checks start critical (and the service fails open meanwhile): wait until both pass.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let instances = catalog
            .get_service(GetServiceRequest {
                service: "shop".into(),
                serializable: false,
                include_probes: false,
            })
            .await
            .expect("get service")
            .into_inner()
            .instances;
        if instances.len() == 2
            && instances
                .iter()
                .all(|instance| instance.health() == HealthStatus::Passing)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checks never passed: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &cluster.nodes {
        wait_answer(
            &node.dns_addr,
            "shop.service.beacon.",
            RecordType::A,
            DEADLINE,
            |r| r.answers.len() == 2,
        )
        .await;
    }
    let stopped = Instant::now();
    endpoints[1].stop();
    // Thresholds: 2 failures at 1 s intervals (2 s), a confirming probe and the commit (1 s),
    // then the TTL (2 s) for caches, plus 10 s of slack for a busy machine. The member's own
    // answer changes at the commit.
    let bound = Duration::from_secs(2 + 1 + 2 + 10);
    let response = wait_answer(&server, "shop.service.beacon.", RecordType::A, bound, |r| {
        r.answers.len() == 1
    })
    .await;
    assert_eq!(
        addresses(&response),
        BTreeSet::from(["10.1.0.1".parse::<IpAddr>().expect("ip")])
    );
    let elapsed = stopped.elapsed();
    eprintln!("instance left the DNS answers {elapsed:?} after its endpoint stopped");
    assert!(
        elapsed >= Duration::from_millis(900),
        "gone after {elapsed:?}: faster than two failed probes a second apart"
    );
    // Its instance name still answers (whatever the health).
    let response = query(
        &server,
        "shop-1.shop.instance.beacon.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(addresses(&response).len(), 1);
    // Every member agrees.
    for node in &cluster.nodes {
        wait_answer(
            &node.dns_addr,
            "shop.service.beacon.",
            RecordType::A,
            DEADLINE,
            |r| r.answers.len() == 1,
        )
        .await;
    }
}

/// A large service: UDP answers are cut to 512 bytes (or the EDNS0 buffer) with TC set and a
/// weighted sample kept; TCP carries them all; dig and hickory-resolver fall back to TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_edns_and_tcp_fallback() {
    let cluster = started_cluster(1, "").await;
    let server = cluster.nodes[0].dns_addr.clone();
    // 195 light instances and 5 heavy ones whose ids sort last, so "the first that fit" would
    // never include them.
    let mut instances: Vec<Instance> = (0..195)
        .map(|index| {
            instance(
                "big",
                &format!("a-{index:03}"),
                &format!("10.2.{}.{}", index / 200, index % 200 + 1),
                9000,
            )
        })
        .collect();
    let heavy: BTreeSet<IpAddr> = (0..5)
        .map(|index| {
            let address = format!("10.9.0.{}", index + 1);
            let mut heavy = instance("big", &format!("z-{index}"), &address, 9000);
            heavy.weight = 10_000;
            instances.push(heavy);
            address.parse().expect("ip")
        })
        .collect();
    register_all(&cluster, instances).await;
    let all = wait_answer(
        &server,
        "big.service.beacon.",
        RecordType::A,
        DEADLINE,
        |_| true,
    )
    .await;
    assert!(all.metadata.truncation);

    // TCP: all 200.
    let response = query(&server, "big.service.beacon.", RecordType::A, None, true).await;
    assert!(!response.metadata.truncation);
    assert_eq!(addresses(&response).len(), 200);
    let response = query(&server, "big.service.beacon.", RecordType::SRV, None, true).await;
    assert_eq!(srv_records(&response).len(), 200);
    assert_eq!(response.additionals.len(), 200);

    // UDP without EDNS0: at most 512 bytes, TC, and the heavy instances kept every time.
    for _ in 0..10 {
        let packet = Message::from_vec(&{
            let mut message = Message::query();
            message.queries.push(Query::query(
                Name::from_ascii("big.service.beacon.").expect("name"),
                RecordType::A,
            ));
            let packet = message.to_vec().expect("encode");
            exchange_udp(&server, &packet).await.expect("answer")
        })
        .expect("decodable");
        let size = packet.to_vec().expect("re-encode").len();
        assert!(size <= 512, "{size} bytes over UDP without EDNS0");
        assert!(packet.metadata.truncation);
        let got = addresses(&packet);
        assert!(
            got.len() >= 20 && got.len() < 200,
            "{} addresses",
            got.len()
        );
        assert!(
            heavy.is_subset(&got),
            "weight-aware truncation kept {got:?}, missing heavy ones"
        );
    }
    // EDNS0 buffers are honoured: 1232 bytes hold more, 4096 more still; never more than asked.
    let mut counts = Vec::new();
    for size in [512u16, 1232, 4096] {
        let mut message = Message::query();
        message.queries.push(Query::query(
            Name::from_ascii("big.service.beacon.").expect("name"),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        message.edns = Some(edns);
        let packet = exchange_udp(&server, &message.to_vec().expect("encode"))
            .await
            .expect("answer");
        assert!(
            packet.len() <= usize::from(size),
            "{} > {size}",
            packet.len()
        );
        let response = Message::from_vec(&packet).expect("decodable");
        assert!(response.metadata.truncation);
        assert!(response.edns.is_some(), "OPT kept in a cut answer");
        counts.push(response.answers.len());
    }
    assert!(counts[0] < counts[1] && counts[1] < counts[2], "{counts:?}");

    if dig_installed() {
        // dig retries over TCP on TC by default; +ignore shows the cut UDP answer.
        let full = dig(&server, &["big.service.beacon", "A"]);
        assert_eq!(full.answer.len(), 200, "{}", full.text);
        let cut = dig(
            &server,
            &["big.service.beacon", "A", "+ignore", "+bufsize=512"],
        );
        assert!(cut.flags.contains(&"tc".to_string()), "{}", cut.text);
        assert!(cut.answer.len() < 200);
        let tcp = dig(&server, &["big.service.beacon", "SRV", "+tcp"]);
        assert_eq!(tcp.answer.len(), 200);
    }
    let resolver = resolver(&server);
    let lookup = resolver
        .lookup("big.service.beacon.", RecordType::A)
        .await
        .expect("lookup over TCP after TC");
    assert_eq!(lookup.answers().len(), 200);
}

/// Garbage never harms a member: short packets, random bytes, responses, bad counts, huge
/// claimed lengths over TCP; it keeps answering, and real queries get answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_packets_do_not_harm_a_member() {
    let mut cluster = started_cluster(1, "").await;
    let server = cluster.nodes[0].dns_addr.clone();
    let mut catalog = cluster.catalog(0).await;
    register(&mut catalog, instance("web", "web-1", "10.0.0.1", 80)).await;
    wait_answer(
        &server,
        "web.service.beacon.",
        RecordType::A,
        DEADLINE,
        |r| r.answers.len() == 1,
    )
    .await;

    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(&server).await.expect("connect");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random_bytes = |length: usize| -> Vec<u8> {
        (0..length)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let valid = {
        let mut message = Message::query();
        message.queries.push(Query::query(
            Name::from_ascii("web.service.beacon.").expect("name"),
            RecordType::A,
        ));
        message.to_vec().expect("encode")
    };
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0x12, 0x34, 0x01],
        valid[..11].to_vec(),
        valid[..valid.len() - 3].to_vec(),
        // A header claiming 65535 questions and answers, nothing after it.
        vec![0xab, 0xcd, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        // A compression pointer to itself.
        [&valid[..12], &[0xc0, 0x0c, 0, 1, 0, 1][..]].concat(),
        // The valid query with QR set: a response, never answered.
        {
            let mut response = valid.clone();
            response[2] |= 0x80;
            response
        },
    ];
    for length in [12, 13, 40, 200, 512, 1500, 4000] {
        for _ in 0..20 {
            garbage.push(random_bytes(length));
        }
    }
    for packet in &garbage {
        if !packet.is_empty() {
            socket.send(packet).await.expect("send garbage");
        }
    }
    // A malformed query with an intact header gets FORMERR (not silence, not a crash).
    let formerr = exchange_udp(&server, &valid[..valid.len() - 3])
        .await
        .expect("FORMERR answer");
    let formerr = Message::from_vec(&formerr).expect("decodable");
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR; an unknown opcode: NOTIMP.
    let mut two = Message::query();
    for _ in 0..2 {
        two.queries.push(Query::query(
            Name::from_ascii("web.service.beacon.").expect("name"),
            RecordType::A,
        ));
    }
    let answer = exchange_udp(&server, &two.to_vec().expect("encode"))
        .await
        .expect("answer");
    assert_eq!(
        Message::from_vec(&answer)
            .expect("decodable")
            .metadata
            .response_code,
        ResponseCode::FormErr
    );
    let mut notify = valid.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let answer = exchange_udp(&server, &notify).await.expect("answer");
    assert_eq!(
        Message::from_vec(&answer)
            .expect("decodable")
            .metadata
            .response_code,
        ResponseCode::NotImp
    );
    // TCP: a length prefix promising more than is sent, then a hang-up; random frames.
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&server).await.expect("connect");
        stream
            .write_all(&[0xff, 0xff, 1, 2, 3])
            .await
            .expect("write");
        drop(stream);
        let mut stream = TcpStream::connect(&server).await.expect("connect");
        let frame = random_bytes(100);
        let _ = stream.write_all(&[0, 100]).await;
        let _ = stream.write_all(&frame).await;
        drop(stream);
    }
    // Still alive and answering, over both transports.
    let response = query(&server, "web.service.beacon.", RecordType::A, None, false).await;
    assert_eq!(response.answers.len(), 1);
    let response = query(&server, "web.service.beacon.", RecordType::A, None, true).await;
    assert_eq!(response.answers.len(), 1);
    assert!(
        cluster.stop(0).is_some(),
        "the member must still be running and stop cleanly:\n{}",
        cluster.logs()
    );
}

/// A member without a leader for longer than `dns.max_stale_ms` answers SERVFAIL instead of an
/// ever older catalog, and answers again once a leader is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_without_a_leader() {
    let mut cluster = started_cluster(3, "max_stale_ms = 1500").await;
    let mut catalog = cluster.catalog(0).await;
    register(&mut catalog, instance("web", "web-1", "10.0.0.1", 80)).await;
    for node in &cluster.nodes {
        wait_answer(
            &node.dns_addr,
            "web.service.beacon.",
            RecordType::A,
            DEADLINE,
            |r| r.answers.len() == 1,
        )
        .await;
    }
    // Keep a follower and the leader in turn: the survivor is once a follower, once the
    // (isolated) leader, which still believes it leads.
    let leader = cluster.wait_for_leader().await;
    let survivor = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|index| *index != survivor).collect();
    for index in &others {
        cluster.kill(*index);
    }
    let server = cluster.nodes[survivor].dns_addr.clone();
    let stopped = Instant::now();
    let response = wait_answer(
        &server,
        "web.service.beacon.",
        RecordType::A,
        DEADLINE,
        |r| r.metadata.response_code == ResponseCode::ServFail,
    )
    .await;
    assert!(response.answers.is_empty());
    assert!(
        stopped.elapsed() >= Duration::from_millis(1000),
        "SERVFAIL after {:?}, before the 1.5 s window",
        stopped.elapsed()
    );
    // Outside the domain it is still REFUSED (no staleness to report there).
    let response = query(&server, "example.com.", RecordType::A, None, false).await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    if dig_installed() {
        assert_eq!(
            dig(&server, &["web.service.beacon", "A"]).status,
            "SERVFAIL"
        );
    }
    for index in &others {
        cluster.start_node(*index);
    }
    cluster.wait_for_leader().await;
    wait_answer(
        &server,
        "web.service.beacon.",
        RecordType::A,
        DEADLINE,
        |r| r.metadata.response_code == ResponseCode::NoError && r.answers.len() == 1,
    )
    .await;

    // The leader cut off from its followers: it still believes it leads, but without a quorum
    // acknowledgement it goes stale too.
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    for index in &followers {
        cluster.kill(*index);
    }
    let server = cluster.nodes[leader].dns_addr.clone();
    wait_answer(
        &server,
        "web.service.beacon.",
        RecordType::A,
        DEADLINE,
        |r| r.metadata.response_code == ResponseCode::ServFail,
    )
    .await;
}
