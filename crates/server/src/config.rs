//! `beacond`'s configuration: a TOML file (see `cluster-config/`), or the single-node defaults.
//!
//! Validation happens before anything is opened, so a bad config fails at start with a clear
//! message: duplicate member ids, unparsable addresses, a data directory that cannot be written.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use beacon_storage::Member;
use serde::Deserialize;

/// etcd's default limit on a request's size (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default limit on operations per txn branch.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// The default space quota: 8 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 8 << 30;

/// The whole configuration of one member.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Member name (etcd's `--name`).
    pub name: String,
    /// Member id, unique in the cluster, not 0. Also the etcd member id.
    pub id: u64,
    /// Where RocksDB keeps this member's data.
    pub data_dir: PathBuf,
    /// Distinguishes clusters that happen to have the same members; part of the cluster id.
    #[serde(default = "default_cluster_token")]
    pub cluster_token: String,
    /// Client (etcd API) endpoint.
    pub client: EndpointConfig,
    /// Peer (Raft) endpoint.
    pub peer: EndpointConfig,
    /// The members the cluster starts with, this one included. Empty means a single-node cluster.
    /// With `initial_cluster_state = "existing"`: members of the running cluster to join through
    /// (this one included, as `beacon member add` printed it).
    #[serde(default)]
    pub initial_members: Vec<InitialMember>,
    /// `new` (default): the members in `initial_members` form a new cluster. `existing`: this
    /// member joins a running cluster that added it (`beacon member add`, etcd's MemberAdd).
    #[serde(default)]
    pub initial_cluster_state: ClusterState,
    /// Raft timing.
    #[serde(default)]
    pub raft: RaftConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Watch settings.
    #[serde(default)]
    pub watch: WatchConfig,
    /// Auto-compaction (off by default, as etcd).
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// The DNS interface.
    #[serde(default)]
    pub dns: DnsConfig,
    /// The HTTP endpoint: metrics and health.
    #[serde(default)]
    pub http: HttpConfig,
}

/// etcd's `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    #[default]
    New,
    Existing,
}

/// A listen address and the address other members and clients should use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// host:port to bind (an IP address).
    pub listen: String,
    /// host:port to advertise; defaults to `listen`.
    pub advertise: Option<String>,
}

/// A member of the initial cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    /// Its advertised peer address, host:port.
    pub peer: String,
    /// Its advertised client address, host:port.
    pub client: String,
}

/// Raft timing, in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a Raft snapshot (and purge the log) after this many entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind the last snapshot, so a member that lags by fewer catches up
    /// from the log instead of receiving a whole snapshot.
    pub keep_logs_after_snapshot: u64,
    /// Size of the chunks a snapshot is sent to a lagging member in.
    pub snapshot_chunk_bytes: u64,
    /// How long sending one snapshot chunk may take; the last one includes the receiver's
    /// install, so this bounds the install of the largest expected state.
    pub install_snapshot_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_after_entries: 100_000,
            keep_logs_after_snapshot: 1000,
            snapshot_chunk_bytes: 3 << 20,
            install_snapshot_timeout_ms: 60_000,
        }
    }
}

/// etcd's request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// The space quota (etcd's `--quota-backend-bytes`): above it the NOSPACE alarm is raised.
    pub quota_backend_bytes: u64,
}

/// etcd's `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    #[default]
    Off,
    Revision,
    Periodic,
}

/// Auto-compaction (see `compactor`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    pub mode: CompactionMode,
    /// `revision`: a number of revisions to keep (e.g. "1000"); `periodic`: a duration of
    /// history to keep ("1h", "30m", "90s").
    pub retention: String,
}

impl CompactionConfig {
    /// The retention of `revision` mode.
    pub fn retention_revisions(&self) -> Option<i64> {
        self.retention
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
    }

    /// The retention of `periodic` mode.
    pub fn retention_duration(&self) -> Option<std::time::Duration> {
        let text = self.retention.trim();
        let (number, unit) = if let Some(n) = text.strip_suffix('h') {
            (n, 3600.0)
        } else if let Some(n) = text.strip_suffix('m') {
            (n, 60.0)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1.0)
        } else {
            // etcd: a bare number means hours.
            (text, 3600.0)
        };
        let seconds = number.trim().parse::<f64>().ok()? * unit;
        (seconds.is_finite() && seconds >= 1.0).then(|| std::time::Duration::from_secs_f64(seconds))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
        }
    }
}

/// Watch settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// How often watches created with `progress_notify` get an empty response while idle
    /// (etcd: 10 minutes).
    pub progress_notify_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            progress_notify_interval_ms: 600_000,
        }
    }
}

