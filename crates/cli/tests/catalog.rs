//! End-to-end: `beacon lease …` and `beacon service …` against a real 3-member Beacon cluster
//! (skipped when beacond is not built; see `beacon_client::testing::start_beacon_cluster`):
//! outputs in both formats, the kept-alive registration of `service register --ttl`, which
//! disappears at once on Ctrl-C or SIGTERM and within its TTL after `kill -9`, and health checks
//! attached with `service register --check-http …`, probed by the cluster and shown by
//! `service show`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_client::testing::{start_beacon_cluster, ServerProcess};
use serde_json::Value;

use common::{beacon, fails, json, ok, BackgroundBeacon};

/// The cluster's endpoints as `--endpoints` takes them.
fn endpoints(members: &[ServerProcess]) -> String {
    members
        .iter()
        .map(|member| member.endpoint().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn lease_grant_list_ttl_keep_alive_and_revoke() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints = endpoints(&members);
    let endpoint = endpoints.as_str();
    let granted = ok(endpoint, &["lease", "grant", "30"]);
    // etcdctl's wording, with the id as 16 hex digits.
    let words: Vec<&str> = granted.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{granted}");
    assert_eq!(
        (words[0], words[2], words[4]),
        ("lease", "granted", "TTL(30s)")
    );
    let id = words[1].to_string();
    assert_eq!(id.len(), 16);
    assert!(u64::from_str_radix(&id, 16).is_ok(), "{id}");
    let other = json(endpoint, &["lease", "grant", "60"]);
    assert_eq!(other["ttl"], 60);
    let other_id = other["id"].as_str().expect("id").to_string();

    let listed = ok(endpoint, &["lease", "list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "found 2 leases");
    assert!(lines.contains(&id.as_str()) && lines.contains(&other_id.as_str()));
    let listed = json(endpoint, &["lease", "list"]);
    assert_eq!(listed["leases"].as_array().map(Vec::len), Some(2));

    ok(endpoint, &["put", "leased", "v", "--lease", &id]);
    let ttl = ok(endpoint, &["lease", "ttl", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.trim_end().ends_with("attached keys([leased])"), "{ttl}");
    let ttl = json(endpoint, &["lease", "ttl", &id]);
    assert_eq!(ttl["granted_ttl"], 30);
    assert!(ttl["ttl"]
        .as_i64()
        .is_some_and(|ttl| (28..=30).contains(&ttl)));

    assert_eq!(
        ok(endpoint, &["lease", "keep-alive", &id, "--once"]).trim(),
        format!("lease {id} keepalived with TTL(30)")
    );
    // In the foreground: a renewal right away, then every TTL/3 until Ctrl-C.
    let keep_alive = BackgroundBeacon::start(endpoint, &["lease", "keep-alive", &other_id]);
    assert_eq!(
        keep_alive.read_lines(1),
        [format!("lease {other_id} keepalived with TTL(60)")]
    );
    let (status, stderr) = keep_alive.interrupt();
    assert_eq!(status.code(), Some(130), "{stderr}");

    assert_eq!(
        ok(endpoint, &["lease", "revoke", &id]).trim(),
        format!("lease {id} revoked")
    );
    assert!(json(endpoint, &["get", "leased"])["kvs"]
        .as_array()
        .is_some_and(Vec::is_empty));
    assert_eq!(
        ok(endpoint, &["lease", "ttl", &id]).trim(),
        format!("lease {id} already expired")
    );
    let stderr = fails(endpoint, &["lease", "keep-alive", &id, "--once"]);
    assert!(stderr.contains("expired or revoked"), "{stderr}");
    let stderr = fails(endpoint, &["lease", "revoke", &id]);
    assert!(stderr.contains("requested lease not found"), "{stderr}");
    let usage = beacon(endpoint, &["lease", "ttl", "not-hex"], None);
    assert_eq!(usage.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("invalid lease id"));
}

#[test]
fn service_register_list_show_discover_maintain_deregister_and_watch() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints = endpoints(&members);
    let endpoint = endpoints.as_str();
    let registered = ok(
        endpoint,
        &[
            "service",
            "register",
            "web",
            "--address",
            "10.0.0.1",
            "--port",
            "8080",
            "--tag",
            "v1",
            "--tag",
            "canary",
            "--meta",
            "zone=a",
            "--weight",
            "3",
        ],
    );
    let lines: Vec<&str> = registered.lines().collect();
    assert_eq!(lines[0], "registered web/web-10.0.0.1-8080", "{registered}");
    assert!(lines[1].starts_with("ID "), "{registered}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "web-10.0.0.1-8080",
            "10.0.0.1",
            "8080",
            "passing",
            "v1,canary",
            "zone=a",
            "3",
            "-",
            "-"
        ]
    );
    let second = json(
        endpoint,
        &[
            "service",
            "register",
            "web",
            "--address",
            "10.0.0.2",
            "--port",
            "8080",
            "--id",
            "web-2",
            "--meta",
            "zone=b",
        ],
    );
    assert_eq!(second["created"], true);
    assert_eq!(second["instance"]["id"], "web-2");
    assert_eq!(second["instance"]["health"], "passing");
    let first_revision = second["header"]["revision"].as_i64().expect("revision");
    ok(
        endpoint,
        &[
            "service",
            "register",
            "db",
            "--address",
            "::1",
            "--port",
            "5432",
        ],
    );

    let listed = ok(endpoint, &["service", "list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "SERVICE",
                "INSTANCES",
                "PASSING",
                "WARNING",
                "CRITICAL",
                "MAINTENANCE"
            ],
            vec!["db", "1", "1", "0", "0", "0"],
            vec!["web", "2", "2", "0", "0", "0"],
        ]
    );
    let listed = json(endpoint, &["service", "list"]);
    assert_eq!(listed["services"][1]["name"], "web");
    assert_eq!(listed["services"][1]["instances"], 2);

    let shown = ok(endpoint, &["service", "show", "db"]);
    let row: Vec<&str> = shown
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["db---1-5432", "::1", "5432"], "{shown}");
    let shown = json(endpoint, &["service", "show", "web"]);
    let ids: Vec<&str> = shown["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|instance| instance["id"].as_str())
        .collect();
    assert_eq!(ids, ["web-10.0.0.1-8080", "web-2"]);

    let canary = json(endpoint, &["service", "discover", "web", "--tag", "canary"]);
    assert_eq!(canary["failed_open"], false);
    assert_eq!(canary["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(canary["instances"][0]["id"], "web-10.0.0.1-8080");
    let zone_b = json(
        endpoint,
        &[
            "service",
            "discover",
            "web",
            "--meta",
            "zone=b",
            "--passing",
        ],
    );
    assert_eq!(zone_b["instances"][0]["id"], "web-2");
    let one = json(
        endpoint,
        &[
            "service",
            "discover",
            "web",
            "--all",
            "--weighted",
            "--limit",
            "1",
        ],
    );
    assert_eq!(one["instances"].as_array().map(Vec::len), Some(1));
    let none = ok(
        endpoint,
        &["service", "discover", "web", "--tag", "missing"],
    );
    assert_eq!(none.lines().count(), 1, "only the header: {none}");
    let usage = beacon(
        endpoint,
        &["service", "discover", "web", "--passing", "--all"],
        None,
    );
    assert_eq!(usage.status.code(), Some(2), "--passing and --all conflict");

    let drained = ok(
        endpoint,
        &[
            "service",
            "maintenance",
            "on",
            "web",
            "web-2",
            "--reason",
            "deploy",
        ],
    );
    assert!(
        drained.starts_with("maintenance on for web/web-2"),
        "{drained}"
    );
    assert!(drained.contains("on (deploy)"), "{drained}");
    let listed = json(endpoint, &["service", "list"]);
    assert_eq!(listed["services"][1]["maintenance"], 1);
    let back = json(endpoint, &["service", "maintenance", "off", "web", "web-2"]);
    assert_eq!(back["instance"]["maintenance"]["enabled"], false);

    assert_eq!(
        ok(endpoint, &["service", "deregister", "web", "web-2"]).trim(),
        "deregistered web/web-2"
    );
    assert_eq!(
        ok(endpoint, &["service", "deregister", "web", "web-2"]).trim(),
        "web/web-2 was not registered"
    );
    let stderr = fails(
        endpoint,
        &[
            "service",
            "register",
            "Bad_Name",
            "--address",
            "x",
            "--port",
            "1",
        ],
    );
    assert!(stderr.contains("invalid service name"), "{stderr}");
    let stderr = fails(endpoint, &["service", "maintenance", "on", "web", "nope"]);
    assert!(stderr.contains("not found"), "{stderr}");

    // `service watch --rev` replays history, one JSON object per event and line.
    let watch = BackgroundBeacon::start(
        endpoint,
        &[
            "service",
            "watch",
            "web",
            "--rev",
            &first_revision.to_string(),
            "-o",
            "json",
        ],
    );
    let events: Vec<Value> = watch
        .read_lines(4)
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().expect("type"),
                event["id"].as_str().expect("id"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT", "web-2"),
            ("PUT", "web-2"),
            ("PUT", "web-2"),
            ("DELETE", "web-2")
        ],
        "register, maintenance on, maintenance off, deregister"
    );
    assert_eq!(events[0]["revision"], first_revision);
    assert_eq!(events[1]["instance"]["maintenance"]["reason"], "deploy");
}

/// Waits for the next watch line and checks its first words.
fn expect_watch_line(watch: &BackgroundBeacon, limit: Duration, prefix: &str) -> String {
    let line = watch.read_line_within(limit);
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
    line
}

#[test]
fn a_kept_alive_registration_ends_with_its_process() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints = endpoints(&members);
    let endpoint = endpoints.as_str();
    let watch = BackgroundBeacon::start(endpoint, &["service", "watch", "side"]);
    let snapshot = expect_watch_line(&watch, Duration::from_secs(20), "SNAPSHOT side revision=");
    assert!(snapshot.ends_with(" instances=0"), "{snapshot}");

    // Ctrl-C: deregistered at once, exit 0.
    let registration = BackgroundBeacon::start(
        endpoint,
        &[
            "service",
            "register",
            "side",
            "--address",
            "127.0.0.1",
            "--port",
            "7001",
            "--ttl",
            "3s",
        ],
    );
    expect_watch_line(
        &watch,
        Duration::from_secs(20),
        "PUT side side-127.0.0.1-7001 127.0.0.1:7001 passing revision=",
    );
    let interrupted = Instant::now();
    let (status, stderr) = registration.interrupt();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("deregistered side/side-127.0.0.1-7001"),
        "{stderr}"
    );
    expect_watch_line(
        &watch,
        Duration::from_secs(1),
        "DELETE side side-127.0.0.1-7001 revision=",
    );
    assert!(
        interrupted.elapsed() < Duration::from_secs(2),
        "at once, not by expiry"
    );

    // SIGTERM: the same.
    let registration = BackgroundBeacon::start(
        endpoint,
        &[
            "service",
            "register",
            "side",
            "--address",
            "127.0.0.1",
            "--port",
            "7002",
            "--ttl",
            "3s",
            "--tag",
            "t",
        ],
    );
    expect_watch_line(
        &watch,
        Duration::from_secs(20),
        "PUT side side-127.0.0.1-7002",
    );
    let (status, stderr) = registration.signal("TERM");
    assert_eq!(status.code(), Some(0), "{stderr}");
    expect_watch_line(
        &watch,
        Duration::from_secs(1),
        "DELETE side side-127.0.0.1-7002",
    );

    // kill -9: nothing deregisters, the lease expires. Killed right after its PUT shows up, so
    // the last renewal (sent right after the Register) is at most a few milliseconds older than
    // the kill and the lease cannot end before the TTL has passed since then.
    let ttl = Duration::from_secs(3);
    let mut registration = BackgroundBeacon::start(
        endpoint,
        &[
            "service",
            "register",
            "side",
            "--address",
            "127.0.0.1",
            "--port",
            "7003",
            "--ttl",
            "3s",
        ],
    );
    expect_watch_line(
        &watch,
        Duration::from_secs(20),
        "PUT side side-127.0.0.1-7003",
    );
    registration.kill();
    let killed = Instant::now();
    let margin = Duration::from_secs(5);
    expect_watch_line(&watch, ttl + margin, "DELETE side side-127.0.0.1-7003");
    let expired_after = killed.elapsed();
    // 300 ms: the time from the Register's answer to the kill (the watch line has to arrive
    // and be read first); the lease deadline counts from the renewal before that.
    assert!(
        expired_after + Duration::from_millis(300) >= ttl,
        "expired {expired_after:?} after the kill, before its TTL"
    );
    let listed = json(endpoint, &["service", "show", "side"]);
    assert_eq!(listed["instances"].as_array().map(Vec::len), Some(0));
}

