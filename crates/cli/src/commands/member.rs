//! `member list`.

use beacon_client::Client;
use clap::Subcommand;

use crate::output::{self, Format};

/// Membership commands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the cluster's members (ids in hex, like etcdctl).
    List,
}

/// Runs a membership command.
pub async fn run(client: &Client, format: Format, command: MemberCommand) -> anyhow::Result<()> {
    match command {
        MemberCommand::List => {
            let response = client.member_list().await?;
            println!("{}", output::members(format, &response));
        }
    }
    Ok(())
}
