//! The catalog checker: three reports.
//!
//! **`catalog`** — per instance, Wing–Gong–Lowe ([`super::linearizable`]) over the instance's
//! record modelled as one register ([`InstanceModel`]): absent, or a registration's unique value
//! with its maintenance flag. Register writes a value (and its answer's `created` says whether
//! one was there), Deregister writes "absent" (its `deleted` says whether one was there),
//! SetMaintenance changes the flag of the value its answer names (not found: a read of
//! "absent"), Heartbeat shows the instance present (not found: absent), and GetService reads
//! every instance of the service at once (each instance's read is checked in its own history,
//! while the instance's generation is in use and at the end). A lease-bound registration may
//! vanish on its own: it is modelled as an `info` expiry that deletes the instance only if it
//! still holds that registration, no earlier than the lease's grant + TTL, and — once a later
//! acknowledged Register or Deregister replaced it — no later than that write (after it, the
//! expiry is a no-op). Besides the search: every GetService must equal the ground truth's state
//! at its revision, every acknowledged change must be the truth's event at its revision, and an
//! instance read must carry its registration's lease.
//!
//! **`catalog-watch`** — each WatchService session against the ground truth (a plain etcd watch
//! of `/_beacon/instances/` from revision 1, validated by the watch checker's truth rules,
//! [`super::watch::checked_truth`]): a session from revision 0 starts with a snapshot equal to
//! the truth's state of the service at the snapshot's revision; then every response carries
//! exactly the truth's events of the service from where the last one ended through its header
//! revision, in order (no gap, duplicate or reordering, also from a resume's start revision),
//! its header revision is its last event's, and every event's instance (and previous instance)
//! equals the truth's. A stream ended by compaction is not an error.
//!
//! **`catalog-convergence`** — after the heal, the last round of serializable GetService reads
//! found every node at one revision with identical instances.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::linearizable::{check_history, Linearizability, Model, Timed};
use super::watch::{checked_truth, compacted_through, Check, Kv, Truth, WatchEntry};
use super::CheckReport;
use crate::history::{CheckRecord, CompleteOp, Function, InstanceRecord, OpType};

/// Search steps allowed per instance before the verdict becomes unknown.
pub const SEARCH_BUDGET: u64 = 5_000_000;
/// Reads of an instance are checked until this long after its last change (then its
/// generation is over; the final reads are checked always).
const READ_WINDOW: u64 = 5_000_000_000;
/// The catalog's key prefix.
const PREFIX: &str = "/_beacon/instances/";

/// What a record of `catalog-watch.jsonl` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEntryKind {
    /// A WatchService request sent (`start_revision`).
    Start,
    /// A response received.
    Response,
    /// The stream failed (or could not be opened).
    Error,
}

/// One catalog event as a WatchService response carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEventRecord {
    pub delete: bool,
    /// The instance after the change (for a delete: as it was before).
    pub instance: InstanceRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<InstanceRecord>,
}

/// One record of `catalog-watch.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogWatchEntry {
    pub time: u64,
    pub kind: WatchEntryKind,
    pub watcher: u64,
    pub session: u64,
    pub node: usize,
    pub service: String,
    #[serde(default)]
    pub start_revision: i64,
    /// Response: the header revision.
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub snapshot: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<InstanceEventRecord>,
    #[serde(default)]
    pub compact_revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CatalogWatchEntry {
    pub fn new(
        kind: WatchEntryKind,
        watcher: u64,
        session: u64,
        node: usize,
        service: &str,
    ) -> Self {
        CatalogWatchEntry {
            time: 0,
            kind,
            watcher,
            session,
            node,
            service: service.to_string(),
            start_revision: 0,
            revision: 0,
            snapshot: false,
            instances: Vec::new(),
            events: Vec::new(),
            compact_revision: 0,
            error: None,
        }
    }
}

/// One serializable GetService of the convergence rounds (`catalog-convergence.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceEntry {
    pub time: u64,
    pub round: u64,
    pub node: usize,
    pub service: String,
    pub revision: i64,
    pub instances: Vec<InstanceRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An instance's record as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record {
    pub value: u64,
    pub maintenance: bool,
}

/// An operation on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceOp {
    Read(Option<Record>),
    /// Register (`Some`, maintenance off) or deregister (`None`); `existed`: whether the answer
    /// said an instance was there before (unknown for `info`).
    Write {
        value: Option<u64>,
        existed: Option<bool>,
    },
    /// Maintenance set on the registration `value` (unknown for `info`): needs the instance.
    SetMaintenance {
        value: Option<u64>,
        enabled: bool,
    },
    /// The instance is there (a heartbeat found it).
    Present,
    /// The lease of registration `value` ended: the instance goes if it still is that one.
    Expire(u64),
}

/// The instance register.
pub struct InstanceModel;

impl Model for InstanceModel {
    type State = Option<Record>;
    type Op = InstanceOp;
    fn step(state: &Option<Record>, op: &InstanceOp) -> Option<Option<Record>> {
        match *op {
            InstanceOp::Read(value) => (*state == value).then_some(*state),
            InstanceOp::Write { value, existed } => {
                if existed.is_some_and(|existed| existed != state.is_some()) {
                    return None;
                }
                Some(value.map(|value| Record {
                    value,
                    maintenance: false,
                }))
            }
            InstanceOp::SetMaintenance { value, enabled } => match state {
                // (Option::is_none_or needs Rust 1.82; the workspace's rust-version is 1.80.)
                Some(record) if value.unwrap_or(record.value) == record.value => {
                    Some(Some(Record {
                        value: record.value,
                        maintenance: enabled,
                    }))
                }
                _ => None,
            },
            InstanceOp::Present => state.is_some().then_some(*state),
            InstanceOp::Expire(value) => Some(if state.is_some_and(|r| r.value == value) {
                None
            } else {
                *state
            }),
        }
    }
}

fn record(instance: &InstanceRecord) -> Record {
    Record {
        value: instance.value,
        maintenance: instance.maintenance,
    }
}

