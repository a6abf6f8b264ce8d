//! The I/O half: reads and writes the Lease through the apiserver, paces the attempts, and
//! turns the decisions of [`crate::election`] into leading or not.
//!
//! Invariant: every write is guarded by the resourceVersion of the Lease as last read or
//! written, so of two candidates that decide to take the same expired lease exactly one write
//! succeeds; the other gets a Conflict (or AlreadyExists on create) and keeps waiting.

use std::future::Future;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::config::{Config, ConfigError, JITTER_FACTOR};
use crate::election::{Decision, Election, LeaderElectionRecord};

/// A request to the apiserver failed (not counting losing a race, which is a normal outcome).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Lease {lease}")]
    Get { lease: String, source: kube::Error },
    #[error("creating Lease {lease}")]
    Create { lease: String, source: kube::Error },
    #[error("updating Lease {lease}")]
    Update { lease: String, source: kube::Error },
    #[error("Lease {lease}: no answer within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
}

/// Why a leader stopped leading. Upstream components exit with status 1 on this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostLeadership {
    #[error("leaderelection lost: Lease {lease} was not renewed within {renew_deadline:?}")]
    RenewDeadlineExceeded { lease: String, renew_deadline: Duration },
    #[error("leaderelection lost: Lease {lease} is held by {holder}")]
    HeldByAnother { lease: String, holder: String },
    #[error("leaderelection lost: Lease {lease} was not acquired or was released")]
    NotLeading { lease: String },
}

/// The outcome of one attempt that got an answer.
enum Attempt {
    Leading,
    HeldBy(String),
    /// Our write lost to another's (Conflict or AlreadyExists); the next read tells who won.
    Raced,
}

