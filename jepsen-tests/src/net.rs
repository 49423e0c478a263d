//! The hosts' network: a bridge in the root namespace, one network namespace per node joined to
//! it by a veth pair, and a private /24 (`.1` is the bridge, node `i` is `.(11 + i)`). Every
//! object is recorded as it is created, so [`Network::teardown`] (also run on drop) removes exactly
//! what this run made: veths, then namespaces, then the bridge. Names carry a per-run prefix.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? scripts/install-deps.sh)"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command during teardown: failures are reported, never fatal.
fn run_quietly(program: &str, args: &[&str]) {
    if let Err(error) = run(program, args) {
        eprintln!("jepsen-tests: teardown: {error:#}");
    }
}

/// Refuses to continue unless running as root (namespaces, veths and nftables need it).
pub fn require_root() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!(
            "jepsen-tests must run as root: it creates network namespaces, veth pairs, a bridge and \
             nftables rules (try: sudo -E jepsen-tests …)"
        );
    }
    Ok(())
}

/// A private /24: `a.b.c.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(pub [u8; 3]);

impl Subnet {
    pub fn host(self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.0;
        Ipv4Addr::new(a, b, c, last)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let base = text.strip_suffix("/24").unwrap_or(text);
        let address: Ipv4Addr = base
            .parse()
            .with_context(|| format!("subnet {text:?}: expected a.b.c.0/24"))?;
        let [a, b, c, d] = address.octets();
        if d != 0 || !address.is_private() {
            bail!("subnet {text:?}: expected a private a.b.c.0/24");
        }
        Ok(Subnet([a, b, c]))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.host(0))
    }
}

/// True when any route (other than the default route) or address overlaps the subnet.
pub fn subnet_is_routed(subnet: Subnet) -> anyhow::Result<bool> {
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let addresses = run("ip", &["-4", "-o", "addr", "show"])?;
    let ours = u32::from(subnet.host(0));
    let overlaps = |cidr: &str| -> bool {
        let (address, length) = cidr.split_once('/').unwrap_or((cidr, "32"));
        let (Ok(address), Ok(length)) = (address.parse::<Ipv4Addr>(), length.parse::<u32>()) else {
            return false;
        };
        // Overlap of two prefixes: compare under the shorter mask.
        let shorter = length.min(24);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - shorter)
        };
        (u32::from(address) & mask) == (ours & mask) && length > 0
    };
    let routed = routes
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|dst| !matches!(*dst, "default" | "broadcast" | "local" | "unreachable"))
        .any(overlaps)
        || routes.lines().any(|line| {
            // "local 10.0.0.1 dev …" / "broadcast …" lines name the address second.
            let mut words = line.split_whitespace();
            matches!(words.next(), Some("local" | "broadcast"))
                && words.next().is_some_and(overlaps)
        })
        || addresses.lines().any(|line| {
            line.split_whitespace()
                .skip_while(|word| *word != "inet")
                .nth(1)
                .is_some_and(overlaps)
        });
    Ok(routed)
}

/// The namespaces, veths and bridge of one run.
#[derive(Debug)]
pub struct Network {
    pub prefix: String,
    pub subnet: Subnet,
    bridge: Option<String>,
    namespaces: Vec<String>,
    veths: Vec<String>,
}

impl Network {
    /// The namespace of node `index`.
    pub fn namespace_name(prefix: &str, index: usize) -> String {
        format!("{prefix}-n{}", index + 1)
    }

    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        self.subnet
            .host(11 + u8::try_from(index).expect("at most 5 nodes"))
    }

    /// Creates the bridge and one namespace per node. On error everything created so far is
    /// removed (by drop).
    pub fn create(prefix: &str, subnet: Subnet, nodes: usize) -> anyhow::Result<Self> {
        if prefix.len() > 10 {
            bail!("name prefix {prefix:?} too long for interface names");
        }
        if subnet_is_routed(subnet)? {
            bail!("subnet {subnet} is already routed or assigned on this host; pick another with --subnet");
        }
        let mut network = Network {
            prefix: prefix.to_string(),
            subnet,
            bridge: None,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        let bridge = format!("{prefix}br");
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        network.bridge = Some(bridge.clone());
        let bridge_address = format!("{}/24", subnet.host(1));
        run("ip", &["addr", "add", &bridge_address, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for index in 0..nodes {
            let namespace = Self::namespace_name(prefix, index);
            run("ip", &["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            let host_side = format!("{prefix}h{}", index + 1);
            let node_side = format!("{prefix}p{}", index + 1);
            run(
                "ip",
                &[
                    "link", "add", &host_side, "type", "veth", "peer", "name", &node_side,
                ],
            )?;
            network.veths.push(host_side.clone());
            run("ip", &["link", "set", &host_side, "master", &bridge])?;
            run("ip", &["link", "set", &host_side, "up"])?;
            run("ip", &["link", "set", &node_side, "netns", &namespace])?;
            let address = format!("{}/24", network.node_ip(index));
            let in_ns = |args: &[&str]| -> anyhow::Result<String> {
                let mut full = vec!["-n", namespace.as_str()];
                full.extend_from_slice(args);
                run("ip", &full)
            };
            in_ns(&["link", "set", &node_side, "name", "eth0"])?;
            in_ns(&["addr", "add", &address, "dev", "eth0"])?;
            in_ns(&["link", "set", "eth0", "up"])?;
            in_ns(&["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    pub fn namespace(&self, index: usize) -> &str {
        &self.namespaces[index]
    }

    /// Loads an nftables script inside node `index`'s namespace (`nft -f`, atomic).
    pub fn load_nft(&self, index: usize, script: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.namespace(index), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft (scripts/install-deps.sh installs nftables)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "nft -f in {} failed: {}\n{script}",
                self.namespace(index),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes veths, namespaces and the bridge this run created. Idempotent.
    pub fn teardown(&mut self) {
        for veth in self.veths.drain(..) {
            run_quietly("ip", &["link", "del", &veth]);
        }
        for namespace in self.namespaces.drain(..) {
            run_quietly("ip", &["netns", "del", &namespace]);
        }
        if let Some(bridge) = self.bridge.take() {
            run_quietly("ip", &["link", "del", &bridge]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parsing() {
        assert_eq!(
            Subnet::parse("10.77.3.0/24").expect("valid"),
            Subnet([10, 77, 3])
        );
        assert!(Subnet::parse("8.8.8.0/24").is_err());
        assert!(Subnet::parse("10.0.0.5/24").is_err());
        assert_eq!(Subnet([10, 1, 2]).to_string(), "10.1.2.0/24");
    }
}
