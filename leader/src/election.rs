//! The decision half of leader election, without I/O: given the record a Lease holds, what we
//! observed before, the local monotonic clock and our identity, decide whether to create the
//! Lease, write it (acquire or renew), or wait for its holder's lease to run out.
//!
//! Invariant: expiry is judged only by the local monotonic clock. The holder's `renewTime` is
//! never compared with our wall clock; a lease is valid until `leaseDurationSeconds` after the
//! moment *we* first saw its current record (any change to the record, a renewal included,
//! restarts that count). Clock skew between machines therefore cannot make two candidates lead at
//! once; only a difference in clock *rate* could, as upstream.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

/// The part of a Lease's spec that leader election reads and writes (client-go's
/// `LeaderElectionRecord`). An empty `holder_identity` means nobody holds the lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderElectionRecord {
    pub holder_identity: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub leader_transitions: i32,
}

impl LeaderElectionRecord {
    /// The record a Lease holds; missing fields read as zero values, as upstream.
    pub fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else { return Self::default() };
        LeaderElectionRecord {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            leader_transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// Writes this record into `spec`, leaving the fields leader election does not own
    /// (`strategy`, `preferredHolder`) as they are.
    pub fn apply_to(&self, spec: &mut LeaseSpec) {
        spec.holder_identity = Some(self.holder_identity.clone());
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = Some(self.leader_transitions);
    }
}

/// What to do with the Lease after reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The Lease does not exist: create it holding this record.
    Create(LeaderElectionRecord),
    /// Replace the record just read (guarded by its resourceVersion) with this one: we renew our
    /// own lease, or take one that is free or expired.
    Update(LeaderElectionRecord),
    /// `holder` holds a lease that has not expired by our clock.
    Wait { holder: String },
}

/// One candidate's view of one Lease. Pure: every method takes the time from the caller.
#[derive(Clone, Debug)]
pub struct Election {
    identity: String,
    lease_duration_seconds: i32,
    /// The last record we read or wrote, and when (local clock) we first saw it.
    observed: Option<(LeaderElectionRecord, Instant)>,
}

impl Election {
    /// `lease_duration` is written in whole seconds (truncated, as upstream).
    pub fn new(identity: impl Into<String>, lease_duration: Duration) -> Self {
        let lease_duration_seconds = i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX);
        Election { identity: identity.into(), lease_duration_seconds, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the last record we saw names us as the holder.
    pub fn is_leader(&self) -> bool {
        self.holder() == Some(self.identity.as_str())
    }

    /// The holder in the last record we saw, if any.
    pub fn holder(&self) -> Option<&str> {
        self.observed.as_ref().map(|(r, _)| r.holder_identity.as_str()).filter(|h| !h.is_empty())
    }

    /// Whether the last record we saw is still within its own lease duration, counted from when
    /// we saw it.
    pub fn is_lease_valid(&self, now: Instant) -> bool {
        self.observed.as_ref().is_some_and(|(record, at)| {
            let seconds = u64::try_from(record.lease_duration_seconds).unwrap_or(0);
            at.checked_add(Duration::from_secs(seconds)).is_none_or(|expiry| expiry > now)
        })
    }

    /// Records `current` as observed at `now`, unless it is the record we already saw (then the
    /// expiry keeps counting from when we first saw it).
    pub fn observe(&mut self, current: &LeaderElectionRecord, now: Instant) {
        if self.observed.as_ref().is_none_or(|(seen, _)| seen != current) {
            self.observed = Some((current.clone(), now));
        }
    }

    /// A write of `record` succeeded at `now`.
    pub fn written(&mut self, record: LeaderElectionRecord, now: Instant) {
        self.observed = Some((record, now));
    }

    /// The fast path of a renewal: while we lead and our lease is valid by our clock, the record
    /// to write over the last version we know, without reading the Lease first. A conflict on
    /// that write sends the caller to the slow path ([`Election::decide`]).
    pub fn renewal(&self, now: Instant, wall: Timestamp) -> Option<LeaderElectionRecord> {
        let (seen, _) = self.observed.as_ref()?;
        (self.is_leader() && self.is_lease_valid(now)).then(|| LeaderElectionRecord {
            renew_time: Some(micros(wall)),
            lease_duration_seconds: self.lease_duration_seconds,
            ..seen.clone()
        })
    }

    /// The slow path: decides from `current`, the record the Lease holds now (`None`: the Lease
    /// does not exist), read at `now` (local clock) and `wall` (the time to write).
    pub fn decide(&mut self, current: Option<&LeaderElectionRecord>, now: Instant, wall: Timestamp) -> Decision {
        let wall = micros(wall);
        let ours = LeaderElectionRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: 0,
        };
        let Some(current) = current else { return Decision::Create(ours) };
        self.observe(current, now);
        if !current.holder_identity.is_empty() && self.is_lease_valid(now) && !self.is_leader() {
            return Decision::Wait { holder: current.holder_identity.clone() };
        }
        if self.is_leader() {
            // Renewing: the acquisition and the transition count stay.
            Decision::Update(LeaderElectionRecord {
                acquire_time: current.acquire_time,
                leader_transitions: current.leader_transitions,
                ..ours
            })
        } else {
            // Taking a free or expired lease: the holder changes.
            Decision::Update(LeaderElectionRecord {
                leader_transitions: current.leader_transitions.saturating_add(1),
                ..ours
            })
        }
    }

