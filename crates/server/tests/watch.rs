//! Watch guarantees on real 3-member clusters: ordered, unique, atomic per revision, reliable,
//! resumable (also on another member after a kill), bookmarkable; filters, prev_kv, cancel,
//! progress, compaction, slow consumers, fragments and `hasleader`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RequestOp,
    TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchResponse,
};
use beacon_proto::mvccpb::Event;
use common::{TestCluster, DEADLINE};

use common::WatchSession as Session;

/// Test-local helpers on a watch session.
trait CollectEvents {
    async fn events_until(&mut self, watch_id: i64, last_revision: i64) -> Vec<Event>;
}

impl CollectEvents for Session {
    /// Collects events of `watch_id` until one at `last_revision` or later arrived.
    async fn events_until(&mut self, watch_id: i64, last_revision: i64) -> Vec<Event> {
        let mut events = Vec::new();
        while events.last().map_or(i64::MIN, revision) < last_revision {
            let response = self.next().await;
            assert_eq!(response.watch_id, watch_id, "{response:?}");
            assert!(!response.canceled, "{response:?}");
            check_response(&response);
            events.extend(response.events);
        }
        events
    }
}

fn revision(event: &Event) -> i64 {
    event.kv.as_ref().expect("kv").mod_revision
}

fn key(event: &Event) -> String {
    String::from_utf8_lossy(&event.kv.as_ref().expect("kv").key).into_owned()
}

/// A response never claims a header revision below its own events.
fn check_response(response: &WatchResponse) {
    let header = response.header.as_ref().expect("header").revision;
    for event in &response.events {
        assert!(revision(event) <= header, "event past header: {response:?}");
    }
}

/// Ordered and unique: revisions strictly increase (events of one revision are one txn).
fn assert_ordered_unique(events: &[Event]) {
    for pair in events.windows(2) {
        let (a, b) = (revision(&pair[0]), revision(&pair[1]));
        assert!(
            a < b || (a == b && key(&pair[0]) != key(&pair[1])),
            "out of order or duplicate: {a} {} then {b} {}",
            key(&pair[0]),
            key(&pair[1])
        );
    }
}

fn prefix(key: &str) -> WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    WatchCreateRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

async fn put_value(cluster: &TestCluster, index: usize, key: String, value: Vec<u8>) -> i64 {
    let response = cluster
        .kv(index)
        .await
        .put(PutRequest {
            key: key.into(),
            value,
            ..Default::default()
        })
        .await
        .expect("put");
    response.into_inner().header.expect("header").revision
}

async fn leader_and_follower(cluster: &TestCluster) -> (usize, usize) {
    let leader = cluster.wait_for_leader().await;
    (leader, (leader + 1) % cluster.nodes.len())
}

#[tokio::test]
async fn concurrent_writers_are_seen_ordered_unique_and_without_gaps_on_a_follower() {
    let cluster = TestCluster::start(3);
    let (_, follower) = leader_and_follower(&cluster).await;
    let mut session = Session::open(&cluster, follower).await;
    let id = session.create(prefix("w/")).await;

    let mut writers = Vec::new();
    for writer in 0..4 {
        let node = writer % 3;
        let cluster_ref = &cluster;
        writers.push(async move {
            let mut revisions = Vec::new();
            for i in 0..40 {
                revisions.push(cluster_ref.put(node, &format!("w/{writer}/{i}"), "v").await);
            }
            revisions
        });
    }
    let mut written: Vec<i64> = futures::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    written.sort_unstable();
    let last = *written.last().expect("writes");
    let events = session.events_until(id, last).await;
    assert_ordered_unique(&events);
    let seen: Vec<i64> = events.iter().map(revision).collect();
    assert_eq!(
        seen, written,
        "the watch saw exactly the acknowledged writes"
    );
}

