//! One test run, start to verdict: build the hosts and start the cluster, run the clients and the
//! nemesis for `--time`, stop them, heal, wait for recovery, do the final reads and the state
//! comparison, tear everything down, check the history and write the run directory
//! (`history.jsonl`, `nemesis.jsonl`, `results.json`, each node's config, log and data).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use serde::Serialize;

use crate::checker::{convergence, CheckReport, Validity};
use crate::cluster::{self, Cluster, ClusterOptions, Endpoints};
use crate::history::{complete_ops, write_jsonl, History, OpType};
use crate::membership;
use crate::nemesis::{self, Fault, FaultRecord, NemesisClients, NemesisKind, Schedule};
use crate::net::{self, Subnet};
use crate::workload::{client_loop, CheckContext, ClientPlan, Workload, WorkloadKind};

/// Everything a run needs (the CLI fills it).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workload: WorkloadKind,
    pub nemesis: Vec<NemesisKind>,
    pub time: Duration,
    pub rate: f64,
    pub nodes: usize,
    pub concurrency: usize,
    pub seed: Option<u64>,
    pub keep_data: bool,
    pub beacond: PathBuf,
    pub config_dir: PathBuf,
    pub out_dir: PathBuf,
    pub subnet: Option<Subnet>,
    pub interval: Duration,
    pub deadline: Duration,
    /// Fewer completed (`ok`) ops than this makes the run inconclusive.
    pub min_ok: usize,
}

/// The verdict of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    Inconclusive,
}

/// `results.json`.
#[derive(Debug, Serialize)]
pub struct Results {
    pub verdict: Verdict,
    pub seed: u64,
    pub workload: WorkloadKind,
    pub nemesis: Vec<NemesisKind>,
    pub nodes: usize,
    pub time_seconds: f64,
    pub rate: f64,
    pub concurrency: usize,
    pub subnet: String,
    pub beacond: String,
    pub ops: OpCounts,
    pub faults: Vec<FaultRecord>,
    pub fault_counts: std::collections::BTreeMap<String, usize>,
    pub checks: Vec<CheckReport>,
    /// Under the snapshot nemesis: per node, how many snapshots it installed (openraft log lines).
    pub snapshot_installs: Option<std::collections::BTreeMap<String, usize>>,
    pub repro: String,
}

