//! [`GrpcMetricsLayer`]: a tower layer on the client gRPC server that counts calls by method and
//! status code and times them, with go-grpc-prometheus's families and labels (as etcd exports
//! them): `started_total{grpc_type, grpc_service, grpc_method}` when a call arrives,
//! `handled_total{…, grpc_code}` and `handling_seconds{…}` when its status is known.
//!
//! The status is the `grpc-status` header of a trailers-only answer (an error before any
//! message) or the trailer that ends the body. A streaming call (Watch, LeaseKeepAlive,
//! WatchService, Snapshot) therefore counts as handled when the stream ends, and its duration is
//! the stream's lifetime; a stream the client abandons counts as `Canceled`. Labels come only
//! from [`beacon_proto::GRPC_METHODS`] (the methods our .proto files define); any other path is
//! `unknown`, so a client cannot grow the label sets.
//!
//! Per call: one boxed future, an atomic add to `started`, and at the end one counter add and
//! one histogram sample. Handles are taken once per method (and code) and kept, so there is no
//! lookup in the registry and no lock after the first call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use beacon_proto::{GrpcKind, GrpcMethod, GRPC_METHODS};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};

use super::{GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_STARTED};

/// gRPC status codes by number, named as grpc-go (and so etcd's metrics) name them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

const UNKNOWN_METHOD: GrpcMethod = GrpcMethod {
    path: "",
    service: "unknown",
    method: "unknown",
    kind: GrpcKind::Unary,
};

fn type_label(kind: GrpcKind) -> &'static str {
    match kind {
        GrpcKind::Unary => "unary",
        GrpcKind::ClientStream => "client_stream",
        GrpcKind::ServerStream => "server_stream",
        GrpcKind::BidiStream => "bidi_stream",
    }
}

/// One method's metric handles, registered on first use (so methods never called do not
/// appear).
struct MethodMetrics {
    method: GrpcMethod,
    started: OnceLock<Counter>,
    handling: OnceLock<Histogram>,
    handled: [OnceLock<Counter>; CODE_NAMES.len()],
}

impl MethodMetrics {
    fn new(method: GrpcMethod) -> Self {
        Self {
            method,
            started: OnceLock::new(),
            handling: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn labels(&self) -> [(&'static str, &'static str); 3] {
        [
            ("grpc_type", type_label(self.method.kind)),
            ("grpc_service", self.method.service),
            ("grpc_method", self.method.method),
        ]
    }

    fn start(&self) {
        self.started
            .get_or_init(|| metrics::counter!(GRPC_STARTED, &self.labels()))
            .increment(1);
    }

    fn finish(&self, code: usize, started: Instant) {
        self.handling
            .get_or_init(|| metrics::histogram!(GRPC_HANDLING_SECONDS, &self.labels()))
            .record(started.elapsed());
        let code = code.min(CODE_NAMES.len() - 1);
        self.handled[code]
            .get_or_init(|| {
                let [kind, service, method] = self.labels();
                metrics::counter!(
                    GRPC_HANDLED,
                    &[kind, service, method, ("grpc_code", CODE_NAMES[code])]
                )
            })
            .increment(1);
    }
}

/// The handles of every known method plus `unknown`, shared by all connections.
struct MethodTable {
    /// Same order as [`GRPC_METHODS`]; the last entry is the unknown method.
    methods: Vec<MethodMetrics>,
}

impl MethodTable {
    fn new() -> Self {
        let mut methods: Vec<MethodMetrics> = GRPC_METHODS
            .iter()
            .copied()
            .map(MethodMetrics::new)
            .collect();
        methods.push(MethodMetrics::new(UNKNOWN_METHOD));
        Self { methods }
    }

    /// The index of the method at `path` (the unknown method's when there is none).
    fn index_of(path: &str) -> usize {
        GRPC_METHODS
            .binary_search_by(|method| method.path.cmp(path))
            .unwrap_or(GRPC_METHODS.len())
    }
}

/// The layer; create it after [`super::install`] (handles taken before record nothing).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    table: Arc<MethodTable>,
}

impl GrpcMetricsLayer {
    pub fn new() -> Self {
        Self {
            table: Arc::new(MethodTable::new()),
        }
    }
}

impl Default for GrpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the gRPC routes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    table: Arc<MethodTable>,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body + Unpin,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let table = self.table.clone();
        let index = MethodTable::index_of(request.uri().path());
        table.methods[index].start();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let mut call = Some(CallEnd {
                table,
                index,
                started,
            });
            // Trailers-only answer (an error before any message): the status is in the headers.
            if let Some(code) = status_code(&parts.headers) {
                if let Some(call) = call.take() {
                    call.finish(code);
                }
            }
            Ok(http::Response::from_parts(
                parts,
                MeteredBody { inner: body, call },
            ))
        })
    }
}

/// What is needed to record a call's end.
struct CallEnd {
    table: Arc<MethodTable>,
    index: usize,
    started: Instant,
}

impl CallEnd {
    fn finish(self, code: usize) {
        self.table.methods[self.index].finish(code, self.started);
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|code| *code < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// A response body that records the call when its status trailer passes (or when it is
/// dropped before that: the client went away).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<CallEnd>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: usize) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(context);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(status_code(trailers).unwrap_or(UNKNOWN));
                }
            }
            // The body failed or ended without a status: what tonic's clients call Unknown.
            Poll::Ready(Some(Err(_)) | None) => this.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_to_its_method_or_unknown() {
        let table = MethodTable::new();
        let lookup = |path: &str| &table.methods[MethodTable::index_of(path)];
        assert_eq!(lookup("/etcdserverpb.KV/Range").method.method, "Range");
        let watch = lookup("/etcdserverpb.Watch/Watch").method;
        assert_eq!(type_label(watch.kind), "bidi_stream");
        let service_watch = lookup("/beacon.v1.Catalog/WatchService").method;
        assert_eq!(type_label(service_watch.kind), "server_stream");
        assert_eq!(lookup("/etcdserverpb.KV/Nope").method.service, "unknown");
        assert_eq!(lookup("").method.method, "unknown");
    }

    #[test]
    fn status_codes_are_read_and_bounded() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(
            status_code(&headers).map(|code| CODE_NAMES[code]),
            Some("Unavailable")
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(status_code(&headers), Some(UNKNOWN));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_code(&headers), Some(UNKNOWN));
    }
}
