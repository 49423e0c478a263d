//! The health checker (`--workload health`): the check verdicts the cluster committed, read from
//! the ground-truth watch of the catalog prefix (validated as the catalog checker does), judged
//! against what the test did to the endpoints (`health.jsonl`: flips, bad paths, stalls of the
//! endpoints' own thread) and the faults the nemesis injected.
//!
//! A *verdict* is a put of a health instance's record that keeps its registration (metadata
//! value) — only the checker writes those; a *transition* is a verdict whose check status differs
//! from the previous record's. A verdict's time is when the truth watcher first saw its revision:
//! no earlier than the commit. Its *window* is `[seen − base, seen]`, where `base` is the
//! threshold's worth of probe intervals plus the probe timeouts involved plus [`SLACK`], widened
//! back over every nemesis fault in force in it (or ended less than [`SLACK`] before it): a fault
//! can hold a proposed verdict back for as long as it lasts (a leader isolated or killed after
//! appending it, all members killed), and it can delay the truth watcher.
//!
//! - **safety**: an endpoint that was up for the whole run (`s*`), or whose only fault is a bad
//!   path from one node (`b*`), never has a verdict of critical — not under partitions, kills or a
//!   partitioned leader. A critical verdict needs the owner's failures *and* a second member's
//!   failed probe, and no second node shares the bad path.
//! - **cause**: a transition to critical only if the endpoint was down at some instant of its
//!   window (the confirmer's probe failed there); to passing only if it was up at some instant of
//!   its window; to warning only if it was down, or a bad path to it was in place, in its window,
//!   or the reason is flap damping (`flapping: …`). For safety and cause, a stall of the
//!   endpoints' thread (≥ half the probe timeout) in the window excuses the verdict (counted in
//!   `excused_by_stall`): the test cannot claim its endpoint answered then.
//! - **liveness**: after the load stopped and the cluster healed (the `settle` record), the
//!   final reads of the service (linearizable GetService, each checked against the truth by the
//!   catalog checker) must, from some read on, show every check as its endpoint's final state
//!   implies — passing if up, critical if down, or warning held by flap damping (reported) — and
//!   that read must complete within [`LIVENESS_BOUND`] of settling.
//!
//! The properties are judged per instance; every anomaly names the instance, the revision, the
//! times and the faults involved.

use std::collections::BTreeMap;

use serde_json::json;

use super::catalog::check_of_json;
use super::watch::{checked_truth, Check, EntryKind, Truth, WatchEntry};
use super::CheckReport;
use crate::history::{seconds, CheckRecord, CompleteOp, Function, OpType};
use crate::nemesis::FaultRecord;
use crate::workload::catalog::VALUE_KEY;
use crate::workload::health::{
    HealthEntry, Mode, Role, CHECK_ID, FAILURES_BEFORE_CRITICAL, INTERVAL_MS, LIVENESS_BOUND,
    SERVICE, SUCCESS_BEFORE_PASSING, TIMEOUT_MS,
};

/// Slack on every window: commit, apply, the truth watcher's delivery, a busy machine.
pub const SLACK: u64 = 5_000_000_000;
/// beacond's flap damping (`beacon_catalog::FlapPolicy::default()`, which the netns configs
/// keep): a check flaps after more than 5 committed status changes within 60 s, and is held at
/// warning until its probes are stable for 60 s.
const FLAP_MAX_CHANGES: usize = 5;
const FLAP_WINDOW: u64 = 60_000_000_000;
const FLAP_STABLE: u64 = 60_000_000_000;
const MS: u64 = 1_000_000;
/// The catalog's key prefix.
const PREFIX: &str = "/_beacon/instances/";

/// Whether a check's state is what an endpoint that is `up` (else down) implies once settled:
/// passing if up, critical if down, or warning while flap damping holds it.
pub fn settled(up: bool, check: &CheckRecord) -> bool {
    match check.status.as_str() {
        "passing" => up,
        "critical" => !up,
        "warning" => is_flap_hold(&check.reason),
        _ => false,
    }
}

fn is_flap_hold(reason: &str) -> bool {
    reason.starts_with("flapping")
}

/// Whether flap damping may hold a check at warning at `at`, given the times its status
/// changes were seen: some change at most [`FLAP_STABLE`] + [`LIVENESS_BOUND`] before `at`
/// came with more than [`FLAP_MAX_CHANGES`] changes within [`FLAP_WINDOW`] (+ [`SLACK`]). The
/// owner counts only the changes it saw itself, so this over-approximates: it is the condition
/// for accepting a warning whose stored reason does not say it is a hold (beacond writes no
/// verdict when a hold starts on a change *to* warning, so the reason stays that change's).
fn hold_possible(changes: &[u64], at: u64) -> bool {
    let bound = u64::try_from(LIVENESS_BOUND.as_nanos()).unwrap_or(u64::MAX);
    changes.iter().any(|change| {
        *change <= at
            && at - change <= FLAP_STABLE + bound
            && changes
                .iter()
                .filter(|earlier| **earlier <= *change && change - **earlier < FLAP_WINDOW + SLACK)
                .count()
                > FLAP_MAX_CHANGES
    })
}

