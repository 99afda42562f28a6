//! Leader election through a coordination.k8s.io Lease: one replica reconciles, the others wait.
//! Needs a client.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// A Lease held (or wanted) by this replica.
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What the Lease says about who leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    Us,
    Other(String),
}

/// Pure: who holds a Lease at `now` (an expired Lease is held by nobody).
pub fn holder(lease: &Lease, identity: &str, now: Timestamp) -> Holder {
    let Some(spec) = &lease.spec else {
        return Holder::Nobody;
    };
    let Some(who) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return Holder::Nobody;
    };
    if who == identity {
        return Holder::Us;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match &spec.renew_time {
        Some(renewed) if renewed.0.as_second() + duration > now.as_second() => {
            Holder::Other(who.to_string())
        }
        _ => Holder::Nobody,
    }
}

impl LeaderLease {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderLease {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                    + i32::from(!ours && previous.is_some()),
            ),
            ..LeaseSpec::default()
        }
    }

    /// Tries once to take or renew the Lease; true when we hold it afterwards. Writes use the
    /// resourceVersion read, so two replicas can never both win the same round.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                if let Holder::Other(_) = holder(&lease, &self.identity, now) {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(lease.spec.as_ref(), now));
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {
                    if !announced {
                        tracing::info!(lease = %self.name, "another replica leads; waiting");
                        announced = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "failed to acquire the leader lease")
                }
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the Lease until a renewal round is lost or the Lease cannot be renewed for its whole
    /// duration; returns then (the caller stops reconciling).
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "lost the leader lease to another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "failed to renew the leader lease");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn expired_leases_are_free() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let fresh = now - jiff::SignedDuration::from_secs(5);
        let stale = now - jiff::SignedDuration::from_secs(20);
        assert_eq!(
            holder(&lease("b", fresh), "a", now),
            Holder::Other("b".into())
        );
        assert_eq!(holder(&lease("b", stale), "a", now), Holder::Nobody);
        assert_eq!(holder(&lease("a", stale), "a", now), Holder::Us);
    }
}
