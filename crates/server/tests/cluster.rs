//! Integration tests with real 3-node clusters on loopback: forwarding, linearizable follower
//! reads, leader failover, follower catch-up and durability across kill -9 of every member.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::{TestCluster, DEADLINE};

fn followers(cluster: &TestCluster, leader: usize) -> Vec<usize> {
    (0..cluster.nodes.len()).filter(|i| *i != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_is_forwarded_and_a_linearizable_follower_read_sees_it() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let followers = followers(&cluster, leader);
    for round in 0..20 {
        let value = format!("v{round}");
        let revision = cluster.put(followers[0], "forwarded", &value).await;
        // Linearizable read on the *other* follower, immediately after the acknowledgement.
        let seen = cluster.get(followers[1], "forwarded", false).await;
        assert_eq!(seen, Some((value.clone(), revision)), "round {round}");
        let on_leader = cluster.get(leader, "forwarded", false).await;
        assert_eq!(on_leader, Some((value, revision)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_lets_writes_resume_on_a_new_leader() {
    let mut cluster = TestCluster::start(3);
    let old_leader = cluster.wait_for_leader().await;
    let before = cluster.put(old_leader, "before", "1").await;
    cluster.kill(old_leader);
    // Written at once, during the election: the follower holds the write until a new leader
    // exists (the old one is unreachable, so nothing was sent) instead of failing it.
    let survivor = followers(&cluster, old_leader)[1];
    let during = cluster.put(survivor, "during", "x").await;
    assert!(during > before);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, old_leader);
    let survivor = followers(&cluster, old_leader)[0];
    let after = cluster.put(survivor, "after", "2").await;
    assert!(after > before);
    for index in followers(&cluster, old_leader) {
        assert_eq!(
            cluster.get(index, "before", false).await,
            Some(("1".into(), before))
        );
        assert_eq!(
            cluster.get(index, "after", false).await,
            Some(("2".into(), after))
        );
    }
    // The old leader comes back as a follower and learns what it missed.
    cluster.start_node(old_leader);
    wait_until(|| async {
        cluster.get(old_leader, "after", true).await == Some(("2".into(), after))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_catches_up_after_restart() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = followers(&cluster, leader)[0];
    cluster.stop(follower);
    let mut written = BTreeMap::new();
    for i in 0..100 {
        let key = format!("catch-up/{i:03}");
        let revision = cluster.put(leader, &key, &i.to_string()).await;
        written.insert(key, revision);
    }
    cluster.start_node(follower);
    let (last_key, last_revision) = written
        .iter()
        .next_back()
        .map(|(k, r)| (k.clone(), *r))
        .expect("writes");
    wait_until(|| async {
        cluster.get(follower, &last_key, true).await.map(|(_, r)| r) == Some(last_revision)
    })
    .await;
    for (key, revision) in &written {
        let (_, seen) = cluster
            .get(follower, key, true)
            .await
            .expect("caught-up key");
        assert_eq!(
            seen, *revision,
            "{key} has the same revision on the follower"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_member_during_a_write_load_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let acknowledged: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..6usize {
        let mut kv = cluster.kv(writer % 3).await;
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("durable/{writer}/{i}");
                let request = PutRequest {
                    key: key.clone().into(),
                    value: key.clone().into(),
                    ..Default::default()
                };
                match kv.put(request).await {
                    Ok(response) => {
                        let revision = response.into_inner().header.expect("header").revision;
                        acknowledged.lock().expect("lock").push((key, revision));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + DEADLINE;
    while acknowledged.lock().expect("lock").len() < 2000 {
        assert!(
            Instant::now() < deadline,
            "write load made no progress\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for index in 0..3 {
        cluster.kill(index);
    }
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    for index in 0..3 {
        cluster.start_node(index);
    }
    let leader = cluster.wait_for_leader().await;
    let mut kv = cluster.kv(leader).await;
    let mut revisions = std::collections::HashSet::new();
    for (key, revision) in &acknowledged {
        let request = RangeRequest {
            key: key.clone().into(),
            ..Default::default()
        };
        let response = kv.range(request).await.expect("range").into_inner();
        let kv = response
            .kvs
            .first()
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(kv.mod_revision, *revision, "{key} kept its revision");
        assert_eq!(kv.value, key.as_bytes());
        assert!(
            revisions.insert(*revision),
            "revision {revision} acknowledged twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_times_out_instead_of_hanging() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    cluster.put(leader, "k", "before").await;
    for follower in followers(&cluster, leader) {
        cluster.pause(follower, true);
    }
    let mut kv = cluster.kv(leader).await;
    let started = Instant::now();
    let write = PutRequest {
        key: b"k".to_vec(),
        value: b"lost?".to_vec(),
        ..Default::default()
    };
    let status = kv.put(write).await.expect_err("no quorum, no commit");
    assert_eq!(status.message(), "etcdserver: request timed out");
    let read = kv
        .range(RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await;
    let status = read.expect_err("a linearizable read needs the quorum too");
    assert_eq!(status.message(), "etcdserver: request timed out");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "bounded by the request timeout"
    );
    // A serializable read is local and still answers.
    let local = RangeRequest {
        key: b"k".to_vec(),
        serializable: true,
        ..Default::default()
    };
    assert_eq!(
        kv.range(local)
            .await
            .expect("serializable")
            .into_inner()
            .kvs[0]
            .value,
        b"before"
    );
    for follower in followers(&cluster, leader) {
        cluster.pause(follower, false);
    }
}

async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
