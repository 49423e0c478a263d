//! `endpoint status`, `endpoint health` and `endpoint hashkv`: one probe per endpoint,
//! concurrently, without failover (the answer is about that member). Any failing endpoint makes
//! the exit status 1.

use std::time::Instant;

use beacon_client::{Client, GetOptions};
use clap::Subcommand;
use tokio::task::JoinSet;

use crate::output::{self, EndpointHashKv, EndpointHealth, EndpointStatus, Format};

/// Per-endpoint commands.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Status of each endpoint: id, version, db size, leadership, raft term and indexes.
    Status,
    /// Whether each endpoint serves a linearizable read.
    Health,
    /// Each endpoint's hash of its key-value history up to a revision (etcd's HashKV): members
    /// with the same data at that revision and the same compaction answer the same hash.
    Hashkv {
        /// The revision to hash up to (0: each member's current revision).
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
}

/// Runs an endpoint command.
pub async fn run(client: &Client, format: Format, command: EndpointCommand) -> anyhow::Result<()> {
    let endpoints = client.endpoints();
    let failed = match command {
        EndpointCommand::Status => {
            let rows = probe_all(client, |client, endpoint| async move {
                let result = client
                    .status(&endpoint)
                    .await
                    .map_err(|error| error.to_string());
                EndpointStatus { endpoint, result }
            })
            .await;
            println!("{}", output::endpoint_status(format, &rows));
            rows.iter().filter(|row| row.result.is_err()).count()
        }
        EndpointCommand::Health => {
            let rows = probe_all(client, |client, endpoint| async move {
                let started = Instant::now();
                // Like etcdctl: a linearizable read of an arbitrary key needs a quorum and a
                // leader, which is what "healthy" means for a member.
                let result = client
                    .get_from_endpoint(&endpoint, "health", GetOptions::default())
                    .await;
                EndpointHealth {
                    endpoint,
                    took: started.elapsed(),
                    error: result.err().map(|error| error.to_string()),
                }
            })
            .await;
            println!("{}", output::endpoint_health(format, &rows));
            rows.iter().filter(|row| row.error.is_some()).count()
        }
        EndpointCommand::Hashkv { revision } => {
            let rows = probe_all(client, |client, endpoint| async move {
                let result = client
                    .hash_kv(&endpoint, revision)
                    .await
                    .map_err(|error| error.to_string());
                EndpointHashKv { endpoint, result }
            })
            .await;
            println!("{}", output::endpoint_hash_kv(format, &rows));
            rows.iter().filter(|row| row.result.is_err()).count()
        }
    };
    if failed > 0 {
        anyhow::bail!("{failed} of {} endpoints failed", endpoints.len());
    }
    Ok(())
}

/// Runs `probe` for every endpoint concurrently; rows come back in endpoint order.
async fn probe_all<Row, Probe, Fut>(client: &Client, probe: Probe) -> Vec<Row>
where
    Row: Send + 'static,
    Probe: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Row> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (index, endpoint) in client.endpoints().into_iter().enumerate() {
        let probe = probe(client.clone(), endpoint);
        tasks.spawn(async move { (index, probe.await) });
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A probe never panics; if one did, leaving its row out is the most useful answer.
        if let Ok(row) = joined {
            rows.push(row);
        }
    }
    rows.sort_by_key(|(index, _)| *index);
    rows.into_iter().map(|(_, row)| row).collect()
}
