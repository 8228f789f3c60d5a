//! Leader election through a coordination.k8s.io Lease, so that of several
//! operator replicas exactly one reconciles.
//!
//! A replica becomes leader when the Lease is free: absent, held by itself,
//! or not renewed within its duration. Every write uses the Lease's
//! resourceVersion, so two replicas racing for a free Lease cannot both win:
//! the API server rejects the second write with a conflict. The leader
//! renews well within the duration; a leader that fails to renew in time
//! stops reconciling before another replica may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// How long a Lease stays held without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and a candidate retries.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// One replica's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to read or write the Lease")]
    Api(#[source] kube::Error),
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease. Returns whether this replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(LeaderError::Api)?
        else {
            return self.create(now).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !held_by_me && !expired(&spec, now) {
            return Ok(false);
        }

        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_me);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if held_by_me {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        });
        // `replace` sends the resourceVersion read above: a concurrent
        // writer makes this fail with 409 instead of both winning.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(LeaderError::Api(error)),
        }
    }

    async fn create(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(self.name.clone());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        });
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(LeaderError::Api(error)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "Leader election failed; retrying")
                }
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Renews the Lease until a renewal fails for longer than the Lease
    /// lasts, then returns: the caller must stop reconciling, since another
    /// replica may take over from then on.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY_INTERVAL).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!("Lost the leader Lease to another replica");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "Failed to renew the leader Lease")
                }
            }
            // Stop before the Lease can expire for the others.
            if last_renewal.elapsed() + RETRY_INTERVAL >= LEASE_DURATION {
                tracing::warn!("Could not renew the leader Lease in time");
                return;
            }
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = spec.lease_duration_seconds.unwrap_or(0).max(0) as i64;
    now.as_second() > renewed.0.as_second() + duration
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_expires_after_its_duration() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(!expired(&spec(990, 15), now));
        assert!(expired(&spec(980, 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
