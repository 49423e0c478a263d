//! The space quota (NOSPACE alarm, etcd's refusals, disarm, defragment) and auto-compaction by
//! revision retention, on real 3-member clusters.

mod common;

use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::alarm_request::AlarmAction;
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{
    AlarmRequest, AlarmType, DefragmentRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
    RangeRequest, StatusRequest, WatchCreateRequest,
};
use common::{TestCluster, WatchSession, DEADLINE};
use tonic::Code;

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

#[tokio::test(flavor = "multi_thread")]
async fn over_the_quota_writes_are_refused_until_the_alarm_is_disarmed() {
    let cluster = TestCluster::start_with(3, "[limits]\nquota_backend_bytes = 1000000\n");
    let leader = cluster.wait_for_leader().await;
    let mut kv = cluster.kv((leader + 1) % 3).await;
    let value = vec![b'x'; 100_000];
    let deadline = Instant::now() + DEADLINE;
    let mut written = 0;
    let refused = loop {
        let put = kv
            .put(PutRequest {
                key: format!("big/{written:04}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => written += 1,
            Err(status) => break status,
        }
        assert!(
            Instant::now() < deadline,
            "never refused after {written} puts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::ResourceExhausted, NO_SPACE)
    );
    assert!(written >= 10, "refused after only {written} puts of 100 kB");

    let mut maintenance = cluster.maintenance(leader).await;
    let alarms = maintenance
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            ..Default::default()
        })
        .await
        .expect("alarm list")
        .into_inner()
        .alarms;
    assert!(!alarms.is_empty());
    assert!(alarms.iter().all(|a| a.alarm == AlarmType::Nospace as i32));
    let status = maintenance
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(
        status.errors.iter().any(|e| e.ends_with("alarm:NOSPACE")),
        "{:?}",
        status.errors
    );

    // What etcd refuses, and what it still allows.
    let grant = cluster
        .lease(leader)
        .await
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect_err("lease grant");
    assert_eq!(grant.message(), NO_SPACE);
    let count = kv
        .range(RangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("reads work")
        .into_inner()
        .count;
    assert_eq!(count, written);
    kv.delete_range(DeleteRangeRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        ..Default::default()
    })
    .await
    .expect("deletes work");

    // Defragment answers on every member and never grows the database.
    for index in 0..3 {
        let mut maintenance = cluster.maintenance(index).await;
        let before = maintenance
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .db_size;
        maintenance
            .defragment(DefragmentRequest {})
            .await
            .expect("defragment");
        let after = maintenance
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .db_size;
        assert!(after <= before, "member {index}: {before} -> {after}");
    }

    // Disarmed, writes work again; the Raft log still holds the big values, so the members
    // are still over their quota and raise the alarm again.
    let disarmed = maintenance
        .alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 0,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .expect("disarm")
        .into_inner();
    assert!(disarmed.alarms.is_empty(), "{:?}", disarmed.alarms);
    kv.put(PutRequest {
        key: b"small".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await
    .expect("a write after the disarm");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let alarms = maintenance
            .alarm(AlarmRequest {
                action: AlarmAction::Get as i32,
                ..Default::default()
            })
            .await
            .expect("alarm list")
            .into_inner()
            .alarms;
        if !alarms.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm was never raised again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_keeps_the_configured_revisions() {
    let cluster =
        TestCluster::start_with(3, "[compaction]\nmode = \"revision\"\nretention = \"10\"\n");
    let leader = cluster.wait_for_leader().await;
    let mut last = 0;
    for n in 0..40 {
        last = cluster.put(leader, &format!("k/{n}"), "v").await;
    }
    let mut kv = cluster.kv(leader).await;
    let deadline = Instant::now() + DEADLINE;
    let compacted = loop {
        let old = kv
            .range(RangeRequest {
                key: b"k/0".to_vec(),
                revision: 2,
                ..Default::default()
            })
            .await;
        if let Err(status) = old {
            break status;
        }
        assert!(Instant::now() < deadline, "never compacted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        compacted.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // The retained revisions are still readable.
    kv.range(RangeRequest {
        key: b"k/39".to_vec(),
        revision: last - 5,
        ..Default::default()
    })
    .await
    .expect("a revision within the retention");
    // A watch from a compacted revision is cancelled with the compact revision, as etcd does.
    let mut watch = WatchSession::open(&cluster, (leader + 1) % 3).await;
    watch
        .send(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            start_revision: 2,
            ..Default::default()
        }))
        .await;
    let response = watch.next().await;
    let response = if response.created && !response.canceled {
        watch.next().await
    } else {
        response
    };
    assert!(response.canceled, "{response:?}");
    assert!(response.compact_revision > 2, "{response:?}");
    assert!(response.compact_revision >= last - 10 - 5, "{response:?}");
}
