//! `service register|deregister|list|show|discover|watch|maintenance|heartbeat|settings`:
//! Beacon's catalog.
//!
//! `service register` without `--ttl` stores a persistent instance and returns. With `--ttl` it
//! is a minimal sidecar: the instance lives by a lease the command keeps alive
//! ([`beacon_client::Registration`]) until SIGINT or SIGTERM, then it is deregistered (so it
//! disappears at once) and the command exits 0; if the process dies instead, the instance
//! disappears when the lease expires. This is the one command that handles signals itself
//! (see [`crate::args::Command::handles_signals`]).
//!
//! Health checks are attached at registration with Consul-like flags ([`CheckArgs`]): one or
//! more `--check-http`, `--check-tcp`, `--check-grpc` and `--check-ttl`, and parameters that
//! apply to every check of the command. The flags are turned into wire checks here; what clap
//! cannot express (a parameter without a check it applies to) is refused as a usage error before
//! anything is sent, and the server validates the values.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use beacon_client::beaconpb::{
    check, Check, DiscoverRequest, GetServiceRequest, GrpcCheck, HealthFilter, HealthStatus,
    HeartbeatRequest, HttpCheck, Instance, Order, ServiceSettings, TcpCheck, TtlCheck,
};
use beacon_client::Client;
use clap::{Args, Subcommand, ValueEnum};

use crate::args::parse_duration;
use crate::output::{self, Format};

/// Catalog commands.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Register an instance (persistent; with --ttl, kept alive until Ctrl-C or SIGTERM).
    Register(Box<RegisterArgs>),
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
    /// Every instance of a service, with its checks and each check's latest probe.
    Show {
        /// The service.
        service: String,
        /// Answer from the contacted member's state (fast, possibly stale).
        #[arg(long)]
        serializable: bool,
        /// Leave out the latest probes (gathered from every member).
        #[arg(long)]
        no_probes: bool,
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
    /// Report an instance alive: renews its lease and reports its TTL checks (passing unless
    /// --status says otherwise). Run it more often than the TTL.
    Heartbeat {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
        /// The status reported for the TTL checks.
        #[arg(long, value_enum, default_value_t = ReportedStatus::Passing)]
        status: ReportedStatus,
        /// Only this TTL check (default: every TTL check of the instance).
        #[arg(long = "check", value_name = "CHECK_ID", default_value = "")]
        check_id: String,
        /// A note kept as the check's output.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Show a service's settings, or change them (fail-open threshold, DNS TTL).
    Settings {
        /// The service.
        service: String,
        /// When fewer than this share (0 to 1) of its instances pass, discovery and DNS return
        /// every instance not in maintenance, and say so.
        #[arg(long, value_name = "RATIO")]
        min_healthy: Option<f64>,
        /// TTL of the service's DNS answers (e.g. 5s; 0 disables caching).
        #[arg(long, value_name = "DURATION", value_parser = parse_dns_ttl)]
        dns_ttl: Option<u32>,
    },
}

/// `service heartbeat --status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportedStatus {
    /// The instance is healthy.
    Passing,
    /// The instance works, degraded (still offered to clients).
    Warning,
    /// The instance must not be offered to clients.
    Critical,
}

impl From<ReportedStatus> for HealthStatus {
    fn from(status: ReportedStatus) -> HealthStatus {
        match status {
            ReportedStatus::Passing => HealthStatus::Passing,
            ReportedStatus::Warning => HealthStatus::Warning,
            ReportedStatus::Critical => HealthStatus::Critical,
        }
    }
}

/// A DNS TTL in whole seconds: `0`, `30`, `5s`, `2m`.
fn parse_dns_ttl(text: &str) -> Result<u32, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("DNS TTL {text:?} must be whole seconds"));
    }
    u32::try_from(duration.as_secs()).map_err(|_| format!("DNS TTL {text:?} is too large"))
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
    /// Live by a lease of this TTL, kept alive until Ctrl-C or SIGTERM (e.g. 10s). Not a
    /// health check: see --check-ttl.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Health checks run by the cluster.
    #[command(flatten)]
    pub checks: CheckArgs,
}

