//! The membership nemesis (`--nemesis membership`): membership changes through etcd's Cluster
//! API while the workload runs, each a sequence of recorded steps (start/end time, outcome).
//!
//! The cluster starts with `--nodes` members and two spare slots (namespaces without a process).
//! A change is planned from the current members so that at least 3 voters remain:
//! - **add**: MemberAdd a learner for a spare slot (its data directory wiped), start it with a
//!   joining config (`initial_cluster_state = "existing"`, the members as `initial_members`),
//!   wait until it publishes its name, then MemberPromote, retrying while the leader answers "not
//!   in sync" (≤ 60 s; a learner that never catches up is removed again). Only with < 5 voters.
//! - **remove**: MemberRemove a voter (the leader half the time) through another member, stop its
//!   process and keep its data; then restart it once with that old data: it must exit non-zero
//!   within 20 s ("removed from the cluster") and must not reappear in MemberList. Only with > 3.
//! - **replace**: remove a voter (sometimes the leader), wipe its data directory, add it again on
//!   the same slot (a new id, the same address) and promote it. Only with > 3 voters.
//!
//! Clients follow the membership ([`Endpoints`]): a slot gets clients once its member is
//! promoted and loses them when it is removed. [`check`] turns the records into a report: a
//! removed member that kept running (or exited 0) with its old data, or came back in the
//! membership, is an anomaly; a change the cluster refused is a statistic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::checker::CheckReport;
use crate::client::{CallError, NodeClient};
use crate::cluster::{Cluster, Endpoints};
use crate::history::History;
use crate::nemesis::{FaultRecord, MembershipChange};

