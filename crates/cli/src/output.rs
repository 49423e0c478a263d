//! Every rendering of command results lives here: one function per result kind, each producing
//! either an aligned text table or one JSON document. Commands never format text themselves, so
//! the two formats cannot drift apart.
//!
//! Conventions (etcdctl's where it has one): member ids are hex; keys and values are shown as
//! UTF-8 (invalid bytes replaced) in both formats.

use beacon_client::{mvccpb, pb, WatchBatch};
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
            "members": response.members.iter().map(|member| json!({
                "id": format!("{:x}", member.id),
                "name": member.name,
                "peer_urls": member.peer_ur_ls,
                "client_urls": member.client_ur_ls,
                "is_learner": member.is_learner,
            })).collect::<Vec<_>>(),
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

    #[test]
    fn sizes_read_like_etcdctl() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20480), "20.5 kB");
    }
}
