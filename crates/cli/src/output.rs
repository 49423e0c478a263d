//! Every rendering of command results lives here: one function per result kind, each producing
//! either an aligned text table or one JSON document. Commands never format text themselves, so
//! the two formats cannot drift apart.
//!
//! Conventions (etcdctl's where it has one): member and lease ids are hex (lease ids zero-padded
//! to 16 digits in lease commands, as etcdctl prints them); keys and values are shown as UTF-8
//! (invalid bytes replaced) in both formats; health statuses are lowercase words (`passing`).
//! Tables show times as ages (`since 12s ago`) and cut long probe output; JSON keeps the raw
//! values (`since_unix_ms`, the whole output).

use beacon_client::beaconpb::{
    self, check, instance_event, DeregisterResponse, DiscoverResponse, HealthStatus, Instance,
    ListServicesResponse, RegisterResponse,
};
use beacon_client::{mvccpb, pb, RegistrationState, ServiceUpdate, WatchBatch};
use serde_json::{json, Value};

/// The output format chosen with `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable, aligned columns.
    Table,
    /// One JSON document per command.
    Json,
}

/// One row of `endpoint status`: the member's answer, or why there was none.
#[derive(Debug)]
pub struct EndpointStatus {
    /// The endpoint as given on the command line.
    pub endpoint: String,
    /// The member's status response.
    pub result: Result<pb::StatusResponse, String>,
}

/// One row of `endpoint hashkv`.
#[derive(Debug)]
pub struct EndpointHashKv {
    /// The endpoint as given on the command line.
    pub endpoint: String,
    /// The member's HashKV response.
    pub result: Result<pb::HashKvResponse, String>,
}

/// What `snapshot save` wrote.
#[derive(Debug)]
pub struct SnapshotSaved {
    pub file: String,
    pub endpoint: String,
    pub bytes: u64,
    pub revision: i64,
    pub took: std::time::Duration,
}

/// One row of `endpoint health`.
#[derive(Debug)]
pub struct EndpointHealth {
    /// The endpoint as given on the command line.
    pub endpoint: String,
    /// Time taken by the linearizable probe read.
    pub took: std::time::Duration,
    /// `None` when healthy, else why not.
    pub error: Option<String>,
}

/// The result of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Which case ran (`put`, `range-l`, `range-s`).
    pub case: String,
    /// Requests that succeeded.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall-clock duration of the run in seconds.
    pub seconds: f64,
    /// Latency percentiles and maximum, in milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
}

/// The result of `bench watch-capacity`.
#[derive(Debug, Clone)]
pub struct WatchCapacityReport {
    /// Watches created.
    pub watches: u64,
    /// Streams carrying them.
    pub streams: u64,
    /// Connections carrying the streams.
    pub conns: u64,
    /// Distinct keys watched.
    pub keys: u64,
    /// Seconds until the 10,000th watch was created (`None` with fewer watches).
    pub first_10000_seconds: Option<f64>,
    /// Seconds until every watch was created.
    pub all_seconds: f64,
    /// Seconds the watches were held open afterwards.
    pub hold_seconds: f64,
}

/// The result of `bench service-watch`.
#[derive(Debug, Clone)]
pub struct ServiceWatchReport {
    /// WatchService streams.
    pub watchers: u64,
    /// Connections carrying them.
    pub connections: u64,
    /// Registrations sent (one at a time).
    pub registrations: u64,
    /// Wall-clock duration of the registrations in seconds.
    pub seconds: f64,
    /// Register sent → event received, over every (registration, watcher) pair: p50, p99, max
    /// in milliseconds.
    pub all_ms: [f64; 3],
    /// Register sent → event received by the last watcher, per registration: p50, p99, max.
    pub last_ms: [f64; 3],
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Aligned columns separated by two spaces; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                let padding = widths[index] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(padding + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    lines.extend(rows.iter().map(|row| line(row.clone())));
    lines.join("\n")
}

fn header_json(header: &Option<pb::ResponseHeader>) -> Value {
    let header = header.unwrap_or_default();
    json!({
        "cluster_id": format!("{:x}", header.cluster_id),
        "member_id": format!("{:x}", header.member_id),
        "revision": header.revision,
        "raft_term": header.raft_term,
    })
}

fn kv_json(kv: &mvccpb::KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": format!("{:x}", kv.lease),
    })
}

fn kvs_table(kvs: &[mvccpb::KeyValue], keys_only: bool) -> String {
    if keys_only {
        let rows: Vec<_> = kvs.iter().map(|kv| vec![text(&kv.key)]).collect();
        return table(&["KEY"], &rows);
    }
    let rows: Vec<_> = kvs
        .iter()
        .map(|kv| {
            vec![
                text(&kv.key),
                text(&kv.value),
                kv.create_revision.to_string(),
                kv.mod_revision.to_string(),
                kv.version.to_string(),
                format!("{:x}", kv.lease),
            ]
        })
        .collect();
    table(
        &["KEY", "VALUE", "CREATE_REV", "MOD_REV", "VERSION", "LEASE"],
        &rows,
    )
}

fn range_json(response: &pb::RangeResponse) -> Value {
    json!({
        "header": header_json(&response.header),
        "kvs": response.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        "more": response.more,
        "count": response.count,
    })
}

fn range_table(response: &pb::RangeResponse, keys_only: bool, count_only: bool) -> String {
    if count_only {
        return table(&["COUNT"], &[vec![response.count.to_string()]]);
    }
    let mut out = kvs_table(&response.kvs, keys_only);
    if response.more {
        out.push_str(&format!(
            "\n({} of {} keys shown)",
            response.kvs.len(),
            response.count
        ));
    }
    out
}

/// `get`.
pub fn range(
    format: Format,
    response: &pb::RangeResponse,
    keys_only: bool,
    count_only: bool,
) -> String {
    match format {
        Format::Json => range_json(response).to_string(),
        Format::Table => range_table(response, keys_only, count_only),
    }
}

fn put_json(response: &pb::PutResponse) -> Value {
    json!({
        "header": header_json(&response.header),
        "prev_kv": response.prev_kv.as_ref().map(kv_json),
    })
}

