//! `beacon.v1.Catalog`: services and instances over ordinary etcd keys under `/_beacon/`.
//!
//! Every catalog write is an etcd write through Raft (a put of the instance's JSON record, with
//! the instance's lease; a delete; a compare-and-swap txn for read-modify-write changes), so the
//! catalog has exactly the KV guarantees: linearizable, revisioned, visible to etcd clients and
//! watches. Reads are linearizable unless the request asks for `serializable`; they range over
//! the service's key prefix and decode the records (`beacon_catalog`). `WatchService` is a KV
//! watch on the service prefix inside this member ([`WatchStream`] with an internal request),
//! so it inherits every watch guarantee: ordered, whole revisions, no gap across lag, resumable.

use std::pin::Pin;
use std::sync::Arc;

use beacon_catalog::{
    decode_instance, decode_service_settings, default_service_settings, encode_instance,
    encode_service_settings, instance_key, normalize_instance, service_prefix,
    service_settings_key, validate_instance, validate_instance_id, validate_service_name,
    validate_service_settings, CatalogError, INSTANCES_PREFIX, SERVICES_PREFIX,
};
use beacon_mvcc::{pb, WriteRequest, WriteResponse};
use beacon_proto::beacon::v1::catalog_server::Catalog;
use beacon_proto::beacon::v1::{
    check, CheckState, DeregisterRequest, DeregisterResponse, DiscoverRequest, DiscoverResponse,
    GetServiceRequest, GetServiceResponse, HealthStatus, HeartbeatRequest, HeartbeatResponse,
    Instance, ListServicesRequest, ListServicesResponse, Maintenance, RegisterRequest,
    RegisterResponse, ReportTtlRequest, ServiceSettings, SetMaintenanceRequest,
    SetMaintenanceResponse, SetServiceSettingsRequest, SetServiceSettingsResponse,
    WatchServiceRequest, WatchServiceResponse,
};
use beacon_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
use beacon_proto::mvccpb::KeyValue;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::checker::health_checker::{bounded_output, now_unix_ms, HealthChecker};
use crate::raft_node::RaftNode;
use crate::watch_hub::WatchHub;
use crate::watch_stream::{StreamSettings, WatchRequests, WatchStream};

/// Attempts of a compare-and-swap change before giving up (each loses only to a concurrent
/// change of the same instance).
const CAS_ATTEMPTS: usize = 16;

/// Implements `beacon.v1.Catalog`.
pub struct CatalogService {
    pub node: Arc<RaftNode>,
    pub hub: Arc<WatchHub>,
    pub settings: StreamSettings,
    /// True while this member has had no leader for a while (see `watch_service`): service
    /// watches opened with `hasleader: true` metadata end then, as etcd's watches do.
    pub leader_lost: tokio::sync::watch::Receiver<bool>,
    /// This member's health checker: TTL reports and probe results.
    pub checker: Arc<HealthChecker>,
}

fn invalid(error: CatalogError) -> Status {
    ApiError::InvalidCatalog(error.to_string()).into()
}

fn unexpected(response: WriteResponse) -> Status {
    ApiError::Internal(format!("mismatched apply response {response:?}")).into()
}

