//! The lease checker. What a client can know about a lease L with TTL T:
//!
//! - **An acknowledged keepalive (or the grant) invoked at t promises L until t + T.** beacond
//!   answers a keepalive only after its renewal is applied, every member measures L's deadline
//!   from its own apply of the latest renewal (which is after t), and an expiry applies only if no
//!   renewal was committed since the leader measured — so no expiry takes effect before t + T, on
//!   any leader. L is therefore certainly alive from its grant until `alive_until` = the latest
//!   such t + T, unless a revoke was invoked before.
//! - **A lease never comes back.** Lease ids are never reused, and a key attached to L is only
//!   deleted when L ends (this workload never deletes keys), so once L (or one of its keys) is
//!   seen gone, nothing may show it alive again.
//!
//! Observations: a keepalive answered with TTL > 0, a time-to-live ≥ 0, an acknowledged put with
//! L, or a read that finds one of L's keys show L *alive*; a keepalive answered with TTL 0, a
//! time-to-live of -1, a put or revoke refused with "lease not found", or a read that misses one
//! of L's keys (whose put was acknowledged, or which an earlier read saw, before the read started)
//! show it *gone*.
//!
//! Checks:
//! - **early**: an observation of L gone that completed before `alive_until` (counting only
//!   keepalives invoked before the observation completed): L expired although it was kept alive
//!   (an unanswered keepalive extends nothing — the bound runs from the last acknowledged one);
//! - **remaining**: a time-to-live answer smaller than the whole seconds left until the bound
//!   of the keepalives acknowledged before it was asked (the remaining time was cut short,
//!   e.g. reset by a leader change);
//! - **resurrected**: an observation of L alive invoked after L was seen gone or an
//!   acknowledged revoke of L completed;
//! - **wrong-lease**: a read finds a key with a lease (or value) other than its put's;
//! - **late**: an observation of L alive invoked after L's last keepalive or revoke attempt +
//!   T + slack (T + 5 s), where every fault overlapping that window pushes the bound to the
//!   fault's end + T + slack (a restarted member counts a full TTL from its start, and an
//!   isolated or stopped cluster expires nothing). An anomaly for reads after the final heal
//!   and, during the run, under the `none` and `kill` nemeses; otherwise counted in the stats
//!   (`late_during_faults`): a partitioned or lossy cluster may legitimately be slow to decide.

use std::collections::{BTreeMap, HashMap};

use super::CheckReport;
use crate::history::{seconds, CompleteOp, Function, OpType};
use crate::nemesis::{FaultRecord, NemesisKind};

/// Names of the checks, in report order.
pub const CHECKS: [&str; 5] = ["early", "remaining", "resurrected", "wrong-lease", "late"];

/// Nanoseconds per second.
const SECOND: u64 = 1_000_000_000;
/// Extra time after the TTL within which an expiry must be observable: TTL + this.
const SLACK_EXTRA: u64 = 5 * SECOND;

/// Whether late expiries during the run are anomalies under these nemeses (only `none` and
/// `kill`: partitions, pauses, loss and clock faults may stall the cluster's decisions).
pub fn late_is_anomaly(kinds: &[NemesisKind]) -> bool {
    kinds.iter().all(|kind| *kind == NemesisKind::Kill)
}

#[derive(Debug, Default)]
struct LeaseFacts<'a> {
    ttl: u64,
    granted: Option<&'a CompleteOp>,
    /// (invoke time, TTL in ns) of every acknowledged grant or keepalive with TTL > 0.
    promises: Vec<(u64, u64, &'a CompleteOp)>,
    /// The earliest invocation of a revoke that may have happened (ok or info).
    revoke_invoked: Option<u64>,
    /// The latest completion (or timeout) of a grant, keepalive or revoke attempt.
    last_attempt: u64,
}