/// The health check flags of `service register`. Each `--check-*` flag adds one check (id: the
/// kind's name, or `KIND-N` counting from 1 when a kind is given more than once); the other
/// flags apply to every check of the command they make sense for. Unset parameters are sent as
/// 0, which the server reads as its defaults.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Health checks")]
pub struct CheckArgs {
    /// An HTTP or HTTPS check: a request to URL must answer 2xx (repeatable).
    #[arg(long, value_name = "URL")]
    pub check_http: Vec<String>,
    /// A TCP check: a connection to HOST:PORT must open (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub check_tcp: Vec<String>,
    /// A gRPC check (grpc.health.v1) of HOST:PORT, or of SERVICE there (repeatable).
    #[arg(long, value_name = "HOST:PORT[/SERVICE]", value_parser = parse_grpc_target)]
    pub check_grpc: Vec<GrpcTarget>,
    /// Use TLS for the --check-grpc checks.
    #[arg(long)]
    pub check_grpc_tls: bool,
    /// A TTL check: the instance must report its status within DURATION, or it turns critical
    /// (repeatable).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub check_ttl: Vec<Duration>,
    /// Time between probes of the HTTP, TCP and gRPC checks (server default 10s; at least 1s).
    #[arg(long, visible_alias = "check-interval", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Time a probe may take (server default: half the interval, at most 5s). Named apart from
    /// the global --timeout, which bounds each request of this command.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub check_timeout: Option<Duration>,
    /// Consecutive successes before a check turns passing (server default 1).
    #[arg(long, value_name = "N")]
    pub success_before_passing: Option<u32>,
    /// Consecutive failures before a check turns warning (server default 1).
    #[arg(long, value_name = "N")]
    pub failures_before_warning: Option<u32>,
    /// Consecutive failures before a check turns critical (server default 3).
    #[arg(long, value_name = "N")]
    pub failures_before_critical: Option<u32>,
    /// Deregister the instance once a check has been critical this long (at least 1m; default:
    /// never).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deregister_critical_after: Option<Duration>,
    /// Status of each check before its first verdict (server default: critical, so the instance
    /// is not offered to clients before its checks pass).
    #[arg(long, value_enum, value_name = "STATUS")]
    pub initial_status: Option<InitialStatus>,
    /// Method of the --check-http requests (default GET).
    #[arg(long, value_name = "METHOD")]
    pub http_method: Option<String>,
    /// A header of the --check-http requests, 'Name: value' (repeatable).
    #[arg(long = "http-header", value_name = "NAME: VALUE", value_parser = parse_http_header)]
    pub http_headers: Vec<(String, String)>,
    /// Accept any certificate in the --check-http HTTPS checks.
    #[arg(long)]
    pub tls_skip_verify: bool,
}

/// `--check-grpc HOST:PORT[/SERVICE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// `host:port`.
    pub address: String,
    /// The service name asked about; empty for the server as a whole.
    pub service: String,
}

/// `--initial-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialStatus {
    /// Offered to clients at once.
    Passing,
    /// Offered to clients at once, shown as warning.
    Warning,
    /// Not offered to clients until a check passes.
    Critical,
}

