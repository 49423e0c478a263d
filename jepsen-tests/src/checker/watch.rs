//! The watch checker: etcd's robustness-suite watch guarantees, judged against a ground truth.
//!
//! The workload records every watch request and response as a [`WatchEntry`] (`watch.jsonl`).
//! Watcher 0 is the *truth* watcher: one watch from revision 1 on the whole prefix with `prev_kv`,
//! resumed (from its last revision + 1, on another node) whenever its stream breaks, never
//! cancelled otherwise; the compactor never compacts at or above its position, so it can always
//! resume. Its events, concatenated, are the ground truth — and the truth is not taken on trust:
//! it is replayed (each event's version, create/mod revision and prev_kv must follow from the
//! previous state of the key), every acknowledged write must appear in it at its revision, and
//! the final linearizable read of the prefix must equal the replayed state.
//!
//! Every other watch (one per session of watchers 1..) is then checked:
//!
//! - **ordered**: event revisions never decrease within a response and strictly increase
//!   from one response to the next;
//! - **unique**: no (revision, key) event twice;
//! - **atomic**: all events of a revision in one response, and all of them (the truth's
//!   events of that revision, in range and not filtered out);
//! - **reliable**: every event equals the truth's event (type, key, value, create/mod revision,
//!   version), and no truth event in range is missing between the first and last event seen;
//! - **resumable**: a watch from start revision S sees no truth event in `[S, first seen)` missing
//!   (it starts exactly at S);
//! - **bookmarkable**: a progress response (watch id -1, or the watch's own id with no events)
//!   with header revision R is never followed by an event ≤ R, and every truth event ≤ R was
//!   delivered before it;
//! - **filter**: NOPUT/NODELETE honoured, and no key outside the watched range;
//! - **is-create**: a put is a create (`version == 1`) iff `create_revision == mod_revision`
//!   iff the key did not exist before, per the truth;
//! - **prev-kv**: with `prev_kv`, the event's prev_kv equals the truth's value of the key before
//!   the revision (or is absent when a compaction at or above the event's revision may have
//!   removed it, as etcd documents); without it, no prev_kv.
//!
//! A watch cancelled with `compact_revision` (its start was compacted) is not an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{CheckReport, Validity};

/// A key-value as the watch delivered it (keys and values are UTF-8 in this workload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ev {
    pub delete: bool,
    pub kv: Kv,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Kv>,
}

impl Ev {
    fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// A watch filter (etcd's `FilterType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    NoPut,
    NoDelete,
}

/// What a [`WatchEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A create request sent (start revision, range, filter, prev_kv).
    Create,
    /// A response received.
    Response,
    /// A cancel request sent.
    Cancel,
    /// A progress request sent.
    Progress,
    /// The stream failed (or could not be opened).
    Error,
    /// A compaction (revision; `error` if it failed).
    Compact,
    /// A write acknowledged ok (revision, `writes`).
    Write,
    /// After the heal: a linearizable read of the prefix (revision, `kvs`).
    Final,
}

/// One write of an acknowledged write op: key and value, `None` for a delete.
pub type Write = (String, Option<String>);

/// One record of `watch.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEntry {
    /// Nanoseconds since the run started.
    pub time: u64,
    pub kind: EntryKind,
    /// Watcher task (0: truth); writers and compactor use `u64::MAX`.
    #[serde(default)]
    pub watcher: u64,
    /// Stream (one watch a stream) of that watcher.
    #[serde(default)]
    pub session: u64,
    #[serde(default)]
    pub node: usize,
    /// Create: the key (prefix when `prefix`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default)]
    pub prefix: bool,
    #[serde(default)]
    pub start_revision: i64,
    #[serde(default)]
    pub prev_kv: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub watch_id: i64,
    /// Response: header revision; compact/write/final: the revision.
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub compact_revision: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Ev>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<Write>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvs: Vec<Kv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WatchEntry {
    pub fn new(kind: EntryKind, watcher: u64, session: u64, node: usize) -> Self {
        WatchEntry {
            time: 0,
            kind,
            watcher,
            session,
            node,
            key: String::new(),
            prefix: false,
            start_revision: 0,
            prev_kv: false,
            filter: None,
            watch_id: 0,
            revision: 0,
            created: false,
            canceled: false,
            compact_revision: 0,
            events: Vec::new(),
            writes: Vec::new(),
            kvs: Vec::new(),
            error: None,
        }
    }

    /// A response with no events that is not a create/cancel: a progress response.
    pub fn is_progress(&self) -> bool {
        self.kind == EntryKind::Response
            && self.events.is_empty()
            && !self.created
            && !self.canceled
    }
}