/// What the test did to one endpoint.
#[derive(Debug, Default)]
struct Endpoint {
    role: Option<Role>,
    registered: u64,
    failures_before_warning: u32,
    /// Mode changes after registration (up at registration).
    flips: Vec<(u64, Mode)>,
    /// Bad paths: (from, until — `u64::MAX` if never removed, node).
    bad_paths: Vec<(u64, u64, usize)>,
    bad_path_errors: usize,
}

impl Endpoint {
    fn mode_at(&self, time: u64) -> Mode {
        self.flips
            .iter()
            .take_while(|(at, _)| *at <= time)
            .last()
            .map_or(Mode::Up, |(_, mode)| *mode)
    }

    /// Whether the endpoint was up (`up`) or down at some instant of `[from, to]`.
    fn was(&self, up: bool, from: u64, to: u64) -> bool {
        self.mode_at(from).is_up() == up
            || self
                .flips
                .iter()
                .any(|(at, mode)| *at > from && *at <= to && mode.is_up() == up)
    }

    fn bad_path_in(&self, from: u64, to: u64) -> Option<(u64, u64, usize)> {
        self.bad_paths
            .iter()
            .copied()
            .find(|(start, end, _)| *start <= to && *end >= from)
    }

    /// When the down period `time` falls in began (`None` if it is up at `time`).
    fn down_since(&self, time: u64) -> Option<u64> {
        let mut since = None;
        for (at, mode) in self.flips.iter().take_while(|(at, _)| *at <= time) {
            since = match (mode.is_up(), since) {
                (true, _) => None,
                (false, None) => Some(*at),
                (false, since) => since,
            };
        }
        since
    }

    fn describe_faults(&self) -> String {
        if self.bad_paths.is_empty() {
            return "never down, no bad path".to_string();
        }
        let paths: Vec<String> = self
            .bad_paths
            .iter()
            .map(|(start, end, node)| {
                format!(
                    "n{} {:.1}–{}",
                    node + 1,
                    seconds(*start),
                    if *end == u64::MAX {
                        "end".to_string()
                    } else {
                        format!("{:.1}s", seconds(*end))
                    }
                )
            })
            .collect();
        format!("never down; bad paths from {}", paths.join(", "))
    }
}

/// One committed record of a health instance.
#[derive(Debug, Clone)]
struct Committed {
    revision: i64,
    seen: u64,
    value: String,
    check: CheckRecord,
    output: String,
}

fn describe(committed: &Committed) -> String {
    format!(
        "revision {} (seen {:.2}s): reason {:?}, output {:?}, since_unix_ms {}",
        committed.revision,
        seconds(committed.seen),
        committed.check.reason,
        committed.output,
        committed.check.since_unix_ms
    )
}

/// A fault's span in nanoseconds (unhealed: until the end).
fn fault_span(fault: &FaultRecord) -> (u64, u64) {
    let nanos = |secs: f64| (secs.max(0.0) * 1e9) as u64;
    (nanos(fault.start), fault.end.map_or(u64::MAX, nanos))
}

/// `[seen − base, seen]`, widened back over faults in force in it or ended < SLACK before it.
fn window(seen: u64, base: u64, faults: &[(u64, u64)]) -> (u64, u64) {
    let mut from = seen.saturating_sub(base);
    loop {
        let widened = faults
            .iter()
            .filter(|(start, end)| *start < from && end.saturating_add(SLACK) >= from)
            .map(|(start, _)| start.saturating_sub(base))
            .min();
        match widened {
            Some(earlier) if earlier < from => from = earlier,
            _ => return (from, seen),
        }
    }
}

/// The first time watcher 0 (the truth) delivered each revision.
fn seen_times(truth_entries: &[WatchEntry]) -> BTreeMap<i64, u64> {
    let mut seen = BTreeMap::new();
    for entry in truth_entries
        .iter()
        .filter(|entry| entry.watcher == 0 && entry.kind == EntryKind::Response)
    {
        for event in &entry.events {
            seen.entry(event.kv.mod_revision)
                .and_modify(|time: &mut u64| *time = (*time).min(entry.time))
                .or_insert(entry.time);
        }
    }
    seen
}