/// The DNS interface (`[dns]`): every member answers for `domain` from its applied catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Serve DNS at all.
    pub enabled: bool,
    /// IP:port for UDP and TCP. Loopback by default, like the client listener: expose it
    /// deliberately (a DNS port open to the world invites amplification traffic).
    pub listen: String,
    /// The zone answered, e.g. `beacon.`; names outside it are REFUSED (no open resolver).
    pub domain: String,
    /// Answer SERVFAIL once this member has been cut off from a leader (or, as leader, from a
    /// quorum) for longer than this, instead of serving an ever older catalog. 0: never.
    pub max_stale_ms: u64,
    /// TTL of negative answers (NXDOMAIN, empty answers): the SOA minimum, seconds.
    pub negative_ttl_s: u32,
    /// Largest UDP answer this member sends, when the query's EDNS0 buffer allows it.
    pub max_udp_payload: u16,
    /// UDP sockets (SO_REUSEPORT) with a receive loop each; 0: one per CPU.
    pub udp_workers: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8600".into(),
            domain: "beacon.".into(),
            max_stale_ms: 5_000,
            negative_ttl_s: 5,
            max_udp_payload: 4096,
            udp_workers: 0,
        }
    }
}

/// The HTTP endpoint (`[http]`): `/metrics`, `/health`, `/livez`, `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// IP:port to bind. Loopback by default, like the client listener (etcd's port for
    /// `--listen-metrics-urls`, 2381).
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2381".into(),
        }
    }
}

/// Longest `dns.domain` accepted, so that every name under it (service, tag, instance id) fits
/// DNS's 255-byte limit.
const MAX_DNS_DOMAIN_LEN: usize = 64;

impl DnsConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        parse_listen(&self.listen, "dns.listen")?;
        let domain = self.domain.strip_suffix('.').unwrap_or(&self.domain);
        let labels_ok = !domain.is_empty()
            && domain.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !labels_ok || domain.len() > MAX_DNS_DOMAIN_LEN {
            bail!(
                "dns.domain: {:?} is not a DNS name (labels of letters, digits and '-', at most \
                 {MAX_DNS_DOMAIN_LEN} characters, e.g. \"beacon.\")",
                self.domain
            );
        }
        if self.max_udp_payload < 512 {
            bail!(
                "dns.max_udp_payload: {} is below DNS's minimum of 512 bytes",
                self.max_udp_payload
            );
        }
        if self.negative_ttl_s > 86_400 {
            bail!("dns.negative_ttl_s: must be at most 86400 seconds");
        }
        if self.udp_workers > 64 {
            bail!("dns.udp_workers: must be at most 64 (0: one per CPU)");
        }
        Ok(())
    }
}

fn default_cluster_token() -> String {
    "beacon-cluster".to_string()
}

impl ServerConfig {
    /// The configuration of `beacond` started without a config file: a single-node cluster on
    /// 127.0.0.1:2379 with its data in `./default.beacon`.
    pub fn single_node_default() -> Self {
        Self {
            name: "default".to_string(),
            id: 1,
            data_dir: PathBuf::from("default.beacon"),
            cluster_token: default_cluster_token(),
            client: EndpointConfig {
                listen: "127.0.0.1:2379".into(),
                advertise: None,
            },
            peer: EndpointConfig {
                listen: "127.0.0.1:2380".into(),
                advertise: None,
            },
            initial_members: Vec::new(),
            initial_cluster_state: ClusterState::New,
            raft: RaftConfig::default(),
            limits: LimitsConfig::default(),
            watch: WatchConfig::default(),
            compaction: CompactionConfig::default(),
            dns: DnsConfig::default(),
            http: HttpConfig::default(),
        }
    }

    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: ServerConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// The advertised client address.
    pub fn client_advertise(&self) -> &str {
        self.client
            .advertise
            .as_deref()
            .unwrap_or(&self.client.listen)
    }

    /// The advertised peer address.
    pub fn peer_advertise(&self) -> &str {
        self.peer.advertise.as_deref().unwrap_or(&self.peer.listen)
    }

    /// The initial membership: the configured members, or this node alone.
    pub fn initial_membership(&self) -> BTreeMap<u64, Member> {
        if self.initial_members.is_empty() {
            let me = Member {
                name: self.name.clone(),
                peer_addr: self.peer_advertise().to_string(),
                client_addr: self.client_advertise().to_string(),
            };
            return BTreeMap::from([(self.id, me)]);
        }
        self.initial_members
            .iter()
            .map(|m| {
                let member = Member {
                    name: m.name.clone(),
                    peer_addr: m.peer.clone(),
                    client_addr: m.client.clone(),
                };
                (m.id, member)
            })
            .collect()
    }

