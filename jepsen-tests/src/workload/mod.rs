//! Workloads: what the clients do and which checkers judge it. Each logical client is a loop
//! with one outstanding op, bound to one node; an op it cannot resolve (timeout, ambiguous error)
//! is recorded as `info` and the client continues under a new process id, as Jepsen does. Writes
//! are never retried.
//!
//! - `register`: reads, unique puts and CAS txns on a rotating key (≤ [`register::OPS_PER_KEY`]
//!   ops a key), judged per key by Wing–Gong–Lowe plus the global revision checks.
//! - `set`: create-only puts of unique elements and whole-set reads; final reads on every node.
//! - `watch`: puts, deletes and multi-key txns on `jepsen/w/` while watchers start at recent
//!   revisions, cancel and resume across nodes, with compaction running; judged by the nine
//!   watch checks against a ground-truth watch from revision 1 ([`watch`]).
//! - `lease`: grants, lease-bound puts, keepers that keep leases alive and then stop or revoke,
//!   reads and time-to-live queries; judged by the lease checker ([`lease`]).
//! - `catalog`: registrations (persistent and lease-bound), deregistrations, maintenance,
//!   heartbeats and GetService reads, with WatchService watchers; judged per instance by
//!   Wing–Gong–Lowe and the service watches against a ground-truth etcd watch ([`catalog`]).
//! - `health`: the catalog workload plus instances with HTTP checks the cluster runs against
//!   endpoints this process serves, taken down, flipped and cut off from single nodes on a
//!   schedule ([`health`]); judged by the catalog checkers and the health checker (safety, cause,
//!   liveness after the heal).

pub mod catalog;
pub mod health;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::CheckReport;
use crate::client::NodeClient;
use crate::cluster::{Cluster, Endpoints};
use crate::history::{CompleteOp, History, OpType};
use crate::nemesis::{FaultRecord, NemesisKind};

/// Which workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Register,
    Set,
    Watch,
    Lease,
    Catalog,
    /// The catalog workload plus health checks under faults.
    Health,
}

/// A workload's shared state.
#[derive(Debug)]
pub enum Workload {
    Register(register::Register),
    Set(set::Set),
    Watch(watch::Watch),
    Lease(lease::Lease),
    /// Also `--workload health` (the catalog with its health part on).
    Catalog(catalog::Catalog),
}

/// What the checkers get besides the history.
#[derive(Debug, Clone)]
pub struct CheckContext<'a> {
    /// Ops invoked at or after this time (ns) are the final reads, after the heal.
    pub final_from: u64,
    pub faults: &'a [FaultRecord],
    /// The nemeses enabled (expanded).
    pub nemesis: &'a [NemesisKind],
}

impl Workload {
    pub fn new(kind: WorkloadKind) -> anyhow::Result<Self> {
        Ok(match kind {
            WorkloadKind::Register => Workload::Register(register::Register::default()),
            WorkloadKind::Set => Workload::Set(set::Set::default()),
            WorkloadKind::Watch => Workload::Watch(watch::Watch::default()),
            WorkloadKind::Lease => Workload::Lease(lease::Lease::default()),
            WorkloadKind::Catalog => Workload::Catalog(catalog::Catalog::new(false)),
            WorkloadKind::Health => Workload::Catalog(catalog::Catalog::new(true)),
        })
    }

    /// Runs one op (invoke + completion recorded) and returns its outcome.
    pub async fn step(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        match self {
            Workload::Register(register) => register.step(client, process, rng, history).await,
            Workload::Set(set) => set.step(client, process, history).await,
            Workload::Watch(watch) => watch.step(client, process, rng, history).await,
            Workload::Lease(lease) => lease.step(client, process, rng, history).await,
            Workload::Catalog(catalog) => catalog.step(client, process, rng, history).await,
        }
    }

