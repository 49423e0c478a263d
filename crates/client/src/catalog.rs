//! Beacon's catalog API (`beacon.v1.Catalog`): [`Client::register`], [`Client::deregister`],
//! [`Client::heartbeat`], [`Client::set_maintenance`], [`Client::list_services`],
//! [`Client::get_service`], [`Client::discover`], and [`Client::watch_service`], whose
//! [`ServiceWatcher`] follows one service across member failures.
//!
//! Failover: reads retry anywhere. Register (create-or-replace by service + id) and Deregister
//! are idempotent, so they are also replayed after `Unavailable`: a Register that was applied
//! and is applied again stores the same record, a second Deregister finds nothing to delete.
//! (The one thing a replay can do is undo a change someone else made to the same instance in
//! between, exactly as if the first attempt had been slower; an instance id has one owner.)
//! Heartbeat (a lease renewal) and SetMaintenance follow the write rule.
//!
//! Service watch resume rule: the watcher remembers the last revision it delivered — the
//! snapshot's revision, or the last revision of an event batch (the server sends whole
//! revisions and stamps each response with its last one). When the stream breaks it opens a new
//! stream on the next endpoint with `start_revision` = that revision + 1, which the server
//! answers with every change from there on, without a snapshot; a response entirely at or
//! before the delivered revision is dropped. So the caller sees the snapshot once, then every
//! revision once, in order. A compacted start revision ends the watch with
//! [`ClientError::Compacted`]: start a new watch from 0 (a fresh snapshot).

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::beaconpb::catalog_client::CatalogClient;
use crate::beaconpb::{
    DeregisterRequest, DeregisterResponse, DiscoverRequest, DiscoverResponse, GetServiceRequest,
    GetServiceResponse, HeartbeatRequest, HeartbeatResponse, Instance, InstanceEvent,
    ListServicesRequest, ListServicesResponse, RegisterRequest, RegisterResponse, ServiceSettings,
    SetMaintenanceRequest, SetMaintenanceResponse, SetServiceSettingsRequest,
    SetServiceSettingsResponse, WatchServiceRequest, WatchServiceResponse,
};
use crate::client::{status_error, RequestKind};
use crate::connection::is_not_connected;
use crate::error::ClientError;
use crate::pb;
use crate::rotation::EndpointRotation;
use crate::watch::is_final;
use crate::Client;

/// A catalog client on `channel`. Answers may be large (a service with many instances), so
/// the decoding limit is lifted as for etcd's clients.
fn catalog(channel: Channel) -> CatalogClient<Channel> {
    CatalogClient::new(channel).max_decoding_message_size(usize::MAX)
}

impl Client {
    /// Registers `instance`, replacing any instance with the same service and id. The answer
    /// holds the instance as stored and whether it was new.
    pub async fn register(&self, instance: Instance) -> Result<RegisterResponse, ClientError> {
        let request = RegisterRequest {
            instance: Some(instance),
        };
        self.call(RequestKind::IdempotentWrite, move |channel| {
            let request = request.clone();
            async move { catalog(channel).register(request).await }
        })
        .await
    }

    /// Removes instance `id` of `service`; `deleted` in the answer is false when it was not
    /// registered.
    pub async fn deregister(
        &self,
        service: &str,
        id: &str,
    ) -> Result<DeregisterResponse, ClientError> {
        let request = DeregisterRequest {
            service: service.to_string(),
            id: id.to_string(),
        };
        self.call(RequestKind::IdempotentWrite, move |channel| {
            let request = request.clone();
            async move { catalog(channel).deregister(request).await }
        })
        .await
    }

    /// Renews the lease of instance `id` of `service` and reports its TTL checks passing; the
    /// answer holds the lease's remaining TTL (0 for a persistent instance).
    pub async fn heartbeat(
        &self,
        service: &str,
        id: &str,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.report(HeartbeatRequest {
            service: service.to_string(),
            id: id.to_string(),
            ..Default::default()
        })
        .await
    }

