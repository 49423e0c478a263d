//! Snapshots and backups at the storage level: a Raft snapshot's round trip keeps the whole
//! replicated state; a backup restores into a new member's directory with a new identity; a
//! corrupted, truncated or foreign backup is refused and leaves no directory behind.

mod snapshot_support;

use std::io::Read;

use beacon_storage::{open, restore, Identity, StorageError};
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use snapshot_support::{assert_same_state, load, transfer, IDENTITY};

const NEW_CLUSTER: Identity = Identity {
    cluster_id: 0x5eed,
    member_id: 3,
};

#[tokio::test]
async fn a_snapshot_round_trip_keeps_the_state_and_replaces_an_older_one() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let mut source = open(source_dir.path(), IDENTITY).expect("open");
    load(&mut source.state_machine, 20, 20, 100).await;
    let mut builder = source.state_machine.get_snapshot_builder().await;
    let first = builder.build_snapshot().await.expect("build");

    // The target already has state of its own: the install replaces all of it.
    let target_dir = tempfile::tempdir().expect("temp dir");
    let mut target = open(target_dir.path(), IDENTITY).expect("open");
    load(&mut target.state_machine, 3, 5, 10).await;
    transfer(first, &mut target.state_machine, 1000).await;
    assert_same_state(
        &source.state_machine.reader(),
        &target.state_machine.reader(),
    );

    // A second, newer snapshot replaces the first: one snapshot file is kept.
    load(&mut source.state_machine, 5, 20, 100).await;
    let second = builder.build_snapshot().await.expect("build");
    transfer(second, &mut target.state_machine, 4096).await;
    assert_same_state(
        &source.state_machine.reader(),
        &target.state_machine.reader(),
    );
    let current = target
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    assert_eq!(
        Some(current.meta.last_log_id),
        Some(source.state_machine.reader().last_applied())
    );
    let files: Vec<_> = std::fs::read_dir(target_dir.path().join("snapshots"))
        .expect("snapshot dir")
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

fn write_backup(reader: &beacon_storage::KvReader, path: &std::path::Path) -> u64 {
    let (mut file, summary) = reader.backup().expect("backup");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read backup");
    assert_eq!(bytes.len() as u64, summary.bytes);
    std::fs::write(path, &bytes).expect("write backup");
    summary.bytes
}

#[tokio::test]
async fn a_backup_restores_into_a_new_member_with_the_same_data() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let mut source = open(source_dir.path(), IDENTITY).expect("open");
    load(&mut source.state_machine, 20, 20, 100).await;
    let reader = source.state_machine.reader();
    let work = tempfile::tempdir().expect("temp dir");
    let backup = work.path().join("backup.db");
    write_backup(&reader, &backup);
    assert!(
        std::fs::read_dir(source_dir.path().join("snapshots"))
            .expect("dir")
            .next()
            .is_none(),
        "a backup leaves no file behind in the member's directory"
    );

    let data_dir = work.path().join("restored");
    let summary = restore(&backup, &data_dir, NEW_CLUSTER).expect("restore");
    assert_eq!(summary.header.current_revision, reader.current_revision());
    assert_eq!(summary.header.cluster_id, IDENTITY.cluster_id);
    assert!(
        matches!(
            open(&data_dir, IDENTITY),
            Err(StorageError::IdentityMismatch { .. })
        ),
        "the restored directory belongs to the new cluster"
    );
    let mut restored = open(&data_dir, NEW_CLUSTER).expect("open restored");
    assert!(!restored.fresh);
    let restored_reader = restored.state_machine.reader();
    assert_same_state(&reader, &restored_reader);
    let (applied, membership) = restored
        .state_machine
        .applied_state()
        .await
        .expect("applied state");
    assert_eq!(
        applied, None,
        "the Raft state is pristine: the new cluster initializes it"
    );
    assert_eq!(membership, Default::default());
    assert!(
        restored_reader
            .leases()
            .iter()
            .all(|(_, record)| record.generation == 0),
        "lease generations restart in the new cluster's log"
    );
    // Restoring into a directory that holds anything is refused.
    drop((restored_reader, restored));
    assert!(matches!(
        restore(&backup, &data_dir, NEW_CLUSTER),
        Err(StorageError::NotEmpty(_))
    ));
}

#[tokio::test]
async fn a_corrupted_truncated_or_foreign_backup_is_refused_without_a_trace() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let mut source = open(source_dir.path(), IDENTITY).expect("open");
    load(&mut source.state_machine, 5, 10, 100).await;
    let work = tempfile::tempdir().expect("temp dir");
    let backup = work.path().join("backup.db");
    let size = write_backup(&source.state_machine.reader(), &backup);
    let bytes = std::fs::read(&backup).expect("read");

    let mut flipped = bytes.clone();
    flipped[size as usize / 2] ^= 1;
    let truncated = bytes[..bytes.len() - 1].to_vec();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("flipped", flipped, "SHA-256 mismatch"),
        ("truncated", truncated, "truncated"),
        (
            "foreign",
            b"not a backup at all".to_vec(),
            "not a Beacon snapshot",
        ),
    ];
    for (name, contents, expected) in cases {
        let path = work.path().join(name);
        std::fs::write(&path, contents).expect("write");
        let data_dir = work.path().join(format!("{name}-data"));
        let error = restore(&path, &data_dir, NEW_CLUSTER).expect_err(name);
        assert!(
            matches!(error, StorageError::InvalidSnapshot(_))
                && error.to_string().contains(expected),
            "{name}: {error}"
        );
        assert!(!data_dir.exists(), "{name}: a data directory was left");
    }
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .expect("dir")
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| name.to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
