//! `member list|add|promote|remove|update|move-leader`: cluster membership, with etcdctl's ids
//! (hex) and wording.

use beacon_client::pb;
use beacon_client::Client;
use clap::Subcommand;

use crate::output::{self, Format};

/// Membership commands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the cluster's members (ids in hex, like etcdctl).
    List,
    /// Add a member; prints the settings to start it with (`initial_cluster_state = "existing"`).
    Add {
        /// The new member's name (for the printed settings; it publishes its name when it starts).
        name: String,
        /// The new member's peer address, `http://host:port`.
        #[arg(long = "peer-urls", value_name = "URL")]
        peer_url: String,
        /// Add it as a learner (no vote until promoted), as `etcdctl member add --learner`.
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter (refused until it has caught up with the leader).
    Promote {
        /// Member id (hex).
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Remove a member (the leader too: it hands over leadership first).
    Remove {
        /// Member id (hex).
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Change a member's peer address.
    Update {
        /// Member id (hex).
        #[arg(value_parser = parse_member_id)]
        id: u64,
        /// The new peer address, `http://host:port`.
        #[arg(long = "peer-urls", value_name = "URL")]
        peer_url: String,
    },
    /// Hand leadership to another voter.
    MoveLeader {
        /// The member that should lead (hex id).
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
}

/// A member id as etcdctl prints it: hexadecimal, optionally prefixed with `0x`.
pub fn parse_member_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            format!("invalid member id {text:?} (expected hex, as `member list` prints it)")
        })
}

/// etcdctl's line for a change of member `id` (`Member ID removed from cluster ID`), or the
/// members as JSON.
fn print_changed(
    format: Format,
    header: &Option<pb::ResponseHeader>,
    members: &[pb::Member],
    id: u64,
    verb: &str,
) {
    let cluster = header.as_ref().map_or(0, |header| header.cluster_id);
    let line = format!("Member {id:16x} {verb} cluster {cluster:16x}");
    println!("{}", output::member_changed(format, header, members, &line));
}

/// Runs a membership command.
pub async fn run(client: &Client, format: Format, command: MemberCommand) -> anyhow::Result<()> {
    match command {
        MemberCommand::List => {
            let response = client.member_list().await?;
            println!("{}", output::members(format, &response));
        }
        MemberCommand::Add {
            name,
            peer_url,
            learner,
        } => {
            let response = client.member_add(&peer_url, learner).await?;
            println!("{}", output::member_added(format, &name, &response));
        }
        MemberCommand::Promote { id } => {
            let response = client.member_promote(id).await?;
            print_changed(
                format,
                &response.header,
                &response.members,
                id,
                "promoted in",
            );
        }
        MemberCommand::Remove { id } => {
            let response = client.member_remove(id).await?;
            print_changed(
                format,
                &response.header,
                &response.members,
                id,
                "removed from",
            );
        }
        MemberCommand::Update { id, peer_url } => {
            let response = client.member_update(id, &peer_url).await?;
            print_changed(
                format,
                &response.header,
                &response.members,
                id,
                "updated in",
            );
        }
        MemberCommand::MoveLeader { id } => {
            let response = client.move_leader(id).await?;
            let members = client.member_list().await?.members;
            println!(
                "{}",
                output::member_changed(
                    format,
                    &response.header,
                    &members,
                    &format!("Leadership transferred to {id:x}")
                )
            );
        }
    }
    Ok(())
}
