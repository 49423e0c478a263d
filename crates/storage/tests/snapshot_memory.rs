//! A Raft snapshot of a state much larger than the memory its build and install may use:
//! built, sent in chunks, installed, and the receiver holds the same state. The heap is measured
//! by the global allocator of this test binary (one test in the binary, so nothing else runs
//! meanwhile); RocksDB's own memtables and caches are C++ allocations and not counted, so the
//! bound is about Beacon's code never holding the state (or a large part of it) in memory.

mod snapshot_support;

use std::time::Instant;

use beacon_storage::open;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use peak_alloc::PeakAlloc;
use snapshot_support::{assert_same_state, load, transfer, IDENTITY};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const VALUE_BYTES: usize = 16 * 1024;
const CHUNK_BYTES: usize = 1 << 20;
/// What the build and the install may add to the heap: I/O buffers (1 MiB each), a 4 MiB
/// install batch, one chunk, the rebuilt key index of 5,000 keys.
const HEAP_BOUND_BYTES: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_the_memory_bound_is_built_sent_in_chunks_and_installed() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let mut source = open(source_dir.path(), IDENTITY).expect("open");
    // 80 entries × 50 puts × 16 KiB ≈ 64 MiB of values; keys repeat, so history is kept.
    load(&mut source.state_machine, 80, 50, VALUE_BYTES).await;

    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let started = Instant::now();
    let mut builder = source.state_machine.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.expect("build");
    let build_time = started.elapsed();
    let build_peak = HEAP.peak_usage().saturating_sub(baseline);
    let size = std::fs::metadata(snapshot.snapshot.path())
        .expect("snapshot file")
        .len() as usize;
    assert!(
        size > 40 * CHUNK_BYTES,
        "the snapshot ({size} bytes) must span many chunks"
    );

    let target_dir = tempfile::tempdir().expect("temp dir");
    let mut target = open(target_dir.path(), IDENTITY).expect("open");
    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let started = Instant::now();
    let chunks = transfer(snapshot, &mut target.state_machine, CHUNK_BYTES).await;
    let install_time = started.elapsed();
    let install_peak = HEAP.peak_usage().saturating_sub(baseline);

    eprintln!(
        "snapshot of {size} bytes: build {build_time:?} (heap peak +{build_peak} bytes), \
         {chunks} chunks sent and installed {install_time:?} (heap peak +{install_peak} bytes)"
    );
    assert!(chunks > 40);
    assert!(
        build_peak < HEAP_BOUND_BYTES,
        "build used {build_peak} bytes of heap for a {size}-byte snapshot"
    );
    assert!(
        install_peak < HEAP_BOUND_BYTES,
        "install used {install_peak} bytes of heap for a {size}-byte snapshot"
    );

    let expected = source.state_machine.reader();
    let actual = target.state_machine.reader();
    assert_same_state(&expected, &actual);
    assert_eq!(
        actual.hash().expect("hash"),
        expected.hash().expect("hash"),
        "Hash covers leases with their generations too"
    );
    assert_eq!(actual.last_applied(), expected.last_applied());
    // Every handle on the database goes, so it can be opened again.
    drop((actual, target));
    let reopened = open(target_dir.path(), IDENTITY).expect("reopen");
    assert_same_state(&expected, &reopened.state_machine.reader());
}
