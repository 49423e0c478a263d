//! `service register|deregister|list|show|discover|watch|maintenance`: Beacon's catalog.
//!
//! `service register` without `--ttl` stores a persistent instance and returns. With `--ttl` it
//! is a minimal sidecar: the instance lives by a lease the command keeps alive
//! ([`beacon_client::Registration`]) until SIGINT or SIGTERM, then it is deregistered (so it
//! disappears at once) and the command exits 0; if the process dies instead, the instance
//! disappears when the lease expires. This is the one command that handles signals itself
//! (see [`crate::args::Command::handles_signals`]).

use std::collections::HashMap;

use anyhow::Context;
use beacon_client::beaconpb::{DiscoverRequest, HealthFilter, Instance, Order};
use beacon_client::Client;
use clap::{Args, Subcommand, ValueEnum};

use crate::args::parse_duration;
use crate::output::{self, Format};

/// Catalog commands.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Register an instance (persistent; with --ttl, kept alive until Ctrl-C or SIGTERM).
    Register(RegisterArgs),
    /// Remove an instance.
    Deregister {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
    },
    /// Every service with its instance counts by health.
    List {
        /// Answer from the contacted member's state (fast, possibly stale).
        #[arg(long)]
        serializable: bool,
    },
    /// Every instance of a service, with its checks.
    Show {
        /// The service.
        service: String,
        /// Answer from the contacted member's state (fast, possibly stale).
        #[arg(long)]
        serializable: bool,
    },
    /// The instances of a service to call, filtered and ordered.
    Discover(DiscoverArgs),
    /// Print a service's instances, then every change (Ctrl-C to stop).
    Watch {
        /// The service.
        service: String,
        /// Print every change from this revision on, without the initial set (0: the current
        /// set, then changes).
        #[arg(long = "rev", default_value_t = 0)]
        revision: i64,
    },
    /// Turn an instance's maintenance (draining) flag on or off.
    Maintenance {
        /// on or off.
        #[arg(value_enum)]
        mode: MaintenanceMode,
        /// The service.
        service: String,
        /// The instance id.
        id: String,
        /// Why (shown with the instance).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `service maintenance on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceMode {
    /// Drain the instance: discovery and DNS leave it out.
    On,
    /// Back in service.
    Off,
}

/// `service register NAME`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The service (a DNS label: lowercase letters, digits, '-').
    pub service: String,
    /// The instance's address (IP or DNS name).
    #[arg(long)]
    pub address: String,
    /// The instance's port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// The instance id (default: NAME-ADDRESS-PORT, with characters other than letters,
    /// digits, '.', '_' and '-' replaced by '-').
    #[arg(long)]
    pub id: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// A metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Relative weight for weighted ordering and DNS (default 1).
    #[arg(long)]
    pub weight: Option<u32>,
    /// Live by a lease of this TTL, kept alive until Ctrl-C or SIGTERM (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
}

/// `service discover NAME`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The service.
    pub service: String,
    /// Only instances with this tag (repeatable: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only instances with this metadata entry KEY=VALUE (repeatable: all of them).
    #[arg(long = "meta", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Only passing (and warning) instances, possibly none (default: those, or every instance
    /// when none passes).
    #[arg(long, conflicts_with = "all")]
    pub passing: bool,
    /// Every instance, whatever its health.
    #[arg(long)]
    pub all: bool,
    /// Weighted random order instead of a shuffle.
    #[arg(long)]
    pub weighted: bool,
    /// At most this many instances (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Answer from the contacted member's state (fast, possibly stale).
    #[arg(long)]
    pub serializable: bool,
}

/// Parses `KEY=VALUE` (the value may contain '=').
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// The instance id `service register` uses without `--id`: `NAME-ADDRESS-PORT`, with every
/// character the catalog does not allow in ids replaced by '-'.
pub fn default_instance_id(service: &str, address: &str, port: u16) -> String {
    format!("{service}-{address}-{port}")
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-') {
                character
            } else {
                '-'
            }
        })
        .collect()
}

impl RegisterArgs {
    /// The instance these flags describe.
    pub fn instance(&self) -> Instance {
        Instance {
            service: self.service.clone(),
            id: self
                .id
                .clone()
                .unwrap_or_else(|| default_instance_id(&self.service, &self.address, self.port)),
            address: self.address.clone(),
            port: u32::from(self.port),
            tags: self.tags.clone(),
            metadata: self.metadata.iter().cloned().collect(),
            weight: self.weight.unwrap_or(0),
            ..Default::default()
        }
    }

    /// The lease TTL in whole seconds (rounded up), when `--ttl` was given.
    pub fn ttl_seconds(&self) -> Option<i64> {
        self.ttl.map(|ttl| (ttl.as_secs_f64().ceil() as i64).max(1))
    }
}

impl DiscoverArgs {
    /// The wire request these flags select.
    pub fn request(&self) -> DiscoverRequest {
        let health = if self.passing {
            HealthFilter::Passing
        } else if self.all {
            HealthFilter::All
        } else {
            HealthFilter::PassingOrElseAll
        };
        let order = if self.weighted {
            Order::Weighted
        } else {
            Order::Shuffle
        };
        DiscoverRequest {
            service: self.service.clone(),
            tags: self.tags.clone(),
            metadata: self.metadata.iter().cloned().collect::<HashMap<_, _>>(),
            health: health as i32,
            order: order as i32,
            limit: self.limit,
            serializable: self.serializable,
        }
    }
}

