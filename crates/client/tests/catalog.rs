//! The catalog API against a real Beacon cluster (skipped when beacond is not built): register,
//! read, discover, maintenance and deregister; the service watch (snapshot, events, resume on
//! another member without gap or duplicate, compaction); and `register_and_keep_alive`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use beacon_client::beaconpb::instance_event::EventType;
use beacon_client::beaconpb::{DiscoverRequest, HealthFilter, HealthStatus, Instance};
use beacon_client::testing::start_beacon_cluster;
use beacon_client::{
    Client, ClientError, ClientOptions, RegistrationState, ServiceUpdate, ServiceWatcher,
};

/// Deadline for any single expected update: generous, but a hang fails instead of blocking CI.
const UPDATE_DEADLINE: Duration = Duration::from_secs(20);

async fn client(endpoints: &[&str]) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(300),
    };
    let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    Client::connect(endpoints, options).await.expect("connect")
}

fn instance(service: &str, id: &str, port: u32) -> Instance {
    Instance {
        service: service.to_string(),
        id: id.to_string(),
        address: "127.0.0.1".to_string(),
        port,
        ..Default::default()
    }
}

async fn next(watcher: &mut ServiceWatcher) -> ServiceUpdate {
    tokio::time::timeout(UPDATE_DEADLINE, watcher.next())
        .await
        .expect("an update within the deadline")
        .expect("an update, not an error")
}

/// An event as the tests compare them: (type, instance id, mod revision of the instance).
type Seen = (EventType, String, i64);