#[tokio::test]
async fn txn_is_one_response_and_filters_and_prev_kv_apply() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let written = cluster.put(leader, "t/a", "old").await;
    // From the next revision explicitly: the follower may not have applied `written` yet.
    let after = |request: WatchCreateRequest| WatchCreateRequest {
        start_revision: written + 1,
        ..request
    };
    let mut session = Session::open(&cluster, follower).await;
    let all = session.create(after(prefix("t/"))).await;
    let no_put = session
        .create(after(WatchCreateRequest {
            filters: vec![0],
            prev_kv: true,
            ..prefix("t/")
        }))
        .await;
    let no_delete = session
        .create(after(WatchCreateRequest {
            filters: vec![1],
            ..prefix("t/")
        }))
        .await;

    let put = |key: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: b"new".to_vec(),
            ..Default::default()
        })),
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"t/a".to_vec(),
            target: compare::CompareTarget::Version as i32,
            result: compare::CompareResult::Greater as i32,
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![
            put("t/b"),
            put("t/c"),
            RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b"t/a".to_vec(),
                        ..Default::default()
                    },
                )),
            },
        ],
        failure: vec![],
    };
    let response = cluster
        .kv(leader)
        .await
        .txn(txn)
        .await
        .expect("txn")
        .into_inner();
    assert!(response.succeeded);
    let txn_revision = response.header.expect("header").revision;

    let mut by_watch = BTreeMap::new();
    while by_watch.len() < 3 {
        let response = session.next().await;
        check_response(&response);
        assert!(
            by_watch
                .insert(response.watch_id, response.events)
                .is_none(),
            "one response per watch for one txn"
        );
    }
    let everything = &by_watch[&all];
    assert_eq!(everything.len(), 3, "all txn events in one response");
    assert!(everything.iter().all(|e| revision(e) == txn_revision));
    assert!(everything.iter().all(|e| e.prev_kv.is_none()));
    let delete = &by_watch[&no_put];
    assert_eq!(delete.len(), 1);
    assert_eq!(delete[0].r#type, 1);
    assert_eq!(key(&delete[0]), "t/a");
    assert_eq!(
        revision(&delete[0]),
        txn_revision,
        "delete carries its revision"
    );
    assert_eq!(
        delete[0].prev_kv.as_ref().expect("prev_kv asked").value,
        b"old"
    );
    let puts = &by_watch[&no_delete];
    assert_eq!(puts.len(), 2);
    assert!(puts.iter().all(|e| e.r#type == 0));
}

#[tokio::test]
async fn a_watch_from_the_past_catches_up_while_writes_continue() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let first = cluster.put(leader, "p/0", "v").await;
    for i in 1..300 {
        cluster.put(leader, &format!("p/{i}"), "v").await;
    }
    let mut session = Session::open(&cluster, follower).await;
    let id = session
        .create(WatchCreateRequest {
            start_revision: first,
            ..prefix("p/")
        })
        .await;
    let writer = async {
        let mut last = 0;
        for i in 300..500 {
            last = cluster.put(leader, &format!("p/{i}"), "v").await;
        }
        last
    };
    let (last, events) = tokio::join!(writer, async {
        // Read slowly at first so catch-up overlaps the writes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        session.events_until(id, first + 499).await
    });
    assert_eq!(last, first + 499);
    assert_ordered_unique(&events);
    let seen: Vec<i64> = events.iter().map(revision).collect();
    assert_eq!(seen, (first..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_watch_at_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let mut last = 0;
    for i in 0..5 {
        last = cluster.put(leader, "c/k", &i.to_string()).await;
    }
    cluster
        .kv(leader)
        .await
        .compact(CompactionRequest {
            revision: last - 1,
            physical: true,
        })
        .await
        .expect("compact");
    let mut session = Session::open(&cluster, follower).await;
    // The follower applies the compaction shortly after the leader answers.
    let deadline = Instant::now() + DEADLINE;
    loop {
        session
            .send(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"c/k".to_vec(),
                start_revision: last - 3,
                ..Default::default()
            }))
            .await;
        let created = session.next().await;
        assert!(created.created && !created.canceled, "{created:?}");
        let response = session.next().await;
        assert_eq!(response.watch_id, created.watch_id);
        if response.canceled {
            assert_eq!(response.compact_revision, last - 1, "{response:?}");
            assert!(response.events.is_empty());
            break;
        }
        // Not compacted there yet: the watch replayed history; drop it and retry.
        assert!(Instant::now() < deadline, "never compacted on the follower");
        session
            .send(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: created.watch_id,
            }))
            .await;
        while !session.next().await.canceled {}
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An uncompacted start still works.
    let id = session
        .create(WatchCreateRequest {
            key: b"c/k".to_vec(),
            start_revision: last - 1,
            ..Default::default()
        })
        .await;
    let events = session.events_until(id, last).await;
    assert_eq!(
        events.iter().map(revision).collect::<Vec<_>>(),
        vec![last - 1, last]
    );
}