impl LeaseFacts<'_> {
    /// The bound the promises invoked (with `acknowledged`: also answered) before `before` give,
    /// cut by a revoke invoked before `before`.
    fn alive_until(&self, before: u64, acknowledged: bool) -> Option<(u64, &CompleteOp)> {
        let best = self
            .promises
            .iter()
            .filter(|(invoke, _, op)| {
                *invoke < before && (!acknowledged || op.completion.time < before)
            })
            .max_by_key(|(invoke, ttl, _)| invoke + ttl)?;
        let bound = best.0 + best.1;
        let bound = match self.revoke_invoked {
            Some(revoke) if revoke < before => bound.min(revoke),
            _ => bound,
        };
        Some((bound, best.2))
    }
}

/// What an op shows about its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Alive,
    Gone,
}

struct Observation<'a> {
    lease: i64,
    op: &'a CompleteOp,
    seen: Seen,
}

pub(crate) fn describe(op: &CompleteOp) -> String {
    let mut text = format!(
        "{:?} p{} n{}",
        op.invoke.f,
        op.invoke.process,
        op.invoke.node + 1
    );
    if let Some(lease) = op.invoke.lease.or(op.completion.lease) {
        text.push_str(&format!(" lease={lease:x}"));
    }
    if let Some(key) = &op.invoke.key {
        text.push_str(&format!(" key={key}"));
    }
    text.push_str(&format!(" {:?}", op.outcome));
    if op.outcome == OpType::Ok {
        if let Some(ttl) = op.completion.ttl {
            text.push_str(&format!(" ttl={ttl}"));
        }
        if op.invoke.f == Function::ReadLeased {
            match op.completion.value {
                Some(value) => text.push_str(&format!(
                    " read={value} (lease {:x})",
                    op.completion.lease.unwrap_or(0)
                )),
                None => text.push_str(" read=absent"),
            }
        }
    }
    text.push_str(&op.error_and_span());
    text
}

/// The bound by which a lease last kept alive (or revoked) at `base` must be gone: base + TTL +
/// slack, pushed past every fault that overlaps the window. `None` when a fault never ended.
fn late_bound(base: u64, ttl: u64, faults: &[FaultRecord]) -> Option<u64> {
    let slack = ttl + SLACK_EXTRA;
    let mut bound = base + ttl + slack;
    let mut windows: Vec<(u64, Option<u64>)> = faults
        .iter()
        .map(|fault| {
            (
                (fault.start * 1e9) as u64,
                fault.end.map(|end| (end * 1e9) as u64),
            )
        })
        .collect();
    windows.sort_unstable();
    loop {
        let mut moved = false;
        for (start, end) in &windows {
            if *start <= bound {
                // A fault that never ended: no bound.
                let end = (*end)?;
                if end < base {
                    continue;
                }
                let pushed = end + ttl + slack;
                if pushed > bound {
                    bound = pushed;
                    moved = true;
                }
            }
        }
        if !moved {
            return Some(bound);
        }
    }
}

