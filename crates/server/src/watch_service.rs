//! `etcdserverpb.Watch`: opens a [`WatchStream`] per gRPC stream, served from this member's
//! applied state (followers too), and the leader monitor behind etcd's `hasleader` metadata.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use beacon_proto::etcdserverpb::watch_server::Watch;
use beacon_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::api_error::ApiError;
use crate::raft_node::RaftNode;
use crate::watch_hub::WatchHub;
use crate::watch_stream::{StreamSettings, WatchStream};

/// How many consecutive leaderless checks (one per election timeout) end `hasleader` streams;
/// etcd is as conservative, since reconnecting streams costs more than refusing new requests.
const NO_LEADER_CHECKS: u32 = 3;

/// The Watch service of one member.
pub struct WatchService {
    pub node: Arc<RaftNode>,
    pub hub: Arc<WatchHub>,
    pub settings: StreamSettings,
    /// True while this member has had no leader for [`NO_LEADER_CHECKS`] election timeouts.
    pub leader_lost: watch::Receiver<bool>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    /// One bidirectional stream, many watches. With `hasleader: true` metadata the stream is
    /// refused (and later ended) with etcd's "no leader" when this member has none.
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let requires_leader = requires_leader(request.metadata(), &self.node)?;
        let stream = WatchStream::new(
            self.hub.clone(),
            self.node.reader.clone(),
            self.settings.clone(),
            Box::pin(request.into_inner()),
            requires_leader.then(|| self.leader_lost.clone()),
        );
        let responses = futures::stream::unfold(stream, |mut stream| async move {
            let response = stream.next_response().await?;
            Some((response, stream))
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Whether a stream asked for a leader (`hasleader: true` metadata, as etcd's clients send);
/// refused with etcd's "no leader" when it did and this member has none. Shared by the etcd
/// Watch and the catalog's WatchService.
pub fn requires_leader(
    metadata: &tonic::metadata::MetadataMap,
    node: &RaftNode,
) -> Result<bool, Status> {
    let requires = metadata
        .get("hasleader")
        .is_some_and(|value| value.as_bytes() == b"true");
    if requires && node.raft.metrics().borrow().current_leader.is_none() {
        return Err(ApiError::NoLeader.into());
    }
    Ok(requires)
}

/// Starts the task that samples this member's leader every `check_interval` (an election
/// timeout) and reports `true` after [`NO_LEADER_CHECKS`] leaderless samples in a row; it turns
/// back to `false` as soon as a leader is known.
pub fn monitor_leader(node: &RaftNode, check_interval: Duration) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let mut metrics = node.raft.metrics();
    tokio::spawn(async move {
        let mut leaderless = 0;
        // An interval, not a sleep per loop: frequent metrics changes must not postpone checks.
        let mut checks = tokio::time::interval(check_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if metrics.borrow().current_leader.is_some() {
                        leaderless = 0;
                        sender.send_if_modified(|lost| std::mem::replace(lost, false));
                    }
                }
                _ = checks.tick() => {
                    if metrics.borrow().current_leader.is_some() {
                        leaderless = 0;
                    } else {
                        leaderless += 1;
                    }
                    let lost = leaderless >= NO_LEADER_CHECKS;
                    sender.send_if_modified(|current| std::mem::replace(current, lost) != lost);
                }
            }
        }
    });
    receiver
}
