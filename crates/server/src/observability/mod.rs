//! Metrics and health: what an operator scrapes and probes on the HTTP port (2381).
//!
//! Instrumentation goes through the `metrics` facade, in the code that does the work (the log
//! syncer and the state machine in `storage`, the proposal batcher, watch streams, the health
//! checker, and the gRPC layer here); [`install`] puts a Prometheus recorder behind the facade,
//! and [`http_endpoint`] renders it at `/metrics`. Values that are state rather than events
//! (leader, term, commit and apply index, leases, catalog health) are read when they change
//! ([`member_metrics::follow_raft`]) or at scrape time ([`member_metrics::refresh`]), so the hot
//! paths pay nothing for them. Names follow etcd's where etcd has the metric
//! (`etcd_server_has_leader` → `beacon_server_has_leader`); the list is in ARCHITECTURE.md.

pub mod grpc_metrics;
pub mod http_endpoint;
pub mod member_metrics;

use std::sync::OnceLock;
use std::time::Duration;

use beacon_proto::beacon::v1::{check, Check, HealthStatus};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::api_error::ApiError;

pub const HAS_LEADER: &str = "beacon_server_has_leader";
pub const IS_LEADER: &str = "beacon_server_is_leader";
pub const TERM: &str = "beacon_server_term";
pub const LEADER_CHANGES: &str = "beacon_server_leader_changes_seen_total";
pub const PROPOSALS_COMMITTED: &str = "beacon_server_proposals_committed_total";
pub const PROPOSALS_APPLIED: &str = "beacon_server_proposals_applied_total";
pub const PROPOSALS_PENDING: &str = "beacon_server_proposals_pending";
pub const PROPOSALS_FAILED: &str = "beacon_server_proposals_failed_total";
pub const APPLY_LAG: &str = "beacon_server_apply_lag_entries";
pub const GRPC_STARTED: &str = "beacon_grpc_server_started_total";
pub const GRPC_HANDLED: &str = "beacon_grpc_server_handled_total";
pub const GRPC_HANDLING_SECONDS: &str = "beacon_grpc_server_handling_seconds";
pub const WATCH_STREAMS: &str = "beacon_watch_streams";
pub const WATCHERS: &str = "beacon_watch_watchers";
pub const LEASES: &str = "beacon_lease_active";
pub const CATALOG_INSTANCES: &str = "beacon_catalog_instances";
pub const CATALOG_MAINTENANCE: &str = "beacon_catalog_instances_in_maintenance";
pub const CATALOG_SERVICES: &str = "beacon_catalog_services";
pub const CHECK_RUNS: &str = "beacon_check_runs_total";
pub const CHECK_TRANSITIONS: &str = "beacon_check_transitions_total";
/// Reserved for the DNS server: `counter!(DNS_QUERIES, "result" => …)` per query answered or
/// dropped, `result` one of `noerror`, `nxdomain`, `refused`, `servfail`, `formerr`, `notimp`,
/// `dropped`.
pub const DNS_QUERIES: &str = "beacon_dns_queries_total";

/// Histogram buckets (seconds) for every duration: from well below this disk's ~0.2 ms fsync to
/// a 10 s stall.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes (the recorder
/// keeps raw samples until then; without upkeep an unscraped member would grow them forever).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder behind the `metrics` facade (once: members run
/// in one process share it) and returns the handle that renders it. Call it before anything is
/// instrumented: handles taken before the recorder exists record nothing.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .map_err(|error| error.to_string())?
                .install_recorder()
                .map_err(|error| error.to_string())?;
            describe();
            list_from_start();
            Ok(handle)
        })
        .clone()
        .map_err(|error| anyhow::anyhow!("cannot install the metrics recorder: {error}"))
}

/// Folds histogram samples into buckets every few seconds, until the runtime stops.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Why a proposed write failed: the `reason` label of [`PROPOSALS_FAILED`].
fn failure_reason(error: &ApiError) -> &'static str {
    match error {
        ApiError::Timeout => "timeout",
        ApiError::LeaderChanged => "leader_changed",
        ApiError::Stopped => "stopped",
        _ => "internal",
    }
}

/// Counts `writes` proposed writes that ended with `error`.
pub fn count_failed_proposals(error: &ApiError, writes: usize) {
    metrics::counter!(PROPOSALS_FAILED, "reason" => failure_reason(error)).increment(writes as u64);
}

