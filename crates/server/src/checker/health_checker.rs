//! [`HealthChecker`]: the checks this member owns, probed on schedule, with only status
//! transitions proposed through Raft.
//!
//! Ownership: a check belongs to the first member of its rendezvous ranking over the committed
//! checker set (`checker_set`), and only while this member is connected (a leader confirmed by a
//! quorum recently; a follower that heard from its leader recently). An isolated member stops
//! probing at once: its verdicts could not commit anyway, and it must not act on a catalog it
//! cannot refresh.
//!
//! Each owned check has a [`CheckTracker`] (thresholds, flap damping) fed by probes; a verdict is
//! committed as a compare-and-swap of the instance record on its mod revision, so it never
//! overwrites a newer registration. Before a transition to critical commits, the second member of
//! the ranking probes once (`ConfirmProbe` over the peer channel): if it sees the endpoint
//! healthy, the verdict is dropped, so one member's bad path cannot take an instance out.
//! Probes that change nothing write nothing; their last result is kept here for `GetService`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beacon_catalog::rendezvous::{check_key, confirmer, owner};
use beacon_catalog::{
    encode_instance, instance_key, set_check_state, should_deregister, CheckTracker, FlapPolicy,
    ProbeOutcome, Verdict,
};
use beacon_mvcc::{pb, WriteResponse};
use beacon_proto::beacon::v1::{check, Check, HealthStatus, Instance};
use beacon_storage::NodeId;
use tokio::sync::{mpsc, Semaphore};

use crate::catalog_service::compare_and_swap;
use crate::catalog_view::{CatalogView, ViewChange};
use crate::checker::probe::{ProbeResult, Prober};
use crate::raft_node::RaftNode;

/// Probes running at once on this member.
const MAX_CONCURRENT_PROBES: usize = 512;
/// How often ownership and connectivity are re-evaluated without any catalog change.
const OWNERSHIP_INTERVAL: Duration = Duration::from_millis(250);

/// The last probe of a check on this member, for `GetService`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub output: String,
    pub status: HealthStatus,
    pub latency: Duration,
    pub at_unix_ms: i64,
}

/// One check this member owns.
struct Owned {
    service: String,
    instance_id: String,
    check: Check,
    tracker: CheckTracker,
    /// Bumped whenever the check is rescheduled, so stale timer entries are ignored.
    generation: u64,
    running: bool,
}

/// Settings of the checker on one member.
#[derive(Debug, Clone)]
pub struct CheckerSettings {
    pub election_timeout: Duration,
    pub flap: FlapPolicy,
}

/// The health checker of one member; see the module docs.
pub struct HealthChecker {
    node: Arc<RaftNode>,
    view: Arc<CatalogView>,
    prober: Prober,
    settings: CheckerSettings,
    reports: Mutex<HashMap<Vec<u8>, ProbeReport>>,
}

/// Wall-clock milliseconds since the Unix epoch, as stamped into check states.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn interval_of(check: &Check) -> Duration {
    Duration::from_millis(match check.interval_ms {
        0 => beacon_catalog::DEFAULT_INTERVAL_MS,
        interval => interval,
    })
}

fn outcome_of(result: &ProbeResult) -> ProbeOutcome {
    match result.status {
        HealthStatus::Passing => ProbeOutcome::Passing(result.output.clone()),
        HealthStatus::Warning => ProbeOutcome::Warning(result.output.clone()),
        HealthStatus::Critical | HealthStatus::Unspecified => {
            ProbeOutcome::Critical(result.output.clone())
        }
    }
}

/// A check's current committed status in its record.
fn committed_status(check: &Check) -> HealthStatus {
    check
        .state
        .as_ref()
        .map(|state| state.status())
        .unwrap_or(HealthStatus::Critical)
}

impl HealthChecker {
    pub fn new(
        node: Arc<RaftNode>,
        view: Arc<CatalogView>,
        prober: Prober,
        settings: CheckerSettings,
    ) -> Arc<Self> {
        Arc::new(HealthChecker {
            node,
            view,
            prober,
            settings,
            reports: Mutex::new(HashMap::new()),
        })
    }

