//! Raft snapshots and backups on real 3-member clusters: a member down for longer than the log
//! is kept catches up through a snapshot sent in chunks while writes go on; a backup taken with `etcdctl snapshot
//! save` under a write load restores into a new cluster with the same data and HashKV; a
//! corrupted or truncated backup is refused without leaving a data directory.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::{
    HashKvRequest, LeaseGrantRequest, LeaseLeasesRequest, PutRequest, RangeRequest, StatusRequest,
};
use beacon_proto::mvccpb::KeyValue;
use common::{TestCluster, DEADLINE};

/// Snapshots every 50 entries, 5 entries kept behind them, 64 KiB chunks: a few hundred
/// writes push the log past a stopped member and make its snapshot span many chunks.
const SMALL_SNAPSHOTS: &str =
    "snapshot_after_entries = 50\nkeep_logs_after_snapshot = 5\nsnapshot_chunk_bytes = 65536";

async fn wait_for_log(cluster: &TestCluster, index: usize, needle: &str, count: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = std::fs::read_to_string(&cluster.nodes[index].log_path).unwrap_or_default();
        if log.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node{} never logged {needle:?} {count} times\n{}",
            index + 1,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The numeric `field=` of the first log line of member `index` containing `message`.
fn logged_field(cluster: &TestCluster, index: usize, message: &str, field: &str) -> u64 {
    let log = std::fs::read_to_string(&cluster.nodes[index].log_path).unwrap_or_default();
    let line = log
        .lines()
        .find(|line| line.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in node{}'s log", index + 1));
    // Drop terminal colour codes (ESC [ … m) around field names and values.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let value = plain
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field}= in {plain:?}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{field}={value} is not a number"))
}

/// Every key live at `revision` (0: now) on member `index`, after a linearizable read barrier
/// (so the member has applied everything acknowledged before).
async fn everything(cluster: &TestCluster, index: usize, revision: i64) -> Vec<KeyValue> {
    let request = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    };
    cluster
        .kv(index)
        .await
        .range(request)
        .await
        .unwrap_or_else(|status| panic!("range on node{}: {status}", index + 1))
        .into_inner()
        .kvs
}

async fn hash_kv(cluster: &TestCluster, index: usize, revision: i64) -> (u32, i64, i64) {
    let response = cluster
        .maintenance(index)
        .await
        .hash_kv(HashKvRequest { revision })
        .await
        .unwrap_or_else(|status| panic!("hashkv on node{}: {status}", index + 1))
        .into_inner();
    (
        response.hash,
        response.hash_revision,
        response.compact_revision,
    )
}

async fn cluster_id(cluster: &TestCluster, index: usize) -> u64 {
    let status = cluster
        .maintenance(index)
        .await
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    status.header.expect("header").cluster_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_longer_than_the_log_is_kept_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start_configured(3, SMALL_SNAPSHOTS, "", |_| {});
    let leader = cluster.wait_for_leader().await;
    let lagging = (leader + 1) % 3;
    cluster.put(leader, "before", "1").await;
    cluster.stop(lagging);

    // 400 sequential writes are 400 entries: snapshots at every 50, the log purged behind them.
    let value = "v".repeat(4096);
    let mut last_revision = 0;
    for index in 0..400 {
        last_revision = cluster
            .put(leader, &format!("key/{:04}", index % 300), &value)
            .await;
    }
    wait_for_log(&cluster, leader, "built a snapshot", 4).await;

    // Writes go on while it restarts, receives the snapshot and installs it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut kv = cluster.kv(leader).await;
        tokio::spawn(async move {
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = PutRequest {
                    key: format!("live/{written}").into(),
                    value: b"during".to_vec(),
                    ..Default::default()
                };
                kv.put(request).await.expect("put during the catch-up");
                written += 1;
            }
            written
        })
    };
    cluster.start_node(lagging);
    wait_for_log(&cluster, lagging, "installed a snapshot", 1).await;
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.await.expect("writer") as usize;
    let installed = logged_field(&cluster, lagging, "installed a snapshot", "bytes");
    assert!(
        installed > 10 * 65536,
        "the snapshot ({installed} bytes) was sent in many 64 KiB chunks"
    );
    // Caught up: a linearizable read on it sees the last write, and it keeps following the log.
    let revision = cluster.put(leader, "after", "2").await;
    assert!(revision > last_revision);
    let deadline = Instant::now() + DEADLINE;
    while cluster.get(lagging, "after", true).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "never applied the write after the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = everything(&cluster, leader, 0).await;
    // 300 keys, those written during the catch-up, "before" and "after" (plus the checker set
    // the leader wrote while a member was down, under /_beacon/).
    let user_keys = expected
        .iter()
        .filter(|kv| !kv.key.starts_with(b"/_beacon/"))
        .count();
    assert!(written_during > 0);
    assert_eq!(user_keys, 302 + written_during);
    for index in 0..3 {
        assert!(
            everything(&cluster, index, 0).await == expected,
            "node{} holds other data",
            index + 1
        );
    }
    let hashes: Vec<_> = hashes_of_all(&cluster, revision).await;
    assert!(
        hashes.iter().all(|hash| *hash == hashes[0]),
        "HashKV at {revision} differs: {hashes:?}"
    );
    // etcdctl agrees (etcd's HashKV RPC, as its tools call it).
    let etcdctl = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &cluster.endpoints(), "endpoint", "hashkv"])
        .args(["--rev", &revision.to_string(), "-w", "json"])
        .output()
        .expect("etcdctl is installed (scripts/install-deps.sh installs etcd-client)");
    let json = String::from_utf8_lossy(&etcdctl.stdout);
    assert!(etcdctl.status.success(), "{json}");
    assert_eq!(
        json.matches(&format!("\"hash\":{},", hashes[0].0)).count(),
        3,
        "{json}"
    );
    // Old history is there too (the snapshot carries every revision, not only the latest).
    assert!(
        everything(&cluster, lagging, last_revision - 100).await
            == everything(&cluster, leader, last_revision - 100).await
    );
    let files: Vec<_> = std::fs::read_dir(cluster.nodes[lagging].data_dir.join("snapshots"))
        .expect("snapshot dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() == 1 && files[0].ends_with(".snap"),
        "only the installed snapshot is kept, no partial receive: {files:?}"
    );
}