fn describe(op: &CompleteOp) -> String {
    let mut text = format!(
        "{:?} p{} n{} {} {:?}",
        op.invoke.f,
        op.invoke.process,
        op.invoke.node + 1,
        op.invoke.key.as_deref().unwrap_or("-"),
        op.outcome
    );
    if let Some(value) = op.invoke.value.or(op.completion.value) {
        text.push_str(&format!(" value={value}"));
    }
    if let Some(flag) = op.completion.flag.or(op.invoke.flag) {
        text.push_str(&format!(" flag={flag}"));
    }
    if let Some(lease) = op.invoke.lease {
        text.push_str(&format!(" lease={lease:x}"));
    }
    if let Some(revision) = op.completion.revision {
        text.push_str(&format!(" rev={revision}"));
    }
    text.push_str(&op.error_and_span());
    text
}

/// `service/id` of an instance key `/_beacon/instances/{service}/{id}`.
fn history_key(key: &str) -> Option<String> {
    key.strip_prefix(PREFIX).map(str::to_string)
}

/// The instance a truth key-value holds (the record's JSON, as `beacon-catalog` writes it).
fn instance_of_kv(kv: &Kv) -> Option<InstanceRecord> {
    let key = history_key(&kv.key)?;
    let (_, id) = key.split_once('/')?;
    let json: serde_json::Value = serde_json::from_str(&kv.value).ok()?;
    Some(InstanceRecord {
        id: id.to_string(),
        value: json["metadata"][crate::workload::catalog::VALUE_KEY]
            .as_str()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0),
        port: u32::try_from(json["port"].as_u64().unwrap_or(0)).unwrap_or(0),
        maintenance: json["maintenance"]["enabled"].as_bool().unwrap_or(false),
        lease: 0,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        checks: json["checks"]
            .as_array()
            .map(|checks| checks.iter().map(check_of_json).collect())
            .unwrap_or_default(),
    })
}

/// A check of a stored record (`{"id": …, "state": {"status", "reason", "since_unix_ms"}}`).
pub(crate) fn check_of_json(check: &serde_json::Value) -> CheckRecord {
    let state = &check["state"];
    CheckRecord {
        id: check["id"].as_str().unwrap_or_default().to_string(),
        status: state["status"].as_str().unwrap_or_default().to_string(),
        reason: state["reason"].as_str().unwrap_or_default().to_string(),
        since_unix_ms: state["since_unix_ms"].as_i64().unwrap_or(0),
    }
}

/// Two instance records agree (the lease is not in the truth's key-values), check states
/// included.
fn same(a: &InstanceRecord, b: &InstanceRecord) -> bool {
    a.checks == b.checks
        && a.id == b.id
        && a.value == b.value
        && a.port == b.port
        && a.maintenance == b.maintenance
        && a.create_revision == b.create_revision
        && a.mod_revision == b.mod_revision
}

fn short(instance: &InstanceRecord) -> String {
    let checks: Vec<String> = instance
        .checks
        .iter()
        .map(|check| format!("{}={}", check.id, check.status))
        .collect();
    format!(
        "{}={}{}@{}/{}{}",
        instance.id,
        instance.value,
        if instance.maintenance { "(m)" } else { "" },
        instance.create_revision,
        instance.mod_revision,
        if checks.is_empty() {
            String::new()
        } else {
            format!("[{}]", checks.join(","))
        }
    )
}

/// The truth's instances of `service` at `revision`, by id.
fn truth_service_at(
    truth: &Truth,
    service: &str,
    revision: i64,
) -> BTreeMap<String, InstanceRecord> {
    let prefix = format!("{PREFIX}{service}/");
    truth
        .state_at(revision)
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .filter_map(|(_, kv)| instance_of_kv(kv))
        .map(|instance| (instance.id.clone(), instance))
        .collect()
}

/// Compares an instance set with the truth's; the difference, if any.
fn differs(got: &[InstanceRecord], expected: &BTreeMap<String, InstanceRecord>) -> Option<String> {
    let got: BTreeMap<&str, &InstanceRecord> = got
        .iter()
        .map(|instance| (instance.id.as_str(), instance))
        .collect();
    let ids: BTreeSet<&str> = got
        .keys()
        .copied()
        .chain(expected.keys().map(String::as_str))
        .collect();
    let differences: Vec<String> = ids
        .into_iter()
        .filter_map(|id| match (got.get(id), expected.get(id)) {
            (Some(a), Some(b)) if same(a, b) => None,
            (a, b) => Some(format!(
                "{id}: got {} truth {}",
                a.map_or("absent".to_string(), |a| short(a)),
                b.map_or("absent".to_string(), short)
            )),
        })
        .take(5)
        .collect();
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// Checks a catalog run: the history, the truth watcher's entries (`watch.jsonl`), the
/// WatchService sessions and the convergence rounds. Ops invoked at or after `final_from` are
/// the final reads.
pub fn check(
    ops: &[CompleteOp],
    truth_entries: &[WatchEntry],
    watch_entries: &[CatalogWatchEntry],
    convergence: &[ConvergenceEntry],
    final_from: u64,
) -> Vec<CheckReport> {
    let mut catalog = Check::new(
        "catalog",
        &[
            "linearizable",
            "read-truth",
            "write-truth",
            "lease",
            "unexpected",
        ],
    );
    let truth = checked_truth(truth_entries, &mut catalog).map(|(truth, _)| truth);
    check_instances(ops, final_from, &mut catalog);
    if let Some(truth) = &truth {
        check_against_truth(ops, truth, &mut catalog);
    }
    if let serde_json::Value::Object(stats) = &mut catalog.report.stats {
        stats.insert(
            "anomalies_by_check".to_string(),
            serde_json::to_value(&catalog.counts).unwrap_or_default(),
        );
    }
    let mut watch = Check::new("catalog-watch", &WATCH_CHECKS);
    match &truth {
        Some(truth) => check_watches(
            watch_entries,
            truth,
            compacted_through(truth_entries),
            &mut watch,
        ),
        None => watch.unknown("no ground truth".to_string()),
    }
    vec![catalog.report, watch.report, check_convergence(convergence)]
}

/// One op of an instance's history: the recorded op (`None` for a modelled expiry) and its
/// model op.
type HistoryEntry<'a> = (Option<&'a CompleteOp>, Timed<InstanceOp>);