fn put_table(response: &pb::PutResponse) -> String {
    match &response.prev_kv {
        Some(previous) => format!("OK\n{}", kvs_table(std::slice::from_ref(previous), false)),
        None => "OK".to_string(),
    }
}

/// `put`.
pub fn put(format: Format, response: &pb::PutResponse) -> String {
    match format {
        Format::Json => put_json(response).to_string(),
        Format::Table => put_table(response),
    }
}

fn delete_json(response: &pb::DeleteRangeResponse) -> Value {
    json!({
        "header": header_json(&response.header),
        "deleted": response.deleted,
        "prev_kvs": response.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
    })
}

fn delete_table(response: &pb::DeleteRangeResponse) -> String {
    let mut out = format!("deleted {}", response.deleted);
    if !response.prev_kvs.is_empty() {
        out.push('\n');
        out.push_str(&kvs_table(&response.prev_kvs, false));
    }
    out
}

/// `del`.
pub fn delete(format: Format, response: &pb::DeleteRangeResponse) -> String {
    match format {
        Format::Json => delete_json(response).to_string(),
        Format::Table => delete_table(response),
    }
}

/// `compact`.
pub fn compact(format: Format, revision: i64, response: &pb::CompactionResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "compacted_revision": revision,
        })
        .to_string(),
        Format::Table => format!("compacted revision {revision}"),
    }
}

fn response_op_json(op: &pb::ResponseOp) -> Value {
    use pb::response_op::Response;
    match &op.response {
        Some(Response::ResponseRange(range)) => json!({ "range": range_json(range) }),
        Some(Response::ResponsePut(put)) => json!({ "put": put_json(put) }),
        Some(Response::ResponseDeleteRange(delete)) => json!({ "delete": delete_json(delete) }),
        Some(Response::ResponseTxn(txn)) => json!({ "txn": txn_json(txn) }),
        None => Value::Null,
    }
}

fn response_op_table(op: &pb::ResponseOp) -> String {
    use pb::response_op::Response;
    match &op.response {
        Some(Response::ResponseRange(range)) => range_table(range, false, false),
        Some(Response::ResponsePut(put)) => put_table(put),
        Some(Response::ResponseDeleteRange(delete)) => delete_table(delete),
        Some(Response::ResponseTxn(txn)) => txn_table(txn),
        None => String::new(),
    }
}

fn txn_json(response: &pb::TxnResponse) -> Value {
    json!({
        "header": header_json(&response.header),
        "succeeded": response.succeeded,
        "responses": response.responses.iter().map(response_op_json).collect::<Vec<_>>(),
    })
}

fn txn_table(response: &pb::TxnResponse) -> String {
    let mut sections = vec![if response.succeeded {
        "SUCCEEDED".to_string()
    } else {
        "FAILED".to_string()
    }];
    sections.extend(response.responses.iter().map(response_op_table));
    sections.join("\n\n")
}

/// `txn`: which branch ran, then each operation's result.
pub fn txn(format: Format, response: &pb::TxnResponse) -> String {
    match format {
        Format::Json => txn_json(response).to_string(),
        Format::Table => txn_table(response),
    }
}

fn event_type(event: &mvccpb::Event) -> &'static str {
    match event.r#type() {
        mvccpb::event::EventType::Put => "PUT",
        mvccpb::event::EventType::Delete => "DELETE",
    }
}

/// `watch`: one batch (a revision's events, or a progress notification). Table format is
/// etcdctl's: per event its type, then the previous key and value when asked for, then the key
/// and value, each on its own line. JSON is one object per batch, on one line.
pub fn watch(format: Format, batch: &WatchBatch) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&Some(batch.header)),
            "revision": batch.revision,
            "progress_notify": batch.is_progress_notify(),
            "events": batch.events.iter().map(|event| json!({
                "type": event_type(event),
                "kv": event.kv.as_ref().map(kv_json),
                "prev_kv": event.prev_kv.as_ref().map(kv_json),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table if batch.is_progress_notify() => {
            format!("progress notify: {}", batch.revision)
        }
        Format::Table => {
            let mut lines = Vec::new();
            for event in &batch.events {
                lines.push(event_type(event).to_string());
                for kv in event.prev_kv.iter().chain(&event.kv) {
                    lines.push(text(&kv.key));
                    lines.push(text(&kv.value));
                }
            }
            lines.join("\n")
        }
    }
}

/// `member list`.
pub fn members(format: Format, response: &pb::MemberListResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "members": response.members.iter().map(member_json).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => {
            let rows: Vec<_> = response
                .members
                .iter()
                .map(|member| {
                    vec![
                        format!("{:x}", member.id),
                        // etcd lists a member that has not joined yet with an empty name.
                        if member.name.is_empty() {
                            "unstarted"
                        } else {
                            "started"
                        }
                        .to_string(),
                        member.name.clone(),
                        member.peer_ur_ls.join(","),
                        member.client_ur_ls.join(","),
                        member.is_learner.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "STATUS",
                    "NAME",
                    "PEER ADDRS",
                    "CLIENT ADDRS",
                    "IS LEARNER",
                ],
                &rows,
            )
        }
    }
}

/// `member add`: etcdctl's first line, then the settings the new member starts with.
pub fn member_added(format: Format, name: &str, response: &pb::MemberAddResponse) -> String {
    let member = response.member.clone().unwrap_or_default();
    let cluster = response
        .header
        .as_ref()
        .map_or(0, |header| header.cluster_id);
    let peer = member
        .peer_ur_ls
        .first()
        .map(|url| url.trim_start_matches("http://").to_string())
        .unwrap_or_default();
    let mut config = format!(
        "name = \"{name}\"\nid = {}\ninitial_cluster_state = \"existing\"\n",
        member.id
    );
    for other in response
        .members
        .iter()
        .filter(|other| other.id != member.id)
    {
        let Some(client) = other.client_ur_ls.first() else {
            continue;
        };
        config.push_str(&format!(
            "\n[[initial_members]]\nid = {}\nname = \"{}\"\npeer = \"{}\"\nclient = \"{}\"\n",
            other.id,
            other.name,
            other
                .peer_ur_ls
                .first()
                .map_or("", |url| url.trim_start_matches("http://")),
            client.trim_start_matches("http://"),
        ));
    }
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "member": {
                "id": format!("{:x}", member.id),
                "peer_urls": member.peer_ur_ls,
                "is_learner": member.is_learner,
            },
            "members": response.members.iter().map(member_json).collect::<Vec<_>>(),
            "config": config,
        })
        .to_string(),
        Format::Table => format!(
            "Member {:16x} added to cluster {cluster:16x}\n\n\
             Start it with a config holding these settings, its own data_dir and [client], and\n\
             [peer] advertising {peer}:\n\n{config}",
            member.id
        ),
    }
}

