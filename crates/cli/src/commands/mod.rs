//! One module per command group. Each command calls the client and hands its result to
//! [`crate::output`]; none formats text itself.

pub mod bench;
pub mod bench_catalog;
pub mod bench_checks;
pub mod bench_dns;
pub mod bench_watch;
pub mod endpoint;
pub mod kv;
pub mod lease;
pub mod member;
pub mod service;
pub mod snapshot;
pub mod txn;
pub mod watch;

use anyhow::Context;
use beacon_client::{Client, ClientOptions};

use crate::args::{Cli, Command};

/// Runs the parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = ClientOptions {
        request_timeout: cli.timeout,
        connect_timeout: cli.timeout.min(std::time::Duration::from_secs(2)),
    };
    let endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|endpoint| endpoint.trim().to_string())
        .filter(|endpoint| !endpoint.is_empty())
        .collect();
    let client = Client::connect(endpoints, options)
        .await
        .context("invalid --endpoints")?;
    let format = cli.format;
    match cli.command {
        Command::Put(args) => kv::put(&client, format, args).await,
        Command::Get(args) => kv::get(&client, format, args).await,
        Command::Del(args) => kv::delete(&client, format, args).await,
        Command::Compact(args) => kv::compact(&client, format, args).await,
        Command::Txn(args) => txn::run(&client, format, args).await,
        Command::Watch(args) => watch::run(&client, format, args).await,
        Command::Lease { command } => lease::run(&client, format, command).await,
        Command::Service { command } => service::run(&client, format, command).await,
        Command::Member { command } => member::run(&client, format, command).await,
        Command::Endpoint { command } => endpoint::run(&client, format, command).await,
        Command::Snapshot { command } => snapshot::run(&client, format, command).await,
        Command::Bench { case } => bench::run(&client, format, case).await,
    }
}
