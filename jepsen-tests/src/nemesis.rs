//! The nemesis: on a schedule (every interval ± jitter) it picks a fault from the enabled kinds,
//! injects it, holds it for another interval ± jitter, then heals it; at the end of the run a
//! final heal clears everything. Every fault is recorded with its start and end time
//! (`nemesis.jsonl`, and counted in `results.json`).
//!
//! Kinds: `kill` (leader, random node, minority, all — healed by restarting), `pause`
//! (SIGSTOP leader or random node), `partition` (isolate leader, random majority/minority,
//! ring and bridge on 5 nodes, one-way), `loss` (random packet loss on peer traffic), `clock`
//! (restart a node under `faketime` with a skewed clock), `snapshot` (low snapshot threshold and
//! a long partition of one follower, so it must catch up by snapshot install). `member` is the
//! place for membership changes once beacond has them; [`Fault::Membership`] is its interface.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::client::NodeClient;
use crate::cluster::{leader, Cluster};
use crate::firewall::Grudge;
use crate::history::History;

/// A nemesis a run can enable (`--nemesis a,b`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    None,
    Kill,
    Pause,
    Partition,
    Loss,
    Clock,
    Snapshot,
    /// Membership changes: refused until beacond supports them.
    Member,
    /// kill, pause, partition, loss and clock.
    All,
}

impl NemesisKind {
    /// Expands `all` and drops `none`.
    pub fn expand(kinds: &[NemesisKind]) -> Vec<NemesisKind> {
        let mut out = BTreeSet::new();
        for kind in kinds {
            match kind {
                NemesisKind::All => out.extend([
                    NemesisKind::Kill,
                    NemesisKind::Pause,
                    NemesisKind::Partition,
                    NemesisKind::Loss,
                    NemesisKind::Clock,
                ]),
                NemesisKind::None => {}
                other => {
                    out.insert(*other);
                }
            }
        }
        out.into_iter().collect()
    }
}

/// A planned membership change (interface for the membership nemesis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    AddLearnerAndPromote { node: usize },
    Remove { node: usize },
    ReplaceWiped { node: usize },
}

/// One concrete fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    Kill {
        nodes: Vec<usize>,
        target: String,
    },
    Pause {
        nodes: Vec<usize>,
        target: String,
    },
    Partition {
        shape: String,
        grudge: Vec<Vec<usize>>,
    },
    Loss {
        percent: u8,
    },
    Clock {
        node: usize,
        offset_seconds: i64,
    },
    Snapshot {
        node: usize,
    },
    Membership(MembershipChange),
}

impl Fault {
    /// The kind name counted in results.
    pub fn name(&self) -> String {
        match self {
            Fault::Kill { target, .. } => format!("kill-{target}"),
            Fault::Pause { target, .. } => format!("pause-{target}"),
            Fault::Partition { shape, .. } => format!("partition-{shape}"),
            Fault::Loss { .. } => "loss".to_string(),
            Fault::Clock { .. } => "clock".to_string(),
            Fault::Snapshot { .. } => "snapshot".to_string(),
            Fault::Membership(_) => "membership".to_string(),
        }
    }
}

/// A fault as recorded: what, and when (seconds since the run started).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub name: String,
    pub start: f64,
    pub end: Option<f64>,
    pub error: Option<String>,
}

/// Schedule settings.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kinds: Vec<NemesisKind>,
    pub interval: Duration,
    pub jitter: Duration,
    /// How long the snapshot nemesis keeps its follower cut off.
    pub snapshot_hold: Duration,
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    *items.choose(rng).expect("non-empty")
}

fn random_nodes(rng: &mut StdRng, nodes: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..nodes).collect();
    all.shuffle(rng);
    all.truncate(count);
    all.sort_unstable();
    all
}