impl From<InitialStatus> for HealthStatus {
    fn from(status: InitialStatus) -> HealthStatus {
        match status {
            InitialStatus::Passing => HealthStatus::Passing,
            InitialStatus::Warning => HealthStatus::Warning,
            InitialStatus::Critical => HealthStatus::Critical,
        }
    }
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

/// Parses `HOST:PORT[/SERVICE]`: the service is everything after the first '/' (a host:port
/// never holds one).
pub fn parse_grpc_target(text: &str) -> Result<GrpcTarget, String> {
    let (address, service) = match text.split_once('/') {
        Some((_, "")) => {
            return Err(format!(
                "expected HOST:PORT or HOST:PORT/SERVICE, got {text:?} (empty service)"
            ))
        }
        Some((address, service)) => (address, service),
        None => (text, ""),
    };
    if address.is_empty() {
        return Err(format!(
            "expected HOST:PORT or HOST:PORT/SERVICE, got {text:?}"
        ));
    }
    Ok(GrpcTarget {
        address: address.to_string(),
        service: service.to_string(),
    })
}

/// Parses an HTTP header `Name: value` (curl's form): the name is trimmed and must be non-empty
/// without spaces, the value is trimmed and may be empty or contain ':'.
pub fn parse_http_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value))
            if !name.trim().is_empty() && !name.trim().contains(char::is_whitespace) =>
        {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected 'Name: value', got {text:?}")),
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
    /// The instance these flags describe, or why the check flags do not make sense together.
    pub fn instance(&self) -> Result<Instance, String> {
        Ok(Instance {
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
            checks: self.checks.checks()?,
            ..Default::default()
        })
    }

    /// The lease TTL in whole seconds (rounded up), when `--ttl` was given.
    pub fn ttl_seconds(&self) -> Option<i64> {
        self.ttl.map(|ttl| (ttl.as_secs_f64().ceil() as i64).max(1))
    }
}

