//! [`Client::register_and_keep_alive`] and its [`Registration`]: an instance that lives exactly as
//! long as the process that registered it, the building block of a sidecar.
//!
//! How: grant a lease, register the instance with it (the catalog deletes the instance when the
//! lease ends), keep the lease alive in the background ([`crate::lease`]). Ending it:
//! - [`Registration::deregister`] revokes the lease and deregisters the instance, so it
//!   disappears at once;
//! - dropping the [`Registration`] (or the process dying) stops the keepalives, so the instance
//!   disappears when the lease's TTL runs out.
//!
//! A lease can be lost while its owner is alive: after a partition longer than the TTL, the
//! leader expires it and the instance is deleted; the next keepalive is answered with TTL 0.
//! The registration then grants a new lease and registers again (retrying with a capped backoff
//! until it succeeds), logs a warning, and publishes [`RegistrationState::Reregistering`] and
//! then a new [`RegistrationState::Registered`] with the next generation.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::beaconpb::Instance;
use crate::error::ClientError;
use crate::lease::{LeaseKeepAlive, LeaseState};
use crate::rotation::{MAX_BACKOFF, MIN_BACKOFF};
use crate::Client;

/// Where a [`Registration`] stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationState {
    /// The instance is registered under `lease_id`, which is being kept alive.
    Registered {
        /// The instance as stored (its `lease` is `lease_id`).
        instance: Box<Instance>,
        /// The lease the instance lives by.
        lease_id: i64,
        /// The TTL granted to that lease, in seconds.
        ttl: i64,
        /// 1 for the first registration, +1 for each registration after a lost lease.
        generation: u64,
    },
    /// The lease was lost (the instance is gone from the catalog); a new lease is being granted
    /// and the instance registered again.
    Reregistering {
        /// The lease that was lost.
        lost_lease_id: i64,
        /// Why the last attempt has not succeeded yet (at first: why the lease was lost).
        reason: String,
        /// The generation that was lost.
        generation: u64,
    },
}

/// A registered instance kept alive in the background; see the module docs.
#[derive(Debug)]
pub struct Registration {
    client: Client,
    service: String,
    id: String,
    state: watch::Receiver<RegistrationState>,
    task: JoinHandle<()>,
}

impl Client {
    /// Grants a lease of `ttl` seconds (the cluster may raise it to its minimum), registers
    /// `instance` with it (any `lease` set on it is replaced) and keeps the lease alive until the
    /// returned [`Registration`] is dropped or deregistered. Fails if the first grant or
    /// register fails (e.g. an invalid instance); later losses are repaired in the background.
    pub async fn register_and_keep_alive(
        &self,
        instance: Instance,
        ttl: i64,
    ) -> Result<Registration, ClientError> {
        let registered = grant_and_register(self, &instance, ttl).await?;
        let first = RegistrationState::Registered {
            instance: registered.instance,
            lease_id: registered.lease_id,
            ttl: registered.ttl,
            generation: 1,
        };
        let (state, receiver) = watch::channel(first);
        let keep_alive = self.keep_alive(registered.lease_id, registered.ttl);
        let task = tokio::spawn(keep_registered(
            self.clone(),
            instance.clone(),
            ttl,
            keep_alive,
            state,
        ));
        Ok(Registration {
            client: self.clone(),
            service: instance.service,
            id: instance.id,
            state: receiver,
            task,
        })
    }
}

impl Registration {
    /// The registration's state now.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change (each re-registration).
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// The current lease (the lost one while re-registering).
    pub fn lease_id(&self) -> i64 {
        match &*self.state.borrow() {
            RegistrationState::Registered { lease_id, .. } => *lease_id,
            RegistrationState::Reregistering { lost_lease_id, .. } => *lost_lease_id,
        }
    }

    /// The registered service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The registered instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops the keepalives, revokes the lease and deregisters the instance, so it disappears
    /// from the catalog at once. The explicit Deregister also covers a lease the background task
    /// had just granted when it was stopped. Fails only if the instance may still be
    /// registered (then it disappears when its lease expires).
    pub async fn deregister(self) -> Result<(), ClientError> {
        self.task.abort();
        let lease_id = self.lease_id();
        // Best effort: the Deregister below is what removes the instance; a revoke that failed
        // leaves a lease without keys, which expires on its own.
        if let Err(error) = self.client.lease_revoke(lease_id).await {
            if error.code() != Some(tonic::Code::NotFound) {
                tracing::debug!(lease_id, %error, "revoking the registration's lease failed");
            }
        }
        self.client.deregister(&self.service, &self.id).await?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropping the task drops its LeaseKeepAlive, which stops the keepalives.
        self.task.abort();
    }
}

/// A granted lease with the instance registered under it.
struct Registered {
    instance: Box<Instance>,
    lease_id: i64,
    ttl: i64,
}

/// Grants a lease and registers `instance` with it; on a failed register, revokes the lease.
async fn grant_and_register(
    client: &Client,
    instance: &Instance,
    ttl: i64,
) -> Result<Registered, ClientError> {
    let grant = client.lease_grant(ttl, 0).await?;
    let mut with_lease = instance.clone();
    with_lease.lease = grant.id;
    match client.register(with_lease).await {
        Ok(response) => Ok(Registered {
            instance: Box::new(response.instance.unwrap_or_default()),
            lease_id: grant.id,
            ttl: grant.ttl,
        }),
        Err(error) => {
            // Best effort: an unused lease expires on its own anyway.
            let _ = client.lease_revoke(grant.id).await;
            Err(error)
        }
    }
}

/// The background task: waits for the lease to be lost, then registers again, forever.
async fn keep_registered(
    client: Client,
    instance: Instance,
    ttl: i64,
    mut keep_alive: LeaseKeepAlive,
    state: watch::Sender<RegistrationState>,
) {
    let mut generation = 1;
    loop {
        let reason = match keep_alive.ended().await {
            LeaseState::Failed(error) => format!("lease keepalive refused: {error}"),
            _ => "lease expired or revoked".to_string(),
        };
        let lost_lease_id = keep_alive.lease_id();
        tracing::warn!(
            service = %instance.service,
            id = %instance.id,
            lease_id = lost_lease_id,
            %reason,
            "registration lost; registering again"
        );
        let _ = state.send_replace(RegistrationState::Reregistering {
            lost_lease_id,
            reason,
            generation,
        });
        let mut backoff = MIN_BACKOFF;
        let registered = loop {
            match grant_and_register(&client, &instance, ttl).await {
                Ok(registered) => break registered,
                Err(error) => {
                    tracing::warn!(service = %instance.service, id = %instance.id, %error, ?backoff, "registering again failed; retrying");
                    state.send_modify(|current| {
                        if let RegistrationState::Reregistering { reason, .. } = current {
                            *reason = error.to_string();
                        }
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        };
        generation += 1;
        tracing::info!(
            service = %instance.service,
            id = %instance.id,
            lease_id = registered.lease_id,
            generation,
            "registered again with a new lease"
        );
        keep_alive = client.keep_alive(registered.lease_id, registered.ttl);
        let _ = state.send_replace(RegistrationState::Registered {
            instance: registered.instance,
            lease_id: registered.lease_id,
            ttl: registered.ttl,
            generation,
        });
    }
}

/// The wait after a failed re-registration: doubling, capped.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reregistration_backoff_doubles_up_to_the_cap() {
        let mut backoff = MIN_BACKOFF;
        for _ in 0..10 {
            backoff = next_backoff(backoff);
        }
        assert_eq!(backoff, MAX_BACKOFF);
        assert_eq!(next_backoff(MIN_BACKOFF), MIN_BACKOFF * 2);
    }
}
