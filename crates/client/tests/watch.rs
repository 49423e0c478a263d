//! `Client::watch` against a real etcd (skipped when `etcd` is not installed): order, ranges,
//! prev_kv, filters, history, progress, compaction, cancel on drop, and resume without gap or
//! duplicate after the member the watch was on is killed.

use std::io::{Read, Write};
use std::time::Duration;

use beacon_client::mvccpb::event::EventType;
use beacon_client::testing::{start_cluster, EtcdProcess};
use beacon_client::{
    pb, Client, ClientError, ClientOptions, DeleteOptions, PutOptions, WatchBatch, WatchOptions,
    Watcher,
};

/// Deadline for any single expected batch: generous, but a hang fails instead of blocking CI.
const BATCH_DEADLINE: Duration = Duration::from_secs(20);

async fn client(endpoints: &[&str]) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(300),
    };
    let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    Client::connect(endpoints, options).await.expect("connect")
}

async fn next(watcher: &mut Watcher) -> WatchBatch {
    tokio::time::timeout(BATCH_DEADLINE, watcher.next())
        .await
        .expect("a batch within the deadline")
        .expect("a batch, not an error")
}

/// Event summary: (revision, type, key, value, prev value).
type Seen = (i64, EventType, String, String, Option<String>);

fn summarize(batch: &WatchBatch) -> Vec<Seen> {
    batch
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.clone().unwrap_or_default();
            assert_eq!(kv.mod_revision, batch.revision, "one revision per batch");
            (
                batch.revision,
                event.r#type(),
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                event
                    .prev_kv
                    .as_ref()
                    .map(|prev| String::from_utf8_lossy(&prev.value).into_owned()),
            )
        })
        .collect()
}

async fn put(client: &Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value, PutOptions::default())
        .await
        .expect("put")
        .header
        .expect("header")
        .revision
}

/// Every event in (0, last_revision] under `prefix`, read by a fresh watch from revision 1: the
/// history the watcher under test must have delivered exactly.
async fn history(client: &Client, prefix: &str, last_revision: i64) -> Vec<Seen> {
    let options = WatchOptions {
        prefix: true,
        start_revision: 1,
        ..Default::default()
    };
    let mut watcher = client.watch(prefix, options).await.expect("history watch");
    collect_until(&mut watcher, last_revision).await
}

async fn collect_until(watcher: &mut Watcher, last_revision: i64) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut revision = 0;
    while revision < last_revision {
        let batch = next(watcher).await;
        revision = batch.revision;
        seen.extend(summarize(&batch));
    }
    seen
}

#[tokio::test]
async fn events_arrive_in_order_one_batch_per_revision_with_prev_kv() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let options = WatchOptions {
        prefix: true,
        prev_kv: true,
        ..Default::default()
    };
    let mut watcher = client.watch("w/", options).await.expect("watch");
    let first = put(&client, "w/a", "1").await;
    put(&client, "w/a", "2").await;
    put(&client, "outside", "x").await;
    client
        .delete("w/a", DeleteOptions::default())
        .await
        .expect("delete");
    // A txn writing two keys is one revision, so one batch.
    let put_op = |key: &str, value: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    };
    client
        .txn(pb::TxnRequest {
            success: vec![put_op("w/b", "b"), put_op("w/c", "c")],
            ..Default::default()
        })
        .await
        .expect("txn");

    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(summarize(&next(&mut watcher).await));
    }
    use EventType::{Delete, Put};
    let s = |text: &str| text.to_string();
    assert_eq!(
        batches,
        vec![
            vec![(first, Put, s("w/a"), s("1"), None)],
            vec![(first + 1, Put, s("w/a"), s("2"), Some(s("1")))],
            vec![(first + 3, Delete, s("w/a"), s(""), Some(s("2")))],
            vec![
                (first + 4, Put, s("w/b"), s("b"), None),
                (first + 4, Put, s("w/c"), s("c"), None)
            ],
        ]
    );
    assert_eq!(watcher.next_revision(), first + 5);
}

#[tokio::test]
async fn filters_drop_puts_or_deletes() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let only_deletes = WatchOptions {
        no_put: true,
        ..Default::default()
    };
    let only_puts = WatchOptions {
        no_delete: true,
        ..Default::default()
    };
    let mut deletes = client.watch("f", only_deletes).await.expect("watch");
    let mut puts = client.watch("f", only_puts).await.expect("watch");
    let written = put(&client, "f", "1").await;
    client
        .delete("f", DeleteOptions::default())
        .await
        .expect("delete");
    let put_again = put(&client, "f", "2").await;

    let delete_batch = next(&mut deletes).await;
    assert_eq!(delete_batch.revision, written + 1);
    assert_eq!(delete_batch.events[0].r#type(), EventType::Delete);
    assert_eq!(next(&mut puts).await.revision, written);
    assert_eq!(next(&mut puts).await.revision, put_again);
}

