//! Restart backoff per container name (CrashLoopBackOff) and per image (ImagePullBackOff):
//! the first retry is immediate, then 10 s doubling to 5 min, as upstream.

use std::collections::HashMap;
use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Default, Debug)]
pub struct Backoff {
    delay: HashMap<String, Duration>,
}

impl Backoff {
    /// How long `key` must still wait after a failure at `since` (nanoseconds), if at all.
    pub fn remaining(&self, key: &str, since: i64, now: i64) -> Option<Duration> {
        let delay = *self.delay.get(key)?;
        let until = since.saturating_add(delay.as_nanos() as i64);
        (now < until).then(|| Duration::from_nanos((until - now) as u64))
    }

    /// Records a (re)start of `key`: the next failure waits twice as long as the last.
    pub fn started(&mut self, key: &str) {
        let next = match self.delay.get(key) {
            None => INITIAL,
            Some(d) => (*d * 2).min(MAX),
        };
        self.delay.insert(key.to_string(), next);
    }

    /// The delay the next failure of `key` will wait.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.delay.get(key).copied()
    }

    pub fn reset(&mut self, key: &str) {
        self.delay.remove(key);
    }

    pub fn force(&mut self, key: &str, delay: Duration) {
        self.delay.insert(key.to_string(), delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_five_minutes() {
        let mut b = Backoff::default();
        assert_eq!(b.remaining("c", 0, 0), None, "the first restart is immediate");
        let mut seen = vec![];
        for _ in 0..7 {
            b.started("c");
            seen.push(b.current("c").expect("delay").as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300]);
        let s = 1_000_000_000;
        assert_eq!(b.remaining("c", s, s + 100_000_000_000), Some(Duration::from_secs(200)));
        assert_eq!(b.remaining("c", s, s + 300_000_000_000), None);
        b.reset("c");
        assert_eq!(b.remaining("c", s, s), None);
    }
}
