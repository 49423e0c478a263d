//! Answers: one request packet in, one response packet out, from the member's [`CatalogView`].
//!
//! A service's discoverable instances are chosen by `beacon_catalog::discover_with_settings`
//! (passing or warning; every instance not in maintenance when the service fails open), exactly
//! as `Discover` chooses them, and kept per worker as a [`Prepared`] set of targets until the
//! service's instances or settings change. Each query then only orders the targets (weighted
//! random without replacement, so a cut answer keeps the instances a weighted pick would take)
//! and encodes them. An answer that does not fit the UDP limit (512 bytes, or the query's EDNS0
//! buffer up to `dns.max_udp_payload`) keeps the records that fit and sets TC; over TCP the
//! limit is 65,535 bytes.
//!
//! Name errors carry the zone's SOA in the authority section, whose minimum is the negative
//! TTL (RFC 2308). Positive answers use the service's `dns_ttl_s` (default 5 s).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use beacon_catalog::{discover_with_settings, weight_of, weighted_prefix_by, DEFAULT_DNS_TTL_S};
use beacon_proto::beacon::v1::{DiscoverRequest, HealthFilter, Instance, Order, ServiceSettings};
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::ProtoError;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::name::{Lookup, Zone};
use super::stats::DnsStats;
use crate::catalog_view::{CatalogView, ViewState};

/// DNS header length; anything shorter is not a DNS message.
const HEADER_LEN: usize = 12;
/// Classic DNS's UDP limit, for queries without EDNS0.
const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// Size of the OPT record our response carries when the query had one (no options).
const OPT_RECORD_LEN: u16 = 11;
/// The smallest record an answer can hold: an A record whose owner is a compression pointer.
const MIN_RECORD_LEN: usize = 2 + 10 + 4;
/// Prepared sets a worker keeps before it starts over (random tags must not grow it forever).
const MAX_PREPARED: usize = 10_000;
/// SOA timers; nobody transfers this zone, but resolvers expect sane values.
const SOA_REFRESH_S: i32 = 3600;
const SOA_RETRY_S: i32 = 600;
const SOA_EXPIRE_S: i32 = 86_400;

/// How the query arrived, which decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where answers come from: the member's [`CatalogView`] (a plain [`ViewState`] in unit tests).
pub trait CatalogSource: Send + Sync {
    /// Calls `answer` with the current state, under whatever lock protects it.
    fn with_view(&self, answer: &mut dyn FnMut(&ViewState));
}

impl CatalogSource for CatalogView {
    fn with_view(&self, answer: &mut dyn FnMut(&ViewState)) {
        answer(&self.read());
    }
}

impl CatalogSource for ViewState {
    fn with_view(&self, answer: &mut dyn FnMut(&ViewState)) {
        answer(self);
    }
}

/// Everything a worker needs to answer, shared by all workers.
pub struct Responder {
    pub zone: Zone,
    pub view: Arc<dyn CatalogSource>,
    /// TTL of negative answers and the SOA minimum.
    pub negative_ttl: u32,
    /// Largest UDP response, when the query's EDNS0 buffer allows it.
    pub max_udp_payload: u16,
    /// True while this member has been without a leader longer than `dns.max_stale_ms`.
    pub stale: Arc<AtomicBool>,
    pub stats: Arc<DnsStats>,
}

/// One worker's own state: prepared services and a random generator (no locks between workers).
pub struct Worker {
    /// service → tag ("" for none) → prepared targets.
    prepared: HashMap<String, HashMap<String, Prepared>>,
    rng: StdRng,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            prepared: HashMap::new(),
            rng: StdRng::from_entropy(),
        }
    }
}

/// A service's (or service and tag's) discoverable instances as DNS targets, valid while the
/// service's instances and settings are those it was built from.
struct Prepared {
    /// The view revision at which it was last known valid.
    revision: i64,
    /// What it was built from; see [`fingerprint`].
    fingerprint: (usize, i64),
    settings: Option<ServiceSettings>,
    /// The name exists: the service has instances (and one carries the tag).
    exists: bool,
    ttl: u32,
    targets: Vec<Target>,
}