    /// A heartbeat that reports the instance's TTL checks (or the one named `check_id`) with a
    /// status and note: passing, warning or critical.
    pub async fn report(
        &self,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { catalog(channel).heartbeat(request).await }
        })
        .await
    }

    /// Turns the maintenance (draining) flag of instance `id` of `service` on or off.
    pub async fn set_maintenance(
        &self,
        service: &str,
        id: &str,
        enabled: bool,
        reason: &str,
    ) -> Result<SetMaintenanceResponse, ClientError> {
        let request = SetMaintenanceRequest {
            service: service.to_string(),
            id: id.to_string(),
            enabled,
            reason: reason.to_string(),
        };
        self.call(RequestKind::Write, move |channel| {
            let request = request.clone();
            async move { catalog(channel).set_maintenance(request).await }
        })
        .await
    }

    /// Sets a service's settings (fail-open threshold `min_healthy`, DNS TTL), replacing any
    /// earlier ones. Idempotent, so retried like Register.
    pub async fn set_service_settings(
        &self,
        settings: ServiceSettings,
    ) -> Result<SetServiceSettingsResponse, ClientError> {
        let request = SetServiceSettingsRequest {
            settings: Some(settings),
        };
        self.call(RequestKind::IdempotentWrite, move |channel| {
            let request = request.clone();
            async move { catalog(channel).set_service_settings(request).await }
        })
        .await
    }

    /// Every service with its instance counts by health. `serializable` answers from the
    /// contacted member's state, possibly stale.
    pub async fn list_services(
        &self,
        serializable: bool,
    ) -> Result<ListServicesResponse, ClientError> {
        let request = ListServicesRequest { serializable };
        self.call(RequestKind::Read, move |channel| async move {
            catalog(channel).list_services(request).await
        })
        .await
    }

    /// Every instance of `service`, whatever its health.
    pub async fn get_service(
        &self,
        service: &str,
        serializable: bool,
    ) -> Result<GetServiceResponse, ClientError> {
        self.get_service_with(GetServiceRequest {
            service: service.to_string(),
            serializable,
            include_probes: false,
        })
        .await
    }

    /// Every instance of a service, with each check's latest probe when `include_probes` is
    /// set (gathered from every member).
    pub async fn get_service_with(
        &self,
        request: GetServiceRequest,
    ) -> Result<GetServiceResponse, ClientError> {
        self.call(RequestKind::Read, move |channel| {
            let request = request.clone();
            async move { catalog(channel).get_service(request).await }
        })
        .await
    }

    /// The instances of a service to call, filtered and ordered as `request` says.
    pub async fn discover(
        &self,
        request: DiscoverRequest,
    ) -> Result<DiscoverResponse, ClientError> {
        self.call(RequestKind::Read, move |channel| {
            let request = request.clone();
            async move { catalog(channel).discover(request).await }
        })
        .await
    }

    /// Watches `service`: with `start_revision` 0, the current instance set first, then every
    /// change; otherwise every change from `start_revision` on. Returns once some member
    /// accepted the watch (trying each endpoint once); after that [`ServiceWatcher::next`]
    /// resumes across failures by itself (see [`crate::catalog`]).
    pub async fn watch_service(
        &self,
        service: &str,
        start_revision: i64,
    ) -> Result<ServiceWatcher, ClientError> {
        let mut watcher = ServiceWatcher {
            client: self.clone(),
            service: service.to_string(),
            cursor: ServiceWatchCursor::starting_at(start_revision),
            stream: None,
            endpoint_index: self.current_index(),
            compacted: None,
        };
        let start = watcher.endpoint_index;
        let mut last_error = None;
        let mut never_connected = true;
        for offset in 0..self.endpoint_count() {
            match watcher.open(start + offset).await {
                Ok(()) => return Ok(watcher),
                Err(OpenError::Final(error)) => return Err(error),
                Err(OpenError::Retry {
                    error,
                    not_connected,
                }) => {
                    never_connected &= not_connected;
                    last_error = Some(error);
                }
            }
        }
        Err(self.every_endpoint_failed(last_error, never_connected))
    }
}

/// What a [`ServiceWatcher`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceUpdate {
    /// The whole instance set at `revision` (first, when the watch started at 0).
    Snapshot {
        /// The member's response header.
        header: pb::ResponseHeader,
        /// The revision the set was read at; changes follow from the next one.
        revision: i64,
        /// Every instance of the service.
        instances: Vec<Instance>,
    },
    /// The changes of one or more whole revisions, in order, up to `revision`.
    Changes {
        /// The member's response header.
        header: pb::ResponseHeader,
        /// The last revision these events belong to.
        revision: i64,
        /// PUT (registered, replaced, health or maintenance changed) and DELETE events.
        events: Vec<InstanceEvent>,
    },
}

impl ServiceUpdate {
    /// The snapshot's revision, or the last revision of the changes.
    pub fn revision(&self) -> i64 {
        match self {
            ServiceUpdate::Snapshot { revision, .. } | ServiceUpdate::Changes { revision, .. } => {
                *revision
            }
        }
    }
}

/// The resume bookkeeping of a service watch (see the module docs); pure, so unit-tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServiceWatchCursor {
    /// The `start_revision` a new stream must ask for: 0 while the snapshot is still wanted,
    /// else one past the last delivered revision.
    next_revision: i64,
}

