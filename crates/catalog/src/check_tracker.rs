//! [`CheckTracker`]: the state machine the owning member runs in memory for one check. It turns
//! probe outcomes into proposed transitions ([`Verdict`]s) by Consul's thresholds, proposes
//! nothing while the status stays the same (a steady fleet costs no Raft traffic), and damps
//! flapping by holding a check at warning until it is stable. The rules are documented on
//! [`CheckTracker`].

use std::collections::VecDeque;

use beacon_proto::beacon::v1::{Check, CheckState, HealthStatus};

use crate::defaults::{
    failures_before_critical_of, failures_before_warning_of, initial_status_of,
    success_before_passing_of,
};

/// What one probe of a check found, with its output (e.g. `HTTP 200 OK`, `connection refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The endpoint answered as healthy.
    Passing(String),
    /// The endpoint answered, but with a warning (HTTP 429, a TTL report of warning): counted
    /// as a success, and the status it leads to is warning.
    Warning(String),
    /// The probe failed: no answer in time, a refused connection, an unhealthy answer.
    Critical(String),
}

/// A check's thresholds, with zero values already replaced by their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes before the check turns passing (or warning).
    pub success_before_passing: u32,
    /// Consecutive failures before the check turns warning.
    pub failures_before_warning: u32,
    /// Consecutive failures before the check turns critical.
    pub failures_before_critical: u32,
}

impl Thresholds {
    /// The thresholds of `check`, 0 meaning the defaults as in [`crate::normalize_instance`].
    pub fn of(check: &Check) -> Self {
        Thresholds {
            success_before_passing: success_before_passing_of(check),
            failures_before_warning: failures_before_warning_of(check),
            failures_before_critical: failures_before_critical_of(check),
        }
    }
}

/// When a check counts as flapping, and how long it must be stable to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    /// A check flaps when more than this many status changes were committed within the window.
    pub max_transitions: u32,
    /// The window the changes are counted over, in milliseconds.
    pub window_ms: u64,
    /// How long the probes' status must stay unchanged before a hold ends, in milliseconds.
    pub stable_ms: u64,
}

impl FlapPolicy {
    /// Never holds a check: no change is ever within an empty window.
    pub const DISABLED: FlapPolicy = FlapPolicy {
        max_transitions: u32::MAX,
        window_ms: 0,
        stable_ms: 0,
    };
}

impl Default for FlapPolicy {
    /// More than 5 changes in a minute flap; a minute of stability ends the hold.
    fn default() -> Self {
        FlapPolicy {
            max_transitions: 5,
            window_ms: 60_000,
            stable_ms: 60_000,
        }
    }
}

/// A proposed transition of a check: the status the owner should propose through Raft (after
/// the confirmer agrees, for critical), the last probe's output, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Passing, warning or critical; never unspecified.
    pub status: HealthStatus,
    /// The output of the probe that led to the verdict.
    pub output: String,
    /// Why, e.g. `3 failed probes in a row (failures_before_critical 3)`.
    pub reason: String,
}

impl Verdict {
    /// The check state recording this verdict, stamped with `since_unix_ms` (milliseconds since
    /// the Unix epoch).
    pub fn into_state(self, since_unix_ms: i64) -> CheckState {
        CheckState {
            status: self.status as i32,
            output: self.output,
            since_unix_ms,
            reason: self.reason,
        }
    }
}