/// One instance as DNS sees it.
struct Target {
    weight: u16,
    port: u16,
    address: Address,
    /// `ID.NAME.instance.DOMAIN`.
    name: Name,
}

enum Address {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// Registered by hostname: answered with a CNAME, and the SRV target is the hostname.
    Host(Name),
}

impl Target {
    fn of(zone: &Zone, instance: &Instance) -> Option<Self> {
        let address = match instance.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Address::V4(ip),
            Ok(IpAddr::V6(ip)) => Address::V6(ip),
            Err(_) => {
                let mut host = Name::from_ascii(&instance.address).ok()?;
                host.set_fqdn(true);
                Address::Host(host)
            }
        };
        Some(Target {
            // The catalog caps weights at 10,000.
            weight: u16::try_from(weight_of(instance)).unwrap_or(u16::MAX),
            port: u16::try_from(instance.port).ok()?,
            address,
            name: zone.instance_name(&instance.service, &instance.id)?,
        })
    }

    /// The SRV target: the instance name, or the hostname it was registered with.
    fn srv_target(&self) -> &Name {
        match &self.address {
            Address::Host(host) => host,
            _ => &self.name,
        }
    }

    /// The A or AAAA record of the target, if the instance has an IP address.
    fn address_record(&self, owner: &Name, ttl: u32) -> Option<Record> {
        match self.address {
            Address::V4(ip) => Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))),
            Address::V6(ip) => Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(ip)),
            )),
            Address::Host(_) => None,
        }
    }

    fn matches(&self, record_type: RecordType) -> bool {
        matches!(
            (&self.address, record_type),
            (Address::V4(_), RecordType::A) | (Address::V6(_), RecordType::AAAA)
        )
    }
}

/// (number of instances, largest mod revision) of a service. Any change to the set of
/// instances changes it: a put gets a revision above every existing one, and removals alone
/// lower the count.
fn fingerprint(view: &ViewState, service: &str) -> (usize, i64) {
    view.service(service)
        .fold((0, 0), |(count, newest), instance| {
            (count + 1, newest.max(instance.mod_revision))
        })
}

fn ttl_of(settings: Option<&ServiceSettings>) -> u32 {
    settings.map_or(DEFAULT_DNS_TTL_S, |settings| settings.dns_ttl_s)
}

