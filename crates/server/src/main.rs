//! `beacond`, a Beacon cluster member. Parses arguments and hands over to [`beacon_server::run`]
//! (or to [`beacon_server::backup::restore`] for `beacond restore`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use beacon_server::config::ServerConfig;
use clap::{Parser, Subcommand, ValueEnum};

/// A Beacon cluster member: Raft-replicated key-value store speaking etcd's v3 API.
#[derive(Debug, Parser)]
#[command(name = "beacond", version)]
struct Args {
    /// TOML config file (see cluster-config/). Without one, runs a single-node cluster on
    /// 127.0.0.1:2379 with its data in ./default.beacon.
    #[arg(long, env = "BEACON_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Overrides the config's data directory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log lines as text for people, or as one JSON object per line (fields and span context
    /// as keys) for log collectors. The level filter comes from RUST_LOG.
    #[arg(long, env = "BEACON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Without a command, runs the member.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds this member's data directory for a NEW cluster from a backup (`beacon snapshot
    /// save`, `etcdctl snapshot save` against Beacon), then exits. Run it for every member with
    /// that member's config (a new cluster_token gives the new cluster its own id), then start
    /// the members. The backup's SHA-256 is checked first; the data directory must not exist.
    Restore {
        /// The backup file.
        backup: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.with_target(false).init(),
        // Targets kept: a collector filters on them (openraft's lines, ours).
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("beacond: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::single_node_default(),
    };
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(Command::Restore { backup }) = &args.command {
        return restore(&config, backup);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(beacon_server::run(config, shutdown_signal()))
}

fn restore(config: &ServerConfig, backup: &Path) -> anyhow::Result<()> {
    let summary = beacon_server::backup::restore(config, backup)?;
    let header = &summary.header;
    println!(
        "restored {} into {}: revision {}, {} records, {} leases (taken on member {:x} of cluster \
         {:016x}); this member is {} ({:x}) of cluster {:016x}",
        backup.display(),
        config.data_dir.display(),
        header.current_revision,
        summary.records,
        summary.leases,
        header.member_id,
        header.cluster_id,
        config.name,
        config.id,
        config.cluster_id()
    );
    if header.cluster_id == config.cluster_id() {
        println!(
            "note: the new cluster has the backup's cluster id; give it another cluster_token \
             if members of the old cluster may still be running"
        );
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
