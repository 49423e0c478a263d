//! Compatibility: `etcdctl watch` (etcd 3.4, API v3) against a 3-member cluster, started in the
//! past on a follower and following live writes and deletes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{TestCluster, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prints_history_and_live_events() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let first = cluster.put(leader, "k/1", "a").await;
    cluster.put(leader, "other", "x").await;

    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&cluster.nodes[follower].client_addr)
        .args(["watch", "--prefix", "k/", "--rev", &first.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl is installed (Debian etcd-client)");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    cluster.put(leader, "k/2", "b").await;
    cluster
        .kv(leader)
        .await
        .delete_range(beacon_proto::etcdserverpb::DeleteRangeRequest {
            key: b"k/1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete");

    let expected = ["PUT", "k/1", "a", "PUT", "k/2", "b", "DELETE", "k/1", ""];
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match received.recv_timeout(DEADLINE) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, expected);
}