fn member_json(member: &pb::Member) -> Value {
    json!({
        "id": format!("{:x}", member.id),
        "name": member.name,
        "peer_urls": member.peer_ur_ls,
        "client_urls": member.client_ur_ls,
        "is_learner": member.is_learner,
    })
}

/// `member promote|remove|update|move-leader`: etcdctl's line, or the members as JSON.
pub fn member_changed(
    format: Format,
    header: &Option<pb::ResponseHeader>,
    members: &[pb::Member],
    line: &str,
) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(header),
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => line.to_string(),
    }
}

/// Bytes as etcdctl shows database sizes (`20 kB`, `1.2 MB`).
fn human_bytes(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// `endpoint hashkv`: etcdctl's columns (endpoint, hash, revision hashed, compaction).
pub fn endpoint_hash_kv(format: Format, rows: &[EndpointHashKv]) -> String {
    match format {
        Format::Json => Value::Array(
            rows.iter()
                .map(|row| match &row.result {
                    Ok(hash) => json!({
                        "endpoint": row.endpoint,
                        "hash": hash.hash,
                        "hash_revision": hash.hash_revision,
                        "compact_revision": hash.compact_revision,
                        "revision": hash.header.unwrap_or_default().revision,
                    }),
                    Err(error) => json!({ "endpoint": row.endpoint, "errors": [error] }),
                })
                .collect(),
        )
        .to_string(),
        Format::Table => {
            let table_rows: Vec<_> = rows
                .iter()
                .map(|row| match &row.result {
                    Ok(hash) => vec![
                        row.endpoint.clone(),
                        hash.hash.to_string(),
                        hash.hash_revision.to_string(),
                        hash.compact_revision.to_string(),
                        String::new(),
                    ],
                    Err(error) => vec![
                        row.endpoint.clone(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        error.clone(),
                    ],
                })
                .collect();
            table(
                &[
                    "ENDPOINT",
                    "HASH",
                    "HASH REVISION",
                    "COMPACT REVISION",
                    "ERROR",
                ],
                &table_rows,
            )
        }
    }
}

/// `snapshot save`: where the backup went and what it holds.
pub fn snapshot_saved(format: Format, saved: &SnapshotSaved) -> String {
    match format {
        Format::Json => json!({
            "file": saved.file,
            "endpoint": saved.endpoint,
            "bytes": saved.bytes,
            "revision": saved.revision,
            "took_ms": saved.took.as_millis() as u64,
        })
        .to_string(),
        Format::Table => format!(
            "Snapshot saved at {} ({}, revision {}, from {}, SHA-256 checked, {:.1?})",
            saved.file,
            human_bytes(i64::try_from(saved.bytes).unwrap_or(i64::MAX)),
            saved.revision,
            saved.endpoint,
            saved.took
        ),
    }
}

/// `endpoint status`.
pub fn endpoint_status(format: Format, rows: &[EndpointStatus]) -> String {
    match format {
        Format::Json => Value::Array(
            rows.iter()
                .map(|row| match &row.result {
                    Ok(status) => {
                        let member_id = status.header.unwrap_or_default().member_id;
                        json!({
                            "endpoint": row.endpoint,
                            "id": format!("{member_id:x}"),
                            "version": status.version,
                            "db_size": status.db_size,
                            "db_size_in_use": status.db_size_in_use,
                            "leader": format!("{:x}", status.leader),
                            "is_leader": status.leader == member_id,
                            "is_learner": status.is_learner,
                            "raft_term": status.raft_term,
                            "raft_index": status.raft_index,
                            "raft_applied_index": status.raft_applied_index,
                            "errors": status.errors,
                        })
                    }
                    Err(error) => json!({ "endpoint": row.endpoint, "errors": [error] }),
                })
                .collect(),
        )
        .to_string(),
        Format::Table => {
            let table_rows: Vec<_> = rows
                .iter()
                .map(|row| match &row.result {
                    Ok(status) => {
                        let member_id = status.header.unwrap_or_default().member_id;
                        vec![
                            row.endpoint.clone(),
                            format!("{member_id:x}"),
                            status.version.clone(),
                            human_bytes(status.db_size),
                            (status.leader == member_id).to_string(),
                            status.raft_term.to_string(),
                            status.raft_index.to_string(),
                            status.raft_applied_index.to_string(),
                            status.errors.join("; "),
                        ]
                    }
                    Err(error) => {
                        let mut cells = vec![row.endpoint.clone()];
                        cells.extend(std::iter::repeat_n(String::from("-"), 7));
                        cells.push(error.clone());
                        cells
                    }
                })
                .collect();
            table(
                &[
                    "ENDPOINT",
                    "ID",
                    "VERSION",
                    "DB SIZE",
                    "IS LEADER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "APPLIED INDEX",
                    "ERRORS",
                ],
                &table_rows,
            )
        }
    }
}

/// `endpoint health`.
pub fn endpoint_health(format: Format, rows: &[EndpointHealth]) -> String {
    let took_ms = |row: &EndpointHealth| row.took.as_secs_f64() * 1000.0;
    match format {
        Format::Json => Value::Array(
            rows.iter()
                .map(|row| {
                    json!({
                        "endpoint": row.endpoint,
                        "health": row.error.is_none(),
                        "took_ms": took_ms(row),
                        "error": row.error,
                    })
                })
                .collect(),
        )
        .to_string(),
        Format::Table => {
            let table_rows: Vec<_> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.endpoint.clone(),
                        row.error.is_none().to_string(),
                        format!("{:.2}ms", took_ms(row)),
                        row.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &table_rows)
        }
    }
}

/// `bench put` / `bench range`.
pub fn bench(format: Format, report: &BenchReport) -> String {
    let rate = if report.seconds > 0.0 {
        report.requests as f64 / report.seconds
    } else {
        0.0
    };
    let [p50, p90, p99, max] = report.latency_ms;
    match format {
        Format::Json => json!({
            "case": report.case,
            "requests": report.requests,
            "errors": report.errors,
            "seconds": report.seconds,
            "requests_per_second": rate,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "max_ms": max,
        })
        .to_string(),
        Format::Table => table(
            &[
                "CASE", "REQUESTS", "ERRORS", "SECONDS", "REQ/S", "P50", "P90", "P99", "MAX",
            ],
            &[vec![
                report.case.clone(),
                report.requests.to_string(),
                report.errors.to_string(),
                format!("{:.2}", report.seconds),
                format!("{rate:.0}"),
                format!("{p50:.3}ms"),
                format!("{p90:.3}ms"),
                format!("{p99:.3}ms"),
                format!("{max:.3}ms"),
            ]],
        ),
    }
}

/// `bench service-watch`.
pub fn bench_service_watch(format: Format, report: &ServiceWatchReport) -> String {
    let [p50, p99, max] = report.all_ms;
    let [last_p50, last_p99, last_max] = report.last_ms;
    match format {
        Format::Json => json!({
            "case": "service-watch",
            "watchers": report.watchers,
            "connections": report.connections,
            "registrations": report.registrations,
            "seconds": report.seconds,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "last_p50_ms": last_p50,
            "last_p99_ms": last_p99,
            "last_max_ms": last_max,
        })
        .to_string(),
        Format::Table => table(
            &[
                "CASE",
                "WATCHERS",
                "CONNS",
                "REGISTRATIONS",
                "P50",
                "P99",
                "MAX",
                "LAST P50",
                "LAST P99",
                "LAST MAX",
            ],
            &[vec![
                "service-watch".to_string(),
                report.watchers.to_string(),
                report.connections.to_string(),
                report.registrations.to_string(),
                format!("{p50:.3}ms"),
                format!("{p99:.3}ms"),
                format!("{max:.3}ms"),
                format!("{last_p50:.3}ms"),
                format!("{last_p99:.3}ms"),
                format!("{last_max:.3}ms"),
            ]],
        ),
    }
}

/// `bench watch-capacity`.
pub fn watch_capacity(format: Format, report: &WatchCapacityReport) -> String {
    let rate = report.watches as f64 / report.all_seconds.max(f64::MIN_POSITIVE);
    match format {
        Format::Json => json!({
            "case": "watch-capacity",
            "watches": report.watches,
            "streams": report.streams,
            "conns": report.conns,
            "keys": report.keys,
            "create_10k_seconds": report.first_10000_seconds,
            "create_all_seconds": report.all_seconds,
            "watches_per_second": rate,
            "hold_seconds": report.hold_seconds,
        })
        .to_string(),
        Format::Table => table(
            &[
                "CASE",
                "WATCHES",
                "STREAMS",
                "CONNS",
                "KEYS",
                "FIRST 10K",
                "ALL",
                "WATCHES/S",
            ],
            &[vec![
                "watch-capacity".to_string(),
                report.watches.to_string(),
                report.streams.to_string(),
                report.conns.to_string(),
                report.keys.to_string(),
                report
                    .first_10000_seconds
                    .map_or("-".to_string(), |seconds| format!("{seconds:.3}s")),
                format!("{:.3}s", report.all_seconds),
                format!("{rate:.0}"),
            ]],
        ),
    }
}

/// A lease id as etcdctl prints it in lease commands: 16 hex digits.
fn lease_hex(id: i64) -> String {
    format!("{id:016x}")
}

/// `lease grant`.
pub fn lease_grant(format: Format, response: &pb::LeaseGrantResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "id": lease_hex(response.id),
            "ttl": response.ttl,
        })
        .to_string(),
        Format::Table => format!(
            "lease {} granted with TTL({}s)",
            lease_hex(response.id),
            response.ttl
        ),
    }
}

