//! The set checker: clients add unique elements (create-only puts) and read the whole set.
//!
//! - every acknowledged add is present in every final read (else: lost);
//! - nothing is present that was never added (else: unexpected);
//! - a read during the run contains every add acknowledged before the read started, and every
//!   element an earlier completed read already saw (elements are never removed), else: stale;
//! - all final reads (one per node, after heal) agree.

use std::collections::{BTreeSet, HashSet};

use super::{CheckReport, Validity};
use crate::history::{CompleteOp, Function, OpType};

fn sample(elements: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = elements.iter().take(10).map(u64::to_string).collect();
    let more = if elements.len() > 10 { ", …" } else { "" };
    format!("{{{}{more}}} ({})", shown.join(", "), elements.len())
}

/// Checks a set history. Reads invoked at or after `final_from` (ns) are the final reads.
/// The elements a whole-set read returned.
fn read_values(read: &CompleteOp) -> BTreeSet<u64> {
    read.completion
        .values
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

pub fn check(ops: &[CompleteOp], final_from: u64) -> CheckReport {
    let mut report = CheckReport::new("set");
    let adds: Vec<&CompleteOp> = ops
        .iter()
        .filter(|op| op.invoke.f == Function::Add)
        .collect();
    let attempted: HashSet<u64> = adds.iter().filter_map(|op| op.invoke.value).collect();
    let acknowledged: BTreeSet<u64> = adds
        .iter()
        .filter(|op| op.outcome == OpType::Ok)
        .filter_map(|op| op.invoke.value)
        .collect();
    let reads: Vec<&CompleteOp> = ops
        .iter()
        .filter(|op| op.invoke.f == Function::ReadSet && op.outcome == OpType::Ok)
        .collect();
    let (final_reads, run_reads): (Vec<&CompleteOp>, Vec<&CompleteOp>) = reads
        .into_iter()
        .partition(|op| op.invoke.time >= final_from);

    // Reads during the run, in invocation order.
    let mut acked_by_time: Vec<(u64, u64)> = adds
        .iter()
        .filter(|op| op.outcome == OpType::Ok)
        .filter_map(|op| Some((op.completion.time, op.invoke.value?)))
        .collect();
    acked_by_time.sort_unstable();
    let mut seen_by_time: Vec<(u64, &CompleteOp)> = run_reads
        .iter()
        .map(|op| (op.completion.time, *op))
        .collect();
    seen_by_time.sort_by_key(|(time, _)| *time);
    let mut stale_reads = 0usize;
    for read in &run_reads {
        let got = read_values(read);
        let must: BTreeSet<u64> = acked_by_time
            .iter()
            .take_while(|(time, _)| *time < read.invoke.time)
            .map(|(_, element)| *element)
            .collect();
        let mut missing: BTreeSet<u64> = must.difference(&got).copied().collect();
        for (_, earlier) in seen_by_time
            .iter()
            .take_while(|(time, _)| *time < read.invoke.time)
        {
            for element in earlier.completion.values.iter().flatten() {
                if !got.contains(element) {
                    missing.insert(*element);
                }
            }
        }
        if !missing.is_empty() {
            stale_reads += 1;
            report.anomaly(format!(
                "stale read: p{} on n{} at {:.3}s misses {} added or seen before it started",
                read.invoke.process,
                read.invoke.node + 1,
                read.invoke.time as f64 / 1e9,
                sample(&missing)
            ));
        }
        let unexpected: BTreeSet<u64> = got
            .iter()
            .filter(|element| !attempted.contains(element))
            .copied()
            .collect();
        if !unexpected.is_empty() {
            report.anomaly(format!("unexpected elements read: {}", sample(&unexpected)));
        }
    }

    // Final reads.
    let mut lost_total = BTreeSet::new();
    let mut recovered = 0usize;
    let mut first_final: Option<(usize, BTreeSet<u64>)> = None;
    for read in &final_reads {
        let got = read_values(read);
        let lost: BTreeSet<u64> = acknowledged.difference(&got).copied().collect();
        if !lost.is_empty() {
            report.anomaly(format!(
                "final read on n{} lost acknowledged adds: {}",
                read.invoke.node + 1,
                sample(&lost)
            ));
            lost_total.extend(lost);
        }
        let unexpected: BTreeSet<u64> = got
            .iter()
            .filter(|element| !attempted.contains(element))
            .copied()
            .collect();
        if !unexpected.is_empty() {
            report.anomaly(format!(
                "final read on n{} has elements never added: {}",
                read.invoke.node + 1,
                sample(&unexpected)
            ));
        }
        match &first_final {
            None => {
                recovered = got.difference(&acknowledged).count();
                first_final = Some((read.invoke.node, got));
            }
            Some((node, first)) if *first != got => {
                report.anomaly(format!(
                    "final reads disagree: n{} has {} elements, n{} has {}",
                    node + 1,
                    first.len(),
                    read.invoke.node + 1,
                    got.len()
                ));
            }
            Some(_) => {}
        }
    }
    if final_reads.is_empty() && report.validity == Validity::Valid {
        report.unknown("no final read completed".to_string());
    }
    report.stats = serde_json::json!({
        "attempted": attempted.len(),
        "acknowledged": acknowledged.len(),
        "info_adds_recovered": recovered,
        "lost": lost_total.len(),
        "reads_during_run": run_reads.len(),
        "stale_reads": stale_reads,
        "final_reads": final_reads.len(),
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::complete_ops;
    use crate::history::test_support::Builder;

    fn add(b: &mut Builder, process: u64, from: u64, to: u64, element: u64, outcome: OpType) {
        b.invoke(process, from, Function::Add, "s").value = Some(element);
        b.complete(process, to, outcome);
    }

    fn read(b: &mut Builder, process: u64, from: u64, to: u64, elements: &[u64]) {
        b.invoke(process, from, Function::ReadSet, "s");
        b.complete(process, to, OpType::Ok).values = Some(elements.to_vec());
    }

    fn run(b: &Builder, final_from: u64) -> CheckReport {
        check(&complete_ops(&b.ops).expect("well-formed"), final_from)
    }

    #[test]
    fn complete_history_passes() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Ok);
        add(&mut b, 2, 5, 15, 2, OpType::Info);
        read(&mut b, 3, 20, 30, &[1]);
        read(&mut b, 3, 100, 110, &[1, 2]);
        read(&mut b, 4, 100, 110, &[1, 2]);
        let report = run(&b, 100);
        assert_eq!(report.validity, Validity::Valid, "{:?}", report.anomalies);
        assert_eq!(report.stats["info_adds_recovered"], 1);
    }

    /// Negative control: an acknowledged add missing at the end.
    #[test]
    fn lost_add_is_caught() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Ok);
        add(&mut b, 1, 11, 20, 2, OpType::Ok);
        read(&mut b, 3, 100, 110, &[1]);
        let report = run(&b, 100);
        assert_eq!(report.validity, Validity::Invalid);
        assert!(report.anomalies[0].contains("lost"));
    }

    #[test]
    fn unexpected_element_is_caught() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Ok);
        read(&mut b, 3, 100, 110, &[1, 9]);
        assert_eq!(run(&b, 100).validity, Validity::Invalid);
    }

    /// Negative control: a read during the run that misses an add acknowledged before it began,
    /// or an element an earlier read already saw.
    #[test]
    fn stale_reads_are_caught() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Ok);
        read(&mut b, 3, 20, 30, &[]);
        assert_eq!(run(&b, 100).validity, Validity::Invalid);

        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Info);
        read(&mut b, 3, 20, 30, &[1]);
        read(&mut b, 3, 40, 50, &[]);
        let report = run(&b, 100);
        assert_eq!(report.validity, Validity::Invalid);
    }

    #[test]
    fn diverging_final_reads_are_caught() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Info);
        read(&mut b, 3, 100, 110, &[1]);
        read(&mut b, 4, 100, 110, &[]);
        assert_eq!(run(&b, 100).validity, Validity::Invalid);
    }

    #[test]
    fn no_final_read_is_unknown() {
        let mut b = Builder::default();
        add(&mut b, 1, 0, 10, 1, OpType::Ok);
        assert_eq!(run(&b, 100).validity, Validity::Unknown);
    }
}
