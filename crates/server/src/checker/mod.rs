//! The health checker: the member-side half of health checks. Members probe the HTTP, TCP and
//! gRPC checks they own and turn the results into verdicts that go through Raft; TTL checks are
//! reported by the instances themselves and never probed.
//!
//! - [`health_checker`]: the checks this member owns (rendezvous over the committed checker
//!   set, only while connected to a quorum), scheduled, probed, turned into verdicts by
//!   `beacon_catalog::CheckTracker`, confirmed by a second member before critical, committed as
//!   compare-and-swap writes of the instance record;
//! - [`checker_set`]: the leader keeps `/_beacon/checkers` equal to the members that answer it;
//! - [`probe`]: one probe of one check (HTTP/HTTPS, TCP connect, `grpc.health.v1`), bounded by
//!   the check's timeout, with connections shared by every check of the member.

pub mod checker_set;
pub mod health_checker;
pub mod probe;
