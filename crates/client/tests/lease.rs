//! Leases against a real Beacon cluster (skipped when beacond is not built): grant, time-to-live,
//! list, keepalive, revoke, and the background keepalive that keeps a short lease alive, stops
//! on drop, reports a lost lease, and survives the death of the member it streams to.

use std::time::{Duration, Instant};

use beacon_client::testing::start_beacon_cluster;
use beacon_client::{Client, ClientOptions, LeaseState, PutOptions};

async fn client(endpoints: &[&str]) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(300),
    };
    let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    Client::connect(endpoints, options).await.expect("connect")
}

/// Waits (up to `limit`) until the lease's remaining TTL is -1 (gone); returns how long it took.
async fn wait_until_gone(client: &Client, lease_id: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = client.lease_time_to_live(lease_id, false).await;
        if answer.is_ok_and(|answer| answer.ttl == -1) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "lease still alive after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn grant_time_to_live_list_keep_alive_once_and_revoke() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let granted = client.lease_grant(30, 0).await.expect("grant");
    assert!(granted.id > 0, "the server picks a positive id");
    assert_eq!(granted.ttl, 30);
    let chosen = client.lease_grant(30, 0x1234).await.expect("grant an id");
    assert_eq!(chosen.id, 0x1234);
    let taken = client.lease_grant(30, 0x1234).await.expect_err("taken");
    assert_eq!(taken.message(), Some("etcdserver: lease already exists"));

    let options = PutOptions {
        lease: granted.id,
        ..Default::default()
    };
    client.put("leased", "v", options).await.expect("put");
    let alive = client
        .lease_time_to_live(granted.id, true)
        .await
        .expect("ttl");
    assert_eq!(alive.granted_ttl, 30);
    assert!((28..=30).contains(&alive.ttl), "{alive:?}");
    assert_eq!(alive.keys, vec![b"leased".to_vec()]);

    let mut listed: Vec<i64> = client
        .lease_leases()
        .await
        .expect("leases")
        .leases
        .iter()
        .map(|lease| lease.id)
        .collect();
    listed.sort();
    let mut expected = vec![granted.id, 0x1234];
    expected.sort();
    assert_eq!(listed, expected);

    assert_eq!(
        client.lease_keep_alive_once(granted.id).await.expect("ka"),
        30
    );
    client.lease_revoke(granted.id).await.expect("revoke");
    let leased = client.get("leased", Default::default()).await.expect("get");
    assert!(leased.kvs.is_empty(), "revoking deletes the attached key");
    assert_eq!(
        client.lease_keep_alive_once(granted.id).await.expect("ka"),
        0,
        "a revoked lease answers TTL 0"
    );
    let gone = client
        .lease_time_to_live(granted.id, false)
        .await
        .expect("ttl");
    assert_eq!(gone.ttl, -1);
    let again = client.lease_revoke(granted.id).await.expect_err("gone");
    assert_eq!(again.code(), Some(tonic::Code::NotFound));
}

#[tokio::test]
async fn background_keepalive_outlives_the_ttl_and_stops_on_drop() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    // The test cluster's minimum TTL is 1 s.
    let granted = client.lease_grant(1, 0).await.expect("grant");
    assert_eq!(granted.ttl, 1);
    let keep_alive = client.keep_alive(granted.id, granted.ttl);
    let mut states = keep_alive.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        states.wait_for(|state| matches!(state, LeaseState::Alive { ttl: 1, .. })),
    )
    .await
    .expect("a first renewal")
    .expect("the keepalive runs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let remaining = client
        .lease_time_to_live(granted.id, false)
        .await
        .expect("ttl");
    assert!(remaining.ttl >= 0, "alive after 3 TTLs: {remaining:?}");
    assert!(matches!(keep_alive.state(), LeaseState::Alive { .. }));

    drop(keep_alive);
    assert_eq!(*states.borrow_and_update(), LeaseState::Stopped);
    wait_until_gone(&client, granted.id, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_revoked_lease_is_reported_lost() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let granted = client.lease_grant(1, 0).await.expect("grant");
    let keep_alive = client.keep_alive(granted.id, granted.ttl);
    client.lease_revoke(granted.id).await.expect("revoke");
    let ended = tokio::time::timeout(Duration::from_secs(10), keep_alive.ended())
        .await
        .expect("the loss is noticed within a few keepalives");
    assert_eq!(ended, LeaseState::Lost);
}

#[tokio::test]
async fn the_keepalive_moves_to_another_member_when_its_member_dies() {
    let Some(mut members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints: Vec<String> = members
        .iter()
        .map(|member| member.endpoint().to_string())
        .collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let client = client(&endpoints).await;
    let observer = self::client(&endpoints[1..]).await;
    let granted = client.lease_grant(2, 0).await.expect("grant");
    let keep_alive = client.keep_alive(granted.id, granted.ttl);
    let mut states = keep_alive.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        states.wait_for(|state| matches!(state, LeaseState::Alive { .. })),
    )
    .await
    .expect("a first renewal")
    .expect("the keepalive runs");
    // The keepalive streams to the first endpoint; kill it (it may be the leader, too).
    members[0].kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let remaining = observer
        .lease_time_to_live(granted.id, false)
        .await
        .expect("ttl");
    assert!(remaining.ttl >= 0, "kept alive through the other members");
    assert!(matches!(keep_alive.state(), LeaseState::Alive { .. }));
}
