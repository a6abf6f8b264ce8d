//! The work queue every controller drains: keys (`namespace/name`), not objects, so a burst of
//! events for one object is one sync. As upstream's rate-limited workqueue:
//!
//! - a key is queued at most once (`dirty`); a key being synced is never handed to a second
//!   worker, and if it is added meanwhile it is queued again when the first worker is `done`;
//! - a failed sync is retried after 5 ms, doubling per consecutive failure up to 1000 s, until the
//!   controller `forget`s the key after a success;
//! - `add_after` queues a key later (minReadySeconds, deadlines, cron schedules).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

pub struct WorkQueue {
    state: Mutex<State>,
    ready: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::with_delays(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

impl WorkQueue {
    pub fn with_delays(base_delay: Duration, max_delay: Duration) -> WorkQueue {
        WorkQueue { state: Mutex::default(), ready: Notify::new(), base_delay, max_delay }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if s.shut_down || s.dirty.contains(&key) {
            return;
        }
        s.dirty.insert(key.clone());
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, after: Duration) {
        let key = key.into();
        if after.is_zero() {
            return self.add(key);
        }
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(q) = q.upgrade() {
                q.add(key);
            }
        });
    }

    /// Queues the key again after its backoff, which doubles per consecutive failure.
    pub fn add_rate_limited(self: &Arc<Self>, key: &str) {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_string()).or_default();
            *n += 1;
            *n - 1
        };
        self.add_after(key.to_string(), self.backoff(failures));
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures).unwrap_or(u32::MAX);
        self.base_delay.checked_mul(factor).map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// The key synced cleanly: its next failure starts the backoff over.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    #[cfg(test)]
    fn failures(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to sync, waiting for one; `None` once shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    // Another worker may be waiting for what is left.
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if s.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The worker is finished with `key`; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.ready.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Workers get `None` once the queue is drained of nothing more: they stop.
    pub fn shut_down(&self) {
        let mut s = self.lock();
        s.shut_down = true;
        s.queue.clear();
        drop(s);
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_synced_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_it_is_synced_comes_back_after_done() {
        let q = WorkQueue::default();
        q.add("a");
        let key = q.get().await.expect("a");
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker while the first has it");
        q.done(&key);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_until_forgotten() {
        let q = Arc::new(WorkQueue::default());
        assert_eq!(q.backoff(0), Duration::from_millis(5));
        assert_eq!(q.backoff(3), Duration::from_millis(40));
        assert_eq!(q.backoff(40), Duration::from_secs(1000), "capped");
        q.add_rate_limited("a");
        q.add_rate_limited("a");
        assert_eq!(q.failures("a"), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(q.get().await.as_deref(), Some("a"));
        q.forget("a");
        assert_eq!(q.failures("a"), 0);
    }

    #[tokio::test]
    async fn shutting_down_wakes_the_workers() {
        let q = Arc::new(WorkQueue::default());
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(worker.await.expect("joined"), None);
    }
}
