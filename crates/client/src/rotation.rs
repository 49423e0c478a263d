//! [`EndpointRotation`]: the order in which a long-lived stream (a KV watch, a service watch, a
//! lease keepalive stream) tries endpoints after its stream broke, and how long it waits.
//!
//! The rule: move on to the next endpoint after every failure, without waiting while some
//! endpoint of the round is still untried; once a whole round has failed, wait before the next
//! round, doubling the wait from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`]. A cluster that is
//! restarting is not hammered, and one that is back is found within a second. A success starts
//! the count over. Pure bookkeeping (no clock), so it is unit-tested here.

use std::time::Duration;

/// The wait after the first fully failed round.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between rounds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Which endpoint a stream tries next, and how long to wait first; see the module docs.
#[derive(Debug, Clone)]
pub struct EndpointRotation {
    count: usize,
    /// Index of the endpoint the next attempt goes to, in `0..count`.
    next: usize,
    /// Failures in the current round (since the last success or the last wait).
    failures_in_round: usize,
    /// The wait after the next fully failed round.
    backoff: Duration,
}

impl EndpointRotation {
    /// A rotation over `count` endpoints (at least one) whose first attempt goes to `start`
    /// (taken modulo `count`).
    pub fn starting_at(start: usize, count: usize) -> EndpointRotation {
        let count = count.max(1);
        EndpointRotation {
            count,
            next: start % count,
            failures_in_round: 0,
            backoff: MIN_BACKOFF,
        }
    }

    /// The endpoint the next attempt goes to.
    pub fn current(&self) -> usize {
        self.next
    }

    /// The attempt on [`EndpointRotation::current`] failed (or its stream broke): moves to the
    /// next endpoint and returns how long to wait before trying it (zero within a round).
    pub fn failed(&mut self) -> Duration {
        self.next = (self.next + 1) % self.count;
        self.failures_in_round += 1;
        if self.failures_in_round < self.count {
            return Duration::ZERO;
        }
        self.failures_in_round = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }

    /// The attempt on [`EndpointRotation::current`] worked: later failures start a fresh round
    /// with the shortest wait, and the endpoint stays current.
    pub fn succeeded(&mut self) {
        self.failures_in_round = 0;
        self.backoff = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_every_endpoint_before_waiting() {
        let mut rotation = EndpointRotation::starting_at(4, 3);
        assert_eq!(rotation.current(), 1);
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.current(), 2);
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.current(), 0);
        assert_eq!(rotation.failed(), MIN_BACKOFF);
        assert_eq!(
            rotation.current(),
            1,
            "a new round starts where the first did"
        );
    }

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let mut rotation = EndpointRotation::starting_at(0, 1);
        let waits: Vec<Duration> = (0..7).map(|_| rotation.failed()).collect();
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [50, 100, 200, 400, 800, 1000, 1000]);
        rotation.succeeded();
        assert_eq!(rotation.failed(), MIN_BACKOFF);
    }

    #[test]
    fn a_stream_that_worked_moves_on_without_waiting() {
        let mut rotation = EndpointRotation::starting_at(0, 3);
        rotation.failed();
        rotation.failed();
        rotation.succeeded(); // endpoint 2 worked for a while, then its stream broke
        assert_eq!(rotation.current(), 2);
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.current(), 0);
    }
}
