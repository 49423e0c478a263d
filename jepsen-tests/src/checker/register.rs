//! The register checker: per-key linearizability (Wing–Gong–Lowe, see [`super::linearizable`])
//! over reads, unique-valued puts and CAS txns, plus etcd's global revision guarantees:
//!
//! - every acknowledged write has its own revision;
//! - revisions grow in real-time order: an op that started after another finished never reports
//!   a smaller revision (a write a strictly larger one);
//! - a read's `mod_revision` is the revision of the write that produced its value, and every read
//!   of a value reports the same one.

use std::collections::{BTreeMap, HashMap};

use super::linearizable::{check_register, prune_unobserved, Linearizability, RegisterOp, TimedOp};
use super::{CheckReport, Validity};
use crate::history::{CompleteOp, Function, OpType};

/// Search steps allowed per key before the verdict becomes unknown.
pub const SEARCH_BUDGET: u64 = 5_000_000;

fn describe(op: &CompleteOp) -> String {
    format!(
        "{:?} p{} n{} key={} value={:?} expected={:?} {:?} rev={:?} mod_rev={:?} [{:.3}s..{}]",
        op.invoke.f,
        op.invoke.process,
        op.invoke.node + 1,
        op.invoke.key.as_deref().unwrap_or("-"),
        op.completion.value.or(op.invoke.value),
        op.invoke.expected,
        op.outcome,
        op.completion.revision,
        op.completion.mod_revision,
        op.invoke.time as f64 / 1e9,
        op.complete_time()
            .map(|time| format!("{:.3}s", time as f64 / 1e9))
            .unwrap_or_else(|| "∞".to_string()),
    )
}

/// Checks a register history (ops other than read/write/cas are ignored).
pub fn check(ops: &[CompleteOp]) -> CheckReport {
    let mut report = CheckReport::new("register");
    let ops: Vec<&CompleteOp> = ops
        .iter()
        .filter(|op| {
            matches!(
                op.invoke.f,
                Function::Read | Function::Write | Function::Cas
            )
        })
        .collect();

    // Per-key linearizability.
    let mut by_key: BTreeMap<&str, Vec<(&CompleteOp, TimedOp)>> = BTreeMap::new();
    for op in &ops {
        let ret = match op.outcome {
            OpType::Ok => op.complete_time(),
            OpType::Info => None,
            OpType::Fail | OpType::Invoke => continue,
        };
        let model_op = match op.invoke.f {
            Function::Read => RegisterOp::Read(op.completion.value),
            Function::Write => match op.invoke.value {
                Some(value) => RegisterOp::Write(value),
                None => continue,
            },
            Function::Cas => match (op.invoke.expected, op.invoke.value) {
                (Some(expected), Some(new)) => RegisterOp::Cas { expected, new },
                _ => continue,
            },
            _ => continue,
        };
        let key = op.invoke.key.as_deref().unwrap_or("");
        by_key.entry(key).or_default().push((
            op,
            TimedOp {
                op: model_op,
                call: op.invoke_time(),
                ret,
            },
        ));
    }
    let mut keys_checked = 0usize;
    let mut ops_checked = 0usize;
    for (key, entries) in &by_key {
        let timed: Vec<TimedOp> = entries.iter().map(|(_, timed)| *timed).collect();
        let pruned = prune_unobserved(&timed);
        keys_checked += 1;
        ops_checked += pruned.len();
        match check_register(&pruned, SEARCH_BUDGET) {
            Linearizability::Linearizable => {}
            Linearizability::NotLinearizable { stuck_at } => {
                let stuck = pruned[stuck_at];
                let culprit = entries
                    .iter()
                    .find(|(_, timed)| *timed == stuck)
                    .map(|(op, _)| describe(op))
                    .unwrap_or_default();
                report.anomaly(format!(
                    "key {key}: not linearizable ({} ops); no order lets this op complete: {culprit}",
                    pruned.len()
                ));
            }
            Linearizability::Unknown => report.unknown(format!(
                "key {key}: search budget of {SEARCH_BUDGET} steps exhausted"
            )),
        }
    }

    check_unique_write_revisions(&ops, &mut report);
    check_real_time_revisions(&ops, &mut report);
    check_mod_revisions(&ops, &mut report);

    let count = |outcome: OpType| ops.iter().filter(|op| op.outcome == outcome).count();
    report.stats = serde_json::json!({
        "keys": keys_checked,
        "ops_searched": ops_checked,
        "ok": count(OpType::Ok),
        "fail": count(OpType::Fail),
        "info": count(OpType::Info),
        "reads_ok": ops.iter().filter(|op| op.outcome == OpType::Ok && op.invoke.f == Function::Read).count(),
    });
    if report.validity == Validity::Valid && keys_checked == 0 {
        report.unknown("no register operations".to_string());
    }
    report
}