#[tokio::test]
async fn a_watch_on_a_follower_survives_a_leader_change_without_gaps() {
    let mut cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let mut session = Session::open(&cluster, follower).await;
    let id = session.create(prefix("l/")).await;
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(cluster.put(follower, &format!("l/{i}"), "v").await);
    }
    cluster.kill(leader);
    // Let the survivors agree on a new leader first: a write forwarded over a connection that
    // breaks mid-request when its leader dies has an unknown outcome, and is rightly answered
    // "request timed out" (as etcd does). This test is about the watch, not that race.
    cluster.wait_for_leader().await;
    for i in 20..40 {
        written.push(cluster.put(follower, &format!("l/{i}"), "v").await);
    }
    let events = session
        .events_until(id, *written.last().expect("writes"))
        .await;
    assert_ordered_unique(&events);
    assert_eq!(events.iter().map(revision).collect::<Vec<_>>(), written);
}

/// Regression (found by the Jepsen watch checker; etcd #18089): compacting at the revision of a
/// delete must not hide that delete from a watch starting at the compaction revision, also after
/// the member restarts (the kept tombstone is rebuilt from storage).
#[tokio::test]
async fn a_delete_at_the_compaction_revision_still_reaches_a_watch_from_there() {
    let mut cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    cluster.put(leader, "gone", "v").await;
    let mut kv = cluster.kv(leader).await;
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            key: b"gone".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner()
        .header
        .expect("header")
        .revision;
    cluster.put(leader, "other", "x").await;
    kv.compact(CompactionRequest {
        revision: deleted,
        physical: false,
    })
    .await
    .expect("compact");
    for restart in [false, true] {
        if restart {
            cluster.stop(follower);
            cluster.start_node(follower);
            cluster.wait_for_leader().await;
        }
        let mut session = Session::open(&cluster, follower).await;
        let id = session
            .create(WatchCreateRequest {
                key: b"gone".to_vec(),
                start_revision: deleted,
                ..Default::default()
            })
            .await;
        let events = session.events_until(id, deleted).await;
        assert_eq!(events.len(), 1, "restart {restart}: {events:?}");
        assert_eq!(events[0].r#type, 1, "a DELETE event");
        assert_eq!(revision(&events[0]), deleted);
    }
}

#[tokio::test]
async fn a_watch_resumes_on_another_member_after_its_member_is_killed() {
    let mut cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let other = 3 - leader - follower;
    let mut session = Session::open(&cluster, follower).await;
    let id = session.create(prefix("r/")).await;
    let mut written = Vec::new();
    for i in 0..30 {
        written.push(cluster.put(leader, &format!("r/{i}"), "v").await);
    }
    let mut seen = session.events_until(id, written[14]).await;
    cluster.kill(follower);
    drop(session);
    for i in 30..60 {
        written.push(cluster.put(leader, &format!("r/{i}"), "v").await);
    }
    let mut resumed = Session::open(&cluster, other).await;
    let last_seen = revision(seen.last().expect("events"));
    let id = resumed
        .create(WatchCreateRequest {
            start_revision: last_seen + 1,
            ..prefix("r/")
        })
        .await;
    seen.extend(
        resumed
            .events_until(id, *written.last().expect("writes"))
            .await,
    );
    assert_ordered_unique(&seen);
    assert_eq!(seen.iter().map(revision).collect::<Vec<_>>(), written);
}

#[tokio::test]
async fn a_slow_consumer_neither_delays_a_fast_one_nor_loses_events() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    // Separate connections: the slow stream's full HTTP/2 windows must not hold the fast one.
    let mut slow = Session::open(&cluster, follower).await;
    let mut fast = Session::open(&cluster, follower).await;
    let slow_id = slow.create(prefix("s/")).await;
    let fast_id = fast.create(prefix("s/")).await;

    // Enough bytes to fill the slow stream's transport windows and its inbox (4 MiB; the client buffers a few MiB too), so
    // it lags and must catch up from storage.
    let value = vec![b'x'; 4096];
    let writes = 4000;
    let mut written = Vec::with_capacity(writes);
    let started = Instant::now();
    for chunk in (0..writes).collect::<Vec<_>>().chunks(50) {
        let puts = chunk
            .iter()
            .map(|i| put_value(&cluster, leader, format!("s/{i}"), value.clone()));
        written.extend(futures::future::join_all(puts).await);
    }
    written.sort_unstable();
    let last = *written.last().expect("writes");
    // The fast watcher keeps up while the slow one reads nothing.
    let fast_events = fast.events_until(fast_id, last).await;
    assert_eq!(
        fast_events.iter().map(revision).collect::<Vec<_>>(),
        written
    );
    println!("fast consumer complete after {:?}", started.elapsed());

    let slow_events = slow.events_until(slow_id, last).await;
    assert_ordered_unique(&slow_events);
    assert_eq!(
        slow_events.iter().map(revision).collect::<Vec<_>>(),
        written,
        "the slow consumer got every event exactly once"
    );
}

