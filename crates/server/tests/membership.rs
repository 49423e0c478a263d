//! Membership changes on real members, through etcd's Cluster API: a 3-member cluster grows to 5
//! under a continuous write load (each new member joins as a learner with
//! `initial_cluster_state = "existing"`, catches up, is promoted), then its leader is removed;
//! no acknowledged write is lost and a watch sees every one of them in order. Also: a removed
//! member that comes back with its old data stops; leadership moves on request; etcd's errors.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::cluster_client::ClusterClient;
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, PutRequest, RangeRequest, WatchCreateRequest,
};
use common::{TestCluster, WatchSession, DEADLINE};
use tonic::transport::Channel;
use tonic::Code;

async fn cluster_client(cluster: &TestCluster, index: usize) -> ClusterClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", cluster.nodes[index].client_addr))
        .expect("valid uri")
        .timeout(Duration::from_secs(15))
        .connect_lazy();
    ClusterClient::new(channel)
}

async fn members(cluster: &TestCluster, index: usize) -> Vec<Member> {
    cluster_client(cluster, index)
        .await
        .member_list(MemberListRequest { linearizable: true })
        .await
        .expect("member list")
        .into_inner()
        .members
}

/// Adds a learner through member `via`, starts it, waits until it published its name, and
/// promotes it (retrying while it is not in sync yet). Returns its index.
async fn grow(cluster: &mut TestCluster, via: usize) -> usize {
    let peer = format!("127.0.0.1:{}", common::free_port());
    let added = cluster_client(cluster, via)
        .await
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("http://{peer}")],
            is_learner: true,
        })
        .await
        .expect("member add")
        .into_inner();
    let member = added.member.expect("added member");
    assert!(member.is_learner);
    assert!(member.name.is_empty(), "unstarted until it publishes");
    let index = cluster.prepare_joining_node(member.id);
    // The harness chose the client port; the peer address must be the one added.
    let config = std::fs::read_to_string(&cluster.nodes[index].config_path).expect("config");
    let config = config.replace(&cluster.nodes[index].peer_addr, &peer);
    std::fs::write(&cluster.nodes[index].config_path, config).expect("config");
    cluster.nodes[index].peer_addr = peer;
    cluster.start_node(index);

    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = members(cluster, via).await;
        if listed
            .iter()
            .any(|m| m.id == member.id && !m.name.is_empty() && !m.client_ur_ls.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member {:x} never published itself: {listed:?}\n{}",
            member.id,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let promoted = cluster_client(cluster, via)
            .await
            .member_promote(MemberPromoteRequest { id: member.id })
            .await;
        match promoted {
            Ok(_) => break,
            Err(status)
                if status.message()
                    == "etcdserver: can only promote a learner member which is in sync with leader" =>
            {
                assert!(Instant::now() < deadline, "never in sync\n{}", cluster.logs());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("promote: {status}\n{}", cluster.logs()),
        }
    }
    index
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_grows_to_five_under_load_and_loses_its_leader_without_losing_a_write() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let watcher = (leader + 1) % 3;
    let mut watch = WatchSession::open(&cluster, watcher).await;
    watch
        .send(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"load/".to_vec(),
            range_end: b"load0".to_vec(),
            ..Default::default()
        }))
        .await;
    let created = watch.next().await;
    assert!(created.created);

    // The load: one writer per initial member, each write acknowledged or not.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<String, (String, i64)>::new()));
    let mut writers = Vec::new();
    for writer in 0..3usize {
        let mut kv = cluster.kv(writer).await;
        let stop = stop.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("load/{writer}/{n:06}");
                let value = format!("v{n}");
                if let Ok(response) = kv
                    .put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone().into_bytes(),
                        ..Default::default()
                    })
                    .await
                {
                    let revision = response.into_inner().header.expect("header").revision;
                    acknowledged
                        .lock()
                        .expect("lock")
                        .insert(key, (value, revision));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let fourth = grow(&mut cluster, watcher).await;
    let fifth = grow(&mut cluster, watcher).await;
    let listed = members(&cluster, watcher).await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.iter().all(|m| !m.is_learner), "{listed:?}");

    // Remove the leader through another member.
    let leader = cluster.wait_for_leader().await;
    let leader_id = cluster.nodes[leader].id;
    let via = [watcher, fourth, fifth]
        .into_iter()
        .find(|index| *index != leader)
        .expect("a member other than the leader");
    cluster_client(&cluster, via)
        .await
        .member_remove(MemberRemoveRequest { id: leader_id })
        .await
        .unwrap_or_else(|status| panic!("remove the leader: {status}\n{}", cluster.logs()));
    let listed = members(&cluster, via).await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(listed.iter().all(|m| m.id != leader_id));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(cluster.nodes[new_leader].id, leader_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }

    // Every acknowledged write is there, on every remaining member, and the watch saw each one
    // at its revision, in order.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 100,
        "too little load: {}",
        acknowledged.len()
    );
    let remaining: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != leader).collect();
    let mut last_revision = 0;
    for index in &remaining {
        let mut kv = cluster.kv(*index).await;
        let deadline = Instant::now() + DEADLINE;
        let stored = loop {
            let response = kv
                .range(RangeRequest {
                    key: b"load/".to_vec(),
                    range_end: b"load0".to_vec(),
                    serializable: *index != via,
                    ..Default::default()
                })
                .await
                .expect("range")
                .into_inner();
            let stored: BTreeMap<String, String> = response
                .kvs
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    )
                })
                .collect();
            if acknowledged.keys().all(|key| stored.contains_key(key)) || Instant::now() > deadline
            {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for (key, (value, _)) in &acknowledged {
            assert_eq!(stored.get(key), Some(value), "member index {index}: {key}");
        }
    }
    let mut seen = BTreeMap::new();
    let wanted = acknowledged
        .values()
        .map(|(_, rev)| *rev)
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + DEADLINE;
    while seen.values().copied().max().unwrap_or(0) < wanted {
        assert!(Instant::now() < deadline, "the watch stalled");
        let response = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("watch event in time");
        for event in response.events {
            let kv = event.kv.expect("kv");
            assert!(kv.mod_revision > last_revision, "out of order");
            last_revision = kv.mod_revision;
            seen.insert(
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            );
        }
    }
    for (key, (_, revision)) in &acknowledged {
        assert_eq!(seen.get(key), Some(revision), "watch missed {key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_that_returns_with_its_old_data_stops() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let victim = (leader + 1) % 3;
    let victim_id = cluster.nodes[victim].id;
    cluster.stop(victim);
    cluster_client(&cluster, leader)
        .await
        .member_remove(MemberRemoveRequest { id: victim_id })
        .await
        .expect("remove");
    cluster.put(leader, "after", "removal").await;
    cluster.start_node(victim);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = cluster.exited(victim) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the removed member kept running\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&cluster.nodes[victim].log_path).expect("log");
    assert!(log.contains("removed from the cluster"), "{log}");
    // The others never noticed.
    let listed = members(&cluster, leader).await;
    assert_eq!(listed.len(), 2);
    cluster.put(leader, "still", "writable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leadership_moves_on_request_and_membership_errors_are_etcds() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let target = (leader + 1) % 3;
    let target_id = cluster.nodes[target].id;
    let mut maintenance = cluster.maintenance((leader + 2) % 3).await;
    maintenance
        .move_leader(MoveLeaderRequest { target_id })
        .await
        .unwrap_or_else(|status| panic!("move leader: {status}\n{}", cluster.logs()));
    assert_eq!(cluster.wait_for_leader().await, target);
    cluster.put(leader, "after", "move").await;

    let mut client = cluster_client(&cluster, leader).await;
    let errors = [
        (
            client
                .member_remove(MemberRemoveRequest { id: 0xdead })
                .await
                .expect_err("unknown member"),
            Code::NotFound,
            "etcdserver: member not found",
        ),
        (
            client
                .member_promote(MemberPromoteRequest { id: target_id })
                .await
                .expect_err("a voter"),
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        ),
        (
            client
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![format!("http://{}", cluster.nodes[0].peer_addr)],
                    is_learner: true,
                })
                .await
                .expect_err("a peer address in use"),
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        (
            client
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec!["not a url".into()],
                    is_learner: true,
                })
                .await
                .expect_err("a bad url"),
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        ),
        (
            maintenance
                .move_leader(MoveLeaderRequest { target_id: 0xdead })
                .await
                .expect_err("no such member"),
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee",
        ),
    ];
    for (status, code, message) in errors {
        assert_eq!((status.code(), status.message()), (code, message));
    }
    // Only one learner at a time, as etcd.
    client
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("http://127.0.0.1:{}", common::free_port())],
            is_learner: true,
        })
        .await
        .expect("a learner");
    let second = client
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("http://127.0.0.1:{}", common::free_port())],
            is_learner: true,
        })
        .await
        .expect_err("a second learner");
    assert_eq!(
        second.message(),
        "etcdserver: too many learner members in cluster"
    );
}