/// The response being built.
struct Response {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Response {
    fn rcode(&mut self, code: ResponseCode) {
        self.metadata.response_code = code;
    }
}

impl Responder {
    /// Answers `packet` into `out`. Returns false (and leaves `out` empty) when the packet is
    /// dropped: shorter than a header, or itself a response (answering those invites loops).
    pub fn respond(
        &self,
        worker: &mut Worker,
        packet: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
            self.stats.count_dropped();
            return false;
        }
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%error, "malformed DNS query");
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return self.finish_raw(&reply, out);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            self.stats.count_dropped();
            return false;
        }
        let mut metadata = Metadata::new(
            request.metadata.id,
            MessageType::Response,
            request.metadata.op_code,
        );
        metadata.recursion_desired = request.metadata.recursion_desired;
        let mut response = Response {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        let query = match request.queries.as_slice() {
            _ if request.metadata.op_code != OpCode::Query => {
                response.rcode(ResponseCode::NotImp);
                None
            }
            [query] => Some(query),
            _ => {
                response.rcode(ResponseCode::FormErr);
                None
            }
        };
        let limit = match transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => match &request.edns {
                Some(edns) => edns
                    .max_payload()
                    .clamp(CLASSIC_UDP_PAYLOAD, self.max_udp_payload),
                None => CLASSIC_UDP_PAYLOAD,
            },
        };
        if let Some(query) = query {
            // No answer holds more records than the smallest record fits in the limit, so a
            // large service orders and builds only that many.
            let max_records = usize::from(limit) / MIN_RECORD_LEN;
            self.answer(worker, query, max_records, &mut response);
        }
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(self.max_udp_payload);
            edns
        });
        match encode(&response, query, edns.as_ref(), limit, out) {
            Ok(truncated) => {
                if truncated {
                    self.stats.truncated.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.count(response.metadata.response_code);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a DNS answer; answering SERVFAIL");
                let mut reply = Message::error_msg(
                    request.metadata.id,
                    request.metadata.op_code,
                    ResponseCode::ServFail,
                );
                reply.queries = query.into_iter().cloned().collect();
                self.finish_raw(&reply, out)
            }
        }
    }

    fn finish_raw(&self, reply: &Message, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut encoder = BinEncoder::new(out);
        match reply.emit(&mut encoder) {
            Ok(()) => {
                self.stats.count(reply.metadata.response_code);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a DNS error answer");
                out.clear();
                self.stats.count_dropped();
                false
            }
        }
    }

    fn answer(
        &self,
        worker: &mut Worker,
        query: &Query,
        max_records: usize,
        response: &mut Response,
    ) {
        let class_ok = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        let lookup = self.zone.parse(query.name());
        if lookup == Lookup::Outside || !class_ok {
            response.rcode(ResponseCode::Refused);
            return;
        }
        response.metadata.authoritative = true;
        if self.stale.load(Ordering::Relaxed) {
            response.metadata.authoritative = false;
            response.rcode(ResponseCode::ServFail);
            return;
        }
        self.view.with_view(&mut |view| {
            self.answer_from(view, worker, query, lookup.clone(), max_records, response)
        });
    }

    fn answer_from(
        &self,
        view: &ViewState,
        worker: &mut Worker,
        query: &Query,
        lookup: Lookup,
        max_records: usize,
        response: &mut Response,
    ) {
        let owner = query.name();
        let record_type = query.query_type();
        let found = match lookup {
            Lookup::Apex => {
                if matches!(record_type, RecordType::SOA | RecordType::ANY) {
                    response.answers.push(self.soa(view));
                }
                true
            }
            Lookup::Branch => true,
            Lookup::ServiceBranch { service } => view.service(&service).next().is_some(),
            Lookup::Service { service, tag } => {
                let Worker { prepared, rng } = worker;
                let prepared = prepare(prepared, view, &self.zone, &service, tag.as_deref(), rng);
                if prepared.exists {
                    service_records(prepared, owner, record_type, max_records, rng, response);
                }
                prepared.exists
            }
            Lookup::Instance { service, id } => {
                match find_instance(view, &self.zone, &service, &id) {
                    Some(instance) => {
                        let ttl = ttl_of(view.settings.get(&service));
                        instance_records(&self.zone, instance, owner, record_type, ttl, response);
                        true
                    }
                    None => false,
                }
            }
            Lookup::NotFound | Lookup::Outside => false,
        };
        if !found {
            response.rcode(ResponseCode::NXDomain);
        }
        if response.answers.is_empty() {
            response.authorities.push(self.soa(view));
        }
    }

    fn soa(&self, view: &ViewState) -> Record {
        let soa = SOA::new(
            self.zone.primary.clone(),
            self.zone.hostmaster.clone(),
            // The serial only has to grow; revisions beyond 2^32 wrap (RFC 1982 arithmetic).
            view.revision as u32,
            SOA_REFRESH_S,
            SOA_RETRY_S,
            SOA_EXPIRE_S,
            self.negative_ttl,
        );
        Record::from_rdata(self.zone.domain.clone(), self.negative_ttl, RData::SOA(soa))
    }
}