    /// After the heal: reads on every node, recorded in the history (processes from `first_process`).
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        match self {
            Workload::Register(register) => {
                register.final_reads(clients, first_process, history).await
            }
            Workload::Set(set) => set.final_reads(clients, first_process, history).await,
            Workload::Watch(watch) => watch.final_reads(clients, first_process, history).await,
            Workload::Lease(lease) => lease.final_reads(clients, first_process, history).await,
            Workload::Catalog(catalog) => {
                catalog.final_reads(clients, first_process, history).await
            }
        }
    }

    /// Judges the history.
    pub fn check(&self, ops: &[CompleteOp], context: &CheckContext<'_>) -> Vec<CheckReport> {
        match self {
            Workload::Register(_) => vec![crate::checker::register::check(ops)],
            Workload::Set(_) => vec![crate::checker::set::check(ops, context.final_from)],
            Workload::Watch(watch) => vec![crate::checker::watch::check(&watch.entries())],
            Workload::Lease(_) => vec![crate::checker::lease::check(
                ops,
                context.final_from,
                context.faults,
                context.nemesis,
            )],
            Workload::Catalog(catalog) => {
                let truth = catalog.truth_entries();
                let mut reports = crate::checker::catalog::check(
                    ops,
                    &truth,
                    &catalog.watch_entries(),
                    &catalog.convergence_entries(),
                    context.final_from,
                );
                if let Some(health) = catalog.health_entries() {
                    reports.push(crate::checker::health::check(
                        ops,
                        &truth,
                        &health,
                        context.faults,
                    ));
                }
                reports
            }
        }
    }

    /// Starts the workload's background tasks (watchers and compactor of the watch and catalog
    /// workloads; the lease workload's keepers start with their grants; the health workload's
    /// endpoints, registrations and endpoint nemesis): `watchers` checked watchers; they stop
    /// with `stop`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        cluster: &Arc<Mutex<Cluster>>,
        addresses: &[String],
        watchers: usize,
        seed: u64,
        deadline: Duration,
        stop: Arc<AtomicBool>,
        history: &History,
    ) -> anyhow::Result<()> {
        match self {
            Workload::Watch(watch) => {
                watch.start(addresses, watchers, seed, deadline, stop, history)
            }
            Workload::Lease(lease) => lease.start(addresses, seed, deadline, stop, history),
            Workload::Catalog(catalog) => {
                catalog
                    .start(cluster, addresses, watchers, seed, deadline, stop, history)
                    .await
            }
            Workload::Register(_) | Workload::Set(_) => Ok(()),
        }
    }

    /// Writes the workload's own records into the run directory (`watch.jsonl`; the catalog's
    /// `watch.jsonl`, `catalog-watch.jsonl` and `catalog-convergence.jsonl`, and the health
    /// workload's `health.jsonl`).
    pub fn write_files(&self, run_dir: &std::path::Path) -> anyhow::Result<()> {
        use crate::history::write_jsonl;
        match self {
            Workload::Watch(watch) => write_jsonl(&run_dir.join("watch.jsonl"), &watch.entries()),
            Workload::Catalog(catalog) => {
                write_jsonl(&run_dir.join("watch.jsonl"), &catalog.truth_entries())?;
                write_jsonl(
                    &run_dir.join("catalog-watch.jsonl"),
                    &catalog.watch_entries(),
                )?;
                if let Some(health) = catalog.health_entries() {
                    write_jsonl(&run_dir.join("health.jsonl"), &health)?;
                }
                write_jsonl(
                    &run_dir.join("catalog-convergence.jsonl"),
                    &catalog.convergence_entries(),
                )
            }
            Workload::Register(_) | Workload::Set(_) | Workload::Lease(_) => Ok(()),
        }
    }
}

/// How one logical client runs.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Its first process id; after every `info` it continues as `process + stride`.
    pub first_process: u64,
    pub stride: u64,
    /// Mean pause between ops (uniform in 0..2×).
    pub mean_gap: Duration,
    pub seed: u64,
}

/// Drives one logical client until `stop`: one op at a time, a new process id after every `info`.
/// Each op goes to the client's `home` slot while it is a member, else to another member
/// ([`Endpoints::pick`]), so clients follow membership changes.
pub async fn client_loop(
    workload: Arc<Workload>,
    endpoints: Arc<Endpoints>,
    home: usize,
    plan: ClientPlan,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let ClientPlan {
        first_process,
        stride,
        mean_gap,
        seed,
    } = plan;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = first_process;
    while !stop.load(Ordering::Relaxed) {
        let gap = mean_gap.mul_f64(rng.gen_range(0.0..2.0));
        tokio::time::sleep(gap).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let client = endpoints.pick(home).clone();
        match workload.step(&client, process, &mut rng, &history).await {
            OpType::Info => {
                process += stride;
                // A node that refuses connections answers at once; do not spin on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            OpType::Fail => tokio::time::sleep(Duration::from_millis(50)).await,
            OpType::Ok | OpType::Invoke => {}
        }
    }
}
