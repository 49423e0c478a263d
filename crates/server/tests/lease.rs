//! etcd's Lease service on real 3-member clusters: grant, lease-bound puts, time-to-live,
//! listing and revocation with etcd's errors; keepalives through a follower; expiry timing
//! (never before the TTL, soon after it) also across a leader kill and a full restart; and the
//! one-revision deletion of a lease's keys, as a watch sees it.
//!
//! Timing bounds are the contract here, so they are asserted: a lease never disappears before
//! its TTL has passed since the client sent its last grant or keepalive, and disappears within a
//! generous slack ([`EXPIRY_SLACK`]) after that.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::lease_client::LeaseClient;
use beacon_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, RangeRequest, WatchCreateRequest,
};
use beacon_proto::mvccpb::event::EventType;
use common::{TestCluster, WatchSession, DEADLINE};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// How long after its TTL a lease may still be there: the leader scans every 50 ms and the
/// expiry is one Raft round, but a loaded 2-core CI machine needs room.
const EXPIRY_SLACK: Duration = Duration::from_secs(3);

/// The harness writes election_timeout_max_ms = 600, so the minimum TTL is
/// ceil(1.5 × 0.6 s) = 1 s.
const HARNESS_MIN_TTL: i64 = 1;

fn followers(cluster: &TestCluster, leader: usize) -> Vec<usize> {
    (0..cluster.nodes.len()).filter(|i| *i != leader).collect()
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).expect("positive TTL"))
}

/// Bounds a unary call (the lease client has no overall timeout, for its streams).
async fn within<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

async fn try_grant(
    cluster: &TestCluster,
    index: usize,
    id: i64,
    ttl: i64,
) -> Result<LeaseGrantResponse, Status> {
    let mut lease = cluster.lease(index).await;
    within("grant", lease.lease_grant(LeaseGrantRequest { ttl, id })).await
}

async fn grant(cluster: &TestCluster, index: usize, ttl: i64) -> LeaseGrantResponse {
    try_grant(cluster, index, 0, ttl)
        .await
        .unwrap_or_else(|status| panic!("grant: {status}\n{}", cluster.logs()))
}

async fn try_revoke(cluster: &TestCluster, index: usize, id: i64) -> Result<i64, Status> {
    let mut lease = cluster.lease(index).await;
    let response = within("revoke", lease.lease_revoke(LeaseRevokeRequest { id })).await?;
    Ok(response.header.expect("header").revision)
}

async fn time_to_live(
    cluster: &TestCluster,
    index: usize,
    id: i64,
    keys: bool,
) -> LeaseTimeToLiveResponse {
    let mut lease = cluster.lease(index).await;
    within(
        "time_to_live",
        lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys }),
    )
    .await
    .unwrap_or_else(|status| panic!("time_to_live: {status}\n{}", cluster.logs()))
}

async fn lease_ids(cluster: &TestCluster, index: usize) -> Vec<i64> {
    let mut lease = cluster.lease(index).await;
    let response = within("leases", lease.lease_leases(LeaseLeasesRequest {}))
        .await
        .unwrap_or_else(|status| panic!("leases: {status}\n{}", cluster.logs()));
    let mut ids: Vec<i64> = response.leases.into_iter().map(|lease| lease.id).collect();
    ids.sort_unstable();
    ids
}

/// One keepalive on its own stream, as etcd's `KeepAliveOnce` does.
async fn keep_alive_once(cluster: &TestCluster, index: usize, id: i64) -> LeaseKeepAliveResponse {
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(LeaseKeepAliveRequest { id })
        .await
        .expect("channel open");
    let mut lease = cluster.lease(index).await;
    let mut responses = within(
        "keep_alive",
        lease.lease_keep_alive(ReceiverStream::new(receiver)),
    )
    .await
    .expect("keepalive stream");
    tokio::time::timeout(DEADLINE, responses.message())
        .await
        .expect("a keepalive answer in time")
        .expect("keepalive answer")
        .expect("stream not ended")
}