/// What to do with one response.
#[derive(Debug, PartialEq)]
enum Accepted {
    /// Hand it to the caller.
    Deliver(ServiceUpdate),
    /// Already delivered (or carries nothing): drop it.
    Skip,
    /// The start revision was compacted: the watch cannot continue without a gap.
    Compacted(i64),
}

impl ServiceWatchCursor {
    fn starting_at(start_revision: i64) -> ServiceWatchCursor {
        ServiceWatchCursor {
            next_revision: start_revision.max(0),
        }
    }

    /// Classifies a response of a stream opened at [`ServiceWatchCursor::next_revision`] and
    /// advances past what is delivered.
    fn accept(&mut self, response: WatchServiceResponse) -> Accepted {
        if response.compact_revision != 0 {
            return Accepted::Compacted(response.compact_revision);
        }
        let header = response.header.unwrap_or_default();
        let revision = header.revision;
        if response.snapshot {
            // Only a stream opened at 0 sends one; after a resume it would repeat the past.
            if self.next_revision != 0 {
                return Accepted::Skip;
            }
            self.next_revision = revision + 1;
            return Accepted::Deliver(ServiceUpdate::Snapshot {
                header,
                revision,
                instances: response.instances,
            });
        }
        if response.events.is_empty() || revision < self.next_revision {
            return Accepted::Skip;
        }
        self.next_revision = revision + 1;
        Accepted::Deliver(ServiceUpdate::Changes {
            header,
            revision,
            events: response.events,
        })
    }
}

/// A watch of one service; see the module docs for its guarantees. Dropping it ends the
/// stream.
#[derive(Debug)]
pub struct ServiceWatcher {
    client: Client,
    service: String,
    cursor: ServiceWatchCursor,
    /// The stream and its endpoint; `None` between a failure and the resume.
    stream: Option<(String, tonic::Streaming<WatchServiceResponse>)>,
    /// Index of the endpoint the last stream was opened on; a resume starts at the next one.
    endpoint_index: usize,
    /// Set once the start revision was compacted: every later call repeats it.
    compacted: Option<(String, i64)>,
}

/// Why opening a stream on one endpoint failed.
enum OpenError {
    /// The member or the path to it is in trouble: try another endpoint.
    Retry {
        error: ClientError,
        not_connected: bool,
    },
    /// An answer about the request itself (e.g. an invalid service name).
    Final(ClientError),
}

impl ServiceWatcher {
    /// The next update: the snapshot first (when started at 0), then each batch of changes.
    /// Waits as long as it takes, resuming on another member after failures (retrying with a
    /// capped backoff while every member is down). Errors are final: compaction of the revision
    /// the watch needs next, or a request the server rejects.
    pub async fn next(&mut self) -> Result<ServiceUpdate, ClientError> {
        loop {
            if let Some((endpoint, compact_revision)) = &self.compacted {
                return Err(ClientError::Compacted {
                    endpoint: endpoint.clone(),
                    compact_revision: *compact_revision,
                });
            }
            let Some((endpoint, stream)) = self.stream.as_mut() else {
                self.resume().await?;
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => match self.cursor.accept(response) {
                    Accepted::Deliver(update) => return Ok(update),
                    Accepted::Skip => {}
                    Accepted::Compacted(revision) => {
                        self.compacted = Some((endpoint.clone(), revision));
                        self.stream = None;
                    }
                },
                // The server ended the stream, or the transport broke: resume elsewhere.
                Ok(None) => self.stream = None,
                Err(status) if !is_final(status.code()) => self.stream = None,
                Err(status) => return Err(status_error(endpoint, &status)),
            }
        }
    }

    /// The watched service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The endpoint the watch currently streams from (`None` while resuming).
    pub fn endpoint(&self) -> Option<&str> {
        self.stream.as_ref().map(|(endpoint, _)| endpoint.as_str())
    }

    /// The revision a resumed stream would start at: one past the last delivered revision (0
    /// before the snapshot was delivered).
    pub fn next_revision(&self) -> i64 {
        self.cursor.next_revision
    }

