//! Which Lease to contend for, as whom, and the three timings, with upstream's defaults and
//! checks, plus the pieces a component needs to expose them as upstream's `--leader-elect-*`
//! flags (Go duration syntax, a `hostname_uuid` identity).

use std::time::Duration;

/// Upstream's `--leader-elect-lease-duration`: how long others wait after the holder's last
/// observed renewal before taking over.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Upstream's `--leader-elect-renew-deadline`: how long the leader keeps trying to renew before
/// it gives up leading.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Upstream's `--leader-elect-retry-period`: the pause between attempts to acquire or renew.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Upstream's `--leader-elect-resource-namespace`.
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// Attempts to acquire wait `retry_period` plus up to this fraction of it more, so candidates
/// that started together do not keep colliding (client-go's `JitterFactor`).
pub const JITTER_FACTOR: f64 = 1.2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The Lease is `<namespace>/<name>`.
    pub namespace: String,
    pub name: String,
    /// Written as `holderIdentity`; must differ between candidates ([`default_identity`]).
    pub identity: String,
    /// Written in whole seconds as `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// The leader gives up when no renewal has succeeded for this long.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Whether [`crate::LeaderElector::run`] gives the lease up when its work finishes, so a
    /// successor need not wait out the lease duration.
    pub release_on_cancel: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("leader election: the Lease name must not be empty")]
    EmptyName,
    #[error("leader election: the identity must not be empty")]
    EmptyIdentity,
    #[error("leader election: the lease duration must be at least 1s, got {0:?}")]
    LeaseDurationTooShort(Duration),
    #[error("leader election: the retry period must be greater than zero")]
    ZeroRetryPeriod,
    #[error(
        "leader election: the lease duration ({lease_duration:?}, in whole seconds) must be greater than the renew \
         deadline ({renew_deadline:?})"
    )]
    RenewDeadlineNotBelowLeaseDuration { lease_duration: Duration, renew_deadline: Duration },
    #[error(
        "leader election: the renew deadline ({renew_deadline:?}) must be greater than {JITTER_FACTOR} times the \
         retry period ({retry_period:?})"
    )]
    RetryPeriodTooLong { renew_deadline: Duration, retry_period: Duration },
}

impl Config {
    /// A Lease `<namespace>/<name>` contended as `identity`, with upstream's default timings and
    /// no release on cancel (upstream's kube-scheduler does not release either).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Config {
        Config {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            release_on_cancel: false,
        }
    }

    /// Upstream's checks, but against the lease duration as written (whole seconds): a leader
    /// must stop before anyone else may start, or both lead at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if self.identity.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::LeaseDurationTooShort(self.lease_duration));
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::ZeroRetryPeriod);
        }
        if Duration::from_secs(self.lease_duration.as_secs()) <= self.renew_deadline {
            return Err(ConfigError::RenewDeadlineNotBelowLeaseDuration {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(ConfigError::RetryPeriodTooLong {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }
}

/// Upstream's identity: the hostname, an underscore and a random UUID, so two candidates on one
/// host (or one candidate restarted) never share an identity.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Parses a Go duration ("15s", "1m30s", "1.5s", "500ms"), the syntax of upstream's
/// `--leader-elect-*` duration flags; usable as a clap `value_parser`. Negative durations are
/// refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?} (expected e.g. 15s, 1m30s, 500ms)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
            return Err(invalid());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        // Digits beyond nanoseconds are dropped, as Go does.
        let fraction = &fraction[..fraction.len().min(18)];
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
        let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| invalid())? };
        let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
        let part =
            whole.checked_mul(unit).and_then(|w| w.checked_add(fraction_value * unit / scale)).ok_or_else(invalid)?;
        nanos = nanos.checked_add(part).ok_or_else(invalid)?;
        rest = tail;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: f64, renew: f64, retry: f64) -> Config {
        Config {
            lease_duration: Duration::from_secs_f64(lease),
            renew_deadline: Duration::from_secs_f64(renew),
            retry_period: Duration::from_secs_f64(retry),
            ..Config::new("kube-system", "kube-scheduler", "me")
        }
    }

    #[test]
    fn validation_follows_upstream() {
        let d = Duration::from_secs_f64;
        let cases = [
            ("upstream defaults", config(15.0, 10.0, 2.0), Ok(())),
            ("short test timings", config(2.0, 1.5, 0.3), Ok(())),
            (
                "renew deadline equal to the lease",
                config(10.0, 10.0, 2.0),
                Err(ConfigError::RenewDeadlineNotBelowLeaseDuration {
                    lease_duration: d(10.0),
                    renew_deadline: d(10.0),
                }),
            ),
            (
                "a fractional lease is written truncated, below the renew deadline",
                config(2.5, 2.2, 0.3),
                Err(ConfigError::RenewDeadlineNotBelowLeaseDuration { lease_duration: d(2.5), renew_deadline: d(2.2) }),
            ),
            (
                "retry period too close to the renew deadline",
                config(15.0, 10.0, 9.0),
                Err(ConfigError::RetryPeriodTooLong { renew_deadline: d(10.0), retry_period: d(9.0) }),
            ),
            ("sub-second lease", config(0.5, 0.2, 0.1), Err(ConfigError::LeaseDurationTooShort(d(0.5)))),
            ("zero retry period", config(15.0, 10.0, 0.0), Err(ConfigError::ZeroRetryPeriod)),
            (
                "empty identity",
                Config { identity: String::new(), ..config(15.0, 10.0, 2.0) },
                Err(ConfigError::EmptyIdentity),
            ),
            ("empty name", Config { name: String::new(), ..config(15.0, 10.0, 2.0) }, Err(ConfigError::EmptyName)),
        ];
        for (name, c, want) in cases {
            assert_eq!(c.validate(), want, "{name}");
        }
    }

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("15s", Ok(Duration::from_secs(15))),
            ("0", Ok(Duration::ZERO)),
            ("1m30s", Ok(Duration::from_secs(90))),
            ("1.5s", Ok(Duration::from_millis(1500))),
            ("300ms", Ok(Duration::from_millis(300))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("2us", Ok(Duration::from_micros(2))),
            ("0.3s", Ok(Duration::from_millis(300))),
            (".5s", Ok(Duration::from_millis(500))),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), want, "{s}");
        }
        for bad in ["", "15", "s", "-1s", "1x", "1..5s", "+"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn identities_are_hostname_underscore_uuid_and_unique() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        let (host, uuid) = a.rsplit_once('_').expect("an underscore");
        assert!(!host.is_empty());
        assert_eq!(uuid.len(), 36);
    }
}