async fn put_with_lease(
    cluster: &TestCluster,
    index: usize,
    key: &str,
    lease: i64,
) -> Result<i64, Status> {
    let request = PutRequest {
        key: key.into(),
        value: format!("{key}@{lease}").into(),
        lease,
        ..Default::default()
    };
    let response = cluster.kv(index).await.put(request).await?.into_inner();
    Ok(response.header.expect("header").revision)
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// `(key, mod_revision, lease)` of every key under `prefix` at `revision` (0: latest), by a
/// linearizable read on member `index`.
async fn range_at(
    cluster: &TestCluster,
    index: usize,
    prefix: &str,
    revision: i64,
) -> Vec<(String, i64, i64)> {
    let request = RangeRequest {
        key: prefix.into(),
        range_end: prefix_end(prefix),
        revision,
        ..Default::default()
    };
    let response = cluster
        .kv(index)
        .await
        .range(request)
        .await
        .unwrap_or_else(|status| panic!("range {prefix}@{revision}: {status}"))
        .into_inner();
    response
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
                kv.lease,
            )
        })
        .collect()
}

/// Whether `key` exists, by a linearizable read on member `index`; `None` when the member
/// cannot answer (during an election, say).
async fn key_exists(cluster: &TestCluster, index: usize, key: &str) -> Option<bool> {
    let request = RangeRequest {
        key: key.into(),
        count_only: true,
        ..Default::default()
    };
    let response = cluster.kv(index).await.range(request).await.ok()?;
    Some(response.into_inner().count > 0)
}