/// The prepared targets of `service` (and `tag`), rebuilt only when the service changed.
fn prepare<'p>(
    prepared: &'p mut HashMap<String, HashMap<String, Prepared>>,
    view: &ViewState,
    zone: &Zone,
    service: &str,
    tag: Option<&str>,
    rng: &mut StdRng,
) -> &'p Prepared {
    let tag_key = tag.unwrap_or("");
    let settings = view.settings.get(service);
    let valid = match prepared
        .get_mut(service)
        .and_then(|tags| tags.get_mut(tag_key))
    {
        Some(entry) if entry.revision == view.revision => true,
        Some(entry)
            if entry.fingerprint == fingerprint(view, service)
                && entry.settings.as_ref() == settings =>
        {
            entry.revision = view.revision;
            true
        }
        _ => false,
    };
    if !valid {
        if prepared.values().map(HashMap::len).sum::<usize>() >= MAX_PREPARED {
            prepared.clear();
        }
        let fresh = build(view, zone, service, tag, rng);
        prepared
            .entry(service.to_owned())
            .or_default()
            .insert(tag_key.to_owned(), fresh);
    }
    &prepared[service][tag_key]
}

/// Runs discovery on the service's instances in the view; see the module docs.
fn build(
    view: &ViewState,
    zone: &Zone,
    service: &str,
    tag: Option<&str>,
    rng: &mut StdRng,
) -> Prepared {
    let instances: Vec<Instance> = view.service(service).cloned().collect();
    let settings = view.settings.get(service).cloned();
    // Tags are matched ignoring ASCII case, as DNS names are: find the catalog's spelling.
    let spelled_tag = tag.and_then(|tag| {
        instances
            .iter()
            .flat_map(|instance| &instance.tags)
            .find(|candidate| candidate.eq_ignore_ascii_case(tag))
            .cloned()
    });
    let exists = !instances.is_empty() && (tag.is_none() || spelled_tag.is_some());
    let mut prepared = Prepared {
        revision: view.revision,
        fingerprint: fingerprint(view, service),
        ttl: ttl_of(settings.as_ref()),
        settings,
        exists,
        targets: Vec::new(),
    };
    if exists {
        let mut request = DiscoverRequest {
            service: service.to_owned(),
            tags: spelled_tag.into_iter().collect(),
            ..Default::default()
        };
        request.set_health(HealthFilter::PassingOrElseAll);
        request.set_order(Order::Shuffle);
        let discovery =
            discover_with_settings(instances, &request, prepared.settings.as_ref(), rng);
        prepared.targets = discovery
            .instances
            .iter()
            .filter_map(|instance| Target::of(zone, instance))
            .collect();
    }
    prepared
}

/// Records for `NAME.service` / `TAG.NAME.service` queries.
fn service_records(
    prepared: &Prepared,
    owner: &Name,
    record_type: RecordType,
    max_records: usize,
    rng: &mut StdRng,
    response: &mut Response,
) {
    let ttl = prepared.ttl;
    let wanted = |target: &&Target| match record_type {
        RecordType::A | RecordType::AAAA => {
            target.matches(record_type) || matches!(target.address, Address::Host(_))
        }
        RecordType::ANY => !matches!(target.address, Address::Host(_)),
        RecordType::SRV => true,
        _ => false,
    };
    let candidates: Vec<&Target> = prepared.targets.iter().filter(wanted).collect();
    if candidates.is_empty() {
        return;
    }
    // A fresh weighted random order per query: a cut answer keeps a weighted sample.
    let ordered = weighted_prefix_by(
        candidates,
        max_records,
        |target| u32::from(target.weight),
        rng,
    );
    match record_type {
        RecordType::SRV => {
            for target in &ordered {
                let srv = SRV::new(1, target.weight, target.port, target.srv_target().clone());
                response
                    .answers
                    .push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
                response
                    .additionals
                    .extend(target.address_record(&target.name, ttl));
            }
        }
        RecordType::A | RecordType::AAAA => {
            let addresses = ordered
                .iter()
                .filter_map(|target| {
                    target
                        .matches(record_type)
                        .then(|| target.address_record(owner, ttl))
                        .flatten()
                })
                .collect::<Vec<_>>();
            if addresses.is_empty() {
                // Only hostname instances: one CNAME (a name has at most one), weighted pick.
                if let Some(Address::Host(host)) = ordered.first().map(|target| &target.address) {
                    response.answers.push(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::CNAME(CNAME(host.clone())),
                    ));
                }
            } else {
                response.answers = addresses;
            }
        }
        _ => {
            response.answers.extend(
                ordered
                    .iter()
                    .filter_map(|target| target.address_record(owner, ttl)),
            );
        }
    }
}