/// `lease revoke`.
pub fn lease_revoke(format: Format, id: i64, response: &pb::LeaseRevokeResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "id": lease_hex(id),
            "revoked": true,
        })
        .to_string(),
        Format::Table => format!("lease {} revoked", lease_hex(id)),
    }
}

/// `lease keep-alive`: one renewal.
pub fn lease_keep_alive(format: Format, id: i64, ttl: i64) -> String {
    match format {
        Format::Json => json!({ "id": lease_hex(id), "ttl": ttl }).to_string(),
        Format::Table => format!("lease {} keepalived with TTL({ttl})", lease_hex(id)),
    }
}

/// `lease list`.
pub fn lease_list(format: Format, response: &pb::LeaseLeasesResponse) -> String {
    let ids: Vec<String> = response
        .leases
        .iter()
        .map(|lease| lease_hex(lease.id))
        .collect();
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "leases": ids,
        })
        .to_string(),
        Format::Table => {
            let mut lines = vec![format!("found {} leases", ids.len())];
            lines.extend(ids);
            lines.join("\n")
        }
    }
}

/// `lease ttl`: etcdctl's `lease timetolive` wording; TTL -1 means the lease is gone.
pub fn lease_ttl(format: Format, response: &pb::LeaseTimeToLiveResponse, keys: bool) -> String {
    let key_names: Vec<String> = response.keys.iter().map(|key| text(key)).collect();
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "id": lease_hex(response.id),
            "ttl": response.ttl,
            "granted_ttl": response.granted_ttl,
            "keys": key_names,
        })
        .to_string(),
        Format::Table if response.ttl == -1 => {
            format!("lease {} already expired", lease_hex(response.id))
        }
        Format::Table => {
            let mut line = format!(
                "lease {} granted with TTL({}s), remaining({}s)",
                lease_hex(response.id),
                response.granted_ttl,
                response.ttl
            );
            if keys {
                line.push_str(&format!(", attached keys([{}])", key_names.join(" ")));
            }
            line
        }
    }
}