/// Every committed record of `SERVICE/name` in revision order (`None` for a delete).
fn records(truth: &Truth, seen: &BTreeMap<i64, u64>, name: &str) -> Vec<Option<Committed>> {
    let key = format!("{PREFIX}{SERVICE}/{name}");
    let mut out = Vec::new();
    for (revision, events) in &truth.events {
        for event in events.iter().filter(|event| event.kv.key == key) {
            if event.delete {
                out.push(None);
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(&event.kv.value).unwrap_or_default();
            let raw = json["checks"]
                .as_array()
                .and_then(|checks| checks.iter().find(|check| check["id"] == CHECK_ID));
            out.push(Some(Committed {
                revision: *revision,
                seen: seen.get(revision).copied().unwrap_or(u64::MAX),
                value: json["metadata"][VALUE_KEY]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                check: raw.map(check_of_json).unwrap_or_default(),
                output: raw
                    .and_then(|check| check["state"]["output"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            }));
        }
    }
    out
}

/// Checks a health run: `ops` (the final GetService reads), the truth watcher's entries, the
/// endpoint records and the nemesis' faults.
pub fn check(
    ops: &[CompleteOp],
    truth_entries: &[WatchEntry],
    entries: &[HealthEntry],
    faults: &[FaultRecord],
) -> CheckReport {
    let mut check = Check::new("health", &["safety", "cause", "liveness"]);
    let mut scratch = Check::new("health-truth", &[]);
    let Some((truth, _)) = checked_truth(truth_entries, &mut scratch) else {
        check.unknown("no ground truth".to_string());
        return check.report;
    };
    let seen = seen_times(truth_entries);
    let fault_spans: Vec<(u64, u64)> = faults.iter().map(fault_span).collect();

    // What the test did.
    let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut stalls: Vec<(u64, u64)> = Vec::new();
    let mut settle = None;
    let mut probes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_paths_on_owner = 0usize;
    for entry in entries {
        match entry {
            HealthEntry::Endpoint {
                time,
                endpoint,
                role,
                failures_before_warning,
                ..
            } => {
                let state = endpoints.entry(endpoint.clone()).or_default();
                state.role = Some(*role);
                state.registered = *time;
                state.failures_before_warning = *failures_before_warning;
            }
            HealthEntry::Flip {
                time,
                endpoint,
                mode,
            } => endpoints
                .entry(endpoint.clone())
                .or_default()
                .flips
                .push((*time, *mode)),
            HealthEntry::BadPath {
                time,
                endpoint,
                node,
                on,
                owner,
                error,
            } => {
                let state = endpoints.entry(endpoint.clone()).or_default();
                if error.is_some() {
                    state.bad_path_errors += 1;
                }
                if *on {
                    state.bad_paths.push((*time, u64::MAX, *node));
                    bad_paths_on_owner += usize::from(*owner == Some(*node));
                } else if error.is_none() {
                    if let Some(path) = state
                        .bad_paths
                        .iter_mut()
                        .rev()
                        .find(|(_, end, path_node)| *end == u64::MAX && path_node == node)
                    {
                        path.1 = *time;
                    }
                }
            }
            HealthEntry::Stall { time, millis } => {
                stalls.push((*time, time.saturating_add(millis.saturating_mul(MS))))
            }
            HealthEntry::Probe { node, .. } => {
                let name = node.map_or("unknown".to_string(), |node| format!("n{}", node + 1));
                *probes.entry(name).or_default() += 1;
            }
            HealthEntry::Settle { time } => settle = Some(*time),
        }
    }
    if endpoints.is_empty() {
        check.unknown("no endpoints recorded".to_string());
        return check.report;
    }
    let stall_in = |from: u64, to: u64| {
        stalls
            .iter()
            .find(|(start, end)| *start <= to && *end >= from)
            .copied()
    };

    // Safety and cause, per instance, over its committed records.
    let mut verdicts = 0usize;
    let mut transitions: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut flap_holds = 0usize;
    let mut warnings_never_down = 0usize;
    let mut excused: Vec<String> = Vec::new();
    let mut detection_lags: Vec<f64> = Vec::new();
    let mut changes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let base_critical =
        u64::from(FAILURES_BEFORE_CRITICAL) * INTERVAL_MS * MS + 2 * TIMEOUT_MS * MS + SLACK;
    let base_passing =
        u64::from(SUCCESS_BEFORE_PASSING) * INTERVAL_MS * MS + TIMEOUT_MS * MS + SLACK;
    for (name, endpoint) in &endpoints {
        let key = format!("{SERVICE}/{name}");
        let never_down = endpoint.role.is_some_and(Role::never_down);
        let base_warning = u64::from(endpoint.failures_before_warning.max(1)) * INTERVAL_MS * MS
            + TIMEOUT_MS * MS
            + SLACK;
        let mut previous: Option<Committed> = None;
        for record in records(&truth, &seen, name) {
            let Some(current) = record else {
                check.anomaly(
                    "safety",
                    format!("{key} was deleted (nothing deregisters health instances)"),
                );
                previous = None;
                continue;
            };
            // A registration (a new metadata value) resets the check; only the checker writes
            // records that keep it. (Option::is_none_or needs Rust 1.82; rust-version is 1.80.)
            let registration = match &previous {
                Some(previous) => previous.value != current.value,
                None => true,
            };
            if registration {
                previous = Some(current);
                continue;
            }
            verdicts += 1;
            let before = previous
                .as_ref()
                .map(|p| p.check.status.clone())
                .unwrap_or_default();
            let status = current.check.status.as_str();
            if is_flap_hold(&current.check.reason) {
                flap_holds += 1;
            }
            let seen_at = current.seen;
            // Safety: a never-down endpoint's critical verdict is judged here (and not again
            // as a transition without cause).
            let unsafe_verdict = status == "critical" && never_down;
            if unsafe_verdict {
                let (from, to) = window(seen_at, base_critical, &fault_spans);
                match stall_in(from, to) {
                    Some((start, end)) => excused.push(format!(
                        "{key} critical at revision {} ({}): endpoints stalled {:.2}–{:.2}s",
                        current.revision,
                        endpoint.describe_faults(),
                        seconds(start),
                        seconds(end)
                    )),
                    None => check.anomaly(
                        "safety",
                        format!(
                            "{key} ({}) committed critical at {}; window {:.2}–{:.2}s, faults in it: {}",
                            endpoint.describe_faults(),
                            describe(&current),
                            seconds(from),
                            seconds(to),
                            faults_between(faults, from, to)
                        ),
                    ),
                }
            }
            if status != before {
                changes.entry(name.as_str()).or_default().push(seen_at);
                *transitions
                    .entry(match status {
                        "passing" => "passing",
                        "warning" => "warning",
                        "critical" => "critical",
                        _ => "other",
                    })
                    .or_default() += 1;
                let (base, needs) = match status {
                    "critical" => (base_critical, "down"),
                    "passing" => (base_passing, "up"),
                    _ => (base_warning, "down or cut off"),
                };
                let (from, to) = window(seen_at, base, &fault_spans);
                let caused = match status {
                    "critical" => endpoint.was(false, from, to),
                    "passing" => endpoint.was(true, from, to),
                    "warning" => {
                        is_flap_hold(&current.check.reason)
                            || endpoint.was(false, from, to)
                            || endpoint.bad_path_in(from, to).is_some()
                    }
                    _ => false,
                };
                if status == "warning" && never_down {
                    warnings_never_down += 1;
                }
                if status == "critical" {
                    if let Some(since) = endpoint.down_since(seen_at) {
                        detection_lags.push(seconds(seen_at.saturating_sub(since)));
                    }
                }
                if !caused && !unsafe_verdict {
                    match stall_in(from, to) {
                        Some((start, end)) => excused.push(format!(
                            "{key} {before} → {status} at revision {}: endpoints stalled {:.2}–{:.2}s",
                            current.revision,
                            seconds(start),
                            seconds(end)
                        )),
                        None => check.anomaly(
                            "cause",
                            format!(
                                "{key} turned {before} → {status} at {}, but was never {needs} in \
                                 its window {:.2}–{:.2}s (modes: {}); faults in the window: {}",
                                describe(&current),
                                seconds(from),
                                seconds(to),
                                describe_modes(endpoint, from, to),
                                faults_between(faults, from, to)
                            ),
                        ),
                    }
                }
            }
            previous = Some(current);
        }
    }

    // Liveness after the heal.
    let mut converged: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut final_holds = 0usize;
    let mut final_holds_without_reason: Vec<String> = Vec::new();
    match settle {
        None => check.unknown("no settle record (the run ended before the heal)".to_string()),
        Some(settle) => {
            let polls: Vec<&CompleteOp> = ops
                .iter()
                .filter(|op| {
                    op.invoke.f == Function::GetService
                        && op.invoke.key.as_deref() == Some(SERVICE)
                        && op.outcome == OpType::Ok
                        && op.invoke.time >= settle
                })
                .collect();
            if polls.is_empty() {
                check.unknown(format!(
                    "no successful read of {SERVICE} after settling at {:.2}s",
                    seconds(settle)
                ));
            }
            let bound = u64::try_from(LIVENESS_BOUND.as_nanos()).unwrap_or(u64::MAX);
            for (name, endpoint) in &endpoints {
                let key = format!("{SERVICE}/{name}");
                let up = endpoint.mode_at(settle).is_up();
                let state_in = |op: &CompleteOp| -> Option<CheckRecord> {
                    op.completion
                        .instances
                        .as_ref()?
                        .iter()
                        .find(|instance| instance.id == *name)?
                        .checks
                        .iter()
                        .find(|check| check.id == CHECK_ID)
                        .cloned()
                };
                let changed = changes.get(name.as_str()).map_or(&[][..], Vec::as_slice);
                let fine = |op: &&CompleteOp| {
                    state_in(op).is_some_and(|state| {
                        settled(up, &state)
                            || (state.status == "warning"
                                && hold_possible(changed, op.completion.time))
                    })
                };
                let first_settled = polls
                    .iter()
                    .rposition(|op| !fine(op))
                    .map_or(0, |last_unsettled| last_unsettled + 1);
                let expected = if up { "passing" } else { "critical" };
                let Some(last) = polls.last() else { continue };
                let Some(first) = polls.get(first_settled) else {
                    let state = state_in(last);
                    check.anomaly(
                        "liveness",
                        format!(
                            "{key} is {} since {:.2}s, but its check is still {} (reason {:?}) at the \
                             last read (revision {}, n{}, {:.2}s, {:.1}s after the endpoints \
                             settled at {:.2}s; bound {:.0}s)",
                            if up { "up" } else { "down" },
                            seconds(endpoint.flips.last().map_or(endpoint.registered, |f| f.0)),
                            state.as_ref().map_or("absent", |state| state.status.as_str()),
                            state.as_ref().map(|state| state.reason.clone()).unwrap_or_default(),
                            last.completion.revision.unwrap_or(0),
                            last.invoke.node + 1,
                            seconds(last.completion.time),
                            seconds(last.completion.time.saturating_sub(settle)),
                            seconds(settle),
                            LIVENESS_BOUND.as_secs_f64()
                        ),
                    );
                    converged.insert(
                        name.clone(),
                        json!({"expected": expected, "converged": null}),
                    );
                    continue;
                };
                let after = first.completion.time.saturating_sub(settle);
                // Reported: the state at the last read (the earlier settled ones may be a hold).
                let state = state_in(last).unwrap_or_default();
                if state.status == "warning" {
                    final_holds += 1;
                    if !is_flap_hold(&state.reason) {
                        final_holds_without_reason.push(format!(
                            "{key}: warning with reason {:?} at revision {} ({} status changes \
                             seen, the last at {:.2}s)",
                            state.reason,
                            last.completion.revision.unwrap_or(0),
                            changed.len(),
                            changed.last().map_or(0.0, |at| seconds(*at))
                        ));
                    }
                }
                if after > bound {
                    check.anomaly(
                        "liveness",
                        format!(
                            "{key} showed {} for good only {:.1}s after the endpoints settled at \
                             {:.2}s (read at revision {}, bound {:.0}s)",
                            state_in(first).unwrap_or_default().status,
                            seconds(after),
                            seconds(settle),
                            first.completion.revision.unwrap_or(0),
                            LIVENESS_BOUND.as_secs_f64()
                        ),
                    );
                }
                converged.insert(
                    name.clone(),
                    json!({
                        "expected": expected,
                        "status": state.status,
                        "reason": state.reason,
                        "after_seconds": (seconds(after) * 100.0).round() / 100.0,
                    }),
                );
            }
        }
    }

    let flips = |up: bool| {
        endpoints
            .values()
            .flat_map(|endpoint| endpoint.flips.iter())
            .filter(|(_, mode)| mode.is_up() == up)
            .count()
    };
    let bad_path_errors: usize = endpoints.values().map(|e| e.bad_path_errors).sum();
    if bad_path_errors > 0 {
        check.unknown(format!(
            "{bad_path_errors} bad-path changes failed (nft); see health.jsonl"
        ));
    }
    detection_lags.sort_by(f64::total_cmp);
    check.report.stats = json!({
        "endpoints": endpoints.len(),
        "flips_down": flips(false),
        "flips_up": flips(true),
        "bad_paths": endpoints.values().map(|e| e.bad_paths.len()).sum::<usize>(),
        "bad_paths_on_owner": bad_paths_on_owner,
        "probes_by_node": probes,
        "stalls": stalls.len(),
        "longest_stall_ms": stalls.iter().map(|(start, end)| (end - start) / MS).max(),
        "verdicts": verdicts,
        "transitions": transitions,
        "flap_hold_verdicts": flap_holds,
        "warnings_on_never_down": warnings_never_down,
        "detection_lag_seconds": {
            "count": detection_lags.len(),
            "median": detection_lags.get(detection_lags.len() / 2),
            "max": detection_lags.last(),
        },
        "excused_by_stall": excused,
        "settle_seconds": settle.map(seconds),
        "liveness": converged,
        "final_flap_holds": final_holds,
        "final_flap_holds_without_reason": final_holds_without_reason,
        "anomalies_by_check": check.counts,
    });
    if verdicts == 0 {
        check.unknown("no verdicts in the truth".to_string());
    }
    check.report
}

fn describe_modes(endpoint: &Endpoint, from: u64, to: u64) -> String {
    let mut text = format!("{:?} at {:.2}s", endpoint.mode_at(from), seconds(from));
    for (at, mode) in endpoint
        .flips
        .iter()
        .filter(|(at, _)| *at > from && *at <= to)
    {
        text.push_str(&format!(", {mode:?} at {:.2}s", seconds(*at)));
    }
    text
}

fn faults_between(faults: &[FaultRecord], from: u64, to: u64) -> String {
    let names: Vec<String> = faults
        .iter()
        .filter(|fault| {
            let (start, end) = fault_span(fault);
            start <= to && end.saturating_add(SLACK) >= from
        })
        .map(|fault| {
            format!(
                "{} {:.1}–{}",
                fault.name,
                fault.start,
                fault
                    .end
                    .map_or("end".to_string(), |end| format!("{end:.1}s"))
            )
        })
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::watch::{Ev, Kv};
    use crate::checker::Validity;
    use crate::history::{complete_ops, test_support::Builder, InstanceRecord};
    use crate::nemesis::Fault;

    const S: u64 = 1_000_000_000;

    /// A health instance record at `revision` with value 1 and the check in `status`.
    fn kv(name: &str, revision: i64, create: i64, version: i64, status: &str, reason: &str) -> Kv {
        Kv {
            key: format!("{PREFIX}{SERVICE}/{name}"),
            value: json!({
                "service": SERVICE, "id": name, "address": "10.0.0.1", "port": 4000,
                "metadata": {VALUE_KEY: "1"},
                "checks": [{"id": CHECK_ID, "http": {"url": "http://10.0.0.1:4000/health"},
                    "state": {"status": status, "reason": reason, "output": "HTTP 503",
                              "since_unix_ms": revision}}]
            })
            .to_string(),
            create_revision: create,
            mod_revision: revision,
            version,
        }
    }

    /// The truth: `name` registered at revision 2 (critical), then each `(seconds, status,
    /// reason)` as a verdict at revisions 3, 4, …, seen at those times.
    fn truth(name: &str, verdicts: &[(u64, &str, &str)]) -> Vec<WatchEntry> {
        let mut create = WatchEntry::new(EntryKind::Create, 0, 0, 0);
        create.key = PREFIX.to_string();
        create.prefix = true;
        create.start_revision = 1;
        create.prev_kv = true;
        let mut created = WatchEntry::new(EntryKind::Response, 0, 0, 0);
        created.created = true;
        created.revision = 1;
        let mut entries = vec![create, created];
        let mut previous = kv(name, 2, 2, 1, "critical", "");
        let mut registration = WatchEntry::new(EntryKind::Response, 0, 0, 0);
        registration.revision = 2;
        registration.events = vec![Ev {
            delete: false,
            kv: previous.clone(),
            prev: None,
        }];
        entries.push(registration);
        for (index, (at, status, reason)) in verdicts.iter().enumerate() {
            let revision = 3 + index as i64;
            let next = kv(name, revision, 2, revision - 1, status, reason);
            let mut response = WatchEntry::new(EntryKind::Response, 0, 0, 0);
            response.time = at * S;
            response.revision = revision;
            response.events = vec![Ev {
                delete: false,
                kv: next.clone(),
                prev: Some(previous),
            }];
            previous = next;
            entries.push(response);
        }
        entries
    }

    fn endpoint(name: &str, role: Role) -> HealthEntry {
        HealthEntry::Endpoint {
            time: 0,
            endpoint: name.to_string(),
            role,
            port: 4000,
            failures_before_warning: 1,
        }
    }

    fn flip(at: u64, name: &str, mode: Mode) -> HealthEntry {
        HealthEntry::Flip {
            time: at * S,
            endpoint: name.to_string(),
            mode,
        }
    }

    /// Final reads after settling at `settle` s: `(seconds, status, reason)` of `name`.
    fn polls(name: &str, reads: &[(u64, &str, &str)]) -> Vec<CompleteOp> {
        let mut b = Builder::default();
        for (index, (at, status, reason)) in reads.iter().enumerate() {
            let process = 1_000_000_000 + index as u64;
            b.invoke(process, at * S, Function::GetService, SERVICE);
            let done = b.complete(process, at * S + S / 10, OpType::Ok);
            done.revision = Some(9);
            done.instances = Some(vec![InstanceRecord {
                id: name.to_string(),
                checks: vec![CheckRecord {
                    id: CHECK_ID.to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                    since_unix_ms: 1,
                }],
                ..Default::default()
            }]);
        }
        complete_ops(&b.ops).expect("well-formed history")
    }

    fn kill(start: f64, end: f64) -> FaultRecord {
        FaultRecord {
            fault: Fault::Kill {
                nodes: vec![0, 1, 2],
                target: "all".to_string(),
            },
            name: "kill-all".to_string(),
            start,
            end: Some(end),
            error: None,
            steps: Vec::new(),
        }
    }

    fn counts(report: &CheckReport, name: &str) -> u64 {
        report.stats["anomalies_by_check"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// A flipping endpoint: down at 10 s (critical seen at 14 s), up at 20 s (passing at 22 s),
    /// down at the end; the final reads show it critical.
    fn flipping_run() -> (Vec<WatchEntry>, Vec<HealthEntry>, Vec<CompleteOp>) {
        let truth = truth(
            "f0",
            &[
                (2, "passing", "2 successful probes in a row"),
                (11, "warning", "1 failed probe in a row"),
                (14, "critical", "3 failed probes in a row"),
                (22, "passing", "2 successful probes in a row"),
                (42, "critical", "3 failed probes in a row"),
            ],
        );
        let entries = vec![
            endpoint("f0", Role::Flipping),
            flip(10, "f0", Mode::Failing),
            flip(20, "f0", Mode::Up),
            flip(38, "f0", Mode::Hanging),
            HealthEntry::Settle { time: 45 * S },
        ];
        let ops = polls(
            "f0",
            &[
                (46, "critical", "3 failed probes in a row"),
                (47, "critical", ""),
            ],
        );
        (truth, entries, ops)
    }

    /// Re-checks a stored run: `HEALTH_RUN=<run dir> cargo test -p jepsen-tests --lib
    /// health::tests::recheck_stored -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs HEALTH_RUN"]
    fn recheck_stored() {
        use crate::history::{read_records, read_run};
        let dir = std::path::PathBuf::from(std::env::var("HEALTH_RUN").expect("HEALTH_RUN"));
        let (ops, _) = read_run(&dir).expect("history");
        let report = check(
            &ops,
            &read_records(&dir.join("watch.jsonl")).expect("watch.jsonl"),
            &read_records(&dir.join("health.jsonl")).expect("health.jsonl"),
            &read_records(&dir.join("nemesis.jsonl")).expect("nemesis.jsonl"),
        );
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }

    #[test]
    fn verdicts_that_follow_the_endpoint_are_valid() {
        let (truth, entries, ops) = flipping_run();
        let report = check(&ops, &truth, &entries, &[]);
        assert_eq!(report.validity, Validity::Valid, "{report:?}");
        assert_eq!(report.stats["verdicts"], 5);
        assert_eq!(report.stats["transitions"]["critical"], 2);
        assert_eq!(report.stats["detection_lag_seconds"]["max"], 4.0);
    }

    /// Negative control: an always-up endpoint (bad path from one node) turned critical.
    #[test]
    fn a_critical_verdict_on_an_endpoint_that_never_went_down_is_rejected() {
        let truth = truth(
            "b0",
            &[
                (2, "passing", ""),
                (12, "warning", "1 failed probe in a row"),
                (15, "critical", "3 failed probes in a row"),
            ],
        );
        let entries = vec![
            endpoint("b0", Role::BadPath),
            HealthEntry::BadPath {
                time: 10 * S,
                endpoint: "b0".to_string(),
                node: 1,
                on: true,
                owner: Some(1),
                error: None,
            },
            HealthEntry::Settle { time: 45 * S },
        ];
        let ops = polls("b0", &[(46, "passing", "")]);
        let report = check(&ops, &truth, &entries, &[]);
        assert_eq!(report.validity, Validity::Invalid, "{report:?}");
        assert_eq!(counts(&report, "safety"), 1, "{report:?}");
        assert!(
            report.anomalies[0].contains("jepsen-h/b0")
                && report.anomalies[0].contains("revision 5"),
            "{:?}",
            report.anomalies
        );
        // The warning the bad path causes is fine (and counted).
        assert_eq!(report.stats["warnings_on_never_down"], 1);
        // A stall of the endpoints' thread in the window excuses it.
        let mut stalled = entries.clone();
        stalled.push(HealthEntry::Stall {
            time: 13 * S,
            millis: 900,
        });
        let report = check(&ops, &truth_entries_again("b0"), &stalled, &[]);
        assert_eq!(counts(&report, "safety"), 0, "{report:?}");
        assert_eq!(
            report.stats["excused_by_stall"].as_array().map(Vec::len),
            Some(1)
        );
    }

    fn truth_entries_again(name: &str) -> Vec<WatchEntry> {
        truth(
            name,
            &[
                (2, "passing", ""),
                (12, "warning", "1 failed probe in a row"),
                (15, "critical", "3 failed probes in a row"),
            ],
        )
    }

    /// Negative control: critical while the endpoint was up for the whole window.
    #[test]
    fn a_critical_verdict_without_a_down_endpoint_is_rejected() {
        let (truth, mut entries, ops) = flipping_run();
        // The second critical is seen at 42 s: drop the flip down at 38 s, so the endpoint was
        // up from 20 s on.
        entries.remove(3);
        let report = check(&ops, &truth, &entries, &[]);
        assert_eq!(counts(&report, "cause"), 1, "{report:?}");
        assert!(
            report
                .anomalies
                .iter()
                .any(|a| a.contains("passing → critical")),
            "{report:?}"
        );
    }

    /// A fault in force stretches the window: the verdict may have waited for the heal.
    #[test]
    fn a_fault_widens_the_window_of_a_late_verdict() {
        let truth = truth(
            "f0",
            &[
                (2, "passing", ""),
                (30, "critical", "3 failed probes in a row"),
            ],
        );
        let entries = vec![
            endpoint("f0", Role::Flipping),
            flip(10, "f0", Mode::Failing),
            flip(14, "f0", Mode::Up),
            HealthEntry::Settle { time: 45 * S },
        ];
        let ops = polls("f0", &[(46, "passing", "")]);
        let report = check(&ops, &truth, &entries, &[]);
        assert_eq!(counts(&report, "cause"), 1, "{report:?}");
        // All members killed from 13 s to 28 s: the verdict reached at 13 s committed after.
        let report = check(&ops, &truth, &entries, &[kill(13.0, 28.0)]);
        assert_eq!(counts(&report, "cause"), 0, "{report:?}");
    }

    /// Negative control: passing while the endpoint was down for the whole window.
    #[test]
    fn a_passing_verdict_while_down_is_rejected() {
        let truth = truth(
            "d0",
            &[
                (2, "passing", ""),
                (14, "critical", ""),
                (30, "passing", ""),
            ],
        );
        let entries = vec![
            endpoint("d0", Role::DownOnce),
            flip(10, "d0", Mode::Failing),
            HealthEntry::Settle { time: 45 * S },
        ];
        let ops = polls("d0", &[(46, "critical", "")]);
        let report = check(&ops, &truth, &entries, &[]);
        assert_eq!(counts(&report, "cause"), 1, "{report:?}");
    }

    /// Liveness: a down endpoint still passing at the end, or settling too late, is rejected; a
    /// flap-damped warning is accepted.
    #[test]
    fn liveness_after_the_heal() {
        let (truth, entries, _) = flipping_run();
        let stuck = polls("f0", &[(46, "passing", ""), (60, "passing", "")]);
        let report = check(&stuck, &truth, &entries, &[]);
        assert_eq!(counts(&report, "liveness"), 1, "{report:?}");
        assert!(report.anomalies[0].contains("still passing"), "{report:?}");
        let late = polls("f0", &[(46, "passing", ""), (70, "critical", "")]);
        let report = check(&late, &truth, &entries, &[]);
        assert_eq!(counts(&report, "liveness"), 1, "{report:?}");
        assert!(report.anomalies[0].contains("only"), "{report:?}");
        let held = polls(
            "f0",
            &[(
                46,
                "warning",
                "flapping: 6 transitions in 60 s; held as warning until stable for 60 s",
            )],
        );
        let report = check(&held, &truth, &entries, &[]);
        assert_eq!(report.validity, Validity::Valid, "{report:?}");
        assert_eq!(report.stats["final_flap_holds"], 1);
        // Settled, then unsettled again: not converged.
        let flapping = polls("f0", &[(46, "critical", ""), (47, "passing", "")]);
        let report = check(&flapping, &truth, &entries, &[]);
        assert_eq!(counts(&report, "liveness"), 1, "{report:?}");
    }

    /// A warning left by a bad path after more than 5 status changes in a minute may be a
    /// flap hold whose reason beacond never wrote: accepted (and reported); with fewer changes it
    /// cannot be one, and a check still warning after the bound is rejected.
    #[test]
    fn an_unlabelled_flap_hold_is_accepted_only_after_enough_changes() {
        let bad_path = |on: u64, off: u64| {
            [true, false].map(|on_now| HealthEntry::BadPath {
                time: if on_now { on } else { off } * S,
                endpoint: "b0".to_string(),
                node: 0,
                on: on_now,
                owner: Some(0),
                error: None,
            })
        };
        let mut entries = vec![endpoint("b0", Role::BadPath)];
        for (on, off) in [(4, 7), (10, 13), (16, 18)] {
            entries.extend(bad_path(on, off));
        }
        entries.push(HealthEntry::Settle { time: 45 * S });
        let reason = "1 failed probe in a row (failures_before_warning 1)";
        let ops = polls("b0", &[(46, "warning", reason), (62, "warning", reason)]);
        let flapping = truth(
            "b0",
            &[
                (2, "passing", ""),
                (5, "warning", reason),
                (8, "passing", ""),
                (11, "warning", reason),
                (14, "passing", ""),
                (17, "warning", reason),
            ],
        );
        let report = check(&ops, &flapping, &entries, &[]);
        assert_eq!(report.validity, Validity::Valid, "{report:?}");
        assert_eq!(
            report.stats["final_flap_holds_without_reason"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let calm = truth("b0", &[(2, "passing", ""), (17, "warning", reason)]);
        let report = check(&ops, &calm, &entries, &[]);
        assert_eq!(counts(&report, "liveness"), 1, "{report:?}");
    }

    #[test]
    fn windows_widen_over_faults_only() {
        let faults = [(10 * S, 20 * S)];
        assert_eq!(window(40 * S, 5 * S, &faults), (35 * S, 40 * S));
        assert_eq!(window(24 * S, 5 * S, &faults), (5 * S, 24 * S));
        // Ended less than SLACK before the window: still widens.
        assert_eq!(window(28 * S, 5 * S, &faults), (5 * S, 28 * S));
    }
}
