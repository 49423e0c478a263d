//! A harness for integration tests: real `beacond` processes on loopback, each with its own
//! generated config and temp data directory, killed when the cluster is dropped.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use beacon_proto::etcdserverpb::kv_client::KvClient;
use beacon_proto::etcdserverpb::lease_client::LeaseClient;
use beacon_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use beacon_proto::etcdserverpb::watch_client::WatchClient;
use beacon_proto::etcdserverpb::watch_request::RequestUnion;
use beacon_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use beacon_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// Generous bound for anything a healthy cluster does (elections take ~1-2 s).
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// DNS (UDP and TCP), 127.0.0.1:port.
    pub dns_addr: String,
    /// Metrics and health (HTTP), 127.0.0.1:port.
    pub http_addr: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
}

/// A loopback port for a member to listen on (outside the ephemeral range, so no concurrent
/// test's outgoing connection can take it before the member binds it).
pub fn free_port() -> u16 {
    beacon_client::testing::free_listen_port()
}

impl TestCluster {
    /// Writes configs for `size` members and starts them all.
    pub fn start(size: usize) -> Self {
        Self::start_with(size, "")
    }

    /// Like [`TestCluster::start`], with `extra` TOML (whole tables, e.g. `[watch]\n...`)
    /// appended to every member's config. A port chosen free can still be taken by another test
    /// before a member binds it; a member that exits at once is then a lost race, not a bug,
    /// and the whole cluster is started again on new ports.
    pub fn start_with(size: usize, extra: &str) -> Self {
        Self::start_full(size, "", extra, "", &|_| {})
    }

    /// Like [`TestCluster::start_with`], with `raft` lines added to every member's `[raft]`
    /// table, and `prepare` run after the configs are written and before any member starts
    /// (e.g. `beacond restore` into each data directory; it runs again if the cluster is
    /// started again on new ports).
    pub fn start_configured(
        size: usize,
        raft: &str,
        extra: &str,
        prepare: impl Fn(&TestCluster),
    ) -> Self {
        Self::start_full(size, raft, extra, "", &prepare)
    }

    /// Like [`TestCluster::start_with`], with `dns` lines (keys, not a table) added to every
    /// member's `[dns]` table, which the harness writes to give each member its own DNS port.
    pub fn start_with_dns(size: usize, extra: &str, dns: &str) -> Self {
        Self::start_full(size, "", extra, dns, &|_| {})
    }

    fn start_full(
        size: usize,
        raft: &str,
        extra: &str,
        dns: &str,
        prepare: &dyn Fn(&TestCluster),
    ) -> Self {
        for _ in 0..4 {
            let mut cluster = Self::start_once(size, raft, extra, dns, prepare);
            std::thread::sleep(Duration::from_millis(300));
            if cluster.nodes.iter_mut().all(|node| {
                node.child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
            }) {
                return cluster;
            }
            eprintln!(
                "a member exited at start (port taken?); starting again:\n{}",
                cluster.logs()
            );
        }
        Self::start_once(size, raft, extra, dns, prepare)
    }

