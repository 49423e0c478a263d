//! One probe of one health check: an HTTP(S) request, a TCP connect or a `grpc.health.v1` Check
//! call, bounded by the check's timeout and reduced to a [`ProbeResult`] (status, a short human
//! output, latency). Nothing here schedules, counts thresholds or talks to Raft: the checker
//! calls [`Prober::probe`] once per interval for each check it owns, and the check state machine
//! in `beacon_catalog` turns results into verdicts.
//!
//! A [`Prober`] is shared by every check of a member so that connections outlive probes: two
//! keep-alive pooled `reqwest` clients (one verifying TLS, one for `tls_skip_verify`) and a
//! bounded cache of gRPC channels per address. At the capacity target (10,000 checks every 10 s
//! over 3 members, ~330 probes/s per member) a steady probe of a keep-alive endpoint is one
//! request on an open connection: no handshake, no client construction, and little allocation of
//! its own beyond the output string.
//!
//! Verdicts follow Consul's: HTTP 2xx is passing, 429 Too Many Requests is warning, any other
//! status is critical; a TCP connect is passing when it completes; gRPC is passing only for
//! SERVING. Every error (refused, reset, TLS, DNS, timeout) is critical, with the cause in the
//! output.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use beacon_proto::beacon::v1::{check, Check, GrpcCheck, HealthStatus, HttpCheck, TcpCheck};
use beacon_storage::NodeId;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The bound of a probe whose check has `timeout_ms` 0 (registration normally writes the real
/// default out; this only covers records that were not normalized).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The header (and gRPC metadata key) naming the probing member, so that operators and tests can
/// tell which member sent a probe. The User-Agent names it too.
pub const MEMBER_HEADER: &str = "x-beacon-member";

/// At most this much of an HTTP body goes into the output, as Consul does.
const OUTPUT_BODY_BYTES: usize = 512;
/// At most this much of an HTTP body is read. Reading a little past the excerpt drains typical
/// small health responses, so the connection goes back to the pool; a longer body is abandoned
/// and its connection closed rather than read to the end.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// Redirects followed by an HTTP probe; more is critical ("too many redirects").
const MAX_REDIRECTS: usize = 3;
/// gRPC channels kept open at once. Each holds a connection and a task; past this many distinct
/// addresses, an arbitrary channel is dropped, and a later probe of its address reconnects.
const MAX_GRPC_CHANNELS: usize = 1024;
/// Idle keep-alive connections are closed after this long: well above the default 10 s interval,
/// so a steady check keeps its connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Passing, warning or critical; never unspecified.
    pub status: HealthStatus,
    /// One short line for people, starting with what was probed, e.g.
    /// `HTTP GET http://127.0.0.1:8080/health: 200 OK Output: ok`,
    /// `TCP connect 127.0.0.1:9: Connection refused (os error 111)` or
    /// `gRPC health 127.0.0.1:50051: timed out after 2s`.
    pub output: String,
    /// From the start of the probe to its result (a timed-out probe reports about the timeout).
    pub latency: Duration,
}

/// Probes checks on behalf of one member. Cheap to clone: clones share the HTTP connection pools
/// and the gRPC channels, so one `Prober` should serve every check of the member.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// For checks with `tls_skip_verify`: accepts any certificate and host name.
    http_insecure: reqwest::Client,
    grpc: Mutex<GrpcChannels>,
    user_agent: String,
    member: AsciiMetadataValue,
}

impl Prober {
    /// A prober identifying itself as `member_id`: User-Agent
    /// `beacon-health-check/<version> (member <id>)` and header `X-Beacon-Member: <id>` on every
    /// HTTP and gRPC probe. Fails only when the TLS backend cannot be set up.
    pub fn new(member_id: NodeId) -> Result<Self, reqwest::Error> {
        let user_agent = format!(
            "beacon-health-check/{} (member {member_id})",
            env!("CARGO_PKG_VERSION")
        );
        Ok(Prober {
            inner: Arc::new(Inner {
                http: http_client(&user_agent, member_id, false)?,
                http_insecure: http_client(&user_agent, member_id, true)?,
                grpc: Mutex::new(GrpcChannels::default()),
                user_agent,
                member: AsciiMetadataValue::from(member_id),
            }),
        })
    }