fn health_word(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical => "critical",
        HealthStatus::Unspecified => "unknown",
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn address_port(instance: &Instance) -> String {
    if instance.address.contains(':') {
        format!("[{}]:{}", instance.address, instance.port)
    } else {
        format!("{}:{}", instance.address, instance.port)
    }
}

/// Metadata as `k=v` pairs, sorted by key (the wire map has no order).
fn sorted_metadata(instance: &Instance) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = instance
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    pairs.sort();
    pairs
}

/// A check's kind and what it probes: the URL, `host:port` (`host:port/service` for a gRPC
/// check of one service), or a TTL check's TTL.
fn check_kind(check: &beaconpb::Check) -> (&'static str, String) {
    match &check.kind {
        Some(check::Kind::Http(http)) => ("http", http.url.clone()),
        Some(check::Kind::Tcp(tcp)) => ("tcp", tcp.address.clone()),
        Some(check::Kind::Grpc(grpc)) if grpc.service.is_empty() => ("grpc", grpc.address.clone()),
        Some(check::Kind::Grpc(grpc)) => ("grpc", format!("{}/{}", grpc.address, grpc.service)),
        Some(check::Kind::Ttl(ttl)) => ("ttl", milliseconds_text(ttl.ttl_ms)),
        None => ("-", String::new()),
    }
}

