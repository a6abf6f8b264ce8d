//! Cron schedules as CronJobs take them: five fields (minute, hour, day of month, month, day of
//! week) of `*` or `?`, numbers, names (`JAN`..`DEC`, `SUN`..`SAT`, any case), ranges `a-b`,
//! steps `*/n`, `a-b/n`, `a/n` (from `a` to the end), and lists `x,y`; or one of the macros
//! `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
//! Day of week runs 0-6 from Sunday, as upstream's parser (7 is refused).
//!
//! When both day fields are restricted (neither is `*` or `?`), a day matches if either does,
//! as in classic cron; otherwise both must.
//!
//! Times are found in the schedule's time zone, on the wall clock: a time skipped by a
//! daylight-saving jump runs at the same offset after it (02:30 becomes 03:30), and a time
//! repeated when clocks go back runs once, at its first occurrence.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Matching times: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// The day-of-month field was `*` or `?` (not a step): days need both fields.
    dom_star: bool,
    dow_star: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, ...
    names: &'static [&'static str],
}

const MINUTE: Field = Field { what: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { what: "hour", min: 0, max: 23, names: &[] };
const DOM: Field = Field { what: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field { what: "month", min: 1, max: 12, names: MONTHS };
const DOW: Field = Field { what: "day of week", min: 0, max: 6, names: DAYS };

impl Field {
    fn value(&self, s: &str) -> Result<u32, ParseError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.min + i as u32);
        }
        s.parse::<u32>().map_err(|_| ParseError(format!("failed to parse int from {s}")))
    }

    /// The bits of one field, and whether it was an unrestricted `*` / `?`.
    fn parse(&self, s: &str) -> Result<(u64, bool), ParseError> {
        let mut bits = 0u64;
        let mut star = false;
        for part in s.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => {
                    let step = st.parse::<u32>().ok().filter(|n| *n > 0);
                    let step =
                        step.ok_or_else(|| ParseError(format!("step of range should be a positive number: {part}")))?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                star |= step.is_none_or(|n| n == 1);
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?)
            } else {
                let v = self.value(range)?;
                // "a/n" means from a to the end, every n.
                (v, if step.is_some() { self.max } else { v })
            };
            if lo < self.min {
                return Err(ParseError(format!("beginning of range ({lo}) below minimum ({})", self.min)));
            }
            if hi > self.max {
                return Err(ParseError(format!("end of range ({hi}) above maximum ({})", self.max)));
            }
            if lo > hi {
                return Err(ParseError(format!("beginning of range ({lo}) beyond end of range ({hi})")));
            }
            let step = step.unwrap_or(1) as usize;
            for v in (lo..=hi).step_by(step) {
                bits |= 1 << v;
            }
        }
        if bits == 0 {
            return Err(ParseError(format!("empty {} field", self.what)));
        }
        Ok((bits, star))
    }
}

impl FromStr for Schedule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Schedule, ParseError> {
        let s = s.trim();
        let expanded = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(ParseError(format!("unrecognized descriptor: {s}"))),
            _ => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ParseError(format!("expected exactly 5 fields, found {}: {s}", fields.len())));
        };
        let (minutes, _) = MINUTE.parse(minute)?;
        let (hours, _) = HOUR.parse(hour)?;
        let (days_of_month, dom_star) = DOM.parse(dom)?;
        let (months, _) = MONTH.parse(month)?;
        let (days_of_week, dow_star) = DOW.parse(dow)?;
        Ok(Schedule { minutes, hours, days_of_month, months, days_of_week, dom_star, dow_star })
    }
}

fn has(bits: u64, v: i8) -> bool {
    v >= 0 && bits & (1 << v) != 0
}

impl Schedule {
    fn day_matches(&self, d: Date) -> bool {
        let dom = has(self.days_of_month, d.day());
        let dow = has(self.days_of_week, d.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star { dom && dow } else { dom || dow }
    }

    /// The first wall-clock minute at or after `dt` (a whole minute) that matches, within five
    /// years.
    fn next_civil(&self, mut dt: DateTime) -> Option<DateTime> {
        let limit = dt.year().saturating_add(5);
        while dt.year() <= limit {
            let date = dt.date();
            if !has(self.months, date.month()) {
                dt = date.last_of_month().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight());
            } else if !self.day_matches(date) {
                dt = date.tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight());
            } else if !has(self.hours, dt.hour()) {
                dt = dt.checked_add((60 - i64::from(dt.minute())).minutes()).ok()?;
            } else if !has(self.minutes, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
            } else {
                return Some(dt);
            }
        }
        None
    }
}