fn check_instances(ops: &[CompleteOp], final_from: u64, check: &mut Check) {
    // Every instance any op touched, per service, with its first and last change.
    let mut touched: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for op in ops.iter().filter(|op| {
        matches!(
            op.invoke.f,
            Function::Register
                | Function::Deregister
                | Function::SetMaintenance
                | Function::Heartbeat
        )
    }) {
        if let Some(key) = op.invoke.key.as_deref() {
            let entry = touched
                .entry(key)
                .or_insert((op.invoke.time, op.invoke.time));
            entry.1 = entry.1.max(op.completion.time);
        }
    }
    // The grants (lease → grant op) for the expiry bound.
    let grants: HashMap<i64, &CompleteOp> = ops
        .iter()
        .filter(|op| op.invoke.f == Function::Grant && op.outcome == OpType::Ok)
        .filter_map(|op| Some((op.completion.lease?, op)))
        .collect();
    // value → its registration (for the lease check).
    let registrations: HashMap<u64, &CompleteOp> = ops
        .iter()
        .filter(|op| op.invoke.f == Function::Register)
        .filter_map(|op| Some((op.invoke.value?, op)))
        .collect();

    let mut histories: BTreeMap<&str, Vec<HistoryEntry>> = BTreeMap::new();
    let timed = |op: &CompleteOp, model: InstanceOp, completed: bool| Timed {
        op: model,
        call: op.invoke.time,
        ret: completed.then_some(op.completion.time),
    };
    let mut reads_checked = 0usize;
    for op in ops {
        let key = op.invoke.key.as_deref().unwrap_or("");
        let ok = op.outcome == OpType::Ok;
        let info = op.outcome == OpType::Info;
        let entry = match op.invoke.f {
            Function::Register if ok || info => {
                let Some(value) = op.invoke.value else {
                    continue;
                };
                let existed = if ok { op.completion.flag } else { None };
                Some(timed(
                    op,
                    InstanceOp::Write {
                        value: Some(value),
                        existed,
                    },
                    ok,
                ))
            }
            Function::Deregister if ok || info => Some(timed(
                op,
                InstanceOp::Write {
                    value: None,
                    existed: if ok { op.completion.flag } else { None },
                },
                ok,
            )),
            Function::SetMaintenance if ok || info => Some(timed(
                op,
                InstanceOp::SetMaintenance {
                    value: if ok { op.completion.value } else { None },
                    enabled: op.invoke.flag.unwrap_or(false),
                },
                ok,
            )),
            Function::SetMaintenance | Function::Heartbeat if op.failed_not_found() => {
                Some(timed(op, InstanceOp::Read(None), true))
            }
            Function::Heartbeat if ok => Some(timed(op, InstanceOp::Present, true)),
            Function::GetService if ok => {
                let service = key;
                let instances = op.completion.instances.clone().unwrap_or_default();
                let by_id: HashMap<&str, &InstanceRecord> = instances
                    .iter()
                    .map(|instance| (instance.id.as_str(), instance))
                    .collect();
                for instance in &instances {
                    let key = format!("{service}/{}", instance.id);
                    if !touched.contains_key(key.as_str()) {
                        check.anomaly(
                            "unexpected",
                            format!("{key} was never registered: {}", describe(op)),
                        );
                    }
                    match registrations.get(&instance.value) {
                        Some(registration)
                            if registration.invoke.key.as_deref() == Some(key.as_str()) =>
                        {
                            let lease = registration.invoke.lease.unwrap_or(0);
                            if instance.lease != lease {
                                check.anomaly(
                                    "lease",
                                    format!(
                                        "{key} value {} read with lease {:x}, registered with {lease:x}: {}",
                                        instance.value,
                                        instance.lease,
                                        describe(op)
                                    ),
                                );
                            }
                        }
                        _ => check.anomaly(
                            "unexpected",
                            format!(
                                "{key} holds value {} that no registration of it wrote: {}",
                                instance.value,
                                describe(op)
                            ),
                        ),
                    }
                }
                let prefix = format!("{service}/");
                for (instance_key, (first, last)) in
                    touched.iter().filter(|(k, _)| k.starts_with(&prefix))
                {
                    let in_window = op.invoke.time >= *first
                        && op.invoke.time <= last.saturating_add(READ_WINDOW);
                    if !(in_window || op.invoke.time >= final_from) {
                        continue;
                    }
                    let id = &instance_key[prefix.len()..];
                    reads_checked += 1;
                    histories.entry(instance_key).or_default().push((
                        Some(op),
                        timed(op, InstanceOp::Read(by_id.get(id).map(|i| record(i))), true),
                    ));
                }
                None
            }
            _ => None,
        };
        if let Some(entry) = entry {
            histories.entry(key).or_default().push((Some(op), entry));
        }
    }
    // Expiries of lease-bound registrations.
    for op in ops.iter().filter(|op| {
        op.invoke.f == Function::Register
            && op.invoke.lease.is_some()
            && matches!(op.outcome, OpType::Ok | OpType::Info)
    }) {
        let (Some(key), Some(value), Some(lease)) =
            (op.invoke.key.as_deref(), op.invoke.value, op.invoke.lease)
        else {
            continue;
        };
        let earliest = grants
            .get(&lease)
            .map(|grant| {
                grant.invoke.time
                    + u64::try_from(grant.completion.ttl.unwrap_or(0)).unwrap_or(0) * 1_000_000_000
            })
            .unwrap_or(op.invoke.time)
            .max(op.invoke.time);
        // Replaced by a later acknowledged write: the expiry is a no-op after it.
        let replaced = (op.outcome == OpType::Ok)
            .then(|| {
                ops.iter()
                    .filter(|later| {
                        matches!(later.invoke.f, Function::Register | Function::Deregister)
                            && later.outcome == OpType::Ok
                            && later.invoke.key.as_deref() == Some(key)
                            && later.invoke.time > op.completion.time
                    })
                    .map(|later| later.completion.time)
                    .min()
            })
            .flatten();
        histories.entry(key).or_default().push((
            None,
            Timed {
                op: InstanceOp::Expire(value),
                call: earliest,
                ret: replaced.map(|at| at.max(earliest)),
            },
        ));
    }

    let mut instances_checked = 0usize;
    let mut ops_searched = 0usize;
    for (key, entries) in &histories {
        let pruned = prune(entries);
        instances_checked += 1;
        ops_searched += pruned.len();
        let timed: Vec<Timed<InstanceOp>> = pruned.iter().map(|(_, timed)| *timed).collect();
        match check_history::<InstanceModel>(&timed, None, SEARCH_BUDGET) {
            Linearizability::Linearizable => {}
            Linearizability::NotLinearizable { stuck_at } => {
                let culprit = pruned[stuck_at]
                    .0
                    .map(describe)
                    .unwrap_or_else(|| format!("{:?}", pruned[stuck_at].1.op));
                check.anomaly(
                    "linearizable",
                    format!(
                        "{key}: not linearizable ({} ops); no order lets this op complete: {culprit}",
                        timed.len()
                    ),
                );
            }
            Linearizability::Unknown => check.unknown(format!(
                "{key}: search budget of {SEARCH_BUDGET} steps exhausted"
            )),
        }
    }
    let count = |f: Function, outcome: OpType| {
        ops.iter()
            .filter(|op| op.invoke.f == f && op.outcome == outcome)
            .count()
    };
    check.report.stats = serde_json::json!({
        "instances": instances_checked,
        "ops_searched": ops_searched,
        "instance_reads_checked": reads_checked,
        "registers_ok": count(Function::Register, OpType::Ok),
        "deregisters_ok": count(Function::Deregister, OpType::Ok),
        "maintenance_ok": count(Function::SetMaintenance, OpType::Ok),
        "heartbeats_ok": count(Function::Heartbeat, OpType::Ok),
        "get_service_ok": count(Function::GetService, OpType::Ok),
        "info": ops.iter().filter(|op| op.outcome == OpType::Info).count(),
    });
    if instances_checked == 0 {
        check.unknown("no catalog operations".to_string());
    }
}

