//! The nemesis: on a schedule (every interval ± jitter) it picks a fault from the enabled kinds,
//! injects it, holds it for another interval ± jitter, then heals it; at the end of the run a
//! final heal clears everything. Every fault is recorded with its start and end time
//! (`nemesis.jsonl`, and counted in `results.json`).
//!
//! Kinds: `kill` (leader, random node, minority, all — healed by restarting), `pause`
//! (SIGSTOP leader or random node), `partition` (isolate leader, random majority/minority,
//! ring and bridge on 5 nodes, one-way), `loss` (random packet loss on peer traffic), `clock`
//! (restart a node under `faketime` with a skewed clock), `snapshot-install` (low snapshot
//! threshold; one follower killed or cut off while filler writes push the log past the
//! snapshot and its purge, so it must catch up by snapshot install), `membership` (add a learner
//! and promote it, remove a voter, replace a wiped member: [`crate::membership`]).
//!
//! Faults are planned over the current members and mapped to their slots, so they combine with
//! membership changes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::client::NodeClient;
use crate::cluster::{leader_id, Cluster, Endpoints};
use crate::firewall::Grudge;
use crate::history::History;
use crate::membership::{self, Executor, Step};

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
    /// A follower cut off (killed or partitioned) past the snapshot and log purge.
    #[value(name = "snapshot-install", alias = "snapshot")]
    #[serde(rename = "snapshot-install")]
    Snapshot,
    /// Membership changes (add learner and promote, remove, replace a wiped member).
    #[value(alias = "member")]
    Membership,
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
        /// Killed (true) or partitioned away (false).
        kill: bool,
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
            Fault::Snapshot { .. } => "snapshot-install".to_string(),
            Fault::Membership(MembershipChange::AddLearnerAndPromote { .. }) => {
                "membership-add".to_string()
            }
            Fault::Membership(MembershipChange::Remove { .. }) => "membership-remove".to_string(),
            Fault::Membership(MembershipChange::ReplaceWiped { .. }) => {
                "membership-replace".to_string()
            }
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
    /// A membership change's steps, or the snapshot-install fault's filler and log indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
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
                kill: rng.gen_bool(0.5),
            }
        }
        NemesisKind::Membership | NemesisKind::None | NemesisKind::All => {
            unreachable!("expanded before planning; membership::plan plans membership changes")
        }
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
        Fault::Snapshot { node, kill: true } => cluster.kill(*node),
        Fault::Snapshot { node, kill: false } => {
            cluster.firewall(&Grudge::split(cluster.len(), &BTreeSet::from([*node])), 0)?
        }
        Fault::Membership(_) => anyhow::bail!("membership changes run in membership::Executor"),
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

/// Maps a fault planned over `members.len()` nodes (positions) onto the members' slots in a
/// cluster of `slots` slots.
pub fn remap(fault: Fault, members: &[usize], slots: usize) -> Fault {
    let map = |nodes: Vec<usize>| nodes.into_iter().map(|n| members[n]).collect();
    match fault {
        Fault::Kill { nodes, target } => Fault::Kill {
            nodes: map(nodes),
            target,
        },
        Fault::Pause { nodes, target } => Fault::Pause {
            nodes: map(nodes),
            target,
        },
        Fault::Partition { shape, grudge } => {
            let mut full = vec![Vec::new(); slots];
            for (position, drops) in grudge.into_iter().enumerate() {
                full[members[position]] = map(drops);
            }
            Fault::Partition {
                shape,
                grudge: full,
            }
        }
        Fault::Clock {
            node,
            offset_seconds,
        } => Fault::Clock {
            node: members[node],
            offset_seconds,
        },
        Fault::Snapshot { node, kill } => Fault::Snapshot {
            node: members[node],
            kill,
        },
        other => other,
    }
}

/// How many log entries the snapshot-install fault makes the cluster append while its follower is
/// cut off: beacond keeps 1,000 entries after a snapshot (`max_in_snapshot_log_to_keep`), so
/// this passes the purge even with the snapshot threshold of 200 and a few snapshots' slack.
pub const SNAPSHOT_FILL_ENTRIES: u64 = 1_700;

