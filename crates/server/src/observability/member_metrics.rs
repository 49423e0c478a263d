//! Gauges that describe the member's state rather than count events: Raft leadership and
//! progress, leases, catalog health. Leadership is followed as openraft reports it
//! ([`follow_raft`], so no leader change is missed between scrapes); the rest is read when
//! `/metrics` is scraped ([`refresh`]), costing nothing in between.

use std::sync::Arc;
use std::time::Duration;

use beacon_proto::beacon::v1::HealthStatus;
use beacon_storage::{NodeId, TypeConfig};
use openraft::Raft;

use super::{
    health_label, APPLY_LAG, CATALOG_INSTANCES, CATALOG_MAINTENANCE, CATALOG_SERVICES, HAS_LEADER,
    IS_LEADER, LEADER_CHANGES, LEASES, PROPOSALS_APPLIED, PROPOSALS_COMMITTED, TERM,
};
use crate::catalog_view::CatalogView;
use crate::lease_keeper::LeaseKeeper;
use crate::raft_node::RaftNode;

/// How long a scrape waits for the Raft core to report its commit index.
const RAFT_STATE_TIMEOUT: Duration = Duration::from_secs(1);

/// Keeps the leadership gauges current and counts leader changes as etcd does: every time a
/// leader is known that differs from the previous observation (the first leader after start
/// and a leader after a leaderless gap count too). Runs until Raft shuts down.
pub async fn follow_raft(raft: Raft<TypeConfig>, me: NodeId) {
    let mut metrics = raft.metrics();
    let mut last_leader: Option<NodeId> = None;
    let mut last_term = None;
    loop {
        {
            let current = metrics.borrow_and_update();
            let leader = current.current_leader;
            if leader != last_leader {
                if leader.is_some() {
                    metrics::counter!(LEADER_CHANGES).increment(1);
                }
                metrics::gauge!(HAS_LEADER).set(f64::from(u8::from(leader.is_some())));
                metrics::gauge!(IS_LEADER).set(f64::from(u8::from(leader == Some(me))));
                last_leader = leader;
            }
            if last_term != Some(current.current_term) {
                metrics::gauge!(TERM).set(current.current_term as f64);
                last_term = Some(current.current_term);
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// This member's Raft progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftProgress {
    pub leader: Option<NodeId>,
    pub committed: u64,
    pub applied: u64,
}

impl RaftProgress {
    /// Committed entries not applied yet.
    pub fn apply_lag(&self) -> u64 {
        self.committed.saturating_sub(self.applied)
    }
}

/// Reads the commit index from the Raft core (openraft's metrics do not carry it) and the
/// applied index and leader from its metrics. `None` when Raft does not answer in time.
pub async fn raft_progress(node: &RaftNode) -> Option<RaftProgress> {
    let committed = tokio::time::timeout(
        RAFT_STATE_TIMEOUT,
        node.raft
            .with_raft_state(|state| state.committed.map_or(0, |id| id.index)),
    )
    .await
    .ok()?
    .ok()?;
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    Some(RaftProgress {
        leader: metrics.current_leader,
        // The two reads are not atomic: applied may have moved past the committed index read
        // a moment before.
        committed: committed.max(applied),
        applied,
    })
}

/// What a scrape reads.
pub struct ScrapeSources {
    pub node: Arc<RaftNode>,
    pub leases: Arc<LeaseKeeper>,
    pub catalog: Arc<CatalogView>,
}

/// Sets the scrape-time gauges.
pub async fn refresh(sources: &ScrapeSources) {
    if let Some(progress) = raft_progress(&sources.node).await {
        metrics::gauge!(PROPOSALS_COMMITTED).set(progress.committed as f64);
        metrics::gauge!(PROPOSALS_APPLIED).set(progress.applied as f64);
        metrics::gauge!(APPLY_LAG).set(progress.apply_lag() as f64);
    }
    metrics::gauge!(LEASES).set(sources.leases.count() as f64);
    // By health only: a label per service would make one series per service (unbounded).
    let mut by_health = [0u32; 3];
    let (mut maintenance, mut services) = (0u32, 0u32);
    {
        let view = sources.catalog.read();
        let mut last_service: Option<&str> = None;
        for ((service, _), instance) in &view.instances {
            if last_service != Some(service.as_str()) {
                services += 1;
                last_service = Some(service.as_str());
            }
            by_health[match beacon_catalog::health_of(instance) {
                HealthStatus::Passing => 0,
                HealthStatus::Warning => 1,
                HealthStatus::Critical | HealthStatus::Unspecified => 2,
            }] += 1;
            if instance
                .maintenance
                .as_ref()
                .is_some_and(|setting| setting.enabled)
            {
                maintenance += 1;
            }
        }
    }
    let statuses = [
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ];
    for (status, count) in statuses.into_iter().zip(by_health) {
        metrics::gauge!(CATALOG_INSTANCES, "health" => health_label(status)).set(f64::from(count));
    }
    metrics::gauge!(CATALOG_MAINTENANCE).set(f64::from(maintenance));
    metrics::gauge!(CATALOG_SERVICES).set(f64::from(services));
}
