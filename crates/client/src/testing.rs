//! Test harness (feature `testing`): real servers on free loopback ports in a temp dir, killed
//! when dropped, so client and CLI tests exercise the wire protocol, including a member killed
//! and restarted:
//! - etcd, the reference server ([`EtcdProcess::start`], [`start_cluster`]);
//! - Beacon's own `beacond` ([`start_beacon_cluster`]), for the catalog and everything else
//!   etcd does not have.
//!
//! Both kinds are a [`ServerProcess`]: a command line, a log file and a readiness probe (a
//! linearizable read, answered only once the member has a leader).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Client, ClientOptions};

/// A running cluster member (etcd or beacond), killed when dropped. It can be killed and
/// restarted on the same ports and data dir, to test what clients do across a member failure.
pub struct ServerProcess {
    child: Option<Child>,
    endpoint: String,
    /// Beacon's DNS address (UDP and TCP); none for etcd.
    dns_endpoint: Option<String>,
    /// The server binary (`etcd` on the PATH, or beacond's path).
    program: PathBuf,
    /// The full command line, reused by [`ServerProcess::restart`].
    arguments: Vec<String>,
    log_path: PathBuf,
    /// Shared by the members of one cluster; removed when the last one drops.
    _directory: Arc<tempfile::TempDir>,
}

/// An etcd member: the etcd flavour of [`ServerProcess`] (`EtcdProcess::start()`).
pub type EtcdProcess = ServerProcess;

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerProcess")
            .field("program", &self.program)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Skips a test that needs a server binary which is missing — unless `BEACON_TEST_REQUIRE_SERVERS`
/// is set (scripts/test.sh, CI), where a missing binary is a failure, never a vacuous pass.
fn skip_without(what: &str) {
    assert!(
        std::env::var_os("BEACON_TEST_REQUIRE_SERVERS").is_none(),
        "{what}, and BEACON_TEST_REQUIRE_SERVERS forbids skipping"
    );
    eprintln!("{what}; skipping the test that needs it");
}

/// Whether an `etcd` binary is on the PATH; tests skip (pass vacuously) without one, except
/// under `BEACON_TEST_REQUIRE_SERVERS`.
pub fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A loopback port that was free a moment ago (held until the listener drops); see
/// [`free_listen_port`].
fn free_port() -> (TcpListener, u16) {
    loop {
        let port = free_listen_port();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return (listener, port);
        }
    }
}

/// A loopback port for a test server to listen on, free a moment ago. Chosen in 20000..32000,
/// below the kernel's ephemeral range (32768 and up): a port from bind(0) is released before the
/// server binds it, and in that window any outgoing connection of a concurrently running test can
/// take it as its source port ("address already in use"). Ports here are never handed out as
/// source ports; the local cluster's 22379/22380/22381 and 28600 (DNS) are skipped.
pub fn free_listen_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(step.wrapping_mul(7_919)) % 12_000);
        let port = u16::try_from(port).expect("below 32000");
        if matches!(port, 22_379..=22_381 | 28_600) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl ServerProcess {
    /// Starts a single-node etcd and waits (up to 30 s) until it serves a linearizable read.
    /// Returns `None` when etcd is not installed. Panics with etcd's log on any other failure:
    /// this is test code.
    pub fn start() -> Option<ServerProcess> {
        ServerProcess::start_with(&[])
    }

    /// [`ServerProcess::start`] with extra etcd flags (e.g.
    /// `--experimental-watch-progress-notify-interval=100ms`).
    pub fn start_with(extra_arguments: &[&str]) -> Option<ServerProcess> {
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

    /// Starts the member again on the same ports and data dir (after [`ServerProcess::kill`]) and
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
            .expect("open the member's log");
        let child = Command::new(&self.program)
            .args(&self.arguments)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.program.display()));
        self.child = Some(child);
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A Beacon member's DNS address, `127.0.0.1:port` (`None` for etcd).
    pub fn dns_endpoint(&self) -> Option<&str> {
        self.dns_endpoint.as_deref()
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
                panic!(
                    "{} exited with {status}; log:\n{}",
                    self.program.display(),
                    self.log()
                );
            }
            if probe.clone()().is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready after {limit:?}; log:\n{}",
                    self.program.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a `size`-member etcd cluster on free loopback ports in one temp dir and waits until