fn events(update: &ServiceUpdate) -> Vec<Seen> {
    match update {
        ServiceUpdate::Snapshot { .. } => panic!("unexpected snapshot"),
        ServiceUpdate::Changes { events, .. } => events
            .iter()
            .map(|event| {
                let instance = event.instance.clone().unwrap_or_default();
                (event.r#type(), instance.id, instance.mod_revision)
            })
            .collect(),
    }
}

/// Every event up to and including `last_revision`.
async fn collect_until(watcher: &mut ServiceWatcher, last_revision: i64) -> Vec<Seen> {
    let mut seen = Vec::new();
    while watcher.next_revision() <= last_revision {
        seen.extend(events(&next(watcher).await));
    }
    seen
}

#[tokio::test]
async fn register_read_discover_maintain_and_deregister() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let mut web1 = instance("web", "web-1", 8080);
    web1.tags = vec!["v1".into(), "canary".into()];
    web1.metadata = HashMap::from([("zone".to_string(), "a".to_string())]);
    web1.weight = 3;
    let registered = client.register(web1.clone()).await.expect("register");
    assert!(registered.created);
    let stored = registered.instance.expect("stored instance");
    assert_eq!(stored.health(), HealthStatus::Passing);
    assert_eq!(stored.weight, 3);
    let again = client.register(web1.clone()).await.expect("re-register");
    assert!(!again.created, "a second register replaces");
    client
        .register(instance("web", "web-2", 8081))
        .await
        .expect("register");
    client
        .register(instance("db", "db-1", 5432))
        .await
        .expect("register");

    let services = client.list_services(false).await.expect("list").services;
    let summary: Vec<(String, u32, u32)> = services
        .iter()
        .map(|service| (service.name.clone(), service.instances, service.passing))
        .collect();
    assert_eq!(
        summary,
        [("db".to_string(), 1, 1), ("web".to_string(), 2, 2)]
    );
    let web = client.get_service("web", false).await.expect("get");
    let mut ids: Vec<String> = web.instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["web-1", "web-2"]);

    let tagged = client
        .discover(DiscoverRequest {
            service: "web".into(),
            tags: vec!["canary".into()],
            metadata: HashMap::from([("zone".to_string(), "a".to_string())]),
            ..Default::default()
        })
        .await
        .expect("discover");
    assert_eq!(tagged.instances.len(), 1);
    assert_eq!(tagged.instances[0].id, "web-1");
    assert!(!tagged.failed_open);
    let limited = client
        .discover(DiscoverRequest {
            service: "web".into(),
            health: HealthFilter::All as i32,
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("discover");
    assert_eq!(limited.instances.len(), 1);

    let drained = client
        .set_maintenance("web", "web-1", true, "deploy")
        .await
        .expect("maintenance")
        .instance
        .expect("instance");
    assert_eq!(
        drained.maintenance.as_ref().map(|m| m.reason.as_str()),
        Some("deploy")
    );
    let missing = client
        .set_maintenance("web", "web-9", true, "")
        .await
        .expect_err("no such instance");
    assert_eq!(missing.code(), Some(tonic::Code::NotFound));

    assert_eq!(
        client.heartbeat("web", "web-1").await.expect("hb").ttl,
        0,
        "a persistent instance has no lease"
    );
    assert!(
        client
            .deregister("web", "web-1")
            .await
            .expect("deregister")
            .deleted
    );
    assert!(
        !client
            .deregister("web", "web-1")
            .await
            .expect("deregister again")
            .deleted
    );
    let invalid = client
        .register(instance("Not A Label", "x", 1))
        .await
        .expect_err("invalid service name");
    assert_eq!(invalid.code(), Some(tonic::Code::InvalidArgument));
}

#[tokio::test]
async fn a_service_watch_sends_the_snapshot_then_every_change() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    client
        .register(instance("api", "api-1", 1))
        .await
        .expect("register");
    client
        .register(instance("other", "o-1", 1))
        .await
        .expect("register");
    let mut watcher = client.watch_service("api", 0).await.expect("watch");
    let ServiceUpdate::Snapshot {
        revision,
        instances,
        ..
    } = next(&mut watcher).await
    else {
        panic!("the first update is the snapshot");
    };
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].id, "api-1");
    assert_eq!(watcher.next_revision(), revision + 1);

    let put = client
        .register(instance("api", "api-2", 2))
        .await
        .expect("register");
    client
        .register(instance("other", "o-2", 1))
        .await
        .expect("register");
    let removed = client.deregister("api", "api-1").await.expect("deregister");
    let put_revision = put.header.expect("header").revision;
    let delete_revision = removed.header.expect("header").revision;
    let first = next(&mut watcher).await;
    assert_eq!(first.revision(), put_revision);
    assert_eq!(
        events(&first),
        [(EventType::Put, "api-2".to_string(), put_revision)]
    );
    let second = next(&mut watcher).await;
    assert_eq!(second.revision(), delete_revision);
    let deleted = events(&second);
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].0, deleted[0].1.as_str()),
        (EventType::Delete, "api-1")
    );

    // A watch from an explicit revision replays history without a snapshot.
    let mut replay = client
        .watch_service("api", put_revision)
        .await
        .expect("watch");
    let mut replayed = Vec::new();
    while replay.next_revision() <= delete_revision {
        replayed.extend(events(&next(&mut replay).await));
    }
    assert_eq!(replayed.len(), 2);
    assert_eq!(
        replayed[0],
        (EventType::Put, "api-2".to_string(), put_revision)
    );
}

#[tokio::test]
async fn a_compacted_start_revision_is_an_error() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let first = client
        .register(instance("api", "api-1", 1))
        .await
        .expect("register");
    let last = client
        .register(instance("api", "api-2", 1))
        .await
        .expect("register");
    let last_revision = last.header.expect("header").revision;
    client.compact(last_revision, true).await.expect("compact");
    let mut watcher = client
        .watch_service("api", first.header.expect("header").revision)
        .await
        .expect("the stream opens; compaction is its first answer");
    let error = tokio::time::timeout(UPDATE_DEADLINE, watcher.next())
        .await
        .expect("an answer")
        .expect_err("compacted");
    assert!(
        matches!(error, ClientError::Compacted { compact_revision, .. } if compact_revision == last_revision),
        "{error}"
    );
}