    /// Probes `check` once, within its `timeout_ms` ([`DEFAULT_TIMEOUT`] for 0), connecting
    /// included.
    ///
    /// TTL checks are reported by their instances, never probed: the checker does not call this
    /// for them. If it does anyway (or the check has no kind), the result is critical with an
    /// output that says so, rather than a panic.
    pub async fn probe(&self, check: &Check) -> ProbeResult {
        let started = Instant::now();
        let mut output = String::with_capacity(128);
        let status = match &check.kind {
            Some(kind) => self.probe_kind(kind, timeout_of(check), &mut output).await,
            None => {
                output.push_str("check has no kind: nothing to probe");
                HealthStatus::Critical
            }
        };
        let latency = started.elapsed();
        tracing::debug!(
            check_id = %check.id,
            status = status.as_str_name(),
            latency_ms = latency.as_millis() as u64,
            "probed"
        );
        ProbeResult {
            status,
            output,
            latency,
        }
    }

    /// Writes the target, then probes it within `timeout`. On timeout the partial detail is
    /// replaced by "timed out after …", so the output keeps its target prefix.
    async fn probe_kind(
        &self,
        kind: &check::Kind,
        timeout: Duration,
        output: &mut String,
    ) -> HealthStatus {
        write_target(output, kind);
        output.push_str(": ");
        let prefix_len = output.len();
        let outcome = match kind {
            check::Kind::Http(http) => {
                tokio::time::timeout(timeout, self.probe_http(http, output)).await
            }
            check::Kind::Tcp(tcp) => tokio::time::timeout(timeout, probe_tcp(tcp, output)).await,
            check::Kind::Grpc(grpc) => {
                tokio::time::timeout(timeout, self.probe_grpc(grpc, output)).await
            }
            check::Kind::Ttl(_) => {
                output.push_str("reported by its instance, never probed");
                Ok(HealthStatus::Critical)
            }
        };
        outcome.unwrap_or_else(|_elapsed| {
            output.truncate(prefix_len);
            output.push_str("timed out after ");
            write_duration(output, timeout);
            HealthStatus::Critical
        })
    }