/// every member serves a linearizable read. `None` when etcd is not installed.
pub fn start_cluster(size: usize, extra_arguments: &[&str]) -> Option<Vec<ServerProcess>> {
    if !etcd_installed() {
        skip_without("etcd is not installed");
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
    let mut members: Vec<ServerProcess> = ports
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
            let mut member = ServerProcess {
                child: None,
                dns_endpoint: None,
                endpoint: format!("127.0.0.1:{client_port}"),
                program: PathBuf::from("etcd"),
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

/// The `beacond` binary: `$BEACOND` if set, else `beacond` in the cargo target directory the
/// running test was built in (`target/debug/deps/<test>` → `target/debug/beacond`). `None` when
/// it is not built: `cargo build -p beacon-server` (a workspace-wide test run builds it).
pub fn beacond_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BEACOND") {
        return Some(PathBuf::from(path));
    }
    let executable = std::env::current_exe().ok()?;
    let profile_dir = executable.parent()?.parent()?;
    let path = profile_dir.join("beacond");
    path.is_file().then_some(path)
}

/// Starts a `size`-member Beacon cluster (`beacond` processes with generated configs on free
/// loopback ports in one temp dir) and waits until every member serves a linearizable read.
/// Elections are quick (`election_timeout` 300-600 ms), so the minimum lease TTL is 1 s; `extra`
/// TOML (whole tables) is appended to every member's config. `None`, with a message, when
/// beacond is not built (see [`beacond_path`]).
pub fn start_beacon_cluster(size: usize, extra: &str) -> Option<Vec<ServerProcess>> {
    let Some(program) = beacond_path() else {
        skip_without("beacond is not built (cargo build -p beacon-server, or set BEACOND)");
        return None;
    };
    let directory = Arc::new(tempfile::tempdir().expect("create a temp dir for beacond"));
    // Hold every listener until all ports are chosen, so no two members get the same port.
    let ports: Vec<_> = (0..size)
        .map(|_| (free_port(), free_port(), free_port(), free_port()))
        .collect();
    let ports: Vec<(u16, u16, u16, u16)> = ports
        .into_iter()
        .map(|((_, client), (_, peer), (_, dns), (_, http))| (client, peer, dns, http))
        .collect();
    let initial_members: String = ports
        .iter()
        .enumerate()
        .map(|(index, (client, peer, _, _))| {
            let id = index + 1;
            format!(
                "\n[[initial_members]]\nid = {id}\nname = \"node{id}\"\n\
                 peer = \"127.0.0.1:{peer}\"\nclient = \"127.0.0.1:{client}\"\n"
            )
        })
        .collect();
    let mut members: Vec<ServerProcess> = ports
        .iter()
        .enumerate()
        .map(|(index, (client, peer, dns, http))| {
            let id = index + 1;
            let data_dir = directory.path().join(format!("node{id}"));
            let config = format!(
                "name = \"node{id}\"\nid = {id}\ndata_dir = \"{}\"\n\
                 cluster_token = \"beacon-client-test\"\n\
                 [client]\nlisten = \"127.0.0.1:{client}\"\n[peer]\nlisten = \"127.0.0.1:{peer}\"\n\
                 [dns]\nlisten = \"127.0.0.1:{dns}\"\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\n\
                 election_timeout_max_ms = 600\n{initial_members}\n{extra}\n",
                data_dir.display()
            );
            let config_path = directory.path().join(format!("node{id}.toml"));
            std::fs::write(&config_path, config).expect("write a beacond config");
            let mut member = ServerProcess {
                child: None,
                dns_endpoint: Some(format!("127.0.0.1:{dns}")),
                endpoint: format!("127.0.0.1:{client}"),
                program: program.clone(),
                arguments: vec!["--config".to_string(), config_path.display().to_string()],
                log_path: directory.path().join(format!("node{id}.log")),
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