/// Chooses a concrete fault of `kind` for a cluster of `nodes` whose leader is `leader`.
pub fn plan(kind: NemesisKind, nodes: usize, leader: Option<usize>, rng: &mut StdRng) -> Fault {
    let leader_or_random = |rng: &mut StdRng| -> (usize, String) {
        match leader {
            Some(leader) if rng.gen_bool(0.5) => (leader, "leader".to_string()),
            _ => (rng.gen_range(0..nodes), "random".to_string()),
        }
    };
    let minority = (nodes - 1) / 2;
    let grudge_vec = |grudge: Grudge| -> Vec<Vec<usize>> {
        grudge
            .0
            .into_iter()
            .map(|set| set.into_iter().collect())
            .collect()
    };
    match kind {
        NemesisKind::Kill => match rng.gen_range(0..4) {
            0 | 1 => {
                let (node, target) = leader_or_random(rng);
                Fault::Kill {
                    nodes: vec![node],
                    target,
                }
            }
            2 => Fault::Kill {
                nodes: random_nodes(rng, nodes, minority),
                target: "minority".to_string(),
            },
            _ => Fault::Kill {
                nodes: (0..nodes).collect(),
                target: "all".to_string(),
            },
        },
        NemesisKind::Pause => {
            let (node, target) = leader_or_random(rng);
            Fault::Pause {
                nodes: vec![node],
                target,
            }
        }
        NemesisKind::Partition => {
            let mut shapes = vec!["isolate-leader", "majority-minority", "one-way"];
            if nodes >= 5 {
                shapes.extend(["ring", "bridge"]);
            }
            match pick(rng, &shapes) {
                "isolate-leader" => {
                    let node = leader.unwrap_or_else(|| rng.gen_range(0..nodes));
                    Fault::Partition {
                        shape: "isolate-leader".to_string(),
                        grudge: grudge_vec(Grudge::split(nodes, &BTreeSet::from([node]))),
                    }
                }
                "ring" => Fault::Partition {
                    shape: "ring".to_string(),
                    grudge: grudge_vec(Grudge::ring(nodes)),
                },
                "bridge" => Fault::Partition {
                    shape: "bridge".to_string(),
                    grudge: grudge_vec(Grudge::bridge(nodes, rng.gen_range(0..nodes))),
                },
                "one-way" => {
                    let (node, _) = leader_or_random(rng);
                    let (shape, grudge) = if rng.gen_bool(0.5) {
                        ("one-way-deaf", Grudge::deaf(nodes, node))
                    } else {
                        ("one-way-mute", Grudge::mute(nodes, node))
                    };
                    Fault::Partition {
                        shape: shape.to_string(),
                        grudge: grudge_vec(grudge),
                    }
                }
                _ => {
                    let group: BTreeSet<usize> =
                        random_nodes(rng, nodes, minority).into_iter().collect();
                    Fault::Partition {
                        shape: "majority-minority".to_string(),
                        grudge: grudge_vec(Grudge::split(nodes, &group)),
                    }
                }
            }
        }
        NemesisKind::Loss => Fault::Loss {
            percent: pick(rng, &[10u8, 25, 40]),
        },
        NemesisKind::Clock => {
            let magnitude = pick(rng, &[5i64, 30, 120, 3600]);
            Fault::Clock {
                node: rng.gen_range(0..nodes),
                offset_seconds: if rng.gen_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                },
            }
        }
        NemesisKind::Snapshot => {
            let followers: Vec<usize> = (0..nodes).filter(|n| Some(*n) != leader).collect();
            Fault::Snapshot {
                node: pick(rng, &followers),
            }
        }
        NemesisKind::Member => Fault::Membership(MembershipChange::AddLearnerAndPromote {
            node: rng.gen_range(0..nodes),
        }),
        NemesisKind::None | NemesisKind::All => unreachable!("expanded before planning"),
    }
}

fn to_grudge(grudge: &[Vec<usize>]) -> Grudge {
    Grudge(
        grudge
            .iter()
            .map(|set| set.iter().copied().collect())
            .collect(),
    )
}

/// Injects a fault.
pub fn inject(cluster: &mut Cluster, fault: &Fault) -> anyhow::Result<()> {
    match fault {
        Fault::Kill { nodes, .. } => nodes.iter().for_each(|node| cluster.kill(*node)),
        Fault::Pause { nodes, .. } => {
            for node in nodes {
                cluster.pause(*node)?;
            }
        }
        Fault::Partition { grudge, .. } => cluster.firewall(&to_grudge(grudge), 0)?,
        Fault::Loss { percent } => cluster.firewall(&Grudge::none(cluster.len()), *percent)?,
        Fault::Clock {
            node,
            offset_seconds,
        } => {
            cluster.kill(*node);
            cluster.set_clock(*node, Some(format!("{offset_seconds:+}")));
            cluster.start(*node)?;
        }
        Fault::Snapshot { node } => {
            cluster.firewall(&Grudge::split(cluster.len(), &BTreeSet::from([*node])), 0)?
        }
        Fault::Membership(_) => anyhow::bail!(MEMBERSHIP_NOT_YET),
    }
    Ok(())
}

