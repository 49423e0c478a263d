//! Test harness (feature `testing`): a real etcd (one member or a cluster) on free loopback ports
//! in a temp dir, so client and CLI tests exercise the wire protocol against the reference
//! server, including a member killed and restarted.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Client, ClientOptions};

/// A running etcd member, killed when dropped. It can be killed and restarted on the same ports
/// and data dir, to test what clients do across a member failure.
pub struct EtcdProcess {
    child: Option<Child>,
    endpoint: String,
    /// The full etcd command line, reused by [`EtcdProcess::restart`].
    arguments: Vec<String>,
    log_path: PathBuf,
    /// Shared by the members of one cluster; removed when the last one drops.
    _directory: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for EtcdProcess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdProcess")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Whether an `etcd` binary is on the PATH; tests skip (pass vacuously) without one.
pub fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A loopback port that was free a moment ago (held until the listener drops).
fn free_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let port = listener.local_addr().expect("bound address").port();
    (listener, port)
}

impl EtcdProcess {
    /// Starts a single-node etcd and waits (up to 30 s) until it serves a linearizable read.
    /// Returns `None` when etcd is not installed. Panics with etcd's log on any other failure:
    /// this is test code.
    pub fn start() -> Option<EtcdProcess> {
        EtcdProcess::start_with(&[])
    }

    /// [`EtcdProcess::start`] with extra etcd flags (e.g.
    /// `--experimental-watch-progress-notify-interval=100ms`).
    pub fn start_with(extra_arguments: &[&str]) -> Option<EtcdProcess> {
        let mut members = start_cluster(1, extra_arguments)?;
        members.pop()
    }

    /// Kills the member with SIGKILL (no graceful shutdown), keeping its ports and data dir.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on the same ports and data dir (after [`EtcdProcess::kill`]) and
    /// waits until it serves a linearizable read (its peers must be up for that).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_until_ready(Duration::from_secs(30));
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open etcd log");
        let child = Command::new("etcd")
            .args(&self.arguments)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_until_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let endpoint = self.endpoint.clone();
        // Our own runtime on a separate thread: callers may already be inside a tokio runtime.
        let probe = move || {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a probe runtime");
                runtime.block_on(async {
                    let options = ClientOptions {
                        request_timeout: Duration::from_secs(1),
                        connect_timeout: Duration::from_millis(200),
                    };
                    let client = Client::connect(vec![endpoint.clone()], options).await?;
                    // Linearizable: answered only once the member has a leader.
                    client.get("etcd-ready-probe", Default::default()).await
                })
            })
            .join()
            .expect("probe thread")
        };
        loop {
            let child = self.child.as_mut().expect("waiting on a running member");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            if probe.clone()().is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("etcd not ready after {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a `size`-member etcd cluster on free loopback ports in one temp dir and waits until
/// every member serves a linearizable read. `None` when etcd is not installed.
pub fn start_cluster(size: usize, extra_arguments: &[&str]) -> Option<Vec<EtcdProcess>> {
    if !etcd_installed() {
        eprintln!("etcd is not installed; skipping the test that needs it");
        return None;
    }
    let directory = Arc::new(tempfile::tempdir().expect("create a temp dir for etcd"));
    // Hold every listener until all ports are chosen, so no two members get the same port.
    let ports: Vec<_> = (0..size).map(|_| (free_port(), free_port())).collect();
    let ports: Vec<(u16, u16)> = ports
        .into_iter()
        .map(|((_, client), (_, peer))| (client, peer))
        .collect();
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(index, (_, peer))| format!("m{index}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<EtcdProcess> = ports
        .iter()
        .enumerate()
        .map(|(index, (client_port, peer_port))| {
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let name = format!("m{index}");
            let mut arguments = vec![
                format!("--name={name}"),
                format!("--data-dir={}", directory.path().join(&name).display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-token=beacon-client-test".to_string(),
            ];
            arguments.extend(extra_arguments.iter().map(|argument| argument.to_string()));
            let mut member = EtcdProcess {
                child: None,
                endpoint: format!("127.0.0.1:{client_port}"),
                arguments,
                log_path: directory.path().join(format!("{name}.log")),
                _directory: directory.clone(),
            };
            member.spawn();
            member
        })
        .collect();
    for member in &mut members {
        member.wait_until_ready(Duration::from_secs(30));
    }
    Some(members)
}