/// README's procedure for a dead member: remove it, add a new one (new id, empty data
/// directory, `initial_cluster_state = "existing"`), promote it; the new member holds all the
/// data and the cluster is back to three voters.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_member_is_replaced() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    for n in 0..50 {
        cluster.put(leader, &format!("before/{n:02}"), "v").await;
    }
    let dead = (leader + 1) % 3;
    let dead_id = cluster.nodes[dead].id;
    cluster.kill(dead);
    cluster_client(&cluster, leader)
        .await
        .member_remove(MemberRemoveRequest { id: dead_id })
        .await
        .expect("remove the dead member");
    let fresh = grow(&mut cluster, leader).await;
    let listed = members(&cluster, leader).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|m| !m.is_learner && m.id != dead_id));
    cluster.put(leader, "after", "v").await;
    let mut kv = cluster.kv(fresh).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let count = kv
            .range(RangeRequest {
                key: b"after".to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .count;
        if count == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the new member never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = kv
        .range(RangeRequest {
            key: b"before/".to_vec(),
            range_end: b"before0".to_vec(),
            serializable: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .count;
    assert_eq!(before, 50);
    // The new member votes: with another member down, the cluster still has a quorum.
    let other = (0..cluster.nodes.len())
        .find(|i| *i != leader && *i != fresh && *i != dead)
        .expect("third member");
    cluster.kill(other);
    cluster.put(leader, "quorum", "with the new member").await;
}