/// A duration in the units it was likely given in: `30s`, `10m`, `1500ms`.
fn milliseconds_text(milliseconds: u64) -> String {
    match milliseconds {
        0 => "0s".to_string(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// How long ago `since_unix_ms` was at `now_unix_ms`, coarsely: `12s`, `4m12s`, `3h4m`,
/// `2d3h`. A time in the future (a member's clock ahead of ours) reads as `0s`.
fn age_text(since_unix_ms: i64, now_unix_ms: i64) -> String {
    let seconds = now_unix_ms.saturating_sub(since_unix_ms).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m{}s", seconds / 60, seconds % 60),
        3_600..86_400 => format!("{}h{}m", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{}d{}h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// The longest probe output a check line shows, in characters.
const OUTPUT_PREVIEW_CHARS: usize = 100;

/// The first line of a probe's output, cut to [`OUTPUT_PREVIEW_CHARS`]; `…` marks anything
/// left out (the JSON output has all of it).
fn output_preview(output: &str) -> String {
    let mut lines = output.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let more_lines = lines.next().is_some();
    if first.chars().count() > OUTPUT_PREVIEW_CHARS {
        let mut cut: String = first.chars().take(OUTPUT_PREVIEW_CHARS - 1).collect();
        cut.push('…');
        cut
    } else if more_lines {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// One check under the instance table: `check INSTANCE/CHECK KIND TARGET: STATUS`, then, when
/// known, `since AGE ago`, the output preview in parentheses and `; reason: …`.
fn check_line(instance_id: &str, check: &beaconpb::Check, now_unix_ms: i64) -> String {
    let (kind, target) = check_kind(check);
    let state = check.state.clone().unwrap_or_default();
    let mut line = format!(
        "  check {instance_id}/{} {kind} {target}: {}",
        check.id,
        health_word(state.status())
    );
    if state.since_unix_ms != 0 {
        line.push_str(&format!(
            " since {} ago",
            age_text(state.since_unix_ms, now_unix_ms)
        ));
    }
    let preview = output_preview(&state.output);
    if !preview.is_empty() {
        line.push_str(&format!(" ({preview})"));
    }
    if !state.reason.is_empty() {
        line.push_str(&format!("; reason: {}", state.reason));
    }
    if let Some(probe) = &check.last_probe {
        line.push_str(&format!(
            "\n    last {} {} ago by member {:x}: {}",
            if matches!(check.kind, Some(check::Kind::Ttl(_))) {
                "report"
            } else {
                "probe"
            },
            age_text(probe.at_unix_ms, now_unix_ms),
            probe.member_id,
            health_word(probe.status()),
        ));
        if probe.latency_us > 0 {
            line.push_str(&format!(" in {}", latency_text(probe.latency_us)));
        }
        let preview = output_preview(&probe.output);
        if !preview.is_empty() {
            line.push_str(&format!(" ({preview})"));
        }
    }
    line
}

/// A probe's latency: `850us`, `12.3ms`, `1.20s`.
fn latency_text(micros: u64) -> String {
    if micros < 1000 {
        format!("{micros}us")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1000.0)
    } else {
        format!("{:.2}s", micros as f64 / 1_000_000.0)
    }
}

/// Every field of a check: its definition (with the kind's own fields under the kind's name)
/// and its last committed state.
fn check_json(check: &beaconpb::Check) -> Value {
    let (kind, target) = check_kind(check);
    let state = check.state.clone().unwrap_or_default();
    let details = match &check.kind {
        Some(check::Kind::Http(http)) => {
            let mut headers: Vec<(&String, &String)> = http.headers.iter().collect();
            headers.sort();
            json!({
                "url": http.url,
                "method": http.method,
                "headers": headers
                    .into_iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect::<serde_json::Map<String, Value>>(),
                "tls_skip_verify": http.tls_skip_verify,
            })
        }
        Some(check::Kind::Tcp(tcp)) => json!({ "address": tcp.address }),
        Some(check::Kind::Grpc(grpc)) => json!({
            "address": grpc.address,
            "service": grpc.service,
            "tls": grpc.tls,
        }),
        Some(check::Kind::Ttl(ttl)) => json!({ "ttl_ms": ttl.ttl_ms }),
        None => Value::Null,
    };
    let mut value = json!({
        "id": check.id,
        "kind": kind,
        "target": target,
        "interval_ms": check.interval_ms,
        "timeout_ms": check.timeout_ms,
        "success_before_passing": check.success_before_passing,
        "failures_before_warning": check.failures_before_warning,
        "failures_before_critical": check.failures_before_critical,
        "deregister_critical_after_ms": check.deregister_critical_after_ms,
        "initial_status": health_word(check.initial_status()),
        "status": health_word(state.status()),
        "output": state.output,
        "reason": state.reason,
        "since_unix_ms": state.since_unix_ms,
        "last_probe": check.last_probe.as_ref().map(|probe| json!({
            "status": health_word(probe.status()),
            "output": probe.output,
            "latency_us": probe.latency_us,
            "at_unix_ms": probe.at_unix_ms,
            "member_id": format!("{:x}", probe.member_id),
        })),
    });
    if check.kind.is_some() {
        value[kind] = details;
    }
    value
}

/// Milliseconds since the Unix epoch by this machine's clock (0 if it is set before 1970).
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn instance_json(instance: &Instance) -> Value {
    let maintenance = instance.maintenance.clone().unwrap_or_default();
    json!({
        "service": instance.service,
        "id": instance.id,
        "address": instance.address,
        "port": instance.port,
        "tags": instance.tags,
        "metadata": sorted_metadata(instance)
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect::<serde_json::Map<String, Value>>(),
        "weight": instance.weight.max(1),
        "lease": format!("{:x}", instance.lease),
        "health": health_word(instance.health()),
        "maintenance": { "enabled": maintenance.enabled, "reason": maintenance.reason },
        "checks": instance.checks.iter().map(check_json).collect::<Vec<_>>(),
        "create_revision": instance.create_revision,
        "mod_revision": instance.mod_revision,
    })
}

fn instances_table(instances: &[Instance]) -> String {
    let rows: Vec<_> = instances
        .iter()
        .map(|instance| {
            let maintenance = match &instance.maintenance {
                Some(maintenance) if maintenance.enabled && maintenance.reason.is_empty() => {
                    "on".to_string()
                }
                Some(maintenance) if maintenance.enabled => format!("on ({})", maintenance.reason),
                _ => "-".to_string(),
            };
            let or_dash = |text: String| {
                if text.is_empty() {
                    "-".to_string()
                } else {
                    text
                }
            };
            vec![
                instance.id.clone(),
                instance.address.clone(),
                instance.port.to_string(),
                health_word(instance.health()).to_string(),
                or_dash(instance.tags.join(",")),
                or_dash(
                    sorted_metadata(instance)
                        .iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                instance.weight.max(1).to_string(),
                if instance.lease == 0 {
                    "-".to_string()
                } else {
                    format!("{:x}", instance.lease)
                },
                maintenance,
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID", "ADDRESS", "PORT", "HEALTH", "TAGS", "META", "WEIGHT", "LEASE", "MAINT",
        ],
        &rows,
    );
    let now_unix_ms = now_unix_ms();
    for instance in instances {
        for check in &instance.checks {
            out.push('\n');
            out.push_str(&check_line(&instance.id, check, now_unix_ms));
        }
    }
    out
}

/// `service register` (without `--ttl`, and the first line of the kept-alive form).
pub fn service_register(format: Format, response: &RegisterResponse) -> String {
    let instance = response.instance.clone().unwrap_or_default();
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "created": response.created,
            "instance": instance_json(&instance),
        })
        .to_string(),
        Format::Table => format!(
            "{} {}/{}\n{}",
            if response.created {
                "registered"
            } else {
                "replaced"
            },
            instance.service,
            instance.id,
            instances_table(std::slice::from_ref(&instance))
        ),
    }
}

/// The stderr line `service register --ttl` prints while it keeps the instance alive, and on
/// each change of its registration.
pub fn registration_state(state: &RegistrationState) -> String {
    match state {
        RegistrationState::Registered {
            instance,
            lease_id,
            ttl,
            generation: 1,
        } => format!(
            "keeping {}/{} registered with lease {} (TTL {ttl}s); Ctrl-C to deregister",
            instance.service,
            instance.id,
            lease_hex(*lease_id)
        ),
        RegistrationState::Registered {
            instance,
            lease_id,
            generation,
            ..
        } => format!(
            "registered {}/{} again with lease {} (registration {generation})",
            instance.service,
            instance.id,
            lease_hex(*lease_id)
        ),
        RegistrationState::Reregistering {
            lost_lease_id,
            reason,
            ..
        } => format!(
            "lease {} lost ({reason}); registering again",
            lease_hex(*lost_lease_id)
        ),
    }
}

/// The stderr line `service register --ttl` prints once it deregistered on a signal.
pub fn registration_ended(service: &str, id: &str) -> String {
    format!("deregistered {service}/{id}")
}

/// `service deregister`.
pub fn service_deregister(
    format: Format,
    service: &str,
    id: &str,
    response: &DeregisterResponse,
) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "service": service,
            "id": id,
            "deleted": response.deleted,
        })
        .to_string(),
        Format::Table if response.deleted => format!("deregistered {service}/{id}"),
        Format::Table => format!("{service}/{id} was not registered"),
    }
}

/// `service list`.
pub fn service_list(format: Format, response: &ListServicesResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "services": response.services.iter().map(|service| json!({
                "name": service.name,
                "instances": service.instances,
                "passing": service.passing,
                "warning": service.warning,
                "critical": service.critical,
                "maintenance": service.maintenance,
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => {
            let rows: Vec<_> = response
                .services
                .iter()
                .map(|service| {
                    vec![
                        service.name.clone(),
                        service.instances.to_string(),
                        service.passing.to_string(),
                        service.warning.to_string(),
                        service.critical.to_string(),
                        service.maintenance.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "SERVICE",
                    "INSTANCES",
                    "PASSING",
                    "WARNING",
                    "CRITICAL",
                    "MAINTENANCE",
                ],
                &rows,
            )
        }
    }
}

/// `service show`: every instance of a service (also used for one changed instance).
pub fn service_instances(
    format: Format,
    header: &Option<pb::ResponseHeader>,
    instances: &[Instance],
) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(header),
            "instances": instances.iter().map(instance_json).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => instances_table(instances),
    }
}

/// `service discover`: the instances in the order to call them, and whether the answer failed
/// open (no instance passed, so every instance is listed).
pub fn service_discover(format: Format, response: &DiscoverResponse) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "failed_open": response.failed_open,
            "instances": response.instances.iter().map(instance_json).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => {
            let mut out = instances_table(&response.instances);
            if response.failed_open {
                out.push_str(
                    "\n(failed open: no instance is passing, so every instance is listed)",
                );
            }
            out
        }
    }
}

