//! `snapshot save`: a backup of one member through etcd's `Maintenance.Snapshot`, written the
//! way etcdctl does (to `FILE.part`, fsynced, renamed), and checked against its SHA-256 trailer
//! before the rename, so a saved file is always a whole backup. Restoring is `beacond restore`
//! (it builds a data directory, which only the server's storage knows how to write).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use beacon_client::Client;
use clap::Subcommand;
use sha2::{Digest, Sha256};

use crate::output::{self, Format, SnapshotSaved};

/// Backup commands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of the first endpoint's state to FILE (restore it with `beacond restore`).
    Save {
        /// Where to write the backup.
        file: PathBuf,
    },
}

/// Runs a snapshot command.
pub async fn run(client: &Client, format: Format, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => {
            let saved = save(client, &file).await?;
            println!("{}", output::snapshot_saved(format, &saved));
            Ok(())
        }
    }
}

async fn save(client: &Client, file: &Path) -> anyhow::Result<SnapshotSaved> {
    let started = Instant::now();
    let endpoint = client
        .endpoints()
        .into_iter()
        .next()
        .context("no endpoint to take the backup from")?;
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = download(client, &endpoint, &part).await;
    let (bytes, revision) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&part);
            return Err(error);
        }
    };
    std::fs::rename(&part, file)
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    // The rename itself survives a power loss only once the directory is synced.
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .with_context(|| format!("cannot fsync {}", directory.display()))?;
    Ok(SnapshotSaved {
        file: file.display().to_string(),
        endpoint,
        bytes,
        revision,
        took: started.elapsed(),
    })
}

/// Streams the backup into `part`, checks its trailer and fsyncs it; returns its size and the
/// revision it holds.
async fn download(client: &Client, endpoint: &str, part: &Path) -> anyhow::Result<(u64, i64)> {
    let mut stream = client.snapshot(endpoint).await?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(part).with_context(|| format!("cannot create {}", part.display()))?,
    );
    let mut hasher = Sha256::new();
    // The last 32 bytes are the trailer, not hashed: hold them back until the next blob.
    let mut tail: Vec<u8> = Vec::new();
    let mut bytes = 0u64;
    let mut revision = 0;
    let mut finished = false;
    while let Some(response) = stream
        .message()
        .await
        .with_context(|| format!("backup stream from {endpoint} failed"))?
    {
        revision = response.header.map(|header| header.revision).unwrap_or(0);
        out.write_all(&response.blob)?;
        bytes += response.blob.len() as u64;
        tail.extend_from_slice(&response.blob);
        if tail.len() > 32 {
            let hashed = tail.len() - 32;
            hasher.update(&tail[..hashed]);
            tail.drain(..hashed);
        }
        if response.remaining_bytes == 0 {
            finished = true;
            break;
        }
    }
    if !finished {
        bail!("backup stream from {endpoint} ended early (after {bytes} bytes)");
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if tail != digest {
        bail!("backup from {endpoint} failed its SHA-256 check; nothing saved");
    }
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    Ok((bytes, revision))
}