/// How many ops ended how.
#[derive(Debug, Default, Serialize)]
pub struct OpCounts {
    pub invoked: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

/// The cluster of the run in progress, for the signal handler's teardown.
pub type ClusterSlot = Arc<Mutex<Option<Arc<Mutex<Cluster>>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tears down the cluster in the slot, if any (signal handler and normal exit).
pub fn teardown(slot: &ClusterSlot) {
    let cluster = lock(slot).take();
    if let Some(cluster) = cluster {
        lock(&cluster).teardown();
    }
}

fn pick_subnet() -> anyhow::Result<Subnet> {
    let mut rng = rand::thread_rng();
    for _ in 0..50 {
        let subnet = Subnet([10, rng.gen_range(200..=254), rng.gen_range(0..=255)]);
        if !net::subnet_is_routed(subnet)? {
            return Ok(subnet);
        }
    }
    anyhow::bail!("no free 10.200-254.x.0/24 subnet found; pass --subnet")
}

/// The command line that repeats this run.
fn repro(options: &RunOptions, seed: u64) -> String {
    let nemesis: Vec<String> = options
        .nemesis
        .iter()
        .map(|kind| format!("{kind:?}").to_lowercase())
        .collect();
    format!(
        "jepsen-tests --workload {} --nemesis {} --time {} --rate {} --nodes {} --concurrency {} --interval {} --seed {seed} --beacond {}",
        format!("{:?}", options.workload).to_lowercase(),
        nemesis.join(","),
        options.time.as_secs(),
        options.rate,
        options.nodes,
        options.concurrency,
        options.interval.as_secs(),
        options.beacond.display()
    )
}

/// Runs one test and writes its run directory. Errors are harness failures (setup, IO), not
/// anomalies.
pub async fn run(options: RunOptions, slot: ClusterSlot) -> anyhow::Result<(Verdict, PathBuf)> {
    net::require_root()?;
    Workload::new(options.workload)?;
    let kinds = NemesisKind::expand(&options.nemesis);
    if ![3, 5].contains(&options.nodes) {
        anyhow::bail!("--nodes must be 3 or 5");
    }
    for tool in ["ip", "nft"] {
        net::run("which", &[tool]).with_context(|| format!("{tool} is required"))?;
    }
    let seed = options.seed.unwrap_or_else(|| rand::thread_rng().gen());
    println!("jepsen-tests: seed {seed}");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let nemesis_name = if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds
            .iter()
            .map(|kind| format!("{kind:?}"))
            .collect::<Vec<_>>()
            .join("+")
    };
    let run_name = format!("{stamp}-{:?}-{nemesis_name}-{seed}", options.workload).to_lowercase();
    let run_dir = options.out_dir.join(&run_name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    println!("jepsen-tests: run directory {}", run_dir.display());
    let subnet = match options.subnet {
        Some(subnet) => subnet,
        None => pick_subnet()?,
    };
    let prefix = format!("jt{:06x}", rand::thread_rng().gen::<u32>() & 0xff_ffff);
    let snapshot = kinds.contains(&NemesisKind::Snapshot);
    let membership_changes = kinds.contains(&NemesisKind::Membership);
    let cluster_options = ClusterOptions {
        nodes: options.nodes,
        spares: if membership_changes {
            membership::SPARES
        } else {
            0
        },
        beacond: options.beacond.clone(),
        template: options
            .config_dir
            .join(format!("netns-{}", options.nodes))
            .join("node.toml.in"),
        run_dir: run_dir.clone(),
        prefix: prefix.clone(),
        subnet,
        snapshot_after_entries: if snapshot { 200 } else { 100_000 },
        // openraft's info logs show snapshot installs, elections and membership changes.
        rust_log: if snapshot || membership_changes {
            "info,openraft=info".to_string()
        } else {
            "info,openraft=warn".to_string()
        },
    };
    println!(
        "jepsen-tests: {} nodes on {subnet} (prefix {prefix}), workload {:?}, nemesis {:?}, {}s at {} ops/s",
        options.nodes,
        options.workload,
        kinds,
        options.time.as_secs(),
        options.rate
    );
    let cluster = Arc::new(Mutex::new(Cluster::create(&cluster_options)?));
    *lock(&slot) = Some(cluster.clone());
    // Every slot's address (spare slots included); clients go to members only.
    let addresses = lock(&cluster).client_addresses();
    let status_clients = cluster::clients(&addresses, Duration::from_secs(1))?;
    let members_of = |clients: &[crate::client::NodeClient]| -> Vec<crate::client::NodeClient> {
        let members = lock(&cluster).member_slots();
        members.iter().map(|slot| clients[*slot].clone()).collect()
    };
    cluster::wait_until_healthy(&members_of(&status_clients), Duration::from_secs(60)).await?;

    // Clients and nemesis.
    let history = History::new(Instant::now());
    let workload = Arc::new(Workload::new(options.workload)?);
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = Arc::new(Endpoints::new(
        cluster::clients(&addresses, options.deadline)?,
        &lock(&cluster).member_slots(),
    ));
    let mean_gap = Duration::from_secs_f64(options.concurrency as f64 / options.rate.max(0.1));
    // Background tasks (watchers and compactor of the watch and catalog workloads): one
    // watcher per node.
    workload
        .start(
            &cluster,
            if membership_changes {
                &addresses
            } else {
                &addresses[..options.nodes]
            },
            options.nodes,
            seed,
            options.deadline,
            stop.clone(),
            &history,
        )
        .await?;
    let mut client_tasks = Vec::new();
    for index in 0..options.concurrency {
        client_tasks.push(tokio::spawn(client_loop(
            workload.clone(),
            endpoints.clone(),
            index % options.nodes,
            ClientPlan {
                first_process: index as u64,
                stride: options.concurrency as u64,
                mean_gap,
                seed: seed.wrapping_add(index as u64 + 1),
            },
            history.clone(),
            stop.clone(),
        )));
    }
    let schedule = Schedule {
        kinds: kinds.clone(),
        interval: options.interval,
        jitter: options.interval / 3,
        snapshot_hold: (options.interval * 2).max(Duration::from_secs(15)),
    };
    let nemesis_clients = NemesisClients {
        status: status_clients.clone(),
        admin: cluster::clients(&addresses, Duration::from_secs(10))?,
        endpoints: endpoints.clone(),
    };
    let nemesis_task = tokio::spawn(nemesis::run(
        schedule,
        cluster.clone(),
        nemesis_clients,
        seed,
        history.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(options.time).await;
    stop.store(true, Ordering::Relaxed);
    for task in client_tasks {
        task.await.context("client task")?;
    }
    let faults = nemesis_task.await.context("nemesis task")?;

    // Heal, recover, final reads, convergence.
    println!("jepsen-tests: final heal; waiting for recovery");
    lock(&cluster).heal()?;
    let mut checks = Vec::new();
    let mut recovery = CheckReport::new("recovery");
    if let Err(error) =
        cluster::wait_until_healthy(&members_of(&status_clients), Duration::from_secs(60)).await
    {
        recovery.anomaly(format!("{error:#}"));
    }
    let final_from = history.now();
    let final_clients = members_of(&cluster::clients(&addresses, Duration::from_secs(2))?);
    let first_final_process = crate::history::FIRST_FINAL_PROCESS;
    workload
        .final_reads(&final_clients, first_final_process, &history)
        .await;
    let convergence = match cluster::read_all_states(&final_clients, Duration::from_secs(30)).await
    {
        Ok(states) => convergence::check(&states),
        Err(error) => {
            let mut report = CheckReport::new("convergence");
            report.unknown(format!("{error:#}"));
            report
        }
    };
    let snapshot_installs = snapshot.then(|| lock(&cluster).logs_mention(SNAPSHOT_INSTALL_LOG));
    let slots = lock(&cluster).len();
    teardown(&slot);

    // Check.
    let ops = history.snapshot();
    write_jsonl(&run_dir.join("history.jsonl"), &ops)?;
    write_jsonl(&run_dir.join("nemesis.jsonl"), &faults)?;
    workload.write_files(&run_dir)?;
    let complete = complete_ops(&ops)?;
    let mut counts = OpCounts::default();
    for op in &complete {
        counts.invoked += 1;
        match op.outcome {
            OpType::Ok => counts.ok += 1,
            OpType::Fail => counts.fail += 1,
            OpType::Info | OpType::Invoke => counts.info += 1,
        }
    }
    checks.extend(workload.check(
        &complete,
        &CheckContext {
            final_from,
            faults: &faults,
            nemesis: &kinds,
        },
    ));
    checks.push(convergence);
    checks.push(recovery);
    if membership_changes {
        checks.push(membership::check(&faults));
    }
    if let Some(installs) = &snapshot_installs {
        checks.push(snapshot_install_check(&faults, installs));
    }
    let mut verdict = if checks
        .iter()
        .any(|check| check.validity == Validity::Invalid)
    {
        Verdict::Invalid
    } else if checks
        .iter()
        .any(|check| check.validity == Validity::Unknown)
    {
        Verdict::Inconclusive
    } else {
        Verdict::Valid
    };
    if verdict == Verdict::Valid && counts.ok < options.min_ok {
        println!(
            "jepsen-tests: only {} ops completed ok (need {}): inconclusive",
            counts.ok, options.min_ok
        );
        verdict = Verdict::Inconclusive;
    }
    let mut fault_counts = std::collections::BTreeMap::new();
    for fault in &faults {
        *fault_counts.entry(fault.name.clone()).or_insert(0) += 1;
    }
    let results = Results {
        verdict,
        seed,
        workload: options.workload,
        nemesis: kinds,
        nodes: options.nodes,
        time_seconds: options.time.as_secs_f64(),
        rate: options.rate,
        concurrency: options.concurrency,
        subnet: subnet.to_string(),
        beacond: options.beacond.display().to_string(),
        ops: counts,
        faults,
        fault_counts,
        checks,
        snapshot_installs,
        repro: repro(&options, seed),
    };
    std::fs::write(
        run_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    print_summary(&results);
    if verdict == Verdict::Valid && !options.keep_data {
        for index in 0..slots {
            let _ = std::fs::remove_dir_all(run_dir.join(format!("n{}", index + 1)).join("data"));
        }
    }
    Ok((verdict, run_dir))
}

/// What openraft 0.9 logs (`openraft=info`) when a follower installs a snapshot it received.
const SNAPSHOT_INSTALL_LOG: &str = "Raft::install_full_snapshot";

/// The snapshot-install scenario did what it is for: every follower it cut off past the purge
/// installed a snapshot (from its log; unknown otherwise — the run did not test catching up by
/// snapshot, whatever the other checks say), and each caught up within
/// [`nemesis::CATCH_UP_BOUND`] of its heal (an anomaly otherwise: a liveness failure).
fn snapshot_install_check(
    faults: &[FaultRecord],
    installs: &std::collections::BTreeMap<String, usize>,
) -> CheckReport {
    let mut report = CheckReport::new("snapshot-install");
    let mut cut_off = Vec::new();
    for fault in faults {
        if let Fault::Snapshot { node, kill } = &fault.fault {
            let filled = fault
                .steps
                .iter()
                .any(|step| step.step == "fill" && step.ok);
            let name = format!("n{}", node + 1);
            cut_off.push(serde_json::json!({
                "node": name, "kill": kill, "filled_past_purge": filled,
                "at": fault.start,
            }));
            for step in fault
                .steps
                .iter()
                .filter(|step| step.step == "catch-up" && !step.ok)
            {
                report.anomaly(format!(
                    "{name}, cut off at {:.1}s, did not catch up within {:?} of the heal: {}",
                    fault.start,
                    nemesis::CATCH_UP_BOUND,
                    step.detail
                ));
            }
            if filled && installs.get(&name).copied().unwrap_or(0) == 0 {
                report.unknown(format!(
                    "{name} was cut off at {:.1}s past the log purge but its log shows no \"{SNAPSHOT_INSTALL_LOG}\"",
                    fault.start
                ));
            }
        }
    }
    if cut_off.is_empty() {
        report.unknown("no follower was cut off (run longer or with a shorter --interval)".into());
    }
    report.stats = serde_json::json!({ "cut_off": cut_off, "installs": installs });
    report
}

fn print_summary(results: &Results) {
    println!(
        "jepsen-tests: ops invoked {} ok {} fail {} info {}; faults {:?}",
        results.ops.invoked,
        results.ops.ok,
        results.ops.fail,
        results.ops.info,
        results.fault_counts
    );
    for check in &results.checks {
        println!(
            "jepsen-tests: check {:<12} {:?} {}",
            check.checker, check.validity, check.stats
        );
        for anomaly in check.anomalies.iter().take(10) {
            println!("jepsen-tests:   {anomaly}");
        }
    }
    println!(
        "jepsen-tests: verdict {:?} (seed {})",
        results.verdict, results.seed
    );
}
