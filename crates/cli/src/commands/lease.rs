//! `lease grant|revoke|keep-alive|list|ttl`, etcdctl's lease commands (ids in hex, as etcdctl
//! prints and accepts them). `keep-alive` stays in the foreground, renewing the lease from the
//! client's background keepalive, until Ctrl-C (handled in `main`) or the lease is lost.

use beacon_client::{Client, LeaseState};
use clap::Subcommand;

use crate::args::parse_lease_id;
use crate::output::{self, Format};

/// Lease commands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (the cluster may raise it to its minimum).
    Grant {
        /// Time to live in seconds.
        ttl: i64,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Keep a lease alive until Ctrl-C (or renew it once with --once).
    KeepAlive {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// List every lease.
    List,
    /// A lease's granted and remaining TTL.
    Ttl {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also list the keys attached to the lease.
        #[arg(long)]
        keys: bool,
    },
}

/// Runs a lease command.
pub async fn run(client: &Client, format: Format, command: LeaseCommand) -> anyhow::Result<()> {
    match command {
        LeaseCommand::Grant { ttl } => {
            anyhow::ensure!(ttl > 0, "TTL must be at least 1 second");
            let response = client.lease_grant(ttl, 0).await?;
            println!("{}", output::lease_grant(format, &response));
        }
        LeaseCommand::Revoke { id } => {
            let response = client.lease_revoke(id).await?;
            println!("{}", output::lease_revoke(format, id, &response));
        }
        LeaseCommand::KeepAlive { id, once: true } => {
            let ttl = client.lease_keep_alive_once(id).await?;
            anyhow::ensure!(ttl > 0, "lease {id:016x} expired or revoked");
            println!("{}", output::lease_keep_alive(format, id, ttl));
        }
        LeaseCommand::KeepAlive { id, once: false } => keep_alive(client, format, id).await?,
        LeaseCommand::List => {
            let response = client.lease_leases().await?;
            println!("{}", output::lease_list(format, &response));
        }
        LeaseCommand::Ttl { id, keys } => {
            let response = client.lease_time_to_live(id, keys).await?;
            println!("{}", output::lease_ttl(format, &response, keys));
        }
    }
    Ok(())
}

/// Prints every renewal until the lease is lost (an error) or the user interrupts.
async fn keep_alive(client: &Client, format: Format, id: i64) -> anyhow::Result<()> {
    // The first keepalive learns the TTL and fails early on an unknown lease.
    let ttl = client.lease_keep_alive_once(id).await?;
    anyhow::ensure!(ttl > 0, "lease {id:016x} expired or revoked");
    println!("{}", output::lease_keep_alive(format, id, ttl));
    let keep_alive = client.keep_alive(id, ttl);
    let mut states = keep_alive.subscribe();
    loop {
        // The sender lives in `keep_alive`, which outlives this loop.
        if states.changed().await.is_err() {
            anyhow::bail!("lease keepalive stopped");
        }
        let state = states.borrow_and_update().clone();
        match state {
            LeaseState::Alive { ttl, .. } => {
                println!("{}", output::lease_keep_alive(format, id, ttl));
            }
            LeaseState::Starting => {}
            LeaseState::Lost => anyhow::bail!("lease {id:016x} expired or revoked"),
            LeaseState::Failed(error) => anyhow::bail!("lease keepalive failed: {error}"),
            LeaseState::Stopped => anyhow::bail!("lease keepalive stopped"),
        }
    }
}
