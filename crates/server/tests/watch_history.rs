//! Property test: what watchers receive equals the MVCC history.
//!
//! Seeded random writes (puts, deletes, multi-key txns, from every member) run while watchers on
//! different members, with different key ranges, start revisions, filters and prev_kv, record
//! what they get. The ground truth does not come from the watch code: it is derived from
//! linearizable Range reads of the whole keyspace at every revision (what changed between
//! revision r-1 and r is exactly the events of r). Each watcher must receive exactly the
//! ground-truth events its parameters select: in revision order, each revision in one response,
//! with the right kv and prev_kv.

mod common;

use std::collections::BTreeMap;

use beacon_mvcc::KeyRange;
use beacon_proto::etcdserverpb::watch_create_request::FilterType;
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest,
};
use beacon_proto::mvccpb::{event::EventType, Event, KeyValue};
use common::{TestCluster, WatchSession};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: [&str; 5] = ["a", "a/1", "a/2", "b", "c"];

struct Watcher {
    session: WatchSession,
    id: i64,
    range: KeyRange,
    start: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

fn put_op(key: &str, value: String) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into_bytes(),
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    }
}

/// The whole keyspace at `revision`, by key.
async fn snapshot(cluster: &TestCluster, revision: i64) -> BTreeMap<Vec<u8>, KeyValue> {
    let request = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    };
    let response = cluster
        .kv(0)
        .await
        .range(request)
        .await
        .expect("range at revision")
        .into_inner();
    response
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect()
}

/// Events of each revision in `1..=last`, derived from snapshots, sorted by key within a revision.
async fn ground_truth(cluster: &TestCluster, last: i64) -> BTreeMap<i64, Vec<Event>> {
    let mut truth = BTreeMap::new();
    let mut before = snapshot(cluster, 1).await;
    for revision in 2..=last {
        let after = snapshot(cluster, revision).await;
        let mut events = Vec::new();
        for (key, kv) in &after {
            if kv.mod_revision == revision {
                events.push(Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv.clone()),
                    prev_kv: before.get(key).cloned(),
                });
            }
        }
        for (key, kv) in &before {
            if !after.contains_key(key) {
                let tombstone = KeyValue {
                    key: key.clone(),
                    mod_revision: revision,
                    ..Default::default()
                };
                events.push(Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(tombstone),
                    prev_kv: Some(kv.clone()),
                });
            }
        }
        events.sort_by(|a, b| {
            a.kv.as_ref()
                .map(|kv| &kv.key)
                .cmp(&b.kv.as_ref().map(|kv| &kv.key))
        });
        truth.insert(revision, events);
        before = after;
    }
    truth
}