/// Checks a lease history. Ops invoked at or after `final_from` are the final reads (after the
/// heal); `faults` are the nemesis's, `kinds` the nemeses enabled.
pub fn check(
    ops: &[CompleteOp],
    final_from: u64,
    faults: &[FaultRecord],
    kinds: &[NemesisKind],
) -> CheckReport {
    let mut check = super::watch::Check::new("lease", &CHECKS);
    let late_anomaly_during_run = late_is_anomaly(kinds);

    // The facts per lease and the keys' leases.
    let mut leases: BTreeMap<i64, LeaseFacts> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.invoke.f == Function::Grant) {
        if let (OpType::Ok, Some(id), Some(ttl)) =
            (op.outcome, op.completion.lease, op.completion.ttl)
        {
            let ttl = u64::try_from(ttl).unwrap_or(0) * SECOND;
            let facts = leases.entry(id).or_default();
            facts.ttl = ttl;
            facts.granted = Some(op);
            facts.promises.push((op.invoke.time, ttl, op));
            facts.last_attempt = facts.last_attempt.max(op.completion.time);
        }
    }
    // key → its put (the key's lease and value).
    let mut puts: HashMap<&str, &CompleteOp> = HashMap::new();
    for op in ops {
        let Some(lease) = op.invoke.lease else {
            continue;
        };
        let Some(facts) = leases.get_mut(&lease) else {
            continue;
        };
        match op.invoke.f {
            Function::KeepAlive => {
                facts.last_attempt = facts.last_attempt.max(op.completion.time);
                if op.outcome == OpType::Ok && op.completion.ttl.unwrap_or(0) > 0 {
                    let ttl = u64::try_from(op.completion.ttl.unwrap_or(0)).unwrap_or(0) * SECOND;
                    facts.promises.push((op.invoke.time, ttl, op));
                }
            }
            Function::Revoke => {
                facts.last_attempt = facts.last_attempt.max(op.completion.time);
                if matches!(op.outcome, OpType::Ok | OpType::Info) {
                    let invoked = op.invoke.time;
                    facts.revoke_invoked =
                        Some(facts.revoke_invoked.map_or(invoked, |at| at.min(invoked)));
                }
            }
            Function::PutLeased => {
                if let Some(key) = op.invoke.key.as_deref() {
                    puts.insert(key, op);
                }
            }
            _ => {}
        }
    }

    // Observations, in invocation order (ops are sorted by invoke time).
    let mut observations: Vec<Observation> = Vec::new();
    // key → the earliest completion that established it exists (put ok, or a read that saw it).
    let mut established: HashMap<&str, u64> = HashMap::new();
    for op in ops {
        if op.outcome == OpType::Ok && op.invoke.f == Function::PutLeased {
            if let Some(key) = op.invoke.key.as_deref() {
                let at = established.entry(key).or_insert(op.completion.time);
                *at = (*at).min(op.completion.time);
            }
        }
        if op.outcome == OpType::Ok
            && op.invoke.f == Function::ReadLeased
            && op.completion.value.is_some()
        {
            if let Some(key) = op.invoke.key.as_deref() {
                let at = established.entry(key).or_insert(op.completion.time);
                *at = (*at).min(op.completion.time);
            }
        }
    }
    let mut reads = (0usize, 0usize);
    let mut keepalives = (0usize, 0usize, 0usize);
    for op in ops {
        let granted_before = |lease: i64| {
            leases
                .get(&lease)
                .and_then(|facts| facts.granted)
                .is_some_and(|grant| grant.completion.time < op.invoke.time)
        };
        match (op.invoke.f, op.outcome) {
            (Function::KeepAlive, outcome) => {
                match outcome {
                    OpType::Ok => keepalives.0 += 1,
                    OpType::Fail => keepalives.1 += 1,
                    _ => keepalives.2 += 1,
                }
                if outcome != OpType::Ok {
                    continue;
                }
                let Some(lease) = op.invoke.lease else {
                    continue;
                };
                let seen = if op.completion.ttl.unwrap_or(0) > 0 {
                    Seen::Alive
                } else {
                    Seen::Gone
                };
                observations.push(Observation { lease, op, seen });
            }
            (Function::TimeToLive, OpType::Ok) => {
                let Some(lease) = op.invoke.lease else {
                    continue;
                };
                let ttl = op.completion.ttl.unwrap_or(-1);
                if ttl >= 0 {
                    observations.push(Observation {
                        lease,
                        op,
                        seen: Seen::Alive,
                    });
                } else if granted_before(lease) {
                    observations.push(Observation {
                        lease,
                        op,
                        seen: Seen::Gone,
                    });
                }
            }
            (Function::PutLeased, OpType::Ok) => {
                if let Some(lease) = op.invoke.lease {
                    observations.push(Observation {
                        lease,
                        op,
                        seen: Seen::Alive,
                    });
                }
            }
            (Function::PutLeased | Function::Revoke, OpType::Fail) if op.failed_not_found() => {
                if let Some(lease) = op.invoke.lease.filter(|lease| granted_before(*lease)) {
                    observations.push(Observation {
                        lease,
                        op,
                        seen: Seen::Gone,
                    });
                }
            }
            (Function::ReadLeased, OpType::Ok) => {
                let Some(key) = op.invoke.key.as_deref() else {
                    continue;
                };
                let Some(put) = puts.get(key) else {
                    if op.completion.value.is_some() {
                        check.anomaly(
                            "wrong-lease",
                            format!("a key nobody put was read: {}", describe(op)),
                        );
                    }
                    continue;
                };
                let Some(lease) = put.invoke.lease else {
                    continue;
                };
                if op.completion.value.is_some() {
                    reads.0 += 1;
                    if op.completion.lease != Some(lease) || op.completion.value != put.invoke.value
                    {
                        check.anomaly(
                            "wrong-lease",
                            format!(
                                "{} was put with lease {lease:x} and value {:?}: {}",
                                key,
                                put.invoke.value,
                                describe(op)
                            ),
                        );
                    }
                    observations.push(Observation {
                        lease,
                        op,
                        seen: Seen::Alive,
                    });
                } else {
                    reads.1 += 1;
                    if established.get(key).is_some_and(|at| *at < op.invoke.time) {
                        observations.push(Observation {
                            lease,
                            op,
                            seen: Seen::Gone,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    // early and remaining.
    let mut early = 0usize;
    for observation in &observations {
        let Some(facts) = leases.get(&observation.lease) else {
            continue;
        };
        let op = observation.op;
        let completed = op.completion.time;
        match observation.seen {
            Seen::Gone => {
                if let Some((bound, promise)) = facts.alive_until(completed, false) {
                    if completed < bound {
                        early += 1;
                        check.anomaly(
                            "early",
                            format!(
                                "lease {:x} gone {:.3}s before {:.3}s, which {} promised: {}",
                                observation.lease,
                                seconds(bound - completed),
                                seconds(bound),
                                describe(promise),
                                describe(op)
                            ),
                        );
                    }
                }
            }
            Seen::Alive => {
                if op.invoke.f != Function::TimeToLive {
                    continue;
                }
                let Some((bound, promise)) = facts.alive_until(op.invoke.time, true) else {
                    continue;
                };
                let reported = op.completion.ttl.unwrap_or(0);
                let owed = bound.saturating_sub(completed) / SECOND;
                if reported < i64::try_from(owed).unwrap_or(i64::MAX) {
                    check.anomaly(
                        "remaining",
                        format!(
                            "lease {:x} reported {reported}s left, but {} promised it until {:.3}s ({owed}s after the answer): {}",
                            observation.lease,
                            describe(promise),
                            seconds(bound),
                            describe(op)
                        ),
                    );
                }
            }
        }
    }

    // resurrected: alive after gone (gone at the earliest completion showing it gone, or an
    // acknowledged revoke).
    let mut gone_at: HashMap<i64, &CompleteOp> = HashMap::new();
    for observation in observations.iter().filter(|o| o.seen == Seen::Gone) {
        let entry = gone_at.entry(observation.lease).or_insert(observation.op);
        if observation.op.completion.time < entry.completion.time {
            *entry = observation.op;
        }
    }
    for op in ops
        .iter()
        .filter(|op| op.invoke.f == Function::Revoke && op.outcome == OpType::Ok)
    {
        if let Some(lease) = op.invoke.lease {
            let entry = gone_at.entry(lease).or_insert(op);
            if op.completion.time < entry.completion.time {
                *entry = op;
            }
        }
    }
    for observation in observations.iter().filter(|o| o.seen == Seen::Alive) {
        if let Some(gone) = gone_at.get(&observation.lease) {
            if gone.completion.time < observation.op.invoke.time {
                check.anomaly(
                    "resurrected",
                    format!(
                        "lease {:x} alive again after {}: {}",
                        observation.lease,
                        describe(gone),
                        describe(observation.op)
                    ),
                );
            }
        }
    }

    // late.
    let mut late_during_faults = 0usize;
    let mut late_examples: Vec<String> = Vec::new();
    let mut unjudged = 0usize;
    for observation in observations.iter().filter(|o| o.seen == Seen::Alive) {
        let Some(facts) = leases.get(&observation.lease) else {
            continue;
        };
        // Only attempts before this op count (the keeper of a lease being read may still run).
        let Some(bound) = late_bound(facts.last_attempt, facts.ttl, faults) else {
            unjudged += 1;
            continue;
        };
        let op = observation.op;
        if op.invoke.time <= bound || facts.last_attempt >= op.invoke.time {
            continue;
        }
        let description = format!(
            "lease {:x} still alive {:.3}s after its last keepalive/revoke attempt at {:.3}s (bound {:.3}s): {}",
            observation.lease,
            seconds(op.invoke.time - facts.last_attempt),
            seconds(facts.last_attempt),
            seconds(bound),
            describe(op)
        );
        if op.invoke.time >= final_from || late_anomaly_during_run {
            check.anomaly("late", description);
        } else {
            late_during_faults += 1;
            if late_examples.len() < 10 {
                late_examples.push(description);
            }
        }
    }

    // How long after the last keepalive attempt expiries were first observed.
    let mut expiry_delays: Vec<f64> = Vec::new();
    for (lease, facts) in &leases {
        if facts.revoke_invoked.is_some() {
            continue;
        }
        if let Some(gone) = gone_at.get(lease) {
            if gone.completion.time > facts.last_attempt {
                expiry_delays.push(seconds(gone.completion.time - facts.last_attempt));
            }
        }
    }
    expiry_delays.sort_by(f64::total_cmp);
    let revokes = ops
        .iter()
        .filter(|op| op.invoke.f == Function::Revoke)
        .count();
    let puts_ok = ops
        .iter()
        .filter(|op| op.invoke.f == Function::PutLeased && op.outcome == OpType::Ok)
        .count();
    check.report.stats = serde_json::json!({
        "leases": leases.len(),
        "keys_put_ok": puts_ok,
        "keys_put": puts.len(),
        "reads_present": reads.0,
        "reads_absent": reads.1,
        "keepalives_ok": keepalives.0,
        "keepalives_fail": keepalives.1,
        "keepalives_info": keepalives.2,
        "revokes": revokes,
        "observations": observations.len(),
        "early_observations": early,
        "expiries_observed": expiry_delays.len(),
        "expiry_seen_after_last_keepalive_s": {
            "median": expiry_delays.get(expiry_delays.len() / 2),
            "max": expiry_delays.last(),
        },
        "late_is_anomaly_during_run": late_anomaly_during_run,
        "late_during_faults": late_during_faults,
        "late_during_faults_examples": late_examples,
        "late_unjudged": unjudged,
        "anomalies_by_check": check.counts,
    });
    if leases.is_empty() {
        check.unknown("no lease was granted".to_string());
    }
    check.report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;
    use crate::history::complete_ops;
    use crate::history::test_support::Builder;
    use crate::nemesis::Fault;

    const S: u64 = SECOND;
    const LEASE: i64 = 0x77;

    fn grant(b: &mut Builder, at: u64) {
        b.invoke(1, at, Function::Grant, "-").key = None;
        let done = b.complete(1, at + S / 100, OpType::Ok);
        done.lease = Some(LEASE);
        done.ttl = Some(3);
    }

    fn keep_alive(b: &mut Builder, process: u64, at: u64, outcome: OpType, ttl: i64) {
        let op = b.invoke(process, at, Function::KeepAlive, "-");
        op.key = None;
        op.lease = Some(LEASE);
        let done = b.complete(process, at + S / 100, outcome);
        if outcome == OpType::Ok {
            done.ttl = Some(ttl);
        }
    }

    fn put(b: &mut Builder, at: u64, key: &str, value: u64) {
        let op = b.invoke(2, at, Function::PutLeased, key);
        op.lease = Some(LEASE);
        op.value = Some(value);
        b.complete(2, at + S / 100, OpType::Ok).revision = Some(2);
    }

    fn read(b: &mut Builder, at: u64, done_at: u64, key: &str, value: Option<u64>) {
        b.invoke(3, at, Function::ReadLeased, key);
        let done = b.complete(3, done_at, OpType::Ok);
        done.value = value;
        done.lease = value.map(|_| LEASE);
    }

    fn revoke(b: &mut Builder, at: u64) {
        let op = b.invoke(4, at, Function::Revoke, "-");
        op.key = None;
        op.lease = Some(LEASE);
        b.complete(4, at + S / 100, OpType::Ok);
    }

    fn run(b: &Builder, kinds: &[NemesisKind], faults: &[FaultRecord]) -> CheckReport {
        check(
            &complete_ops(&b.ops).expect("well-formed history"),
            u64::MAX,
            faults,
            kinds,
        )
    }

    fn count(report: &CheckReport, name: &str) -> u64 {
        report.stats["anomalies_by_check"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// Granted at 0 (TTL 3 s), kept alive at 1 s and 2 s (promised until 5 s), then left: gone
    /// by 6 s, within the late bound (2 s + 3 s + 8 s).
    fn good() -> Builder {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        keep_alive(&mut b, 5, S, OpType::Ok, 3);
        read(&mut b, S + S / 2, S + S / 2 + S / 100, "k1", Some(1));
        keep_alive(&mut b, 5, 2 * S, OpType::Ok, 3);
        read(&mut b, 4 * S, 4 * S + S / 100, "k1", Some(1));
        // A read that starts before the bound but completes after it may miss the key.
        read(&mut b, 4 * S + S / 2, 5 * S + S / 10, "k1", None);
        read(&mut b, 6 * S, 6 * S + S / 100, "k1", None);
        b
    }

    /// Re-checks a stored run: `LEASE_RUN=<run dir> cargo test -p jepsen-tests --lib
    /// lease::tests::recheck_stored -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs LEASE_RUN"]
    fn recheck_stored() {
        let dir = std::path::PathBuf::from(std::env::var("LEASE_RUN").expect("LEASE_RUN"));
        let (ops, final_from) = crate::history::read_run(&dir).expect("history");
        let faults: Vec<FaultRecord> =
            crate::history::read_records(&dir.join("nemesis.jsonl")).expect("nemesis.jsonl");
        let results: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("results.json")).expect("results.json"),
        )
        .expect("json");
        let kinds: Vec<NemesisKind> =
            serde_json::from_value(results["nemesis"].clone()).expect("nemesis kinds");
        let report = check(&ops, final_from, &faults, &kinds);
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }

    #[test]
    fn kept_alive_then_expired_is_valid() {
        let report = run(&good(), &[], &[]);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        assert_eq!(report.stats["expiries_observed"], 1);
    }

    /// Negative control: the key vanished while the last keepalive still promised the lease.
    #[test]
    fn early_expiry_is_rejected() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        keep_alive(&mut b, 5, S, OpType::Ok, 3);
        keep_alive(&mut b, 5, 2 * S, OpType::Ok, 3);
        read(&mut b, 3 * S, 3 * S + S / 100, "k1", None);
        let report = run(&b, &[], &[]);
        assert_eq!(report.validity, Validity::Invalid);
        assert_eq!(count(&report, "early"), 1, "{:?}", report.anomalies);
    }

    /// A keepalive that timed out extends nothing: the bound runs from the last acknowledged one.
    #[test]
    fn expiry_after_an_unanswered_keepalive_is_fine() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        keep_alive(&mut b, 5, S, OpType::Info, 0);
        read(&mut b, 4 * S, 4 * S + S / 100, "k1", None);
        let report = run(&b, &[], &[]);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }

    /// Negative control: a keepalive answered TTL 0 while an earlier one promised the lease.
    #[test]
    fn keepalive_finding_the_lease_gone_early_is_rejected() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        keep_alive(&mut b, 5, S, OpType::Ok, 3);
        keep_alive(&mut b, 5, 2 * S, OpType::Ok, 0);
        let report = run(&b, &[], &[]);
        assert_eq!(count(&report, "early"), 1, "{:?}", report.anomalies);
    }

    /// Negative control: the key is back after an acknowledged revoke.
    #[test]
    fn key_reappearing_after_revoke_is_rejected() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        revoke(&mut b, S);
        read(&mut b, 2 * S, 2 * S + S / 100, "k1", Some(1));
        let report = run(&b, &[], &[]);
        assert_eq!(report.validity, Validity::Invalid);
        assert_eq!(count(&report, "resurrected"), 1, "{:?}", report.anomalies);
    }

    /// A revoke cuts the promise: the key may vanish at once.
    #[test]
    fn key_gone_after_revoke_is_fine() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        keep_alive(&mut b, 5, S / 2, OpType::Ok, 3);
        revoke(&mut b, S);
        read(&mut b, S + S / 2, S + S / 2 + S / 100, "k1", None);
        keep_alive(&mut b, 5, 2 * S, OpType::Ok, 0);
        let report = run(&b, &[], &[]);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }

    /// Negative control: the key is back after a read saw it expired.
    #[test]
    fn key_reappearing_after_expiry_is_rejected() {
        let mut b = good();
        read(&mut b, 7 * S, 7 * S + S / 100, "k1", Some(1));
        let report = run(&b, &[], &[]);
        assert_eq!(count(&report, "resurrected"), 1, "{:?}", report.anomalies);
    }

    /// Negative control: a read sees the key with another lease.
    #[test]
    fn wrong_lease_is_rejected() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        read(&mut b, S, S + S / 100, "k1", Some(1));
        b.ops.last_mut().expect("read").lease = Some(0x99);
        let report = run(&b, &[], &[]);
        assert_eq!(count(&report, "wrong-lease"), 1, "{:?}", report.anomalies);
    }

    /// Negative control: a lease left alone is still there long after its TTL — an anomaly
    /// without faults, only a statistic during a partition, and an anomaly again after the heal.
    #[test]
    fn late_expiry_is_judged_by_the_nemesis() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        read(&mut b, 20 * S, 20 * S + S / 100, "k1", Some(1));
        let report = run(&b, &[], &[]);
        assert_eq!(count(&report, "late"), 1, "{:?}", report.anomalies);
        let report = run(&b, &[NemesisKind::Partition], &[]);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        assert_eq!(report.stats["late_during_faults"], 1);
        let ops = complete_ops(&b.ops).expect("well-formed history");
        let report = check(&ops, 20 * S, &[], &[NemesisKind::Partition]);
        assert_eq!(count(&report, "late"), 1, "{:?}", report.anomalies);
    }

    /// A fault overlapping the window pushes the late bound past its end.
    #[test]
    fn faults_push_the_late_bound() {
        let fault = FaultRecord {
            fault: Fault::Kill {
                nodes: vec![0, 1, 2],
                target: "all".to_string(),
            },
            name: "kill-all".to_string(),
            start: 5.0,
            end: Some(15.0),
            error: None,
            steps: Vec::new(),
        };
        let mut b = Builder::default();
        grant(&mut b, 0);
        put(&mut b, S / 10, "k1", 1);
        read(&mut b, 20 * S, 20 * S + S / 100, "k1", Some(1));
        let report = run(&b, &[NemesisKind::Kill], std::slice::from_ref(&fault));
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        read(&mut b, 27 * S, 27 * S + S / 100, "k1", Some(1));
        let report = run(&b, &[NemesisKind::Kill], &[fault]);
        assert_eq!(count(&report, "late"), 1, "{:?}", report.anomalies);
    }

    /// Negative control: a time-to-live answer that forgot part of the promised time (as a new
    /// leader that restarted the clock from an older renewal would).
    #[test]
    fn remaining_time_cut_short_is_rejected() {
        let mut b = Builder::default();
        grant(&mut b, 0);
        keep_alive(&mut b, 5, 2 * S, OpType::Ok, 3);
        let op = b.invoke(6, 3 * S, Function::TimeToLive, "-");
        op.key = None;
        op.lease = Some(LEASE);
        b.complete(6, 3 * S + S / 100, OpType::Ok).ttl = Some(0);
        let report = run(&b, &[], &[]);
        assert_eq!(count(&report, "remaining"), 1, "{:?}", report.anomalies);
        // One whole second left is what it owes.
        b.ops.last_mut().expect("ttl").ttl = Some(1);
        let report = run(&b, &[], &[]);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
    }
}