/// The per-check state machine the owning member runs in memory. Times are milliseconds on any
/// clock that does not go backwards (the owner's monotonic clock will do), passed in by the
/// caller.
///
/// # Thresholds
///
/// As Consul documents `success_before_passing`, `failures_before_warning` and
/// `failures_before_critical` (and implements them in `agent/checks/check.go`,
/// `StatusHandler`): a passing or warning outcome adds to a run of consecutive successes and
/// ends any run of failures; a critical outcome does the opposite. When the successes reach
/// `success_before_passing` the check takes the outcome's status (passing, or warning for a
/// probe that answered with a warning, such as HTTP 429). When the failures reach
/// `failures_before_critical` it turns critical, else when they reach `failures_before_warning`
/// it turns warning. Below every threshold the status stays what it was.
///
/// Two departures from Consul's code, both so that fewer probes than the thresholds ask for never
/// change a status: runs start from zero (Consul starts its counters at the thresholds), so a
/// member that has just taken a check over must see the thresholds' worth of probes itself; and
/// failures never make a check better: a critical check whose failures reach only
/// `failures_before_warning` stays critical (in Consul it turns warning when successes too few
/// for `success_before_passing` had reset its failure count, and with fresh counters every newly
/// registered, still critical check would).
///
/// # Verdicts and commits
///
/// The tracker compares the status it wants (the thresholds' status, or warning while held for
/// flapping) with the status the owner last saw committed. While they differ, every probe
/// yields the verdict again, so a proposal that was lost, refused by the confirmer or beaten
/// by a concurrent change is retried at the next interval. The owner reports what actually got
/// committed with [`CheckTracker::committed`], whoever wrote it.
///
/// # Flap damping
///
/// Committed status changes are counted over the last [`FlapPolicy::window_ms`]. When one makes
/// them exceed [`FlapPolicy::max_transitions`], the check is held at warning: warning instances
/// stay in discovery, and no further critical verdict takes them out while the check flaps. The
/// hold ends, and the check takes the status its probes imply, once that status has not changed
/// for [`FlapPolicy::stable_ms`] (counted from the start of the hold at the earliest). Changes
/// committed during a hold are not counted, and counting starts afresh after it.
#[derive(Debug, Clone)]
pub struct CheckTracker {
    thresholds: Thresholds,
    flap_policy: FlapPolicy,
    /// The status last reported committed.
    committed: HealthStatus,
    /// The status the thresholds imply, before damping, and why.
    implied: HealthStatus,
    implied_reason: String,
    /// When `implied` last changed (0 before any change).
    implied_since_ms: u64,
    successes: u32,
    failures: u32,
    last_output: String,
    /// Times of the committed changes within the flap window, oldest first.
    transitions: VecDeque<u64>,
    hold: Option<Hold>,
    /// The reason last reported committed with the status: a hold that begins while the check
    /// is already warning is proposed again, so its reason becomes visible.
    committed_reason: String,
}

/// A flap hold: the check is proposed as warning until its probes are stable.
#[derive(Debug, Clone)]
struct Hold {
    since_ms: u64,
    reason: String,
}

impl CheckTracker {
    /// A tracker for a check with `thresholds` whose committed status is `committed`
    /// (unspecified counts as critical, as in [`crate::health_of`]). No probe has been seen, no
    /// change counted.
    pub fn new(thresholds: Thresholds, committed: HealthStatus, flap_policy: FlapPolicy) -> Self {
        let committed = known(committed);
        CheckTracker {
            thresholds,
            flap_policy,
            committed,
            implied: committed,
            implied_reason: String::new(),
            implied_since_ms: 0,
            successes: 0,
            failures: 0,
            last_output: String::new(),
            transitions: VecDeque::new(),
            hold: None,
            committed_reason: String::new(),
        }
    }

    /// A tracker for `check` as stored: its thresholds, and its state's status as the committed
    /// one (its initial status when it has no state).
    pub fn for_check(check: &Check, flap_policy: FlapPolicy) -> Self {
        let committed = check
            .state
            .as_ref()
            .map_or_else(|| initial_status_of(check), CheckState::status);
        let mut tracker = Self::new(Thresholds::of(check), committed, flap_policy);
        if let Some(state) = &check.state {
            tracker.committed_reason = state.reason.clone();
        }
        tracker
    }