/// etcd's prefix range end: the prefix with its last byte incremented.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl CatalogService {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.node.header(revision)
    }

    /// Every live record under `prefix`, decoded, at this member's applied revision (after a read
    /// barrier unless `serializable`).
    async fn read_instances(
        &self,
        prefix: &[u8],
        serializable: bool,
    ) -> Result<(i64, Vec<Instance>), Status> {
        if !serializable {
            self.node.linearize().await?;
        }
        let response = self
            .node
            .reader
            .range(&pb::RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..Default::default()
            })
            .map_err(ApiError::from)?;
        let revision = response.header.map(|h| h.revision).unwrap_or_default();
        let instances = response
            .kvs
            .iter()
            .filter_map(|kv| match decode_instance(kv) {
                Ok(instance) => Some(instance),
                Err(error) => {
                    // The KV guard refuses invalid records, so this is a record of another
                    // version; skip it rather than fail every read of the service.
                    tracing::warn!(%error, key = %String::from_utf8_lossy(&kv.key), "undecodable catalog record");
                    None
                }
            })
            .collect();
        Ok((revision, instances))
    }

    /// The settings of every service that has some, or of one (`service`), from this member's
    /// applied state (call after the read barrier of the instances they go with).
    fn read_settings(&self, service: Option<&str>) -> Result<Vec<ServiceSettings>, Status> {
        let (key, range_end) = match service {
            Some(service) => (service_settings_key(service), Vec::new()),
            None => {
                let prefix = SERVICES_PREFIX.as_bytes();
                (prefix.to_vec(), prefix_end(prefix))
            }
        };
        let response = self
            .node
            .reader
            .range(&pb::RangeRequest {
                key,
                range_end,
                ..Default::default()
            })
            .map_err(ApiError::from)?;
        Ok(response
            .kvs
            .iter()
            .filter_map(|kv| decode_service_settings(kv).ok())
            .collect())
    }

    /// The current record of one instance (linearizable).
    async fn read_instance(&self, service: &str, id: &str) -> Result<KeyValue, Status> {
        validate_service_name(service).map_err(invalid)?;
        validate_instance_id(id).map_err(invalid)?;
        self.node.linearize().await?;
        let response = self
            .node
            .reader
            .range(&pb::RangeRequest {
                key: instance_key(service, id),
                ..Default::default()
            })
            .map_err(ApiError::from)?;
        response.kvs.into_iter().next().ok_or_else(|| {
            ApiError::InstanceNotFound {
                service: service.to_string(),
                id: id.to_string(),
            }
            .into()
        })
    }

    /// Read-modify-write of one instance record: `change` edits the decoded instance and says
    /// whether it changed anything; the record is written back as a compare-and-swap on its
    /// mod revision, read again and retried when another change came first. Returns the
    /// revision of the write (`None` when there was nothing to write) and the instance.
    async fn modify_instance(
        &self,
        service: &str,
        id: &str,
        mut change: impl FnMut(&mut Instance) -> Result<bool, Status>,
    ) -> Result<(Option<i64>, Instance), Status> {
        for _ in 0..CAS_ATTEMPTS {
            let record = self.read_instance(service, id).await?;
            let mut instance = decode_instance(&record).map_err(invalid)?;
            if !change(&mut instance)? {
                return Ok((None, instance));
            }
            let put = pb::PutRequest {
                key: record.key.clone(),
                value: encode_instance(&instance),
                lease: record.lease,
                ..Default::default()
            };
            let cas = compare_and_swap(record.key.clone(), record.mod_revision, Some(put));
            match self.node.write(cas).await? {
                WriteResponse::Txn(response) if response.succeeded => {
                    let revision = response.header.map(|h| h.revision).unwrap_or_default();
                    instance.mod_revision = revision;
                    return Ok((Some(revision), instance));
                }
                // Changed (or deregistered) since we read it: read again.
                WriteResponse::Txn(_) => continue,
                other => return Err(unexpected(other)),
            }
        }
        Err(ApiError::Timeout.into())
    }

    /// Hands a TTL report to the member that owns the check, which restarts its deadline.
    async fn hand_to_owner(&self, report: ReportTtlRequest) -> Result<(), Status> {
        let me = self.node.identity.member_id;
        let status = report.status();
        match self
            .checker
            .owner_of(&report.service, &report.instance_id, &report.check_id)
        {
            Some(owner) if owner != me => Ok(self.node.report_ttl(owner, report).await?),
            _ => {
                self.checker.touch_ttl(
                    &report.service,
                    &report.instance_id,
                    &report.check_id,
                    status,
                    report.note,
                );
                Ok(())
            }
        }
    }

    /// The latest probe of each check of `instances`, gathered from every member (a member that
    /// does not answer in time adds nothing).
    async fn attach_probe_reports(&self, service: &str, instances: &mut [Instance]) {
        let me = self.node.identity.member_id;
        let mut reports = self.checker.probe_reports(service);
        let remote = self
            .node
            .members()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(_, addr)| {
                let peers = self.node.peers.clone();
                async move {
                    peers
                        .probe_reports(&addr, service, crate::raft_node::PEER_CALL_TIMEOUT)
                        .await
                }
            });
        for answer in futures::future::join_all(remote).await {
            match answer {
                Ok(more) => reports.extend(more),
                Err(error) => tracing::debug!(%error, "probe reports of a member missing"),
            }
        }
        for instance in instances.iter_mut() {
            for check in instance.checks.iter_mut() {
                check.last_probe = reports
                    .iter()
                    .filter(|entry| entry.instance_id == instance.id && entry.check_id == check.id)
                    .filter_map(|entry| entry.report.as_ref())
                    .max_by_key(|report| report.at_unix_ms)
                    .cloned();
            }
        }
    }
}