/// The names of the nine checks, in report order.
pub const CHECKS: [&str; 9] = [
    "ordered",
    "unique",
    "atomic",
    "reliable",
    "resumable",
    "bookmarkable",
    "filter",
    "is-create",
    "prev-kv",
];

/// The ground truth: events by revision, and each key's values over time.
#[derive(Debug, Default)]
pub(crate) struct Truth {
    pub(crate) events: BTreeMap<i64, Vec<Ev>>,
    /// Per key: (revision, value from that revision on; `None` once deleted).
    history: HashMap<String, Vec<(i64, Option<Kv>)>>,
    /// The truth is complete for revisions ≤ this.
    pub(crate) through: i64,
}

impl Truth {
    /// The key's value just before `revision`.
    pub(crate) fn before(&self, key: &str, revision: i64) -> Option<&Kv> {
        let versions = self.history.get(key)?;
        let index = versions.partition_point(|(at, _)| *at < revision);
        index
            .checked_sub(1)
            .and_then(|index| versions[index].1.as_ref())
    }

    /// The state of the prefix at `revision`.
    pub(crate) fn state_at(&self, revision: i64) -> BTreeMap<&str, &Kv> {
        let mut state = BTreeMap::new();
        for key in self.history.keys() {
            if let Some(kv) = self.before(key, revision + 1) {
                state.insert(key.as_str(), kv);
            }
        }
        state
    }
}

struct Session<'a> {
    watcher: u64,
    session: u64,
    entries: Vec<&'a WatchEntry>,
}

impl Session<'_> {
    fn name(&self) -> String {
        format!("watcher {} session {}", self.watcher, self.session)
    }
    fn create(&self) -> Option<&WatchEntry> {
        self.entries
            .iter()
            .copied()
            .find(|entry| entry.kind == EntryKind::Create)
    }
    fn responses(&self) -> impl Iterator<Item = &WatchEntry> {
        self.entries
            .iter()
            .copied()
            .filter(|entry| entry.kind == EntryKind::Response)
    }
}

fn sessions(entries: &[WatchEntry]) -> Vec<Session<'_>> {
    let mut by_id: BTreeMap<(u64, u64), Vec<&WatchEntry>> = BTreeMap::new();
    for entry in entries {
        if matches!(
            entry.kind,
            EntryKind::Create
                | EntryKind::Response
                | EntryKind::Cancel
                | EntryKind::Progress
                | EntryKind::Error
        ) && entry.watcher != u64::MAX
        {
            by_id
                .entry((entry.watcher, entry.session))
                .or_default()
                .push(entry);
        }
    }
    by_id
        .into_iter()
        .map(|((watcher, session), entries)| Session {
            watcher,
            session,
            entries,
        })
        .collect()
}

fn in_range(create: &WatchEntry, key: &str) -> bool {
    if create.prefix {
        key.starts_with(&create.key)
    } else {
        key == create.key
    }
}

fn passes_filter(filter: Option<Filter>, event: &Ev) -> bool {
    match filter {
        Some(Filter::NoPut) => event.delete,
        Some(Filter::NoDelete) => !event.delete,
        None => true,
    }
}