    /// Takes one probe's outcome at `now_ms` and returns the transition to propose, if the
    /// status the tracker wants differs from the committed one. `None` means there is nothing to
    /// write.
    pub fn observe(&mut self, outcome: ProbeOutcome, now_ms: u64) -> Option<Verdict> {
        let thresholds = self.thresholds;
        let (implied, reason) = match &outcome {
            ProbeOutcome::Passing(_) | ProbeOutcome::Warning(_) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                let status = match outcome {
                    ProbeOutcome::Warning(_) => HealthStatus::Warning,
                    _ => HealthStatus::Passing,
                };
                if self.successes < thresholds.success_before_passing {
                    (None, String::new())
                } else if status == HealthStatus::Warning {
                    let reason = format!(
                        "{} in a row, the last answering with a warning \
                         (success_before_passing {})",
                        probes(self.successes, "successful"),
                        thresholds.success_before_passing
                    );
                    (Some(status), reason)
                } else {
                    let reason = format!(
                        "{} in a row (success_before_passing {})",
                        probes(self.successes, "successful"),
                        thresholds.success_before_passing
                    );
                    (Some(status), reason)
                }
            }
            ProbeOutcome::Critical(_) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                let failed = probes(self.failures, "failed");
                if self.failures >= thresholds.failures_before_critical {
                    let reason = format!(
                        "{failed} in a row (failures_before_critical {})",
                        thresholds.failures_before_critical
                    );
                    (Some(HealthStatus::Critical), reason)
                } else if self.failures >= thresholds.failures_before_warning
                    && self.implied != HealthStatus::Critical
                {
                    let reason = format!(
                        "{failed} in a row (failures_before_warning {})",
                        thresholds.failures_before_warning
                    );
                    (Some(HealthStatus::Warning), reason)
                } else {
                    (None, String::new())
                }
            }
        };
        self.last_output = match outcome {
            ProbeOutcome::Passing(output)
            | ProbeOutcome::Warning(output)
            | ProbeOutcome::Critical(output) => output,
        };
        if let Some(implied) = implied {
            if implied != self.implied {
                self.implied = implied;
                self.implied_since_ms = now_ms;
            }
            self.implied_reason = reason;
        }
        let released = self.release_if_stable(now_ms);
        let (status, reason) = match (&self.hold, released) {
            (Some(hold), _) => (HealthStatus::Warning, hold.reason.clone()),
            (None, Some(released)) => (self.implied, released),
            (None, None) => (self.implied, self.implied_reason.clone()),
        };
        // A hold that began at warning changes no status, but its reason must be written.
        let hold_unannounced = self
            .hold
            .as_ref()
            .is_some_and(|hold| hold.reason != self.committed_reason);
        (status != self.committed || hold_unannounced).then(|| Verdict {
            status,
            output: self.last_output.clone(),
            reason,
        })
    }

    /// Tells the tracker that `status` is now committed for the check (at `now_ms`), whether by
    /// this tracker's verdict or any other write. A change of status counts towards flapping,
    /// and may start a hold, which the next [`CheckTracker::observe`] proposes.
    pub fn committed(&mut self, status: HealthStatus, now_ms: u64) {
        let status = known(status);
        if status == self.committed {
            return;
        }
        self.committed = status;
        if self.hold.is_some() {
            return;
        }
        self.transitions.push_back(now_ms);
        let window_ms = self.flap_policy.window_ms;
        while self
            .transitions
            .front()
            .is_some_and(|&at_ms| now_ms.saturating_sub(at_ms) >= window_ms)
        {
            self.transitions.pop_front();
        }
        let count = self.transitions.len();
        if u64::try_from(count).unwrap_or(u64::MAX) > u64::from(self.flap_policy.max_transitions) {
            self.transitions.clear();
            self.hold = Some(Hold {
                since_ms: now_ms,
                reason: format!(
                    "flapping: {count} transitions in {}; held as warning until stable for {}",
                    duration(self.flap_policy.window_ms),
                    duration(self.flap_policy.stable_ms)
                ),
            });
        }
    }

    /// Tells the tracker the reason committed with the check's state (any writer's).
    pub fn committed_reason(&mut self, reason: &str) {
        if self.committed_reason != reason {
            self.committed_reason = reason.to_owned();
        }
    }

    /// The status last reported committed.
    pub fn committed_status(&self) -> HealthStatus {
        self.committed
    }

    /// The status the probes imply by the thresholds, before flap damping.
    pub fn implied_status(&self) -> HealthStatus {
        self.implied
    }

    /// Why the check is held at warning, while it is.
    pub fn hold_reason(&self) -> Option<&str> {
        self.hold.as_ref().map(|hold| hold.reason.as_str())
    }

    /// Ends the hold when the implied status has been unchanged for `stable_ms` since the hold
    /// began or since it last changed, whichever is later; returns the release's reason.
    fn release_if_stable(&mut self, now_ms: u64) -> Option<String> {
        let hold = self.hold.as_ref()?;
        let stable_since_ms = hold.since_ms.max(self.implied_since_ms);
        if now_ms.saturating_sub(stable_since_ms) < self.flap_policy.stable_ms {
            return None;
        }
        self.hold = None;
        let mut reason = format!(
            "stable for {}, released from the flapping hold",
            duration(self.flap_policy.stable_ms)
        );
        if !self.implied_reason.is_empty() {
            reason = format!("{reason}; {}", self.implied_reason);
        }
        Some(reason)
    }
}

/// Unspecified (or unknown) reads as critical, as in [`crate::health_of`].
fn known(status: HealthStatus) -> HealthStatus {
    match status {
        HealthStatus::Unspecified => HealthStatus::Critical,
        status => status,
    }
}

/// `1 failed probe`, `3 failed probes`.
fn probes(count: u32, adjective: &str) -> String {
    let noun = if count == 1 { "probe" } else { "probes" };
    format!("{count} {adjective} {noun}")
}

/// `60 s` for whole seconds, else `1500 ms`.
fn duration(ms: u64) -> String {
    match (ms / 1_000, ms % 1_000) {
        (seconds, 0) => format!("{seconds} s"),
        _ => format!("{ms} ms"),
    }
}
