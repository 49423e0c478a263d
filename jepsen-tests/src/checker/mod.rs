//! Checkers: pure functions from a recorded history to a [`CheckReport`]. Each workload has one
//! (`register`, `set`, `watch`, `lease`, `catalog`; the health workload adds `health` to the
//! catalog's); `convergence` compares the nodes' final states; `linearizable` is the
//! Wing–Gong–Lowe search the register and catalog checkers run per key. None of them touch the
//! network, so they are tested with crafted histories (the negative controls live beside each
//! checker).

pub mod catalog;
pub mod convergence;
pub mod health;
pub mod lease;
pub mod linearizable;
pub mod register;
pub mod set;
pub mod watch;

use serde::Serialize;

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// Could not decide (search budget exhausted, or too little data).
    Unknown,
}

/// One checker's verdict with the anomalies that explain it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub checker: String,
    pub validity: Validity,
    /// Human-readable anomalies, each naming the ops involved. Capped at [`MAX_ANOMALIES`].
    pub anomalies: Vec<String>,
    /// Total anomalies found (may exceed `anomalies.len()`).
    pub anomaly_count: usize,
    pub stats: serde_json::Value,
}

/// How many anomaly descriptions a report keeps.
pub const MAX_ANOMALIES: usize = 50;

impl CheckReport {
    pub fn new(checker: &str) -> Self {
        CheckReport {
            checker: checker.to_string(),
            validity: Validity::Valid,
            anomalies: Vec::new(),
            anomaly_count: 0,
            stats: serde_json::Value::Null,
        }
    }

    /// Records an anomaly and marks the report invalid.
    pub fn anomaly(&mut self, description: String) {
        self.validity = Validity::Invalid;
        self.anomaly_count += 1;
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(description);
        }
    }

    /// Marks the report unknown unless it is already invalid.
    pub fn unknown(&mut self, why: String) {
        if self.validity == Validity::Valid {
            self.validity = Validity::Unknown;
        }
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(format!("unknown: {why}"));
        }
    }
}
