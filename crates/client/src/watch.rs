//! [`Watcher`]: an etcd watch that survives member failures without a gap or a duplicate.
//!
//! Each watcher owns one gRPC `Watch` stream (on the endpoint's shared HTTP/2 connection) carrying
//! one watch, so dropping the watcher cancels exactly that watch: a `WatchCancelRequest` is queued
//! and the stream is reset. (etcd's clientv3 multiplexes the watches of one context on one stream;
//! the bench does that with raw streams where the difference matters.)
//!
//! Resume rule. The watcher remembers the *next revision to deliver*: one past the last event
//! handed to the caller, or one past the revision of the last progress notification (the server
//! promises every event up to that revision has been sent). When the stream breaks — the member
//! died, the transport failed, the server closed the stream or canceled the watch without a
//! compaction (e.g. it lost its leader under `hasleader`) — the watcher opens a new stream on
//! the *next* endpoint and re-creates the watch with `start_revision` = that revision. Events
//! older than the requested start are dropped, so the caller sees each revision exactly once and
//! in order. A compacted start revision cannot be resumed and ends the watch with
//! [`ClientError::Compacted`].
//!
//! Batches: one [`WatchBatch`] holds all events of one revision (a multi-key txn arrives whole).
//! etcd may put several revisions in one response while a watcher catches up and may split one
//! revision over fragments; the watcher regroups both cases by revision.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::client::status_error;
use crate::connection::is_not_connected;
use crate::error::ClientError;
use crate::options::WatchOptions;
use crate::pb::watch_client::WatchClient;
use crate::rotation::EndpointRotation;
use crate::{mvccpb, pb, Client};

/// What a watcher yields: all events of one revision, or a progress notification.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchBatch {
    /// The response header, as the member sent it (its `revision` is the member's current
    /// revision, which may be ahead of `revision`).
    pub header: pb::ResponseHeader,
    /// The revision of every event in `events`; for a progress notification, the revision up to
    /// which every event has been delivered.
    pub revision: i64,
    /// The events of `revision`, in the server's order; empty for a progress notification.
    pub events: Vec<mvccpb::Event>,
}

impl WatchBatch {
    /// Whether this is a progress notification (no events, only a revision).
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
    }
}

/// A watch on a key or range; see the module docs for its guarantees. Dropping it cancels the
/// watch on the server.
#[derive(Debug)]
pub struct Watcher {
    client: Client,
    key: Vec<u8>,
    options: WatchOptions,
    /// The stream the watch lives on; `None` between a failure and the resume.
    stream: Option<WatchStream>,
    /// Index of the endpoint the last stream was opened on; a resume starts at the next one.
    endpoint_index: usize,
    /// The revision the next event must have at least: one past the last delivered revision.
    /// 0 until the first stream has told us the start (only when `start_revision` was 0).
    next_revision: i64,
    /// Batches regrouped from responses, not yet handed out.
    pending: VecDeque<WatchBatch>,
    /// Events of a fragmented response, waiting for its last fragment.
    fragments: Vec<mvccpb::Event>,
    /// Set once the watch was canceled for good (compaction): every later call repeats it.
    compacted: Option<(String, i64)>,
}

/// One open stream carrying this watcher's watch.
#[derive(Debug)]
struct WatchStream {
    endpoint: String,
    watch_id: i64,
    /// The `start_revision` the watch was created with (0 = "from now"); older events are
    /// duplicates of what an earlier stream delivered.
    start_revision: i64,
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        // Best effort: the stream reset that follows (dropping `responses`) cancels it anyway.
        let cancel = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest {
                    watch_id: self.watch_id,
                },
            )),
        };
        let _ = self.requests.try_send(cancel);
    }
}

/// Why opening a watch on one endpoint failed.
enum OpenError {
    /// The member or the path to it is in trouble: try another endpoint.
    Retry {
        error: ClientError,
        not_connected: bool,
    },
    /// An answer about the request itself: retrying elsewhere would get the same answer.
    Final(ClientError),
}