    async fn probe_http(&self, http: &HttpCheck, output: &mut String) -> HealthStatus {
        let Some(method) = method_of(http) else {
            output.push_str("invalid HTTP method");
            return HealthStatus::Critical;
        };
        let client = if http.tls_skip_verify {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        };
        // Check headers replace the defaults of the same name (User-Agent included), as in
        // Consul; invalid names or values surface as a builder error from `send`.
        let mut request = client.request(method, http.url.as_str());
        for (name, value) in &http.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                if error.is_builder() {
                    output.push_str("invalid request: ");
                }
                write_causes(output, Some(&error));
                return HealthStatus::Critical;
            }
        };
        let status = response.status();
        let _ = write!(output, "{status}");
        let excerpt = read_excerpt(&mut response).await;
        let excerpt = String::from_utf8_lossy(&excerpt);
        let excerpt = excerpt.trim_end();
        if !excerpt.is_empty() {
            output.push_str(" Output: ");
            output.push_str(excerpt);
        }
        http_verdict(status)
    }

    async fn probe_grpc(&self, grpc: &GrpcCheck, output: &mut String) -> HealthStatus {
        let channel = match self.channel(&grpc.address, grpc.tls) {
            Ok(channel) => channel,
            Err(error) => {
                output.push_str("invalid address: ");
                write_causes(output, Some(&error));
                return HealthStatus::Critical;
            }
        };
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: grpc.service.clone(),
        });
        request
            .metadata_mut()
            .insert(MEMBER_HEADER, self.inner.member.clone());
        match HealthClient::new(channel).check(request).await {
            Ok(response) => {
                let serving = response.into_inner().status();
                output.push_str(serving.as_str_name());
                if serving == ServingStatus::Serving {
                    HealthStatus::Passing
                } else {
                    HealthStatus::Critical
                }
            }
            Err(status) => {
                let _ = write!(output, "{:?}: ", status.code());
                // For transport failures tonic's message is made of the source's text: the
                // chain says it once, with the cause.
                match status.source() {
                    Some(source) => write_causes(output, Some(source)),
                    None => output.push_str(status.message()),
                }
                HealthStatus::Critical
            }
        }
    }

    /// The cached channel to `address`, or a new lazily connecting one. A channel reconnects by
    /// itself after its connection fails, so a cached channel never pins a past failure.
    fn channel(&self, address: &str, tls: bool) -> Result<Channel, tonic::transport::Error> {
        // The cache has no invariant across entries, so a panic elsewhere while it was locked
        // leaves nothing to repair.
        let mut channels = self
            .inner
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.map(tls).get(address) {
            return Ok(channel.clone());
        }
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
            .user_agent(self.inner.user_agent.as_str())?
            .connect_timeout(DEFAULT_TIMEOUT)
            .tcp_nodelay(true);
        if tls {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_webpki_roots())?;
        }
        // Lazy: no IO under the lock; the first call connects.
        let channel = endpoint.connect_lazy();
        channels.insert(address, tls, channel.clone());
        Ok(channel)
    }
}

/// gRPC channels by address, plaintext and TLS apart so a lookup borrows the address instead of
/// allocating a key.
#[derive(Default)]
struct GrpcChannels {
    plaintext: HashMap<String, Channel>,
    tls: HashMap<String, Channel>,
}

impl GrpcChannels {
    fn map(&mut self, tls: bool) -> &mut HashMap<String, Channel> {
        if tls {
            &mut self.tls
        } else {
            &mut self.plaintext
        }
    }

    fn insert(&mut self, address: &str, tls: bool, channel: Channel) {
        if self.plaintext.len() + self.tls.len() >= MAX_GRPC_CHANNELS {
            // Which one goes does not matter for correctness: its next probe reconnects. The
            // dropped channel closes once probes in flight on it finish.
            let from_tls = self.tls.len() > self.plaintext.len();
            let victims = self.map(from_tls);
            if let Some(victim) = victims.keys().next().cloned() {
                victims.remove(&victim);
            }
        }
        self.map(tls).insert(address.to_owned(), channel);
    }
}

/// What a probe of `kind` reaches, e.g. `HTTP GET http://127.0.0.1:8080/health`,
/// `TCP connect db:5432`, `gRPC health 10.0.0.7:50051 service "web"`.
fn write_target(output: &mut String, kind: &check::Kind) {
    let _ = match kind {
        check::Kind::Http(http) => write!(output, "HTTP {} {}", method_name(http), http.url),
        check::Kind::Tcp(tcp) => write!(output, "TCP connect {}", tcp.address),
        check::Kind::Grpc(grpc) if grpc.service.is_empty() => {
            write!(output, "gRPC health {}", grpc.address)
        }
        check::Kind::Grpc(grpc) => {
            write!(
                output,
                "gRPC health {} service {:?}",
                grpc.address, grpc.service
            )
        }
        check::Kind::Ttl(_) => write!(output, "TTL check"),
    };
}

fn http_client(
    user_agent: &str,
    member_id: NodeId,
    skip_verify: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(MEMBER_HEADER, HeaderValue::from(member_id));
    reqwest::Client::builder()
        .user_agent(user_agent)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        // A check measures the endpoint itself: an HTTP(S)_PROXY in beacond's environment must
        // not reroute (or fail) the probes.
        .no_proxy()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .danger_accept_invalid_certs(skip_verify)
        .build()
}