    /// etcd's cluster id: a hash of the token and the initial members, equal on every member
    /// started from the same initial configuration.
    pub fn cluster_id(&self) -> u64 {
        let mut hash = Fnv64::new();
        hash.write(self.cluster_token.as_bytes());
        for (id, member) in self.initial_membership() {
            hash.write(&id.to_be_bytes());
            hash.write(member.peer_addr.as_bytes());
        }
        hash.finish()
    }

    /// Checks everything that can be checked before opening storage.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.id == 0 {
            bail!("member id must not be 0");
        }
        if self.name.trim().is_empty() {
            bail!("member name must not be empty");
        }
        parse_listen(&self.client.listen, "client.listen")?;
        parse_listen(&self.peer.listen, "peer.listen")?;
        parse_listen(&self.http.listen, "http.listen")?;
        if self.http.listen == self.client.listen || self.http.listen == self.peer.listen {
            bail!(
                "http.listen {} is also the client or peer address",
                self.http.listen
            );
        }
        parse_host_port(self.client_advertise(), "client.advertise")?;
        parse_host_port(self.peer_advertise(), "peer.advertise")?;
        let mut ids = HashSet::new();
        let mut peers = HashSet::new();
        for member in &self.initial_members {
            if member.id == 0 {
                bail!(
                    "initial member {:?} has id 0; ids must be non-zero",
                    member.name
                );
            }
            if !ids.insert(member.id) {
                bail!("duplicate member id {} in initial_members", member.id);
            }
            if !peers.insert(member.peer.clone()) {
                bail!("duplicate peer address {} in initial_members", member.peer);
            }
            parse_host_port(&member.peer, &format!("initial member {} peer", member.id))?;
            parse_host_port(
                &member.client,
                &format!("initial member {} client", member.id),
            )?;
        }
        if self.initial_cluster_state == ClusterState::Existing
            && !self.initial_members.iter().any(|m| m.id != self.id)
        {
            bail!(
                "initial_cluster_state = \"existing\" needs initial_members naming at least one \
                 member of the running cluster (as `beacon member add` prints them)"
            );
        }
        let me = self.initial_members.iter().find(|m| m.id == self.id);
        if self.initial_cluster_state == ClusterState::New
            && !self.initial_members.is_empty()
            && me.is_none()
        {
            bail!("this member's id {} is not among initial_members", self.id);
        }
        if let Some(me) = me {
            if me.peer != self.peer_advertise() {
                bail!(
                    "initial member {} has peer address {} but this member advertises {}",
                    self.id,
                    me.peer,
                    self.peer_advertise()
                );
            }
        }
        let raft = &self.raft;
        if raft.heartbeat_interval_ms == 0
            || raft.election_timeout_min_ms <= raft.heartbeat_interval_ms
        {
            bail!("raft: election_timeout_min_ms must be larger than heartbeat_interval_ms (> 0)");
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            bail!("raft: election_timeout_max_ms must be larger than election_timeout_min_ms");
        }
        if raft.snapshot_after_entries == 0
            || raft.snapshot_chunk_bytes == 0
            || raft.install_snapshot_timeout_ms == 0
        {
            bail!("raft: snapshot_after_entries, snapshot_chunk_bytes and install_snapshot_timeout_ms must be positive");
        }
        if self.limits.max_txn_ops == 0 || self.limits.max_request_bytes == 0 {
            bail!("limits must be positive");
        }
        match self.compaction.mode {
            CompactionMode::Off => {}
            CompactionMode::Revision if self.compaction.retention_revisions().is_none() => bail!(
                "compaction: retention {:?} must be a number of revisions in revision mode",
                self.compaction.retention
            ),
            CompactionMode::Periodic if self.compaction.retention_duration().is_none() => bail!(
                "compaction: retention {:?} must be a duration of at least 1s (e.g. \"1h\", \
                 \"30m\") in periodic mode",
                self.compaction.retention
            ),
            _ => {}
        }
        if self.limits.quota_backend_bytes == 0 {
            bail!("limits: quota_backend_bytes must be positive");
        }
        if self.watch.progress_notify_interval_ms == 0 {
            bail!("watch: progress_notify_interval_ms must be positive");
        }
        self.dns.validate()?;
        if self.dns.enabled {
            for (other, field) in [
                (&self.client.listen, "client.listen"),
                (&self.peer.listen, "peer.listen"),
            ] {
                if other == &self.dns.listen {
                    bail!("dns.listen {} is also {field}", self.dns.listen);
                }
            }
        }
        Ok(())
    }

    /// Creates the data directory if needed and proves it is writable.
    pub fn prepare_data_dir(&self) -> anyhow::Result<()> {
        let dir = &self.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"ok")
            .with_context(|| format!("data directory {} is not writable", dir.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }
}

