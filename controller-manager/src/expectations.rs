//! Expectations, as upstream's controllers keep them: after a controller creates or deletes pods
//! it must not act on its cache again until the cache has seen those writes, or it would create
//! (or delete) them a second time. A sync whose expectations are unmet only recomputes status.
//! Expectations expire after five minutes so a lost watch event cannot wedge a controller.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long expectations hold before the controller acts anyway.
pub const TTL: Duration = Duration::from_secs(300);

struct Expected {
    creations: i64,
    /// UIDs whose deletion is awaited (a pod can be observed deleted only once).
    deletions: HashSet<String>,
    at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller may act on `key` (nothing awaited, or waited too long).
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.creations <= 0 && e.deletions.is_empty()) || e.at.elapsed() > TTL,
        }
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        self.lock()
            .insert(key.to_string(), Expected { creations: n as i64, deletions: HashSet::new(), at: Instant::now() });
    }

    pub fn expect_deletions(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_string(),
            Expected { creations: 0, deletions: uids.into_iter().collect(), at: Instant::now() },
        );
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.creations -= 1;
        }
    }

    /// Also used for creations that were never made (an error stopped a batch).
    pub fn lower_creations(&self, key: &str, n: usize) {
        if let Some(e) = self.lock().get_mut(key) {
            e.creations -= n as i64;
        }
    }

    pub fn deletion_observed(&self, key: &str, uid: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletions.remove(uid);
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_deletions_must_all_be_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"), "nothing awaited");
        e.expect_creations("ns/rs", 2);
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.lower_creations("ns/rs", 1);
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["u1".to_string(), "u2".to_string()]);
        e.deletion_observed("ns/rs", "u1");
        e.deletion_observed("ns/rs", "u1");
        assert!(!e.satisfied("ns/rs"), "the same pod seen deleted twice counts once");
        e.deletion_observed("ns/rs", "u2");
        assert!(e.satisfied("ns/rs"));
    }
}
