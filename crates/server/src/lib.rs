//! `beacond`: one member of a Beacon cluster.
//!
//! [`run`] is the single entry point for the binary and for tests: it validates the config,
//! opens the member's RocksDB database, starts openraft, serves the peer protocol (port 2380),
//! the client APIs (port 2379) and metrics and health over HTTP (port 2381), bootstraps a
//! pristine cluster, and stops gracefully when `shutdown` resolves.

pub mod api_error;
pub mod backup;
pub mod catalog_service;
pub mod catalog_view;
pub mod checker;
pub mod cluster_service;
pub mod compactor;
pub mod config;
pub mod dns;
pub mod join;
pub mod kv_service;
pub mod lease_keeper;
pub mod lease_service;
pub mod liveness;
pub mod maintenance_service;
pub mod membership;
pub mod observability;
pub mod peer_network;
pub mod peer_service;
pub mod proposal_batcher;
pub mod quota;
pub mod raft_node;
pub mod read_barrier;
pub mod watch_hub;
pub mod watch_service;
pub mod watch_stream;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use beacon_proto::beacon::v1::catalog_server::CatalogServer;
use beacon_proto::beacon::v1::raft_peer_server::RaftPeerServer;
use beacon_proto::etcdserverpb::cluster_server::ClusterServer;
use beacon_proto::etcdserverpb::kv_server::KvServer;
use beacon_proto::etcdserverpb::lease_server::LeaseServer;
use beacon_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use beacon_proto::etcdserverpb::watch_server::WatchServer;
use openraft::error::{InitializeError, RaftError};
use openraft::{Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::catalog_service::CatalogService;
use crate::catalog_view::CatalogView;
use crate::checker::health_checker::{CheckerSettings, HealthChecker};
use crate::checker::probe::Prober;
use crate::cluster_service::ClusterService;
use crate::config::ServerConfig;
use crate::kv_service::KvService;
use crate::lease_keeper::LeaseKeeper;
use crate::lease_service::LeaseService;
use crate::maintenance_service::MaintenanceService;
use crate::peer_network::{PeerClients, PeerNetwork};
use crate::peer_service::PeerService;
use crate::proposal_batcher::ProposalBatcher;
use crate::raft_node::RaftNode;
use crate::watch_hub::WatchHub;
use crate::watch_service::WatchService;
use crate::watch_stream::StreamSettings;

/// gRPC framing overhead allowed above the request limit, as etcd does: requests between the
/// limit and this margin get etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long a stopping member lets requests in flight finish before it closes the connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a member until `shutdown` resolves (or a server fails).
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    config.prepare_data_dir()?;
    // Before anything is instrumented (the storage threads record from their first fsync).
    let prometheus = observability::install()?;
    let identity = join::identity(&config).await?;
    let mut opened = beacon_storage::open(&config.data_dir, identity)
        .with_context(|| format!("cannot open data directory {}", config.data_dir.display()))?;
    let reader = opened.state_machine.reader();
    // The hub starts at the loaded state and hears of every apply from the first one on
    // (openraft replays the log into the state machine after `Raft::new`).
    let watch_hub = WatchHub::new(reader.current_revision(), reader.compact_revision());
    opened.state_machine.add_listener(watch_hub.clone());
    let lease_keeper = LeaseKeeper::new(reader.clone());
    opened.state_machine.add_listener(lease_keeper.clone());
    let catalog_view = CatalogView::new(reader.clone());
    opened.state_machine.add_listener(catalog_view.clone());
    let prober = Prober::new(config.id).context("cannot set up the health-check prober")?;

    let client_listener = TcpListener::bind(&config.client.listen)
        .await
        .with_context(|| format!("cannot listen for clients on {}", config.client.listen))?;
    let peer_listener = TcpListener::bind(&config.peer.listen)
        .await
        .with_context(|| format!("cannot listen for peers on {}", config.peer.listen))?;
    let http_listener = TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;

    let raft_config = openraft::Config {
        cluster_name: format!("{:016x}", identity.cluster_id),
        heartbeat_interval: config.raft.heartbeat_interval_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_after_entries),
        max_in_snapshot_log_to_keep: config.raft.keep_logs_after_snapshot,
        snapshot_max_chunk_size: config.raft.snapshot_chunk_bytes,
        install_snapshot_timeout: config.raft.install_snapshot_timeout_ms,
        ..Default::default()
    }
    .validate()
    .context("invalid raft settings")?;
    let peers = PeerClients::new(identity.cluster_id);
    let network = PeerNetwork {
        clients: peers.clone(),
    };
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config),
        network,
        opened.log_store,
        opened.state_machine,
    )
    .await
    .context("cannot start raft")?;
    let batcher = {
        let metrics = raft.metrics();
        let me = config.id;
        ProposalBatcher::start(raft.clone(), move || {
            metrics.borrow().current_leader == Some(me)
        })
    };
    let node = Arc::new(RaftNode {
        raft: raft.clone(),
        reader,
        identity,
        peers,
        limits: config.limits.clone(),
        read_barrier: Default::default(),
        leader_barrier: Default::default(),
        batcher,
        election_timeout: std::time::Duration::from_millis(config.raft.election_timeout_max_ms),
        transferring: Default::default(),
    });

    let stream_settings = {
        let header_node = node.clone();
        StreamSettings {
            header: Arc::new(move |revision| header_node.header(revision)),
            max_response_bytes: config.limits.max_request_bytes,
            progress_notify_interval: std::time::Duration::from_millis(
                config.watch.progress_notify_interval_ms,
            ),
        }
    };
    let leader_lost = watch_service::monitor_leader(
        &node,
        std::time::Duration::from_millis(config.raft.election_timeout_max_ms),
    );
    let election_timeout = std::time::Duration::from_millis(config.raft.election_timeout_max_ms);
    let health_checker = HealthChecker::new(
        node.clone(),
        catalog_view.clone(),
        prober,
        CheckerSettings {
            election_timeout,
            flap: beacon_catalog::FlapPolicy::default(),
        },
    );
    let catalog_service = CatalogService {
        node: node.clone(),
        hub: watch_hub.clone(),
        settings: stream_settings.clone(),
        leader_lost: leader_lost.clone(),
        checker: health_checker.clone(),
    };
    let watch_service = WatchService {
        node: node.clone(),
        hub: watch_hub,
        settings: stream_settings,
        leader_lost,
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let peer_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            RaftPeerServer::new(PeerService {
                node: node.clone(),
                checker: health_checker.clone(),
            })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(incoming(peer_listener)?, until_stopped(stopped.clone()));

    let max_message = config.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let client_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(observability::grpc_metrics::GrpcMetricsLayer::new())
        .add_service(health_service)
        .add_service(
            KvServer::new(KvService { node: node.clone() }).max_decoding_message_size(max_message),
        )
        .add_service(ClusterServer::new(ClusterService { node: node.clone() }))
        .add_service(CatalogServer::new(catalog_service))
        .add_service(LeaseServer::new(LeaseService {
            node: node.clone(),
            keeper: lease_keeper.clone(),
            min_ttl: LeaseService::min_ttl_for(std::time::Duration::from_millis(
                config.raft.election_timeout_max_ms,
            )),
        }))
        .add_service(WatchServer::new(watch_service).max_decoding_message_size(max_message))
        .add_service(MaintenanceServer::new(MaintenanceService {
            node: node.clone(),
        }))
        .serve_with_incoming_shutdown(incoming(client_listener)?, until_stopped(stopped.clone()));
    let http_server = observability::http_endpoint::serve(
        http_listener,
        Arc::new(observability::http_endpoint::HttpState {
            sources: observability::member_metrics::ScrapeSources {
                node: node.clone(),
                leases: lease_keeper.clone(),
                catalog: catalog_view.clone(),
            },
            prometheus: prometheus.clone(),
        }),
        until_stopped(stopped),
    );

    let keeper_task = tokio::spawn(lease_keeper.run(node.clone()));
    let checker_set_task = tokio::spawn(checker::checker_set::maintain(
        node.clone(),
        catalog_view.clone(),
        election_timeout,
    ));
    let checker_task = tokio::spawn(health_checker.run());
    let quota_task = tokio::spawn(quota::monitor(
        node.clone(),
        config.limits.quota_backend_bytes,
    ));
    let compactor_task = tokio::spawn(compactor::run(node.clone(), config.compaction.clone()));
    let dns = dns::DnsServer::start(&config.dns, catalog_view.clone(), node.clone()).await?;
    let peer_task = tokio::spawn(peer_server);
    let client_task = tokio::spawn(client_server);
    let http_task = tokio::spawn(http_server);
    let metrics_tasks = [
        tokio::spawn(observability::member_metrics::follow_raft(
            raft.clone(),
            config.id,
        )),
        observability::spawn_upkeep(prometheus),
    ];

    if config.initial_cluster_state == config::ClusterState::New {
        bootstrap(&raft, &config).await?;
    }
    let publish_task = tokio::spawn(join::publish(
        node.clone(),
        config.name.clone(),
        config.client_advertise().to_string(),
    ));
    let mut removed = node.peers.removed.subscribe();
    tracing::info!(
        member = %config.name,
        id = config.id,
        cluster_id = %format!("{:016x}", identity.cluster_id),
        client = %config.client_advertise(),
        peer = %config.peer_advertise(),
        http = %config.http.listen,
        "beacond started"
    );

    let was_removed = tokio::select! {
        _ = shutdown => false,
        _ = removed.wait_for(|removed| *removed) => true,
    };
    tracing::info!("shutting down");
    publish_task.abort();
    let _ = stop.send(true);
    keeper_task.abort();
    checker_set_task.abort();
    checker_task.abort();
    quota_task.abort();
    compactor_task.abort();
    if let Some(dns) = &dns {
        dns.stop();
    }
    metrics_tasks.iter().for_each(|task| task.abort());
    // Graceful shutdown waits for open streams to end, and a watch never ends by itself: give
    // requests in flight a moment, then drop whatever is still connected.
    let (mut peer_task, mut client_task) = (peer_task, client_task);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        tokio::join!(&mut peer_task, &mut client_task)
    })
    .await;
    let results = match drained {
        Ok((peer_result, client_result)) => Some((peer_result, client_result)),
        Err(_) => {
            tracing::info!("closing the connections still open (watches, keepalives)");
            peer_task.abort();
            client_task.abort();
            None
        }
    };
    // Probes and scrapes are short; a /health read barrier waits at most two seconds.
    http_task.abort();
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "raft did not shut down cleanly");
    }
    if was_removed {
        anyhow::bail!(
            "this member was removed from the cluster; it refuses to run with its old data. To \
             bring it back, wipe {} and add it again (`beacon member add`)",
            config.data_dir.display()
        );
    }
    if let Some((peer_result, client_result)) = results {
        peer_result
            .context("peer server task")?
            .context("peer server")?;
        client_result
            .context("client server task")?
            .context("client server")?;
    }
    Ok(())
}

/// Accepted connections with TCP_NODELAY: small gRPC frames must not wait for Nagle's algorithm
/// (a 40 ms stall per request against delayed ACKs). `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself.
fn incoming(listener: TcpListener) -> anyhow::Result<TcpIncoming> {
    TcpIncoming::from_listener(listener, true, Some(std::time::Duration::from_secs(60)))
        .map_err(|error| anyhow::anyhow!("cannot accept connections: {error}"))
}

/// Initializes a pristine member with the configured initial membership. A member that has a
/// vote or log entries was initialized before (or joined), and is never initialized again.
async fn bootstrap(
    raft: &Raft<beacon_storage::TypeConfig>,
    config: &ServerConfig,
) -> anyhow::Result<()> {
    if raft.is_initialized().await.context("raft stopped")? {
        return Ok(());
    }
    match raft.initialize(config.initial_membership()).await {
        Ok(()) => {
            tracing::info!(
                members = config.initial_membership().len(),
                "initialized a new cluster"
            );
            Ok(())
        }
        // Another member's vote or entries reached us first: already part of the cluster.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(error) => Err(anyhow::anyhow!("cannot initialize the cluster: {error}")),
    }
}