/// The instance `id` of `service`: its exact spelling first, else any case.
fn find_instance<'v>(
    view: &'v ViewState,
    zone: &Zone,
    service: &'v str,
    id: &str,
) -> Option<&'v Instance> {
    if let Some(instance) = view
        .instances
        .get(&(service.to_owned(), id.to_owned()))
        .filter(|instance| zone.instance_label(service, &instance.id) == id)
    {
        return Some(instance);
    }
    view.service(service).find(|instance| {
        zone.instance_label(service, &instance.id)
            .eq_ignore_ascii_case(id)
    })
}

/// Records for `ID.NAME.instance` queries: the instance whatever its health or maintenance.
fn instance_records(
    zone: &Zone,
    instance: &Instance,
    owner: &Name,
    record_type: RecordType,
    ttl: u32,
    response: &mut Response,
) {
    let Some(target) = Target::of(zone, instance) else {
        return;
    };
    let address = |response: &mut Response| match &target.address {
        Address::Host(host) => response.answers.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::CNAME(CNAME(host.clone())),
        )),
        _ => response.answers.extend(target.address_record(owner, ttl)),
    };
    let is_host = matches!(target.address, Address::Host(_));
    match record_type {
        RecordType::A | RecordType::AAAA if target.matches(record_type) || is_host => {
            address(response);
        }
        RecordType::CNAME if is_host => address(response),
        RecordType::TXT => response
            .answers
            .extend(metadata_records(instance, owner, ttl)),
        RecordType::SRV => {
            let srv = SRV::new(1, target.weight, target.port, target.srv_target().clone());
            response
                .answers
                .push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
            response
                .additionals
                .extend(target.address_record(&target.name, ttl));
        }
        RecordType::ANY => {
            address(response);
            response
                .answers
                .extend(metadata_records(instance, owner, ttl));
        }
        _ => {}
    }
}

/// One TXT record per metadata entry, `key=value`, in key order. A character-string holds at
/// most 255 bytes, so a longer entry is split into several strings of one record, which
/// readers concatenate (as for SPF and DKIM).
fn metadata_records<'a>(
    instance: &'a Instance,
    owner: &'a Name,
    ttl: u32,
) -> impl Iterator<Item = Record> + 'a {
    let mut entries: Vec<(&String, &String)> = instance.metadata.iter().collect();
    entries.sort();
    entries.into_iter().map(move |(key, value)| {
        let text = format!("{key}={value}");
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
        Record::from_rdata(owner.clone(), ttl, RData::TXT(TXT::from_bytes(chunks)))
    })
}

