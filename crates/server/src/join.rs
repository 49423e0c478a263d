//! A member's identity at start, joining a running cluster, and publishing the member's name
//! and client address into the membership.
//!
//! A member of a new cluster derives the cluster id from its configuration (the token and the
//! initial members), like etcd. A member that joins a running cluster (`initial_cluster_state =
//! "existing"`) asks the members it is given (etcd's `MemberList`, linearizable) for the cluster
//! id and makes sure the cluster added it with this id and peer address; it never initializes a
//! cluster. Once started, a data directory's recorded identity is used, so a joined member
//! restarts without asking anyone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use beacon_proto::etcdserverpb::cluster_client::ClusterClient;
use beacon_proto::etcdserverpb::MemberListRequest;
use beacon_storage::Identity;

use crate::config::{ClusterState, ServerConfig};
use crate::membership::MembershipRequest;
use crate::raft_node::RaftNode;

/// How long a joining member keeps asking the cluster before it gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The identity this member runs with (see the module docs). A member of a new cluster always
/// uses the identity its config implies, so storage refuses a data directory of another cluster.
pub async fn identity(config: &ServerConfig) -> anyhow::Result<Identity> {
    if config.initial_cluster_state == ClusterState::New {
        return Ok(Identity {
            cluster_id: config.cluster_id(),
            member_id: config.id,
        });
    }
    if let Some(stored) = beacon_storage::stored_identity(&config.data_dir)
        .with_context(|| format!("cannot read data directory {}", config.data_dir.display()))?
    {
        if stored.member_id != config.id {
            bail!(
                "data directory {} belongs to member {:x}, but this config is member {:x}",
                config.data_dir.display(),
                stored.member_id,
                config.id
            );
        }
        return Ok(stored);
    }
    discover(config).await
}

/// Asks the running cluster for its id and checks that it added this member.
async fn discover(config: &ServerConfig) -> anyhow::Result<Identity> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut last_error = String::from("no other member in initial_members");
    loop {
        for member in config.initial_members.iter().filter(|m| m.id != config.id) {
            match ask(&member.client, config).await {
                Ok(Some(cluster_id)) => {
                    tracing::info!(cluster_id = %format!("{cluster_id:016x}"), via = %member.client, "joining a running cluster");
                    return Ok(Identity {
                        cluster_id,
                        member_id: config.id,
                    });
                }
                Ok(None) => bail!(
                    "the cluster at {} has no member {:x} with peer address {}: add it first \
                     (`beacon member add {} --peer-urls http://{}`) and use the id it prints",
                    member.client,
                    config.id,
                    config.peer_advertise(),
                    config.name,
                    config.peer_advertise()
                ),
                Err(error) => last_error = format!("{}: {error:#}", member.client),
            }
        }
        if Instant::now() >= deadline {
            bail!("cannot reach the cluster to join within {JOIN_TIMEOUT:?}: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The cluster id if the member at `client` lists this member, `None` if it does not.
async fn ask(client: &str, config: &ServerConfig) -> anyhow::Result<Option<u64>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{client}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let mut cluster = ClusterClient::new(endpoint.connect().await?);
    let response = cluster
        .member_list(MemberListRequest { linearizable: true })
        .await?
        .into_inner();
    let cluster_id = response
        .header
        .map(|header| header.cluster_id)
        .context("member list without a header")?;
    let peer = format!("http://{}", config.peer_advertise());
    let listed = response
        .members
        .iter()
        .any(|member| member.id == config.id && member.peer_ur_ls.contains(&peer));
    Ok(listed.then_some(cluster_id))
}

/// Makes the membership carry this member's name and client address (a member added by
/// `MemberAdd` is listed without them until it starts; an address changed in the config is
/// updated). Retries until done; a no-op when the membership already has them.
pub async fn publish(node: Arc<RaftNode>, name: String, client_addr: String) {
    let me = node.identity.member_id;
    loop {
        let listed = node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&me)
            .cloned();
        match listed {
            Some(member) if member.name == name && member.client_addr == client_addr => return,
            Some(_) => {
                let request = MembershipRequest::Publish {
                    id: me,
                    name: name.clone(),
                    client_addr: client_addr.clone(),
                };
                match node.change_membership(request).await {
                    Ok(()) => {
                        tracing::info!(%name, client = %client_addr, "published this member's name and client address");
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "publishing this member failed; retrying")
                    }
                }
            }
            // Not (yet) in the membership this member knows of.
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
