//! The back-off between deletions of failed daemon pods on one node, as upstream's
//! failedPodsBackoff: a kubelet that keeps rejecting a daemon pod must not make the controller
//! delete and re-create it in a hot loop. The delay starts at 1 s and doubles to 15 min; a node
//! quiet for twice the longest delay starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const START: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct FailedPodsBackoff {
    /// Per `<ds key>/<node>`: when the last failed pod was deleted and the delay after it.
    entries: HashMap<String, (Instant, Duration)>,
}

impl FailedPodsBackoff {
    /// `None` if a failed pod of DaemonSet `key` on `node` may be deleted at `now` (and starts
    /// the next, doubled, delay); otherwise how long until it may.
    pub fn next(&mut self, key: &str, node: &str, now: Instant) -> Option<Duration> {
        let entry = self.entries.entry(format!("{key}/{node}")).or_insert((now, Duration::ZERO));
        let (since, delay) = *entry;
        if delay.is_zero() || now.duration_since(since) > 2 * MAX {
            *entry = (now, START);
            return None;
        }
        let until = since + delay;
        if now < until {
            return Some(until - now);
        }
        *entry = (now, (delay * 2).min(MAX));
        None
    }

    /// Drops what is kept for a DaemonSet that is gone.
    pub fn forget(&mut self, key: &str) {
        let prefix = format!("{key}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_pod_deletions_on_a_node_back_off_doubling_up_to_fifteen_minutes() {
        let mut b = FailedPodsBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.next("ns/ds", "n1", t0), None, "the first failure is handled at once");
        assert_eq!(b.next("ns/ds", "n1", t0 + Duration::from_millis(400)), Some(Duration::from_millis(600)));
        assert_eq!(b.next("ns/ds", "n2", t0), None, "each node backs off on its own");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.next("ns/ds", "n1", t1), None);
        assert_eq!(b.next("ns/ds", "n1", t1 + Duration::from_secs(1)), Some(Duration::from_secs(1)), "now 2 s");
        let mut t = t1;
        let mut delay = Duration::from_secs(2);
        for _ in 0..20 {
            t += delay;
            assert_eq!(b.next("ns/ds", "n1", t), None);
            delay = (delay * 2).min(MAX);
        }
        assert_eq!(b.next("ns/ds", "n1", t), Some(MAX));
        assert_eq!(b.next("ns/ds", "n1", t + 3 * MAX), None, "a long quiet starts over");
        assert_eq!(b.next("ns/ds", "n1", t + 3 * MAX), Some(START));
        b.forget("ns/ds");
        assert_eq!(b.next("ns/ds", "n1", t + 3 * MAX), None);
    }
}