#[tokio::test]
async fn a_watch_started_in_the_past_replays_history_then_follows() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let first = put(&client, "past/1", "a").await;
    for index in 2..=5 {
        put(&client, &format!("past/{index}"), "a").await;
    }
    let options = WatchOptions {
        prefix: true,
        start_revision: first + 2,
        ..Default::default()
    };
    let mut watcher = client.watch("past/", options).await.expect("watch");
    let live = put(&client, "past/6", "b").await;
    let revisions: Vec<i64> = collect_until(&mut watcher, live)
        .await
        .into_iter()
        .map(|seen| seen.0)
        .collect();
    assert_eq!(revisions, (first + 2..=live).collect::<Vec<_>>());
}

#[tokio::test]
async fn progress_notifications_advance_the_resume_point() {
    let Some(etcd) =
        EtcdProcess::start_with(&["--experimental-watch-progress-notify-interval=200ms"])
    else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let options = WatchOptions {
        progress_notify: true,
        ..Default::default()
    };
    let mut watcher = client.watch("quiet", options).await.expect("watch");
    let unrelated = put(&client, "other", "x").await;
    // Periodic notifications arrive unasked; wait for one that covers the unrelated write.
    loop {
        let batch = next(&mut watcher).await;
        assert!(batch.is_progress_notify(), "no events on 'quiet'");
        if batch.revision >= unrelated {
            break;
        }
    }
    assert!(watcher.next_revision() > unrelated);
    // A requested notification (etcd answers with watch id -1) is surfaced too.
    watcher.request_progress().await.expect("request");
    assert!(next(&mut watcher).await.is_progress_notify());
}

#[tokio::test]
async fn a_compacted_start_revision_is_an_error() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    put(&client, "c", "1").await;
    put(&client, "c", "2").await;
    let last = put(&client, "c", "3").await;
    client.compact(last, true).await.expect("compact");
    let options = WatchOptions {
        start_revision: 1,
        ..Default::default()
    };
    // etcd creates the watch, then cancels it with the compaction revision.
    let result = match client.watch("c", options).await {
        Ok(mut watcher) => tokio::time::timeout(BATCH_DEADLINE, watcher.next())
            .await
            .expect("an answer"),
        Err(error) => Err(error),
    };
    match result {
        Err(ClientError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, last),
        other => panic!("expected a compaction error, got {other:?}"),
    }
}

/// etcd's count of live watchers, from its Prometheus endpoint on the client port.
fn watcher_total(endpoint: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(endpoint).expect("connect for /metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .expect("request /metrics");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read /metrics");
    body.lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("etcd reports etcd_debugging_mvcc_watcher_total")
}

#[tokio::test]
async fn dropping_a_watcher_cancels_its_watch() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let before = watcher_total(etcd.endpoint());
    let watcher = client
        .watch("dropped", WatchOptions::default())
        .await
        .expect("watch");
    assert_eq!(watcher_total(etcd.endpoint()), before + 1.0);
    drop(watcher);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watcher_total(etcd.endpoint()) != before {
        assert!(std::time::Instant::now() < deadline, "watch not canceled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `count` puts of `resume/N` through `writer`, retrying each until it succeeds (a retried
/// ambiguous put may apply twice; the history comparison covers that). Returns the last revision.
async fn write_sequence(writer: Client, from: usize, count: usize) -> i64 {
    let mut last = 0;
    for index in from..from + count {
        loop {
            let key = format!("resume/{index:04}");
            match writer
                .put(&key, index.to_string(), PutOptions::default())
                .await
            {
                Ok(response) => {
                    last = response.header.expect("header").revision;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    last
}

#[tokio::test]
async fn a_watch_resumes_after_its_member_restarts_without_gap_or_duplicate() {
    let Some(mut etcd) = EtcdProcess::start() else {
        return;
    };
    let client = client(&[etcd.endpoint()]).await;
    let options = WatchOptions {
        prefix: true,
        ..Default::default()
    };
    let mut watcher = client.watch("resume/", options).await.expect("watch");
    let middle = write_sequence(client.clone(), 0, 30).await;
    // Take some but not all events, so the resume point is in the middle of the history.
    let mut seen = collect_until(&mut watcher, middle - 10).await;
    etcd.kill();
    etcd.restart();
    let last = write_sequence(client.clone(), 30, 30).await;
    seen.extend(collect_until(&mut watcher, last).await);
    assert_eq!(seen, history(&client, "resume/", last).await);
}

#[tokio::test]
async fn a_watch_resumes_on_another_member_after_its_member_is_killed() {
    let Some(mut members) = start_cluster(3, &[]) else {
        return;
    };
    let endpoints: Vec<&str> = members.iter().map(|member| member.endpoint()).collect();
    let client = client(&endpoints).await;
    let writer = self::client(&endpoints[1..]).await;
    let options = WatchOptions {
        prefix: true,
        ..Default::default()
    };
    let mut watcher = client.watch("resume/", options).await.expect("watch");
    let first_member = watcher.endpoint().expect("open").to_string();
    assert_eq!(first_member, endpoints[0]);
    // Writes keep flowing while the member dies, so events are in flight at the failure.
    let writes = tokio::spawn(write_sequence(writer.clone(), 0, 200));
    let mut seen = collect_until(&mut watcher, 40).await;
    members[0].kill();
    let last = writes.await.expect("writer task");
    seen.extend(collect_until(&mut watcher, last).await);
    assert_ne!(watcher.endpoint(), Some(first_member.as_str()));
    assert_eq!(seen, history(&writer, "resume/", last).await);
}
