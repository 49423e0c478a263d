//! End-to-end: the built `beacon` binary against a real etcd (skipped when `etcd` is not
//! installed), checking outputs in both formats and clean failures.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use beacon_client::testing::EtcdProcess;
use serde_json::Value;

fn beacon(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_beacon"))
        .arg("--endpoints")
        .arg(endpoint)
        .args(["--timeout", "3s"])
        .args(args)
        .env_remove("BEACON_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run beacon");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for beacon")
}

/// Runs `beacon`, asserts success and returns stdout.
fn ok(endpoint: &str, args: &[&str]) -> String {
    ok_with_stdin(endpoint, args, None)
}

fn ok_with_stdin(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = beacon(endpoint, args, stdin);
    assert!(
        output.status.success(),
        "beacon {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn json(endpoint: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&ok(endpoint, &args)).expect("valid json")
}

#[test]
fn kv_commands_round_trip() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    assert_eq!(ok(endpoint, &["put", "app/a", "1"]).trim(), "OK");
    ok(endpoint, &["put", "app/b", "2"]);
    let previous = json(endpoint, &["put", "app/a", "3", "--prev-kv"]);
    assert_eq!(previous["prev_kv"]["value"], "1");

    let table = ok(endpoint, &["get", "app/", "--prefix"]);
    let lines: Vec<_> = table.lines().collect();
    assert!(lines[0].starts_with("KEY"), "{table}");
    assert!(lines[1].starts_with("app/a  3"), "{table}");
    assert!(lines[2].starts_with("app/b  2"), "{table}");

    let sorted = json(
        endpoint,
        &[
            "get",
            "app/",
            "--prefix",
            "--sort-by",
            "modify",
            "--order",
            "descend",
        ],
    );
    assert_eq!(sorted["kvs"][0]["key"], "app/a");
    let limited = json(endpoint, &["get", "app/", "--prefix", "--limit", "1"]);
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited["more"], true);
    let counted = json(endpoint, &["get", "app/a", "app/c", "--count-only"]);
    assert_eq!(counted["count"], 2);

    let deleted = json(endpoint, &["del", "app/", "--prefix", "--prev-kv"]);
    assert_eq!(deleted["deleted"], 2);
    let revision = deleted["header"]["revision"].as_i64().expect("revision");
    assert!(ok(endpoint, &["compact", &revision.to_string()]).contains("compacted"));
    let stale = beacon(endpoint, &["get", "app/a", "--rev", "1"], None);
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("required revision has been compacted"));
}

#[test]
fn txn_from_stdin_and_from_flags() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    ok(endpoint, &["put", "k", "v"]);
    let stdin = "value(\"k\") = \"v\"\nversion(\"k\") > \"0\"\n\nput k w\nget k\n\nget k\n";
    let out = ok_with_stdin(endpoint, &["txn"], Some(stdin));
    assert!(out.starts_with("SUCCEEDED"), "{out}");
    assert!(out.contains("k    w"), "{out}");

    let failed = json(
        endpoint,
        &[
            "txn",
            "--compare",
            "mod(\"k\") = \"0\"",
            "--success",
            "put k never",
            "--failure",
            "get k",
        ],
    );
    assert_eq!(failed["succeeded"], false);
    assert_eq!(failed["responses"][0]["range"]["kvs"][0]["value"], "w");

    let bad = beacon(
        endpoint,
        &["txn", "--compare", "colour(\"k\") = \"red\""],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown target"));
}

#[test]
fn cluster_commands_show_hex_ids() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let members = json(endpoint, &["member", "list"]);
    let member_id = members["members"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(u64::from_str_radix(&member_id, 16).is_ok(), "{member_id}");

    let status = json(endpoint, &["endpoint", "status"]);
    assert_eq!(status[0]["id"], member_id.as_str());
    assert_eq!(status[0]["is_leader"], true);
    assert!(ok(endpoint, &["endpoint", "status"]).contains(&member_id));

    let health = json(endpoint, &["endpoint", "health"]);
    assert_eq!(health[0]["health"], true);
}

#[test]
fn bench_reports_percentiles() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let put = json(
        endpoint,
        &[
            "bench",
            "put",
            "--conns",
            "2",
            "--clients",
            "4",
            "--total",
            "200",
        ],
    );
    assert_eq!(put["requests"], 200);
    assert_eq!(put["errors"], 0);
    assert!(put["p99_ms"].as_f64().expect("p99") >= put["p50_ms"].as_f64().expect("p50"));
    let range = json(
        endpoint,
        &[
            "bench",
            "range",
            "--consistency",
            "s",
            "--total",
            "100",
            "--key",
            "k",
        ],
    );
    assert_eq!(range["case"], "range-s");
    assert_eq!(range["requests"], 100);
}

#[test]
fn unreachable_cluster_fails_cleanly() {
    // Bound but not listening: connections are refused for as long as the socket lives.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = socket.local_addr().expect("address").port();
    let output = beacon(&format!("127.0.0.1:{port}"), &["get", "k"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: could not connect"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_arguments_exit_non_zero_without_panicking() {
    let output = beacon("127.0.0.1:1", &["get"], None);
    assert_eq!(output.status.code(), Some(2));
    let output = beacon("not an endpoint", &["get", "k"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid"));
}