/// Encodes the response within `limit` bytes. Answer records that do not fit are left out and
/// TC is set; additional records that do not fit are left out silently (RFC 2181 §9); the OPT
/// record always fits (its room is kept). Returns whether the answer was truncated.
fn encode(
    response: &Response,
    query: Option<&Query>,
    edns: Option<&Edns>,
    limit: u16,
    out: &mut Vec<u8>,
) -> Result<bool, ProtoError> {
    let mut encoder = BinEncoder::new(out);
    let opt_room = if edns.is_some() { OPT_RECORD_LEN } else { 0 };
    encoder.set_max_size(limit.saturating_sub(opt_room));
    let header = encoder.place::<Header>()?;
    if let Some(query) = query {
        query.emit(&mut encoder)?;
    }
    let answers = emit_fitting(&mut encoder, &response.answers)?;
    let truncated = answers < response.answers.len();
    let (authorities, additionals) = if truncated {
        (0, 0)
    } else {
        let authorities = emit_fitting(&mut encoder, &response.authorities)?;
        (
            authorities,
            emit_fitting(&mut encoder, &response.additionals)?,
        )
    };
    let mut additionals = additionals;
    if let Some(edns) = edns {
        encoder.set_max_size(limit);
        Record::from(edns).emit(&mut encoder)?;
        additionals += 1;
    }
    let count = |count: usize| u16::try_from(count).unwrap_or(u16::MAX);
    let mut metadata = response.metadata;
    metadata.truncation = truncated;
    header.replace(
        &mut encoder,
        Header {
            metadata,
            counts: HeaderCounts {
                queries: u16::from(query.is_some()),
                answers: count(answers),
                authorities: count(authorities),
                additionals: count(additionals),
            },
        },
    )?;
    Ok(truncated)
}

