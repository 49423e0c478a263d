//! `beacon snapshot save` and `beacon endpoint hashkv` against a real 3-member Beacon cluster
//! (skipped when beacond is not built; see `beacon_client::testing::start_beacon_cluster`).

mod common;

use beacon_client::testing::start_beacon_cluster;
use sha2::{Digest, Sha256};

use common::{fails, json, ok};

#[test]
fn snapshot_save_writes_a_checked_backup_and_hashkv_agrees_across_members() {
    let Some(members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints: Vec<&str> = members.iter().map(|member| member.endpoint()).collect();
    let all = endpoints.join(",");
    for index in 0..100 {
        ok(
            &all,
            &["put", &format!("app/{index:03}"), &"x".repeat(index)],
        );
    }
    let directory = tempfile::tempdir().expect("temp dir");
    let file = directory.path().join("backup.db");
    let file_arg = file.to_str().expect("utf-8 path");
    let saved = json(endpoints[1], &["snapshot", "save", file_arg]);
    let bytes = std::fs::read(&file).expect("backup written");
    assert_eq!(saved["bytes"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(saved["revision"].as_i64(), Some(101));
    assert_eq!(bytes.len() % 512, 32, "etcd's layout: data, then a SHA-256");
    let (data, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(data).as_slice(), trailer);
    assert!(
        !directory.path().join("backup.db.part").exists(),
        "no partial file left"
    );

    // Every member at revision 101 (a linearizable read on each first), the same hash.
    for endpoint in &endpoints {
        ok(endpoint, &["get", "app/000"]);
    }
    let hashes = json(&all, &["endpoint", "hashkv", "--revision", "101"]);
    let rows = hashes.as_array().expect("one row per endpoint");
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["hash_revision"], 101, "{row}");
        assert_eq!(row["compact_revision"], -1, "{row}");
        assert_eq!(row["hash"], rows[0]["hash"], "{hashes}");
    }
    let table = ok(&all, &["endpoint", "hashkv"]);
    assert!(table.starts_with("ENDPOINT"), "{table}");

    // An unreachable member: a clear failure and no file.
    let missing = directory.path().join("missing.db");
    let stderr = fails(
        "127.0.0.1:1",
        &["snapshot", "save", missing.to_str().expect("utf-8 path")],
    );
    assert!(!stderr.is_empty());
    assert!(!missing.exists());
    assert!(!directory.path().join("missing.db.part").exists());
}
