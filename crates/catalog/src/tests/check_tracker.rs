use beacon_proto::beacon::v1::{Check, CheckState, HealthStatus};

use super::{check_in, http_check};
use crate::{CheckTracker, FlapPolicy, ProbeOutcome, Thresholds, Verdict};
use HealthStatus::{Critical, Passing, Unspecified, Warning};

const SECOND: u64 = 1_000;

fn thresholds(
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
) -> Thresholds {
    Thresholds {
        success_before_passing,
        failures_before_warning,
        failures_before_critical,
    }
}

/// `P`, `W` or `C`: a probe answering passing, warning or critical.
fn outcome(probe: char) -> ProbeOutcome {
    match probe {
        'P' => ProbeOutcome::Passing("HTTP 200 OK".into()),
        'W' => ProbeOutcome::Warning("HTTP 429 Too Many Requests".into()),
        'C' => ProbeOutcome::Critical("connection refused".into()),
        other => panic!("unknown probe {other:?}"),
    }
}

fn letter(status: HealthStatus) -> char {
    match status {
        Passing => 'P',
        Warning => 'W',
        Critical => 'C',
        Unspecified => '?',
    }
}

/// One probe at `now_ms`; a verdict is committed at once, as when its proposal succeeds.
fn step(tracker: &mut CheckTracker, probe: char, now_ms: u64) -> Option<Verdict> {
    let verdict = tracker.observe(outcome(probe), now_ms);
    if let Some(verdict) = &verdict {
        tracker.committed(verdict.status, now_ms);
        tracker.committed_reason(&verdict.reason);
    }
    verdict
}

/// Runs `probes` 10 s apart without flap damping, committing every verdict; one character per
/// probe: the verdict's status, or `.` for none.
fn run(thresholds: Thresholds, committed: HealthStatus, probes: &str) -> String {
    let mut tracker = CheckTracker::new(thresholds, committed, FlapPolicy::DISABLED);
    probes
        .chars()
        .zip(0..)
        .map(|(probe, index)| {
            step(&mut tracker, probe, index * 10 * SECOND)
                .map_or('.', |verdict| letter(verdict.status))
        })
        .collect()
}

#[test]
fn thresholds_turn_probe_runs_into_transitions() {
    // (success_before_passing, failures_before_warning, failures_before_critical), committed
    // status, probes, verdicts.
    type Case<'a> = ((u32, u32, u32), HealthStatus, &'a str, &'a str);
    let cases: &[Case] = &[
        // Steady probes cost nothing.
        ((1, 1, 3), Passing, "PPPPP", "....."),
        ((1, 1, 3), Critical, "CCCCC", "....."),
        ((1, 1, 3), Warning, "WWWWW", "....."),
        // Beacon's defaults: one success passes; warning at the first failure, critical at the
        // third.
        ((1, 1, 3), Critical, "P", "P"),
        ((1, 1, 3), Passing, "CCCC", "W.C."),
        // Consul's default failures_before_warning (= failures_before_critical).
        ((1, 3, 3), Passing, "CCC", "..C"),
        ((1, 2, 4), Passing, "CCCCP", ".W.CP"),
        // success_before_passing counts consecutive successes; a failure restarts the count.
        ((3, 1, 3), Critical, "PPPP", "..P."),
        ((2, 2, 3), Critical, "PCPCPP", ".....P"),
        // A success restarts the failure count.
        ((1, 2, 3), Passing, "CPCCP", "...WP"),
        ((1, 1, 2), Passing, "CPCPCP", "WPWPWP"),
        // A warning answer counts as a success and leads to warning.
        ((1, 1, 3), Passing, "WWP", "W.P"),
        ((2, 1, 3), Critical, "PWW", ".W."),
        ((2, 1, 3), Passing, "PPW", "..W"),
        ((1, 2, 3), Warning, "CCC", "..C"),
        // Failures never make a check better: critical stays critical below
        // failures_before_critical, even when successes reset the count.
        ((3, 1, 3), Critical, "PPCPPP", ".....P"),
        ((1, 1, 3), Critical, "CC", ".."),
        // Unspecified reads as critical.
        ((1, 1, 3), Unspecified, "CP", ".P"),
    ];
    for &((passing, warning, critical), committed, probes, expected) in cases {
        assert_eq!(
            run(thresholds(passing, warning, critical), committed, probes),
            expected,
            "thresholds ({passing}, {warning}, {critical}) from {committed:?}, probes {probes}"
        );
    }
}

