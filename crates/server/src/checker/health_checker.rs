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
//! Probes that change nothing write nothing; their last result is kept here for `GetService`
//! (`include_probes` gathers them from every member).
//!
//! TTL checks are not probed: the instance reports them (`Heartbeat` with a status), and the
//! member that took the report hands it to the check's owner ([`HealthChecker::touch_ttl`]),
//! which restarts the check's deadline. When a deadline passes without a report, the owner
//! commits critical (no confirmation: there is no endpoint to ask about). An owner that takes a
//! TTL check over starts it with a whole TTL, since reports went to the previous owner, so an
//! expiry can come late after a change of owner, never early.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beacon_catalog::rendezvous::{check_key, confirmer, owner};
use beacon_catalog::{
    encode_instance, instance_key, set_check_state, should_deregister, CheckTracker, FlapPolicy,
    ProbeOutcome, Verdict,
};
use beacon_mvcc::{pb, WriteResponse};
use beacon_proto::beacon::v1::{
    check, Check, CheckProbeReport, HealthStatus, Instance, ProbeReport,
};
use beacon_storage::NodeId;
use tokio::sync::{mpsc, Semaphore};

use crate::catalog_service::compare_and_swap;
use crate::catalog_view::{CatalogView, ViewChange};
use crate::checker::probe::{ProbeResult, Prober};
use crate::observability::{check_kind_label, health_label, CHECK_RUNS, CHECK_TRANSITIONS};
use crate::raft_node::RaftNode;

/// Probes running at once on this member.
const MAX_CONCURRENT_PROBES: usize = 512;
/// How often ownership and connectivity are re-evaluated without any catalog change.
const OWNERSHIP_INTERVAL: Duration = Duration::from_millis(250);

/// How often an expired TTL check is looked at again: to retry a critical verdict that did not
/// commit, and for `deregister_critical_after`.
const TTL_RECHECK: Duration = Duration::from_secs(5);
/// The longest output (probe output or TTL note) kept in a check state, as Consul's
/// `check_output_max_size` defaults to.
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// A check's latest probe on this member, by (service, instance id, check id).
type Reports = BTreeMap<(String, String, String), ProbeReport>;

/// One check this member owns.
struct Owned {
    service: String,
    instance_id: String,
    check: Check,
    tracker: CheckTracker,
    /// Bumped whenever the check is rescheduled, so stale timer entries are ignored.
    generation: u64,
    running: bool,
    /// TTL checks: when the check expires unless a report comes first.
    ttl_deadline: Option<Instant>,
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
    reports: Mutex<Reports>,
    /// TTL reports for the run loop (by check key), and its end of the channel until it starts.
    touches: mpsc::UnboundedSender<Vec<u8>>,
    touched: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
}

/// Wall-clock milliseconds since the Unix epoch, as stamped into check states.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ttl_of(check: &Check) -> Option<Duration> {
    match &check.kind {
        Some(check::Kind::Ttl(ttl)) => Some(Duration::from_millis(ttl.ttl_ms.max(1))),
        _ => None,
    }
}