/// A duration in whole milliseconds for a `*_ms` field, never 0 (which would mean "the
/// default"): a sub-millisecond duration becomes 1 ms and is refused by the server as too short.
fn milliseconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl CheckArgs {
    /// The wire checks: the HTTP checks first, then TCP, gRPC and TTL, each kind in the order
    /// given. Refuses a parameter that applies to none of the checks given (silently ignoring it
    /// would leave the user believing it took effect).
    pub fn checks(&self) -> Result<Vec<Check>, String> {
        const ANY_CHECK: &str = "--check-http, --check-tcp, --check-grpc or --check-ttl";
        let probed = self.check_http.len() + self.check_tcp.len() + self.check_grpc.len();
        let any = probed + self.check_ttl.len();
        let shared = [
            ("--interval", self.interval.is_some()),
            ("--check-timeout", self.check_timeout.is_some()),
            (
                "--success-before-passing",
                self.success_before_passing.is_some(),
            ),
            (
                "--failures-before-warning",
                self.failures_before_warning.is_some(),
            ),
            (
                "--failures-before-critical",
                self.failures_before_critical.is_some(),
            ),
            (
                "--deregister-critical-after",
                self.deregister_critical_after.is_some(),
            ),
            ("--initial-status", self.initial_status.is_some()),
        ];
        if let Some((flag, _)) = shared.iter().find(|(_, given)| *given) {
            if any == 0 {
                return Err(format!(
                    "{flag} sets a health check parameter, but no check was given \
                     (add {ANY_CHECK})"
                ));
            }
        }
        for (flag, given) in [
            ("--interval", self.interval.is_some()),
            ("--check-timeout", self.check_timeout.is_some()),
        ] {
            if given && probed == 0 {
                return Err(format!(
                    "{flag} applies to probed checks (--check-http, --check-tcp, --check-grpc); \
                     a --check-ttl check is reported by the instance within its TTL instead"
                ));
            }
        }
        for (flag, given) in [
            ("--http-method", self.http_method.is_some()),
            ("--http-header", !self.http_headers.is_empty()),
            ("--tls-skip-verify", self.tls_skip_verify),
        ] {
            if given && self.check_http.is_empty() {
                return Err(format!(
                    "{flag} applies to --check-http checks, and none was given"
                ));
            }
        }
        if self.check_grpc_tls && self.check_grpc.is_empty() {
            return Err(
                "--check-grpc-tls applies to --check-grpc checks, and none was given".into(),
            );
        }
        let mut headers = HashMap::with_capacity(self.http_headers.len());
        for (name, value) in &self.http_headers {
            // HTTP header names are case-insensitive: "Accept" and "accept" are the same header.
            if headers
                .keys()
                .any(|known: &String| known.eq_ignore_ascii_case(name))
            {
                return Err(format!("--http-header {name:?} is given more than once"));
            }
            headers.insert(name.clone(), value.clone());
        }

        let http = self.check_http.iter().map(|url| {
            check::Kind::Http(HttpCheck {
                url: url.clone(),
                method: self
                    .http_method
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .unwrap_or_default(),
                headers: headers.clone(),
                tls_skip_verify: self.tls_skip_verify,
            })
        });
        let tcp = self.check_tcp.iter().map(|address| {
            check::Kind::Tcp(TcpCheck {
                address: address.clone(),
            })
        });
        let grpc = self.check_grpc.iter().map(|target| {
            check::Kind::Grpc(GrpcCheck {
                address: target.address.clone(),
                service: target.service.clone(),
                tls: self.check_grpc_tls,
            })
        });
        let ttl = self.check_ttl.iter().map(|ttl| {
            check::Kind::Ttl(TtlCheck {
                ttl_ms: milliseconds(*ttl),
            })
        });
        let kinds = [
            ("http", http.collect::<Vec<_>>()),
            ("tcp", tcp.collect()),
            ("grpc", grpc.collect()),
            ("ttl", ttl.collect()),
        ];
        let mut checks = Vec::with_capacity(any);
        for (name, kinds) in kinds {
            let several = kinds.len() > 1;
            for (index, kind) in kinds.into_iter().enumerate() {
                let probed = !matches!(kind, check::Kind::Ttl(_));
                checks.push(Check {
                    id: if several {
                        format!("{name}-{}", index + 1)
                    } else {
                        name.to_string()
                    },
                    kind: Some(kind),
                    // Interval and timeout mean nothing to a TTL check; sent as 0 there.
                    interval_ms: self.interval.filter(|_| probed).map_or(0, milliseconds),
                    timeout_ms: self
                        .check_timeout
                        .filter(|_| probed)
                        .map_or(0, milliseconds),
                    success_before_passing: self.success_before_passing.unwrap_or(0),
                    failures_before_warning: self.failures_before_warning.unwrap_or(0),
                    failures_before_critical: self.failures_before_critical.unwrap_or(0),
                    deregister_critical_after_ms: self
                        .deregister_critical_after
                        .map_or(0, milliseconds),
                    initial_status: self
                        .initial_status
                        .map_or(HealthStatus::Unspecified, HealthStatus::from)
                        as i32,
                    state: None,
                    last_probe: None,
                });
            }
        }
        Ok(checks)
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
        ServiceCommand::Register(args) => register(client, format, *args).await?,
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
            no_probes,
        } => {
            let response = client
                .get_service_with(GetServiceRequest {
                    service,
                    serializable,
                    include_probes: !no_probes,
                })
                .await?;
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
        ServiceCommand::Heartbeat {
            service,
            id,
            status,
            check_id,
            note,
        } => {
            let response = client
                .report(HeartbeatRequest {
                    service: service.clone(),
                    id: id.clone(),
                    status: HealthStatus::from(status) as i32,
                    check_id,
                    note,
                })
                .await?;
            println!(
                "{}",
                output::service_heartbeat(format, &service, &id, &response)
            );
        }
        ServiceCommand::Settings {
            service,
            min_healthy,
            dns_ttl,
        } => {
            let current = client
                .get_service(&service, false)
                .await?
                .settings
                .unwrap_or_else(|| ServiceSettings {
                    service: service.clone(),
                    ..Default::default()
                });
            let settings = if min_healthy.is_none() && dns_ttl.is_none() {
                current
            } else {
                let changed = ServiceSettings {
                    service: service.clone(),
                    min_healthy: min_healthy.unwrap_or(current.min_healthy),
                    dns_ttl_s: dns_ttl.unwrap_or(current.dns_ttl_s),
                };
                client
                    .set_service_settings(changed)
                    .await?
                    .settings
                    .unwrap_or_default()
            };
            println!("{}", output::service_settings(format, &settings));
        }
    }
    Ok(())
}

