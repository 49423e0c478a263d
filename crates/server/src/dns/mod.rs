//! The DNS interface: every member answers for the configured domain (`beacon.` by default)
//! over UDP and TCP, from its own [`CatalogView`](crate::catalog_view::CatalogView) — the
//! applied catalog, no storage read per query.
//!
//! - [`name`]: which names exist and what they mean (service, tag, RFC 2782, instance forms);
//! - [`answer`]: from a request packet to a response packet (discovery, ordering, records,
//!   truncation, negative answers with the SOA);
//! - [`server`]: the UDP and TCP loops and the staleness rule (SERVFAIL after `max_stale_ms`
//!   without a leader);
//! - [`stats`]: answer counters by response code.
//!
//! hickory-proto parses and encodes the messages; the loops are ours, so the answer path stays
//! allocation-light and truncation can keep a weighted sample instead of the first records.
//! Names outside the domain are REFUSED: there is no forwarding to upstream resolvers.

pub mod answer;
pub mod name;
pub mod server;
pub mod stats;

pub use server::DnsServer;
pub use stats::{DnsStats, DnsStatsSnapshot};