/// `service maintenance on|off`.
pub fn service_maintenance(format: Format, response: &beaconpb::SetMaintenanceResponse) -> String {
    let instance = response.instance.clone().unwrap_or_default();
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "instance": instance_json(&instance),
        })
        .to_string(),
        Format::Table => {
            let enabled = instance
                .maintenance
                .as_ref()
                .is_some_and(|maintenance| maintenance.enabled);
            format!(
                "maintenance {} for {}/{}\n{}",
                if enabled { "on" } else { "off" },
                instance.service,
                instance.id,
                instances_table(std::slice::from_ref(&instance))
            )
        }
    }
}

/// `service heartbeat`: the lease's remaining TTL (0 for a persistent instance).
pub fn service_heartbeat(
    format: Format,
    service: &str,
    id: &str,
    response: &beaconpb::HeartbeatResponse,
) -> String {
    match format {
        Format::Json => json!({
            "header": header_json(&response.header),
            "service": service,
            "id": id,
            "ttl": response.ttl,
        })
        .to_string(),
        Format::Table if response.ttl > 0 => {
            format!("heartbeat {service}/{id}: lease ttl {}s", response.ttl)
        }
        Format::Table => format!("heartbeat {service}/{id}: ok"),
    }
}

/// `service settings`.
pub fn service_settings(format: Format, settings: &beaconpb::ServiceSettings) -> String {
    match format {
        Format::Json => json!({
            "service": settings.service,
            "min_healthy": settings.min_healthy,
            "dns_ttl_s": settings.dns_ttl_s,
        })
        .to_string(),
        Format::Table => format!(
            "service {}: min_healthy {} dns_ttl {}s",
            settings.service, settings.min_healthy, settings.dns_ttl_s
        ),
    }
}