fn expected_for(watcher: &Watcher, truth: &BTreeMap<i64, Vec<Event>>) -> BTreeMap<i64, Vec<Event>> {
    let mut expected = BTreeMap::new();
    for (revision, events) in truth.range(watcher.start..) {
        let selected: Vec<Event> = events
            .iter()
            .filter(|event| watcher.range.contains(&event.kv.as_ref().expect("kv").key))
            .filter(|event| !(watcher.no_put && event.r#type == EventType::Put as i32))
            .filter(|event| !(watcher.no_delete && event.r#type == EventType::Delete as i32))
            .map(|event| Event {
                prev_kv: if watcher.prev_kv {
                    event.prev_kv.clone()
                } else {
                    None
                },
                ..event.clone()
            })
            .collect();
        if !selected.is_empty() {
            expected.insert(*revision, selected);
        }
    }
    expected
}

async fn run(seed: u64) {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut watchers = Vec::new();
    let mut written_revision = 1;
    for round in 0..120 {
        // Now and then a new watcher, on a random member, possibly starting in the past.
        if round % 20 == 0 {
            let (key, range_end) = match rng.gen_range(0..3) {
                0 => (
                    KEYS[rng.gen_range(0..KEYS.len())].to_string(),
                    String::new(),
                ),
                1 => ("a".to_string(), "b".to_string()),
                _ => ("\0".to_string(), "\0".to_string()),
            };
            let start = rng.gen_range(1..=written_revision + 1);
            let prev_kv = rng.gen_bool(0.5);
            let no_put = rng.gen_bool(0.15);
            let no_delete = !no_put && rng.gen_bool(0.15);
            let mut filters = Vec::new();
            if no_put {
                filters.push(FilterType::Noput as i32);
            }
            if no_delete {
                filters.push(FilterType::Nodelete as i32);
            }
            let mut session = WatchSession::open(&cluster, rng.gen_range(0..3)).await;
            let request = WatchCreateRequest {
                key: key.clone().into_bytes(),
                range_end: range_end.clone().into_bytes(),
                start_revision: start,
                prev_kv,
                filters,
                ..Default::default()
            };
            session.send(RequestUnion::CreateRequest(request)).await;
            let created = session.next().await;
            assert!(created.created && !created.canceled, "{created:?}");
            let range = KeyRange::new(key.as_bytes(), range_end.as_bytes());
            watchers.push(Watcher {
                session,
                id: created.watch_id,
                range,
                start,
                prev_kv,
                no_put,
                no_delete,
            });
        }
        let member = rng.gen_range(0..3);
        let mut kv = cluster.kv(member).await;
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        let value = format!("v{round}");
        let header = match rng.gen_range(0..10) {
            0..=5 => {
                kv.put(PutRequest {
                    key: key.into(),
                    value: value.into_bytes(),
                    ..Default::default()
                })
                .await
            }
            6 | 7 => kv
                .delete_range(DeleteRangeRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    tonic::Response::new(beacon_proto::etcdserverpb::PutResponse {
                        header: r.into_inner().header,
                        prev_kv: None,
                    })
                }),
            _ => {
                // A multi-key txn: one revision, several events.
                let other =
                    KEYS[(KEYS.iter().position(|k| *k == key).expect("key") + 1) % KEYS.len()];
                let txn = TxnRequest {
                    success: vec![put_op(key, value.clone()), delete_op(other)],
                    ..Default::default()
                };
                kv.txn(txn).await.map(|r| {
                    tonic::Response::new(beacon_proto::etcdserverpb::PutResponse {
                        header: r.into_inner().header,
                        prev_kv: None,
                    })
                })
            }
        }
        .expect("write");
        written_revision = header.into_inner().header.expect("header").revision;
    }
    let truth = ground_truth(&cluster, written_revision).await;
    for (index, watcher) in watchers.iter_mut().enumerate() {
        let expected = expected_for(watcher, &truth);
        let mut received: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        let mut last = watcher.start - 1;
        while expected.keys().next_back().is_some_and(|want| *want > last) {
            let response = watcher.session.next().await;
            assert_eq!(
                response.watch_id, watcher.id,
                "watcher {index}: {response:?}"
            );
            assert!(!response.canceled, "watcher {index}: {response:?}");
            if response.events.is_empty() {
                continue;
            }
            // A response may carry several revisions (catch-up batches them, as etcd does), but
            // a revision never spans two responses: atomic.
            for event in &response.events {
                let revision = event.kv.as_ref().expect("kv").mod_revision;
                assert!(
                    revision >= last,
                    "watcher {index}: revision {revision} after {last}: out of order"
                );
                if revision > last {
                    assert!(
                        !received.contains_key(&revision),
                        "watcher {index}: revision {revision} split across responses or duplicated"
                    );
                    last = revision;
                }
                received.entry(revision).or_default().push(event.clone());
            }
        }
        for events in received.values_mut() {
            events.sort_by(|a, b| {
                a.kv.as_ref()
                    .map(|kv| &kv.key)
                    .cmp(&b.kv.as_ref().map(|kv| &kv.key))
            });
        }
        let revisions: std::collections::BTreeSet<i64> =
            received.keys().chain(expected.keys()).copied().collect();
        for revision in revisions {
            assert_eq!(
                received.get(&revision),
                expected.get(&revision),
                "seed {seed}, watcher {index} (start {}, range {:?}, prev_kv {}, no_put {}, no_delete {}): revision {revision}",
                watcher.start,
                watcher.range,
                watcher.prev_kv,
                watcher.no_put,
                watcher.no_delete
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_receive_exactly_the_mvcc_history() {
    for seed in [1, 2, 3] {
        run(seed).await;
    }
}
