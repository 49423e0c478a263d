//! etcd's `Lease` service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases.
//!
//! Grants, revocations and every keepalive are committed through Raft ([`RaftNode::write`], so
//! they reach the leader from any member); a keepalive is answered only once its renewal is
//! applied, which is what lets the remaining time survive a leader change (see
//! [`crate::lease_keeper`]). Time-to-live answers come from this member's [`LeaseKeeper`] after a
//! read barrier.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use beacon_mvcc::{pb, MvccError, WriteRequest, WriteResponse, MAX_LEASE_TTL};
use beacon_proto::etcdserverpb::lease_server::Lease;
use futures::{Stream, StreamExt};
use rand::Rng;
use tonic::{Request, Response, Status, Streaming};

use crate::api_error::ApiError;
use crate::lease_keeper::LeaseKeeper;
use crate::raft_node::RaftNode;

/// Keepalives of one stream being renewed at once (etcd clients send every lease's keepalives
/// over a single stream).
const KEEPALIVES_IN_FLIGHT: usize = 64;

/// Implements `etcdserverpb.Lease`.
pub struct LeaseService {
    pub node: Arc<RaftNode>,
    pub keeper: Arc<LeaseKeeper>,
    /// The shortest TTL granted: shorter requests are raised to it, as etcd does, so that a lease
    /// cannot expire during a normal election (1.5 election timeouts, in whole seconds).
    pub min_ttl: i64,
}

impl LeaseService {
    /// etcd's minimum TTL for an election timeout: 1.5 × the timeout, rounded up to seconds.
    pub fn min_ttl_for(election_timeout: Duration) -> i64 {
        let millis = election_timeout.as_millis() * 3 / 2;
        i64::try_from(millis.div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

fn unexpected(response: WriteResponse) -> Status {
    ApiError::Internal(format!("mismatched apply response {response:?}")).into()
}

/// A random positive lease id, as etcd's leader picks one when the client leaves it 0.
fn random_lease_id() -> i64 {
    rand::thread_rng().gen_range(1..=i64::MAX)
}

/// Renews one lease through Raft: the response carries its TTL, or 0 when it does not exist.
async fn keep_alive_once(
    node: &RaftNode,
    request: pb::LeaseKeepAliveRequest,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    match node.write(WriteRequest::LeaseRenew(request)).await? {
        WriteResponse::LeaseRenew(mut response) => {
            response.header = node.header(node.reader.current_revision());
            Ok(response)
        }
        other => Err(unexpected(other)),
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut request = request.into_inner();
        if request.ttl > MAX_LEASE_TTL {
            return Err(ApiError::from(MvccError::LeaseTtlTooLarge).into());
        }
        request.ttl = request.ttl.max(self.min_ttl);
        let chosen_id = request.id == 0;
        loop {
            if chosen_id {
                request.id = random_lease_id();
            }
            match self.node.write(WriteRequest::LeaseGrant(request)).await {
                Ok(WriteResponse::LeaseGrant(mut response)) => {
                    response.header = self.node.header(self.node.reader.current_revision());
                    return Ok(Response::new(response));
                }
                Ok(other) => return Err(unexpected(other)),
                // Our own random pick collided with a granted lease: pick another.
                Err(ApiError::Mvcc(MvccError::LeaseExists)) if chosen_id => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        match self
            .node
            .write(WriteRequest::LeaseRevoke(request.into_inner()))
            .await?
        {
            WriteResponse::LeaseRevoke(response) => {
                let revision = response.header.map(|h| h.revision).unwrap_or_default();
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: self.node.header(revision),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let node = self.node.clone();
        let responses = request
            .into_inner()
            // The client went away (or the transport failed): stop renewing.
            .take_while(|request| futures::future::ready(request.is_ok()))
            .filter_map(|request| futures::future::ready(request.ok()))
            .map(move |request| {
                let node = node.clone();
                async move { keep_alive_once(&node, request).await }
            })
            .buffer_unordered(KEEPALIVES_IN_FLIGHT);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.node.linearize().await?;
        let revision = self.node.reader.current_revision();
        let header = self.node.header(revision);
        let found = self.node.reader.lease(request.id);
        let remaining = self.keeper.remaining(request.id);
        let response = match (found, remaining) {
            (Some((record, keys)), Some(remaining)) => pb::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                // Whole seconds left, truncated as etcd does.
                ttl: i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX),
                granted_ttl: record.ttl,
                keys: if request.keys { keys } else { Vec::new() },
            },
            // etcd answers an unknown (or expired) lease with TTL -1, not an error.
            _ => pb::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.node.linearize().await?;
        let leases = self
            .node
            .reader
            .leases()
            .into_iter()
            .map(|(id, _)| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.node.header(self.node.reader.current_revision()),
            leases,
        }))
    }
}