type WatchServiceStream = Pin<Box<dyn Stream<Item = Result<WatchServiceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let instance = request.into_inner().instance.ok_or_else(|| {
            Status::from(ApiError::InvalidCatalog(
                "register needs an instance".to_string(),
            ))
        })?;
        let mut instance = normalize_instance(instance);
        validate_instance(&instance).map_err(invalid)?;
        // Fresh check states start now, so deregister_critical_after also covers a check that
        // is critical from its registration on and never passes.
        let now = crate::checker::health_checker::now_unix_ms();
        for check in &mut instance.checks {
            if let Some(state) = check
                .state
                .as_mut()
                .filter(|state| state.since_unix_ms == 0)
            {
                state.since_unix_ms = now;
            }
        }
        let put = pb::PutRequest {
            key: instance_key(&instance.service, &instance.id),
            value: encode_instance(&instance),
            lease: instance.lease,
            prev_kv: true,
            ..Default::default()
        };
        self.node
            .check_request_size(prost::Message::encoded_len(&put))?;
        match self.node.write(WriteRequest::Put(put.clone())).await? {
            WriteResponse::Put(response) => {
                let revision = response.header.map(|h| h.revision).unwrap_or_default();
                let created = response.prev_kv.is_none();
                let stored = KeyValue {
                    key: put.key,
                    value: put.value,
                    lease: put.lease,
                    mod_revision: revision,
                    create_revision: response
                        .prev_kv
                        .map(|prev| prev.create_revision)
                        .unwrap_or(revision),
                    version: 1,
                };
                Ok(Response::new(RegisterResponse {
                    header: self.header(revision),
                    instance: Some(decode_instance(&stored).map_err(invalid)?),
                    created,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let request = request.into_inner();
        validate_service_name(&request.service).map_err(invalid)?;
        validate_instance_id(&request.id).map_err(invalid)?;
        let delete = pb::DeleteRangeRequest {
            key: instance_key(&request.service, &request.id),
            ..Default::default()
        };
        match self.node.write(WriteRequest::DeleteRange(delete)).await? {
            WriteResponse::DeleteRange(response) => Ok(Response::new(DeregisterResponse {
                header: self.header(response.header.map(|h| h.revision).unwrap_or_default()),
                deleted: response.deleted > 0,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let status = match HealthStatus::try_from(request.status) {
            Ok(HealthStatus::Unspecified) => HealthStatus::Passing,
            Ok(status) => status,
            Err(_) => return Err(invalid(CatalogError::invalid_value(
                "status",
                request.status,
                "must be HEALTH_STATUS_PASSING, HEALTH_STATUS_WARNING or HEALTH_STATUS_CRITICAL",
            ))),
        };
        let record = self.read_instance(&request.service, &request.id).await?;
        let instance = decode_instance(&record).map_err(invalid)?;
        let ttl_checks: Vec<String> = instance
            .checks
            .iter()
            .filter(|check| matches!(check.kind, Some(check::Kind::Ttl(_))))
            .filter(|check| request.check_id.is_empty() || check.id == request.check_id)
            .map(|check| check.id.clone())
            .collect();
        if !request.check_id.is_empty() && ttl_checks.is_empty() {
            let exists = instance
                .checks
                .iter()
                .any(|check| check.id == request.check_id);
            return Err(invalid(if exists {
                CatalogError::invalid_text(
                    "check_id",
                    &request.check_id,
                    "names a check the cluster probes; only TTL checks take reports",
                )
            } else {
                CatalogError::unknown_check(&request.service, &request.id, &request.check_id)
            }));
        }
        let ttl = if record.lease == 0 {
            0
        } else {
            let renew = WriteRequest::LeaseRenew(pb::LeaseKeepAliveRequest { id: record.lease });
            match self.node.write(renew).await? {
                WriteResponse::LeaseRenew(response) => response.ttl,
                other => return Err(unexpected(other)),
            }
        };
        if !ttl_checks.is_empty() {
            let note = bounded_output(request.note);
            for check_id in &ttl_checks {
                self.hand_to_owner(ReportTtlRequest {
                    cluster_id: 0,
                    service: request.service.clone(),
                    instance_id: request.id.clone(),
                    check_id: check_id.clone(),
                    status: status as i32,
                    note: note.clone(),
                })
                .await?;
            }
            // Only a change of status is written: a steady TTL check costs no Raft traffic.
            let output = if note.is_empty() {
                format!(
                    "reported {}",
                    status
                        .as_str_name()
                        .trim_start_matches("HEALTH_STATUS_")
                        .to_lowercase()
                )
            } else {
                note
            };
            self.modify_instance(&request.service, &request.id, |instance| {
                let mut changed = false;
                for check in instance.checks.iter_mut() {
                    let current = check.state.as_ref().map(|state| state.status());
                    if ttl_checks.contains(&check.id) && current != Some(status) {
                        check.state = Some(CheckState {
                            status: status as i32,
                            output: output.clone(),
                            since_unix_ms: now_unix_ms(),
                            reason: "reported by the instance (Heartbeat)".to_string(),
                        });
                        changed = true;
                    }
                }
                if changed {
                    instance.health = beacon_catalog::health_of(instance) as i32;
                }
                Ok(changed)
            })
            .await?;
        }
        Ok(Response::new(HeartbeatResponse {
            header: self.header(self.node.reader.current_revision()),
            ttl,
        }))
    }

    async fn set_maintenance(
        &self,
        request: Request<SetMaintenanceRequest>,
    ) -> Result<Response<SetMaintenanceResponse>, Status> {
        let request = request.into_inner();
        let (revision, instance) = self
            .modify_instance(&request.service, &request.id, |instance| {
                instance.maintenance = request.enabled.then(|| Maintenance {
                    enabled: true,
                    reason: request.reason.clone(),
                });
                Ok(true)
            })
            .await?;
        Ok(Response::new(SetMaintenanceResponse {
            header: self.header(revision.unwrap_or(instance.mod_revision)),
            instance: Some(instance),
        }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let request = request.into_inner();
        let (revision, instances) = self
            .read_instances(INSTANCES_PREFIX.as_bytes(), request.serializable)
            .await?;
        let settings = self.read_settings(None)?;
        Ok(Response::new(ListServicesResponse {
            header: self.header(revision),
            services: beacon_catalog::summarize_with_settings(instances, &settings),
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let request = request.into_inner();
        validate_service_name(&request.service).map_err(invalid)?;
        let (revision, mut instances) = self
            .read_instances(&service_prefix(&request.service), request.serializable)
            .await?;
        if request.include_probes {
            self.attach_probe_reports(&request.service, &mut instances)
                .await;
        }
        let settings = self
            .read_settings(Some(&request.service))?
            .pop()
            .unwrap_or_else(|| default_service_settings(&request.service));
        Ok(Response::new(GetServiceResponse {
            header: self.header(revision),
            failed_open: beacon_catalog::failed_open(&instances, Some(&settings)),
            instances,
            settings: Some(settings),
        }))
    }

    async fn discover(
        &self,
        request: Request<DiscoverRequest>,
    ) -> Result<Response<DiscoverResponse>, Status> {
        let request = request.into_inner();
        validate_service_name(&request.service).map_err(invalid)?;
        let (revision, instances) = self
            .read_instances(&service_prefix(&request.service), request.serializable)
            .await?;
        let settings = self.read_settings(Some(&request.service))?.pop();
        let discovery = beacon_catalog::discover_with_settings(
            instances,
            &request,
            settings.as_ref(),
            &mut rand::thread_rng(),
        );
        Ok(Response::new(DiscoverResponse {
            header: self.header(revision),
            instances: discovery.instances,
            failed_open: discovery.failed_open,
        }))
    }

    async fn set_service_settings(
        &self,
        request: Request<SetServiceSettingsRequest>,
    ) -> Result<Response<SetServiceSettingsResponse>, Status> {
        let settings = request.into_inner().settings.ok_or_else(|| {
            Status::from(ApiError::InvalidCatalog(
                "set service settings needs settings".to_string(),
            ))
        })?;
        validate_service_settings(&settings).map_err(invalid)?;
        let put = pb::PutRequest {
            key: service_settings_key(&settings.service),
            value: encode_service_settings(&settings),
            ..Default::default()
        };
        match self.node.write(WriteRequest::Put(put)).await? {
            WriteResponse::Put(response) => Ok(Response::new(SetServiceSettingsResponse {
                header: self.header(response.header.map(|h| h.revision).unwrap_or_default()),
                settings: Some(settings),
            })),
            other => Err(unexpected(other)),
        }
    }

    type WatchServiceStream = WatchServiceStream;

    async fn watch_service(
        &self,
        request: Request<WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        let requires_leader =
            crate::watch_service::requires_leader(request.metadata(), &self.node)?;
        let request = request.into_inner();
        validate_service_name(&request.service).map_err(invalid)?;
        let prefix = service_prefix(&request.service);
        let (snapshot, start_revision) = if request.start_revision > 0 {
            (None, request.start_revision)
        } else {
            let (revision, instances) = self.read_instances(&prefix, false).await?;
            let snapshot = WatchServiceResponse {
                header: self.header(revision),
                snapshot: true,
                instances,
                ..Default::default()
            };
            (Some(snapshot), revision + 1)
        };
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                start_revision,
                prev_kv: true,
                ..Default::default()
            })),
        };
        // One request, then the request side stays open (a closed side would still deliver,
        // but there is nothing more to ask).
        let requests: WatchRequests =
            Box::pin(futures::stream::iter([Ok(create)]).chain(futures::stream::pending()));
        let stream = WatchStream::new(
            self.hub.clone(),
            self.node.reader.clone(),
            self.settings.clone(),
            requests,
            requires_leader.then(|| self.leader_lost.clone()),
        );
        let node = self.node.clone();
        let changes = futures::stream::unfold(Some(stream), move |stream| {
            let node = node.clone();
            async move {
                let mut stream = stream?;
                loop {
                    let response = match stream.next_response().await? {
                        Ok(response) => response,
                        Err(status) => return Some((Err(status), None)),
                    };
                    if response.canceled {
                        let ended = if response.compact_revision > 0 {
                            Ok(WatchServiceResponse {
                                header: node.header(response.compact_revision),
                                compact_revision: response.compact_revision,
                                ..Default::default()
                            })
                        } else {
                            Err(ApiError::Internal(response.cancel_reason).into())
                        };
                        return Some((ended, None));
                    }
                    let mut events = Vec::with_capacity(response.events.len());
                    let mut revision = 0;
                    for event in &response.events {
                        revision = event.kv.as_ref().map_or(revision, |kv| kv.mod_revision);
                        match beacon_catalog::instance_event(event) {
                            Ok(Some(change)) => events.push(change),
                            Ok(None) => {}
                            Err(error) => tracing::warn!(%error, "undecodable catalog event"),
                        }
                    }
                    if events.is_empty() {
                        // `created`, progress, or records that are not instances.
                        continue;
                    }
                    let changes = WatchServiceResponse {
                        header: node.header(revision),
                        events,
                        ..Default::default()
                    };
                    return Some((Ok(changes), Some(stream)));
                }
            }
        });
        let responses = futures::stream::iter(snapshot.map(Ok)).chain(changes);
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A txn that puts (or, with `None`, deletes) `key` only if its mod revision is still
/// `mod_revision`: every
/// read-modify-write of a catalog record (maintenance, health verdicts, deregistration).
pub(crate) fn compare_and_swap(
    key: Vec<u8>,
    mod_revision: i64,
    put: Option<pb::PutRequest>,
) -> WriteRequest {
    let request = match put {
        Some(put) => pb::request_op::Request::RequestPut(put),
        None => pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        }),
    };
    WriteRequest::Txn(pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key,
            range_end: Vec::new(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(mod_revision)),
        }],
        success: vec![pb::RequestOp {
            request: Some(request),
        }],
        failure: Vec::new(),
    })
}