/// Builds and validates the truth from watcher 0's sessions.
fn build_truth(sessions: &[Session<'_>], report: &mut Check) -> Option<Truth> {
    let mut truth = Truth::default();
    let mut state: HashMap<String, Kv> = HashMap::new();
    let mut last = 0i64;
    let mut any = false;
    for session in sessions.iter().filter(|session| session.watcher == 0) {
        any = true;
        let Some(create) = session.create() else {
            continue;
        };
        if create.start_revision > last + 1 || create.start_revision <= 0 {
            report.truth(format!(
                "{} starts at {} but the truth is through {last}",
                session.name(),
                create.start_revision
            ));
            return None;
        }
        let mut progress_through = last;
        for response in session.responses() {
            if response.canceled && response.compact_revision > 0 {
                report.truth(format!(
                    "{} was compacted at {} (the compactor must stay behind it)",
                    session.name(),
                    response.compact_revision
                ));
                return None;
            }
            if response.is_progress() {
                progress_through = progress_through.max(response.revision);
            }
            for event in &response.events {
                let revision = event.revision();
                if revision < last {
                    report.truth(format!(
                        "{}: event at {revision} after {last}",
                        session.name()
                    ));
                    return None;
                }
                let known = state.get(&event.kv.key).cloned();
                if truth
                    .events
                    .get(&revision)
                    .is_some_and(|events| events.iter().any(|e| e.kv.key == event.kv.key))
                {
                    report.truth(format!(
                        "{}: key {} twice at revision {revision}",
                        session.name(),
                        event.kv.key
                    ));
                    return None;
                }
                if event.prev != known {
                    report.truth(format!(
                        "{}: prev_kv of {} at {revision} is {:?}, replay says {:?}",
                        session.name(),
                        event.kv.key,
                        event.prev,
                        known
                    ));
                }
                if event.delete {
                    if known.is_none() {
                        report.truth(format!(
                            "{}: delete of absent key {} at {revision}",
                            session.name(),
                            event.kv.key
                        ));
                    }
                    state.remove(&event.kv.key);
                } else {
                    let (version, create_revision) = match &known {
                        Some(kv) => (kv.version + 1, kv.create_revision),
                        None => (1, revision),
                    };
                    if event.kv.version != version || event.kv.create_revision != create_revision {
                        report.truth(format!(
                            "{}: put of {} at {revision} has version {} create {}, replay says {version} {create_revision}",
                            session.name(),
                            event.kv.key,
                            event.kv.version,
                            event.kv.create_revision
                        ));
                    }
                    state.insert(event.kv.key.clone(), event.kv.clone());
                }
                truth
                    .history
                    .entry(event.kv.key.clone())
                    .or_default()
                    .push((revision, (!event.delete).then(|| event.kv.clone())));
                truth
                    .events
                    .entry(revision)
                    .or_default()
                    .push(event.clone());
                last = revision;
            }
        }
        last = last.max(progress_through);
    }
    if !any {
        report.unknown("no truth watcher sessions".to_string());
        return None;
    }
    truth.through = last;
    Some(truth)
}

/// Anomalies per check plus the truth's own problems (also the catalog checker's).
pub(crate) struct Check {
    pub(crate) report: CheckReport,
    pub(crate) counts: BTreeMap<&'static str, usize>,
}

impl Check {
    /// A report named `checker` counting anomalies of `checks` (each starts at 0).
    pub(crate) fn new(checker: &str, checks: &[&'static str]) -> Self {
        Check {
            report: CheckReport::new(checker),
            counts: checks.iter().map(|name| (*name, 0)).collect(),
        }
    }
    pub(crate) fn anomaly(&mut self, check: &'static str, description: String) {
        *self.counts.entry(check).or_insert(0) += 1;
        self.report.anomaly(format!("{check}: {description}"));
    }
    fn truth(&mut self, description: String) {
        *self.counts.entry("truth").or_insert(0) += 1;
        self.report.anomaly(format!("truth: {description}"));
    }
    pub(crate) fn unknown(&mut self, description: String) {
        self.report.unknown(description);
    }
}

/// Checks a watch history. The truth must reach the last acknowledged write and every final read,
/// else the verdict is unknown.
pub fn check(entries: &[WatchEntry]) -> CheckReport {
    let mut check = Check::new("watch", &CHECKS);
    let Some((truth, writes_checked)) = checked_truth(entries, &mut check) else {
        return check.report;
    };
    let sessions = sessions(entries);

    // The watches.
    let mut stats = Stats::default();
    // The highest successful compaction: prev_kv of events at or below it may be gone.
    let compacted_through = compacted_through(entries);
    for session in sessions.iter().filter(|session| session.watcher != 0) {
        check_session(session, &truth, compacted_through, &mut check, &mut stats);
    }
    let truth_events: usize = truth.events.values().map(Vec::len).sum();
    check.report.stats = serde_json::json!({
        "truth_through": truth.through,
        "truth_revisions": truth.events.len(),
        "truth_events": truth_events,
        "writes_checked": writes_checked,
        "watches": stats.watches,
        "compacted_watches": stats.compacted,
        "responses": stats.responses,
        "progress_responses": stats.progress,
        "events_checked": stats.events,
        "events_beyond_truth": stats.beyond,
        "anomalies_by_check": check.counts,
    });
    check.report
}

/// The highest successful compaction revision in the entries (0: none).
pub(crate) fn compacted_through(entries: &[WatchEntry]) -> i64 {
    entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Compact && entry.error.is_none())
        .map(|entry| entry.revision)
        .max()
        .unwrap_or(0)
}

/// The ground truth from watcher 0's sessions, validated: it replays consistently, holds every
/// acknowledged write (`Write` entries) at its revision, and equals every final read (`Final`
/// entries). Returns it with the number of writes checked; `None` (with the report invalid or
/// unknown) when there is no usable truth. Problems are counted under "truth".
pub(crate) fn checked_truth(entries: &[WatchEntry], check: &mut Check) -> Option<(Truth, usize)> {
    let sessions = sessions(entries);
    let Some(truth) = build_truth(&sessions, check) else {
        if check.report.validity == Validity::Valid {
            check.unknown("no ground truth".to_string());
        }
        return None;
    };
    // The truth against the writers' acknowledgements and the final read.
    let mut writes_checked = 0usize;
    let last_write = entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Write)
        .map(|entry| entry.revision)
        .max()
        .unwrap_or(0);
    if last_write > truth.through {
        check.unknown(format!(
            "the truth reaches revision {} only, writes were acknowledged up to {last_write}",
            truth.through
        ));
    }
    for entry in entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Write && entry.revision <= truth.through)
    {
        let events = truth.events.get(&entry.revision);
        for (key, value) in &entry.writes {
            writes_checked += 1;
            let event = events.and_then(|events| events.iter().find(|e| &e.kv.key == key));
            let fine = match (value, event) {
                (Some(value), Some(event)) => !event.delete && &event.kv.value == value,
                (None, Some(event)) => event.delete,
                // A delete of an absent key is no event.
                (None, None) => truth.before(key, entry.revision).is_none(),
                (Some(_), None) => false,
            };
            if !fine {
                check.truth(format!(
                    "acknowledged write {key} = {value:?} at revision {} is not in the truth ({event:?})",
                    entry.revision
                ));
            }
        }
    }
    for entry in entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Final)
    {
        if entry.revision > truth.through {
            check.unknown(format!(
                "final read at {} is beyond the truth ({})",
                entry.revision, truth.through
            ));
            continue;
        }
        let expected = truth.state_at(entry.revision);
        let got: BTreeMap<&str, &Kv> = entry.kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
        if expected != got {
            check.truth(format!(
                "final read on node {} at {} differs from the replayed truth ({} vs {} keys)",
                entry.node,
                entry.revision,
                got.len(),
                expected.len()
            ));
        }
    }

    Some((truth, writes_checked))
}

