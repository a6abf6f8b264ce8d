//! The scheduling queue: pending pods by priority, then arrival; pods that fit nowhere wait
//! until something relevant changes and their backoff (1 s doubling to 10 s) is over, or five
//! minutes have passed (upstream's safety net). Pure: time comes in as an argument.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

struct Waiting {
    priority: i32,
    /// Not before this.
    after: Instant,
    /// The change generation when it failed; any later change may help it.
    failed_gen: u64,
    failed_at: Instant,
}

pub struct SchedulingQueue {
    /// (-priority, arrival) -> uid
    active: BTreeMap<(i64, u64), String>,
    /// uid -> its key in `active`.
    index: HashMap<String, (i64, u64)>,
    unschedulable: HashMap<String, Waiting>,
    /// Failed attempts per pod, for its backoff.
    attempts: HashMap<String, u32>,
    seq: u64,
    /// Counts relevant changes in the cluster.
    generation: u64,
    initial: Duration,
    max: Duration,
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }
}

const MAX_WAIT: Duration = Duration::from_secs(300);

/// `initial` doubling per attempt up to `max`: 1 s, 2 s, 4 s, 8 s, then 10 s by default.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    initial.saturating_mul(1 << attempts.saturating_sub(1).min(20)).min(max)
}

impl SchedulingQueue {
    pub fn new(initial: Duration, max: Duration) -> Self {
        SchedulingQueue {
            active: BTreeMap::new(),
            index: HashMap::new(),
            unschedulable: HashMap::new(),
            attempts: HashMap::new(),
            seq: 0,
            generation: 0,
            initial,
            max,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Queues a pending pod unless it is already queued or waiting.
    pub fn add(&mut self, uid: &str, priority: i32) {
        if self.index.contains_key(uid) || self.unschedulable.contains_key(uid) {
            return;
        }
        self.seq += 1;
        let k = (-(priority as i64), self.seq);
        self.active.insert(k, uid.to_string());
        self.index.insert(uid.to_string(), k);
    }

    /// The next pod to schedule: highest priority, then first in.
    pub fn pop(&mut self) -> Option<String> {
        let (_, uid) = self.active.pop_first()?;
        self.index.remove(&uid);
        Some(uid)
    }

    /// The pod fit nowhere: it waits for a change and its backoff.
    pub fn unschedulable(&mut self, uid: &str, priority: i32, now: Instant) {
        self.wait(uid, priority, now, self.generation);
    }

    /// The attempt failed for a reason of its own (a binding error): retry after the backoff,
    /// change or not.
    pub fn backoff_retry(&mut self, uid: &str, priority: i32, now: Instant) {
        self.wait(uid, priority, now, self.generation.wrapping_sub(1));
    }

    fn wait(&mut self, uid: &str, priority: i32, now: Instant, failed_gen: u64) {
        if let Some(k) = self.index.remove(uid) {
            self.active.remove(&k);
        }
        let attempts = self.attempts.entry(uid.to_string()).or_default();
        *attempts += 1;
        let w =
            Waiting { priority, after: now + backoff(*attempts, self.initial, self.max), failed_gen, failed_at: now };
        self.unschedulable.insert(uid.to_string(), w);
    }

    /// A node or pod changed in a way that may let waiting pods fit.
    pub fn something_changed(&mut self) {
        self.generation += 1;
    }

    /// Moves waiting pods whose time has come back to the active queue.
    pub fn flush(&mut self, now: Instant) {
        let generation = self.generation;
        let due: Vec<(String, i32)> = self
            .unschedulable
            .iter()
            .filter(|(_, w)| {
                w.after <= now && (w.failed_gen != generation || now.duration_since(w.failed_at) >= MAX_WAIT)
            })
            .map(|(u, w)| (u.clone(), w.priority))
            .collect();
        for (uid, priority) in due {
            self.unschedulable.remove(&uid);
            self.add(&uid, priority);
        }
    }

    /// The pod is no longer pending (bound, deleted, finished): forget it.
    pub fn remove(&mut self, uid: &str) {
        if let Some(k) = self.index.remove(uid) {
            self.active.remove(&k);
        }
        self.unschedulable.remove(uid);
        self.attempts.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_first_then_arrival_and_no_duplicates() {
        let mut q = SchedulingQueue::default();
        q.add("low-1", 0);
        q.add("high", 100);
        q.add("low-2", 0);
        q.add("low-1", 0);
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec!["high", "low-1", "low-2"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let waits: Vec<u64> =
            (1..=6).map(|a| backoff(a, Duration::from_secs(1), Duration::from_secs(10)).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn waiting_pods_return_after_a_change_and_their_backoff_not_by_polling() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add("p", 0);
        assert_eq!(q.pop().as_deref(), Some("p"));
        q.unschedulable("p", 0, t0);
        q.add("p", 0);
        assert!(q.is_empty(), "a waiting pod is not queued again by its own update");
        q.flush(t0 + Duration::from_secs(5));
        assert!(q.is_empty(), "nothing changed: it keeps waiting");
        q.something_changed();
        q.flush(t0 + Duration::from_millis(500));
        assert!(q.is_empty(), "within its 1 s backoff");
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().as_deref(), Some("p"));
        // The second failure waits 2 s; five minutes bring it back even without a change.
        q.unschedulable("p", 0, t0);
        q.flush(t0 + Duration::from_secs(299));
        assert!(q.is_empty());
        q.flush(t0 + MAX_WAIT);
        assert_eq!(q.pop().as_deref(), Some("p"));
        q.remove("p");
        q.unschedulable("p", 0, t0);
        q.something_changed();
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().as_deref(), Some("p"), "removing it reset its backoff");
        q.backoff_retry("p", 0, t0);
        q.flush(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().as_deref(), Some("p"), "a failed binding is retried without a change");
    }
}
