//! When to sync: upstream's bounded-frequency runner, as a pure state machine over `Instant`s.
//!
//! ```text
//! change seen ──► pending ──► run at max(last run + min-sync-period, now)
//! no change   ──────────────► run at last run + sync-period (a full resync)
//! sync failed ──► retry at now + backoff (min-sync-period, doubling, at most sync-period),
//!                 and the next sync is full: the kernel may hold anything
//! ```
//!
//! The caller asks [`BoundedFrequency::next_run`] when to wake, sleeps until then (or until a
//! change calls [`BoundedFrequency::request`]), and reports each sync with
//! [`BoundedFrequency::ran`]. Nothing here reads a clock, so tests drive it with made-up instants.

use std::time::{Duration, Instant};

/// Whether a sync may send only the chains that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Everything, with stale chains found from `iptables-save`, and the jump rules re-ensured.
    Full,
    /// Only what changed since the last applied render (valid only when it was applied).
    Partial,
}

#[derive(Debug, Clone)]
pub struct BoundedFrequency {
    min: Duration,
    max: Duration,
    /// A change arrived since the last sync started.
    pending: bool,
    last_run: Option<Instant>,
    last_full: Option<Instant>,
    /// The last sync failed: retry then, and make the retry full.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl BoundedFrequency {
    /// `min`: the least time between two syncs; `max`: the most (the periodic full resync).
    pub fn new(min: Duration, max: Duration) -> BoundedFrequency {
        let max = max.max(min);
        BoundedFrequency {
            min,
            max,
            pending: false,
            last_run: None,
            last_full: None,
            retry_at: None,
            backoff: first_backoff(min),
        }
    }

    /// Something changed: sync soon (but not sooner than `min` after the last sync).
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Whether a change is waiting for a sync.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// When the next sync should start; `now` or earlier means at once.
    pub fn next_run(&self, now: Instant) -> Instant {
        let Some(last) = self.last_run else { return now };
        let mut at = last + self.max;
        if self.pending {
            at = at.min((last + self.min).max(now));
        }
        if let Some(retry) = self.retry_at {
            at = at.min(retry.max(last + self.min));
        }
        at
    }

    /// The kind of sync to run at `now`.
    pub fn kind(&self, now: Instant) -> SyncKind {
        match self.last_full {
            None => SyncKind::Full,
            Some(_) if self.retry_at.is_some() => SyncKind::Full,
            Some(full) if now >= full + self.max => SyncKind::Full,
            Some(_) => SyncKind::Partial,
        }
    }

    /// A sync of `kind` started at `now` and finished: `ok` if the rules were applied.
    pub fn ran(&mut self, now: Instant, kind: SyncKind, ok: bool) {
        self.last_run = Some(now);
        self.pending = false;
        if ok {
            if kind == SyncKind::Full {
                self.last_full = Some(now);
            }
            self.retry_at = None;
            self.backoff = first_backoff(self.min);
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.max);
            // A failed first sync still counts as "tried"; the retry is full either way.
            self.last_full.get_or_insert(now);
        }
    }
}

/// The first retry delay: the min-sync-period, but never a busy loop when that is zero.
fn first_backoff(min: Duration) -> Duration {
    min.max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_first_sync_is_immediate_and_full() {
        let t0 = Instant::now();
        let r = BoundedFrequency::new(MIN, MAX);
        assert_eq!(r.next_run(t0), t0);
        assert_eq!(r.kind(t0), SyncKind::Full);
    }

    #[test]
    fn a_change_waits_for_the_min_sync_period_after_the_last_sync() {
        let t0 = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        r.ran(t0, SyncKind::Full, true);
        // A change 200ms after a sync runs 1s after that sync, not at once.
        r.request();
        assert_eq!(r.next_run(t0 + Duration::from_millis(200)), t0 + MIN);
        assert_eq!(r.kind(t0 + MIN), SyncKind::Partial);
        // A change long after the last sync runs at once.
        let later = t0 + secs(10);
        assert_eq!(r.next_run(later), later);
    }

    #[test]
    fn many_changes_coalesce_into_one_sync() {
        let t0 = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        r.ran(t0, SyncKind::Full, true);
        for _ in 0..100 {
            r.request();
        }
        assert_eq!(r.next_run(t0), t0 + MIN);
        r.ran(t0 + MIN, SyncKind::Partial, true);
        assert!(!r.pending());
        assert_eq!(r.next_run(t0 + MIN), t0 + MIN + MAX, "nothing pending: only the periodic resync");
    }

    #[test]
    fn with_no_change_a_full_resync_runs_every_sync_period() {
        let t0 = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        r.ran(t0, SyncKind::Full, true);
        assert_eq!(r.next_run(t0 + secs(5)), t0 + MAX);
        assert_eq!(r.kind(t0 + MAX), SyncKind::Full);
        // Partial syncs in between do not postpone the full one.
        r.request();
        r.ran(t0 + secs(10), SyncKind::Partial, true);
        assert_eq!(r.kind(t0 + secs(20)), SyncKind::Partial);
        assert_eq!(r.kind(t0 + MAX), SyncKind::Full);
    }

    #[test]
    fn a_failed_sync_is_retried_with_backoff_and_the_retry_is_full() {
        let t0 = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        r.ran(t0, SyncKind::Full, true);
        r.request();
        let t1 = t0 + secs(5);
        r.ran(t1, SyncKind::Partial, false);
        assert_eq!(r.next_run(t1), t1 + MIN);
        assert_eq!(r.kind(t1 + MIN), SyncKind::Full);
        let t2 = t1 + MIN;
        r.ran(t2, SyncKind::Full, false);
        assert_eq!(r.next_run(t2), t2 + secs(2), "backoff doubles");
        let t3 = t2 + secs(2);
        r.ran(t3, SyncKind::Full, false);
        assert_eq!(r.next_run(t3), t3 + secs(4));
        // Success resets the backoff and the next sync may be partial again.
        let t4 = t3 + secs(4);
        r.ran(t4, SyncKind::Full, true);
        r.request();
        assert_eq!(r.kind(t4 + MIN), SyncKind::Partial);
        r.ran(t4 + MIN, SyncKind::Partial, false);
        assert_eq!(r.next_run(t4 + MIN), t4 + MIN + MIN);
    }

    #[test]
    fn backoff_never_exceeds_the_sync_period() {
        let mut t = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        for _ in 0..20 {
            r.ran(t, SyncKind::Full, false);
            let next = r.next_run(t);
            assert!(next - t <= MAX, "{:?}", next - t);
            t = next;
        }
    }

    #[test]
    fn a_failed_first_sync_retries_full() {
        let t0 = Instant::now();
        let mut r = BoundedFrequency::new(MIN, MAX);
        r.ran(t0, SyncKind::Full, false);
        assert_eq!(r.next_run(t0), t0 + MIN);
        assert_eq!(r.kind(t0 + MIN), SyncKind::Full);
    }
}