/// Runs a catalog command.
pub async fn run(client: &Client, format: Format, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Register(args) => register(client, format, args).await?,
        ServiceCommand::Deregister { service, id } => {
            let response = client.deregister(&service, &id).await?;
            println!(
                "{}",
                output::service_deregister(format, &service, &id, &response)
            );
        }
        ServiceCommand::List { serializable } => {
            let response = client.list_services(serializable).await?;
            println!("{}", output::service_list(format, &response));
        }
        ServiceCommand::Show {
            service,
            serializable,
        } => {
            let response = client.get_service(&service, serializable).await?;
            println!(
                "{}",
                output::service_instances(format, &response.header, &response.instances)
            );
        }
        ServiceCommand::Discover(args) => {
            let response = client.discover(args.request()).await?;
            println!("{}", output::service_discover(format, &response));
        }
        ServiceCommand::Watch { service, revision } => {
            let mut watcher = client.watch_service(&service, revision).await?;
            loop {
                let update = watcher.next().await?;
                // stdout is line-buffered: each update is visible to a reader once printed.
                println!("{}", output::service_watch(format, &service, &update));
            }
        }
        ServiceCommand::Maintenance {
            mode,
            service,
            id,
            reason,
        } => {
            let enabled = mode == MaintenanceMode::On;
            let response = client
                .set_maintenance(&service, &id, enabled, &reason)
                .await?;
            println!("{}", output::service_maintenance(format, &response));
        }
    }
    Ok(())
}

async fn register(client: &Client, format: Format, args: RegisterArgs) -> anyhow::Result<()> {
    let instance = args.instance();
    let Some(ttl) = args.ttl_seconds() else {
        let response = client.register(instance).await?;
        println!("{}", output::service_register(format, &response));
        return Ok(());
    };
    // Installed before registering, so a signal at any point from here on deregisters.
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let registration = client.register_and_keep_alive(instance, ttl).await?;
    let mut states = registration.subscribe();
    let first = states.borrow_and_update().clone();
    if let beacon_client::RegistrationState::Registered { instance, .. } = &first {
        println!(
            "{}",
            output::service_instances(format, &None, std::slice::from_ref(&**instance))
        );
    }
    eprintln!("{}", output::registration_state(&first));
    loop {
        tokio::select! {
            _ = shutdown.received() => break,
            changed = states.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the registration's background task ended");
                }
                let state = states.borrow_and_update().clone();
                eprintln!("{}", output::registration_state(&state));
            }
        }
    }
    let (service, id) = (
        registration.service().to_string(),
        registration.id().to_string(),
    );
    registration
        .deregister()
        .await
        .with_context(|| format!("deregistering {service}/{id} (it expires with its lease)"))?;
    eprintln!("{}", output::registration_ended(&service, &id));
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment of [`Shutdown::install`].
struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Completes when either signal arrives (or arrived since the last call).
    async fn received(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_keep_only_allowed_characters() {
        assert_eq!(
            default_instance_id("web", "10.0.0.1", 8080),
            "web-10.0.0.1-8080"
        );
        assert_eq!(default_instance_id("web", "::1", 80), "web---1-80");
        assert_eq!(
            default_instance_id("api", "host name/x", 1),
            "api-host-name-x-1"
        );
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("zone=a=b"),
            Ok(("zone".to_string(), "a=b".to_string()))
        );
        assert_eq!(
            parse_key_value("empty="),
            Ok(("empty".to_string(), String::new()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        let args = |ttl: Option<&str>| RegisterArgs {
            service: "web".into(),
            address: "127.0.0.1".into(),
            port: 80,
            id: None,
            tags: Vec::new(),
            metadata: Vec::new(),
            weight: None,
            ttl: ttl.map(|text| parse_duration(text).expect("valid")),
        };
        assert_eq!(args(Some("10s")).ttl_seconds(), Some(10));
        assert_eq!(args(Some("1500ms")).ttl_seconds(), Some(2));
        assert_eq!(args(Some("100ms")).ttl_seconds(), Some(1));
        assert_eq!(args(None).ttl_seconds(), None);
        assert_eq!(args(None).instance().id, "web-127.0.0.1-80");
    }

    #[test]
    fn discover_health_filter_defaults_to_fail_open() {
        let args = |passing: bool, all: bool| DiscoverArgs {
            service: "web".into(),
            tags: Vec::new(),
            metadata: vec![("zone".into(), "a".into())],
            passing,
            all,
            weighted: true,
            limit: 2,
            serializable: false,
        };
        let request = args(false, false).request();
        assert_eq!(request.health(), HealthFilter::PassingOrElseAll);
        assert_eq!(request.order(), Order::Weighted);
        assert_eq!(request.metadata.get("zone").map(String::as_str), Some("a"));
        assert_eq!(args(true, false).request().health(), HealthFilter::Passing);
        assert_eq!(args(false, true).request().health(), HealthFilter::All);
    }
}