/// Drops `info` registrations whose value nothing observed (with their expiries): they could
/// only have written a value no completed operation read, named or depended on — unless a
/// completed heartbeat after their call needed *some* instance there.
fn prune<'a>(entries: &[HistoryEntry<'a>]) -> Vec<HistoryEntry<'a>> {
    let observed: BTreeSet<u64> = entries
        .iter()
        .filter(|(_, timed)| timed.ret.is_some())
        .filter_map(|(_, timed)| match timed.op {
            InstanceOp::Read(Some(record)) => Some(record.value),
            InstanceOp::SetMaintenance { value, .. } => value,
            _ => None,
        })
        .collect();
    let presences: Vec<u64> = entries
        .iter()
        .filter(|(_, timed)| timed.op == InstanceOp::Present)
        .filter_map(|(_, timed)| timed.ret)
        .collect();
    let dropped: BTreeSet<u64> = entries
        .iter()
        .filter_map(|(_, timed)| match (timed.ret, timed.op) {
            (
                None,
                InstanceOp::Write {
                    value: Some(value), ..
                },
            ) if !observed.contains(&value) && !presences.iter().any(|ret| *ret > timed.call) => {
                Some(value)
            }
            _ => None,
        })
        .collect();
    entries
        .iter()
        .filter(|(_, timed)| match timed.op {
            InstanceOp::Write {
                value: Some(value), ..
            }
            | InstanceOp::Expire(value) => !dropped.contains(&value),
            _ => true,
        })
        .cloned()
        .collect()
}