    /// The record that gives the lease up, if `current` (read at `now`) says we hold it: no
    /// holder, a one-second duration so anyone waiting on the old record soon takes it, and the
    /// transition count unchanged.
    pub fn release(
        &mut self,
        current: &LeaderElectionRecord,
        now: Instant,
        wall: Timestamp,
    ) -> Option<LeaderElectionRecord> {
        self.observe(current, now);
        let wall = micros(wall);
        self.is_leader().then(|| LeaderElectionRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: current.leader_transitions,
        })
    }
}

/// `wall` truncated to the microseconds a MicroTime carries, so that the record we write equals
/// the one we read back, and reading our own write does not count as a change.
fn micros(wall: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(wall.as_microsecond()).unwrap_or(wall)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    /// A fake clock: `Instant`s and wall times `s` seconds after an arbitrary start.
    struct Clock {
        start: Instant,
        wall: Timestamp,
    }

    impl Clock {
        fn new() -> Clock {
            Clock { start: Instant::now(), wall: "2025-01-01T00:00:00Z".parse().unwrap() }
        }
        fn at(&self, s: f64) -> Instant {
            self.start + Duration::from_secs_f64(s)
        }
        fn wall(&self, s: f64) -> Timestamp {
            self.wall + jiff::SignedDuration::from_secs_f64(s)
        }
    }

    fn held_by(holder: &str, transitions: i32, renew: Timestamp) -> LeaderElectionRecord {
        LeaderElectionRecord {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(renew),
            renew_time: Some(renew),
            leader_transitions: transitions,
        }
    }

    #[test]
    fn decisions_from_a_fresh_candidate() {
        let c = Clock::new();
        let skewed = c.wall(-3600.0); // the holder's clock is an hour behind ours: irrelevant
        let released = LeaderElectionRecord { lease_duration_seconds: 1, ..held_by("", 4, c.wall(0.0)) };
        let cases: Vec<(&str, Option<LeaderElectionRecord>, Decision)> = vec![
            (
                "a missing Lease is created with us as holder and no transitions",
                None,
                Decision::Create(LeaderElectionRecord {
                    holder_identity: "me".into(),
                    lease_duration_seconds: 15,
                    acquire_time: Some(c.wall(0.0)),
                    renew_time: Some(c.wall(0.0)),
                    leader_transitions: 0,
                }),
            ),
            (
                "a lease held by another is left alone however old its renewTime looks",
                Some(held_by("other", 2, skewed)),
                Decision::Wait { holder: "other".into() },
            ),
            (
                "a released lease (empty holder) is taken at once and counts a transition",
                Some(released),
                Decision::Update(LeaderElectionRecord {
                    holder_identity: "me".into(),
                    lease_duration_seconds: 15,
                    acquire_time: Some(c.wall(0.0)),
                    renew_time: Some(c.wall(0.0)),
                    leader_transitions: 5,
                }),
            ),
            (
                "a lease naming us (we restarted) is renewed keeping its acquireTime and count",
                Some(held_by("me", 3, skewed)),
                Decision::Update(LeaderElectionRecord { renew_time: Some(c.wall(0.0)), ..held_by("me", 3, skewed) }),
            ),
            (
                "a lease with no duration is expired at once",
                Some(LeaderElectionRecord { lease_duration_seconds: 0, ..held_by("other", 0, skewed) }),
                Decision::Update(LeaderElectionRecord {
                    holder_identity: "me".into(),
                    lease_duration_seconds: 15,
                    acquire_time: Some(c.wall(0.0)),
                    renew_time: Some(c.wall(0.0)),
                    leader_transitions: 1,
                }),
            ),
        ];
        for (name, current, want) in cases {
            let mut e = Election::new("me", LEASE);
            assert_eq!(e.decide(current.as_ref(), c.at(0.0), c.wall(0.0)), want, "{name}");
        }
    }

    #[test]
    fn an_unchanged_record_expires_lease_duration_after_we_first_saw_it() {
        let c = Clock::new();
        let record = held_by("other", 7, c.wall(0.0));
        let mut e = Election::new("me", LEASE);
        // Seen at 10 s; the record's own renewTime (0 s) plays no part.
        let steps = [(10.0, true), (20.0, true), (24.9, true), (25.0, false), (40.0, false)];
        for (t, waits) in steps {
            let d = e.decide(Some(&record), c.at(t), c.wall(t));
            assert_eq!(matches!(d, Decision::Wait { .. }), waits, "at {t} s: {d:?}");
        }
        let Decision::Update(taken) = e.decide(Some(&record), c.at(25.0), c.wall(25.0)) else { panic!() };
        assert_eq!(taken.holder_identity, "me");
        assert_eq!(taken.leader_transitions, 8);
        assert_eq!(taken.acquire_time, Some(c.wall(25.0)));
    }

    #[test]
    fn every_renewal_by_the_holder_restarts_the_count() {
        let c = Clock::new();
        let mut e = Election::new("me", LEASE);
        for t in [0.0, 10.0, 20.0, 30.0] {
            // The holder renews every 10 s, stamping times from a clock far ahead of ours.
            let record = held_by("other", 1, c.wall(t + 86400.0));
            assert!(matches!(e.decide(Some(&record), c.at(t), c.wall(t)), Decision::Wait { .. }), "at {t} s");
        }
        let last = held_by("other", 1, c.wall(30.0 + 86400.0));
        assert!(matches!(e.decide(Some(&last), c.at(44.0), c.wall(44.0)), Decision::Wait { .. }));
        assert!(matches!(e.decide(Some(&last), c.at(45.0), c.wall(45.0)), Decision::Update(_)));
    }

    #[test]
    fn the_holders_own_lease_duration_decides_expiry_not_ours() {
        let c = Clock::new();
        let mut e = Election::new("me", LEASE);
        let short = LeaderElectionRecord { lease_duration_seconds: 2, ..held_by("other", 0, c.wall(0.0)) };
        assert!(matches!(e.decide(Some(&short), c.at(0.0), c.wall(0.0)), Decision::Wait { .. }));
        assert!(matches!(e.decide(Some(&short), c.at(2.0), c.wall(2.0)), Decision::Update(_)));
    }

    #[test]
    fn the_leader_renews_on_the_fast_path_only_while_its_lease_is_valid() {
        let c = Clock::new();
        let mut e = Election::new("me", LEASE);
        assert_eq!(e.renewal(c.at(0.0), c.wall(0.0)), None, "nothing observed yet");
        let Decision::Create(created) = e.decide(None, c.at(0.0), c.wall(0.0)) else { panic!() };
        assert!(!e.is_leader(), "leader only once the write succeeded");
        e.written(created.clone(), c.at(0.1));
        assert!(e.is_leader());
        let renewed = e.renewal(c.at(2.0), c.wall(2.0)).unwrap();
        assert_eq!(renewed, LeaderElectionRecord { renew_time: Some(c.wall(2.0)), ..created.clone() });
        e.written(renewed, c.at(2.0));
        assert!(e.renewal(c.at(16.9), c.wall(16.9)).is_some(), "within 15 s of the last write: still valid");
        assert_eq!(e.renewal(c.at(17.0), c.wall(17.0)), None, "expired: read the Lease first");
    }

    #[test]
    fn a_leader_that_reads_another_holder_waits() {
        let c = Clock::new();
        let mut e = Election::new("me", LEASE);
        e.written(held_by("me", 0, c.wall(0.0)), c.at(0.0));
        let taken = held_by("other", 1, c.wall(5.0));
        assert_eq!(e.decide(Some(&taken), c.at(5.0), c.wall(5.0)), Decision::Wait { holder: "other".into() });
        assert!(!e.is_leader());
        assert_eq!(e.holder(), Some("other"));
        assert_eq!(e.renewal(c.at(5.0), c.wall(5.0)), None);
    }

    #[test]
    fn reading_back_our_own_write_is_not_a_change() {
        let c = Clock::new();
        let wall = c.wall(0.0) + Duration::from_nanos(123_456_789); // more precision than a MicroTime
        let mut e = Election::new("me", LEASE);
        let Decision::Create(created) = e.decide(None, c.at(0.0), wall) else { panic!() };
        assert_eq!(created.renew_time.unwrap().subsec_nanosecond() % 1000, 0);
        e.written(created.clone(), c.at(0.0));
        // The apiserver hands back the same microseconds; the expiry still counts from 0 s.
        e.observe(&created, c.at(14.0));
        assert!(!e.is_lease_valid(c.at(15.0)));
    }

    #[test]
    fn release_gives_up_only_a_lease_we_hold() {
        let c = Clock::new();
        let mut e = Election::new("me", LEASE);
        let ours = held_by("me", 3, c.wall(0.0));
        let released = e.release(&ours, c.at(1.0), c.wall(1.0)).unwrap();
        assert_eq!(
            released,
            LeaderElectionRecord {
                holder_identity: String::new(),
                lease_duration_seconds: 1,
                acquire_time: Some(c.wall(1.0)),
                renew_time: Some(c.wall(1.0)),
                leader_transitions: 3,
            }
        );
        e.written(released, c.at(1.1));
        assert!(!e.is_leader());
        assert_eq!(e.holder(), None);
        let theirs = held_by("other", 4, c.wall(2.0));
        assert_eq!(e.release(&theirs, c.at(2.0), c.wall(2.0)), None);
    }

    #[test]
    fn spec_round_trips_and_keeps_fields_it_does_not_own() {
        let c = Clock::new();
        let record = held_by("me", 2, c.wall(0.0));
        let mut spec = LeaseSpec { strategy: Some("OldestEmulationVersion".into()), ..Default::default() };
        record.apply_to(&mut spec);
        assert_eq!(LeaderElectionRecord::from_spec(Some(&spec)), record);
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        assert_eq!(LeaderElectionRecord::from_spec(None), LeaderElectionRecord::default());
    }
}