fn is_acknowledged_write(op: &CompleteOp) -> bool {
    op.outcome == OpType::Ok && matches!(op.invoke.f, Function::Write | Function::Cas)
}

fn check_unique_write_revisions(ops: &[&CompleteOp], report: &mut CheckReport) {
    let mut seen: HashMap<i64, &CompleteOp> = HashMap::new();
    for op in ops.iter().filter(|op| is_acknowledged_write(op)) {
        let Some(revision) = op.completion.revision else {
            report.anomaly(format!(
                "acknowledged write without revision: {}",
                describe(op)
            ));
            continue;
        };
        if let Some(other) = seen.insert(revision, op) {
            report.anomaly(format!(
                "two acknowledged writes share revision {revision}: {} and {}",
                describe(other),
                describe(op)
            ));
        }
    }
}

/// An op that started after another finished must not report a smaller revision; a write must
/// report a strictly larger one.
fn check_real_time_revisions(ops: &[&CompleteOp], report: &mut CheckReport) {
    let mut completed: Vec<&CompleteOp> = ops
        .iter()
        .copied()
        .filter(|op| op.outcome != OpType::Info && op.completion.revision.is_some())
        .collect();
    let mut started = completed.clone();
    completed.sort_by_key(|op| op.completion.time);
    started.sort_by_key(|op| op.invoke.time);
    let mut highest: Option<&CompleteOp> = None;
    let mut next_completed = completed.iter().peekable();
    for op in started {
        while let Some(done) = next_completed.next_if(|done| done.completion.time < op.invoke.time)
        {
            // (Option::is_none_or needs Rust 1.82; the workspace's rust-version is 1.80.)
            let higher = match highest {
                None => true,
                Some(high) => done.completion.revision > high.completion.revision,
            };
            if higher {
                highest = Some(done);
            }
        }
        let (Some(high), Some(revision)) = (highest, op.completion.revision) else {
            continue;
        };
        let high_revision = high.completion.revision.unwrap_or(0);
        let violated = if is_acknowledged_write(op) {
            revision <= high_revision
        } else {
            revision < high_revision
        };
        if violated {
            report.anomaly(format!(
                "revision went back in real time: {} started after {} had completed",
                describe(op),
                describe(high)
            ));
        }
    }
}

