//! The DNS listeners of one member: UDP sockets bound with SO_REUSEPORT (the kernel spreads
//! queries over them, one receive loop and one [`Worker`] each, no locks between them) and a
//! TCP listener (RFC 7766 framing, a connection per task, idle connections closed), plus the
//! task that decides whether this member's catalog is too stale to answer from.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::answer::{Responder, Transport, Worker};
use super::name::Zone;
use super::stats::DnsStats;
use crate::catalog_view::CatalogView;
use crate::config::DnsConfig;
use crate::raft_node::RaftNode;

/// Largest UDP datagram read; queries are far smaller, a larger one is cut and then malformed.
const UDP_RECEIVE_BUFFER: usize = 4096;
/// Open TCP connections served at once; more are closed at accept.
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle (or stalled mid-message) this long is closed (RFC 7766 suggests
/// seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader contact is sampled for the staleness rule.
const STALENESS_CHECK: Duration = Duration::from_millis(100);
/// Default number of UDP receive loops when `dns.udp_workers` is 0: one per CPU, at most this.
const MAX_DEFAULT_UDP_WORKERS: usize = 4;

/// A running DNS interface; [`DnsServer::stop`] ends its tasks.
pub struct DnsServer {
    /// Where it listens (UDP and TCP).
    pub local_addr: SocketAddr,
    pub stats: Arc<DnsStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds the DNS listeners (an error if the address is taken) and starts serving, or
    /// returns `None` when `dns.enabled` is false.
    pub async fn start(
        config: &DnsConfig,
        view: Arc<CatalogView>,
        node: Arc<RaftNode>,
    ) -> anyhow::Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let address: SocketAddr = config
            .listen
            .parse()
            .with_context(|| format!("dns.listen {:?} is not IP:port", config.listen))?;
        // TCP first and without SO_REUSEPORT: a port held by another process fails here, so
        // two members can never share (and split) one DNS port through SO_REUSEPORT.
        let tcp = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for DNS (TCP) on {address}"))?;
        let local_addr = tcp.local_addr().context("DNS listener address")?;
        let workers = match config.udp_workers {
            0 => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_DEFAULT_UDP_WORKERS),
            workers => workers,
        };
        let udp = (0..workers)
            .map(|_| bind_udp(local_addr))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("cannot listen for DNS (UDP) on {local_addr}"))?;
        let zone = Zone::new(&config.domain)
            .with_context(|| format!("dns.domain {:?} is not a DNS name", config.domain))?;
        let stale = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DnsStats::default());
        let responder = Arc::new(Responder {
            zone,
            view,
            negative_ttl: config.negative_ttl_s,
            max_udp_payload: config.max_udp_payload,
            stale: stale.clone(),
            stats: stats.clone(),
        });
        let mut tasks = Vec::new();
        if config.max_stale_ms > 0 {
            let window = Duration::from_millis(config.max_stale_ms);
            tasks.push(tokio::spawn(watch_staleness(node, window, stale)));
        }
        for socket in udp {
            tasks.push(tokio::spawn(serve_udp(socket, responder.clone())));
        }
        tasks.push(tokio::spawn(serve_tcp(tcp, responder)));
        tracing::info!(listen = %local_addr, domain = %config.domain, udp_workers = workers, "DNS started");
        Ok(Some(DnsServer {
            local_addr,
            stats,
            tasks,
        }))
    }

    /// Stops every listener and loop.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn bind_udp(address: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Bursts of queries queue in the kernel rather than being dropped; best effort.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// Keeps `stale` true while this member has been out of contact with a leader (as leader: with
/// a quorum) for longer than `window`. A member that just started gets `window` to find one.
async fn watch_staleness(node: Arc<RaftNode>, window: Duration, stale: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut checks = tokio::time::interval(STALENESS_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let now_stale = started.elapsed() > window && !node.in_contact_within(window);
        if stale.swap(now_stale, Ordering::Relaxed) != now_stale {
            if now_stale {
                tracing::warn!(
                    window_ms = window.as_millis() as u64,
                    "no leader within the DNS staleness window: answering SERVFAIL"
                );
            } else {
                tracing::info!("leader contact back: DNS answers again");
            }
        }
    }
}

async fn serve_udp(socket: UdpSocket, responder: Arc<Responder>) {
    let mut worker = Worker::default();
    let mut packet = vec![0; UDP_RECEIVE_BUFFER];
    let mut out = Vec::with_capacity(UDP_RECEIVE_BUFFER);
    loop {
        let (length, peer) = match socket.recv_from(&mut packet).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "DNS UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        if responder.respond(&mut worker, &packet[..length], Transport::Udp, &mut out) {
            if let Err(error) = socket.send_to(&out, peer).await {
                tracing::debug!(%error, %peer, "DNS UDP send failed");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, responder: Arc<Responder>) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections; closing a new one");
            continue;
        };
        let responder = responder.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &responder).await {
                tracing::debug!(%error, %peer, "DNS TCP connection ended");
            }
            drop(permit);
        });
    }
}

/// Length-prefixed queries until the client closes, idles or sends something unanswerable.
async fn serve_connection(mut stream: TcpStream, responder: &Responder) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut worker = Worker::default();
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut length = [0; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut length)).await {
            Err(_) => return Ok(()),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result?,
        };
        packet.resize(usize::from(u16::from_be_bytes(length)), 0);
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut packet))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled query"))??;
        if !responder.respond(&mut worker, &packet, Transport::Tcp, &mut out) {
            return Ok(());
        }
        // The answer is at most 65,535 bytes (the TCP limit of `respond`).
        let length = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
        stream.write_all(&length).await?;
        stream.write_all(&out).await?;
    }
}