#[derive(Default)]
struct Stats {
    watches: usize,
    compacted: usize,
    responses: usize,
    progress: usize,
    events: usize,
    beyond: usize,
}

fn check_session(
    session: &Session<'_>,
    truth: &Truth,
    compacted_through: i64,
    check: &mut Check,
    stats: &mut Stats,
) {
    let name = session.name();
    let Some(create) = session.create() else {
        return;
    };
    let responses: Vec<&WatchEntry> = session.responses().collect();
    let Some(created) = responses.iter().find(|response| response.created) else {
        return;
    };
    if responses
        .iter()
        .any(|response| response.canceled && response.compact_revision > 0)
    {
        stats.compacted += 1;
        if responses.iter().any(|response| !response.events.is_empty()) {
            // Events before a compaction cancel are allowed; they are still checked below.
        } else {
            return;
        }
    }
    stats.watches += 1;
    let start = if create.start_revision > 0 {
        create.start_revision
    } else {
        created.revision + 1
    };

    let mut last_response_revision = 0i64;
    let mut progress_through = 0i64;
    let mut seen: BTreeMap<i64, Vec<(usize, &Ev)>> = BTreeMap::new();
    let mut keys_seen: BTreeSet<(i64, &str)> = BTreeSet::new();
    for (index, response) in responses.iter().enumerate() {
        stats.responses += 1;
        if response.is_progress() {
            stats.progress += 1;
            if response.watch_id == -1 || response.watch_id == created.watch_id {
                // Everything up to here must have been delivered: checked below.
                progress_through = progress_through.max(response.revision);
            }
            continue;
        }
        let mut previous = 0i64;
        for event in &response.events {
            stats.events += 1;
            let revision = event.revision();
            // ordered
            if revision < previous {
                check.anomaly(
                    "ordered",
                    format!("{name}: revision {revision} after {previous} in one response"),
                );
            }
            if revision <= last_response_revision && previous == 0 {
                check.anomaly(
                    "ordered",
                    format!(
                        "{name}: response starts at {revision}, an earlier response reached {last_response_revision}"
                    ),
                );
            }
            previous = revision;
            // unique
            if !keys_seen.insert((revision, event.kv.key.as_str())) {
                check.anomaly(
                    "unique",
                    format!("{name}: {} at revision {revision} twice", event.kv.key),
                );
                continue;
            }
            // bookmarkable: nothing at or below an earlier progress revision
            if revision <= progress_through {
                check.anomaly(
                    "bookmarkable",
                    format!(
                        "{name}: event at {revision} after a progress response at {progress_through}"
                    ),
                );
            }
            if revision < start {
                check.anomaly(
                    "resumable",
                    format!("{name}: event at {revision} before the start revision {start}"),
                );
            }
            // filter
            if !passes_filter(create.filter, event) {
                check.anomaly(
                    "filter",
                    format!(
                        "{name}: {} event of {} at {revision} despite {:?}",
                        if event.delete { "delete" } else { "put" },
                        event.kv.key,
                        create.filter
                    ),
                );
            }
            if !in_range(create, &event.kv.key) {
                check.anomaly(
                    "filter",
                    format!(
                        "{name}: key {} outside the watched range {}",
                        event.kv.key, create.key
                    ),
                );
            }
            // is-create (internal consistency)
            if !event.delete
                && (event.kv.version == 1) != (event.kv.create_revision == event.kv.mod_revision)
            {
                check.anomaly(
                    "is-create",
                    format!(
                        "{name}: {} at {revision} has version {} but create_revision {}",
                        event.kv.key, event.kv.version, event.kv.create_revision
                    ),
                );
            }
            seen.entry(revision).or_default().push((index, event));
            if revision > truth.through {
                stats.beyond += 1;
                continue;
            }
            // reliable: the event itself is the truth's
            let truth_event = truth
                .events
                .get(&revision)
                .and_then(|events| events.iter().find(|e| e.kv.key == event.kv.key));
            match truth_event {
                None => check.anomaly(
                    "reliable",
                    format!(
                        "{name}: event {} at {revision} is not in the truth",
                        event.kv.key
                    ),
                ),
                Some(truth_event) => {
                    if truth_event.delete != event.delete || truth_event.kv != event.kv {
                        // A wrong version/create revision on a put is an is-create error when
                        // that is all that differs.
                        let mut relaxed = event.kv.clone();
                        relaxed.version = truth_event.kv.version;
                        relaxed.create_revision = truth_event.kv.create_revision;
                        let check_name =
                            if truth_event.delete == event.delete && relaxed == truth_event.kv {
                                "is-create"
                            } else {
                                "reliable"
                            };
                        check.anomaly(
                            check_name,
                            format!(
                                "{name}: event at {revision} is {event:?}, the truth has {truth_event:?}"
                            ),
                        );
                    }
                }
            }
            if !event.delete {
                let existed = truth.before(&event.kv.key, revision).is_some();
                if (event.kv.version == 1) == existed {
                    check.anomaly(
                        "is-create",
                        format!(
                            "{name}: put of {} at {revision} has version {} but the key {} before",
                            event.kv.key,
                            event.kv.version,
                            if existed { "existed" } else { "did not exist" }
                        ),
                    );
                }
            }
            // prev-kv
            if create.prev_kv {
                let expected = truth.before(&event.kv.key, revision);
                // etcd's contract: "if the previous KV is already compacted, nothing will be
                // returned". An absent prev_kv is fine once the history before the event may
                // have been compacted; a wrong one never is.
                let compacted = event.prev.is_none() && revision <= compacted_through;
                if event.prev.as_ref() != expected && !compacted {
                    check.anomaly(
                        "prev-kv",
                        format!(
                            "{name}: prev_kv of {} at {revision} is {:?}, the truth has {expected:?}",
                            event.kv.key, event.prev
                        ),
                    );
                }
            } else if event.prev.is_some() {
                check.anomaly(
                    "prev-kv",
                    format!(
                        "{name}: prev_kv of {} at {revision} sent without being asked",
                        event.kv.key
                    ),
                );
            }
        }
        if let Some(last) = response.events.last() {
            last_response_revision = last_response_revision.max(last.revision());
        }
        // Missing events up to the progress revision are checked once, at the end.
    }

    // atomic: one response per revision, and every event of the revision.
    let expected_at = |revision: i64| -> Vec<&Ev> {
        truth
            .events
            .get(&revision)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| in_range(create, &e.kv.key) && passes_filter(create.filter, e))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (revision, events) in &seen {
        let responses: BTreeSet<usize> = events.iter().map(|(index, _)| *index).collect();
        if responses.len() > 1 {
            check.anomaly(
                "atomic",
                format!(
                    "{name}: revision {revision} split over {} responses",
                    responses.len()
                ),
            );
        }
        if *revision <= truth.through {
            let expected = expected_at(*revision);
            let missing: Vec<&str> = expected
                .iter()
                .filter(|e| !events.iter().any(|(_, seen)| seen.kv.key == e.kv.key))
                .map(|e| e.kv.key.as_str())
                .collect();
            if !missing.is_empty() {
                check.anomaly(
                    "atomic",
                    format!("{name}: revision {revision} delivered without {missing:?}"),
                );
            }
        }
    }

    // reliable / resumable / bookmarkable: no truth event missing in [start, covered].
    let first_seen = seen.keys().next().copied();
    let last_seen = seen.keys().next_back().copied().unwrap_or(0);
    let covered = last_seen.max(progress_through).min(truth.through);
    let missing_range = if covered >= start {
        truth.events.range(start..=covered)
    } else {
        truth.events.range(0..0)
    };
    for (revision, events) in missing_range {
        if seen.contains_key(revision) {
            continue; // partial revisions were reported as atomic
        }
        if !events
            .iter()
            .any(|e| in_range(create, &e.kv.key) && passes_filter(create.filter, e))
        {
            continue;
        }
        let check_name = match first_seen {
            Some(first) if *revision < first => "resumable",
            Some(_) if *revision < last_seen => "reliable",
            None => "resumable",
            Some(_) => "bookmarkable",
        };
        check.anomaly(
            check_name,
            format!(
                "{name}: revision {revision} missing (watch from {start}, saw up to {last_seen}, progress at {progress_through})"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
        Kv {
            key: key.to_string(),
            value: value.to_string(),
            create_revision: create,
            mod_revision: modified,
            version,
        }
    }

    fn put(kv: Kv, prev: Option<Kv>) -> Ev {
        Ev {
            delete: false,
            kv,
            prev,
        }
    }

    fn delete(key: &str, revision: i64, prev: Option<Kv>) -> Ev {
        Ev {
            delete: true,
            kv: kv(key, "", 0, revision, 0),
            prev,
        }
    }

    /// The applied history: r2 put a=1; r3 put b=1 + put a=2 (txn); r4 delete a; r5 put a=3;
    /// r6 put b=2.
    fn truth_events() -> Vec<Vec<Ev>> {
        let a1 = kv("p/a", "1", 2, 2, 1);
        let b1 = kv("p/b", "1", 3, 3, 1);
        let a2 = kv("p/a", "2", 2, 3, 2);
        let a3 = kv("p/a", "3", 5, 5, 1);
        let b2 = kv("p/b", "2", 3, 6, 2);
        vec![
            vec![put(a1.clone(), None)],
            vec![put(b1.clone(), None), put(a2.clone(), Some(a1))],
            vec![delete("p/a", 4, Some(a2))],
            vec![put(a3, None)],
            vec![put(b2, Some(b1))],
        ]
    }

    fn strip_prev(events: &[Ev]) -> Vec<Ev> {
        events
            .iter()
            .map(|e| Ev {
                prev: None,
                ..e.clone()
            })
            .collect()
    }

    fn response(watcher: u64, session: u64, revision: i64, events: Vec<Ev>) -> WatchEntry {
        let mut entry = WatchEntry::new(EntryKind::Response, watcher, session, 0);
        entry.watch_id = 1;
        entry.revision = revision;
        entry.events = events;
        entry
    }

    fn create(
        watcher: u64,
        session: u64,
        start: i64,
        prev_kv: bool,
        filter: Option<Filter>,
    ) -> Vec<WatchEntry> {
        let mut request = WatchEntry::new(EntryKind::Create, watcher, session, 0);
        request.key = "p/".to_string();
        request.prefix = true;
        request.start_revision = start;
        request.prev_kv = prev_kv;
        request.filter = filter;
        let mut created = response(watcher, session, 1, vec![]);
        created.created = true;
        vec![request, created]
    }

    /// The truth watcher plus writes and a final read.
    fn base() -> Vec<WatchEntry> {
        let mut entries = create(0, 0, 1, true, None);
        for events in truth_events() {
            let revision = events[0].revision();
            entries.push(response(0, 0, revision, events));
        }
        let mut write = WatchEntry::new(EntryKind::Write, u64::MAX, 0, 0);
        write.revision = 3;
        write.writes = vec![
            ("p/b".to_string(), Some("1".to_string())),
            ("p/a".to_string(), Some("2".to_string())),
        ];
        entries.push(write);
        let mut final_read = WatchEntry::new(EntryKind::Final, u64::MAX, 0, 0);
        final_read.revision = 6;
        final_read.kvs = vec![kv("p/a", "3", 5, 5, 1), kv("p/b", "2", 3, 6, 2)];
        entries.push(final_read);
        entries
    }

    /// A good watcher: from revision 3 with prev_kv, events in two responses, then a progress
    /// response; a resumed watch from 6 without prev_kv; a NOPUT watch; a compacted start.
    fn good() -> Vec<WatchEntry> {
        let events = truth_events();
        let mut entries = base();
        entries.extend(create(1, 0, 3, true, None));
        entries.push(response(
            1,
            0,
            6,
            [events[1].clone(), events[2].clone()].concat(),
        ));
        entries.push(response(1, 0, 6, events[3].clone()));
        let mut progress = response(1, 0, 5, vec![]);
        progress.watch_id = -1;
        entries.push(progress);
        entries.extend(create(1, 1, 6, false, None));
        entries.push(response(1, 1, 6, strip_prev(&events[4])));
        entries.extend(create(2, 0, 2, false, Some(Filter::NoPut)));
        entries.push(response(2, 0, 6, strip_prev(&events[2])));
        let mut progress = response(2, 0, 6, vec![]);
        progress.watch_id = -1;
        entries.push(progress);
        // A watch from the next revision that only ever sees a progress response.
        entries.extend(create(4, 0, 7, false, None));
        let mut progress = response(4, 0, 6, vec![]);
        progress.watch_id = -1;
        entries.push(progress);
        entries.extend(create(3, 0, 1, false, None));
        let mut canceled = response(3, 0, 6, vec![]);
        canceled.canceled = true;
        canceled.compact_revision = 4;
        entries.push(canceled);
        entries
    }

    fn count(report: &CheckReport, name: &str) -> usize {
        report.stats["anomalies_by_check"][name]
            .as_u64()
            .unwrap_or(0) as usize
    }

    fn rejected_by(entries: Vec<WatchEntry>, name: &str) {
        let report = check(&entries);
        assert_eq!(report.validity, Validity::Invalid, "{report:?}");
        assert!(count(&report, name) > 0, "expected {name}: {report:?}");
    }

    /// Finds watcher 1 session 0's response with events at `revision` (first event).
    fn position(entries: &[WatchEntry], watcher: u64, first_revision: i64) -> usize {
        entries
            .iter()
            .position(|e| {
                e.watcher == watcher
                    && e.kind == EntryKind::Response
                    && e.events.first().map(Ev::revision) == Some(first_revision)
            })
            .expect("response")
    }

    /// Re-checks a stored run: `WATCH_JSONL=<run dir>/watch.jsonl cargo test -p jepsen-tests
    /// recheck_stored -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs WATCH_JSONL"]
    fn recheck_stored() {
        let path = std::env::var("WATCH_JSONL").expect("WATCH_JSONL");
        let text = std::fs::read_to_string(path).expect("read");
        let entries: Vec<WatchEntry> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).expect("parse"))
            .collect();
        let report = check(&entries);
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }

    #[test]
    fn good_history_is_valid() {
        let report = check(&good());
        assert_eq!(report.validity, Validity::Valid, "{report:?}");
        assert_eq!(report.stats["events_checked"], 6);
        assert_eq!(report.stats["compacted_watches"], 1);
        // A JSON round trip keeps it valid.
        let text: Vec<String> = good()
            .iter()
            .map(|e| serde_json::to_string(e).expect("serialize"))
            .collect();
        let back: Vec<WatchEntry> = text
            .iter()
            .map(|line| serde_json::from_str(line).expect("parse"))
            .collect();
        assert_eq!(check(&back).validity, Validity::Valid);
    }

    #[test]
    fn duplicated_event_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 5);
        let duplicate = entries[index].events[0].clone();
        entries[index].events.push(duplicate);
        rejected_by(entries, "unique");
    }

    #[test]
    fn reordered_events_are_rejected() {
        let mut entries = good();
        let first = position(&entries, 1, 3);
        let second = position(&entries, 1, 5);
        let a = entries[first].events.clone();
        let b = entries[second].events.clone();
        entries[first].events = b;
        entries[second].events = a;
        rejected_by(entries, "ordered");
    }

    #[test]
    fn missing_event_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 3);
        entries[index].events.retain(|e| e.revision() != 4);
        rejected_by(entries, "reliable");
    }

    #[test]
    fn late_start_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 3);
        entries[index].events.retain(|e| e.revision() != 3);
        rejected_by(entries, "resumable");
    }

    #[test]
    fn split_revision_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 3);
        let moved = entries[index].events.remove(1); // a at 3, b stays
        let mut extra = response(1, 0, 6, vec![moved]);
        extra.watch_id = 1;
        entries.insert(index + 1, extra);
        rejected_by(entries.clone(), "atomic");
        // And a revision delivered partially.
        let mut partial = good();
        let index = position(&partial, 1, 3);
        partial[index].events.remove(1);
        rejected_by(partial, "atomic");
    }

    #[test]
    fn bad_prev_kv_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 5);
        entries[index].events[0].prev = Some(kv("p/a", "2", 2, 3, 2));
        rejected_by(entries, "prev-kv");
        let mut unasked = good();
        let index = position(&unasked, 1, 6);
        unasked[index].events[0].prev = Some(kv("p/b", "1", 3, 3, 1));
        rejected_by(unasked, "prev-kv");
    }

    #[test]
    fn progress_running_ahead_is_rejected() {
        let mut entries = good();
        // A progress response at 4 before the events of 3..5 arrive.
        let index = position(&entries, 1, 3);
        let mut progress = response(1, 0, 4, vec![]);
        progress.watch_id = -1;
        entries.insert(index, progress);
        rejected_by(entries, "bookmarkable");
        // A progress response at 6 on a watch that never got revision 6.
        let mut ahead = good();
        let index = position(&ahead, 1, 5);
        let mut progress = response(1, 0, 6, vec![]);
        progress.watch_id = -1;
        ahead.insert(index + 1, progress);
        rejected_by(ahead, "bookmarkable");
    }

    #[test]
    fn filter_violation_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 2, 4);
        let events = truth_events();
        let mut with_put = strip_prev(&events[2]);
        with_put.extend(strip_prev(&events[3]));
        entries[index].events = with_put;
        rejected_by(entries, "filter");
    }

    #[test]
    fn wrong_is_create_is_rejected() {
        let mut entries = good();
        let index = position(&entries, 1, 5);
        // a=3 at 5 is a create; claim it continues the old key.
        entries[index].events[0].kv.version = 3;
        entries[index].events[0].kv.create_revision = 2;
        rejected_by(entries, "is-create");
    }

    #[test]
    fn truth_disagreeing_with_writes_is_rejected() {
        let mut entries = good();
        let write = entries
            .iter_mut()
            .find(|e| e.kind == EntryKind::Write)
            .expect("a write");
        write.writes[0].1 = Some("9".to_string());
        let report = check(&entries);
        assert_eq!(report.validity, Validity::Invalid);
        assert!(count(&report, "truth") > 0);
    }

    #[test]
    fn truth_short_of_writes_is_unknown() {
        let mut entries = good();
        let mut write = WatchEntry::new(EntryKind::Write, u64::MAX, 0, 0);
        write.revision = 9;
        write.writes = vec![("p/c".to_string(), Some("1".to_string()))];
        entries.push(write);
        assert_eq!(check(&entries).validity, Validity::Unknown);
    }
}