    fn start_once(
        size: usize,
        raft: &str,
        extra: &str,
        dns: &str,
        prepare: &dyn Fn(&TestCluster),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<(String, String, String, String)> = (0..size)
            .map(|_| {
                (
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let mut members = String::new();
        for (index, (client, peer, _, _)) in addrs.iter().enumerate() {
            members.push_str(&format!(
                "\n[[initial_members]]\nid = {}\nname = \"node{}\"\npeer = \"{peer}\"\nclient = \"{client}\"\n",
                index + 1,
                index + 1
            ));
        }
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(index, (client, peer, dns_addr, http))| {
                let id = index as u64 + 1;
                let data_dir = dir.path().join(format!("node{id}"));
                let config = format!(
                    "name = \"node{id}\"\nid = {id}\ndata_dir = \"{}\"\ncluster_token = \"test\"\n\
                     [client]\nlisten = \"{client}\"\n[peer]\nlisten = \"{peer}\"\n\
                     [dns]\nlisten = \"{dns_addr}\"\n{dns}\n\
                     [http]\nlisten = \"{http}\"\n\
                     [raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n{raft}\n{members}\n{extra}\n",
                    data_dir.display()
                );
                let config_path = dir.path().join(format!("node{id}.toml"));
                std::fs::write(&config_path, config).expect("write config");
                TestNode {
                    id,
                    client_addr: client.clone(),
                    peer_addr: peer.clone(),
                    dns_addr: dns_addr.clone(),
                    http_addr: http.clone(),
                    config_path,
                    data_dir,
                    log_path: dir.path().join(format!("node{id}.log")),
                    child: None,
                }
            })
            .collect();
        let mut cluster = TestCluster { dir, nodes };
        prepare(&cluster);
        for index in 0..size {
            cluster.start_node(index);
        }
        cluster
    }

    /// Writes the config of a member that joins this (running) cluster with `id` (as MemberAdd
    /// returned it), on new ports, with `initial_cluster_state = "existing"`; returns its index.
    /// Not started: see [`TestCluster::start_node`].
    pub fn prepare_joining_node(&mut self, id: u64) -> usize {
        let index = self.nodes.len();
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let dns_addr = format!("127.0.0.1:{}", free_port());
        let http_addr = format!("127.0.0.1:{}", free_port());
        let name = format!("node{}", index + 1);
        let data_dir = self.dir.path().join(&name);
        let mut members = String::new();
        for node in &self.nodes {
            members.push_str(&format!(
                "\n[[initial_members]]\nid = {}\nname = \"node{}\"\npeer = \"{}\"\nclient = \"{}\"\n",
                node.id, node.id, node.peer_addr, node.client_addr
            ));
        }
        let config = format!(
            "name = \"{name}\"\nid = {id}\ndata_dir = \"{}\"\ncluster_token = \"test\"\n\
             initial_cluster_state = \"existing\"\n\
             [client]\nlisten = \"{client}\"\n[peer]\nlisten = \"{peer}\"\n\
             [dns]\nlisten = \"{dns_addr}\"\n\
             [http]\nlisten = \"{http_addr}\"\n\
             [raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n{members}\n",
            data_dir.display()
        );
        let config_path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        self.nodes.push(TestNode {
            id,
            client_addr: client,
            peer_addr: peer,
            dns_addr,
            http_addr,
            config_path,
            data_dir,
            log_path: self.dir.path().join(format!("{name}.log")),
            child: None,
        });
        index
    }

    /// Whether member `index`'s process has exited (and with which status).
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.nodes[index]
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    pub fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "node {} already running", node.id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_beacond"))
            .arg("--config")
            .arg(&node.config_path)
            .env("RUST_LOG", "info,openraft=info")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn beacond");
        node.child = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    /// Returns how long the member took to exit, or `None` if it had to be killed after 10 s.
    pub fn stop(&mut self, index: usize) -> Option<Duration> {
        let mut child = self.nodes[index].child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGSTOP (`pause = true`) or SIGCONT a member: it stays connected but answers nothing.
    pub fn pause(&self, index: usize, pause: bool) {
        if let Some(child) = &self.nodes[index].child {
            let signal = if pause { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
        }
    }

    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn kv(&self, index: usize) -> KvClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.nodes[index].client_addr))
            .expect("valid uri")
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        KvClient::new(channel)
    }

    /// A Lease client on member `index` (no overall timeout: keepalive streams live long).
    pub async fn lease(&self, index: usize) -> LeaseClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.nodes[index].client_addr))
            .expect("valid uri")
            .connect_lazy();
        LeaseClient::new(channel)
    }

    /// A Watch client on member `index` (no overall timeout: streams live long; large
    /// responses allowed, as etcd's clients do).
    pub async fn watch(&self, index: usize) -> WatchClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.nodes[index].client_addr))
            .expect("valid uri")
            .connect_lazy();
        WatchClient::new(channel).max_decoding_message_size(usize::MAX)
    }

    /// A Catalog client on member `index` (no overall timeout: service watches live long).
    pub async fn catalog(
        &self,
        index: usize,
    ) -> beacon_proto::beacon::v1::catalog_client::CatalogClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.nodes[index].client_addr))
            .expect("valid uri")
            .connect_lazy();
        beacon_proto::beacon::v1::catalog_client::CatalogClient::new(channel)
    }

    pub async fn maintenance(&self, index: usize) -> MaintenanceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.nodes[index].client_addr))
            .expect("valid uri")
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        MaintenanceClient::new(channel)
    }

    /// Waits until every running member reports the same leader, which is running; returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut leaders = Vec::new();
            for (index, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() {
                    continue;
                }
                let status = self.maintenance(index).await.status(StatusRequest {}).await;
                leaders.push(status.map(|s| s.into_inner().leader).unwrap_or(0));
            }
            if let Some(&leader) = leaders.first() {
                if leader != 0 && leaders.iter().all(|l| *l == leader) {
                    if let Some(index) = self
                        .nodes
                        .iter()
                        .position(|n| n.id == leader && n.child.is_some())
                    {
                        return index;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {DEADLINE:?}: {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts through member `index`, retrying only while no leader is available
    /// (Unavailable errors that say so); any other error fails the test.
    pub async fn put(&self, index: usize, key: &str, value: &str) -> i64 {
        let deadline = Instant::now() + DEADLINE;
        let mut kv = self.kv(index).await;
        loop {
            let request = PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            };
            match kv.put(request).await {
                Ok(response) => return response.into_inner().header.expect("header").revision,
                Err(status)
                    if status.message() == "etcdserver: no leader" && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!(
                    "put {key} via node {} failed: {status}\n{}",
                    index + 1,
                    self.logs()
                ),
            }
        }
    }

    pub async fn get(&self, index: usize, key: &str, serializable: bool) -> Option<(String, i64)> {
        let request = RangeRequest {
            key: key.into(),
            serializable,
            ..Default::default()
        };
        // Errors (a member still starting) read as "not there": callers compare with what they expect.
        let response = self.kv(index).await.range(request).await.ok()?.into_inner();
        response.kvs.first().map(|kv| {
            (
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )
        })
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node{} ---\n{}", node.id, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// One watch stream, as a test drives it.
pub struct WatchSession {
    pub requests: mpsc::Sender<WatchRequest>,
    pub responses: Streaming<WatchResponse>,
}

impl WatchSession {
    pub async fn open(cluster: &TestCluster, index: usize) -> Self {
        Self::try_open(cluster, index, false)
            .await
            .expect("open watch stream")
    }

    pub async fn try_open(
        cluster: &TestCluster,
        index: usize,
        has_leader: bool,
    ) -> Result<Self, tonic::Status> {
        let (requests, receiver) = mpsc::channel(64);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        if has_leader {
            request
                .metadata_mut()
                .insert("hasleader", "true".parse().expect("ascii"));
        }
        let responses = cluster
            .watch(index)
            .await
            .watch(request)
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    pub async fn send(&self, request: RequestUnion) {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("stream open");
    }

    pub async fn try_next(&mut self) -> Result<WatchResponse, tonic::Status> {
        match tokio::time::timeout(DEADLINE, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => panic!("watch stream ended"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no watch response within {DEADLINE:?}"),
        }
    }

    pub async fn next(&mut self) -> WatchResponse {
        self.try_next().await.expect("watch response")
    }

    /// Creates a watch and returns its id, checking the created response.
    pub async fn create(&mut self, request: WatchCreateRequest) -> i64 {
        self.send(RequestUnion::CreateRequest(request)).await;
        let response = self.next().await;
        assert!(response.created, "expected created: {response:?}");
        assert!(!response.canceled, "unexpected cancel: {response:?}");
        response.watch_id
    }
}