fn parse_listen(value: &str, field: &str) -> anyhow::Result<SocketAddr> {
    value.parse::<SocketAddr>().with_context(|| {
        format!("{field}: {value:?} is not an IP address with a port (e.g. 127.0.0.1:2379)")
    })
}

fn parse_host_port(value: &str, field: &str) -> anyhow::Result<()> {
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("{field}: {value:?} is not host:port"))?;
    let port_ok = port.parse::<u16>().map(|p| p != 0).unwrap_or(false);
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !port_ok || !host_ok {
        bail!("{field}: {value:?} is not host:port");
    }
    Ok(())
}

/// FNV-1a, 64 bit: a stable hash (std's hasher may change between Rust releases).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Field separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_nodes() -> ServerConfig {
        toml::from_str(
            r#"
            name = "node1"
            id = 1
            data_dir = "/tmp/x"
            client = { listen = "127.0.0.1:2379" }
            peer = { listen = "127.0.0.1:2380" }
            [[initial_members]]
            id = 1
            name = "node1"
            peer = "127.0.0.1:2380"
            client = "127.0.0.1:2379"
            [[initial_members]]
            id = 2
            name = "node2"
            peer = "127.0.0.1:12380"
            client = "127.0.0.1:12379"
            "#,
        )
        .expect("valid toml")
    }

    #[test]
    fn valid_config_passes_and_cluster_id_is_stable() {
        let config = three_nodes();
        config.validate().expect("valid");
        assert_eq!(config.cluster_id(), three_nodes().cluster_id());
        let mut other = three_nodes();
        other.cluster_token = "other".into();
        assert_ne!(config.cluster_id(), other.cluster_id());
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut config = three_nodes();
        config.initial_members[1].id = 1;
        let error = config.validate().expect_err("duplicate id").to_string();
        assert!(error.contains("duplicate member id 1"), "{error}");
    }

    #[test]
    fn bad_addresses_are_refused() {
        let mut config = three_nodes();
        config.client.listen = "localhost:99999".into();
        assert!(config.validate().is_err());
        let mut config = three_nodes();
        config.initial_members[1].peer = "no port".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn member_must_be_in_initial_members() {
        let mut config = three_nodes();
        config.id = 7;
        assert!(config.validate().is_err());
    }

    #[test]
    fn dns_defaults_and_bad_values() {
        let config = three_nodes();
        assert!(config.dns.enabled);
        assert_eq!(config.dns.listen, "127.0.0.1:8600");
        assert_eq!(config.dns.domain, "beacon.");
        let mut config = three_nodes();
        config.dns.domain = "bad_domain.".into();
        let error = config.validate().expect_err("bad domain").to_string();
        assert!(error.contains("dns.domain"), "{error}");
        let mut config = three_nodes();
        config.dns.listen = "localhost:53".into();
        let error = config.validate().expect_err("bad listen").to_string();
        assert!(error.contains("dns.listen"), "{error}");
        let mut config = three_nodes();
        config.dns.max_udp_payload = 100;
        assert!(config.validate().is_err());
        let mut config = three_nodes();
        config.dns.enabled = false;
        config.dns.domain = String::new();
        config
            .validate()
            .expect("a disabled DNS section is not checked");
    }

    #[test]
    fn http_defaults_and_bad_values() {
        let config = three_nodes();
        assert_eq!(config.http.listen, "127.0.0.1:2381");
        let mut config = three_nodes();
        config.http.listen = "localhost:2381".into();
        let error = config.validate().expect_err("not an IP").to_string();
        assert!(error.contains("http.listen"), "{error}");
        let mut config = three_nodes();
        config.http.listen = config.client.listen.clone();
        let error = config.validate().expect_err("same port").to_string();
        assert!(error.contains("http.listen"), "{error}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let result: Result<ServerConfig, _> = toml::from_str(
            "name='a'\nid=1\ndata_dir='x'\nbogus=1\nclient={listen='127.0.0.1:1'}\npeer={listen='127.0.0.1:2'}",
        );
        assert!(result.is_err());
    }
}
