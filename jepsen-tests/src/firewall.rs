//! Network faults as nftables rules. A fault is a [`Grudge`] — for each node, the nodes whose
//! packets it drops — plus an optional loss percentage; [`nft_script`] renders one node's rules as
//! a table `inet jepsen` whose input chain drops by source address. The script first declares and
//! deletes the table, so `nft -f` replaces the previous rules in one atomic transaction; healing
//! loads the script of an empty grudge. Client traffic comes from the bridge address, which is
//! never dropped: a client can still reach an isolated node (that is how stale reads show up).
//!
//! A *bad path* (the health workload's fault) is separate: [`path_script`] renders a table
//! `inet jepsen_path` whose output chain drops one node's packets to some `address:port`s (test
//! HTTP endpoints on the bridge address), so only that node cannot reach them. Partitions and
//! their heals never touch it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// For every node, the set of nodes it does not hear from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grudge(pub Vec<BTreeSet<usize>>);

impl Grudge {
    pub fn none(nodes: usize) -> Self {
        Grudge(vec![BTreeSet::new(); nodes])
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.0[a].insert(b);
        self.0[b].insert(a);
    }

    /// Splits the cluster into `group` and the rest, in both directions.
    pub fn split(nodes: usize, group: &BTreeSet<usize>) -> Self {
        let mut grudge = Self::none(nodes);
        for a in group {
            for b in (0..nodes).filter(|b| !group.contains(b)) {
                grudge.cut(*a, b);
            }
        }
        grudge
    }

    /// Each node hears only its two ring neighbours (meaningful for 5 nodes: every node still
    /// sees a majority including itself, but no two majorities agree).
    pub fn ring(nodes: usize) -> Self {
        let mut grudge = Self::none(nodes);
        for a in 0..nodes {
            for b in 0..nodes {
                let distance = (a + nodes - b) % nodes;
                if a != b && distance != 1 && distance != nodes - 1 {
                    grudge.0[a].insert(b);
                }
            }
        }
        grudge
    }

    /// Two halves joined only through `bridge`, which hears everyone.
    pub fn bridge(nodes: usize, bridge: usize) -> Self {
        let others: Vec<usize> = (0..nodes).filter(|n| *n != bridge).collect();
        let (left, right) = others.split_at(others.len() / 2);
        let mut grudge = Self::none(nodes);
        for a in left {
            for b in right {
                grudge.cut(*a, *b);
            }
        }
        grudge
    }

    /// `deaf` drops everything from the others; they still hear it (one-way).
    pub fn deaf(nodes: usize, deaf: usize) -> Self {
        let mut grudge = Self::none(nodes);
        grudge.0[deaf] = (0..nodes).filter(|n| *n != deaf).collect();
        grudge
    }

    /// The others drop everything from `mute`; it still hears them (one-way).
    pub fn mute(nodes: usize, mute: usize) -> Self {
        let mut grudge = Self::none(nodes);
        for other in (0..nodes).filter(|n| *n != mute) {
            grudge.0[other].insert(mute);
        }
        grudge
    }
}

/// Renders node `node`'s rules: drop packets from the nodes in its grudge, and `loss_percent` of
/// the packets from the other nodes (peer traffic only; clients are never dropped).
pub fn nft_script(node: usize, grudge: &Grudge, loss_percent: u8, ips: &[Ipv4Addr]) -> String {
    let mut script = String::from("table inet jepsen\ndelete table inet jepsen\n");
    let dropped: Vec<String> = grudge.0[node].iter().map(|n| ips[*n].to_string()).collect();
    let peers: Vec<String> = (0..ips.len())
        .filter(|n| *n != node && !grudge.0[node].contains(n))
        .map(|n| ips[n].to_string())
        .collect();
    let mut rules = Vec::new();
    if !dropped.is_empty() {
        rules.push(format!("ip saddr {{ {} }} drop", dropped.join(", ")));
    }
    if loss_percent > 0 && !peers.is_empty() {
        rules.push(format!(
            "ip saddr {{ {} }} numgen random mod 100 < {loss_percent} drop",
            peers.join(", ")
        ));
    }
    if rules.is_empty() {
        return script;
    }
    script.push_str("table inet jepsen {\n  chain input {\n    type filter hook input priority 0; policy accept;\n");
    for rule in rules {
        script.push_str("    ");
        script.push_str(&rule);
        script.push('\n');
    }
    script.push_str("  }\n}\n");
    script
}

