//! The service catalog on a real 3-member cluster: registration through one member, discovery
//! and service watches through others, filters and fail-open, maintenance, validation, the KV
//! guard on the reserved prefix, ephemeral instances bound to leases, and a service watch that
//! resumes on another member after its own was killed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use beacon_proto::beacon::v1::catalog_client::CatalogClient;
use beacon_proto::beacon::v1::{
    check, instance_event::EventType, Check, DeregisterRequest, DiscoverRequest, GetServiceRequest,
    HealthFilter, HealthStatus, HttpCheck, Instance, ListServicesRequest, RegisterRequest,
    SetMaintenanceRequest, WatchServiceRequest, WatchServiceResponse,
};
use beacon_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
};
use common::{TestCluster, DEADLINE};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn instance(service: &str, id: &str, port: u32, tags: &[&str], meta: &[(&str, &str)]) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        address: "127.0.0.1".into(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// An instance with an HTTP check that has not run yet: critical (the default initial status).
fn unchecked(service: &str, id: &str, port: u32) -> Instance {
    Instance {
        checks: vec![Check {
            kind: Some(check::Kind::Http(HttpCheck {
                url: format!("http://127.0.0.1:{port}/health"),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..instance(service, id, port, &[], &[])
    }
}

async fn register(catalog: &mut CatalogClient<Channel>, instance: Instance) -> i64 {
    let response = catalog
        .register(RegisterRequest {
            instance: Some(instance),
        })
        .await
        .expect("register")
        .into_inner();
    response.header.expect("header").revision
}

fn ids(instances: &[Instance]) -> Vec<String> {
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}

async fn discover(
    catalog: &mut CatalogClient<Channel>,
    request: DiscoverRequest,
) -> (Vec<String>, bool) {
    let response = catalog
        .discover(request)
        .await
        .expect("discover")
        .into_inner();
    (ids(&response.instances), response.failed_open)
}

async fn next(stream: &mut Streaming<WatchServiceResponse>) -> WatchServiceResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a service watch response in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread")]
async fn register_on_one_member_discover_and_watch_on_others() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut writer = cluster.catalog(0).await;
    let mut reader = cluster.catalog(1).await;
    let mut watcher = cluster.catalog(2).await;

    register(
        &mut writer,
        instance("web", "web-1", 8080, &["v1"], &[("zone", "a")]),
    )
    .await;
    let mut watch = watcher
        .watch_service(WatchServiceRequest {
            service: "web".into(),
            start_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let snapshot = next(&mut watch).await;
    assert!(snapshot.snapshot);
    assert_eq!(ids(&snapshot.instances), vec!["web-1"]);
    assert_eq!(snapshot.instances[0].health(), HealthStatus::Passing);

    // Linearizable discovery on another member sees a registration at once.
    let revision = register(
        &mut writer,
        instance("web", "web-2", 8081, &["v2"], &[("zone", "b")]),
    )
    .await;
    let (found, failed_open) = discover(
        &mut reader,
        DiscoverRequest {
            service: "web".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(found, vec!["web-1", "web-2"]);
    assert!(!failed_open);

    let change = next(&mut watch).await;
    assert_eq!(change.header.expect("header").revision, revision);
    assert_eq!(change.events.len(), 1);
    assert_eq!(change.events[0].r#type(), EventType::Put);
    assert_eq!(
        change.events[0].instance.as_ref().expect("instance").id,
        "web-2"
    );

    // Replace is idempotent by id; deregistration is a DELETE carrying the last instance.
    let replaced = writer
        .register(RegisterRequest {
            instance: Some(instance("web", "web-2", 9090, &["v2"], &[])),
        })
        .await
        .expect("replace")
        .into_inner();
    assert!(!replaced.created);
    let change = next(&mut watch).await;
    let event = &change.events[0];
    assert_eq!(event.instance.as_ref().expect("instance").port, 9090);
    assert_eq!(event.prev_instance.as_ref().expect("prev").port, 8081);

    let deleted = writer
        .deregister(DeregisterRequest {
            service: "web".into(),
            id: "web-1".into(),
        })
        .await
        .expect("deregister")
        .into_inner();
    assert!(deleted.deleted);
    let change = next(&mut watch).await;
    assert_eq!(change.events[0].r#type(), EventType::Delete);
    assert_eq!(
        change.events[0].instance.as_ref().expect("instance").id,
        "web-1"
    );
    let again = writer
        .deregister(DeregisterRequest {
            service: "web".into(),
            id: "web-1".into(),
        })
        .await
        .expect("deregister again")
        .into_inner();
    assert!(!again.deleted);

    let services = reader
        .list_services(ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .services;
    assert_eq!(services.len(), 1);
    assert_eq!(
        (services[0].name.as_str(), services[0].instances),
        ("web", 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_filters_maintenance_and_fail_open() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut catalog = cluster.catalog(1).await;
    register(
        &mut catalog,
        instance("api", "a1", 1001, &["v1", "canary"], &[("zone", "a")]),
    )
    .await;
    register(
        &mut catalog,
        instance("api", "a2", 1002, &["v1"], &[("zone", "b")]),
    )
    .await;
    register(&mut catalog, unchecked("api", "a3", 1003)).await;

    let request = |tags: &[&str], meta: &[(&str, &str)], health: HealthFilter| DiscoverRequest {
        service: "api".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        health: health as i32,
        ..Default::default()
    };
    use HealthFilter::{All, Passing, PassingOrElseAll};
    assert_eq!(
        discover(&mut catalog, request(&[], &[], Passing)).await.0,
        vec!["a1", "a2"]
    );
    assert_eq!(
        discover(&mut catalog, request(&[], &[], All)).await.0,
        vec!["a1", "a2", "a3"]
    );
    assert_eq!(
        discover(&mut catalog, request(&["v1", "canary"], &[], Passing))
            .await
            .0,
        vec!["a1"]
    );
    assert_eq!(
        discover(&mut catalog, request(&["v1"], &[("zone", "b")], Passing))
            .await
            .0,
        vec!["a2"]
    );
    assert_eq!(
        discover(&mut catalog, request(&["nope"], &[], All)).await.0,
        Vec::<String>::new()
    );

    // Fail open: only a3 (critical) matches the tag-less, zone-less filter for "c"… use a service
    // whose every instance is critical.
    register(&mut catalog, unchecked("db", "d1", 2001)).await;
    register(&mut catalog, unchecked("db", "d2", 2002)).await;
    let db = |health: HealthFilter| DiscoverRequest {
        service: "db".into(),
        health: health as i32,
        ..Default::default()
    };
    assert_eq!(discover(&mut catalog, db(Passing)).await, (vec![], false));
    assert_eq!(
        discover(&mut catalog, db(PassingOrElseAll)).await,
        (vec!["d1".to_string(), "d2".to_string()], true)
    );

    // Maintenance takes an instance out of discovery (any filter) without deregistering it.
    let maintained = catalog
        .set_maintenance(SetMaintenanceRequest {
            service: "api".into(),
            id: "a1".into(),
            enabled: true,
            reason: "draining".into(),
        })
        .await
        .expect("maintenance on")
        .into_inner();
    assert_eq!(
        maintained
            .instance
            .and_then(|i| i.maintenance)
            .map(|m| m.reason),
        Some("draining".to_string())
    );
    assert_eq!(
        discover(&mut catalog, request(&[], &[], All)).await.0,
        vec!["a2", "a3"]
    );
    let all = catalog
        .get_service(GetServiceRequest {
            service: "api".into(),
            serializable: false,
            include_probes: false,
        })
        .await
        .expect("get")
        .into_inner()
        .instances;
    assert_eq!(ids(&all), vec!["a1", "a2", "a3"]);
    catalog
        .set_maintenance(SetMaintenanceRequest {
            service: "api".into(),
            id: "a1".into(),
            enabled: false,
            reason: String::new(),
        })
        .await
        .expect("maintenance off");
    assert_eq!(
        discover(&mut catalog, request(&[], &[], Passing)).await.0,
        vec!["a1", "a2"]
    );
    let missing = catalog
        .set_maintenance(SetMaintenanceRequest {
            service: "api".into(),
            id: "nope".into(),
            enabled: true,
            reason: String::new(),
        })
        .await
        .expect_err("unknown instance");
    assert_eq!(missing.code(), Code::NotFound);

    // Limit and weighted order return a subset of the matching set.
    let limited = catalog
        .discover(DiscoverRequest {
            service: "api".into(),
            health: All as i32,
            limit: 2,
            order: beacon_proto::beacon::v1::Order::Weighted as i32,
            ..Default::default()
        })
        .await
        .expect("discover")
        .into_inner();
    assert_eq!(limited.instances.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_registrations_and_catalog_keys_are_refused_with_clear_errors() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut catalog = cluster.catalog(0).await;
    let cases = [
        (
            Instance {
                service: "Web_1".into(),
                ..instance("x", "i", 80, &[], &[])
            },
            "service",
        ),
        (
            Instance {
                id: "a/b".into(),
                ..instance("web", "i", 80, &[], &[])
            },
            "id",
        ),
        (
            Instance {
                port: 0,
                ..instance("web", "i", 80, &[], &[])
            },
            "port",
        ),
        (
            Instance {
                port: 70000,
                ..instance("web", "i", 80, &[], &[])
            },
            "port",
        ),
        (
            Instance {
                address: "not an address!".into(),
                ..instance("web", "i", 80, &[], &[])
            },
            "address",
        ),
    ];
    for (bad, field) in cases {
        let status = catalog
            .register(RegisterRequest {
                instance: Some(bad.clone()),
            })
            .await
            .expect_err("invalid instance refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let unknown_lease = catalog
        .register(RegisterRequest {
            instance: Some(Instance {
                lease: 12345,
                ..instance("web", "i", 80, &[], &[])
            }),
        })
        .await
        .expect_err("unknown lease");
    assert_eq!(unknown_lease.code(), Code::NotFound);
    assert_eq!(
        unknown_lease.message(),
        "etcdserver: requested lease not found"
    );

    // The KV API may write under /_beacon/ only valid catalog records.
    let mut kv = cluster.kv(1).await;
    let refused = kv
        .put(PutRequest {
            key: b"/_beacon/instances/web/w1".to_vec(),
            value: b"garbage".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("garbage record refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = kv
        .put(PutRequest {
            key: b"/_beacon/other".to_vec(),
            value: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("unknown reserved key refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A valid record written through the KV API is a registration like any other.
    let record = br#"{"service":"web","id":"w1","address":"10.0.0.1","port":80}"#;
    kv.put(PutRequest {
        key: b"/_beacon/instances/web/w1".to_vec(),
        value: record.to_vec(),
        ..Default::default()
    })
    .await
    .expect("valid record accepted");
    let found = catalog
        .get_service(GetServiceRequest {
            service: "web".into(),
            serializable: false,
            include_probes: false,
        })
        .await
        .expect("get")
        .into_inner()
        .instances;
    assert_eq!(ids(&found), vec!["w1"]);
    // And etcd clients read the catalog as JSON.
    let raw = kv
        .range(RangeRequest {
            key: b"/_beacon/instances/web/w1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let json: serde_json::Value = serde_json::from_slice(&raw.kvs[0].value).expect("json record");
    assert_eq!(json["address"], "10.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ephemeral_instance_leaves_with_its_lease_and_not_before() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut lease = cluster.lease(0).await;
    let ttl = 4;
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let mut catalog = cluster.catalog(1).await;
    register(
        &mut catalog,
        Instance {
            lease: granted.id,
            ..instance("cache", "c1", 6379, &[], &[])
        },
    )
    .await;
    let mut watch = cluster
        .catalog(2)
        .await
        .watch_service(WatchServiceRequest {
            service: "cache".into(),
            start_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(ids(&next(&mut watch).await.instances), vec!["c1"]);

    // Kept alive for 2×TTL through a member: still there.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut keepalive = cluster
        .lease(2)
        .await
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("keepalive stream")
        .into_inner();
    let mut last_renewal = Instant::now();
    let kept_until = Instant::now() + Duration::from_secs(2 * ttl as u64);
    while Instant::now() < kept_until {
        sender
            .send(LeaseKeepAliveRequest { id: granted.id })
            .await
            .expect("send");
        let answer = keepalive.message().await.expect("keepalive").expect("open");
        assert_eq!(answer.ttl, ttl);
        last_renewal = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let still = catalog
        .get_service(GetServiceRequest {
            service: "cache".into(),
            serializable: false,
            include_probes: false,
        })
        .await
        .expect("get")
        .into_inner()
        .instances;
    assert_eq!(ids(&still), vec!["c1"]);

    // The registrar goes away: the instance leaves within TTL + a margin, never before TTL.
    drop(sender);
    drop(keepalive);
    let gone = next(&mut watch).await;
    let elapsed = last_renewal.elapsed();
    assert_eq!(gone.events[0].r#type(), EventType::Delete);
    assert!(
        elapsed >= Duration::from_secs(ttl as u64),
        "expired early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(ttl as u64 + 3),
        "expired late: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_watch_resumes_on_another_member_after_its_member_is_killed() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let watched = (leader + 1) % 3;
    let writer_index = (leader + 2) % 3;
    let mut writer = cluster.catalog(writer_index).await;
    let mut watch = cluster
        .catalog(watched)
        .await
        .watch_service(WatchServiceRequest {
            service: "q".into(),
            start_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let snapshot = next(&mut watch).await;
    assert!(snapshot.instances.is_empty());
    let mut seen = Vec::new();
    let mut last_revision = snapshot.header.expect("header").revision;
    for n in 0..5 {
        register(
            &mut writer,
            instance("q", &format!("q{n}"), 7000 + n, &[], &[]),
        )
        .await;
    }
    while seen.len() < 5 {
        let change = next(&mut watch).await;
        last_revision = change.header.expect("header").revision;
        seen.extend(
            change
                .events
                .iter()
                .map(|e| e.instance.as_ref().expect("i").id.clone()),
        );
    }
    cluster.kill(watched);
    for n in 5..10 {
        register(
            &mut writer,
            instance("q", &format!("q{n}"), 7000 + n, &[], &[]),
        )
        .await;
    }
    let mut resumed = cluster
        .catalog(writer_index)
        .await
        .watch_service(WatchServiceRequest {
            service: "q".into(),
            start_revision: last_revision + 1,
        })
        .await
        .expect("resume")
        .into_inner();
    while seen.len() < 10 {
        let change = next(&mut resumed).await;
        assert!(!change.snapshot);
        seen.extend(
            change
                .events
                .iter()
                .map(|e| e.instance.as_ref().expect("i").id.clone()),
        );
    }
    let expected: Vec<String> = (0..10).map(|n| format!("q{n}")).collect();
    assert_eq!(seen, expected, "no gap, no duplicate, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_fails_open_below_its_min_healthy_ratio() {
    use beacon_proto::beacon::v1::{ServiceSettings, SetServiceSettingsRequest};
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader().await;
    let mut catalog = cluster.catalog(2).await;
    register(&mut catalog, instance("pay", "p1", 3001, &[], &[])).await;
    register(&mut catalog, unchecked("pay", "p2", 3002)).await;
    register(&mut catalog, unchecked("pay", "p3", 3003)).await;
    let discover_default = DiscoverRequest {
        service: "pay".into(),
        ..Default::default()
    };
    // One of three passes: without a threshold only the passing one is returned.
    assert_eq!(
        discover(&mut catalog, discover_default.clone()).await,
        (vec!["p1".to_string()], false)
    );
    let bad = catalog
        .set_service_settings(SetServiceSettingsRequest {
            settings: Some(ServiceSettings {
                service: "pay".into(),
                min_healthy: 1.5,
                dns_ttl_s: 5,
            }),
        })
        .await
        .expect_err("a ratio above 1 is refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    catalog
        .set_service_settings(SetServiceSettingsRequest {
            settings: Some(ServiceSettings {
                service: "pay".into(),
                min_healthy: 0.5,
                dns_ttl_s: 5,
            }),
        })
        .await
        .expect("settings");
    // 1/3 < 0.5: fail open, every instance; strict passing never fails open.
    assert_eq!(
        discover(&mut catalog, discover_default).await,
        (
            vec!["p1".to_string(), "p2".to_string(), "p3".to_string()],
            true
        )
    );
    let strict = DiscoverRequest {
        service: "pay".into(),
        health: HealthFilter::Passing as i32,
        ..Default::default()
    };
    assert_eq!(
        discover(&mut catalog, strict).await,
        (vec!["p1".to_string()], false)
    );
    let shown = catalog
        .get_service(GetServiceRequest {
            service: "pay".into(),
            serializable: false,
            include_probes: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(shown.failed_open);
    assert_eq!(shown.settings.map(|s| s.min_healthy), Some(0.5));
    let listed = catalog
        .list_services(ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .services;
    assert!(listed.iter().any(|s| s.name == "pay" && s.failed_open));
}