/// One candidate for one Lease. Timeline:
///
/// ```text
/// new ──acquire()──▶ leading ──hold() returns──▶ lost (exit the process)
///                      │
///                      └─release()──▶ not leading (acquire() again to compete)
/// ```
///
/// Each method is cancel-safe: dropping its future (in a `select!`) between requests leaves the
/// elector consistent, and a request cut off midway is reconciled by the next read.
pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    election: Election,
    /// The Lease as last read or written: its resourceVersion guards our next write.
    lease: Option<Lease>,
    /// When the attempt that last created, took or renewed the lease started; `None` while not
    /// leading. Others count the lease from no earlier than this, so stopping `renew_deadline`
    /// after it (below the lease duration) stops us before anyone else may start.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: Config) -> Result<LeaderElector, ConfigError> {
        config.validate()?;
        let api = Api::namespaced(client, &config.namespace);
        let election = Election::new(config.identity.clone(), config.lease_duration);
        Ok(LeaderElector { api, config, election, lease: None, renewed_at: None })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether we lead as far as we last heard (a renewal may be overdue).
    pub fn is_leader(&self) -> bool {
        self.renewed_at.is_some() && self.election.is_leader()
    }

    /// The holder of the Lease as last read, if any.
    pub fn leader(&self) -> Option<&str> {
        self.election.holder()
    }

    fn key(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Returns once we lead, trying every `retry_period` (plus jitter). Errors are logged and
    /// retried, as upstream; to give up, drop the future (e.g. `select!` it against shutdown).
    pub async fn acquire(&mut self) {
        let lease = self.key();
        info!(lease = %lease, identity = %self.config.identity, "Attempting to acquire leader Lease");
        let mut last_holder: Option<String> = None;
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    self.renewed_at = Some(started);
                    info!(lease = %lease, identity = %self.config.identity, "Acquired leader Lease");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_deref() != Some(holder.as_str()) {
                        info!(lease = %lease, leader = %holder, "Observed a new leader on the Lease");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Raced) => {}
                Err(e) => {
                    warn!(lease = %lease, error = %chain(&e), "Failed to acquire Lease")
                }
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews every `retry_period` while we lead; returns when we no longer do: no renewal
    /// succeeded within `renew_deadline`, or the Lease names someone else. Returns at once if we
    /// do not lead. Meant to be `select!`ed against the leader's work.
    pub async fn hold(&mut self) -> LostLeadership {
        let lease = self.key();
        loop {
            let Some(renewed_at) = self.renewed_at.filter(|_| self.election.is_leader()) else {
                self.renewed_at = None;
                return LostLeadership::NotLeading { lease };
            };
            let deadline = renewed_at + self.config.renew_deadline;
            let started = Instant::now();
            if started >= deadline {
                self.renewed_at = None;
                warn!(lease = %lease, "Failed to renew the Lease within the renew deadline");
                return LostLeadership::RenewDeadlineExceeded { lease, renew_deadline: self.config.renew_deadline };
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {
                    self.renewed_at = Some(started);
                    debug!(lease = %lease, "Renewed the Lease");
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    // Upstream keeps retrying until the deadline; the Lease already says someone
                    // else leads, so stop now rather than lead alongside them.
                    self.renewed_at = None;
                    warn!(lease = %lease, leader = %holder, "Lost the Lease to another holder");
                    return LostLeadership::HeldByAnother { lease, holder };
                }
                Ok(Ok(Attempt::Raced)) => {}
                Ok(Err(e)) => {
                    warn!(lease = %lease, error = %chain(&e), "Failed to renew the Lease")
                }
                Err(_elapsed) => {}
            }
            tokio::time::sleep_until((Instant::now() + self.config.retry_period).min(deadline)).await;
        }
    }

    /// Gives the lease up if the Lease still names us: no holder and a one-second duration, so a
    /// waiting candidate takes it at its next attempt. Bounded by `renew_deadline`.
    pub async fn release(&mut self) -> Result<(), Error> {
        let lease = self.key();
        let timeout = self.config.renew_deadline;
        self.renewed_at = None;
        tokio::time::timeout(timeout, async {
            let Some(mut current) = self
                .api
                .get_opt(&self.config.name)
                .await
                .map_err(|source| Error::Get { lease: lease.clone(), source })?
            else {
                return Ok(());
            };
            let record = LeaderElectionRecord::from_spec(current.spec.as_ref());
            let Some(released) = self.election.release(&record, Instant::now(), Timestamp::now()) else {
                self.lease = Some(current);
                return Ok(());
            };
            released.apply_to(current.spec.get_or_insert_with(LeaseSpec::default));
            let written = self
                .api
                .replace(&self.config.name, &PostParams::default(), &current)
                .await
                .map_err(|source| Error::Update { lease: lease.clone(), source })?;
            self.lease = Some(written);
            self.election.written(released, Instant::now());
            info!(lease = %lease, identity = %self.config.identity, "Released leader Lease");
            Ok(())
        })
        .await
        .map_err(|_| Error::Timeout { lease: lease.clone(), timeout })?
    }

    /// Acquires, then runs `on_lead` while renewing. `on_lead` is dropped (cancelled) the moment
    /// leadership is lost, and the loss is returned; the caller should then exit, as upstream's
    /// components do, since its caches may already be acted on by the new leader. When
    /// `on_lead` finishes first its output is returned, after releasing the lease if
    /// `release_on_cancel` is set.
    pub async fn run<F: Future>(mut self, on_lead: F) -> Result<F::Output, LostLeadership> {
        self.acquire().await;
        let output = tokio::select! {
            output = on_lead => output,
            lost = self.hold() => return Err(lost),
        };
        if self.config.release_on_cancel
            && let Err(e) = self.release().await
        {
            warn!(lease = %self.key(), error = %chain(&e), "Failed to release the Lease");
        }
        Ok(output)
    }

    /// One attempt (client-go's `tryAcquireOrRenew`): the optimistic renewal when we lead, else
    /// read the Lease and act on the decision. Bounded by `renew_deadline`.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, Error> {
        let timeout = self.config.renew_deadline;
        let lease = self.key();
        tokio::time::timeout(timeout, self.try_acquire_or_renew_unbounded())
            .await
            .map_err(|_| Error::Timeout { lease, timeout })?
    }

    async fn try_acquire_or_renew_unbounded(&mut self) -> Result<Attempt, Error> {
        let name = self.config.name.clone();
        let lease = self.key();
        // 1. Fast path: we lead; write over the version we know without reading it first.
        if let (Some(record), Some(known)) = (self.election.renewal(Instant::now(), Timestamp::now()), &self.lease) {
            let mut next = known.clone();
            record.apply_to(next.spec.get_or_insert_with(LeaseSpec::default));
            match self.api.replace(&name, &PostParams::default(), &next).await {
                Ok(written) => {
                    self.lease = Some(written);
                    self.election.written(record, Instant::now());
                    return Ok(Attempt::Leading);
                }
                Err(e) => debug!(lease = %lease, error = %e, "Failed to renew the Lease optimistically, reading it"),
            }
        }
        // 2. Read it (or find it missing) and decide.
        let current = self.api.get_opt(&name).await.map_err(|source| Error::Get { lease: lease.clone(), source })?;
        let record = current.as_ref().map(|l| LeaderElectionRecord::from_spec(l.spec.as_ref()));
        let decision = self.election.decide(record.as_ref(), Instant::now(), Timestamp::now());
        match (decision, current) {
            (Decision::Wait { holder }, current) => {
                self.lease = current;
                Ok(Attempt::HeldBy(holder))
            }
            (Decision::Create(record), _) | (Decision::Update(record), None) => {
                let mut spec = LeaseSpec::default();
                record.apply_to(&mut spec);
                let new = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                match self.api.create(&PostParams::default(), &new).await {
                    Ok(created) => {
                        self.lease = Some(created);
                        self.election.written(record, Instant::now());
                        Ok(Attempt::Leading)
                    }
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {
                        info!(lease = %lease, "Another candidate created the Lease first");
                        self.lease = None;
                        Ok(Attempt::Raced)
                    }
                    Err(source) => Err(Error::Create { lease, source }),
                }
            }
            (Decision::Update(record), Some(mut current)) => {
                record.apply_to(current.spec.get_or_insert_with(LeaseSpec::default));
                match self.api.replace(&name, &PostParams::default(), &current).await {
                    Ok(written) => {
                        self.lease = Some(written);
                        self.election.written(record, Instant::now());
                        Ok(Attempt::Leading)
                    }
                    Err(kube::Error::Api(s)) if s.is_conflict() => {
                        info!(lease = %lease, "Another candidate wrote the Lease first");
                        Ok(Attempt::Raced)
                    }
                    Err(source) => Err(Error::Update { lease, source }),
                }
            }
        }
    }
}

/// An error and its sources, "outer: inner: root", for one log field.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `period` plus up to `JITTER_FACTOR` times more, at random (client-go's `wait.Jitter`).
fn jittered(period: Duration) -> Duration {
    period.mul_f64(1.0 + rand::random::<f64>() * JITTER_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_attempts_wait_between_one_and_two_point_two_retry_periods() {
        let period = Duration::from_secs(2);
        for _ in 0..1000 {
            let d = jittered(period);
            assert!(d >= period && d <= period.mul_f64(1.0 + JITTER_FACTOR), "{d:?}");
        }
    }
}
