//! `beacond` with no arguments: a single-node cluster on 127.0.0.1:2379 with its data in
//! ./default.beacon, which keeps its data across a restart.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::kv_client::KvClient;
use beacon_proto::etcdserverpb::{PutRequest, RangeRequest};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_beacond"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn beacond"),
    )
}

async fn connect() -> KvClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = KvClient::connect("http://127.0.0.1:2379").await {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "beacond never listened on 127.0.0.1:2379"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_until_leader(kv: &mut KvClient<tonic::transport::Channel>) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        match kv.put(request).await {
            Ok(response) => return response.into_inner().header.expect("header").revision,
            Err(status) => assert!(Instant::now() < deadline, "no leader: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_arguments_runs_a_single_node_cluster_on_the_default_port() {
    if std::net::TcpListener::bind("127.0.0.1:2379").is_err() {
        panic!("127.0.0.1:2379 is in use; stop the local cluster (scripts/cluster.sh stop) before the tests");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let revision = {
        let _node = start(dir.path());
        let mut kv = connect().await;
        put_until_leader(&mut kv).await
    };
    assert!(dir.path().join("default.beacon").is_dir());
    let _node = start(dir.path());
    let mut kv = connect().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
        {
            let kvs = response.into_inner().kvs;
            assert_eq!(kvs.len(), 1, "the write survived the restart");
            assert_eq!(kvs[0].mod_revision, revision);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted single node never served a read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
