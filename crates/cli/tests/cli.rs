//! End-to-end: the built `beacon` binary against a real etcd (skipped when `etcd` is not
//! installed), checking outputs in both formats and clean failures.

mod common;

use beacon_client::testing::EtcdProcess;
use serde_json::Value;

use common::{beacon, json, ok, ok_with_stdin, BackgroundBeacon};

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

/// The member's current revision. A put made before `beacon watch` has created its watch would
/// not be seen, so the tests start the watch at an explicit `--rev` instead of racing it.
fn current_revision(endpoint: &str) -> i64 {
    json(endpoint, &["get", "nothing"])["header"]["revision"]
        .as_i64()
        .expect("revision")
}

#[test]
fn watch_prints_events_like_etcdctl_and_exits_cleanly_on_ctrl_c() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let start = (current_revision(endpoint) + 1).to_string();
    let watch = BackgroundBeacon::start(
        endpoint,
        &["watch", "w/", "--prefix", "--prev-kv", "--rev", &start],
    );
    ok(endpoint, &["put", "w/a", "1"]);
    ok(endpoint, &["put", "w/a", "2"]);
    ok(endpoint, &["del", "w/a"]);
    assert_eq!(
        watch.read_lines(3 + 5 + 5),
        [
            "PUT", "w/a", "1", // first put: no previous value
            "PUT", "w/a", "1", "w/a", "2", // prev kv, then kv
            "DELETE", "w/a", "2", "w/a", "", // a delete's kv has no value
        ]
    );
    let (status, stderr) = watch.interrupt();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn watch_json_prints_one_object_per_revision() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let start = current_revision(endpoint) + 1;
    let watch = BackgroundBeacon::start(
        endpoint,
        &["watch", "k", "--rev", &start.to_string(), "-o", "json"],
    );
    ok(endpoint, &["put", "k", "v"]);
    ok(endpoint, &["put", "other", "v"]);
    ok(endpoint, &["put", "k", "w"]);
    let lines = watch.read_lines(2);
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(parsed[0]["revision"], start);
    assert_eq!(parsed[0]["events"][0]["type"], "PUT");
    assert_eq!(parsed[0]["events"][0]["kv"]["value"], "v");
    assert_eq!(parsed[1]["revision"], start + 2);
    assert_eq!(parsed[1]["events"][0]["kv"]["value"], "w");
    let (status, stderr) = watch.interrupt();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
}

#[test]
fn watch_of_a_compacted_revision_fails_with_a_message() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    ok(endpoint, &["put", "k", "1"]);
    ok(endpoint, &["put", "k", "2"]);
    let revision = current_revision(endpoint).to_string();
    ok(endpoint, &["compact", &revision]);
    let output = beacon(endpoint, &["watch", "k", "--rev", "1"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("compacted"), "{stderr}");
}