/// Series with a known, small label set are listed at 0 from the start, so a rate or an alert
/// works before the first event (and a missing series means a missing member).
fn list_from_start() {
    for gauge in [WATCH_STREAMS, WATCHERS] {
        metrics::gauge!(gauge).set(0.0);
    }
    let errors = [
        ApiError::Timeout,
        ApiError::LeaderChanged,
        ApiError::Stopped,
        ApiError::Internal(String::new()),
    ];
    for error in &errors {
        count_failed_proposals(error, 0);
    }
    let statuses = [
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ];
    for kind in ["http", "tcp", "grpc", "ttl"] {
        for status in statuses.map(health_label) {
            metrics::counter!(CHECK_RUNS, "kind" => kind, "result" => status).increment(0);
            metrics::counter!(CHECK_TRANSITIONS, "kind" => kind, "status" => status).increment(0);
        }
    }
}

/// The `health`/`status`/`result` label of a health status.
pub fn health_label(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical | HealthStatus::Unspecified => "critical",
    }
}

/// The `kind` label of a check.
pub fn check_kind_label(check: &Check) -> &'static str {
    match check.kind {
        Some(check::Kind::Http(_)) => "http",
        Some(check::Kind::Tcp(_)) => "tcp",
        Some(check::Kind::Grpc(_)) => "grpc",
        Some(check::Kind::Ttl(_)) => "ttl",
        None => "none",
    }
}

/// HELP texts (and units) of every family.
fn describe() {
    describe_gauge!(HAS_LEADER, "1 if this member knows a leader, else 0.");
    describe_gauge!(IS_LEADER, "1 if this member is the leader, else 0.");
    describe_gauge!(TERM, "The Raft term this member is in.");
    describe_counter!(
        LEADER_CHANGES,
        "Times this member saw a new leader (after start, an election or a gap without one)."
    );
    describe_gauge!(
        PROPOSALS_COMMITTED,
        "The Raft commit index: log entries known committed (a batch of writes is one entry)."
    );
    describe_gauge!(
        PROPOSALS_APPLIED,
        "The Raft applied index: log entries applied to this member's state machine."
    );
    describe_gauge!(
        PROPOSALS_PENDING,
        "Writes queued or in flight in this member's proposal batcher (leader only)."
    );
    describe_counter!(
        PROPOSALS_FAILED,
        "Writes proposed by this member whose outcome was an error, by reason."
    );
    describe_gauge!(
        APPLY_LAG,
        "Committed log entries not yet applied by this member (commit index - applied index)."
    );
    describe_histogram!(
        beacon_storage::METRIC_WAL_FSYNC_SECONDS,
        Unit::Seconds,
        "Group fsyncs of the write-ahead log before Raft log entries are acknowledged."
    );
    describe_histogram!(
        beacon_storage::METRIC_APPLY_SECONDS,
        Unit::Seconds,
        "State machine apply calls (committed entries, RocksDB batch and watch fan-out)."
    );
    describe_counter!(
        GRPC_STARTED,
        "Client gRPC calls started, by grpc_type, grpc_service and grpc_method."
    );
    describe_counter!(
        GRPC_HANDLED,
        "Client gRPC calls finished (streams: when they end), by method and grpc_code."
    );
    describe_histogram!(
        GRPC_HANDLING_SECONDS,
        Unit::Seconds,
        "Client gRPC call durations until the status was sent (streams: their lifetime)."
    );
    describe_gauge!(
        WATCH_STREAMS,
        "Open watch streams (etcd Watch streams and catalog service watches)."
    );
    describe_gauge!(WATCHERS, "Watches on this member's open watch streams.");
    describe_gauge!(LEASES, "Leases granted and not yet revoked or expired.");
    describe_gauge!(
        CATALOG_INSTANCES,
        "Catalog instances by health (worst committed check status; passing without checks)."
    );
    describe_gauge!(CATALOG_MAINTENANCE, "Catalog instances in maintenance.");
    describe_gauge!(CATALOG_SERVICES, "Services with at least one instance.");
    describe_counter!(
        CHECK_RUNS,
        "Health-check probes this member ran (TTL: reports it took), by kind and result."
    );
    describe_counter!(
        CHECK_TRANSITIONS,
        "Check status changes this member committed, by kind and new status."
    );
    describe_counter!(
        DNS_QUERIES,
        "DNS queries by result (response code or dropped)."
    );
}