#[tokio::test]
async fn a_service_watch_resumes_on_another_member_without_gap_or_duplicate() {
    let Some(mut members) = start_beacon_cluster(3, "") else {
        return;
    };
    let endpoints: Vec<String> = members
        .iter()
        .map(|member| member.endpoint().to_string())
        .collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let client = client(&endpoints).await;
    let writer = self::client(&endpoints[1..]).await;
    let mut watcher = client.watch_service("resume", 0).await.expect("watch");
    assert_eq!(watcher.endpoint(), Some(endpoints[0]));
    let snapshot_revision = next(&mut watcher).await.revision();
    let writes = tokio::spawn(async move {
        let mut last = 0;
        for index in 0..150 {
            let registered = loop {
                match writer
                    .register(instance("resume", &format!("r-{index:03}"), 1))
                    .await
                {
                    Ok(registered) => break registered,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            last = registered.header.expect("header").revision;
        }
        last
    });
    let mut seen = collect_until(&mut watcher, snapshot_revision + 30).await;
    members[0].kill();
    let last = writes.await.expect("writer task");
    seen.extend(collect_until(&mut watcher, last).await);
    assert_ne!(watcher.endpoint(), Some(endpoints[0]));

    // Ground truth: the same history replayed by a fresh watch on a live member.
    let mut truth_watcher = client
        .watch_service("resume", snapshot_revision + 1)
        .await
        .expect("watch");
    let truth = collect_until(&mut truth_watcher, last).await;
    assert_eq!(seen, truth);
    let revisions: Vec<i64> = seen.iter().map(|(_, _, revision)| *revision).collect();
    assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]));
    for index in 0..150 {
        let id = format!("r-{index:03}");
        assert!(
            seen.iter().any(|(_, seen_id, _)| *seen_id == id),
            "{id} missing"
        );
    }
}

async fn registered_ids(client: &Client, service: &str) -> Vec<String> {
    let mut ids: Vec<String> = client
        .get_service(service, false)
        .await
        .expect("get")
        .instances
        .into_iter()
        .map(|instance| instance.id)
        .collect();
    ids.sort();
    ids
}

/// Waits (up to `limit`) until `service` has no instance; returns how long it took.
async fn wait_until_empty(client: &Client, service: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !registered_ids(client, service).await.is_empty() {
        assert!(
            started.elapsed() < limit,
            "still registered after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn register_and_keep_alive_lives_until_deregistered() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let registration = client
        .register_and_keep_alive(instance("side", "side-1", 9000), 1)
        .await
        .expect("register");
    let RegistrationState::Registered {
        instance: stored,
        lease_id,
        generation: 1,
        ..
    } = registration.state()
    else {
        panic!("registered: {:?}", registration.state());
    };
    assert_eq!(stored.lease, lease_id);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(registered_ids(&client, "side").await, ["side-1"]);
    registration.deregister().await.expect("deregister");
    assert!(
        registered_ids(&client, "side").await.is_empty(),
        "gone at once"
    );
    let lease = client
        .lease_time_to_live(lease_id, false)
        .await
        .expect("ttl");
    assert_eq!(lease.ttl, -1, "the lease was revoked");
}

#[tokio::test]
async fn a_dropped_registration_expires_with_its_lease() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let registration = client
        .register_and_keep_alive(instance("side", "side-1", 9000), 1)
        .await
        .expect("register");
    drop(registration);
    wait_until_empty(&client, "side", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_instance_registered_again() {
    let Some(members) = start_beacon_cluster(1, "") else {
        return;
    };
    let client = client(&[members[0].endpoint()]).await;
    let registration = client
        .register_and_keep_alive(instance("side", "side-1", 9000), 1)
        .await
        .expect("register");
    let first_lease = registration.lease_id();
    let mut states = registration.subscribe();
    // What a partition longer than the TTL does: the lease ends while its owner lives.
    client.lease_revoke(first_lease).await.expect("revoke");
    let state = tokio::time::timeout(
        UPDATE_DEADLINE,
        states.wait_for(|state| {
            matches!(state, RegistrationState::Registered { generation, .. } if *generation == 2)
        }),
    )
    .await
    .expect("registered again")
    .expect("the registration runs")
    .clone();
    let RegistrationState::Registered { lease_id, .. } = state else {
        unreachable!("matched above");
    };
    assert_ne!(lease_id, first_lease);
    assert_eq!(registered_ids(&client, "side").await, ["side-1"]);
    let instance = client
        .get_service("side", false)
        .await
        .expect("get")
        .instances;
    assert_eq!(instance[0].lease, lease_id);
    registration.deregister().await.expect("deregister");
}
