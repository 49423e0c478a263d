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
use snapshot_support::{assert_same_state, load_keys, transfer, IDENTITY};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const CHUNK_BYTES: usize = 1 << 20;
/// What the build and the install may add to the heap: I/O buffers (1 MiB each), one chunk,
/// one record, the rebuilt key index of 5,000 keys.
const HEAP_BOUND_BYTES: usize = 16 << 20;

/// `name` from the environment, else `default`: bigger runs for measurements, e.g.
/// `SNAPSHOT_ENTRIES=500 SNAPSHOT_KEYS=200000 SNAPSHOT_VALUE_BYTES=1024 cargo nextest run -p
/// beacon-storage --test snapshot_memory --no-capture` (the heap bound then grows with the key
/// index, which is in memory by design: keys and revisions, never values).
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The peak resident memory of this process so far (RocksDB included), from /proc.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_the_memory_bound_is_built_sent_in_chunks_and_installed() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let mut source = open(source_dir.path(), IDENTITY).expect("open");
    // 80 entries × 50 puts × 16 KiB ≈ 64 MiB of values; keys repeat, so history is kept.
    let entries = setting("SNAPSHOT_ENTRIES", 80) as u64;
    let keys = setting("SNAPSHOT_KEYS", 5000);
    let value_bytes = setting("SNAPSHOT_VALUE_BYTES", 16 * 1024);
    let per_entry = setting("SNAPSHOT_PER_ENTRY", 50);
    // The key index is in memory by design: about 220 bytes a key (measured with 10^6 keys).
    let heap_bound = HEAP_BOUND_BYTES + keys * 256;
    load_keys(
        &mut source.state_machine,
        entries,
        per_entry,
        value_bytes,
        keys,
    )
    .await;
    let loaded_rss = peak_rss_bytes();

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
        "snapshot of {size} bytes ({keys} keys, {} puts of {value_bytes} bytes): build \
         {build_time:?} (heap peak +{build_peak} bytes), {chunks} chunks sent and installed \
         {install_time:?} (heap peak +{install_peak} bytes); process peak RSS {} bytes after \
         loading, {} bytes at the end",
        entries as usize * per_entry,
        loaded_rss,
        peak_rss_bytes()
    );
    assert!(chunks > 40);
    assert!(
        build_peak < heap_bound,
        "build used {build_peak} bytes of heap for a {size}-byte snapshot"
    );
    assert!(
        install_peak < heap_bound,
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