/// gRPC codes that are answers about the request, not about the member; every other failure of
/// a watch stream (Unavailable "no leader", transport errors, …) is worth resuming elsewhere.
pub(crate) fn is_final(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::Unimplemented
            | tonic::Code::OutOfRange
            | tonic::Code::FailedPrecondition
    )
}

impl Client {
    /// Watches `key` (or the range selected by `options`). Returns once the watch is created on
    /// some member, trying each endpoint once from the current one; fails only if none accepted
    /// it. After that, [`Watcher::next`] resumes across failures by itself (see [`crate::watch`]).
    pub async fn watch(
        &self,
        key: impl AsRef<[u8]>,
        options: WatchOptions,
    ) -> Result<Watcher, ClientError> {
        let mut watcher = Watcher {
            client: self.clone(),
            key: key.as_ref().to_vec(),
            next_revision: options.start_revision.max(0),
            options,
            stream: None,
            endpoint_index: self.current_index(),
            pending: VecDeque::new(),
            fragments: Vec::new(),
            compacted: None,
        };
        let count = self.endpoint_count();
        let start = watcher.endpoint_index;
        let mut last_error = None;
        let mut never_connected = true;
        for offset in 0..count {
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

impl Watcher {
    /// The next batch: the events of the next revision, or a progress notification. Waits as
    /// long as it takes, resuming on another member after failures (retrying with a capped
    /// backoff while every member is down). Errors are final: compaction of the revision the
    /// watch needs next, or a request the server rejects.
    pub async fn next(&mut self) -> Result<WatchBatch, ClientError> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.next_revision = self.next_revision.max(batch.revision + 1);
                return Ok(batch);
            }
            if let Some((endpoint, compact_revision)) = &self.compacted {
                return Err(ClientError::Compacted {
                    endpoint: endpoint.clone(),
                    compact_revision: *compact_revision,
                });
            }
            let Some(stream) = self.stream.as_mut() else {
                self.resume().await?;
                continue;
            };
            match stream.responses.message().await {
                Ok(Some(response)) => self.absorb(response)?,
                // The server ended the stream, or the transport broke: resume elsewhere.
                Ok(None) => self.stream = None,
                Err(status) if !is_final(status.code()) => self.stream = None,
                Err(status) => return Err(status_error(&stream.endpoint, &status)),
            }
        }
    }

