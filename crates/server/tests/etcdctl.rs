//! Compatibility: etcd's own `etcdctl` (Debian's etcd-client, API v3) against a 3-node cluster.

mod common;

use std::process::Command;

use common::TestCluster;

fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("etcdctl is installed (scripts/install-deps.sh installs etcd-client)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = etcdctl(endpoints, args);
    assert!(success, "etcdctl {args:?} failed: {stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_unchanged() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let one = cluster.nodes[follower].client_addr.clone();
    let all = cluster.endpoints();

    assert_eq!(ok(&one, &["put", "app/a", "1"]).trim(), "OK");
    assert_eq!(ok(&one, &["put", "app/b", "2"]).trim(), "OK");
    assert_eq!(ok(&all, &["put", "other", "3"]).trim(), "OK");
    assert_eq!(ok(&all, &["get", "app/a"]), "app/a\n1\n");
    assert_eq!(
        ok(&all, &["get", "app/", "--prefix"]),
        "app/a\n1\napp/b\n2\n"
    );
    assert_eq!(
        ok(&all, &["get", "app/", "--prefix", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["app/a", "app/b"]
    );
    let counted = ok(&all, &["get", "app/", "--prefix", "-w", "fields"]);
    assert!(counted.contains("\"Count\" : 2"), "{counted}");

    // Revisions: overwrite and read the past value back.
    let json = ok(&all, &["get", "app/a", "-w", "json"]);
    let revision = json_field(&json, "mod_revision");
    assert_eq!(ok(&all, &["put", "app/a", "1b"]).trim(), "OK");
    assert_eq!(
        ok(&all, &["get", "app/a", "--rev", &revision.to_string()]),
        "app/a\n1\n"
    );
    assert_eq!(ok(&all, &["get", "app/a"]), "app/a\n1b\n");

    // Delete, with prefix.
    assert_eq!(ok(&all, &["del", "other"]).trim(), "1");
    assert_eq!(ok(&all, &["del", "app/", "--prefix"]).trim(), "2");
    assert_eq!(ok(&all, &["get", "app/", "--prefix"]), "");

    // Txn from stdin, etcdctl's interactive format.
    let txn = |input: &str| {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &all, "txn"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("etcdctl");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("txn output");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let created = txn("create(\"lock\") = \"0\"\n\nput lock mine\n\nget lock\n\n");
    assert_eq!(created, "SUCCESS\n\nOK\n");
    let taken = txn("create(\"lock\") = \"0\"\n\nput lock theirs\n\nget lock\n\n");
    assert_eq!(taken, "FAILURE\n\nlock\nmine\n");

    // Cluster and endpoint commands.
    let members = ok(&one, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for node in &cluster.nodes {
        assert!(
            members.contains(&format!("http://{}", node.client_addr)),
            "{members}"
        );
        assert!(
            members.contains(&format!("{:x}, started, node{}", node.id, node.id)),
            "{members}"
        );
    }
    let status = ok(&all, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(
        status.matches(", true, ").count(),
        1,
        "exactly one leader: {status}"
    );
    let health = etcdctl(&all, &["endpoint", "health"]);
    assert!(health.0, "{}", health.2);
    assert_eq!(
        health.1.matches("is healthy").count() + health.2.matches("is healthy").count(),
        3
    );

    // etcd's errors come back with etcd's text.
    let (success, _, stderr) = etcdctl(&all, &["get", "app/a", "--rev", "100000"]);
    assert!(!success);
    assert!(
        stderr.contains("required revision is a future revision"),
        "{stderr}"
    );
}

fn json_field(json: &str, field: &str) -> i64 {
    let value: serde_json::Value = serde_json::from_str(json).expect("etcdctl json");
    value["kvs"][0][field].as_i64().expect("numeric field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_commands_work_unchanged() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let one = cluster.nodes[follower].client_addr.clone();
    let all = cluster.endpoints();

    // "lease 694d71ddacfda227 granted with TTL(10s)"
    let granted = ok(&one, &["lease", "grant", "10"]);
    let id = granted
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(10s)\n"))
        .unwrap_or_else(|| panic!("grant output: {granted:?}"))
        .to_string();
    assert!(i64::from_str_radix(&id, 16).is_ok_and(|id| id > 0), "{id}");

    assert_eq!(
        ok(&one, &["put", "--lease", &id, "leased", "v"]).trim(),
        "OK"
    );
    assert_eq!(ok(&all, &["get", "leased"]), "leased\nv\n");
    let live = ok(&all, &["lease", "timetolive", &id, "--keys"]);
    let remaining = live
        .strip_prefix(&format!("lease {id} granted with TTL(10s), remaining("))
        .and_then(|rest| rest.strip_suffix("s), attached keys([leased])\n"))
        .unwrap_or_else(|| panic!("timetolive output: {live:?}"));
    assert!(
        remaining
            .parse::<i64>()
            .is_ok_and(|s| (0..=10).contains(&s)),
        "{live}"
    );
    assert_eq!(
        ok(&all, &["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        ok(&one, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(10)\n")
    );

    assert_eq!(
        ok(&one, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(&all, &["get", "leased"]), "");
    assert_eq!(
        ok(&all, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    assert_eq!(ok(&all, &["lease", "list"]), "found 0 leases\n");

    // etcd's errors for a lease that is gone, with etcd's text.
    let (success, _, stderr) = etcdctl(&all, &["lease", "revoke", &id]);
    assert!(!success);
    assert!(
        stderr.contains("etcdserver: requested lease not found"),
        "{stderr}"
    );
    let (success, _, stderr) = etcdctl(&one, &["lease", "keep-alive", "--once", &id]);
    assert!(!success);
    assert!(
        stderr.contains("etcdserver: requested lease not found"),
        "{stderr}"
    );
    let (success, _, stderr) = etcdctl(&one, &["put", "--lease", &id, "leased", "v"]);
    assert!(!success);
    assert!(
        stderr.contains("etcdserver: requested lease not found"),
        "{stderr}"
    );
}