#[test]
fn a_verdict_carries_the_last_output_and_the_reason() {
    let mut tracker = CheckTracker::new(thresholds(2, 1, 3), Critical, FlapPolicy::DISABLED);
    assert_eq!(step(&mut tracker, 'P', 0), None);
    assert_eq!(
        step(&mut tracker, 'P', 10 * SECOND),
        Some(Verdict {
            status: Passing,
            output: "HTTP 200 OK".into(),
            reason: "2 successful probes in a row (success_before_passing 2)".into(),
        })
    );
    // (probe, the verdict's status and reason)
    let cases = [
        (
            'W',
            Some((
                Warning,
                "3 successful probes in a row, the last answering with a warning \
                 (success_before_passing 2)",
            )),
        ),
        (
            'P',
            Some((
                Passing,
                "4 successful probes in a row (success_before_passing 2)",
            )),
        ),
        (
            'C',
            Some((
                Warning,
                "1 failed probe in a row (failures_before_warning 1)",
            )),
        ),
        ('C', None),
        (
            'C',
            Some((
                Critical,
                "3 failed probes in a row (failures_before_critical 3)",
            )),
        ),
    ];
    for (index, (probe, expected)) in (2..).zip(cases) {
        let verdict = step(&mut tracker, probe, index * 10 * SECOND);
        let expected = expected.map(|(status, reason)| Verdict {
            status,
            output: match outcome(probe) {
                ProbeOutcome::Passing(output)
                | ProbeOutcome::Warning(output)
                | ProbeOutcome::Critical(output) => output,
            },
            reason: reason.to_owned(),
        });
        assert_eq!(verdict, expected, "probe {index}");
    }
    let state = Verdict {
        status: Critical,
        output: "refused".into(),
        reason: "why".into(),
    }
    .into_state(1_700_000_000_000);
    assert_eq!(
        state,
        CheckState {
            status: Critical as i32,
            output: "refused".into(),
            since_unix_ms: 1_700_000_000_000,
            reason: "why".into(),
        }
    );
}

#[test]
fn an_uncommitted_verdict_is_proposed_again_at_the_next_probe() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 3), Passing, FlapPolicy::DISABLED);
    let first = tracker.observe(outcome('C'), 0).expect("warning proposed");
    assert_eq!(first.status, Warning);
    // The proposal was lost (or refused): nothing committed, so the next probe repeats it.
    let again = tracker
        .observe(outcome('C'), 10 * SECOND)
        .expect("proposed again");
    assert_eq!(again.status, Warning);
    tracker.committed(Warning, 11 * SECOND);
    assert_eq!(tracker.committed_status(), Warning);
    assert_eq!(
        tracker
            .observe(outcome('C'), 20 * SECOND)
            .map(|verdict| verdict.status),
        Some(Critical)
    );
}

#[test]
fn a_commit_by_someone_else_is_what_the_tracker_compares_with() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 3), Passing, FlapPolicy::DISABLED);
    assert_eq!(step(&mut tracker, 'P', 0), None);
    // Another member (an old owner) wrote critical: the probes disagree, so passing is proposed.
    tracker.committed(Critical, 5 * SECOND);
    assert_eq!(
        step(&mut tracker, 'P', 10 * SECOND).map(|verdict| verdict.status),
        Some(Passing)
    );
    assert_eq!(step(&mut tracker, 'P', 20 * SECOND), None);
}

#[test]
fn a_tracker_for_a_stored_check_starts_from_its_state() {
    let fresh = Check {
        failures_before_critical: 5,
        ..http_check("http://10.0.0.1/health")
    };
    let tracker = CheckTracker::for_check(&fresh, FlapPolicy::default());
    assert_eq!(
        tracker.committed_status(),
        Critical,
        "the default initial status"
    );
    assert_eq!(
        Thresholds::of(&fresh),
        thresholds(1, 1, 5),
        "zero thresholds mean the defaults"
    );
    let passing = CheckTracker::for_check(&check_in(Passing), FlapPolicy::default());
    assert_eq!(passing.committed_status(), Passing);
    assert_eq!(passing.implied_status(), Passing);
    assert_eq!(passing.hold_reason(), None);
}

fn flap_policy() -> FlapPolicy {
    FlapPolicy {
        max_transitions: 5,
        window_ms: 60 * SECOND,
        stable_ms: 60 * SECOND,
    }
}

/// Probes every 5 s from `start_ms`, one per character, committing every verdict; returns the
/// verdicts with their times.
fn probe_every_5_s(
    tracker: &mut CheckTracker,
    start_ms: u64,
    probes: &str,
) -> Vec<(u64, Option<Verdict>)> {
    probes
        .chars()
        .zip(0..)
        .map(|(probe, index)| {
            let now_ms = start_ms + index * 5 * SECOND;
            (now_ms, step(tracker, probe, now_ms))
        })
        .collect()
}