/// A minimal HTTP server on a port-0 listener: answers every request `200 OK` and closes the
/// connection, keeping each request head (lowercased) so a test can see what the probe sent.
/// Runs on its own runtime until dropped.
struct OkHttpServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl OkHttpServer {
    fn start() -> OkHttpServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the HTTP server");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the HTTP server");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        runtime.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    seen.lock()
                        .expect("not poisoned")
                        .push(String::from_utf8_lossy(&head).to_lowercase());
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        OkHttpServer {
            port,
            requests,
            _runtime: runtime,
        }
    }
}

#[test]
fn check_parameters_without_a_check_are_a_usage_error() {
    // Refused before any connection: no cluster needed (nothing listens on port 1).
    let usage = beacon(
        "127.0.0.1:1",
        &[
            "service",
            "register",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "80",
            "--interval",
            "5s",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("--interval sets a health check parameter, but no check was given"),
        "{stderr}"
    );
}

#[test]
fn an_http_check_registered_by_the_cli_turns_passing_in_service_show() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints = endpoints(&members);
    let endpoint = endpoints.as_str();
    let server = OkHttpServer::start();
    let port = server.port.to_string();
    let url = format!("http://127.0.0.1:{port}/health");
    let registered = ok(
        endpoint,
        &[
            "service",
            "register",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
            "--id",
            "web-1",
            "--check-http",
            &url,
            "--interval",
            "1s",
            "--check-timeout",
            "500ms",
            "--http-header",
            "X-Probe: cli-test",
            "--deregister-critical-after",
            "10m",
        ],
    );
    // Not probed yet: the default initial status, critical.
    let line = registered.lines().last().expect("a check line");
    assert!(
        line.starts_with(&format!("  check web-1/http http {url}: critical")),
        "{registered}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let check = loop {
        let shown = json(endpoint, &["service", "show", "web"]);
        let check = shown["instances"][0]["checks"][0].clone();
        if check["status"] == "passing" {
            break check;
        }
        assert!(
            Instant::now() < deadline,
            "the check did not turn passing within 30 s: {check}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(check["id"], "http");
    assert_eq!(check["kind"], "http");
    assert_eq!(check["target"], url.as_str());
    assert_eq!(check["http"]["method"], "GET");
    assert_eq!(check["http"]["headers"]["X-Probe"], "cli-test");
    assert_eq!(check["interval_ms"], 1_000);
    assert_eq!(check["timeout_ms"], 500);
    assert_eq!(check["deregister_critical_after_ms"], 600_000);
    assert!(
        check["since_unix_ms"]
            .as_i64()
            .is_some_and(|since| since > 0),
        "{check}"
    );
    let output = check["output"].as_str().expect("output");
    assert!(output.contains("200"), "{check}");
    assert!(
        server
            .requests
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|head| head.starts_with("get /health ") && head.contains("x-probe: cli-test")),
        "the probe sent the method, path and header given"
    );

    let probe = &check["last_probe"];
    assert_eq!(probe["status"], "passing", "{check}");
    assert!(
        probe["latency_us"].as_u64().is_some_and(|us| us > 0),
        "{check}"
    );
    assert!(
        probe["output"]
            .as_str()
            .is_some_and(|out| out.contains("200")),
        "{check}"
    );

    let shown = ok(endpoint, &["service", "show", "web"]);
    let prefix = format!("  check web-1/http http {url}: passing since ");
    let line = shown
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no check line: {shown}"));
    assert!(line.contains(" ago ("), "an age, then the output: {shown}");
    assert!(line.contains("200"), "{shown}");
    // Under it, the latest probe: when, by whom, what it found and how long it took.
    let probe_line = shown.lines().last().expect("a probe line");
    assert!(probe_line.starts_with("    last probe "), "{shown}");
    assert!(probe_line.contains(" ago by member "), "{shown}");
    assert!(probe_line.contains(": passing in "), "{shown}");
    let quiet = ok(endpoint, &["service", "show", "web", "--no-probes"]);
    assert!(!quiet.contains("last probe"), "{quiet}");
    let listed = json(endpoint, &["service", "list"]);
    assert_eq!(listed["services"][0]["passing"], 1, "{listed}");
}

#[test]
fn ttl_checks_take_heartbeats_and_service_settings_change() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints = endpoints(&members);
    let endpoint = endpoints.as_str();
    ok(
        endpoint,
        &[
            "service",
            "register",
            "jobs",
            "--address",
            "127.0.0.1",
            "--port",
            "9000",
            "--id",
            "job-1",
            "--check-ttl",
            "30s",
        ],
    );
    let reported = ok(
        endpoint,
        &[
            "service",
            "heartbeat",
            "jobs",
            "job-1",
            "--note",
            "all good",
        ],
    );
    assert_eq!(reported.trim(), "heartbeat jobs/job-1: ok");
    let check = json(endpoint, &["service", "show", "jobs"])["instances"][0]["checks"][0].clone();
    assert_eq!(check["status"], "passing", "{check}");
    assert_eq!(check["output"], "all good", "{check}");
    assert_eq!(check["last_probe"]["output"], "all good", "{check}");
    let shown = ok(endpoint, &["service", "show", "jobs"]);
    assert!(
        shown
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("    last report ")
                && line.contains(": passing (all good)")),
        "{shown}"
    );

    ok(
        endpoint,
        &[
            "service",
            "heartbeat",
            "jobs",
            "job-1",
            "--status",
            "warning",
            "--check",
            "ttl",
            "--note",
            "slow disk",
        ],
    );
    let instance = json(endpoint, &["service", "show", "jobs"])["instances"][0].clone();
    assert_eq!(instance["health"], "warning", "{instance}");
    assert_eq!(instance["checks"][0]["output"], "slow disk", "{instance}");
    let refused = fails(
        endpoint,
        &["service", "heartbeat", "jobs", "job-1", "--check", "http"],
    );
    assert!(refused.contains("http"), "{refused}");

    assert_eq!(
        ok(endpoint, &["service", "settings", "jobs"]).trim(),
        "service jobs: min_healthy 0 dns_ttl 5s"
    );
    assert_eq!(
        ok(
            endpoint,
            &[
                "service",
                "settings",
                "jobs",
                "--min-healthy",
                "0.5",
                "--dns-ttl",
                "30s"
            ],
        )
        .trim(),
        "service jobs: min_healthy 0.5 dns_ttl 30s"
    );
    // One setting changed, the other kept.
    let settings = json(endpoint, &["service", "settings", "jobs", "--dns-ttl", "0"]);
    assert_eq!(settings["min_healthy"], 0.5, "{settings}");
    assert_eq!(settings["dns_ttl_s"], 0, "{settings}");
    let refused = fails(
        endpoint,
        &["service", "settings", "jobs", "--min-healthy", "2"],
    );
    assert!(refused.contains("min_healthy"), "{refused}");
}

/// `beacon bench dns` registers the queried service's instances, queries one member's DNS port
/// and reports every answer (10 A records each) without errors, then deregisters them.
#[test]
fn bench_dns_queries_a_member() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let endpoint = members[0].endpoint();
    let dns = members[0]
        .dns_endpoint()
        .expect("a Beacon member has a DNS port");
    let report = json(
        endpoint,
        &[
            "bench",
            "dns",
            "--server",
            dns,
            "--instances",
            "10",
            "--type",
            "SRV",
            "--sockets",
            "2",
            "--in-flight",
            "4",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(report["case"], "dns-SRV", "{report}");
    assert!(
        report["requests"].as_u64().expect("requests") > 100,
        "{report}"
    );
    assert_eq!(report["errors"], 0, "{report}");
    let show = json(endpoint, &["service", "list"]);
    assert!(
        !show.to_string().contains("bench-dns"),
        "instances left behind: {show}"
    );
}