/// Polls member `index` until `key` is gone; returns when the first "absent" answer arrived
/// (never earlier than the deletion, so a lower bound checked against it is sound).
async fn wait_until_gone(
    cluster: &TestCluster,
    index: usize,
    key: &str,
    give_up: Instant,
) -> Instant {
    loop {
        if key_exists(cluster, index, key).await == Some(false) {
            return Instant::now();
        }
        assert!(
            Instant::now() < give_up,
            "{key} still there on node{}\n{}",
            index + 1,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks a lease disappearance against the contract: not before `ttl` after `renewed_from`,
/// within `ttl` + [`EXPIRY_SLACK`] after `renewed_by`. The TTL runs from the leader's apply of
/// the last renewal (or grant), which happens after its request was *sent* (`renewed_from`: the
/// send time of the last acknowledged grant or keepalive) and before `renewed_by` (the last
/// request sent, answered or not, or a restart). Measuring the lower bound from the
/// acknowledgement instead would make a slow answer on a loaded machine look like an early
/// expiry.
fn assert_expired_in_bounds(
    cluster: &TestCluster,
    gone_at: Instant,
    renewed_from: Instant,
    renewed_by: Instant,
    ttl: i64,
) {
    let ttl = seconds(ttl);
    // Printed for diagnosis (nextest shows it for failing tests only).
    eprintln!(
        "gone {:?} after the earliest renewal, {:?} after the latest (TTL {ttl:?})",
        gone_at.saturating_duration_since(renewed_from),
        gone_at.saturating_duration_since(renewed_by),
    );
    assert!(
        gone_at >= renewed_from + ttl,
        "expired early: {:?} after the last acknowledged request was sent, TTL {ttl:?}\n{}",
        gone_at - renewed_from,
        cluster.logs()
    );
    assert!(
        gone_at <= renewed_by + ttl + EXPIRY_SLACK,
        "expired late: {:?} after the last request sent, TTL {ttl:?}\n{}",
        gone_at - renewed_by,
        cluster.logs()
    );
}

/// What a [`KeepAliveLoop`] did.
#[derive(Debug, Default, Clone)]
struct KeepAliveLog {
    /// When the last keepalive was sent, answered or not.
    last_sent: Option<Instant>,
    /// When the last keepalive answered with the lease's TTL was sent, and when it was answered.
    last_answered: Option<(Instant, Instant)>,
    answered: usize,
    /// Answers with another TTL than the granted one (0: the lease was gone).
    wrong_ttls: Vec<i64>,
    /// Streams that failed or stayed silent and were replaced.
    reopened: usize,
}

/// A client keeping one lease alive through one member the way etcd's clients do: a keepalive
/// every `period` on one stream, replaced by a new stream when it fails or stays silent.
struct KeepAliveLoop {
    stop: watch::Sender<bool>,
    log: Arc<Mutex<KeepAliveLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAliveLoop {
    fn start(client: LeaseClient<Channel>, id: i64, ttl: i64, period: Duration) -> Self {
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(KeepAliveLog::default()));
        let task = tokio::spawn(keep_alive_loop(
            client,
            id,
            ttl,
            period,
            stopped,
            log.clone(),
        ));
        KeepAliveLoop { stop, log, task }
    }

    fn log(&self) -> KeepAliveLog {
        self.log.lock().expect("log lock").clone()
    }

    /// Stops between two keepalives (none is left waiting for its answer unless its stream
    /// failed) and returns the log.
    async fn stop(self) -> KeepAliveLog {
        let _ = self.stop.send(true);
        self.task.await.expect("keepalive task");
        let log = self.log.lock().expect("log lock").clone();
        log
    }
}

async fn keep_alive_loop(
    mut client: LeaseClient<Channel>,
    id: i64,
    ttl: i64,
    period: Duration,
    mut stopped: watch::Receiver<bool>,
    log: Arc<Mutex<KeepAliveLog>>,
) {
    let mut stream: Option<(
        mpsc::Sender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )> = None;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stopped.changed() => return,
        }
        next = Instant::now() + period;
        if stream.is_none() {
            let (sender, receiver) = mpsc::channel(4);
            match client.lease_keep_alive(ReceiverStream::new(receiver)).await {
                Ok(responses) => stream = Some((sender, responses.into_inner())),
                Err(_) => {
                    log.lock().expect("log lock").reopened += 1;
                    next = Instant::now() + Duration::from_millis(100);
                    continue;
                }
            }
        }
        let (sender, responses) = stream.as_mut().expect("opened above");
        let sent = Instant::now();
        log.lock().expect("log lock").last_sent = Some(sent);
        if sender.send(LeaseKeepAliveRequest { id }).await.is_err() {
            stream = None;
            continue;
        }
        match tokio::time::timeout(2 * period, responses.message()).await {
            Ok(Ok(Some(response))) => {
                let mut log = log.lock().expect("log lock");
                if response.ttl == ttl {
                    log.answered += 1;
                    log.last_answered = Some((sent, Instant::now()));
                } else {
                    log.wrong_ttls.push(response.ttl);
                }
            }
            // Failed (a forward to a killed leader), ended or silent: a new stream, at once.
            _ => {
                log.lock().expect("log lock").reopened += 1;
                stream = None;
                next = Instant::now();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_put_time_to_live_leases_and_revoke_behave_as_etcd() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let followers = followers(&cluster, leader);
    let (one, other) = (followers[0], followers[1]);

    // Granted through a follower: the id is picked for us, the TTL is kept.
    let doomed = grant(&cluster, one, 60).await;
    assert!(doomed.id > 0, "{doomed:?}");
    assert_eq!(doomed.ttl, 60);
    // An id of our choosing, through the other follower.
    let kept = try_grant(&cluster, other, 4242, 60)
        .await
        .expect("grant with an id");
    assert_eq!((kept.id, kept.ttl), (4242, 60));
    let taken = try_grant(&cluster, one, 4242, 30)
        .await
        .expect_err("the id is taken");
    assert_eq!(taken.code(), Code::FailedPrecondition, "{taken:?}");
    assert_eq!(taken.message(), "etcdserver: lease already exists");
    let too_large = try_grant(&cluster, leader, 0, 9_000_000_001)
        .await
        .expect_err("TTL above etcd's maximum");
    assert_eq!(too_large.code(), Code::OutOfRange, "{too_large:?}");
    assert_eq!(too_large.message(), "etcdserver: too large lease TTL");
    let largest = grant(&cluster, leader, 9_000_000_000).await;
    assert_eq!(largest.ttl, 9_000_000_000);
    // Below the minimum (1.5 election timeouts): raised to it, as etcd does.
    let raised = grant(&cluster, one, 0).await;
    assert_eq!(raised.ttl, HARNESS_MIN_TTL, "{raised:?}");

    // A put naming an unknown lease fails and writes nothing.
    let unknown = put_with_lease(&cluster, one, "nowhere", 777_777)
        .await
        .expect_err("unknown lease");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(unknown.message(), "etcdserver: requested lease not found");
    assert_eq!(key_exists(&cluster, leader, "nowhere").await, Some(false));

    for key in ["l/doomed/1", "l/doomed/2", "l/moved"] {
        put_with_lease(&cluster, one, key, kept.id)
            .await
            .expect("put with a lease");
    }
    put_with_lease(&cluster, other, "l/doomed/1", doomed.id)
        .await
        .expect("moved to another lease");
    put_with_lease(&cluster, other, "l/doomed/2", doomed.id)
        .await
        .expect("moved to another lease");
    put_with_lease(&cluster, leader, "l/kept", kept.id)
        .await
        .expect("put with a lease");
    put_with_lease(&cluster, one, "l/plain", 0)
        .await
        .expect("put without a lease");
    // Re-put without a lease: detached from `kept`, so nobody's revocation deletes it.
    put_with_lease(&cluster, one, "l/moved", 0)
        .await
        .expect("put without a lease");
    let last_put = put_with_lease(&cluster, leader, "l/doomed/3", doomed.id)
        .await
        .expect("put with a lease");

    let live = time_to_live(&cluster, other, doomed.id, true).await;
    assert_eq!(live.id, doomed.id);
    assert_eq!(live.granted_ttl, 60);
    assert!((1..=60).contains(&live.ttl), "{live:?}");
    assert_eq!(
        live.keys,
        [
            b"l/doomed/1".to_vec(),
            b"l/doomed/2".to_vec(),
            b"l/doomed/3".to_vec()
        ]
    );
    let without_keys = time_to_live(&cluster, leader, doomed.id, false).await;
    assert!(without_keys.keys.is_empty(), "{without_keys:?}");
    assert_eq!(
        time_to_live(&cluster, one, kept.id, true).await.keys,
        [b"l/kept".to_vec()]
    );
    let listed = lease_ids(&cluster, one).await;
    for id in [doomed.id, kept.id, largest.id] {
        assert!(listed.contains(&id), "{id} in {listed:?}");
    }

    // Revoking (through a follower) deletes every attached key in one revision, nothing else.
    let before = range_at(&cluster, other, "l/", 0).await;
    let revoked = try_revoke(&cluster, one, doomed.id)
        .await
        .unwrap_or_else(|status| panic!("revoke: {status}\n{}", cluster.logs()));
    assert_eq!(revoked, last_put + 1, "the revocation is one revision");
    assert_eq!(range_at(&cluster, other, "l/", revoked - 1).await, before);
    let after = range_at(&cluster, other, "l/", revoked).await;
    let expected: Vec<_> = before
        .iter()
        .filter(|(_, _, lease)| *lease != doomed.id)
        .cloned()
        .collect();
    assert_eq!(after, expected, "only the revoked lease's keys are gone");
    assert_eq!(
        after
            .iter()
            .map(|(key, _, _)| key.as_str())
            .collect::<Vec<_>>(),
        ["l/kept", "l/moved", "l/plain"]
    );
    assert_eq!(range_at(&cluster, leader, "l/", 0).await, after);
    assert_eq!(
        time_to_live(&cluster, other, kept.id, true).await.keys,
        [b"l/kept".to_vec()]
    );

    // A revoked lease is unknown everywhere, each call answering as etcd does.
    let gone = time_to_live(&cluster, other, doomed.id, true).await;
    assert_eq!(
        (gone.id, gone.ttl, gone.keys.len()),
        (doomed.id, -1, 0),
        "{gone:?}"
    );
    assert!(!lease_ids(&cluster, leader).await.contains(&doomed.id));
    let again = try_revoke(&cluster, other, doomed.id)
        .await
        .expect_err("already revoked");
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert_eq!(again.message(), "etcdserver: requested lease not found");
    let renewed = keep_alive_once(&cluster, one, doomed.id).await;
    assert_eq!((renewed.id, renewed.ttl), (doomed.id, 0), "{renewed:?}");
    let reuse = put_with_lease(&cluster, leader, "l/late", doomed.id)
        .await
        .expect_err("revoked lease");
    assert_eq!(reuse.code(), Code::NotFound, "{reuse:?}");
    let never = time_to_live(&cluster, leader, 123_456_789, false).await;
    assert_eq!(never.ttl, -1, "{never:?}");

    // Revoking a lease without keys deletes nothing, so it takes no revision (as in etcd).
    let current = cluster.put(leader, "l/plain", "again").await;
    let revoked_keyless = try_revoke(&cluster, other, largest.id)
        .await
        .expect("revoke a lease without keys");
    assert_eq!(revoked_keyless, current);

    // The revoked id can be granted again.
    let regranted = try_grant(&cluster, other, doomed.id, 30)
        .await
        .expect("a revoked id is free");
    assert_eq!(regranted.id, doomed.id);
    assert!(time_to_live(&cluster, one, doomed.id, true)
        .await
        .keys
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_through_a_follower_keep_a_lease_until_they_stop() {
    const TTL: i64 = 3;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let followers = followers(&cluster, leader);
    let (through, observer) = (followers[0], followers[1]);
    let lease = grant(&cluster, through, TTL).await;
    assert_eq!(lease.ttl, TTL);
    put_with_lease(&cluster, through, "alive", lease.id)
        .await
        .expect("put with a lease");

    let keeper = KeepAliveLoop::start(
        cluster.lease(through).await,
        lease.id,
        TTL,
        seconds(TTL) / 3,
    );
    let kept_until = Instant::now() + 3 * seconds(TTL) + Duration::from_secs(1);
    while Instant::now() < kept_until {
        assert_ne!(
            key_exists(&cluster, observer, "alive").await,
            Some(false),
            "expired while kept alive: {:?}\n{}",
            keeper.log(),
            cluster.logs()
        );
        let live = time_to_live(&cluster, observer, lease.id, true).await;
        assert_eq!(live.granted_ttl, TTL, "{live:?} {:?}", keeper.log());
        assert!((0..=TTL).contains(&live.ttl), "{live:?}");
        assert_eq!(live.keys, [b"alive".to_vec()]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = keeper.stop().await;
    assert!(log.wrong_ttls.is_empty(), "{log:?}");
    assert!(log.answered >= 9, "a keepalive a second: {log:?}");
    assert_eq!(key_exists(&cluster, observer, "alive").await, Some(true));

    let (acknowledged_sent, _) = log.last_answered.expect("answered keepalives");
    let sent = log.last_sent.expect("sent keepalives");
    let give_up = sent + seconds(TTL) + EXPIRY_SLACK + DEADLINE;
    let gone_at = wait_until_gone(&cluster, observer, "alive", give_up).await;
    assert_expired_in_bounds(&cluster, gone_at, acknowledged_sent, sent, TTL);
    assert_eq!(
        time_to_live(&cluster, through, lease.id, false).await.ttl,
        -1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_neither_resets_nor_shortens_a_lease() {
    const TTL: i64 = 8;
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let survivor = followers(&cluster, leader)[0];
    let sent = Instant::now();
    let lease = grant(&cluster, survivor, TTL).await;
    let acknowledged = Instant::now();
    put_with_lease(&cluster, survivor, "failover/key", lease.id)
        .await
        .expect("put with a lease");

    // Half way through the TTL (measuring time is the point): a new leader that restarted the
    // full TTL would keep the key until ~4 s + election + 8 s, past the upper bound below.
    tokio::time::sleep_until((sent + Duration::from_secs(4)).into()).await;
    assert_eq!(
        key_exists(&cluster, survivor, "failover/key").await,
        Some(true)
    );
    cluster.kill(leader);

    let give_up = sent + seconds(TTL) + EXPIRY_SLACK + DEADLINE;
    let gone_at = wait_until_gone(&cluster, survivor, "failover/key", give_up).await;
    assert_expired_in_bounds(&cluster, gone_at, sent, acknowledged, TTL);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    assert_eq!(
        time_to_live(&cluster, survivor, lease.id, false).await.ttl,
        -1
    );
    assert!(!lease_ids(&cluster, new_leader).await.contains(&lease.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_across_a_leader_kill_never_expires() {
    const TTL: i64 = 3;
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let survivors = followers(&cluster, leader);
    let (through, observer) = (survivors[0], survivors[1]);
    let lease = grant(&cluster, through, TTL).await;
    put_with_lease(&cluster, through, "kept/key", lease.id)
        .await
        .expect("put with a lease");
    let keeper = KeepAliveLoop::start(
        cluster.lease(through).await,
        lease.id,
        TTL,
        seconds(TTL) / 3,
    );
    let before_kill = Instant::now() + Duration::from_secs(3);
    while Instant::now() < before_kill {
        assert_ne!(
            key_exists(&cluster, observer, "kept/key").await,
            Some(false),
            "expired while kept alive: {:?}",
            keeper.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered_before_kill = keeper.log().answered;
    cluster.kill(leader);
    let killed_at = Instant::now();

    while killed_at.elapsed() < 3 * seconds(TTL) + Duration::from_secs(1) {
        for index in [through, observer] {
            assert_ne!(
                key_exists(&cluster, index, "kept/key").await,
                Some(false),
                "expired on node{} {:?} after the leader kill while kept alive: {:?}\n{}",
                index + 1,
                killed_at.elapsed(),
                keeper.log(),
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    let log = keeper.stop().await;
    eprintln!("keepalives across the kill: {log:?}");
    assert!(log.wrong_ttls.is_empty(), "the lease was lost: {log:?}");
    assert!(
        log.answered >= answered_before_kill + 6,
        "keepalives resumed on the new leader: {log:?}"
    );
    assert_eq!(key_exists(&cluster, observer, "kept/key").await, Some(true));
    let live = time_to_live(&cluster, observer, lease.id, true).await;
    assert_eq!(live.keys, [b"kept/key".to_vec()], "{live:?}");

    // Still subject to expiry under the new leader once the keepalives stop.
    let (acknowledged_sent, _) = log.last_answered.expect("answered keepalives");
    let sent = log.last_sent.expect("sent keepalives");
    let give_up = sent + seconds(TTL) + EXPIRY_SLACK + DEADLINE;
    let gone_at = wait_until_gone(&cluster, observer, "kept/key", give_up).await;
    assert_expired_in_bounds(&cluster, gone_at, acknowledged_sent, sent, TTL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_the_keys_in_one_revision_and_watchers_see_the_deletes() {
    const TTL: i64 = 3;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let followers = followers(&cluster, leader);
    let sent = Instant::now();
    let lease = grant(&cluster, followers[0], TTL).await;
    let acknowledged = Instant::now();
    let keys = ["x/1", "x/2", "x/3"];
    for key in keys {
        put_with_lease(&cluster, followers[0], key, lease.id)
            .await
            .expect("put with a lease");
    }
    let last_put = put_with_lease(&cluster, leader, "x/plain", 0)
        .await
        .expect("put without a lease");

    let mut session = WatchSession::open(&cluster, followers[1]).await;
    let watch_id = session
        .create(WatchCreateRequest {
            key: b"x/".to_vec(),
            range_end: prefix_end("x/"),
            start_revision: last_put + 1,
            ..Default::default()
        })
        .await;
    let mut events = Vec::new();
    while events.len() < keys.len() {
        let response = session.next().await;
        assert_eq!(response.watch_id, watch_id, "{response:?}");
        assert!(!response.canceled, "{response:?}");
        events.extend(response.events);
    }
    let gone_at = Instant::now();
    assert_expired_in_bounds(&cluster, gone_at, sent, acknowledged, TTL);

    let expired = last_put + 1;
    let deleted: Vec<(String, i64)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.r#type, EventType::Delete as i32, "{event:?}");
            let kv = event.kv.as_ref().expect("kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(
        deleted,
        keys.iter()
            .map(|key| (key.to_string(), expired))
            .collect::<Vec<_>>(),
        "every attached key deleted in the one revision after the last put"
    );
    let at_expiry = range_at(&cluster, followers[1], "x/", expired).await;
    assert_eq!(
        at_expiry
            .iter()
            .map(|(key, revision, _)| (key.as_str(), *revision))
            .collect::<Vec<_>>(),
        [("x/plain", last_put)]
    );
    assert_eq!(range_at(&cluster, leader, "x/", expired - 1).await.len(), 4);

    assert_eq!(time_to_live(&cluster, leader, lease.id, true).await.ttl, -1);
    assert!(!lease_ids(&cluster, followers[0]).await.contains(&lease.id));
    let late = put_with_lease(&cluster, followers[0], "x/late", lease.id)
        .await
        .expect_err("expired lease");
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
    assert_eq!(late.message(), "etcdserver: requested lease not found");
    let renewed = keep_alive_once(&cluster, followers[1], lease.id).await;
    assert_eq!(renewed.ttl, 0, "{renewed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_full_restart_and_still_expire() {
    const TTL: i64 = 10;
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = followers(&cluster, leader)[0];
    let lease = grant(&cluster, follower, TTL).await;
    put_with_lease(&cluster, follower, "restart/key", lease.id)
        .await
        .expect("put with a lease");

    for index in 0..3 {
        cluster.stop(index);
    }
    // Every member starts a restored lease's full TTL when it starts: it cannot know how much
    // of it passed while it was down.
    let restarted = Instant::now();
    for index in 0..3 {
        cluster.start_node(index);
    }
    let leader = cluster.wait_for_leader().await;
    let led_at = Instant::now();
    let any = (leader + 1) % 3;

    assert!(
        lease_ids(&cluster, any).await.contains(&lease.id),
        "{}",
        cluster.logs()
    );
    let live = time_to_live(&cluster, leader, lease.id, true).await;
    assert_eq!(live.granted_ttl, TTL, "{live:?}");
    assert!((0..=TTL).contains(&live.ttl), "{live:?}");
    assert_eq!(live.keys, [b"restart/key".to_vec()]);
    assert_eq!(key_exists(&cluster, any, "restart/key").await, Some(true));
    // The lease is usable: another key can be attached.
    put_with_lease(&cluster, any, "restart/second", lease.id)
        .await
        .expect("put with a restored lease");

    let give_up = led_at + seconds(TTL) + EXPIRY_SLACK + DEADLINE;
    let gone_at = wait_until_gone(&cluster, any, "restart/key", give_up).await;
    assert_expired_in_bounds(&cluster, gone_at, restarted, led_at, TTL);
    assert_eq!(
        key_exists(&cluster, any, "restart/second").await,
        Some(false)
    );
    assert!(!lease_ids(&cluster, leader).await.contains(&lease.id));
}
