//! The storage crate against openraft's own storage conformance suite, plus Beacon's
//! persistence guarantees: state survives reopening, identity and format are enforced.

use beacon_mvcc::{pb, WriteRequest};
use beacon_storage::{
    open, Command, CommandResponse, Identity, LogStore, StateMachineStore, StorageError,
    TypeConfig, WriteBatch,
};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const IDENTITY: Identity = Identity {
    cluster_id: 0xbeac0,
    member_id: 1,
};

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = open(dir.path(), IDENTITY).expect("open store");
        Ok((dir, opened.log_store, opened.state_machine))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(TempStoreBuilder).expect("openraft storage suite");
}

fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn entry(index: u64, writes: Vec<WriteRequest>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Writes(WriteBatch::from_writes(writes))),
    }
}

#[tokio::test]
async fn applied_state_and_records_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut opened = open(dir.path(), IDENTITY).expect("open");
        let responses = opened
            .state_machine
            .apply(vec![
                entry(1, vec![put("a", "1"), put("b", "2")]),
                entry(2, vec![put("a", "3")]),
            ])
            .await
            .expect("apply");
        assert_eq!(responses.len(), 2);
        assert!(matches!(&responses[0], CommandResponse::Writes(results) if results.len() == 2));
    }
    let mut reopened = open(dir.path(), IDENTITY).expect("reopen");
    assert!(!reopened.fresh);
    let reader = reopened.state_machine.reader();
    assert_eq!(reader.current_revision(), 4);
    assert_eq!(reader.last_applied().map(|id| id.index), Some(2));
    let (applied, _) = reopened
        .state_machine
        .applied_state()
        .await
        .expect("applied state");
    assert_eq!(applied.map(|id| id.index), Some(2));
    let all = pb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let response = reader.range(&all).expect("range");
    let pairs: Vec<(Vec<u8>, Vec<u8>, i64)> = response
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (b"a".to_vec(), b"3".to_vec(), 4),
            (b"b".to_vec(), b"2".to_vec(), 3)
        ]
    );
    // The past is still there: revision 2 had a=1.
    let past = pb::RangeRequest {
        key: b"a".to_vec(),
        revision: 2,
        ..Default::default()
    };
    assert_eq!(reader.range(&past).expect("past").kvs[0].value, b"1");
}

#[test]
fn a_directory_of_another_cluster_or_member_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(open(dir.path(), IDENTITY).expect("open"));
    let other_cluster = Identity {
        cluster_id: 7,
        ..IDENTITY
    };
    assert!(matches!(
        open(dir.path(), other_cluster),
        Err(StorageError::IdentityMismatch { .. })
    ));
    let other_member = Identity {
        member_id: 2,
        ..IDENTITY
    };
    assert!(matches!(
        open(dir.path(), other_member),
        Err(StorageError::IdentityMismatch { .. })
    ));
    assert!(open(dir.path(), IDENTITY).is_ok());
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<beacon_storage::AppliedChanges>>);

impl beacon_storage::ApplyListener for Recorder {
    fn applied(&self, changes: beacon_storage::AppliedChanges) {
        self.0.lock().expect("lock").push(changes);
    }
}

#[tokio::test]
async fn the_listener_hears_every_event_and_history_replays_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opened = open(dir.path(), IDENTITY).expect("open");
    let recorder = std::sync::Arc::new(Recorder::default());
    opened.state_machine.add_listener(recorder.clone());
    let delete = WriteRequest::DeleteRange(pb::DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    });
    opened
        .state_machine
        .apply(vec![
            entry(1, vec![put("a", "1"), put("b", "2")]),
            entry(2, vec![put("a", "3"), delete]),
        ])
        .await
        .expect("apply");
    let heard: Vec<_> = recorder
        .0
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|c| c.events.clone())
        .collect();
    let revisions: Vec<i64> = heard
        .iter()
        .map(|e| e.kv.as_ref().expect("kv").mod_revision)
        .collect();
    assert_eq!(revisions, vec![2, 3, 4, 5]);
    let reader = opened.state_machine.reader();
    assert_eq!(reader.history(2, 5, 100).expect("history"), heard);
    // A limit never splits a revision, and continuing from the next revision gives the rest.
    let first = reader.history(2, 5, 1).expect("first chunk");
    assert_eq!(first, heard[..1]);
    assert_eq!(reader.history(3, 5, 100).expect("rest"), heard[1..]);
}

fn put_with_lease(key: &str, lease: i64) -> WriteRequest {
    WriteRequest::Put(pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
}

fn grant(id: i64, ttl: i64) -> WriteRequest {
    WriteRequest::LeaseGrant(pb::LeaseGrantRequest { ttl, id })
}

#[tokio::test]
async fn leases_and_their_keys_survive_reopening_and_travel_in_snapshots() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = {
        let mut opened = open(dir.path(), IDENTITY).expect("open");
        opened
            .state_machine
            .apply(vec![
                entry(1, vec![grant(7, 30), grant(8, 60)]),
                entry(
                    2,
                    vec![
                        put_with_lease("a", 7),
                        put_with_lease("b", 7),
                        put_with_lease("c", 8),
                    ],
                ),
                entry(
                    3,
                    vec![WriteRequest::LeaseRenew(pb::LeaseKeepAliveRequest {
                        id: 8,
                    })],
                ),
                entry(
                    4,
                    vec![WriteRequest::LeaseRevoke(pb::LeaseRevokeRequest { id: 7 })],
                ),
            ])
            .await
            .expect("apply");
        let mut builder = opened.state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot")
    };
    let check = |reader: beacon_storage::KvReader| {
        let leases = reader.leases();
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(leases[0].0, 8);
        assert_eq!(leases[0].1.ttl, 60);
        assert_eq!(leases[0].1.generation, 3, "the renewal's log index");
        assert_eq!(
            reader.lease(8).map(|(_, keys)| keys),
            Some(vec![b"c".to_vec()])
        );
        assert!(reader.lease(7).is_none());
    };
    let reopened = open(dir.path(), IDENTITY).expect("reopen");
    check(reopened.state_machine.reader());

    let other = tempfile::tempdir().expect("temp dir");
    let mut installed = open(other.path(), IDENTITY).expect("open");
    installed
        .state_machine
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    check(installed.state_machine.reader());
    drop(installed);
    check(
        open(other.path(), IDENTITY)
            .expect("reopen")
            .state_machine
            .reader(),
    );
}