/// Pure: the first time strictly after `t` that `schedule` matches in `tz`, or `None` if it
/// matches nothing in the next five years (`0 0 30 2 *`).
pub fn next_schedule_after(schedule: &Schedule, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
    let local = t.to_zoned(tz.clone()).datetime();
    let minute = local.with().second(0).subsec_nanosecond(0).build().ok()?;
    let mut candidate = minute.checked_add(1.minute()).ok()?;
    // A few rounds at most: a wall-clock time can map to an instant not after `t` only around
    // a clock change.
    for _ in 0..1000 {
        let civil = schedule.next_civil(candidate)?;
        let at = tz.to_ambiguous_zoned(civil).compatible().ok()?.timestamp();
        if at > t {
            return Some(at);
        }
        candidate = civil.checked_add(1.minute()).ok()?;
    }
    None
}

/// How many schedule times went by unmet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    /// More than 100: upstream's warning territory (a wrong clock, or a long outage).
    Many,
}

/// The last schedule time in (`earliest`, `now`], and how many went by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmet {
    pub most_recent: Option<Timestamp>,
    pub missed: Missed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the schedule matches no time in the next five years")]
pub struct NeverMatches;

/// Pure: the latest schedule time after `earliest` and not after `now`. The count stops at
/// 101; past that the latest time is found by searching back from `now`.
pub fn most_recent_unmet(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Result<Unmet, NeverMatches> {
    let first = next_schedule_after(schedule, tz, earliest).ok_or(NeverMatches)?;
    if first > now {
        return Ok(Unmet { most_recent: None, missed: Missed::None });
    }
    let mut last = first;
    let mut count = 1;
    while count <= 100 {
        match next_schedule_after(schedule, tz, last) {
            Some(t) if t <= now => {
                last = t;
                count += 1;
            }
            _ => return Ok(Unmet { most_recent: Some(last), missed: Missed::Few }),
        }
    }
    // Many missed: look back from now over growing windows for the latest one.
    let mut window = Duration::from_secs(3600);
    loop {
        let from = now - window;
        if from <= last {
            break;
        }
        if let Some(t) = next_schedule_after(schedule, tz, from).filter(|t| *t <= now) {
            last = t;
            break;
        }
        window = window.saturating_mul(4);
    }
    while let Some(t) = next_schedule_after(schedule, tz, last).filter(|t| *t <= now) {
        last = t;
    }
    Ok(Unmet { most_recent: Some(last), missed: Missed::Many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn next(schedule: &str, tz: &str, t: &str) -> Option<String> {
        let s: Schedule = schedule.parse().expect("schedule");
        let tz = if tz == "UTC" { TimeZone::UTC } else { TimeZone::get(tz).expect("zone") };
        next_schedule_after(&s, &tz, at(t)).map(|t| t.to_string())
    }

    #[test]
    fn next_times_follow_the_fields_in_utc() {
        let table = [
            ("* * * * *", "2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z"),
            ("* * * * *", "2026-01-01T10:00:30.5Z", "2026-01-01T10:01:00Z"),
            ("*/15 * * * *", "2026-01-01T10:01:00Z", "2026-01-01T10:15:00Z"),
            ("5/20 * * * *", "2026-01-01T10:30:00Z", "2026-01-01T10:45:00Z"),
            ("0 9-17/4 * * *", "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z"),
            ("30 6 * * *", "2026-01-01T07:00:00Z", "2026-01-02T06:30:00Z"),
            ("0 0 1 * *", "2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z"),
            ("0 0 31 * *", "2026-02-01T00:00:00Z", "2026-03-31T00:00:00Z"),
            ("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("0 12 * JAN,jul MON-FRI", "2026-01-30T13:00:00Z", "2026-07-01T12:00:00Z"),
            ("0 0 * * sun", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
            ("0 0 13 * 5", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
            ("0 0 13 * ?", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00Z"),
            ("0 0 */2 * 1", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"),
            ("@hourly", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
            ("@daily", "2026-01-01T10:00:00Z", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-01T10:00:00Z", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-01-01T10:00:00Z", "2026-02-01T00:00:00Z"),
            ("@yearly", "2026-01-01T10:00:00Z", "2027-01-01T00:00:00Z"),
            ("@annually", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"),
        ];
        for (schedule, t, want) in table {
            assert_eq!(next(schedule, "UTC", t).as_deref(), Some(want), "{schedule} after {t}");
        }
        assert_eq!(next("0 0 30 2 *", "UTC", "2026-01-01T00:00:00Z"), None, "February 30th never comes");
    }

    #[test]
    fn next_times_follow_the_wall_clock_of_the_time_zone() {
        let table = [
            ("0 9 * * *", "Europe/Berlin", "2026-01-01T00:00:00Z", "2026-01-01T08:00:00Z"),
            ("0 9 * * *", "Europe/Berlin", "2026-07-01T00:00:00Z", "2026-07-01T07:00:00Z"),
            ("0 9 * * *", "America/New_York", "2026-01-01T00:00:00Z", "2026-01-01T14:00:00Z"),
            // 02:30 does not exist on 2026-03-08 in New York: it runs at 03:30 EDT.
            ("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z", "2026-03-08T07:30:00Z"),
            // 01:30 happens twice on 2026-11-01: once is enough.
            ("30 1 * * *", "America/New_York", "2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z"),
            ("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"),
        ];
        for (schedule, tz, t, want) in table {
            assert_eq!(next(schedule, tz, t).as_deref(), Some(want), "{schedule} in {tz} after {t}");
        }
    }

    #[test]
    fn malformed_schedules_say_what_is_wrong() {
        let table = [
            ("* * * *", "expected exactly 5 fields, found 4: * * * *"),
            ("0 0 * * * *", "expected exactly 5 fields, found 6: 0 0 * * * *"),
            ("60 * * * *", "end of range (60) above maximum (59)"),
            ("* * 0 * *", "beginning of range (0) below minimum (1)"),
            ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
            ("*/0 * * * *", "step of range should be a positive number: */0"),
            ("x * * * *", "failed to parse int from x"),
            ("* * * * 7", "end of range (7) above maximum (6)"),
            ("* * * FOO *", "failed to parse int from FOO"),
            ("@every 5m", "unrecognized descriptor: @every 5m"),
            ("@reboot", "unrecognized descriptor: @reboot"),
        ];
        for (schedule, want) in table {
            assert_eq!(schedule.parse::<Schedule>().map(|_| ()), Err(ParseError(want.into())), "{schedule}");
        }
    }

    #[test]
    fn the_most_recent_unmet_time_is_found_and_missed_times_counted() {
        let every_minute: Schedule = "* * * * *".parse().expect("schedule");
        let utc = TimeZone::UTC;
        let now = at("2026-01-01T10:05:30Z");
        assert_eq!(
            most_recent_unmet(&every_minute, &utc, at("2026-01-01T10:05:00Z"), now),
            Ok(Unmet { most_recent: None, missed: Missed::None })
        );
        assert_eq!(
            most_recent_unmet(&every_minute, &utc, at("2026-01-01T10:04:10Z"), now),
            Ok(Unmet { most_recent: Some(at("2026-01-01T10:05:00Z")), missed: Missed::Few })
        );
        assert_eq!(
            most_recent_unmet(&every_minute, &utc, at("2026-01-01T08:00:00Z"), now),
            Ok(Unmet { most_recent: Some(at("2026-01-01T10:05:00Z")), missed: Missed::Many })
        );
        let weekdays: Schedule = "0 9-17 * * 1-5".parse().expect("schedule");
        let monday_early = at("2026-01-05T08:00:00Z");
        assert_eq!(
            most_recent_unmet(&weekdays, &utc, at("2025-11-01T00:00:00Z"), monday_early),
            Ok(Unmet { most_recent: Some(at("2026-01-02T17:00:00Z")), missed: Missed::Many }),
            "the weekend gap is searched across"
        );
        let never: Schedule = "0 0 31 2 *".parse().expect("schedule");
        assert_eq!(most_recent_unmet(&never, &utc, at("2026-01-01T00:00:00Z"), now), Err(NeverMatches));
    }
}
