//! `jepsen-tests`: the CLI. Parses arguments, runs one test (or re-checks a stored history) and
//! maps the verdict to the exit code: 0 valid, 1 anomalies found, 2 inconclusive, 3 harness error.
//! Ctrl-C and SIGTERM tear the cluster and network down before exiting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::net::Subnet;
use jepsen_tests::run::{run, teardown, ClusterSlot, RunOptions, Verdict};
use jepsen_tests::workload::WorkloadKind;

/// Fault-injection tests for Beacon: nodes in network namespaces, a nemesis, checked histories.
#[derive(Debug, Parser)]
#[command(name = "jepsen-tests", version, args_override_self = true)]
struct Args {
    /// What the clients do.
    #[arg(long, value_enum, default_value = "register")]
    workload: WorkloadKind,
    /// Faults to inject, comma-separated (none, kill, pause, partition, loss, clock,
    /// snapshot-install, membership, all).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "partition")]
    nemesis: Vec<NemesisKind>,
    /// Seconds of client load (the heal, recovery and final reads come after).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Target ops per second, all clients together.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Logical clients (default: 2 per node).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seed for the clients and the nemesis schedule (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the nodes' data directories even when the run is valid.
    #[arg(long)]
    keep_data: bool,
    /// Seconds between nemesis actions (± a third).
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Per-request client deadline in milliseconds (1–2 s).
    #[arg(long, default_value_t = 1500)]
    deadline_ms: u64,
    /// The beacond binary to test.
    #[arg(long, env = "BEACOND")]
    beacond: Option<PathBuf>,
    /// Directory holding the netns-3/ and netns-5/ config templates.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Where run directories go.
    #[arg(long, default_value = "/tmp/beacon-jepsen")]
    out_dir: PathBuf,
    /// Private /24 for the nodes (default: a free 10.200-254.x.0/24).
    #[arg(long)]
    subnet: Option<String>,
    /// Minimum ops completed ok for a verdict other than inconclusive (default: 20 % of
    /// time × rate, at least 30).
    #[arg(long)]
    min_ok: Option<usize>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn options(args: Args) -> anyhow::Result<RunOptions> {
    let beacond = args.beacond.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        target.join("debug").join("beacond")
    });
    let subnet = args.subnet.as_deref().map(Subnet::parse).transpose()?;
    let expected_ops = args.time as f64 * args.rate;
    Ok(RunOptions {
        workload: args.workload,
        nemesis: args.nemesis,
        time: Duration::from_secs(args.time),
        rate: args.rate,
        nodes: args.nodes,
        concurrency: args.concurrency.unwrap_or(2 * args.nodes).max(1),
        seed: args.seed,
        keep_data: args.keep_data,
        beacond: std::fs::canonicalize(&beacond).unwrap_or(beacond),
        config_dir: args
            .config_dir
            .unwrap_or_else(|| repo_root().join("cluster-config")),
        out_dir: args.out_dir,
        subnet,
        interval: Duration::from_secs(args.interval.max(1)),
        deadline: Duration::from_millis(args.deadline_ms.clamp(200, 10_000)),
        min_ok: args
            .min_ok
            .unwrap_or(((expected_ops * 0.2) as usize).max(30)),
    })
}

async fn signal() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = match options(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("jepsen-tests: error: {error:#}");
            return ExitCode::from(3);
        }
    };
    let slot = ClusterSlot::default();
    let outcome = tokio::select! {
        outcome = run(options, slot.clone()) => outcome,
        name = signal() => {
            eprintln!("jepsen-tests: {name}: tearing down");
            teardown(&slot);
            return ExitCode::from(130);
        }
    };
    // Covers errors and panics in the run: the cluster in the slot is still up.
    teardown(&slot);
    match outcome {
        Ok((Verdict::Valid, _)) => ExitCode::SUCCESS,
        Ok((Verdict::Invalid, dir)) => {
            eprintln!(
                "jepsen-tests: ANOMALIES FOUND, see {}/results.json",
                dir.display()
            );
            ExitCode::from(1)
        }
        Ok((Verdict::Inconclusive, dir)) => {
            eprintln!(
                "jepsen-tests: INCONCLUSIVE, see {}/results.json",
                dir.display()
            );
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("jepsen-tests: error: {error:#}");
            ExitCode::from(3)
        }
    }
}