#[test]
fn a_flapping_check_is_held_as_warning_until_stable() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 1), Passing, flap_policy());
    // Six committed transitions in 25 s.
    let flips = probe_every_5_s(&mut tracker, 0, "CPCPCP");
    assert!(flips.iter().all(|(_, verdict)| verdict.is_some()));
    let reason = "flapping: 6 transitions in 60 s; held as warning until stable for 60 s";
    assert_eq!(tracker.hold_reason(), Some(reason));
    // The next probe proposes the hold, whatever it found.
    let hold = step(&mut tracker, 'C', 30 * SECOND).expect("hold proposed");
    assert_eq!(hold.status, Warning);
    assert_eq!(hold.reason, reason);
    assert_eq!(hold.output, "connection refused");
    // Passing from 35 s on: held until 60 s of stability, at 95 s.
    let stable = probe_every_5_s(&mut tracker, 35 * SECOND, &"P".repeat(13));
    for (now_ms, verdict) in &stable[..12] {
        assert_eq!(verdict, &None, "at {now_ms} ms");
    }
    let (released_at, release) = stable[12].clone();
    assert_eq!(released_at, 95 * SECOND);
    let release = release.expect("released");
    assert_eq!(release.status, Passing);
    assert!(
        release
            .reason
            .starts_with("stable for 60 s, released from the flapping hold; "),
        "{}",
        release.reason
    );
    assert_eq!(tracker.hold_reason(), None);
    // Counting starts afresh: one more flip is not flapping.
    assert_eq!(
        step(&mut tracker, 'C', 100 * SECOND).map(|verdict| verdict.status),
        Some(Critical)
    );
    assert_eq!(tracker.hold_reason(), None);
}

#[test]
fn a_check_that_keeps_flapping_stays_warning_and_never_turns_critical() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 1), Passing, flap_policy());
    probe_every_5_s(&mut tracker, 0, "CPCPCP");
    let verdicts = probe_every_5_s(&mut tracker, 30 * SECOND, &"CP".repeat(60));
    let proposed: Vec<HealthStatus> = verdicts
        .iter()
        .filter_map(|(_, verdict)| verdict.as_ref().map(|verdict| verdict.status))
        .collect();
    assert_eq!(proposed, [Warning], "only the hold itself is written");
    assert!(tracker.hold_reason().is_some());
    // Stable at critical: released to critical 60 s after the last change.
    let settled = probe_every_5_s(&mut tracker, 630 * SECOND, &"C".repeat(14));
    let released: Vec<(u64, HealthStatus)> = settled
        .iter()
        .filter_map(|(now_ms, verdict)| verdict.as_ref().map(|verdict| (*now_ms, verdict.status)))
        .collect();
    // The last change of the implied status was the critical probe at 630 s.
    assert_eq!(released, [(690 * SECOND, Critical)]);
}

#[test]
fn flapping_needs_more_than_max_transitions_within_the_window() {
    // (probe spacing, probes, held afterwards)
    let cases = [
        // Five transitions in 20 s: at the limit, not over it.
        (5 * SECOND, "CPCPC", false),
        (5 * SECOND, "CPCPCP", true),
        // Six transitions 15 s apart: never more than four within 60 s.
        (15 * SECOND, "CPCPCPCPCP", false),
        // Twelve seconds apart: five within 60 s (the one 60 s back has left the window).
        (12 * SECOND, "CPCPCPCPCP", false),
        (11 * SECOND, "CPCPCPCPCP", true),
    ];
    for (spacing_ms, probes, held) in cases {
        let mut tracker = CheckTracker::new(thresholds(1, 1, 1), Passing, flap_policy());
        for (probe, index) in probes.chars().zip(0..) {
            step(&mut tracker, probe, index * spacing_ms);
        }
        assert_eq!(
            tracker.hold_reason().is_some(),
            held,
            "{probes} every {spacing_ms} ms"
        );
    }
}

#[test]
fn a_hold_beginning_at_warning_writes_its_reason_once() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 1), Passing, flap_policy());
    // Six transitions, the last one to warning.
    let verdicts = probe_every_5_s(&mut tracker, 0, "CWCWCW");
    assert!(verdicts.iter().all(|(_, verdict)| verdict.is_some()));
    assert_eq!(tracker.committed_status(), Warning);
    let reason = tracker.hold_reason().expect("held").to_string();
    // The status stays warning, but the hold's reason is proposed (once committed, no more).
    let announced = step(&mut tracker, 'C', 30 * SECOND).expect("the hold's reason");
    assert_eq!((announced.status, announced.reason), (Warning, reason));
    assert_eq!(step(&mut tracker, 'P', 35 * SECOND), None);
    assert_eq!(step(&mut tracker, 'C', 40 * SECOND), None);
}

#[test]
fn disabled_damping_never_holds() {
    let mut tracker = CheckTracker::new(thresholds(1, 1, 1), Passing, FlapPolicy::DISABLED);
    let verdicts = probe_every_5_s(&mut tracker, 0, &"CP".repeat(50));
    assert!(verdicts.iter().all(|(_, verdict)| verdict.is_some()));
    assert_eq!(tracker.hold_reason(), None);
}