async fn probe_tcp(tcp: &TcpCheck, output: &mut String) -> HealthStatus {
    // Resolves a DNS name and tries each of its addresses in turn, like Consul's dial.
    match tokio::net::TcpStream::connect(tcp.address.as_str()).await {
        Ok(_stream) => {
            output.push_str("success");
            HealthStatus::Passing
        }
        Err(error) => {
            let _ = write!(output, "{error}");
            HealthStatus::Critical
        }
    }
}

/// 2xx passing, 429 warning (the endpoint is up but shedding load), anything else critical.
fn http_verdict(status: StatusCode) -> HealthStatus {
    if status.is_success() {
        HealthStatus::Passing
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        HealthStatus::Warning
    } else {
        HealthStatus::Critical
    }
}

/// The first [`OUTPUT_BODY_BYTES`] of the body, reading at most [`MAX_BODY_BYTES`]. A body
/// error ends the excerpt: the status line already decided the verdict.
async fn read_excerpt(response: &mut reqwest::Response) -> Vec<u8> {
    let mut excerpt = Vec::new();
    let mut read = 0;
    while read < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = OUTPUT_BODY_BYTES - excerpt.len();
                excerpt.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    excerpt
}

/// The check's method, upper-cased (GET when empty); `None` when it is not a valid method.
fn method_of(http: &HttpCheck) -> Option<Method> {
    let name = method_name(http);
    if name.bytes().any(|byte| byte.is_ascii_lowercase()) {
        Method::from_bytes(name.to_ascii_uppercase().as_bytes()).ok()
    } else {
        // Standard methods parse to constants, without allocating.
        Method::from_bytes(name.as_bytes()).ok()
    }
}

fn method_name(http: &HttpCheck) -> &str {
    if http.method.is_empty() {
        "GET"
    } else {
        &http.method
    }
}

fn timeout_of(check: &Check) -> Duration {
    if check.timeout_ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(check.timeout_ms)
    }
}

