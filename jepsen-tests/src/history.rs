//! The recorded history: every client operation as an `invoke` followed by exactly one completion
//! (`ok`, `fail` or `info`), with monotonic times since the run started, the node the client talked
//! to and the revisions the server reported. Written as JSON lines (`history.jsonl`) and read back
//! by the checkers through [`complete_ops`], which pairs each invocation with its completion.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The kind of history entry, as Jepsen names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The client is about to send the request.
    Invoke,
    /// The operation certainly took effect (or, for a read, returned this value).
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Unknown: timed out or failed ambiguously. It may or may not have taken effect, now or later.
    Info,
}

/// What the operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    /// Register: linearizable get of one key.
    Read,
    /// Register: put of a unique value.
    Write,
    /// Register: txn `value(key) == expected` then put `value`.
    Cas,
    /// Set: create-only put of a unique element.
    Add,
    /// Set: linearizable range over the set prefix.
    ReadSet,
    /// Lease (also catalog, for ephemeral instances): LeaseGrant; `lease` and `ttl` on `ok`.
    Grant,
    /// Lease: one keepalive of `lease` (on a stream); `ttl` on `ok` (0: the lease is gone).
    KeepAlive,
    /// Lease: LeaseRevoke of `lease`.
    Revoke,
    /// Lease: LeaseTimeToLive of `lease`; `ttl` on `ok` (-1: the lease is gone).
    TimeToLive,
    /// Lease: put of a fresh key (`value` its number) attached to `lease`.
    PutLeased,
    /// Lease: linearizable get of a lease-bound key; on `ok` `value`, `lease` and `mod_revision`
    /// when present.
    ReadLeased,
    /// Catalog: register (create or replace) instance `key` = `service/id` with `value` (and
    /// `lease` for an ephemeral one); `ok`: `flag` = the instance existed before (replaced).
    Register,
    /// Catalog: deregister instance `key`; `ok`: `flag` = it existed (was deleted).
    Deregister,
    /// Catalog: maintenance of instance `key` set to `flag`; `ok`: `value` of the instance
    /// changed.
    SetMaintenance,
    /// Catalog: heartbeat of instance `key`; `ok`: `ttl` of its lease (0 without one).
    Heartbeat,
    /// Catalog: GetService of service `key`; `ok`: `instances`.
    GetService,
}

/// Catalog: one instance as an answer showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    /// The registration's unique value (metadata `op`; the port is derived from it).
    pub value: u64,
    pub port: u32,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub lease: i64,
    #[serde(default)]
    pub create_revision: i64,
    #[serde(default)]
    pub mod_revision: i64,
    /// Its checks' committed states (health workload; empty for instances without checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRecord>,
}

/// Catalog: one check's committed state as an answer (or the ground truth's record) showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub id: String,
    /// `passing`, `warning` or `critical`; empty without a state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Why (the verdict's reason, e.g. `flapping: …`); empty before the first verdict.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the verdict was reached (milliseconds since the Unix epoch, the committing member's
    /// clock); 0 before the first verdict.
    #[serde(default)]
    pub since_unix_ms: i64,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Logical client process; a client that saw a timeout continues under a new process.
    pub process: u64,
    #[serde(rename = "type")]
    pub op_type: OpType,
    pub f: Function,
    /// Monotonic nanoseconds since the run started.
    pub time: u64,
    /// Index (0-based) of the node the client talks to.
    pub node: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Write/cas: the value written; read (ok): the value read (absent key: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Cas: the value compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// ReadSet (ok): the elements read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u64>>,
    /// The response header's revision (store revision after the op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Read (ok): the key's mod_revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<i64>,
    /// Lease and catalog: the lease the op is about (read: the key's lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// Lease and catalog: the TTL an answer carried (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Catalog: the maintenance flag asked for, or whether the instance existed (register,
    /// deregister).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<bool>,
    /// Catalog: GetService (ok): the instances read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// Completes a write that ended in `error`: `fail` only when it certainly did not take
    /// effect, `info` (outcome unknown) otherwise.
    pub fn write_failed(&mut self, error: &crate::client::CallError) {
        self.op_type = if error.write_certainly_failed() {
            OpType::Fail
        } else {
            OpType::Info
        };
        self.error = Some(error.to_string());
    }

    /// An invocation with no result fields yet.
    pub fn invoke(process: u64, f: Function, node: usize, key: Option<String>) -> Self {
        Op {
            process,
            op_type: OpType::Invoke,
            f,
            time: 0,
            node,
            key,
            value: None,
            expected: None,
            values: None,
            revision: None,
            mod_revision: None,
            lease: None,
            ttl: None,
            flag: None,
            instances: None,
            error: None,
        }
    }
}

