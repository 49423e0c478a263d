//! Coalesced read index: concurrent linearizable reads share one leadership confirmation.
//!
//! A read may only use a read index obtained *after* it arrived (otherwise a leader deposed in
//! between could answer it with stale data). So callers queue for the next round; a driver task
//! runs rounds back to back, each one fetching a single read index for everyone who queued before
//! it started. Under load this turns N quorum heartbeats into one per round trip.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::api_error::ApiError;

type Waiter = oneshot::Sender<Result<Option<u64>, ApiError>>;

#[derive(Default)]
struct Queue {
    driving: bool,
    waiting: Vec<Waiter>,
}

/// The queue of reads waiting for the next read index round.
#[derive(Clone, Default)]
pub struct ReadBarrier {
    queue: Arc<Mutex<Queue>>,
}

impl ReadBarrier {
    /// Returns a read index fetched by `fetch` after this call began, shared with concurrent
    /// callers. `fetch` runs on a spawned driver task so a cancelled caller never stalls others.
    pub async fn read_index<F, Fut>(&self, fetch: F) -> Result<Option<u64>, ApiError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<u64>, ApiError>> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let start_driver = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push(sender);
            !std::mem::replace(&mut queue.driving, true)
        };
        if start_driver {
            let queue = self.queue.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                        if queue.waiting.is_empty() {
                            queue.driving = false;
                            return;
                        }
                        std::mem::take(&mut queue.waiting)
                    };
                    let result = fetch().await;
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            });
        }
        receiver.await.unwrap_or(Err(ApiError::Stopped))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_share_rounds_and_each_gets_a_later_round() {
        let barrier = ReadBarrier::default();
        let rounds = Arc::new(AtomicU64::new(0));
        let fetch = {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                async move {
                    let round = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(Some(round))
                }
            }
        };
        let first = barrier.read_index(fetch.clone()).await.expect("round");
        assert_eq!(first, Some(1));
        let mut reads = Vec::new();
        for _ in 0..50 {
            let barrier = barrier.clone();
            let fetch = fetch.clone();
            reads.push(tokio::spawn(async move { barrier.read_index(fetch).await }));
        }
        for read in reads {
            let index = read.await.expect("task").expect("round").expect("index");
            assert!(
                index >= 2,
                "a read never reuses a round that started before it"
            );
        }
        assert!(
            rounds.load(Ordering::SeqCst) <= 3,
            "50 concurrent reads share rounds"
        );
    }
}