/// Writes filler keys (`jepsen/fill/N`, outside every workload's keys) through `clients` until
/// the log has grown by [`SNAPSHOT_FILL_ENTRIES`] since it was at `from`, or `stop`. Returns
/// (filler writes acknowledged, the last log index seen).
async fn fill_log(clients: Vec<NodeClient>, from: u64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..16u64 {
        let client = clients[writer as usize % clients.len()].clone();
        let (written, done, stop) = (written.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("jepsen/fill/{writer:02}/{:06}", n % 100);
                if client.put(&key, b"x").await.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let mut index = from;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for client in &clients {
            if let Ok(now) = client.raft_index().await {
                index = index.max(now);
                break;
            }
        }
        if index >= from + SNAPSHOT_FILL_ENTRIES {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    (written.load(Ordering::Relaxed), index)
}

/// How long a follower healed from the snapshot-install fault may take to reach the log index the
/// others had at the heal (a generous bound: an install takes well under a second here).
pub const CATCH_UP_BOUND: Duration = Duration::from_secs(30);

/// After the snapshot-install fault's heal: waits until `node`'s Raft index reaches the highest
/// index the other members report at the heal, within [`CATCH_UP_BOUND`] (not cut short by the
/// end of the run: the catch-up is what the fault tests).
async fn catch_up(
    clients: &NemesisClients,
    members: &[usize],
    node: usize,
    history: &History,
) -> Step {
    let start = history.now() as f64 / 1e9;
    let mut target = 0;
    for slot in members.iter().filter(|slot| **slot != node) {
        if let Ok(index) = clients.admin[*slot].raft_index().await {
            target = target.max(index);
        }
    }
    let began = std::time::Instant::now();
    let mut reached = 0;
    while began.elapsed() < CATCH_UP_BOUND {
        if let Ok(index) = clients.status[node].raft_index().await {
            reached = index;
            if index >= target {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = reached >= target;
    Step {
        step: "catch-up".to_string(),
        start,
        end: history.now() as f64 / 1e9,
        ok,
        detail: format!(
            "n{} at index {reached} of {target} after {:.1}s",
            node + 1,
            began.elapsed().as_secs_f64()
        ),
    }
}

/// The clients the nemesis uses.
#[derive(Debug, Clone)]
pub struct NemesisClients {
    /// Every slot, short deadline (leader lookups).
    pub status: Vec<NodeClient>,
    /// Every slot, long deadline (membership changes, filler writes).
    pub admin: Vec<NodeClient>,
    /// What the workload's clients use, so they follow membership changes.
    pub endpoints: Arc<Endpoints>,
}

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
    clients: NemesisClients,
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
        let (members, spares, slots) = {
            let cluster = lock(&cluster);
            let members = cluster.member_slots();
            let spares: Vec<usize> = (0..cluster.len())
                .filter(|slot| !members.contains(slot))
                .collect();
            (members, spares, cluster.len())
        };
        let leader_slot = match leader_id(&clients.status, members.len()).await {
            Some(id) => lock(&cluster).slot_of(id),
            None => None,
        };
        let fault = if kind == NemesisKind::Membership {
            match membership::plan(&members, &spares, leader_slot, &mut rng) {
                Some(change) => Fault::Membership(change),
                None => continue,
            }
        } else {
            let position = leader_slot.and_then(|slot| members.iter().position(|m| *m == slot));
            remap(
                plan(kind, members.len(), position, &mut rng),
                &members,
                slots,
            )
        };
        let mut record = FaultRecord {
            name: fault.name(),
            fault: fault.clone(),
            start: history.now() as f64 / 1e9,
            end: None,
            error: None,
            steps: Vec::new(),
        };
        println!(
            "jepsen-tests: nemesis: {:>7.1}s inject {:?}",
            record.start, fault
        );
        if let Fault::Membership(change) = &fault {
            let mut executor = Executor {
                cluster: &cluster,
                admin: &clients.admin,
                endpoints: &clients.endpoints,
                history: &history,
                leader: leader_slot,
                steps: Vec::new(),
            };
            if let Err(error) = executor.execute(change).await {
                record.error = Some(format!("{error:#}"));
            }
            record.steps = executor.steps;
            record.end = Some(history.now() as f64 / 1e9);
            println!(
                "jepsen-tests: nemesis: {:>7.1}s membership change done",
                record.end.unwrap_or(0.0)
            );
            records.push(record);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            continue;
        }
        // The log index before the cut, for the snapshot-install filler.
        let mut fill_from = None;
        if let Fault::Snapshot { node, .. } = fault {
            for slot in members.iter().filter(|slot| **slot != node) {
                if let Ok(index) = clients.admin[*slot].raft_index().await {
                    fill_from = Some(index);
                    break;
                }
            }
        }
        if let Err(error) = inject(&mut lock(&cluster), &fault) {
            record.error = Some(format!("{error:#}"));
        }
        let hold = match fault {
            Fault::Snapshot { .. } => schedule.snapshot_hold,
            _ => jittered(&mut rng, schedule.interval),
        };
        let started = std::time::Instant::now();
        if let (Fault::Snapshot { node, .. }, Some(from)) = (&fault, fill_from) {
            let writers: Vec<NodeClient> = members
                .iter()
                .filter(|slot| *slot != node)
                .map(|slot| clients.admin[*slot].clone())
                .collect();
            let fill_start = history.now() as f64 / 1e9;
            let (written, reached) = fill_log(writers, from, stop.clone()).await;
            let ok = reached >= from + SNAPSHOT_FILL_ENTRIES;
            println!(
                "jepsen-tests: nemesis: snapshot fill: {written} writes, log {from} -> {reached}"
            );
            record.steps.push(Step {
                step: "fill".to_string(),
                start: fill_start,
                end: history.now() as f64 / 1e9,
                ok,
                detail: format!("{written} filler writes; log index {from} -> {reached}"),
            });
        }
        sleep_unless_stopped(hold.saturating_sub(started.elapsed()), &stop).await;
        if let Err(error) = heal(&mut lock(&cluster), &fault) {
            record.error = Some(format!("heal: {error:#}"));
        }
        if let Fault::Snapshot { node, .. } = fault {
            record
                .steps
                .push(catch_up(&clients, &members, node, &history).await);
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
                        Fault::Snapshot { node, .. } => assert_ne!(*node, 1),
                        Fault::Partition { grudge, .. } => assert_eq!(grudge.len(), nodes),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn faults_planned_over_members_land_on_their_slots() {
        let members = [0, 3, 4];
        let partition = remap(
            Fault::Partition {
                shape: "isolate-leader".to_string(),
                grudge: vec![vec![1, 2], vec![0], vec![0]],
            },
            &members,
            5,
        );
        assert_eq!(
            partition,
            Fault::Partition {
                shape: "isolate-leader".to_string(),
                grudge: vec![vec![3, 4], vec![], vec![], vec![0], vec![0]],
            }
        );
        let kill = remap(
            Fault::Kill {
                nodes: vec![1],
                target: "random".to_string(),
            },
            &members,
            5,
        );
        assert_eq!(
            kill,
            Fault::Kill {
                nodes: vec![3],
                target: "random".to_string(),
            }
        );
    }
}