fn check_mod_revisions(ops: &[&CompleteOp], report: &mut CheckReport) {
    let written: HashMap<u64, &CompleteOp> = ops
        .iter()
        .copied()
        .filter(|op| is_acknowledged_write(op))
        .filter_map(|op| op.invoke.value.map(|value| (value, op)))
        .collect();
    let mut first_read: HashMap<u64, &CompleteOp> = HashMap::new();
    for op in ops
        .iter()
        .copied()
        .filter(|op| op.outcome == OpType::Ok && op.invoke.f == Function::Read)
    {
        let mod_revision = op.completion.mod_revision;
        let Some(value) = op.completion.value else {
            if mod_revision.unwrap_or(0) != 0 {
                report.anomaly(format!(
                    "read of an absent key with a mod_revision: {}",
                    describe(op)
                ));
            }
            continue;
        };
        if let (Some(write), Some(mod_revision)) = (written.get(&value), mod_revision) {
            if write.completion.revision != Some(mod_revision) {
                report.anomaly(format!(
                    "read's mod_revision is not the revision of the write of its value: {} vs {}",
                    describe(op),
                    describe(write)
                ));
            }
        }
        match first_read.get(&value) {
            Some(first) if first.completion.mod_revision != mod_revision => {
                report.anomaly(format!(
                    "two reads of one value disagree on its mod_revision: {} and {}",
                    describe(first),
                    describe(op)
                ));
            }
            Some(_) => {}
            None => {
                first_read.insert(value, op);
            }
        }
        if let (Some(mod_revision), Some(revision)) = (mod_revision, op.completion.revision) {
            if mod_revision > revision {
                report.anomaly(format!(
                    "read's mod_revision is above its header revision: {}",
                    describe(op)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::complete_ops;
    use crate::history::test_support::Builder;

    fn write(b: &mut Builder, process: u64, from: u64, to: u64, value: u64, revision: i64) {
        b.invoke(process, from, Function::Write, "k").value = Some(value);
        b.complete(process, to, OpType::Ok).revision = Some(revision);
    }

    fn read(
        b: &mut Builder,
        process: u64,
        from: u64,
        to: u64,
        value: Option<u64>,
        revs: (i64, i64),
    ) {
        b.invoke(process, from, Function::Read, "k");
        let done = b.complete(process, to, OpType::Ok);
        done.value = value;
        done.revision = Some(revs.0);
        done.mod_revision = value.map(|_| revs.1);
    }

    fn run(b: &Builder) -> CheckReport {
        check(&complete_ops(&b.ops).expect("well-formed history"))
    }

    #[test]
    fn valid_history_passes() {
        let mut b = Builder::default();
        write(&mut b, 1, 0, 10, 1, 2);
        read(&mut b, 2, 11, 20, Some(1), (2, 2));
        b.invoke(1, 21, Function::Cas, "k").expected = Some(1);
        b.ops.last_mut().expect("op").value = Some(2);
        b.complete(1, 30, OpType::Ok).revision = Some(3);
        read(&mut b, 2, 31, 40, Some(2), (3, 3));
        let report = run(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }

    /// Negative control: a stale read (the old value after a newer write completed).
    #[test]
    fn stale_read_is_caught() {
        let mut b = Builder::default();
        write(&mut b, 1, 0, 10, 1, 2);
        write(&mut b, 1, 11, 20, 2, 3);
        read(&mut b, 2, 21, 30, Some(1), (2, 2));
        let report = run(&b);
        assert_eq!(report.validity, Validity::Invalid);
        assert!(report
            .anomalies
            .iter()
            .any(|a| a.contains("not linearizable")));
        assert!(report.anomalies.iter().any(|a| a.contains("went back")));
    }

    /// Negative control: an acknowledged write that vanished.
    #[test]
    fn lost_write_is_caught() {
        let mut b = Builder::default();
        write(&mut b, 1, 0, 10, 1, 2);
        read(&mut b, 2, 11, 20, None, (2, 0));
        let report = run(&b);
        assert_eq!(report.validity, Validity::Invalid);
    }

    #[test]
    fn duplicate_write_revisions_are_caught() {
        let mut b = Builder::default();
        write(&mut b, 1, 0, 10, 1, 2);
        write(&mut b, 2, 0, 10, 2, 2);
        let report = run(&b);
        assert!(report
            .anomalies
            .iter()
            .any(|a| a.contains("share revision")));
    }

    #[test]
    fn wrong_mod_revision_is_caught() {
        let mut b = Builder::default();
        write(&mut b, 1, 0, 10, 1, 2);
        read(&mut b, 2, 11, 20, Some(1), (2, 5));
        let report = run(&b);
        assert!(report.anomalies.iter().any(|a| a.contains("mod_revision")));
    }

    #[test]
    fn info_write_observed_later_is_fine() {
        let mut b = Builder::default();
        b.invoke(1, 0, Function::Write, "k").value = Some(1);
        b.complete(1, 5, OpType::Info);
        read(&mut b, 2, 20, 30, Some(1), (2, 2));
        read(&mut b, 3, 31, 40, Some(1), (2, 2));
        let report = run(&b);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }
}
