//! `beacond`, a Beacon cluster member. Parses arguments and hands over to [`beacon_server::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use beacon_server::config::ServerConfig;
use clap::{Parser, ValueEnum};

/// A Beacon cluster member: Raft-replicated key-value store speaking etcd's v3 API.
#[derive(Debug, Parser)]
#[command(name = "beacond", version)]
struct Args {
    /// TOML config file (see cluster-config/). Without one, runs a single-node cluster on
    /// 127.0.0.1:2379 with its data in ./default.beacon.
    #[arg(long, env = "BEACON_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides the config's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log lines as text for people, or as one JSON object per line (fields and span context
    /// as keys) for log collectors. The level filter comes from RUST_LOG.
    #[arg(long, env = "BEACON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(beacon_server::run(config, shutdown_signal()))
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
