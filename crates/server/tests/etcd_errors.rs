//! etcd's limits and errors through the gRPC API of a real cluster: exact codes and messages.

mod common;

use beacon_proto::etcdserverpb::{
    request_op, CompactionRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use common::TestCluster;
use tonic::Code;

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_limits_and_errors() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let mut kv = cluster.kv(follower).await;

    // 1.5 MiB is etcd's request limit; just above it is refused before Raft.
    let big = PutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; 1536 * 1024 + 1],
        ..Default::default()
    };
    let status = kv.put(big).await.expect_err("too large");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "etcdserver: request is too large")
    );
    // Just below the limit is fine.
    let fits = PutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; 1024 * 1024],
        ..Default::default()
    };
    kv.put(fits).await.expect("a 1 MiB value fits");

    let empty = PutRequest {
        key: Vec::new(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let status = kv.put(empty).await.expect_err("empty key");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );

    let too_many = TxnRequest {
        success: (0..129).map(|i| put_op(&format!("k{i}"))).collect(),
        ..Default::default()
    };
    let status = kv.txn(too_many).await.expect_err("too many ops");
    assert_eq!(
        status.message(),
        "etcdserver: too many operations in txn request"
    );
    let at_limit = TxnRequest {
        success: (0..128).map(|i| put_op(&format!("k{i}"))).collect(),
        ..Default::default()
    };
    let response = kv
        .txn(at_limit)
        .await
        .expect("128 ops are allowed")
        .into_inner();
    assert!(response.succeeded);
    assert_eq!(response.responses.len(), 128);

    let duplicate = TxnRequest {
        success: vec![put_op("dup"), put_op("dup")],
        ..Default::default()
    };
    let status = kv.txn(duplicate).await.expect_err("duplicate key");
    assert_eq!(
        status.message(),
        "etcdserver: duplicate key given in txn request"
    );

    let ignore_missing = PutRequest {
        key: b"missing".to_vec(),
        ignore_value: true,
        ..Default::default()
    };
    let status = kv
        .put(ignore_missing)
        .await
        .expect_err("ignore_value on a missing key");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "etcdserver: key not found")
    );

    let leased = PutRequest {
        key: b"leased".to_vec(),
        value: b"v".to_vec(),
        lease: 42,
        ..Default::default()
    };
    let status = kv.put(leased).await.expect_err("no such lease");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );

    // Revisions: future and compacted.
    let current = kv
        .put(PutRequest {
            key: b"r".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put");
    let current = current.into_inner().header.expect("header").revision;
    let future = RangeRequest {
        key: b"r".to_vec(),
        revision: current + 10,
        ..Default::default()
    };
    let status = kv.range(future).await.expect_err("future revision");
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    kv.compact(CompactionRequest {
        revision: current,
        physical: false,
    })
    .await
    .expect("compact");
    let old = RangeRequest {
        key: b"r".to_vec(),
        revision: current - 1,
        ..Default::default()
    };
    let status = kv.range(old).await.expect_err("compacted");
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    let status = kv
        .compact(CompactionRequest {
            revision: current - 1,
            physical: false,
        })
        .await
        .expect_err("again");
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    // Every response carries a full header.
    let response = kv
        .range(RangeRequest {
            key: b"r".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range");
    let header = response.into_inner().header.expect("header");
    assert_eq!(header.member_id, cluster.nodes[follower].id);
    assert_ne!(header.cluster_id, 0);
    assert!(header.raft_term >= 1);
    assert_eq!(header.revision, current);

    // grpc.health.v1 answers SERVING on every member.
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        cluster.nodes[follower].client_addr
    ))
    .expect("uri")
    .connect_lazy();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
