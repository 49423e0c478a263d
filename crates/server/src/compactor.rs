//! Auto-compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`:
//!
//! - `revision`: every 5 s, compact to the current revision minus `retention` (a number of
//!   revisions), when that is ahead of the last compaction;
//! - `periodic`: keep `retention` (a duration) of history: every tenth of it, sample the current
//!   revision, and compact to the newest sample at least `retention` old.
//!
//! Only the leader compacts (a Compact request through Raft, like a client's), so members never
//! race each other; a new leader starts sampling afresh.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_mvcc::{pb, WriteRequest};

use crate::config::{CompactionConfig, CompactionMode};
use crate::raft_node::RaftNode;

const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs auto-compaction as configured (returns at once when it is off).
pub async fn run(node: Arc<RaftNode>, config: CompactionConfig) {
    let (interval, keep) = match config.mode {
        CompactionMode::Off => return,
        CompactionMode::Revision => (REVISION_MODE_INTERVAL, None),
        CompactionMode::Periodic => {
            let retention = config
                .retention_duration()
                .unwrap_or(Duration::from_secs(3600));
            (
                (retention / 10).max(Duration::from_secs(1)),
                Some(retention),
            )
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    loop {
        ticks.tick().await;
        if !node.is_leader() {
            samples.clear();
            continue;
        }
        let current = node.reader.current_revision();
        let target = match keep {
            None => current - config.retention_revisions().unwrap_or(0),
            Some(retention) => {
                samples.push_back((Instant::now(), current));
                let mut target = 0;
                while let Some((at, revision)) = samples.front().copied() {
                    if at.elapsed() < retention {
                        break;
                    }
                    target = revision;
                    samples.pop_front();
                }
                target
            }
        };
        if target <= node.reader.compact_revision() || target <= 0 {
            continue;
        }
        let compact = WriteRequest::Compact(pb::CompactionRequest {
            revision: target,
            physical: false,
        });
        match node.write(compact).await {
            Ok(_) => tracing::info!(revision = target, "auto-compacted"),
            Err(error) => tracing::warn!(%error, revision = target, "auto-compaction failed"),
        }
    }
}
