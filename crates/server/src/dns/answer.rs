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

use beacon_catalog::{discover_with_settings, weight_of, weighted_order_by, DEFAULT_DNS_TTL_S};
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

/// Everything a worker needs to answer, shared by all workers.
pub struct Responder {
    pub zone: Zone,
    pub view: Arc<CatalogView>,
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
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
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
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
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
        if let Some(query) = query {
            self.answer(worker, query, &mut response);
        }
        let limit = match transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => match &request.edns {
                Some(edns) => edns
                    .max_payload()
                    .clamp(CLASSIC_UDP_PAYLOAD, self.max_udp_payload),
                None => CLASSIC_UDP_PAYLOAD,
            },
        };
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
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn answer(&self, worker: &mut Worker, query: &Query, response: &mut Response) {
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
        let view = self.view.read();
        let owner = query.name();
        let record_type = query.query_type();
        let found = match lookup {
            Lookup::Apex => {
                if matches!(record_type, RecordType::SOA | RecordType::ANY) {
                    response.answers.push(self.soa(&view));
                }
                true
            }
            Lookup::Branch => true,
            Lookup::ServiceBranch { service } => view.service(&service).next().is_some(),
            Lookup::Service { service, tag } => {
                let Worker { prepared, rng } = worker;
                let prepared = prepare(prepared, &view, &self.zone, &service, tag.as_deref(), rng);
                if prepared.exists {
                    service_records(prepared, owner, record_type, rng, response);
                }
                prepared.exists
            }
            Lookup::Instance { service, id } => {
                match find_instance(&view, &self.zone, &service, &id) {
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
            response.authorities.push(self.soa(&view));
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
    let ordered = weighted_order_by(candidates, |target| u32::from(target.weight), rng);
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