/// `output` cut to [`MAX_OUTPUT_BYTES`] at a character boundary.
pub fn bounded_output(mut output: String) -> String {
    if output.len() > MAX_OUTPUT_BYTES {
        let mut end = MAX_OUTPUT_BYTES;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    output
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
        let (touches, touched) = mpsc::unbounded_channel();
        Arc::new(HealthChecker {
            node,
            view,
            prober,
            settings,
            reports: Mutex::new(BTreeMap::new()),
            touches,
            touched: Mutex::new(Some(touched)),
        })
    }

    /// The prober, for the second opinions other members ask of this one.
    pub fn prober(&self) -> &Prober {
        &self.prober
    }

    fn reports(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The latest probes (and TTL reports) this member has of `service`'s checks.
    pub fn probe_reports(&self, service: &str) -> Vec<CheckProbeReport> {
        let start = (service.to_string(), String::new(), String::new());
        self.reports()
            .range(start..)
            .take_while(|((name, _, _), _)| name == service)
            .map(|((_, instance_id, check_id), report)| CheckProbeReport {
                instance_id: instance_id.clone(),
                check_id: check_id.clone(),
                report: Some(report.clone()),
            })
            .collect()
    }

    /// The member that runs a check now, by this member's view of the checker set.
    pub fn owner_of(&self, service: &str, instance_id: &str, check_id: &str) -> Option<NodeId> {
        owner(
            &check_key(service, instance_id, check_id),
            &self.checker_members(),
        )
    }

    /// Takes a TTL check's report: kept as its latest "probe", and, if this member owns the
    /// check, its deadline restarts. The status itself is committed by whoever took the
    /// report from the instance (`Heartbeat`).
    pub fn touch_ttl(
        &self,
        service: &str,
        instance_id: &str,
        check_id: &str,
        status: HealthStatus,
        note: String,
    ) {
        self.reports().insert(
            (
                service.to_string(),
                instance_id.to_string(),
                check_id.to_string(),
            ),
            ProbeReport {
                status: status as i32,
                output: bounded_output(note),
                latency_us: 0,
                at_unix_ms: now_unix_ms(),
                member_id: self.node.identity.member_id,
            },
        );
        metrics::counter!(CHECK_RUNS, "kind" => "ttl", "result" => health_label(status))
            .increment(1);
        let _ = self.touches.send(check_key(service, instance_id, check_id));
    }

    /// Whether this member may run checks now: connected to a leader that has a quorum.
    fn connected(&self) -> bool {
        // Negative control for jepsen-tests only (Cargo.toml): the isolation check is skipped.
        if cfg!(feature = "unsafe-unconfirmed-critical") {
            return true;
        }
        self.node.in_contact_within(self.settings.election_timeout)
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
        let Some(mut touched) = self
            .touched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            tracing::error!("the health checker was started twice");
            return;
        };
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
                        if let Some(deadline) = check.ttl_deadline {
                            self.ttl_due(check, deadline, &key, &mut timers, now);
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
                Some(key) = touched.recv() => {
                    // The pending timer finds the later deadline and waits for it.
                    if let Some(check) = owned.get_mut(&key) {
                        if let Some(ttl) = ttl_of(&check.check) {
                            check.ttl_deadline = Some(Instant::now() + ttl);
                        }
                    }
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
        {
            let present: std::collections::HashSet<(&str, &str)> = instances
                .iter()
                .map(|instance| (instance.service.as_str(), instance.id.as_str()))
                .collect();
            self.reports()
                .retain(|(service, id, _), _| present.contains(&(service.as_str(), id.as_str())));
        }
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
        let Some(instance) = instance else {
            self.reports()
                .retain(|(name, instance_id, _), _| name != service || instance_id != id);
            return;
        };
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
            .filter(|check| check.kind.is_some())
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
        if let Some(ttl) = ttl_of(&check) {
            // A whole TTL from the takeover: the reports so far went to the previous owner.
            let deadline = Instant::now() + ttl;
            timers.push(Reverse((deadline, *generation, key.to_vec())));
            return Owned {
                service: instance.service.clone(),
                instance_id: instance.id.clone(),
                tracker: CheckTracker::for_check(&check, self.settings.flap),
                check,
                generation: *generation,
                running: false,
                ttl_deadline: Some(deadline),
            };
        }
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
            ttl_deadline: None,
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
            existing.ttl_deadline = ttl_of(&check).map(|ttl| Instant::now() + ttl);
        } else {
            if existing.tracker.committed_status() != committed_status(&check) {
                let now = u64::try_from(now_unix_ms()).unwrap_or(0);
                existing.tracker.committed(committed_status(&check), now);
            }
            let reason = check
                .state
                .as_ref()
                .map_or("", |state| state.reason.as_str());
            existing.tracker.committed_reason(reason);
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
        let Some(check) = owned.get_mut(&key) else {
            return;
        };
        let (kind, result_label) = (check_kind_label(&check.check), health_label(result.status));
        metrics::counter!(CHECK_RUNS, "kind" => kind, "result" => result_label).increment(1);
        self.reports().insert(
            (
                check.service.clone(),
                check.instance_id.clone(),
                check.check.id.clone(),
            ),
            ProbeReport {
                status: result.status as i32,
                output: bounded_output(result.output.clone()),
                latency_us: u64::try_from(result.latency.as_micros()).unwrap_or(u64::MAX),
                at_unix_ms,
                member_id: self.node.identity.member_id,
            },
        );
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

    /// A TTL check's timer fired: waits on for a deadline a report moved, or expires the check.
    fn ttl_due(
        self: &Arc<Self>,
        check: &mut Owned,
        deadline: Instant,
        key: &[u8],
        timers: &mut BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
        now: Instant,
    ) {
        if now < deadline {
            timers.push(Reverse((deadline, check.generation, key.to_vec())));
            return;
        }
        let ttl = ttl_of(&check.check).unwrap_or(TTL_RECHECK);
        timers.push(Reverse((
            now + ttl.min(TTL_RECHECK),
            check.generation,
            key.to_vec(),
        )));
        let expired = committed_status(&check.check) != HealthStatus::Critical;
        let (service, instance_id) = (check.service.clone(), check.instance_id.clone());
        let definition = check.check.clone();
        let key = key.to_vec();
        let checker = self.clone();
        tokio::spawn(async move {
            if expired {
                let verdict = Verdict {
                    status: HealthStatus::Critical,
                    output: format!("TTL expired: no report within {}", humanize(ttl)),
                    reason: "TTL expired".to_string(),
                };
                checker
                    .commit_verdict(
                        &service,
                        &instance_id,
                        &definition.id,
                        &definition,
                        &key,
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
            && ttl_of(definition).is_none()
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
                let kind = check_kind_label(definition);
                metrics::counter!(CHECK_TRANSITIONS, "kind" => kind, "status" => health_label(status))
                    .increment(1);
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

/// A duration as people write it: `10s`, `1.5s`, `250ms`.
fn humanize(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else if millis > 1000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{millis}ms")
    }
}