#[tokio::test]
async fn cancel_progress_and_duplicate_ids_behave_as_etcd() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let mut session = Session::open(&cluster, follower).await;
    let id = session
        .create(WatchCreateRequest {
            key: b"x".to_vec(),
            watch_id: 7,
            ..Default::default()
        })
        .await;
    assert_eq!(id, 7);
    // Duplicate id: etcd answers created+canceled with watch id -1 and a reason.
    session
        .send(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"y".to_vec(),
            watch_id: 7,
            ..Default::default()
        }))
        .await;
    let refused = session.next().await;
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.watch_id, -1);
    assert_eq!(
        refused.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // Automatic ids start at 0.
    let auto = session
        .create(WatchCreateRequest {
            key: b"x".to_vec(),
            ..Default::default()
        })
        .await;
    assert_eq!(auto, 0);

    let revision_x = cluster.put(leader, "x", "1").await;
    let mut got = BTreeMap::new();
    while got.len() < 2 {
        let response = session.next().await;
        got.insert(response.watch_id, revision(&response.events[0]));
    }
    assert_eq!(got, BTreeMap::from([(0, revision_x), (7, revision_x)]));

    // Progress: watch id -1, header revision = current (both watches are synced).
    session
        .send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = session.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.expect("header").revision, revision_x);

    session
        .send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 7,
        }))
        .await;
    let canceled = session.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.watch_id, 7);
    let revision_x2 = cluster.put(leader, "x", "2").await;
    let response = session.next().await;
    assert_eq!(response.watch_id, 0, "the canceled watch gets nothing more");
    assert_eq!(revision(&response.events[0]), revision_x2);
}

#[tokio::test]
async fn idle_watches_with_progress_notify_get_progress_responses() {
    let cluster = TestCluster::start_with(3, "[watch]\nprogress_notify_interval_ms = 300\n");
    let (leader, follower) = leader_and_follower(&cluster).await;
    let current = cluster.put(leader, "n/a", "v").await;
    let mut session = Session::open(&cluster, follower).await;
    let id = session
        .create(WatchCreateRequest {
            key: b"n/b".to_vec(),
            progress_notify: true,
            ..Default::default()
        })
        .await;
    let progress = session.next().await;
    assert_eq!(progress.watch_id, id);
    assert!(progress.events.is_empty() && !progress.canceled);
    assert!(progress.header.expect("header").revision >= current);
}

