//! The HTTP endpoint (`[http] listen`, port 2381), for Prometheus and for probes:
//!
//! - `GET /metrics`: every metric in Prometheus' text format (scrape-time gauges refreshed first).
//! - `GET /health`: etcd's answer, `{"health":"true","reason":""}` when this member knows a
//!   leader and a linearizable read barrier completes within [`HEALTH_READ_TIMEOUT`]; else 503
//!   with `"health":"false"` and the reason (`RAFT NO LEADER`, or why the read failed).
//! - `GET /livez`: 200 while the process serves requests at all.
//! - `GET /readyz`: 200 when this member knows a leader and has applied the committed log up
//!   to [`READY_MAX_APPLY_LAG`] entries; 503 otherwise. One line per check, as etcd 3.6 and
//!   Kubernetes answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use super::member_metrics::{raft_progress, refresh, ScrapeSources};

/// How long `/health` waits for a linearizable read barrier (a quorum round on the leader).
pub const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Committed entries a member may have left to apply and still be ready. A member catching up
/// after a restart or a partition is far behind; a serving member is a few batches behind at
/// most.
pub const READY_MAX_APPLY_LAG: u64 = 1_000;

/// What the handlers read.
pub struct HttpState {
    pub sources: ScrapeSources,
    pub prometheus: PrometheusHandle,
}

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    refresh(&state.sources).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
        .into_response()
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let node = &state.sources.node;
    let reason = if node.raft.metrics().borrow().current_leader.is_none() {
        Some("RAFT NO LEADER".to_string())
    } else {
        match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.linearize()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("QGET ERROR: {error}")),
            Err(_) => Some(format!(
                "QGET ERROR: no linearizable read within {HEALTH_READ_TIMEOUT:?}"
            )),
        }
    };
    let body = serde_json::json!({
        "health": if reason.is_none() { "true" } else { "false" },
        "reason": reason.as_deref().unwrap_or(""),
    });
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let progress = raft_progress(&state.sources.node).await;
    let leader = match progress {
        Some(progress) if progress.leader.is_some() => Ok(()),
        Some(_) => Err("no leader".to_string()),
        None => Err("raft did not answer".to_string()),
    };
    let applied = match progress {
        Some(progress) if progress.apply_lag() <= READY_MAX_APPLY_LAG => Ok(()),
        Some(progress) => Err(format!(
            "{} committed entries not applied yet (at most {READY_MAX_APPLY_LAG})",
            progress.apply_lag()
        )),
        None => Err("raft did not answer".to_string()),
    };
    let mut body = String::new();
    let mut ready = true;
    for (check, result) in [("leader", leader), ("applied", applied)] {
        match result {
            Ok(()) => body.push_str(&format!("[+]{check} ok\n")),
            Err(reason) => {
                ready = false;
                body.push_str(&format!("[-]{check} failed: {reason}\n"));
            }
        }
    }
    if ready {
        body.push_str("ok\n");
        (StatusCode::OK, body).into_response()
    } else {
        body.push_str("readyz check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
