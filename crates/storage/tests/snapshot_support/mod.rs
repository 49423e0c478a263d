//! Helpers shared by the snapshot tests: a loaded state machine, a chunked transfer that does
//! what openraft's chunked transport does, and state comparisons.

#![allow(dead_code)]

use std::io::SeekFrom;

use beacon_mvcc::{pb, WriteRequest};
use beacon_storage::{Command, Identity, KvReader, StateMachineStore, TypeConfig, WriteBatch};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

pub const IDENTITY: Identity = Identity {
    cluster_id: 0xbeac0,
    member_id: 1,
};

pub fn entry(index: u64, writes: Vec<WriteRequest>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Writes(WriteBatch::from_writes(writes))),
    }
}

pub fn put(key: &str, value: Vec<u8>, lease: i64) -> WriteRequest {
    WriteRequest::Put(pb::PutRequest {
        key: key.into(),
        value,
        lease,
        ..Default::default()
    })
}

/// Applies `entries` entries of `per_entry` puts of `value_bytes` each (keys reused, so there is
/// history), two leases with keys attached, a delete and a compaction. Returns the next index.
pub async fn load(
    state_machine: &mut StateMachineStore,
    entries: u64,
    per_entry: usize,
    value_bytes: usize,
) -> u64 {
    load_keys(state_machine, entries, per_entry, value_bytes, 5000).await
}

/// [`load`] over `keys` distinct keys.
pub async fn load_keys(
    state_machine: &mut StateMachineStore,
    entries: u64,
    per_entry: usize,
    value_bytes: usize,
    keys: usize,
) -> u64 {
    let mut index = 1;
    state_machine
        .apply(vec![entry(
            index,
            vec![
                WriteRequest::LeaseGrant(pb::LeaseGrantRequest { ttl: 30, id: 7 }),
                WriteRequest::LeaseGrant(pb::LeaseGrantRequest { ttl: 60, id: 8 }),
            ],
        )])
        .await
        .expect("grant");
    for batch in 0..entries {
        index += 1;
        let writes = (0..per_entry)
            .map(|n| {
                let key = format!("key/{:08}", (batch as usize * per_entry + n) % keys);
                let lease = match n % 10 {
                    0 => 7,
                    1 => 8,
                    _ => 0,
                };
                let value = vec![b'a' + (n % 26) as u8; value_bytes];
                put(&key, value, lease)
            })
            .collect();
        // One entry per call, as openraft applies a few at a time: the overlay stays small.
        state_machine
            .apply(vec![entry(index, writes)])
            .await
            .expect("apply");
    }
    index += 1;
    let half = state_machine.reader().current_revision() / 2;
    state_machine
        .apply(vec![entry(
            index,
            vec![
                WriteRequest::DeleteRange(pb::DeleteRangeRequest {
                    key: b"key/00000010".to_vec(),
                    range_end: b"key/00000020".to_vec(),
                    ..Default::default()
                }),
                WriteRequest::Compact(pb::CompactionRequest {
                    revision: half,
                    physical: true,
                }),
            ],
        )])
        .await
        .expect("delete and compact");
    index + 1
}

/// Sends `snapshot` to `target` the way openraft's chunked transport does (seek, read a chunk,
/// write it at its offset into the receiving file), then installs it. Returns the chunk count.
pub async fn transfer(
    snapshot: Snapshot<TypeConfig>,
    target: &mut StateMachineStore,
    chunk_bytes: usize,
) -> usize {
    let mut source = snapshot.snapshot;
    let end = source.seek(SeekFrom::End(0)).await.expect("seek end");
    let mut receiving = target
        .begin_receiving_snapshot()
        .await
        .expect("begin receiving");
    let mut offset = 0u64;
    let mut chunks = 0;
    while offset < end {
        source
            .seek(SeekFrom::Start(offset))
            .await
            .expect("seek chunk");
        let mut chunk = Vec::with_capacity(chunk_bytes);
        while chunk.len() < chunk_bytes {
            if source.read_buf(&mut chunk).await.expect("read chunk") == 0 {
                break;
            }
        }
        receiving
            .seek(SeekFrom::Start(offset))
            .await
            .expect("seek receive");
        receiving.write_all(&chunk).await.expect("write chunk");
        offset += chunk.len() as u64;
        chunks += 1;
    }
    receiving.shutdown().await.expect("shutdown");
    target
        .install_snapshot(&snapshot.meta, receiving)
        .await
        .expect("install");
    chunks
}

/// Every key live at `revision` (0: now), whole records.
pub fn dump(reader: &KvReader, revision: i64) -> Vec<beacon_proto::mvccpb::KeyValue> {
    let all = pb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    };
    reader.range(&all).expect("range").kvs
}

/// Asserts that two readers hold the same replicated state.
pub fn assert_same_state(expected: &KvReader, actual: &KvReader) {
    assert_eq!(actual.current_revision(), expected.current_revision());
    assert_eq!(actual.compact_revision(), expected.compact_revision());
    assert_eq!(
        actual.hash_kv(0).expect("hash_kv"),
        expected.hash_kv(0).expect("hash_kv")
    );
    let compacted = expected.compact_revision();
    assert_eq!(
        actual.hash_kv(compacted).expect("hash_kv at compaction"),
        expected.hash_kv(compacted).expect("hash_kv at compaction")
    );
    assert!(dump(actual, 0) == dump(expected, 0), "live keys differ");
    assert!(
        dump(actual, compacted) == dump(expected, compacted),
        "keys at the compaction revision differ"
    );
    let leases = |reader: &KvReader| {
        reader
            .leases()
            .into_iter()
            .map(|(id, record)| (id, record.ttl, reader.lease(id).map(|(_, keys)| keys)))
            .collect::<Vec<_>>()
    };
    assert_eq!(leases(actual), leases(expected));
}