#[tokio::test]
async fn large_responses_are_fragmented_when_asked() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let big = vec![b'v'; 700 * 1024];
    put_value(&cluster, leader, "f/a".into(), big.clone()).await;
    let written = put_value(&cluster, leader, "f/b".into(), big.clone()).await;
    let mut session = Session::open(&cluster, follower).await;
    let id = session
        .create(WatchCreateRequest {
            start_revision: written + 1,
            prev_kv: true,
            fragment: true,
            ..prefix("f/")
        })
        .await;
    let put = |key: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: big.clone(),
            ..Default::default()
        })),
    };
    let txn = TxnRequest {
        success: vec![put("f/a"), put("f/b")],
        ..Default::default()
    };
    cluster.kv(leader).await.txn(txn).await.expect("txn");
    // With prev_kv the txn's response is ~2.8 MB: two fragments of one event each.
    let first = session.next().await;
    assert_eq!(first.watch_id, id);
    assert!(first.fragment, "first part flagged as a fragment");
    assert_eq!(first.events.len(), 1);
    let second = session.next().await;
    assert!(!second.fragment, "last part is not a fragment");
    assert_eq!(second.events.len(), 1);
    assert_eq!(revision(&first.events[0]), revision(&second.events[0]));
}

#[tokio::test]
async fn hasleader_streams_end_when_the_member_loses_its_leader() {
    let mut cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let other = 3 - leader - follower;
    let mut session = Session::try_open(&cluster, follower, true)
        .await
        .expect("a leader exists");
    session.create(prefix("h/")).await;
    cluster.kill(leader);
    cluster.kill(other);
    let status = session.try_next().await.expect_err("stream ends");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    // A new hasleader stream is refused at once; one without the metadata still works.
    let refused = match Session::try_open(&cluster, follower, true).await {
        Err(status) => status,
        Ok(mut session) => session.try_next().await.expect_err("refused"),
    };
    assert_eq!(refused.message(), "etcdserver: no leader");
    let mut plain = Session::open(&cluster, follower).await;
    plain.create(prefix("h/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watches_on_one_key_are_created_and_all_notified() {
    let cluster = TestCluster::start(3);
    let (leader, follower) = leader_and_follower(&cluster).await;
    let started = Instant::now();
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let session = Session::open(&cluster, follower).await;
        for _ in 0..1000 {
            session
                .send(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"fan".to_vec(),
                    ..Default::default()
                }))
                .await;
        }
        sessions.push(session);
    }
    for session in &mut sessions {
        for _ in 0..1000 {
            assert!(session.next().await.created);
        }
    }
    println!("10,000 watches created in {:?}", started.elapsed());
    let revision_put = cluster.put(leader, "fan", "v").await;
    let notified = Instant::now();
    for session in &mut sessions {
        let mut ids = std::collections::BTreeSet::new();
        while ids.len() < 1000 {
            let response = session.next().await;
            assert_eq!(revision(&response.events[0]), revision_put);
            assert!(ids.insert(response.watch_id), "one event per watch");
        }
    }
    println!("10,000 watchers notified in {:?}", notified.elapsed());
}

/// Regression: a member stopped with SIGTERM while a client kept a watch open waited for the
/// stream to end, i.e. forever; graceful shutdown now closes what is still open after a grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_even_with_an_open_watch() {
    let mut cluster = TestCluster::start(1);
    cluster.wait_for_leader().await;
    let mut session = Session::open(&cluster, 0).await;
    session
        .create(WatchCreateRequest {
            key: b"open".to_vec(),
            ..Default::default()
        })
        .await;
    let took = cluster.stop(0);
    assert!(
        took.is_some_and(|took| took < Duration::from_secs(6)),
        "SIGTERM took {took:?} with a watch open"
    );
}