/// Renders one node's bad paths: a table `inet jepsen_path` dropping the node's outgoing TCP
/// packets to each `(address, port)`. Like [`nft_script`] it replaces the previous table
/// atomically; no paths leaves no table.
pub fn path_script(blocked: &[(Ipv4Addr, u16)]) -> String {
    let mut script = String::from("table inet jepsen_path\ndelete table inet jepsen_path\n");
    if blocked.is_empty() {
        return script;
    }
    script.push_str(
        "table inet jepsen_path {\n  chain output {\n    type filter hook output priority 0; policy accept;\n",
    );
    for (address, port) in blocked {
        script.push_str(&format!("    ip daddr {address} tcp dport {port} drop\n"));
    }
    script.push_str("  }\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[usize]) -> BTreeSet<usize> {
        items.iter().copied().collect()
    }

    #[test]
    fn split_is_symmetric() {
        let grudge = Grudge::split(3, &set(&[0]));
        assert_eq!(grudge.0, vec![set(&[1, 2]), set(&[0]), set(&[0])]);
    }

    #[test]
    fn ring_of_five_keeps_neighbours() {
        let grudge = Grudge::ring(5);
        assert_eq!(grudge.0[0], set(&[2, 3]));
        assert_eq!(grudge.0[2], set(&[0, 4]));
    }

    #[test]
    fn bridge_of_five_connects_through_one() {
        let grudge = Grudge::bridge(5, 2);
        assert_eq!(grudge.0[2], set(&[]));
        assert_eq!(grudge.0[0], set(&[3, 4]));
        assert_eq!(grudge.0[4], set(&[0, 1]));
    }

    #[test]
    fn one_way_faults_are_one_way() {
        assert_eq!(Grudge::deaf(3, 1).0, vec![set(&[]), set(&[0, 2]), set(&[])]);
        assert_eq!(Grudge::mute(3, 1).0, vec![set(&[1]), set(&[]), set(&[1])]);
    }

    #[test]
    fn path_script_drops_only_the_named_endpoints() {
        let endpoint = Ipv4Addr::new(10, 0, 0, 1);
        let script = path_script(&[(endpoint, 4001), (endpoint, 4002)]);
        assert!(script.starts_with("table inet jepsen_path\ndelete table inet jepsen_path\n"));
        assert!(script.contains("hook output"));
        assert!(script.contains("ip daddr 10.0.0.1 tcp dport 4001 drop"));
        assert!(script.contains("ip daddr 10.0.0.1 tcp dport 4002 drop"));
        assert_eq!(
            path_script(&[]),
            "table inet jepsen_path\ndelete table inet jepsen_path\n"
        );
    }

    #[test]
    fn script_replaces_the_table_atomically() {
        let ips: Vec<Ipv4Addr> = (1..=3).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
        let script = nft_script(0, &Grudge::split(3, &set(&[0])), 0, &ips);
        assert!(script.starts_with("table inet jepsen\ndelete table inet jepsen\n"));
        assert!(script.contains("ip saddr { 10.0.0.2, 10.0.0.3 } drop"));
        let lossy = nft_script(0, &Grudge::none(3), 20, &ips);
        assert!(lossy.contains("ip saddr { 10.0.0.2, 10.0.0.3 } numgen random mod 100 < 20 drop"));
        assert_eq!(
            nft_script(1, &Grudge::none(3), 0, &ips),
            "table inet jepsen\ndelete table inet jepsen\n"
        );
    }
}