/// Emits records in order until one does not fit; returns how many were written.
fn emit_fitting(encoder: &mut BinEncoder<'_>, records: &[Record]) -> Result<usize, ProtoError> {
    match encoder.emit_all(records.iter()) {
        Ok(count) => Ok(count),
        Err(ProtoError::NotAllRecordsWritten { count, .. }) => Ok(count),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use beacon_proto::beacon::v1::{Check, Maintenance};

    use super::*;

    fn instance(service: &str, id: &str, address: &str, revision: i64) -> Instance {
        Instance {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            port: 80,
            mod_revision: revision,
            ..Default::default()
        }
    }

    /// An instance with a check that has no verdict yet: critical.
    fn critical(mut instance: Instance) -> Instance {
        instance.checks = vec![Check {
            id: "http".into(),
            ..Default::default()
        }];
        instance
    }

    fn state(revision: i64, instances: Vec<Instance>) -> ViewState {
        ViewState {
            revision,
            instances: instances
                .into_iter()
                .map(|instance| ((instance.service.clone(), instance.id.clone()), instance))
                .collect(),
            ..Default::default()
        }
    }

    fn responder(view: ViewState) -> Responder {
        Responder {
            zone: Zone::new("beacon.").expect("zone"),
            view: Arc::new(view),
            negative_ttl: 7,
            max_udp_payload: 4096,
            stale: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(DnsStats::default()),
        }
    }

    fn ask(
        responder: &Responder,
        worker: &mut Worker,
        name: &str,
        record_type: RecordType,
        transport: Transport,
    ) -> Message {
        let mut query = Message::query();
        query.queries.push(Query::query(
            Name::from_ascii(name).expect("name"),
            record_type,
        ));
        let mut out = Vec::new();
        assert!(responder.respond(
            worker,
            &query.to_vec().expect("encode"),
            transport,
            &mut out
        ));
        if transport == Transport::Udp {
            assert!(
                out.len() <= 512,
                "{} bytes over UDP without EDNS0",
                out.len()
            );
        }
        Message::from_vec(&out).expect("decodable answer")
    }

    fn addresses(response: &Message) -> BTreeSet<String> {
        response
            .answers
            .iter()
            .map(|record| record.data.to_string())
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn passing_instances_or_all_when_failed_open_never_maintenance() {
        let mut drained = instance("web", "web-3", "10.0.0.3", 3);
        drained.maintenance = Some(Maintenance {
            enabled: true,
            ..Default::default()
        });
        let view = state(
            3,
            vec![
                instance("web", "web-1", "10.0.0.1", 1),
                critical(instance("web", "web-2", "10.0.0.2", 2)),
                drained,
            ],
        );
        let responder = responder(view);
        let mut worker = Worker::default();
        let response = ask(
            &responder,
            &mut worker,
            "web.service.beacon.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(addresses(&response), set(&["10.0.0.1"]));
        assert_eq!(response.answers[0].ttl, DEFAULT_DNS_TTL_S);

        // Nothing passes: fail open to every instance not in maintenance.
        let view = state(
            2,
            vec![
                critical(instance("web", "web-1", "10.0.0.1", 1)),
                critical(instance("web", "web-2", "10.0.0.2", 2)),
            ],
        );
        let responder = self::responder(view);
        let response = ask(
            &responder,
            &mut Worker::default(),
            "web.service.beacon.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(addresses(&response), set(&["10.0.0.1", "10.0.0.2"]));
    }

    #[test]
    fn prepared_sets_follow_changes_of_instances_and_settings() {
        let mut worker = Worker::default();
        let ask_a = |view: ViewState, worker: &mut Worker| {
            ask(
                &responder(view),
                worker,
                "web.service.beacon.",
                RecordType::A,
                Transport::Udp,
            )
        };
        let one = vec![instance("web", "web-1", "10.0.0.1", 5)];
        assert_eq!(
            addresses(&ask_a(state(5, one.clone()), &mut worker)),
            set(&["10.0.0.1"])
        );
        // Another key changed (revision 6): still valid.
        assert_eq!(
            addresses(&ask_a(state(6, one.clone()), &mut worker)),
            set(&["10.0.0.1"])
        );
        // An instance added at revision 7.
        let mut two = one.clone();
        two.push(instance("web", "web-2", "10.0.0.2", 7));
        assert_eq!(
            addresses(&ask_a(state(7, two.clone()), &mut worker)),
            set(&["10.0.0.1", "10.0.0.2"])
        );
        // An instance changed (address) at revision 8.
        let mut moved = two.clone();
        moved[1] = instance("web", "web-2", "10.0.0.9", 8);
        assert_eq!(
            addresses(&ask_a(state(8, moved.clone()), &mut worker)),
            set(&["10.0.0.1", "10.0.0.9"])
        );
        // One removed at revision 9 (only the count tells).
        assert_eq!(
            addresses(&ask_a(state(9, vec![moved[1].clone()]), &mut worker)),
            set(&["10.0.0.9"])
        );
        // Settings changed: the TTL follows.
        let mut view = state(10, vec![moved[1].clone()]);
        view.settings.insert(
            "web".into(),
            ServiceSettings {
                service: "web".into(),
                min_healthy: 0.0,
                dns_ttl_s: 60,
            },
        );
        assert_eq!(ask_a(view, &mut worker).answers[0].ttl, 60);
    }

    #[test]
    fn truncated_udp_answers_keep_a_weighted_sample_and_tcp_keeps_all() {
        let mut instances: Vec<Instance> = (0..100)
            .map(|index| {
                instance(
                    "big",
                    &format!("a-{index:03}"),
                    &format!("10.0.1.{index}"),
                    1,
                )
            })
            .collect();
        for index in 0..3 {
            let mut heavy = instance("big", &format!("z-{index}"), &format!("10.9.0.{index}"), 1);
            heavy.weight = 10_000;
            instances.push(heavy);
        }
        let responder = responder(state(1, instances));
        let mut worker = Worker::default();
        let heavy = set(&["10.9.0.0", "10.9.0.1", "10.9.0.2"]);
        for _ in 0..20 {
            let response = ask(
                &responder,
                &mut worker,
                "big.service.beacon.",
                RecordType::A,
                Transport::Udp,
            );
            assert!(response.metadata.truncation);
            assert!(response.answers.len() > 10 && response.answers.len() < 103);
            assert!(heavy.is_subset(&addresses(&response)));
        }
        let response = ask(
            &responder,
            &mut worker,
            "big.service.beacon.",
            RecordType::SRV,
            Transport::Tcp,
        );
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), 103);
        assert_eq!(response.additionals.len(), 103);
        assert_eq!(responder.stats.snapshot().truncated, 20);
    }

    #[test]
    fn srv_additionals_that_do_not_fit_are_dropped_without_tc() {
        // 8 SRV records fit 512 bytes (their targets are never compressed, RFC 2782), their 8
        // A records do not all fit after them.
        let instances = (0..8)
            .map(|index| {
                instance(
                    "mid",
                    &format!("mid-{index}"),
                    &format!("10.0.0.{index}"),
                    1,
                )
            })
            .collect();
        let responder = responder(state(1, instances));
        let response = ask(
            &responder,
            &mut Worker::default(),
            "mid.service.beacon.",
            RecordType::SRV,
            Transport::Udp,
        );
        assert_eq!(response.answers.len(), 8);
        assert!(!response.metadata.truncation);
        assert!(response.additionals.len() < 8);
    }

    #[test]
    fn instance_names_txt_and_hashed_ids() {
        let long_id = "x".repeat(70);
        let mut described = instance("web", "web-1", "10.0.0.1", 1);
        described.metadata = [
            ("zone".to_string(), "a".to_string()),
            ("blob".to_string(), "y".repeat(600)),
        ]
        .into_iter()
        .collect();
        let view = state(
            2,
            vec![
                critical(described),
                instance("web", &long_id, "10.0.0.2", 2),
            ],
        );
        let responder = responder(view);
        let mut worker = Worker::default();
        // Critical, yet its instance name answers.
        let response = ask(
            &responder,
            &mut worker,
            "WEB-1.web.instance.beacon.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(addresses(&response), set(&["10.0.0.1"]));
        let response = ask(
            &responder,
            &mut worker,
            "web-1.web.instance.beacon.",
            RecordType::TXT,
            Transport::Tcp,
        );
        let texts: Vec<(usize, String)> = response
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::TXT(txt) => (
                    txt.txt_data.len(),
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect(),
                ),
                other => panic!("not TXT: {other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            vec![
                (3, format!("blob={}", "y".repeat(600))),
                (1, "zone=a".to_string())
            ]
        );
        // The 70-character id is named by its hash, which resolves.
        let label = responder.zone.instance_label("web", &long_id).into_owned();
        let response = ask(
            &responder,
            &mut worker,
            &format!("{label}.web.instance.beacon."),
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(addresses(&response), set(&["10.0.0.2"]));
    }

    #[test]
    fn negative_answers_and_staleness() {
        let responder = responder(state(4, vec![instance("web", "web-1", "10.0.0.1", 4)]));
        let mut worker = Worker::default();
        let response = ask(
            &responder,
            &mut worker,
            "db.service.beacon.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        match &response.authorities[..] {
            [record] => match &record.data {
                RData::SOA(soa) => {
                    assert_eq!((soa.minimum, soa.serial, record.ttl), (7, 4, 7));
                }
                other => panic!("not an SOA: {other:?}"),
            },
            other => panic!("expected the SOA: {other:?}"),
        }
        let response = ask(
            &responder,
            &mut worker,
            "web.service.beacon.",
            RecordType::MX,
            Transport::Udp,
        );
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        assert_eq!(response.authorities.len(), 1);
        responder.stale.store(true, Ordering::Relaxed);
        let response = ask(
            &responder,
            &mut worker,
            "web.service.beacon.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
        let response = ask(
            &responder,
            &mut worker,
            "example.org.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        let stats = responder.stats.snapshot();
        assert_eq!(
            (
                stats.nx_domain,
                stats.no_error,
                stats.serv_fail,
                stats.refused
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        let responder = responder(ViewState::default());
        let mut out = Vec::new();
        let mut worker = Worker::default();
        assert!(!responder.respond(&mut worker, &[1, 2, 3], Transport::Udp, &mut out));
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        let packet = response.to_vec().expect("encode");
        assert!(!responder.respond(&mut worker, &packet, Transport::Udp, &mut out));
        assert!(out.is_empty());
        assert_eq!(responder.stats.snapshot().dropped, 2);
    }
}