/// Heals a fault (the general [`Cluster::heal`] plus undoing a clock skew).
pub fn heal(cluster: &mut Cluster, fault: &Fault) -> anyhow::Result<()> {
    if let Fault::Clock { node, .. } = fault {
        cluster.kill(*node);
        cluster.set_clock(*node, None);
    }
    cluster.heal()
}

/// Why `--nemesis member` is refused.
pub const MEMBERSHIP_NOT_YET: &str =
    "the membership nemesis needs membership changes in beacond, which do not exist yet";

fn lock(cluster: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    cluster
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleeps up to `duration`, waking early when `stop` is set. Returns whether it was stopped.
pub(crate) async fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(100);
    let mut left = duration;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = left.min(step);
        tokio::time::sleep(now).await;
        left -= now;
    }
    stop.load(Ordering::Relaxed)
}

/// Runs the schedule until `stop`, then heals whatever is in force. Returns the fault records.
pub async fn run(
    schedule: Schedule,
    cluster: Arc<Mutex<Cluster>>,
    status_clients: Vec<NodeClient>,
    seed: u64,
    history: History,
    stop: Arc<AtomicBool>,
) -> Vec<FaultRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut records = Vec::new();
    let kinds = NemesisKind::expand(&schedule.kinds);
    if kinds.is_empty() {
        return records;
    }
    let jittered = |rng: &mut StdRng, base: Duration| -> Duration {
        let jitter = schedule.jitter.as_secs_f64();
        Duration::from_secs_f64((base.as_secs_f64() + rng.gen_range(-jitter..=jitter)).max(1.0))
    };
    loop {
        let wait = jittered(&mut rng, schedule.interval);
        if sleep_unless_stopped(wait, &stop).await {
            break;
        }
        let kind = pick(&mut rng, &kinds);
        let current_leader = leader(&status_clients).await;
        let fault = plan(kind, status_clients.len(), current_leader, &mut rng);
        let mut record = FaultRecord {
            name: fault.name(),
            fault: fault.clone(),
            start: history.now() as f64 / 1e9,
            end: None,
            error: None,
        };
        println!(
            "jepsen-tests: nemesis: {:>7.1}s inject {:?}",
            record.start, fault
        );
        if let Err(error) = inject(&mut lock(&cluster), &fault) {
            record.error = Some(format!("{error:#}"));
        }
        let hold = match fault {
            Fault::Snapshot { .. } => schedule.snapshot_hold,
            _ => jittered(&mut rng, schedule.interval),
        };
        sleep_unless_stopped(hold, &stop).await;
        if let Err(error) = heal(&mut lock(&cluster), &fault) {
            record.error = Some(format!("heal: {error:#}"));
        }
        record.end = Some(history.now() as f64 / 1e9);
        println!(
            "jepsen-tests: nemesis: {:>7.1}s healed",
            record.end.unwrap_or(0.0)
        );
        records.push(record);
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_and_none_vanishes() {
        assert_eq!(
            NemesisKind::expand(&[NemesisKind::All, NemesisKind::None]),
            vec![
                NemesisKind::Kill,
                NemesisKind::Pause,
                NemesisKind::Partition,
                NemesisKind::Loss,
                NemesisKind::Clock
            ]
        );
        assert!(NemesisKind::expand(&[NemesisKind::None]).is_empty());
    }

    #[test]
    fn plans_are_deterministic_per_seed_and_in_range() {
        for kind in NemesisKind::expand(&[NemesisKind::All, NemesisKind::Snapshot]) {
            for nodes in [3, 5] {
                let mut a = StdRng::seed_from_u64(7);
                let mut b = StdRng::seed_from_u64(7);
                for _ in 0..20 {
                    let fault = plan(kind, nodes, Some(1), &mut a);
                    assert_eq!(fault, plan(kind, nodes, Some(1), &mut b));
                    match &fault {
                        Fault::Kill { nodes: killed, .. } => {
                            assert!(killed.iter().all(|n| *n < nodes))
                        }
                        Fault::Snapshot { node } => assert_ne!(*node, 1),
                        Fault::Partition { grudge, .. } => assert_eq!(grudge.len(), nodes),
                        _ => {}
                    }
                }
            }
        }
    }
}
