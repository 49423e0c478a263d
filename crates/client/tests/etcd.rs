//! The client against a real etcd (skipped when `etcd` is not installed): KV round trips, and
//! the failover rule — a write fails over only when it was never sent.

use std::net::TcpListener;
use std::time::Duration;

use beacon_client::testing::EtcdProcess;
use beacon_client::{
    pb, Client, ClientError, ClientOptions, DeleteOptions, GetOptions, PutOptions,
};

fn quick_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(300),
    }
}

/// A loopback port that is bound but not listening, so connecting is refused and no concurrent
/// test can take the port while the returned socket lives.
fn refused_endpoint() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = socket.local_addr().expect("address").port();
    (socket, format!("127.0.0.1:{port}"))
}

#[tokio::test]
async fn kv_round_trip() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let client = Client::connect(vec![etcd.endpoint().to_string()], ClientOptions::default())
        .await
        .expect("connect");
    client
        .put("dir/a", "1", PutOptions::default())
        .await
        .expect("put a");
    client
        .put("dir/b", "2", PutOptions::default())
        .await
        .expect("put b");
    let previous = client
        .put(
            "dir/a",
            "3",
            PutOptions {
                prev_kv: true,
                ..Default::default()
            },
        )
        .await
        .expect("overwrite a");
    assert_eq!(previous.prev_kv.expect("prev kv").value, b"1");

    let prefix = GetOptions {
        prefix: true,
        ..Default::default()
    };
    let range = client
        .get("dir/", prefix.clone())
        .await
        .expect("get prefix");
    let keys: Vec<_> = range.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"dir/a".to_vec(), b"dir/b".to_vec()]);
    assert_eq!(range.kvs[0].value, b"3");

    let swap = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            key: b"dir/a".to_vec(),
            target_union: Some(pb::compare::TargetUnion::Value(b"3".to_vec())),
            range_end: vec![],
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"dir/a".to_vec(),
                value: b"4".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    assert!(client.txn(swap.clone()).await.expect("txn").succeeded);
    assert!(!client.txn(swap).await.expect("txn again").succeeded);

    let deleted = client
        .delete(
            "dir/",
            DeleteOptions {
                prefix: true,
                ..Default::default()
            },
        )
        .await
        .expect("delete prefix");
    assert_eq!(deleted.deleted, 2);

    let revision = deleted.header.expect("header").revision;
    client.compact(revision, false).await.expect("compact");
    let error = client
        .get(
            "dir/a",
            GetOptions {
                revision: 1,
                ..Default::default()
            },
        )
        .await
        .expect_err("compacted revision");
    assert_eq!(error.code(), Some(tonic::Code::OutOfRange));
    assert_eq!(
        error.message(),
        Some("etcdserver: mvcc: required revision has been compacted")
    );

    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members.len(), 1);
    let status = client.status(etcd.endpoint()).await.expect("status");
    assert!(status.version.starts_with('3'));
}

#[tokio::test]
async fn unreachable_endpoint_fails_over_for_reads_and_writes() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let (_refusing, refused) = refused_endpoint();
    let client = Client::connect(vec![refused, etcd.endpoint().to_string()], quick_options())
        .await
        .expect("connect");
    client
        .put("failover", "written", PutOptions::default())
        .await
        .expect("a write that was never sent may go to the next endpoint");
    let range = client
        .get("failover", GetOptions::default())
        .await
        .expect("get");
    assert_eq!(range.kvs[0].value, b"written");
}

#[tokio::test]
async fn all_endpoints_unreachable_is_reported_as_such() {
    let (_first, first) = refused_endpoint();
    let (_second, second) = refused_endpoint();
    let client = Client::connect(vec![first, second], quick_options())
        .await
        .expect("connect");
    let error = client
        .put("k", "v", PutOptions::default())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
}

/// Jepsen's jetcd lost-update bug: a write that may have reached a server must not be replayed
/// on another endpoint. Here the first "server" accepts the connection and never answers.
#[tokio::test]
async fn ambiguous_write_is_not_replayed_but_read_is() {
    let Some(etcd) = EtcdProcess::start() else {
        return;
    };
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_endpoint = format!("127.0.0.1:{}", silent.local_addr().expect("address").port());
    let client = Client::connect(
        vec![silent_endpoint, etcd.endpoint().to_string()],
        quick_options(),
    )
    .await
    .expect("connect");

    let error = client
        .put("ambiguous", "v", PutOptions::default())
        .await
        .expect_err("the silent server never answers");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");

    // The read fails over to etcd, and shows the write was not replayed there.
    let client = Client::connect(
        vec![
            format!("127.0.0.1:{}", silent.local_addr().expect("address").port()),
            etcd.endpoint().to_string(),
        ],
        quick_options(),
    )
    .await
    .expect("connect");
    let range = client
        .get("ambiguous", GetOptions::default())
        .await
        .expect("read fails over");
    assert!(range.kvs.is_empty());
}