async fn register(client: &Client, format: Format, args: RegisterArgs) -> anyhow::Result<()> {
    // Already refused as a usage error at parse time (`Cli::parse_valid`); kept as an error,
    // not an expect, so the command stays safe if called another way.
    let instance = args.instance().map_err(anyhow::Error::msg)?;
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
            checks: CheckArgs::default(),
        };
        assert_eq!(args(Some("10s")).ttl_seconds(), Some(10));
        assert_eq!(args(Some("1500ms")).ttl_seconds(), Some(2));
        assert_eq!(args(Some("100ms")).ttl_seconds(), Some(1));
        assert_eq!(args(None).ttl_seconds(), None);
        let instance = args(None).instance().expect("no check flags to refuse");
        assert_eq!(instance.id, "web-127.0.0.1-80");
        assert!(instance.checks.is_empty());
    }

    /// `beacon service register web --address 127.0.0.1 --port 80 FLAGS…` as clap parses it.
    fn register_args(flags: &[&str]) -> Result<RegisterArgs, String> {
        use clap::Parser;
        let base = [
            "beacon",
            "service",
            "register",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "80",
        ];
        let cli = crate::args::Cli::try_parse_from(base.iter().chain(flags))
            .map_err(|error| error.to_string())?;
        match cli.command {
            crate::args::Command::Service {
                command: ServiceCommand::Register(args),
            } => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The checks of `register_args(flags)`, or the parse or validation error.
    fn checks(flags: &[&str]) -> Result<Vec<Check>, String> {
        register_args(flags)?
            .instance()
            .map(|instance| instance.checks)
    }

    #[test]
    fn check_flags_make_one_check_each_with_the_shared_parameters() {
        let checks = checks(&[
            "--check-http",
            "http://127.0.0.1:8080/health",
            "--check-http",
            "https://127.0.0.1:8443/ready",
            "--check-tcp",
            "127.0.0.1:5432",
            "--check-grpc",
            "[::1]:50051/pkg.Svc",
            "--check-grpc-tls",
            "--check-ttl",
            "30s",
            "--interval",
            "5s",
            "--check-timeout",
            "1500ms",
            "--success-before-passing",
            "2",
            "--failures-before-warning",
            "1",
            "--failures-before-critical",
            "4",
            "--deregister-critical-after",
            "10m",
            "--initial-status",
            "warning",
            "--http-method",
            "head",
            "--http-header",
            "Authorization: Bearer a:b",
            "--http-header",
            "X-Empty:",
            "--tls-skip-verify",
        ])
        .expect("valid flags");
        let ids: Vec<&str> = checks.iter().map(|check| check.id.as_str()).collect();
        assert_eq!(ids, ["http-1", "http-2", "tcp", "grpc", "ttl"]);
        let Some(check::Kind::Http(http)) = &checks[1].kind else {
            panic!("an HTTP check: {:?}", checks[1]);
        };
        assert_eq!(http.url, "https://127.0.0.1:8443/ready");
        assert_eq!(http.method, "HEAD");
        assert_eq!(
            http.headers.get("Authorization").map(String::as_str),
            Some("Bearer a:b")
        );
        assert_eq!(http.headers.get("X-Empty").map(String::as_str), Some(""));
        assert!(http.tls_skip_verify);
        assert_eq!(
            checks[3].kind,
            Some(check::Kind::Grpc(GrpcCheck {
                address: "[::1]:50051".into(),
                service: "pkg.Svc".into(),
                tls: true,
            }))
        );
        assert_eq!(
            checks[4].kind,
            Some(check::Kind::Ttl(TtlCheck { ttl_ms: 30_000 }))
        );
        for check in &checks {
            let probed = check.id != "ttl";
            assert_eq!(
                check.interval_ms,
                if probed { 5_000 } else { 0 },
                "{check:?}"
            );
            assert_eq!(
                check.timeout_ms,
                if probed { 1_500 } else { 0 },
                "{check:?}"
            );
            assert_eq!(check.success_before_passing, 2);
            assert_eq!(check.failures_before_warning, 1);
            assert_eq!(check.failures_before_critical, 4);
            assert_eq!(check.deregister_critical_after_ms, 600_000);
            assert_eq!(check.initial_status(), HealthStatus::Warning);
            assert_eq!(check.state, None, "states are the cluster's");
        }
    }

    #[test]
    fn unset_check_parameters_are_sent_as_server_defaults() {
        let checks = checks(&["--check-tcp", "db:5432"]).expect("valid flags");
        assert_eq!(
            checks,
            [Check {
                id: "tcp".into(),
                kind: Some(check::Kind::Tcp(TcpCheck {
                    address: "db:5432".into()
                })),
                ..Default::default()
            }]
        );
        // The global --timeout stays the request timeout, wherever it is written.
        let args = register_args(&["--check-tcp", "db:5432", "--timeout", "2s"]);
        let checks = args.expect("--timeout is global").checks.checks();
        assert_eq!(checks.expect("valid")[0].timeout_ms, 0);
    }

    #[test]
    fn check_parameters_without_a_check_they_apply_to_are_refused() {
        let refused = |flags: &[&str], expected: &str| {
            let error = checks(flags).expect_err("refused");
            assert!(error.contains(expected), "{flags:?}: {error}");
        };
        refused(
            &["--interval", "5s"],
            "--interval sets a health check parameter, but no check was given",
        );
        refused(&["--initial-status", "passing"], "no check was given");
        refused(
            &["--check-ttl", "30s", "--interval", "5s"],
            "--interval applies to probed checks",
        );
        refused(
            &["--check-ttl", "30s", "--check-timeout", "1s"],
            "--check-timeout applies to probed checks",
        );
        refused(
            &["--check-tcp", "a:1", "--http-method", "POST"],
            "--http-method applies to --check-http checks",
        );
        refused(
            &["--check-tcp", "a:1", "--http-header", "A: b"],
            "--http-header applies to --check-http",
        );
        refused(
            &["--check-tcp", "a:1", "--tls-skip-verify"],
            "--tls-skip-verify applies to --check-http",
        );
        refused(
            &["--check-http", "http://a/", "--check-grpc-tls"],
            "--check-grpc-tls applies to --check-grpc",
        );
        refused(
            &[
                "--check-http",
                "http://a/",
                "--http-header",
                "Accept: a",
                "--http-header",
                "accept: b",
            ],
            "\"accept\" is given more than once",
        );
        // Malformed values are clap's usage errors, naming the flag.
        refused(
            &["--check-http", "http://a/", "--http-header", "NoColon"],
            "expected 'Name: value'",
        );
        refused(&["--check-grpc", "a:1/"], "empty service");
        refused(&["--check-ttl", "soon"], "invalid duration");
        refused(
            &["--interval", "0s", "--check-tcp", "a:1"],
            "must be positive",
        );
        refused(
            &["--initial-status", "unknown", "--check-tcp", "a:1"],
            "invalid value 'unknown'",
        );
    }

    #[test]
    fn headers_and_grpc_targets_parse() {
        assert_eq!(
            parse_http_header("  X-Token :  a b:c "),
            Ok(("X-Token".to_string(), "a b:c".to_string()))
        );
        assert!(parse_http_header(": v").is_err());
        assert!(parse_http_header("Two Words: v").is_err());
        assert_eq!(
            parse_grpc_target("127.0.0.1:50051"),
            Ok(GrpcTarget {
                address: "127.0.0.1:50051".into(),
                service: String::new()
            })
        );
        assert_eq!(
            parse_grpc_target("h:1/a.B/c").map(|target| target.service),
            Ok("a.B/c".to_string())
        );
        assert!(parse_grpc_target("/svc").is_err());
    }

    #[test]
    fn sub_millisecond_durations_are_never_sent_as_zero() {
        // 0 would mean "the default" to the server; 1 ms is refused there as too short.
        assert_eq!(milliseconds(Duration::from_micros(100)), 1);
        assert_eq!(milliseconds(Duration::from_millis(1500)), 1500);
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