    /// The last probe of a check on this member, if this member ran it.
    pub fn report(&self, service: &str, instance_id: &str, check_id: &str) -> Option<ProbeReport> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&check_key(service, instance_id, check_id))
            .cloned()
    }

    /// Whether this member may run checks now: connected to a leader that has a quorum.
    fn connected(&self) -> bool {
        // Negative control for jepsen-tests only (Cargo.toml): the isolation check is skipped.
        if cfg!(feature = "unsafe-unconfirmed-critical") {
            return true;
        }
        let window = self.settings.election_timeout;
        if self.node.is_leader() {
            let since = self.node.raft.metrics().borrow().millis_since_quorum_ack;
            since.is_some_and(|millis| Duration::from_millis(millis) <= window)
        } else {
            self.node.peers.liveness.leader_heard_within(window)
        }
    }

    /// The members sharing checks: the committed set, or every member before the leader wrote one.
    fn checker_members(&self) -> Vec<NodeId> {
        if let Some(set) = &self.view.read().checkers {
            return set.members.clone();
        }
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        let mut members: Vec<NodeId> = membership.membership().nodes().map(|(id, _)| *id).collect();
        members.sort_unstable();
        members
    }

    /// Runs until the member stops.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.view.subscribe();
        let (results, mut finished) = mpsc::unbounded_channel::<(Vec<u8>, u64, ProbeResult)>();
        let probes = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
        let mut owned: HashMap<Vec<u8>, Owned> = HashMap::new();
        let mut timers: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
        let mut ownership = tokio::time::interval(OWNERSHIP_INTERVAL);
        ownership.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_connected = false;
        let mut members = Vec::new();
        let mut generation = 0u64;
        loop {
            let next_due = timers.peek().map(|Reverse((at, _, _))| *at);
            let sleep = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    let mut touched = vec![change];
                    while let Ok(change) = changes.try_recv() {
                        touched.push(change);
                    }
                    let full = touched
                        .iter()
                        .any(|change| matches!(change, ViewChange::Reset | ViewChange::Checkers));
                    if full {
                        members = self.checker_members();
                        self.resync_all(&mut owned, &mut timers, &members, was_connected, &mut generation);
                    } else {
                        for change in touched {
                            if let ViewChange::Instance { service, id } = change {
                                self.resync_instance(&service, &id, &mut owned, &mut timers, &members, was_connected, &mut generation);
                            }
                        }
                    }
                }
                _ = ownership.tick() => {
                    let connected = self.connected();
                    let current = self.checker_members();
                    if connected != was_connected || current != members {
                        if connected != was_connected {
                            tracing::info!(connected, "health checking {}", if connected { "resumed" } else { "paused: no contact with a quorum" });
                        }
                        was_connected = connected;
                        members = current;
                        self.resync_all(&mut owned, &mut timers, &members, connected, &mut generation);
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    while let Some(Reverse((at, _, _))) = timers.peek() {
                        if *at > now {
                            break;
                        }
                        let Some(Reverse((at, entry_generation, key))) = timers.pop() else { break };
                        let Some(check) = owned.get_mut(&key) else { continue };
                        if check.generation != entry_generation {
                            continue;
                        }
                        // From the due time, not the wake-up, so the phase does not drift.
                        let next = (at + interval_of(&check.check)).max(now);
                        timers.push(Reverse((next, entry_generation, key.clone())));
                        if check.running {
                            continue;
                        }
                        check.running = true;
                        let prober = self.prober.clone();
                        let definition = check.check.clone();
                        let results = results.clone();
                        let probes = probes.clone();
                        tokio::spawn(async move {
                            let Ok(_permit) = probes.acquire_owned().await else { return };
                            let result = prober.probe(&definition).await;
                            let _ = results.send((key, entry_generation, result));
                        });
                    }
                }
                Some((key, entry_generation, result)) = finished.recv() => {
                    self.on_result(&mut owned, key, entry_generation, result);
                }
            }
        }
    }

    /// Recomputes every check this member owns (after a checker-set or connectivity change).
    fn resync_all(
        &self,
        owned: &mut HashMap<Vec<u8>, Owned>,
        timers: &mut BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
        members: &[NodeId],
        connected: bool,
        generation: &mut u64,
    ) {
        let instances: Vec<Instance> = self.view.read().instances.values().cloned().collect();
        let mut keep = HashMap::new();
        for instance in instances {
            for (key, check) in self.checks_to_own(&instance, members, connected) {
                let entry = match owned.remove(&key) {
                    Some(existing) => self.refresh(existing, &instance, check),
                    None => self.start(&instance, check, &key, None, timers, generation),
                };
                keep.insert(key, entry);
            }
        }
        *owned = keep;
    }

    /// Recomputes the checks of one instance after it changed.
    #[allow(clippy::too_many_arguments)]
    fn resync_instance(
        &self,
        service: &str,
        id: &str,
        owned: &mut HashMap<Vec<u8>, Owned>,
        timers: &mut BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
        members: &[NodeId],
        connected: bool,
        generation: &mut u64,
    ) {
        let instance = self
            .view
            .read()
            .instances
            .get(&(service.to_string(), id.to_string()))
            .cloned();
        let keys: Vec<Vec<u8>> = owned
            .iter()
            .filter(|(_, check)| check.service == service && check.instance_id == id)
            .map(|(key, _)| key.clone())
            .collect();
        let mut previous: HashMap<Vec<u8>, Owned> = keys
            .into_iter()
            .filter_map(|key| owned.remove_entry(&key))
            .collect();
        let Some(instance) = instance else { return };
        // Checks that stay owned keep their trackers (counters, flap history), and learn what
        // was committed (our own verdict, or a new registration's fresh state).
        for (key, check) in self.checks_to_own(&instance, members, connected) {
            let entry = match previous.remove(&key) {
                Some(existing) => self.refresh(existing, &instance, check),
                None => self.start(
                    &instance,
                    check,
                    &key,
                    Some(Duration::from_secs(1)),
                    timers,
                    generation,
                ),
            };
            owned.insert(key, entry);
        }
    }

    /// The probed checks of `instance` this member owns now.
    fn checks_to_own(
        &self,
        instance: &Instance,
        members: &[NodeId],
        connected: bool,
    ) -> Vec<(Vec<u8>, Check)> {
        if !connected || instance.maintenance.as_ref().is_some_and(|m| m.enabled) {
            return Vec::new();
        }
        let me = self.node.identity.member_id;
        instance
            .checks
            .iter()
            .filter(|check| !matches!(check.kind, Some(check::Kind::Ttl(_)) | None))
            .filter_map(|check| {
                let key = check_key(&instance.service, &instance.id, &check.id);
                (owner(&key, members) == Some(me)).then(|| (key, check.clone()))
            })
            .collect()
    }

    /// Starts owning a check; its first probe comes at a stable pseudo-random point within
    /// `first_within` (capped at its interval), and the following ones keep that phase. A new
    /// registration is probed within a second; checks taken over in bulk (a restart, a member
    /// that died or joined) are spread over their whole interval instead of probed at once.
    fn start(
        &self,
        instance: &Instance,
        check: Check,
        key: &[u8],
        first_within: Option<Duration>,
        timers: &mut BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
        generation: &mut u64,
    ) -> Owned {
        *generation += 1;
        let interval = interval_of(&check);
        let window = first_within.map_or(interval, |within| within.min(interval));
        let phase = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let offset = beacon_catalog::rendezvous::weight(key, 0) % phase;
        timers.push(Reverse((
            Instant::now() + Duration::from_millis(offset),
            *generation,
            key.to_vec(),
        )));
        Owned {
            service: instance.service.clone(),
            instance_id: instance.id.clone(),
            tracker: CheckTracker::for_check(&check, self.settings.flap),
            check,
            generation: *generation,
            running: false,
        }
    }

    /// Keeps a check's tracker when its definition is unchanged; tells it what was committed.
    fn refresh(&self, mut existing: Owned, instance: &Instance, check: Check) -> Owned {
        let same_definition = {
            let mut old = existing.check.clone();
            let mut new = check.clone();
            old.state = None;
            new.state = None;
            old == new
        };
        if !same_definition {
            existing.tracker = CheckTracker::for_check(&check, self.settings.flap);
        } else if existing.tracker.committed_status() != committed_status(&check) {
            let now = u64::try_from(now_unix_ms()).unwrap_or(0);
            existing.tracker.committed(committed_status(&check), now);
        }
        existing.service = instance.service.clone();
        existing.check = check;
        existing
    }

    fn on_result(
        self: &Arc<Self>,
        owned: &mut HashMap<Vec<u8>, Owned>,
        key: Vec<u8>,
        entry_generation: u64,
        result: ProbeResult,
    ) {
        let at_unix_ms = now_unix_ms();
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                key.clone(),
                ProbeReport {
                    output: result.output.clone(),
                    status: result.status,
                    latency: result.latency,
                    at_unix_ms,
                },
            );
        let Some(check) = owned.get_mut(&key) else {
            return;
        };
        if check.generation != entry_generation {
            return;
        }
        check.running = false;
        let now = u64::try_from(at_unix_ms).unwrap_or(0);
        let verdict = check.tracker.observe(outcome_of(&result), now);
        let service = check.service.clone();
        let instance_id = check.instance_id.clone();
        let check_id = check.check.id.clone();
        let definition = check.check.clone();
        let checker = self.clone();
        let key_for_task = key;
        tokio::spawn(async move {
            if let Some(verdict) = verdict {
                checker
                    .commit_verdict(
                        &service,
                        &instance_id,
                        &check_id,
                        &definition,
                        &key_for_task,
                        verdict,
                    )
                    .await;
            }
            checker
                .deregister_if_critical_too_long(&service, &instance_id)
                .await;
        });
    }

    /// Confirms a critical verdict with a second member, then commits it as a compare-and-swap.
    async fn commit_verdict(
        &self,
        service: &str,
        instance_id: &str,
        check_id: &str,
        definition: &Check,
        key: &[u8],
        verdict: Verdict,
    ) {
        // Negative control for jepsen-tests only (Cargo.toml): no second member is asked.
        if verdict.status == HealthStatus::Critical
            && !cfg!(feature = "unsafe-unconfirmed-critical")
        {
            let members = self.checker_members();
            if let Some(second) = confirmer(key, &members) {
                match self.node.confirm_probe(second, definition).await {
                    Ok(confirmation) if confirmation.status() != HealthStatus::Critical => {
                        tracing::info!(
                            service, instance = instance_id, check = check_id, confirmer = second,
                            output = %confirmation.output,
                            "critical verdict not confirmed by a second member; not committed"
                        );
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // No second opinion (the confirmer is unreachable): do not take the
                        // instance out on one member's word; the next probe asks again.
                        tracing::info!(service, instance = instance_id, check = check_id, %error, "critical verdict could not be confirmed");
                        return;
                    }
                }
            }
        }
        let record = self
            .view
            .read()
            .instances
            .get(&(service.to_string(), instance_id.to_string()))
            .cloned();
        let Some(mut record) = record else { return };
        let mod_revision = record.mod_revision;
        let status = verdict.status;
        if set_check_state(&mut record, check_id, verdict.into_state(now_unix_ms())).is_err() {
            return;
        }
        let key = instance_key(service, instance_id);
        let put = pb::PutRequest {
            key: key.clone(),
            value: encode_instance(&record),
            lease: record.lease,
            ..Default::default()
        };
        match self
            .node
            .write(compare_and_swap(key, mod_revision, Some(put)))
            .await
        {
            Ok(WriteResponse::Txn(response)) if response.succeeded => {
                tracing::info!(service, instance = instance_id, check = check_id, status = ?status, "check status changed");
            }
            Ok(_) => tracing::debug!(
                service,
                instance = instance_id,
                "record changed meanwhile; verdict dropped"
            ),
            Err(error) => tracing::debug!(%error, "verdict not committed"),
        }
    }

    /// Deregisters an instance whose check stayed critical past `deregister_critical_after`.
    async fn deregister_if_critical_too_long(&self, service: &str, instance_id: &str) {
        let record = self
            .view
            .read()
            .instances
            .get(&(service.to_string(), instance_id.to_string()))
            .cloned();
        let Some(record) = record else { return };
        if !should_deregister(&record, now_unix_ms()) {
            return;
        }
        let key = instance_key(service, instance_id);
        if let Ok(WriteResponse::Txn(response)) = self
            .node
            .write(compare_and_swap(key, record.mod_revision, None))
            .await
        {
            if response.succeeded {
                tracing::info!(
                    service,
                    instance = instance_id,
                    "deregistered: critical for longer than deregister_critical_after"
                );
            }
        }
    }
}
