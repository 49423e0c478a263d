//! Test harness (feature `testing`): a real single-node etcd on free loopback ports in a temp
//! dir, so client and CLI tests exercise the wire protocol against the reference server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Client, ClientOptions};

/// A running etcd, killed when dropped.
pub struct EtcdProcess {
    child: Child,
    endpoint: String,
    directory: tempfile::TempDir,
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
    /// Starts etcd and waits (up to 30 s) until it answers `Status`. Returns `None` when etcd is
    /// not installed. Panics with etcd's log on any other failure: this is test code.
    pub fn start() -> Option<EtcdProcess> {
        if !etcd_installed() {
            eprintln!("etcd is not installed; skipping the test that needs it");
            return None;
        }
        let directory = tempfile::tempdir().expect("create a temp dir for etcd");
        let (client_listener, client_port) = free_port();
        let (peer_listener, peer_port) = free_port();
        drop((client_listener, peer_listener));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(directory.path().join("etcd.log")).expect("create log");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                directory.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = EtcdProcess {
            child,
            endpoint: format!("127.0.0.1:{client_port}"),
            directory,
        };
        etcd.wait_until_ready(Duration::from_secs(30));
        Some(etcd)
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("etcd.log")).unwrap_or_default()
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
                    client.status(&endpoint).await
                })
            })
            .join()
            .expect("probe thread")
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
