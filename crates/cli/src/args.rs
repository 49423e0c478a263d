//! Command-line grammar (clap derive): global flags and one subcommand enum. Argument structs
//! of each command group live next to the command in `commands/`.

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{bench, endpoint, kv, lease, member, service, snapshot, txn, watch};
use crate::output::Format;

/// `beacon`: talk to a Beacon (or any etcd v3) cluster.
#[derive(Debug, Parser)]
#[command(name = "beacon", version, about)]
pub struct Cli {
    /// Comma-separated cluster endpoints (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        env = "BEACON_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Per-request timeout, e.g. 500ms, 5s, 1m.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `beacon` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a key.
    Put(kv::PutArgs),
    /// Read a key or a range of keys.
    Get(kv::GetArgs),
    /// Delete a key or a range of keys.
    Del(kv::DeleteArgs),
    /// Compact the key-value history up to a revision.
    Compact(kv::CompactArgs),
    /// Run a transaction (from flags, or from stdin in etcdctl's txn format).
    Txn(txn::TxnArgs),
    /// Print changes to a key or range as they happen (Ctrl-C to stop).
    Watch(watch::WatchArgs),
    /// Leases: grant, revoke, keep alive, list, time to live.
    Lease {
        /// The lease command.
        #[command(subcommand)]
        command: lease::LeaseCommand,
    },
    /// The service catalog: register, deregister, list, show, discover, watch, maintenance.
    Service {
        /// The catalog command.
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Cluster membership.
    Member {
        /// The member command.
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    /// Per-endpoint status, health and data hashes.
    Endpoint {
        /// The endpoint command.
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
    /// Backups: save one member's state to a file (restore with `beacond restore`).
    Snapshot {
        /// The snapshot command.
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Benchmark a cluster: the etcd v3 cases work against etcd and Beacon alike, the catalog
    /// cases need Beacon.
    Bench {
        /// The benchmark case.
        #[command(subcommand)]
        case: bench::BenchCase,
    },
}

impl Cli {
    /// Parses the command line like [`Parser::parse`], then checks what the grammar cannot
    /// express (see [`Command::validate`]); either kind of mistake is a usage error: printed
    /// with the subcommand's usage, exit status 2, before anything is sent.
    pub fn parse_valid() -> Cli {
        let cli = Cli::parse();
        if let Err((path, message)) = cli.command.validate() {
            let mut command = Cli::command();
            // Built so that subcommands know their full name ("beacon service register").
            command.build();
            for name in path {
                match command.find_subcommand(name) {
                    Some(found) => command = found.clone(),
                    None => break,
                }
            }
            command
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
        cli
    }
}

impl Command {
    /// Flag combinations clap's grammar cannot refuse (check parameters of `service register`
    /// without a check they apply to): the subcommand's path and the message.
    pub fn validate(&self) -> Result<(), (&'static [&'static str], String)> {
        match self {
            Command::Service {
                command: service::ServiceCommand::Register(args),
            } => args
                .instance()
                .map(drop)
                .map_err(|message| (&["service", "register"][..], message)),
            _ => Ok(()),
        }
    }

    /// Whether the command handles SIGINT and SIGTERM itself, to clean up before it exits
    /// (`service register --ttl` deregisters), instead of `main` cutting it short on Ctrl-C.
    pub fn handles_signals(&self) -> bool {
        matches!(
            self,
            Command::Service {
                command: service::ServiceCommand::Register(args)
            } if args.ttl.is_some()
        )
    }
}

/// Parses `500ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_seconds) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else if let Some(number) = text.strip_suffix('h') {
        (number, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (try 500ms, 5s, 1m or 1h)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("duration {text:?} must be positive"));
    }
    // from_secs_f64 panics beyond about 584 billion years; user input never panics.
    Duration::try_from_secs_f64(value * unit_seconds)
        .map_err(|_| format!("duration {text:?} is too long"))
}

/// Parses a lease id the way etcdctl does: hexadecimal, optionally prefixed with `0x`.
pub fn parse_lease_id(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .map(|id| id as i64)
        .map_err(|_| format!("invalid lease id {text:?} (expected hex, as etcdctl prints it)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(
            parse_duration("1e300h").is_err(),
            "too long, without a panic"
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(parse_lease_id("694d77aa9e38260f"), Ok(0x694d77aa9e38260f));
        assert_eq!(parse_lease_id("0x10"), Ok(16));
        assert!(parse_lease_id("xyz").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