/// A shared, append-only history with one clock for every client.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new(start: Instant) -> Self {
        History {
            start,
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the run started (monotonic).
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stamps the op with the current time and appends it. The timestamp is taken under the lock so
    /// the history's order is its time order.
    pub fn record(&self, mut op: Op) -> Op {
        let mut ops = self
            .ops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        op.time = self.now();
        ops.push(op.clone());
        op
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Writes ops as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a `history.jsonl` back (for re-checking a stored run).
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct CompleteOp {
    pub invoke: Op,
    /// `Ok`, `Fail` or `Info`; an invocation without completion (the run ended) counts as `Info`.
    pub outcome: OpType,
    pub completion: Op,
}

impl CompleteOp {
    pub fn invoke_time(&self) -> u64 {
        self.invoke.time
    }

    /// The completion time; `None` for `info` (it may take effect at any later time).
    pub fn complete_time(&self) -> Option<u64> {
        (self.outcome != OpType::Info).then_some(self.completion.time)
    }

    /// Failed with gRPC NotFound (an unknown lease or instance): certainly not applied.
    pub fn failed_not_found(&self) -> bool {
        self.outcome == OpType::Fail
            && self
                .completion
                .error
                .as_deref()
                .is_some_and(|error| error.contains("NotFound"))
    }

    /// ` error=…` (if any) and the op's time span, ` [invoke..complete]` in seconds (`∞` for
    /// info), for anomaly descriptions.
    pub fn error_and_span(&self) -> String {
        let mut text = String::new();
        if let Some(error) = &self.completion.error {
            text.push_str(&format!(" error={error:?}"));
        }
        text.push_str(&format!(
            " [{:.3}s..{}]",
            seconds(self.invoke.time),
            self.complete_time()
                .map(|time| format!("{:.3}s", seconds(time)))
                .unwrap_or_else(|| "∞".to_string())
        ));
        text
    }
}

/// Nanoseconds of a history time as seconds.
pub fn seconds(time: u64) -> f64 {
    time as f64 / 1e9
}

/// Pairs every invocation with the next completion of the same process. A process has at most
/// one outstanding op; anything else in the history is reported as an error.
pub fn complete_ops(history: &[Op]) -> anyhow::Result<Vec<CompleteOp>> {
    let mut open: HashMap<u64, Op> = HashMap::new();
    let mut done = Vec::new();
    for op in history {
        match op.op_type {
            OpType::Invoke => {
                if open.insert(op.process, op.clone()).is_some() {
                    anyhow::bail!("process {} invoked twice without completing", op.process);
                }
            }
            outcome => {
                let Some(invoke) = open.remove(&op.process) else {
                    anyhow::bail!("process {} completed an op it never invoked", op.process);
                };
                done.push(CompleteOp {
                    invoke,
                    outcome,
                    completion: op.clone(),
                });
            }
        }
    }
    for (_, invoke) in open {
        done.push(CompleteOp {
            completion: invoke.clone(),
            invoke,
            outcome: OpType::Info,
        });
    }
    done.sort_by_key(|op| op.invoke.time);
    Ok(done)
}

/// Final reads (after the heal) run as processes from here on (`run.rs`).
pub const FIRST_FINAL_PROCESS: u64 = 1_000_000_000;

/// A stored run's ops and the time its final reads began (for re-checking a run directory).
pub fn read_run(run_dir: &Path) -> anyhow::Result<(Vec<CompleteOp>, u64)> {
    let ops = read_jsonl(&run_dir.join("history.jsonl"))?;
    let final_from = ops
        .iter()
        .filter(|op| op.process >= FIRST_FINAL_PROCESS)
        .map(|op| op.time)
        .min()
        .unwrap_or(u64::MAX);
    Ok((complete_ops(&ops)?, final_from))
}

/// Reads any JSON-lines file of a run directory.
pub fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// Builders for crafted histories in checker tests.
#[cfg(test)]
pub mod test_support {
    use super::*;

    /// Builds a history with explicit times.
    #[derive(Default)]
    pub struct Builder {
        pub ops: Vec<Op>,
    }

    impl Builder {
        pub fn invoke(&mut self, process: u64, time: u64, f: Function, key: &str) -> &mut Op {
            let mut op = Op::invoke(process, f, 0, Some(key.to_string()));
            op.time = time;
            self.ops.push(op);
            self.ops.last_mut().expect("just pushed")
        }

        pub fn complete(&mut self, process: u64, time: u64, op_type: OpType) -> &mut Op {
            let invoke = self
                .ops
                .iter()
                .rev()
                .find(|op| op.process == process && op.op_type == OpType::Invoke)
                .expect("invoked")
                .clone();
            let mut op = invoke;
            op.op_type = op_type;
            op.time = time;
            self.ops.push(op);
            self.ops.last_mut().expect("just pushed")
        }
    }
}