    /// Opens a stream on the endpoint after the one that failed, cycling through all of them
    /// with a capped backoff until one accepts.
    async fn resume(&mut self) -> Result<(), ClientError> {
        let count = self.client.endpoint_count();
        let mut rotation = EndpointRotation::starting_at(self.endpoint_index + 1, count);
        loop {
            match self.open(rotation.current()).await {
                Ok(()) => return Ok(()),
                Err(OpenError::Final(error)) => return Err(error),
                Err(OpenError::Retry { error, .. }) => {
                    tracing::debug!(service = %self.service, %error, "service watch resume failed");
                }
            }
            let wait = rotation.failed();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Opens a stream on endpoint `index` from the cursor's revision.
    async fn open(&mut self, index: usize) -> Result<(), OpenError> {
        let (endpoint, channel) = self.client.endpoint_at(index);
        let mut request = tonic::Request::new(WatchServiceRequest {
            service: self.service.clone(),
            start_revision: self.cursor.next_revision,
        });
        // As for KV watches: a member that loses its leader should end the stream so that the
        // watch resumes on a member that still sees new revisions.
        request
            .metadata_mut()
            .insert("hasleader", MetadataValue::from_static("true"));
        let timeout = self.client.options().request_timeout;
        let opened = tokio::time::timeout(timeout, catalog(channel).watch_service(request)).await;
        match opened {
            Ok(Ok(response)) => {
                self.client.set_current(index);
                self.endpoint_index = index % self.client.endpoint_count();
                self.stream = Some((endpoint, response.into_inner()));
                Ok(())
            }
            Ok(Err(status)) => {
                let error = status_error(&endpoint, &status);
                if is_final(status.code()) {
                    Err(OpenError::Final(error))
                } else {
                    Err(OpenError::Retry {
                        error,
                        not_connected: is_not_connected(&status),
                    })
                }
            }
            Err(_) => Err(OpenError::Retry {
                error: ClientError::Timeout { endpoint, timeout },
                not_connected: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beaconpb::instance_event::EventType;

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn snapshot(revision: i64, ids: &[&str]) -> WatchServiceResponse {
        WatchServiceResponse {
            header: header(revision),
            snapshot: true,
            instances: ids
                .iter()
                .map(|id| Instance {
                    id: id.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn changes(revision: i64) -> WatchServiceResponse {
        WatchServiceResponse {
            header: header(revision),
            events: vec![InstanceEvent {
                r#type: EventType::Put as i32,
                instance: Some(Instance {
                    id: format!("at-{revision}"),
                    mod_revision: revision,
                    ..Default::default()
                }),
                prev_instance: None,
                revision,
            }],
            ..Default::default()
        }
    }

    fn delivered(accepted: Accepted) -> i64 {
        match accepted {
            Accepted::Deliver(update) => update.revision(),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn a_watch_from_zero_delivers_the_snapshot_then_resumes_after_it() {
        let mut cursor = ServiceWatchCursor::starting_at(0);
        assert_eq!(
            cursor.next_revision, 0,
            "the first stream asks for a snapshot"
        );
        assert_eq!(delivered(cursor.accept(snapshot(10, &["a", "b"]))), 10);
        assert_eq!(cursor.next_revision, 11);
        assert_eq!(delivered(cursor.accept(changes(12))), 12);
        assert_eq!(
            cursor.next_revision, 13,
            "a resumed stream starts after the last delivered revision"
        );
    }

    #[test]
    fn a_resumed_stream_never_repeats_a_revision_or_a_snapshot() {
        let mut cursor = ServiceWatchCursor::starting_at(0);
        cursor.accept(snapshot(10, &["a"]));
        cursor.accept(changes(14));
        // A server that answered a resume with a snapshot or old revisions is ignored.
        assert_eq!(cursor.accept(snapshot(20, &["a"])), Accepted::Skip);
        assert_eq!(cursor.accept(changes(14)), Accepted::Skip);
        assert_eq!(cursor.accept(changes(13)), Accepted::Skip);
        assert_eq!(delivered(cursor.accept(changes(15))), 15);
    }

    #[test]
    fn an_explicit_start_revision_is_kept_until_something_is_delivered() {
        let mut cursor = ServiceWatchCursor::starting_at(7);
        assert_eq!(cursor.next_revision, 7);
        assert_eq!(cursor.accept(changes(6)), Accepted::Skip);
        assert_eq!(cursor.next_revision, 7);
        assert_eq!(delivered(cursor.accept(changes(7))), 7);
        assert_eq!(ServiceWatchCursor::starting_at(-3).next_revision, 0);
    }

    #[test]
    fn compaction_and_empty_responses() {
        let mut cursor = ServiceWatchCursor::starting_at(2);
        let empty = WatchServiceResponse {
            header: header(9),
            ..Default::default()
        };
        assert_eq!(cursor.accept(empty), Accepted::Skip);
        assert_eq!(
            cursor.next_revision, 2,
            "an empty response promises nothing"
        );
        let compacted = WatchServiceResponse {
            header: header(5),
            compact_revision: 5,
            ..Default::default()
        };
        assert_eq!(cursor.accept(compacted), Accepted::Compacted(5));
    }
}