async fn hashes_of_all(cluster: &TestCluster, revision: i64) -> Vec<(u32, i64, i64)> {
    let mut hashes = Vec::new();
    for index in 0..cluster.nodes.len() {
        hashes.push(hash_kv(cluster, index, revision).await);
    }
    hashes
}

fn etcdctl_snapshot_save(endpoint: &str, file: &Path) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=30s"])
        .arg("snapshot")
        .arg("save")
        .arg(file)
        .output()
        .expect("etcdctl is installed (scripts/install-deps.sh installs etcd-client)")
}

fn restore(config: &Path, backup: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("--config")
        .arg(config)
        .arg("restore")
        .arg(backup)
        .output()
        .expect("run beacond restore")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_new_cluster_with_the_same_data() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let lease = cluster
        .lease(leader)
        .await
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    for index in 0..50 {
        let request = PutRequest {
            key: format!("leased/{index}").into(),
            value: b"x".to_vec(),
            lease,
            ..Default::default()
        };
        cluster.kv(leader).await.put(request).await.expect("put");
    }

    // A writer keeps going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut kv = cluster.kv(leader).await;
        tokio::spawn(async move {
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = PutRequest {
                    key: format!("load/{}", written % 500).into(),
                    value: vec![b'a' + (written % 26) as u8; 1024],
                    ..Default::default()
                };
                kv.put(request).await.expect("put under load");
                written += 1;
            }
            written
        })
    };
    let deadline = Instant::now() + DEADLINE;
    while cluster.get(leader, "load/300", true).await.is_none() {
        assert!(Instant::now() < deadline, "the load never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backup_dir = tempfile::tempdir().expect("temp dir");
    let backup = backup_dir.path().join("backup.db");
    let follower = (leader + 1) % 3;
    let endpoint = cluster.nodes[follower].client_addr.clone();
    let saved = {
        let backup = backup.clone();
        tokio::task::spawn_blocking(move || etcdctl_snapshot_save(&endpoint, &backup))
            .await
            .expect("etcdctl")
    };
    assert!(
        saved.status.success(),
        "etcdctl snapshot save failed: {}",
        String::from_utf8_lossy(&saved.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    let file = std::fs::File::open(&backup).expect("backup file");
    let summary = beacon_storage::snapshot_format::verify(std::io::BufReader::new(file))
        .expect("a whole, valid backup");
    let backup_revision = summary.header.current_revision;
    let current = cluster.put(leader, "after-backup", "1").await;
    assert!(
        backup_revision >= 352 && backup_revision < current,
        "the backup was taken under load: revision {backup_revision}, now {current}, {written} written"
    );
    let expected = everything(&cluster, leader, backup_revision).await;
    let expected_hash = hash_kv(&cluster, leader, backup_revision).await;

    // Corrupted and truncated copies are refused, and leave no data directory.
    let bytes = std::fs::read(&backup).expect("read backup");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x20;
    // The verification pass reads frames while it hashes, so a flipped byte is refused either
    // by the SHA-256 or, when it lands on a frame's tag or length, by the framing.
    let broken = [
        (
            "flipped.db",
            flipped,
            &["SHA-256 mismatch", "invalid snapshot"][..],
        ),
        (
            "truncated.db",
            bytes[..bytes.len() / 2].to_vec(),
            &["truncated"][..],
        ),
    ];

    let restored = TestCluster::start_configured(3, "", "", |new| {
        for (name, contents, reason) in &broken {
            let path = backup_dir.path().join(name);
            std::fs::write(&path, contents).expect("write broken backup");
            let output = restore(&new.nodes[0].config_path, &path);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success() && reason.iter().any(|reason| stderr.contains(reason)),
                "{name}: {stderr}"
            );
            assert!(
                !new.nodes[0].data_dir.exists(),
                "{name} left a data directory"
            );
        }
        for node in &new.nodes {
            let output = restore(&node.config_path, &backup);
            assert!(
                output.status.success(),
                "beacond restore failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
    let new_leader = restored.wait_for_leader().await;
    assert_ne!(
        cluster_id(&restored, new_leader).await,
        cluster_id(&cluster, leader).await,
        "a restored cluster is a new cluster"
    );
    for index in 0..3 {
        assert!(
            everything(&restored, index, 0).await == expected,
            "restored node{} holds other data than the backup's revision {backup_revision}",
            index + 1
        );
        assert_eq!(
            hash_kv(&restored, index, backup_revision).await,
            expected_hash,
            "restored node{} HashKV",
            index + 1
        );
    }
    let leases = restored
        .lease(new_leader)
        .await
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases;
    assert_eq!(
        leases.iter().map(|lease| lease.id).collect::<Vec<_>>(),
        vec![lease]
    );
    // The new cluster takes writes, continuing the backup's revisions.
    let next = restored.put(new_leader, "restored", "yes").await;
    assert!(next > backup_revision);
}
