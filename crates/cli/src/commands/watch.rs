//! `watch KEY [RANGE_END]`: prints each revision's events as they arrive, until Ctrl-C (handled
//! in `main`) or a final error such as compaction. The client's watcher resumes on another
//! member after failures, so the printed stream has no gap and no duplicate.

use beacon_client::{Client, WatchOptions};
use clap::Args;

use crate::commands::kv::KeyRangeArgs;
use crate::output::{self, Format};

/// `watch KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub keys: KeyRangeArgs,
    /// Start at this revision (0 = from the next write); older revisions are replayed first.
    #[arg(long = "rev", default_value_t = 0)]
    pub revision: i64,
    /// Print each event's previous key-value.
    #[arg(long)]
    pub prev_kv: bool,
    /// Ask for periodic progress notifications (printed as `progress notify: REV`).
    #[arg(long)]
    pub progress_notify: bool,
}

impl WatchArgs {
    /// The client options these flags select.
    pub fn options(&self) -> WatchOptions {
        WatchOptions {
            prefix: self.keys.prefix,
            from_key: self.keys.from_key,
            range_end: self.keys.range_end_bytes(),
            start_revision: self.revision,
            prev_kv: self.prev_kv,
            progress_notify: self.progress_notify,
            ..Default::default()
        }
    }
}

/// Runs `watch`: never returns `Ok` on its own; it ends with Ctrl-C or an error.
pub async fn run(client: &Client, format: Format, args: WatchArgs) -> anyhow::Result<()> {
    let mut watcher = client.watch(&args.keys.key, args.options()).await?;
    loop {
        let batch = watcher.next().await?;
        // stdout is line-buffered, so each batch is visible to a reader as soon as it is printed.
        println!("{}", output::watch(format, &batch));
    }
}