/// `service watch`: one update as lines. The snapshot is a `SNAPSHOT` line and one `INSTANCE`
/// line per instance; then each event is a `PUT` line (`service id address:port health`) or a
/// `DELETE` line (`service id`), ending with `revision=N`, the event's own revision. JSON: one
/// object per line, for the snapshot and for each event.
pub fn service_watch(format: Format, service: &str, update: &ServiceUpdate) -> String {
    let mut lines = Vec::new();
    match update {
        ServiceUpdate::Snapshot {
            revision,
            instances,
            ..
        } => match format {
            Format::Json => lines.push(
                json!({
                    "type": "SNAPSHOT",
                    "service": service,
                    "revision": revision,
                    "instances": instances.iter().map(instance_json).collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            Format::Table => {
                lines.push(format!(
                    "SNAPSHOT {service} revision={revision} instances={}",
                    instances.len()
                ));
                for instance in instances {
                    lines.push(format!("INSTANCE {}", instance_words(instance)));
                }
            }
        },
        ServiceUpdate::Changes { events, .. } => {
            for event in events {
                let instance = event.instance.clone().unwrap_or_default();
                let revision = event.revision;
                let kind = match event.r#type() {
                    instance_event::EventType::Put => "PUT",
                    instance_event::EventType::Delete => "DELETE",
                };
                lines.push(match format {
                    Format::Json => json!({
                        "type": kind,
                        "service": instance.service,
                        "id": instance.id,
                        "revision": revision,
                        "instance": instance_json(&instance),
                    })
                    .to_string(),
                    Format::Table if kind == "PUT" => {
                        format!("PUT {} revision={revision}", instance_words(&instance))
                    }
                    Format::Table => format!(
                        "DELETE {} {} revision={revision}",
                        instance.service, instance.id
                    ),
                });
            }
        }
    }
    lines.join("\n")
}

/// `service id address:port health [maintenance]`.
fn instance_words(instance: &Instance) -> String {
    let mut words = format!(
        "{} {} {} {}",
        instance.service,
        instance.id,
        address_port(instance),
        health_word(instance.health())
    );
    if instance
        .maintenance
        .as_ref()
        .is_some_and(|maintenance| maintenance.enabled)
    {
        words.push_str(" maintenance");
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rendered = table(
            &["KEY", "VALUE"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "2".into()],
            ],
        );
        assert_eq!(rendered, "KEY     VALUE\na       1\nlonger  2");
    }

    #[test]
    fn member_ids_are_hex() {
        let response = pb::MemberListResponse {
            header: None,
            members: vec![pb::Member {
                id: 0x8e9e05c52164694d,
                name: "default".into(),
                ..Default::default()
            }],
        };
        assert!(members(Format::Table, &response).contains("8e9e05c52164694d"));
        let parsed: Value =
            serde_json::from_str(&members(Format::Json, &response)).expect("valid json");
        assert_eq!(parsed["members"][0]["id"], "8e9e05c52164694d");
    }

    fn web_instance() -> Instance {
        Instance {
            service: "web".into(),
            id: "web-1".into(),
            address: "127.0.0.1".into(),
            port: 8080,
            health: HealthStatus::Passing as i32,
            mod_revision: 7,
            ..Default::default()
        }
    }

    #[test]
    fn lease_ids_are_16_hex_digits_like_etcdctl() {
        let granted = pb::LeaseGrantResponse {
            id: 0x2b,
            ttl: 10,
            ..Default::default()
        };
        assert_eq!(
            lease_grant(Format::Table, &granted),
            "lease 000000000000002b granted with TTL(10s)"
        );
    }

    #[test]
    fn service_watch_prints_one_line_per_instance_and_event() {
        let snapshot = ServiceUpdate::Snapshot {
            header: Default::default(),
            revision: 5,
            instances: vec![web_instance()],
        };
        assert_eq!(
            service_watch(Format::Table, "web", &snapshot),
            "SNAPSHOT web revision=5 instances=1\nINSTANCE web web-1 127.0.0.1:8080 passing"
        );
        let mut drained = web_instance();
        drained.address = "::1".into();
        drained.maintenance = Some(beaconpb::Maintenance {
            enabled: true,
            reason: String::new(),
        });
        let event = |kind: instance_event::EventType, instance: Instance, revision| {
            beaconpb::InstanceEvent {
                r#type: kind as i32,
                instance: Some(instance),
                prev_instance: None,
                revision,
            }
        };
        let changes = ServiceUpdate::Changes {
            header: Default::default(),
            revision: 9,
            events: vec![
                event(instance_event::EventType::Put, drained, 7),
                event(instance_event::EventType::Delete, web_instance(), 9),
            ],
        };
        assert_eq!(
            service_watch(Format::Table, "web", &changes),
            "PUT web web-1 [::1]:8080 passing maintenance revision=7\nDELETE web web-1 revision=9"
        );
        for line in service_watch(Format::Json, "web", &changes).lines() {
            let parsed: Value = serde_json::from_str(line).expect("one JSON object per line");
            assert_eq!(parsed["id"], "web-1");
        }
    }

    #[test]
    fn checks_are_listed_under_the_instance_table() {
        let mut instance = web_instance();
        instance.checks = vec![beaconpb::Check {
            id: "http".into(),
            kind: Some(check::Kind::Http(beaconpb::HttpCheck {
                url: "http://127.0.0.1:8080/health".into(),
                ..Default::default()
            })),
            state: Some(beaconpb::CheckState {
                status: HealthStatus::Critical as i32,
                output: "HTTP 503".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let rendered = service_instances(Format::Table, &None, &[instance]);
        assert_eq!(
            rendered.lines().last(),
            Some("  check web-1/http http http://127.0.0.1:8080/health: critical (HTTP 503)")
        );
    }

    #[test]
    fn check_lines_show_age_output_preview_and_reason() {
        let now = 1_700_000_000_000;
        let check = |output: &str, since_unix_ms: i64, reason: &str| beaconpb::Check {
            id: "grpc-2".into(),
            kind: Some(check::Kind::Grpc(beaconpb::GrpcCheck {
                address: "127.0.0.1:50051".into(),
                service: "pkg.Svc".into(),
                tls: true,
            })),
            state: Some(beaconpb::CheckState {
                status: HealthStatus::Warning as i32,
                output: output.into(),
                since_unix_ms,
                reason: reason.into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            check_line(
                "web-1",
                &check("NOT_SERVING\nmore detail", now - 12_500, "1 failed probe"),
                now
            ),
            "  check web-1/grpc-2 grpc 127.0.0.1:50051/pkg.Svc: warning since 12s ago \
             (NOT_SERVING …); reason: 1 failed probe"
        );
        let long = "x".repeat(150);
        let line = check_line("web-1", &check(&long, 0, ""), now);
        let preview = format!("({}…)", "x".repeat(OUTPUT_PREVIEW_CHARS - 1));
        assert!(line.ends_with(&preview), "{line}");
        assert!(!line.contains("since"), "no verdict yet: {line}");
        assert!(!line.contains("reason"), "{line}");
    }

    #[test]
    fn ages_are_coarse_and_never_negative() {
        let now = 10_000_000_000;
        assert_eq!(age_text(now - 999, now), "0s");
        assert_eq!(age_text(now - 59_000, now), "59s");
        assert_eq!(age_text(now - 252_000, now), "4m12s");
        assert_eq!(age_text(now - 11_040_000, now), "3h4m");
        assert_eq!(age_text(now - 183_600_000, now), "2d3h");
        assert_eq!(age_text(now + 5_000, now), "0s", "a clock ahead of ours");
        assert_eq!(milliseconds_text(30_000), "30s");
        assert_eq!(milliseconds_text(600_000), "10m");
        assert_eq!(milliseconds_text(1_500), "1500ms");
    }

    #[test]
    fn check_json_holds_the_definition_and_the_whole_state() {
        let mut instance = web_instance();
        instance.checks = vec![beaconpb::Check {
            id: "http".into(),
            kind: Some(check::Kind::Http(beaconpb::HttpCheck {
                url: "https://127.0.0.1:8443/health".into(),
                method: "HEAD".into(),
                headers: [("X-Probe".to_string(), "beacon".to_string())].into(),
                tls_skip_verify: true,
            })),
            interval_ms: 5_000,
            timeout_ms: 2_000,
            failures_before_critical: 3,
            deregister_critical_after_ms: 600_000,
            initial_status: HealthStatus::Passing as i32,
            state: Some(beaconpb::CheckState {
                status: HealthStatus::Critical as i32,
                output: "HTTP 503\nbody".into(),
                since_unix_ms: 42,
                reason: "3 failed probes in a row".into(),
            }),
            ..Default::default()
        }];
        let parsed: Value =
            serde_json::from_str(&service_instances(Format::Json, &None, &[instance]))
                .expect("valid json");
        let check = &parsed["instances"][0]["checks"][0];
        assert_eq!(check["kind"], "http");
        assert_eq!(check["http"]["method"], "HEAD");
        assert_eq!(check["http"]["headers"]["X-Probe"], "beacon");
        assert_eq!(check["http"]["tls_skip_verify"], true);
        assert_eq!(check["interval_ms"], 5_000);
        assert_eq!(check["timeout_ms"], 2_000);
        assert_eq!(check["deregister_critical_after_ms"], 600_000);
        assert_eq!(check["initial_status"], "passing");
        assert_eq!(check["status"], "critical");
        assert_eq!(check["output"], "HTTP 503\nbody", "the whole output");
        assert_eq!(check["reason"], "3 failed probes in a row");
        assert_eq!(check["since_unix_ms"], 42);
    }

    #[test]
    fn sizes_read_like_etcdctl() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20480), "20.5 kB");
    }
}