fn check_against_truth(ops: &[CompleteOp], truth: &Truth, check: &mut Check) {
    let mut reads = 0usize;
    let mut writes = 0usize;
    let mut beyond = 0usize;
    for op in ops.iter().filter(|op| op.outcome == OpType::Ok) {
        let Some(revision) = op.completion.revision else {
            continue;
        };
        if revision > truth.through {
            if matches!(
                op.invoke.f,
                Function::GetService
                    | Function::Register
                    | Function::Deregister
                    | Function::SetMaintenance
            ) {
                beyond += 1;
            }
            continue;
        }
        let key = op.invoke.key.as_deref().unwrap_or("");
        let etcd_key = format!("{PREFIX}{key}");
        let event = || {
            truth
                .events
                .get(&revision)
                .and_then(|events| events.iter().find(|event| event.kv.key == etcd_key))
        };
        match op.invoke.f {
            Function::GetService => {
                reads += 1;
                let expected = truth_service_at(truth, key, revision);
                let got = op.completion.instances.clone().unwrap_or_default();
                if let Some(difference) = differs(&got, &expected) {
                    check.anomaly(
                        "read-truth",
                        format!(
                            "{} differs from the truth at revision {revision}: {difference}",
                            describe(op)
                        ),
                    );
                }
            }
            Function::Register | Function::SetMaintenance => {
                writes += 1;
                let value = op.invoke.value.or(op.completion.value);
                let maintenance =
                    op.invoke.f == Function::SetMaintenance && op.invoke.flag.unwrap_or(false);
                let fine = event().is_some_and(|event| {
                    !event.delete
                        && instance_of_kv(&event.kv).is_some_and(|instance| {
                            Some(instance.value) == value && instance.maintenance == maintenance
                        })
                });
                if !fine {
                    check.anomaly(
                        "write-truth",
                        format!(
                            "{} is not the truth's event at its revision ({:?})",
                            describe(op),
                            event()
                        ),
                    );
                }
            }
            Function::Deregister => {
                writes += 1;
                let fine = match (op.completion.flag, event()) {
                    (Some(true), Some(event)) => event.delete,
                    // Nothing deleted: the answer's revision is the store's, and the instance is
                    // absent there (another deregistration may have deleted it at that revision).
                    (Some(false), _) => truth.before(&etcd_key, revision + 1).is_none(),
                    _ => false,
                };
                if !fine {
                    check.anomaly(
                        "write-truth",
                        format!(
                            "{} disagrees with the truth at its revision ({:?})",
                            describe(op),
                            event()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let mut stats = match std::mem::take(&mut check.report.stats) {
        serde_json::Value::Object(stats) => stats,
        _ => serde_json::Map::new(),
    };
    stats.insert("truth_through".to_string(), truth.through.into());
    stats.insert("reads_against_truth".to_string(), reads.into());
    stats.insert("writes_against_truth".to_string(), writes.into());
    stats.insert("answers_beyond_truth".to_string(), beyond.into());
    check.report.stats = serde_json::Value::Object(stats);
}

/// The names of the catalog watch checks.
pub const WATCH_CHECKS: [&str; 4] = ["snapshot", "sequence", "content", "revision"];

/// The truth's events of one service, in order: (revision, event).
fn service_events<'a>(truth: &'a Truth, service: &str) -> Vec<(i64, &'a super::watch::Ev)> {
    let prefix = format!("{PREFIX}{service}/");
    truth
        .events
        .iter()
        .flat_map(|(revision, events)| {
            events
                .iter()
                .filter(|event| event.kv.key.starts_with(&prefix))
                .map(move |event| (*revision, event))
        })
        .collect()
}

/// Whether a delivered event is the truth's: a put carries the new record and the previous
/// one (absent only if compacted), a delete the record it deleted (only the id once compacted).
fn event_matches(
    got: &InstanceEventRecord,
    revision: i64,
    expected: &super::watch::Ev,
    compacted_through: i64,
) -> bool {
    let compacted = revision <= compacted_through;
    let prev = expected.prev.as_ref().and_then(instance_of_kv);
    if got.delete != expected.delete {
        return false;
    }
    if expected.delete {
        return match &prev {
            Some(prev) => {
                same(&got.instance, prev)
                    || (compacted && got.prev.is_none() && got.instance.id == prev.id)
            }
            None => false,
        };
    }
    let Some(instance) = instance_of_kv(&expected.kv) else {
        return false;
    };
    let prev_fine = match (&got.prev, &prev) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        (None, Some(_)) => compacted,
        (Some(_), None) => false,
    };
    same(&got.instance, &instance) && prev_fine
}

fn check_watches(
    entries: &[CatalogWatchEntry],
    truth: &Truth,
    compacted_through: i64,
    check: &mut Check,
) {
    let mut sessions: BTreeMap<(u64, u64), Vec<&CatalogWatchEntry>> = BTreeMap::new();
    for entry in entries {
        sessions
            .entry((entry.watcher, entry.session))
            .or_default()
            .push(entry);
    }
    let mut events_by_service: HashMap<&str, Vec<(i64, &super::watch::Ev)>> = HashMap::new();
    let mut stats = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for ((watcher, session), entries) in &sessions {
        let name = format!("watcher {watcher} session {session}");
        let Some(start) = entries.iter().find(|e| e.kind == WatchEntryKind::Start) else {
            continue;
        };
        let service = start.service.as_str();
        let events = events_by_service
            .entry(service)
            .or_insert_with(|| service_events(truth, service));
        let responses: Vec<&&CatalogWatchEntry> = entries
            .iter()
            .filter(|e| e.kind == WatchEntryKind::Response)
            .collect();
        if responses.is_empty() {
            continue;
        }
        stats.0 += 1;
        let mut next = start.start_revision;
        let mut iter = responses.iter().peekable();
        if start.start_revision == 0 {
            let first = iter.next().expect("non-empty");
            if !first.snapshot {
                if first.compact_revision == 0 {
                    check.anomaly(
                        "snapshot",
                        format!("{name}: a watch from 0 did not start with a snapshot"),
                    );
                }
                continue;
            }
            stats.1 += 1;
            if first.revision <= truth.through {
                let expected = truth_service_at(truth, service, first.revision);
                if let Some(difference) = differs(&first.instances, &expected) {
                    check.anomaly(
                        "snapshot",
                        format!(
                            "{name}: snapshot of {service} at {} differs from the truth: {difference}",
                            first.revision
                        ),
                    );
                }
            }
            next = first.revision + 1;
        }
        // A snapshot anywhere else, or events in a snapshot, is out of place.
        for response in iter {
            if response.compact_revision > 0 {
                stats.2 += 1;
                break;
            }
            if response.snapshot {
                check.anomaly("snapshot", format!("{name}: snapshot after the start"));
                break;
            }
            stats.3 += 1;
            let upto = response.revision.min(truth.through);
            let expected: Vec<&(i64, &super::watch::Ev)> = events
                .iter()
                .filter(|(revision, _)| *revision >= next && *revision <= upto)
                .collect();
            let judged = if response.revision > truth.through {
                stats.5 += response.events.len().saturating_sub(expected.len());
                expected.len().min(response.events.len())
            } else {
                response.events.len()
            };
            if response.revision <= truth.through
                && !events
                    .iter()
                    .any(|(revision, _)| *revision == response.revision)
            {
                check.anomaly(
                    "revision",
                    format!(
                        "{name}: a response's header revision {} has no event of {service} in the truth",
                        response.revision
                    ),
                );
            }
            for (index, got) in response.events.iter().take(judged).enumerate() {
                stats.4 += 1;
                let Some((revision, want)) = expected.get(index) else {
                    check.anomaly(
                        "sequence",
                        format!(
                            "{name}: extra event {} {} in a response through {} (expected {} events from {next})",
                            if got.delete { "delete" } else { "put" },
                            short(&got.instance),
                            response.revision,
                            expected.len()
                        ),
                    );
                    break;
                };
                if !event_matches(got, *revision, want, compacted_through) {
                    let matches = |(revision, want): &(i64, &super::watch::Ev)| {
                        event_matches(got, *revision, want, compacted_through)
                    };
                    let later = expected[index..].iter().any(|event| matches(event));
                    let earlier = events
                        .iter()
                        .take_while(|(revision, _)| *revision < next)
                        .any(matches);
                    let kind = if later || earlier {
                        "sequence"
                    } else {
                        "content"
                    };
                    check.anomaly(
                        kind,
                        format!(
                            "{name}: event {index} of a response through {} is {} {}, the truth's at {revision} is {} {:?}{}",
                            response.revision,
                            if got.delete { "delete" } else { "put" },
                            short(&got.instance),
                            if want.delete { "delete" } else { "put" },
                            instance_of_kv(&want.kv).map(|i| short(&i)),
                            if later {
                                " (events missing before it)"
                            } else if earlier {
                                " (delivered before)"
                            } else {
                                ""
                            }
                        ),
                    );
                    break;
                }
            }
            if response.revision <= truth.through && response.events.len() < expected.len() {
                check.anomaly(
                    "sequence",
                    format!(
                        "{name}: a response through {} carries {} events, the truth has {} from {next}",
                        response.revision,
                        response.events.len(),
                        expected.len()
                    ),
                );
            }
            if response.revision > truth.through {
                break;
            }
            next = response.revision + 1;
        }
    }
    check.report.stats = serde_json::json!({
        "truth_through": truth.through,
        "sessions": stats.0,
        "snapshots": stats.1,
        "compacted": stats.2,
        "responses": stats.3,
        "events_checked": stats.4,
        "events_beyond_truth": stats.5,
        "anomalies_by_check": check.counts,
    });
    if stats.0 == 0 {
        check.unknown("no WatchService session got a response".to_string());
    }
}

fn check_convergence(entries: &[ConvergenceEntry]) -> CheckReport {
    let mut report = CheckReport::new("catalog-convergence");
    let Some(last_round) = entries.iter().map(|entry| entry.round).max() else {
        report.unknown("no convergence reads".to_string());
        return report;
    };
    let round: Vec<&ConvergenceEntry> = entries
        .iter()
        .filter(|entry| entry.round == last_round)
        .collect();
    let revisions: BTreeSet<i64> = round.iter().map(|entry| entry.revision).collect();
    if let Some(failed) = round.iter().find(|entry| entry.error.is_some()) {
        report.unknown(format!(
            "n{} could not be read: {:?}",
            failed.node + 1,
            failed.error
        ));
    } else if revisions.len() > 1 {
        report.unknown(format!(
            "the nodes never answered at one revision in {} rounds (last: {revisions:?})",
            last_round + 1
        ));
    } else {
        let mut by_service: BTreeMap<&str, &ConvergenceEntry> = BTreeMap::new();
        for entry in &round {
            let mut sorted = entry.instances.clone();
            sorted.sort_by(|a, b| a.id.cmp(&b.id));
            match by_service.get(entry.service.as_str()) {
                None => {
                    by_service.insert(&entry.service, entry);
                }
                Some(first) => {
                    let mut reference = first.instances.clone();
                    reference.sort_by(|a, b| a.id.cmp(&b.id));
                    if reference != sorted {
                        let expected: BTreeMap<String, InstanceRecord> = reference
                            .into_iter()
                            .map(|instance| (instance.id.clone(), instance))
                            .collect();
                        report.anomaly(format!(
                            "{} on n{} and n{} differ at revision {}: {}",
                            entry.service,
                            first.node + 1,
                            entry.node + 1,
                            entry.revision,
                            differs(&sorted, &expected)
                                .unwrap_or_else(|| "leases differ".to_string())
                        ));
                    }
                }
            }
        }
    }
    report.stats = serde_json::json!({
        "rounds": last_round + 1,
        "revision": revisions.iter().next_back(),
        "instances": round.iter().map(|entry| entry.instances.len()).sum::<usize>(),
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::watch::{EntryKind, Ev};
    use crate::checker::Validity;
    use crate::history::complete_ops;
    use crate::history::test_support::Builder;

    const S: u64 = 1_000_000_000;

    fn register(b: &mut Builder, process: u64, at: u64, id: &str, value: u64, existed: bool) {
        b.invoke(process, at, Function::Register, &format!("svc/{id}"))
            .value = Some(value);
        let done = b.complete(process, at + S / 10, OpType::Ok);
        done.flag = Some(existed);
        done.revision = Some(0);
    }

    fn deregister(b: &mut Builder, process: u64, at: u64, id: &str, existed: bool) {
        b.invoke(process, at, Function::Deregister, &format!("svc/{id}"));
        b.complete(process, at + S / 10, OpType::Ok).flag = Some(existed);
    }

    fn instance(id: &str, value: u64) -> InstanceRecord {
        InstanceRecord {
            id: id.to_string(),
            value,
            port: u32::try_from(value).unwrap_or(0),
            ..Default::default()
        }
    }

    fn get(b: &mut Builder, process: u64, at: u64, instances: Vec<InstanceRecord>) {
        b.invoke(process, at, Function::GetService, "svc");
        b.complete(process, at + S / 10, OpType::Ok).instances = Some(instances);
    }

    fn linearizability(b: &Builder) -> CheckReport {
        let ops = complete_ops(&b.ops).expect("well-formed history");
        let mut check = Check::new("catalog", &["linearizable", "lease", "unexpected"]);
        check_instances(&ops, u64::MAX, &mut check);
        check.report
    }

    /// Re-checks a stored run: `CATALOG_RUN=<run dir> cargo test -p jepsen-tests --lib
    /// catalog::tests::recheck_stored -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs CATALOG_RUN"]
    fn recheck_stored() {
        use crate::history::read_records;
        let dir = std::path::PathBuf::from(std::env::var("CATALOG_RUN").expect("CATALOG_RUN"));
        let (ops, final_from) = crate::history::read_run(&dir).expect("history");
        let reports = check(
            &ops,
            &read_records(&dir.join("watch.jsonl")).expect("watch.jsonl"),
            &read_records(&dir.join("catalog-watch.jsonl")).expect("catalog-watch.jsonl"),
            &read_records(&dir.join("catalog-convergence.jsonl"))
                .expect("catalog-convergence.jsonl"),
            final_from,
        );
        println!("{}", serde_json::to_string_pretty(&reports).expect("json"));
    }

    #[test]
    fn registrations_and_reads_are_linearizable() {
        let mut b = Builder::default();
        register(&mut b, 1, 0, "p0", 1, false);
        get(&mut b, 2, S, vec![instance("p0", 1)]);
        register(&mut b, 1, 2 * S, "p0", 2, true);
        get(&mut b, 2, 3 * S, vec![instance("p0", 2)]);
        deregister(&mut b, 1, 4 * S, "p0", true);
        get(&mut b, 2, 5 * S, vec![]);
        deregister(&mut b, 1, 6 * S, "p0", false);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }

    /// Negative control: a read of a replaced registration (stale read).
    #[test]
    fn stale_instance_read_is_rejected() {
        let mut b = Builder::default();
        register(&mut b, 1, 0, "p0", 1, false);
        register(&mut b, 1, S, "p0", 2, true);
        get(&mut b, 2, 2 * S, vec![instance("p0", 1)]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    /// Negative control: an acknowledged registration that a later read does not find.
    #[test]
    fn lost_registration_is_rejected() {
        let mut b = Builder::default();
        register(&mut b, 1, 0, "p0", 1, false);
        get(&mut b, 2, S, vec![]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    /// Negative control: a register answering "replaced" when nothing was there.
    #[test]
    fn wrong_created_flag_is_rejected() {
        let mut b = Builder::default();
        register(&mut b, 1, 0, "p0", 1, true);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    #[test]
    fn maintenance_is_modelled() {
        let mut b = Builder::default();
        register(&mut b, 1, 0, "p0", 1, false);
        b.invoke(1, S, Function::SetMaintenance, "svc/p0").flag = Some(true);
        b.complete(1, S + S / 10, OpType::Ok).value = Some(1);
        let mut on = instance("p0", 1);
        on.maintenance = true;
        get(&mut b, 2, 2 * S, vec![on]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        // Negative control: the flag lost.
        get(&mut b, 2, 3 * S, vec![instance("p0", 1)]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    fn ephemeral(b: &mut Builder, at: u64, value: u64) {
        b.invoke(1, at, Function::Grant, "-");
        let done = b.complete(1, at + S / 100, OpType::Ok);
        done.lease = Some(0x5);
        done.ttl = Some(3);
        let op = b.invoke(1, at + S / 50, Function::Register, "svc/e0");
        op.value = Some(value);
        op.lease = Some(0x5);
        b.complete(1, at + S / 10, OpType::Ok).flag = Some(false);
    }

    /// A lease-bound instance may vanish after its lease's TTL, but not before.
    #[test]
    fn ephemeral_expiry_is_bounded_by_the_ttl() {
        let mut b = Builder::default();
        ephemeral(&mut b, 0, 7);
        let mut read = instance("e0", 7);
        read.lease = 0x5;
        get(&mut b, 2, S, vec![read]);
        get(&mut b, 2, 4 * S, vec![]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        // Negative control: gone within the TTL.
        let mut early = Builder::default();
        ephemeral(&mut early, 0, 7);
        get(&mut early, 2, S, vec![]);
        let report = linearizability(&early);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    /// An expiry after a replacement is a no-op: the replacement must stay.
    #[test]
    fn replaced_ephemeral_instance_is_not_expired() {
        let mut b = Builder::default();
        ephemeral(&mut b, 0, 7);
        register(&mut b, 3, S, "e0", 8, true);
        get(&mut b, 2, 5 * S, vec![instance("e0", 8)]);
        let report = linearizability(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        let mut lost = Builder::default();
        ephemeral(&mut lost, 0, 7);
        register(&mut lost, 3, S, "e0", 8, true);
        get(&mut lost, 2, 5 * S, vec![]);
        let report = linearizability(&lost);
        assert_eq!(report.validity, Validity::Invalid, "{:?}", report.anomalies);
    }

    /// Negative control: an instance read with another lease than its registration's.
    #[test]
    fn wrong_lease_is_rejected() {
        let mut b = Builder::default();
        ephemeral(&mut b, 0, 7);
        get(&mut b, 2, S, vec![instance("e0", 7)]);
        let report = linearizability(&b);
        assert!(
            report.anomalies.iter().any(|a| a.starts_with("lease")),
            "{report:?}"
        );
    }

    // The watch checks, against a truth built the watch checker's way.

    fn json(value: u64, maintenance: bool) -> String {
        let maintenance = if maintenance {
            r#","maintenance":{"enabled":true,"reason":"x"}"#
        } else {
            ""
        };
        format!(
            r#"{{"service":"svc","id":"a","address":"10.0.0.1","port":{value},"metadata":{{"op":"{value}"}},"weight":1{maintenance}}}"#
        )
    }

    fn kv(value: u64, create: i64, modified: i64, version: i64, maintenance: bool) -> Kv {
        Kv {
            key: format!("{PREFIX}svc/a"),
            value: json(value, maintenance),
            create_revision: create,
            mod_revision: modified,
            version,
        }
    }

    /// The truth: r2 register a=1; r3 maintenance on; r4 deregister; r5 register a=2.
    fn truth_entries() -> Vec<WatchEntry> {
        let a1 = kv(1, 2, 2, 1, false);
        let a1m = kv(1, 2, 3, 2, true);
        let a2 = kv(2, 5, 5, 1, false);
        let mut create = WatchEntry::new(EntryKind::Create, 0, 0, 0);
        create.key = PREFIX.to_string();
        create.prefix = true;
        create.start_revision = 1;
        create.prev_kv = true;
        let mut created = WatchEntry::new(EntryKind::Response, 0, 0, 0);
        created.created = true;
        created.revision = 1;
        let events = vec![
            Ev {
                delete: false,
                kv: a1.clone(),
                prev: None,
            },
            Ev {
                delete: false,
                kv: a1m.clone(),
                prev: Some(a1),
            },
            Ev {
                delete: true,
                kv: Kv {
                    key: a1m.key.clone(),
                    value: String::new(),
                    create_revision: 0,
                    mod_revision: 4,
                    version: 0,
                },
                prev: Some(a1m),
            },
            Ev {
                delete: false,
                kv: a2,
                prev: None,
            },
        ];
        let mut entries = vec![create, created];
        for event in events {
            let mut response = WatchEntry::new(EntryKind::Response, 0, 0, 0);
            response.revision = event.kv.mod_revision;
            response.events = vec![event];
            entries.push(response);
        }
        entries
    }

    fn record(value: u64, create: i64, modified: i64, maintenance: bool) -> InstanceRecord {
        InstanceRecord {
            id: "a".to_string(),
            value,
            port: u32::try_from(value).unwrap_or(0),
            maintenance,
            lease: 0,
            create_revision: create,
            mod_revision: modified,
            checks: Vec::new(),
        }
    }

    fn put(instance: InstanceRecord, prev: Option<InstanceRecord>) -> InstanceEventRecord {
        InstanceEventRecord {
            delete: false,
            instance,
            prev,
        }
    }

    fn start(session: u64, revision: i64) -> CatalogWatchEntry {
        let mut entry = CatalogWatchEntry::new(WatchEntryKind::Start, 1, session, 0, "svc");
        entry.start_revision = revision;
        entry
    }

    fn response(
        session: u64,
        revision: i64,
        events: Vec<InstanceEventRecord>,
    ) -> CatalogWatchEntry {
        let mut entry = CatalogWatchEntry::new(WatchEntryKind::Response, 1, session, 0, "svc");
        entry.revision = revision;
        entry.events = events;
        entry
    }

    /// Session 0: snapshot at 2, then maintenance and deregister in one response, then the new
    /// registration. Session 1: resumes at 4.
    fn good_watches() -> Vec<CatalogWatchEntry> {
        let mut snapshot = response(0, 2, vec![]);
        snapshot.snapshot = true;
        snapshot.instances = vec![record(1, 2, 2, false)];
        vec![
            start(0, 0),
            snapshot,
            response(
                0,
                4,
                vec![
                    put(record(1, 2, 3, true), Some(record(1, 2, 2, false))),
                    InstanceEventRecord {
                        delete: true,
                        instance: record(1, 2, 3, true),
                        prev: None,
                    },
                ],
            ),
            response(0, 5, vec![put(record(2, 5, 5, false), None)]),
            start(1, 4),
            response(
                1,
                5,
                vec![
                    InstanceEventRecord {
                        delete: true,
                        instance: record(1, 2, 3, true),
                        prev: None,
                    },
                    put(record(2, 5, 5, false), None),
                ],
            ),
        ]
    }

    fn watch_report(watches: &[CatalogWatchEntry]) -> CheckReport {
        let entries = truth_entries();
        let mut check = Check::new("catalog-watch", &WATCH_CHECKS);
        let (truth, _) = checked_truth(&entries, &mut check).expect("truth");
        check_watches(watches, &truth, 0, &mut check);
        check.report
    }

    fn rejected_by(watches: Vec<CatalogWatchEntry>, name: &str) {
        let report = watch_report(&watches);
        assert_eq!(report.validity, Validity::Invalid, "{report:?}");
        assert!(
            report.stats["anomalies_by_check"][name]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "expected {name}: {report:?}"
        );
    }

    #[test]
    fn good_watches_are_valid() {
        let report = watch_report(&good_watches());
        assert_eq!(report.validity, Validity::Valid, "{report:?}");
        assert_eq!(report.stats["events_checked"], 5);
    }

    /// Negative control: the deregistration is missing from the resumed session.
    #[test]
    fn missing_event_is_rejected() {
        let mut watches = good_watches();
        watches[5].events.remove(0);
        rejected_by(watches, "sequence");
    }

    /// Negative control: an event delivered twice (once more in the next response).
    #[test]
    fn duplicated_event_is_rejected() {
        let mut watches = good_watches();
        let again = watches[2].events[1].clone();
        watches[3].events.insert(0, again);
        rejected_by(watches, "sequence");
    }

    /// Negative control: a snapshot that misses the instance.
    #[test]
    fn wrong_snapshot_is_rejected() {
        let mut watches = good_watches();
        watches[1].instances.clear();
        rejected_by(watches, "snapshot");
    }

    /// Negative control: an event with the wrong maintenance flag.
    #[test]
    fn wrong_event_content_is_rejected() {
        let mut watches = good_watches();
        watches[2].events[0].instance.maintenance = false;
        rejected_by(watches, "content");
    }

    /// Negative control: a header revision past the response's last event.
    #[test]
    fn wrong_header_revision_is_rejected() {
        let mut watches = good_watches();
        watches[2].revision = 3;
        rejected_by(watches, "sequence");
    }

    /// Negative control: GetService disagreeing with the truth at its revision.
    #[test]
    fn read_disagreeing_with_the_truth_is_rejected() {
        let entries = truth_entries();
        let mut b = Builder::default();
        get(&mut b, 2, S, vec![record(1, 2, 2, false)]);
        b.ops.last_mut().expect("read").revision = Some(3);
        let ops = complete_ops(&b.ops).expect("well-formed history");
        let mut check = Check::new("catalog", &["read-truth"]);
        let (truth, _) = checked_truth(&entries, &mut check).expect("truth");
        check_against_truth(&ops, &truth, &mut check);
        assert_eq!(check.counts["read-truth"], 1, "{:?}", check.report);
        // At revision 2 it is right.
        let mut b = Builder::default();
        get(&mut b, 2, S, vec![record(1, 2, 2, false)]);
        b.ops.last_mut().expect("read").revision = Some(2);
        let ops = complete_ops(&b.ops).expect("well-formed history");
        let mut check = Check::new("catalog", &["read-truth"]);
        check_against_truth(&ops, &truth, &mut check);
        assert_eq!(check.report.validity, Validity::Valid, "{:?}", check.report);
    }

    /// A deregistration that found nothing answers with the store's revision, which may be the
    /// revision at which another one deleted the instance (found by the first catalog runs: a
    /// checker bug, not a beacond one).
    #[test]
    fn deregister_finding_nothing_at_a_delete_revision_is_fine() {
        let entries = truth_entries();
        let mut b = Builder::default();
        deregister(&mut b, 1, S, "a", false);
        b.ops.last_mut().expect("deregister").revision = Some(4);
        let ops = complete_ops(&b.ops).expect("well-formed history");
        let mut check = Check::new("catalog", &["write-truth"]);
        let (truth, _) = checked_truth(&entries, &mut check).expect("truth");
        check_against_truth(&ops, &truth, &mut check);
        assert_eq!(check.report.validity, Validity::Valid, "{:?}", check.report);
        // Negative control: "nothing deleted" while the instance was there at that revision.
        b.ops.last_mut().expect("deregister").revision = Some(3);
        let ops = complete_ops(&b.ops).expect("well-formed history");
        check_against_truth(&ops, &truth, &mut check);
        assert_eq!(check.counts["write-truth"], 1, "{:?}", check.report);
    }

    #[test]
    fn diverging_nodes_are_rejected() {
        let entry = |node: usize, instances: Vec<InstanceRecord>| ConvergenceEntry {
            time: 0,
            round: 0,
            node,
            service: "svc".to_string(),
            revision: 9,
            instances,
            error: None,
        };
        let same = [
            entry(0, vec![instance("a", 1)]),
            entry(1, vec![instance("a", 1)]),
        ];
        assert_eq!(check_convergence(&same).validity, Validity::Valid);
        let diverged = [entry(0, vec![instance("a", 1)]), entry(1, vec![])];
        assert_eq!(check_convergence(&diverged).validity, Validity::Invalid);
    }
}
