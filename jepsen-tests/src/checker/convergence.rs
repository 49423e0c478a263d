//! The convergence check: after the final heal every node's full keyspace, read locally
//! (serializable) at one common revision, must be identical. The harness gathers the reads
//! (`cluster::read_all_states`); this module only compares them.

use super::CheckReport;

/// One stored key: `(key, value, mod_revision)`.
pub type Entry = (Vec<u8>, Vec<u8>, i64);

/// One node's state: its entries in key order, or why it was unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node: usize,
    pub revision: i64,
    pub entries: Result<Vec<Entry>, String>,
}

/// Compares every node's state with the first readable one.
pub fn check(states: &[NodeState]) -> CheckReport {
    let mut report = CheckReport::new("convergence");
    let mut reference: Option<&NodeState> = None;
    for state in states {
        let entries = match &state.entries {
            Ok(entries) => entries,
            Err(error) => {
                report.anomaly(format!(
                    "n{} could not be read at revision {}: {error}",
                    state.node + 1,
                    state.revision
                ));
                continue;
            }
        };
        let Some(first) = reference else {
            reference = Some(state);
            continue;
        };
        let first_entries = first.entries.as_ref().expect("reference is readable");
        if first_entries != entries {
            let differing = first_entries
                .iter()
                .zip(entries.iter())
                .find(|(a, b)| a != b)
                .map(|(a, b)| {
                    format!(
                        "first difference: {}@{} vs {}@{}",
                        String::from_utf8_lossy(&a.0),
                        a.2,
                        String::from_utf8_lossy(&b.0),
                        b.2
                    )
                })
                .unwrap_or_else(|| "one is a prefix of the other".to_string());
            report.anomaly(format!(
                "n{} and n{} differ at revision {} ({} vs {} keys; {differing})",
                first.node + 1,
                state.node + 1,
                state.revision,
                first_entries.len(),
                entries.len()
            ));
        }
    }
    report.stats = serde_json::json!({
        "nodes": states.len(),
        "revision": states.first().map(|state| state.revision),
        "keys": reference.and_then(|state| state.entries.as_ref().ok()).map(Vec::len),
    });
    if reference.is_none() {
        report.unknown("no node was readable".to_string());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    fn state(node: usize, entries: &[(&str, &str, i64)]) -> NodeState {
        NodeState {
            node,
            revision: 9,
            entries: Ok(entries
                .iter()
                .map(|(k, v, r)| (k.as_bytes().to_vec(), v.as_bytes().to_vec(), *r))
                .collect()),
        }
    }

    #[test]
    fn equal_states_pass_and_divergence_is_caught() {
        let a = state(0, &[("a", "1", 2), ("b", "2", 3)]);
        assert_eq!(
            check(&[a.clone(), state(1, &[("a", "1", 2), ("b", "2", 3)])]).validity,
            Validity::Valid
        );
        assert_eq!(
            check(&[a.clone(), state(1, &[("a", "1", 2)])]).validity,
            Validity::Invalid
        );
        assert_eq!(
            check(&[a, state(1, &[("a", "1", 2), ("b", "3", 3)])]).validity,
            Validity::Invalid
        );
    }
}