/// Spare slots a membership run gets (so 3 nodes can grow to 5).
pub const SPARES: usize = 2;
const MIN_VOTERS: usize = 3;
const MAX_VOTERS: usize = 5;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(40);
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a removed member restarted with its old data may run before it must have exited.
const REMOVED_EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One step of a membership change, as recorded in `nemesis.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    /// Seconds since the run started.
    pub start: f64,
    pub end: f64,
    pub ok: bool,
    pub detail: String,
}

/// Plans a change for the current `members` (slots), `spares` (slots without a member) and the
/// leader's slot; `None` when nothing keeps ≥ 3 voters.
pub fn plan(
    members: &[usize],
    spares: &[usize],
    leader: Option<usize>,
    rng: &mut StdRng,
) -> Option<MembershipChange> {
    let mut choices = Vec::new();
    if !spares.is_empty() && members.len() < MAX_VOTERS {
        choices.push(0);
    }
    if members.len() > MIN_VOTERS {
        choices.extend([1, 2]);
    }
    let victim = |rng: &mut StdRng, leader_share: f64| match leader {
        Some(leader) if members.contains(&leader) && rng.gen_bool(leader_share) => leader,
        _ => *members.choose(rng).expect("members"),
    };
    Some(match *choices.choose(rng)? {
        0 => MembershipChange::AddLearnerAndPromote {
            node: *spares.choose(rng).expect("spares"),
        },
        1 => MembershipChange::Remove {
            node: victim(rng, 0.5),
        },
        _ => MembershipChange::ReplaceWiped {
            node: victim(rng, 0.33),
        },
    })
}

fn lock(cluster: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    cluster
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs one change and records its steps.
pub struct Executor<'a> {
    pub cluster: &'a Arc<Mutex<Cluster>>,
    /// Clients for every slot with a generous deadline (a change of the leader takes an election).
    pub admin: &'a [NodeClient],
    pub endpoints: &'a Endpoints,
    pub history: &'a History,
    /// The leader's slot when the change was planned.
    pub leader: Option<usize>,
    pub steps: Vec<Step>,
}

impl Executor<'_> {
    fn now(&self) -> f64 {
        self.history.now() as f64 / 1e9
    }

    fn record(&mut self, step: &str, start: f64, ok: bool, detail: String) {
        println!("jepsen-tests: membership: {step}: ok={ok} {detail}");
        self.steps.push(Step {
            step: step.to_string(),
            start,
            end: self.now(),
            ok,
            detail,
        });
    }

    /// A member's client other than `except` (members forward changes to the leader).
    fn via(&self, except: usize, attempt: usize) -> NodeClient {
        let members: Vec<usize> = lock(self.cluster)
            .member_slots()
            .into_iter()
            .filter(|slot| *slot != except)
            .collect();
        self.admin[members[attempt % members.len()]].clone()
    }

    async fn list(&self, except: usize) -> Option<Vec<beacon_proto::etcdserverpb::Member>> {
        for attempt in 0..3 {
            if let Ok(members) = self.via(except, attempt).member_list().await {
                return Some(members);
            }
        }
        None
    }

    pub async fn execute(&mut self, change: &MembershipChange) -> anyhow::Result<()> {
        match change {
            MembershipChange::AddLearnerAndPromote { node } => self.add(*node).await,
            MembershipChange::Remove { node } => self.remove(*node, true).await,
            MembershipChange::ReplaceWiped { node } => {
                self.remove(*node, false).await?;
                let start = self.now();
                let wiped = lock(self.cluster).wipe(*node);
                self.record("wipe", start, wiped.is_ok(), format!("{wiped:?}"));
                wiped?;
                self.add(*node).await
            }
        }
    }

    async fn add(&mut self, slot: usize) -> anyhow::Result<()> {
        let peer_url = {
            let mut cluster = lock(self.cluster);
            cluster.wipe(slot)?;
            cluster.peer_url(slot)
        };
        let start = self.now();
        let added = self.via(slot, 0).member_add(&peer_url, true).await;
        let id = match added {
            Ok(id) => id,
            Err(error) => {
                // The outcome of a timed-out add is unknown: look for the peer URL.
                let listed = self.list(slot).await.and_then(|members| {
                    members
                        .into_iter()
                        .find(|member| member.peer_ur_ls.contains(&peer_url))
                });
                match listed {
                    Some(member) => member.id,
                    None => {
                        self.record("member-add", start, false, format!("{peer_url}: {error}"));
                        anyhow::bail!("member add: {error}");
                    }
                }
            }
        };
        self.record(
            "member-add",
            start,
            true,
            format!("{peer_url} learner id {id:x}"),
        );
        let start = self.now();
        {
            let mut cluster = lock(self.cluster);
            cluster.prepare_join(slot, id)?;
            cluster.set_member(slot, true);
            cluster.start(slot)?;
        }
        self.record("start", start, true, format!("n{} as {id:x}", slot + 1));

        let start = self.now();
        let name = format!("n{}", slot + 1);
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        let published = loop {
            if let Some(status) = lock(self.cluster).exited(slot) {
                break Err(format!("exited with {status} before publishing"));
            }
            let listed = self.list(slot).await.unwrap_or_default();
            if listed.iter().any(|member| {
                member.id == id && member.name == name && !member.client_ur_ls.is_empty()
            }) {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(format!("not published within {PUBLISH_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        self.record(
            "publish",
            start,
            published.is_ok(),
            published.clone().err().unwrap_or_default(),
        );
        if let Err(error) = published {
            self.undo_add(slot, id).await;
            anyhow::bail!("publish: {error}");
        }

        let start = self.now();
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        let mut attempts = 0;
        let promoted = loop {
            attempts += 1;
            match self.via(slot, attempts).member_promote(id).await {
                Ok(()) => break Ok(()),
                Err(CallError::Status(_, message))
                    if message.contains("can only promote a learner member")
                        && !message.contains("in sync") =>
                {
                    // An earlier attempt that timed out went through.
                    break Ok(());
                }
                Err(error) if Instant::now() > deadline => break Err(error.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        self.record(
            "promote",
            start,
            promoted.is_ok(),
            format!(
                "{id:x} after {attempts} attempts{}",
                promoted
                    .clone()
                    .err()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
        if let Err(error) = promoted {
            self.undo_add(slot, id).await;
            anyhow::bail!("promote: {error}");
        }
        self.endpoints.set_active(slot, true);
        Ok(())
    }

    /// Takes a learner that never became a voter out again, so the next add is possible.
    async fn undo_add(&mut self, slot: usize, id: u64) {
        let start = self.now();
        let removed = self.remove_id(slot, id).await;
        let mut cluster = lock(self.cluster);
        cluster.set_member(slot, false);
        cluster.stop(slot);
        drop(cluster);
        self.record(
            "undo-add",
            start,
            removed.is_ok(),
            format!("{id:x}: {removed:?}"),
        );
    }

    /// MemberRemove of `id` through members other than `slot`, retrying refusals (a change in
    /// progress, not enough started members) and checking the list after a timeout.
    /// Ok: the attempts' errors (empty when the first succeeded).
    async fn remove_id(&self, slot: usize, id: u64) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut errors = Vec::new();
        let started = Instant::now();
        loop {
            let error = match self.via(slot, errors.len() + 1).member_remove(id).await {
                Ok(()) => return Ok(errors),
                Err(CallError::Status(_, message)) if message.contains("member not found") => {
                    return Ok(errors)
                }
                Err(error) => error,
            };
            errors.push(format!("{:.1}s: {error}", started.elapsed().as_secs_f64()));
            if let Some(members) = self.list(slot).await {
                if !members.iter().any(|member| member.id == id) {
                    return Ok(errors);
                }
            }
            if Instant::now() > deadline {
                return Err(errors);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn remove(&mut self, slot: usize, restart_removed: bool) -> anyhow::Result<()> {
        let id = lock(self.cluster).id(slot);
        let start = self.now();
        let removed = self.remove_id(slot, id).await;
        let role = if self.leader == Some(slot) {
            ", the leader"
        } else {
            ""
        };
        self.record(
            "member-remove",
            start,
            removed.is_ok(),
            format!(
                "n{} ({id:x}{role}): errors before success: {removed:?}",
                slot + 1
            ),
        );
        if let Err(errors) = removed {
            anyhow::bail!("member remove: {}", errors.join("; "));
        }
        self.endpoints.set_active(slot, false);
        let start = self.now();
        {
            let mut cluster = lock(self.cluster);
            cluster.set_member(slot, false);
            cluster.stop(slot);
        }
        self.record("stop", start, true, format!("n{}", slot + 1));
        if restart_removed {
            self.restart_removed(slot, id).await;
        }
        Ok(())
    }

    /// Restarts a removed member with its old data: it must stop by itself, non-zero.
    async fn restart_removed(&mut self, slot: usize, id: u64) {
        let start = self.now();
        if let Err(error) = lock(self.cluster).start(slot) {
            self.record("restart-removed", start, false, format!("start: {error:#}"));
            return;
        }
        let deadline = Instant::now() + REMOVED_EXIT_TIMEOUT;
        let exit = loop {
            if let Some(status) = lock(self.cluster).exited(slot) {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        lock(self.cluster).kill(slot);
        let relisted = self
            .list(slot)
            .await
            .is_some_and(|members| members.iter().any(|member| member.id == id));
        let (ok, detail) = match (exit, relisted) {
            (_, true) => (false, format!("{id:x} is listed again after its restart")),
            (Some(status), false) if !status.success() => (true, format!("exited: {status}")),
            (Some(status), false) => (false, format!("exited with success ({status})")),
            (None, false) => (
                false,
                format!("still running {REMOVED_EXIT_TIMEOUT:?} after its restart (killed)"),
            ),
        };
        self.record("restart-removed", start, ok, detail);
    }
}

/// Counts and judges the membership changes of a run (report `membership`).
pub fn check(faults: &[FaultRecord]) -> CheckReport {
    let mut report = CheckReport::new("membership");
    let mut counts = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for fault in faults {
        for step in &fault.steps {
            let entry = counts.entry(step.step.clone()).or_default();
            if step.ok {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            if step.step == "restart-removed" && !step.ok {
                report.anomaly(format!(
                    "{:.1}s: removed member restarted with its old data: {}",
                    step.start, step.detail
                ));
            }
        }
    }
    let changes = |name: &str| {
        faults
            .iter()
            .filter(|fault| fault.name == name)
            .map(|fault| {
                (
                    fault.error.is_none() as usize,
                    fault.error.is_some() as usize,
                )
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    report.stats = serde_json::json!({
        "adds": changes("membership-add"),
        "removes": changes("membership-remove"),
        "replaces": changes("membership-replace"),
        "steps_ok_failed": counts,
    });
    report
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Applies plans to a simulated cluster: it stays within 3–5 voters and reuses slots.
    #[test]
    fn plans_keep_three_to_five_voters() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut members = vec![0, 1, 2];
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let spares: Vec<usize> = (0..5).filter(|s| !members.contains(s)).collect();
            let change = plan(&members, &spares, Some(members[0]), &mut rng).expect("a change");
            match change {
                MembershipChange::AddLearnerAndPromote { node } => {
                    assert!(spares.contains(&node));
                    members.push(node);
                    kinds.insert("add");
                }
                MembershipChange::Remove { node } => {
                    assert!(members.contains(&node));
                    members.retain(|m| *m != node);
                    kinds.insert("remove");
                }
                MembershipChange::ReplaceWiped { node } => {
                    assert!(members.contains(&node) && members.len() > 3);
                    kinds.insert("replace");
                }
            }
            assert!((3..=5).contains(&members.len()), "{members:?}");
        }
        assert_eq!(kinds.len(), 3);
    }

    /// Negative control: a removed member that kept running, or exited 0, is an anomaly.
    #[test]
    fn a_removed_member_that_keeps_running_is_an_anomaly() {
        let step = |ok: bool| Step {
            step: "restart-removed".to_string(),
            start: 1.0,
            end: 2.0,
            ok,
            detail: String::new(),
        };
        let fault = |ok: bool| FaultRecord {
            fault: crate::nemesis::Fault::Membership(MembershipChange::Remove { node: 1 }),
            name: "membership-remove".to_string(),
            start: 1.0,
            end: Some(2.0),
            error: None,
            steps: vec![step(ok)],
        };
        let valid = check(&[fault(true)]);
        assert_eq!(valid.validity, crate::checker::Validity::Valid);
        assert_eq!(valid.stats["removes"], serde_json::json!([1, 0]));
        let invalid = check(&[fault(true), fault(false)]);
        assert_eq!(invalid.validity, crate::checker::Validity::Invalid);
    }
}
