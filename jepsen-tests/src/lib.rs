//! Beacon's Jepsen-style fault-injection suite (see `jepsen-tests/README.md`): `beacond` nodes in
//! network namespaces ([`net`], [`cluster`]), faults on a schedule ([`nemesis`], [`firewall`]),
//! clients that record every operation ([`client`], [`workload`], [`history`]), and checkers that
//! judge the history ([`checker`]). [`run::run`] ties one run together; `main.rs` is the CLI.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod firewall;
pub mod history;
pub mod membership;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod workload;