    /// Asks the member for a progress notification (etcd answers it for every watch on the
    /// stream with the member's current revision). Does nothing while the watch is resuming.
    pub async fn request_progress(&mut self) -> Result<(), ClientError> {
        if let Some(stream) = &self.stream {
            let request = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                    pb::WatchProgressRequest {},
                )),
            };
            // A closed stream shows up as a failure in `next`, which resumes it.
            let _ = stream.requests.send(request).await;
        }
        Ok(())
    }

    /// The endpoint the watch currently lives on (`None` while resuming).
    pub fn endpoint(&self) -> Option<&str> {
        self.stream.as_ref().map(|stream| stream.endpoint.as_str())
    }

    /// The server's id of the watch on its current stream.
    pub fn watch_id(&self) -> Option<i64> {
        self.stream.as_ref().map(|stream| stream.watch_id)
    }

    /// The revision the next event will have at least (one past the last delivered revision).
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// Folds one response of the current stream into `pending`.
    fn absorb(&mut self, response: pb::WatchResponse) -> Result<(), ClientError> {
        let stream = self.stream.as_ref().expect("absorb runs on an open stream");
        // -1: a progress answer for every watch on the stream (ours is the only one).
        if response.watch_id != stream.watch_id && response.watch_id != -1 {
            return Ok(());
        }
        let header = response.header.unwrap_or_default();
        if response.canceled {
            if response.compact_revision > 0 {
                self.compacted = Some((stream.endpoint.clone(), response.compact_revision));
            } else {
                // Canceled for a reason about the member (e.g. it lost its leader): resume.
                self.stream = None;
            }
            return Ok(());
        }
        if response.created {
            return Ok(());
        }
        if response.fragment {
            self.fragments.extend(response.events);
            return Ok(());
        }
        let mut events = std::mem::take(&mut self.fragments);
        events.extend(response.events);
        if events.is_empty() {
            // A progress notification: every event up to header.revision has been sent.
            if header.revision >= self.next_revision.saturating_sub(1) {
                self.pending.push_back(WatchBatch {
                    header,
                    revision: header.revision,
                    events,
                });
            }
            return Ok(());
        }
        let floor = stream.start_revision;
        for event in events {
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if revision < floor {
                continue; // already delivered on an earlier stream
            }
            match self.pending.back_mut() {
                Some(batch) if batch.revision == revision && !batch.events.is_empty() => {
                    batch.events.push(event);
                }
                _ => self.pending.push_back(WatchBatch {
                    header,
                    revision,
                    events: vec![event],
                }),
            }
        }
        Ok(())
    }

    /// Re-creates the watch from `next_revision`, starting with the endpoint after the one that
    /// failed and cycling through all of them with a capped backoff until one accepts.
    async fn resume(&mut self) -> Result<(), ClientError> {
        self.fragments.clear();
        let count = self.client.endpoint_count();
        let mut rotation = EndpointRotation::starting_at(self.endpoint_index + 1, count);
        loop {
            match self.open(rotation.current()).await {
                Ok(()) => return Ok(()),
                Err(OpenError::Final(error)) => return Err(error),
                Err(OpenError::Retry { .. }) => {}
            }
            let wait = rotation.failed();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Opens a stream on endpoint `index` and creates the watch from `next_revision`.
    async fn open(&mut self, index: usize) -> Result<(), OpenError> {
        let (endpoint, channel) = self.client.endpoint_at(index);
        let start_revision = self.next_revision;
        let create = self.options.to_create_request(&self.key, start_revision);
        let (requests, receiver) = mpsc::channel(4);
        requests
            .try_send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            })
            .expect("a fresh channel has room for the create request");
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        if self.options.require_leader {
            request
                .metadata_mut()
                .insert("hasleader", MetadataValue::from_static("true"));
        }
        let retry = |error: ClientError, not_connected: bool| OpenError::Retry {
            error,
            not_connected,
        };
        let from_status = |status: tonic::Status| {
            let error = status_error(&endpoint, &status);
            if is_final(status.code()) {
                OpenError::Final(error)
            } else {
                retry(error, is_not_connected(&status))
            }
        };
        let timeout = self.client.options().request_timeout;
        let created = tokio::time::timeout(timeout, async {
            let mut responses = WatchClient::new(channel)
                .watch(request)
                .await
                .map_err(from_status)?
                .into_inner();
            loop {
                let response = responses.message().await.map_err(from_status)?;
                let Some(response) = response else {
                    let error = status_error(
                        &endpoint,
                        &tonic::Status::unavailable("watch stream closed before creation"),
                    );
                    return Err(retry(error, false));
                };
                if response.canceled {
                    if response.compact_revision > 0 {
                        return Err(OpenError::Final(ClientError::Compacted {
                            endpoint: endpoint.clone(),
                            compact_revision: response.compact_revision,
                        }));
                    }
                    return Err(OpenError::Final(ClientError::WatchCanceled {
                        endpoint: endpoint.clone(),
                        reason: response.cancel_reason,
                    }));
                }
                if response.created {
                    return Ok((responses, response));
                }
            }
        })
        .await;
        let (responses, created) = match created {
            Ok(Ok(created)) => created,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                let error = ClientError::Timeout {
                    endpoint: endpoint.clone(),
                    timeout,
                };
                return Err(retry(error, false));
            }
        };
        if self.next_revision == 0 {
            // "From now": the member's revision at creation is the last one we will not see.
            let revision = created.header.unwrap_or_default().revision;
            self.next_revision = revision + 1;
        }
        self.client.set_current(index);
        self.endpoint_index = index % self.client.endpoint_count();
        self.stream = Some(WatchStream {
            endpoint,
            watch_id: created.watch_id,
            start_revision,
            requests,
            responses,
        });
        Ok(())
    }
}