/// Appends the texts of an error chain from `cause` on, ": "-separated, leaving out the layers
/// that add nothing to their cause: reqwest's (it repeats the URL, already in the output),
/// hyper-util's "client error (Connect)", tonic's "transport error", and any text already
/// written. For example `tcp connect error: Connection refused (os error 111)` or
/// `invalid peer certificate: UnknownIssuer`.
fn write_causes(output: &mut String, mut cause: Option<&(dyn StdError + 'static)>) {
    let start = output.len();
    while let Some(error) = cause {
        cause = error.source();
        let wrapper = error.is::<reqwest::Error>()
            || error.is::<hyper_util::client::legacy::Error>()
            || error.is::<tonic::transport::Error>();
        if wrapper && cause.is_some() {
            continue;
        }
        let text = error.to_string();
        if output[start..].contains(&text) {
            continue;
        }
        if output.len() > start {
            output.push_str(": ");
        }
        output.push_str(&text);
    }
}

/// `2s` for whole seconds, `1500ms` otherwise.
fn write_duration(output: &mut String, duration: Duration) {
    if duration.subsec_millis() == 0 {
        let _ = write!(output, "{}s", duration.as_secs());
    } else {
        let _ = write!(output, "{}ms", duration.as_millis());
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use beacon_proto::beacon::v1::TtlCheck;
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::task::{JoinHandle, JoinSet};
    use tokio_rustls::rustls;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::server::HealthReporter;

    use super::*;

    const MEMBER: NodeId = 7;

    fn prober() -> Prober {
        Prober::new(MEMBER).expect("the rustls backend initializes")
    }

    fn http_check(url: String) -> Check {
        Check {
            kind: Some(check::Kind::Http(HttpCheck {
                url,
                ..Default::default()
            })),
            timeout_ms: 2_000,
            ..Default::default()
        }
    }

    fn with_http(mut check: Check, change: impl FnOnce(&mut HttpCheck)) -> Check {
        if let Some(check::Kind::Http(http)) = &mut check.kind {
            change(http);
        }
        check
    }

    fn tcp_check(address: SocketAddr) -> Check {
        Check {
            kind: Some(check::Kind::Tcp(TcpCheck {
                address: address.to_string(),
            })),
            timeout_ms: 2_000,
            ..Default::default()
        }
    }

    fn grpc_check(address: SocketAddr, service: &str, tls: bool) -> Check {
        Check {
            kind: Some(check::Kind::Grpc(GrpcCheck {
                address: address.to_string(),
                service: service.to_owned(),
                tls,
            })),
            timeout_ms: 2_000,
            ..Default::default()
        }
    }

    /// An address nothing listens on (bound, then released).
    async fn closed_address() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("local address")
    }

    /// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    fn self_signed() -> rcgen::CertifiedKey {
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate generation")
    }

    /// What the test HTTP server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: hyper::Method,
        path: String,
        headers: hyper::HeaderMap,
    }

    /// A local HTTP/1.1 server (optionally TLS) answering by path: `/ok` 200, `/busy` 429,
    /// `/fail` 500 with a body, `/slow` after 30 s, `/big` 1 MiB, `/redirect` to `/ok`,
    /// `/redirect-loop` to itself. Dropping it closes the listener and every connection.
    struct HttpServer {
        address: SocketAddr,
        scheme: &'static str,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
        task: JoinHandle<()>,
    }

    impl HttpServer {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            Self::start_on(listener, None)
        }

        fn start_on(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
            let address = listener.local_addr().expect("local address");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let seen = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn(serve_http(listener, tls, seen.clone(), connections.clone()));
            HttpServer {
                address,
                scheme,
                seen,
                connections,
                task,
            }
        }

        async fn start_tls() -> Self {
            let certified = self_signed();
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    vec![certified.cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(
                        certified.key_pair.serialize_der().into(),
                    ),
                )
                .expect("server TLS config");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            Self::start_on(
                listener,
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            )
        }

        fn url(&self, path: &str) -> String {
            format!("{}://{}{path}", self.scheme, self.address)
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("seen lock").clone()
        }

        /// Stops serving and waits until the listener and every connection are closed.
        async fn stop(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    async fn serve_http(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
    ) {
        // Owned here, so aborting the server task aborts every connection too.
        let mut tasks = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while tasks.try_join_next().is_some() {}
            connections.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                let service = service_fn(move |request| respond(request, seen.clone()));
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    }

    async fn respond(
        request: hyper::Request<Incoming>,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path().to_owned();
        seen.lock().expect("seen lock").push(Seen {
            method: request.method().clone(),
            path: path.clone(),
            headers: request.headers().clone(),
        });
        let (status, location, body) = match path.as_str() {
            "/ok" => (200, None, Bytes::from_static(b"ok\n")),
            "/busy" => (429, None, Bytes::from_static(b"slow down")),
            "/fail" => (500, None, Bytes::from_static(b"database unreachable")),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (200, None, Bytes::from_static(b"late"))
            }
            "/big" => (200, None, Bytes::from(vec![b'x'; 1 << 20])),
            "/redirect" => (302, Some("/ok"), Bytes::new()),
            "/redirect-loop" => (302, Some("/redirect-loop"), Bytes::new()),
            _ => (404, None, Bytes::from_static(b"not found")),
        };
        let mut response = hyper::Response::builder().status(status);
        if let Some(location) = location {
            response = response.header("location", location);
        }
        Ok(response.body(Full::new(body)).expect("valid response"))
    }

    /// A local tonic server with the standard health service; every request's
    /// `x-beacon-member` metadata is recorded. The overall health ("") is SERVING.
    struct GrpcServer {
        address: SocketAddr,
        reporter: HealthReporter,
        members: Arc<Mutex<Vec<String>>>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: JoinHandle<Result<(), tonic::transport::Error>>,
    }

    impl GrpcServer {
        async fn start(address: &str, tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
            let listener = TcpListener::bind(address).await.expect("bind");
            let address = listener.local_addr().expect("local address");
            let (reporter, health) = tonic_health::server::health_reporter();
            let members = Arc::new(Mutex::new(Vec::new()));
            let record = {
                let members = members.clone();
                move |request: tonic::Request<()>| {
                    let member = request
                        .metadata()
                        .get(MEMBER_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    members.lock().expect("members lock").push(member);
                    Ok(request)
                }
            };
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).expect("server TLS config");
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let router = builder
                .layer(tonic::service::interceptor(record))
                .add_service(health);
            let task = tokio::spawn(router.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ));
            GrpcServer {
                address,
                reporter,
                members,
                stop,
                task,
            }
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("the gRPC server stops")
                .expect("server task")
                .expect("server result");
        }
    }

    #[tokio::test]
    async fn http_2xx_is_passing_and_names_the_member() {
        let server = HttpServer::start().await;
        let url = server.url("/ok");
        let result = prober().probe(&http_check(url.clone())).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("HTTP GET {url}: 200 OK Output: ok"));
        assert!(result.latency < Duration::from_secs(2));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, hyper::Method::GET);
        assert_eq!(
            seen[0].headers["user-agent"],
            format!(
                "beacon-health-check/{} (member 7)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(seen[0].headers["x-beacon-member"], "7");
    }

    #[tokio::test]
    async fn http_429_is_warning() {
        let server = HttpServer::start().await;
        let result = prober().probe(&http_check(server.url("/busy"))).await;
        assert_eq!(result.status, HealthStatus::Warning, "{}", result.output);
        assert!(result
            .output
            .ends_with(": 429 Too Many Requests Output: slow down"));
    }

    #[tokio::test]
    async fn http_500_is_critical_with_a_body_excerpt() {
        let server = HttpServer::start().await;
        let result = prober().probe(&http_check(server.url("/fail"))).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result
                .output
                .ends_with(": 500 Internal Server Error Output: database unreachable"),
            "{}",
            result.output
        );
    }

    #[tokio::test]
    async fn http_body_excerpt_is_capped_at_512_bytes() {
        let server = HttpServer::start().await;
        let url = server.url("/big");
        let result = prober().probe(&http_check(url.clone())).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        let expected = format!("HTTP GET {url}: 200 OK Output: {}", "x".repeat(512));
        assert_eq!(result.output, expected);
    }

    #[tokio::test]
    async fn http_probe_past_its_timeout_is_critical() {
        let server = HttpServer::start().await;
        let url = server.url("/slow");
        let check = Check {
            timeout_ms: 300,
            ..http_check(url.clone())
        };
        let result = prober().probe(&check).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(
            result.output,
            format!("HTTP GET {url}: timed out after 300ms")
        );
        assert!(result.latency >= Duration::from_millis(300));
        assert!(
            result.latency < Duration::from_secs(5),
            "{:?}",
            result.latency
        );
    }

    #[tokio::test]
    async fn http_connection_refused_is_critical() {
        let address = closed_address().await;
        let url = format!("http://{address}/health");
        let result = prober().probe(&http_check(url.clone())).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result.output.starts_with(&format!("HTTP GET {url}: ")),
            "{}",
            result.output
        );
        assert!(
            result.output.contains("Connection refused"),
            "{}",
            result.output
        );
    }

    #[tokio::test]
    async fn http_method_and_headers_reach_the_server() {
        let server = HttpServer::start().await;
        let prober = prober();
        let head = with_http(http_check(server.url("/ok")), |http| {
            http.method = "HEAD".to_owned();
            http.headers
                .insert("X-Env".to_owned(), "staging".to_owned());
            http.headers
                .insert("Authorization".to_owned(), "Bearer token".to_owned());
        });
        let result = prober.probe(&head).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert!(result.output.ends_with(": 200 OK"), "{}", result.output);
        let post = with_http(http_check(server.url("/ok")), |http| {
            http.method = "post".to_owned();
            http.headers
                .insert("User-Agent".to_owned(), "custom-agent".to_owned());
        });
        assert_eq!(prober.probe(&post).await.status, HealthStatus::Passing);

        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].method, hyper::Method::HEAD);
        assert_eq!(seen[0].headers["x-env"], "staging");
        assert_eq!(seen[0].headers["authorization"], "Bearer token");
        assert_eq!(seen[0].headers["x-beacon-member"], "7");
        assert_eq!(seen[1].method, hyper::Method::POST);
        // A check's header replaces the default of the same name, as in Consul.
        assert_eq!(seen[1].headers["user-agent"], "custom-agent");
        assert_eq!(seen[1].headers["x-beacon-member"], "7");
    }

    #[tokio::test]
    async fn http_invalid_method_or_header_is_critical_without_a_request() {
        let server = HttpServer::start().await;
        let prober = prober();
        let bad_method = with_http(http_check(server.url("/ok")), |http| {
            http.method = "GE T".to_owned();
        });
        let result = prober.probe(&bad_method).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result.output.ends_with("invalid HTTP method"),
            "{}",
            result.output
        );
        let bad_header = with_http(http_check(server.url("/ok")), |http| {
            http.headers.insert("Bad Header".to_owned(), "x".to_owned());
        });
        let result = prober.probe(&bad_header).await;
        assert_eq!(result.status, HealthStatus::Critical, "{}", result.output);
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn http_redirects_are_followed_a_few_times() {
        let server = HttpServer::start().await;
        let prober = prober();
        let result = prober.probe(&http_check(server.url("/redirect"))).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        let result = prober
            .probe(&http_check(server.url("/redirect-loop")))
            .await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result.output.contains("too many redirects"),
            "{}",
            result.output
        );
        // The first request and MAX_REDIRECTS follow-ups.
        let loops = server
            .seen()
            .iter()
            .filter(|seen| seen.path == "/redirect-loop")
            .count();
        assert_eq!(loops, MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn https_self_signed_passes_only_with_tls_skip_verify() {
        let server = HttpServer::start_tls().await;
        let prober = prober();
        let verified = http_check(server.url("/ok"));
        let result = prober.probe(&verified).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("certificate"), "{}", result.output);
        let skip_verify = with_http(verified, |http| http.tls_skip_verify = true);
        let result = prober.probe(&skip_verify).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(
            server.seen().len(),
            1,
            "the unverified handshake sent no request"
        );
    }

    #[tokio::test]
    async fn http_probes_reuse_one_keep_alive_connection() {
        let server = HttpServer::start().await;
        let prober = prober();
        for _ in 0..5 {
            let result = prober.probe(&http_check(server.url("/ok"))).await;
            assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        }
        // Clones share the pool.
        let clone = prober.clone();
        assert_eq!(
            clone.probe(&http_check(server.url("/ok"))).await.status,
            HealthStatus::Passing
        );
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http_recovers_after_the_endpoint_restarts() {
        let server = HttpServer::start().await;
        let address = server.address;
        let check = http_check(server.url("/ok"));
        let prober = prober();
        assert_eq!(prober.probe(&check).await.status, HealthStatus::Passing);
        server.stop().await;
        let result = prober.probe(&check).await;
        assert_eq!(result.status, HealthStatus::Critical, "{}", result.output);
        let listener = TcpListener::bind(address).await.expect("rebind");
        let _server = HttpServer::start_on(listener, None);
        let result = prober.probe(&check).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
    }

    #[tokio::test]
    async fn tcp_open_port_passes_and_closed_port_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listener.local_addr().expect("local address");
        let prober = prober();
        let result = prober.probe(&tcp_check(open)).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("TCP connect {open}: success"));

        let closed = closed_address().await;
        let result = prober.probe(&tcp_check(closed)).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result
                .output
                .starts_with(&format!("TCP connect {closed}: Connection refused")),
            "{}",
            result.output
        );
        let unresolvable = Check {
            kind: Some(check::Kind::Tcp(TcpCheck {
                address: "no-port".to_owned(),
            })),
            ..Default::default()
        };
        assert_eq!(
            prober.probe(&unresolvable).await.status,
            HealthStatus::Critical
        );
    }

    #[tokio::test]
    async fn grpc_follows_the_serving_status() {
        let mut server = GrpcServer::start("127.0.0.1:0", None).await;
        let prober = prober();
        let overall = grpc_check(server.address, "", false);
        let result = prober.probe(&overall).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(
            result.output,
            format!("gRPC health {}: SERVING", server.address)
        );

        let web = grpc_check(server.address, "web", false);
        server
            .reporter
            .set_service_status("web", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(prober.probe(&web).await.status, HealthStatus::Passing);
        server
            .reporter
            .set_service_status("web", tonic_health::ServingStatus::NotServing)
            .await;
        let result = prober.probe(&web).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(
            result.output,
            format!(
                "gRPC health {} service \"web\": NOT_SERVING",
                server.address
            )
        );

        let unknown = grpc_check(server.address, "nope", false);
        let result = prober.probe(&unknown).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("NotFound"), "{}", result.output);

        let members = server.members.lock().expect("members lock").clone();
        assert_eq!(members, vec!["7"; 4]);
        server.stop().await;
    }

    #[tokio::test]
    async fn grpc_channel_recovers_after_the_server_restarts() {
        let server = GrpcServer::start("127.0.0.1:0", None).await;
        let address = server.address;
        let check = grpc_check(address, "", false);
        let prober = prober();
        assert_eq!(prober.probe(&check).await.status, HealthStatus::Passing);
        server.stop().await;
        let result = prober.probe(&check).await;
        assert_eq!(result.status, HealthStatus::Critical, "{}", result.output);

        let server = GrpcServer::start(&address.to_string(), None).await;
        let result = prober.probe(&check).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        server.stop().await;
    }

    #[tokio::test]
    async fn grpc_refused_is_critical() {
        let address = closed_address().await;
        let result = prober().probe(&grpc_check(address, "", false)).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(
            result
                .output
                .starts_with(&format!("gRPC health {address}: ")),
            "{}",
            result.output
        );
        assert!(
            result.output.contains("Connection refused"),
            "{}",
            result.output
        );
    }

    #[tokio::test]
    async fn grpc_tls_verifies_the_server_certificate() {
        let certified = self_signed();
        let identity = tonic::transport::Identity::from_pem(
            certified.cert.pem(),
            certified.key_pair.serialize_pem(),
        );
        let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        let server = GrpcServer::start("127.0.0.1:0", Some(tls)).await;
        let prober = prober();
        let result = prober.probe(&grpc_check(server.address, "", true)).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("certificate"), "{}", result.output);
        // Plaintext against a TLS server fails too.
        let result = prober.probe(&grpc_check(server.address, "", false)).await;
        assert_eq!(result.status, HealthStatus::Critical, "{}", result.output);
        server.stop().await;
    }

    #[tokio::test]
    async fn grpc_channels_are_bounded() {
        let prober = prober();
        for port in 0..(MAX_GRPC_CHANNELS + 10) {
            prober
                .channel(&format!("127.0.0.1:{}", 10_000 + port), port % 2 == 0)
                .expect("valid address");
        }
        let channels = prober.inner.grpc.lock().expect("channels lock");
        assert_eq!(
            channels.plaintext.len() + channels.tls.len(),
            MAX_GRPC_CHANNELS
        );
    }

    #[tokio::test]
    async fn ttl_checks_are_not_probed() {
        let check = Check {
            kind: Some(check::Kind::Ttl(TtlCheck { ttl_ms: 10_000 })),
            ..Default::default()
        };
        let result = prober().probe(&check).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(
            result.output,
            "TTL check: reported by its instance, never probed"
        );
    }
}
