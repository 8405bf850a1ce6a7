//! When a schedule runs: a cron expression in a time zone (croner: POSIX/Vixie
//! semantics, five fields, `@daily` and the other nicknames), and the `-random`
//! nicknames, which spread schedules over the period by a stable offset taken
//! from the schedule's name (the same name runs at the same minute after every
//! restart, on every replica).

use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone)]
pub struct Timing {
    /// As written in the configuration.
    pub written: String,
    /// The five-field expression it runs by (a `-random` nickname resolved).
    pub expression: String,
    pub timezone: TimeZone,
    cron: Cron,
}

/// A number from the schedule's name, the same on every run of every build
/// (FNV-1a: std's hasher is not stable across releases).
fn stable_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A `-random` nickname as a five-field expression at the schedule's own offset.
fn resolve_random(name: &str, nickname: &str) -> Option<String> {
    let h = stable_hash(name);
    let minute = h % 60;
    let hour = (h / 60) % 24;
    let weekday = (h / 1440) % 7;
    let day = (h / 10080) % 28 + 1;
    Some(match nickname {
        "@hourly-random" => format!("{minute} * * * *"),
        "@daily-random" => format!("{minute} {hour} * * *"),
        "@weekly-random" => format!("{minute} {hour} * * {weekday}"),
        "@monthly-random" => format!("{minute} {hour} {day} * *"),
        _ => return None,
    })
}

impl Timing {
    pub fn parse(name: &str, written: &str, timezone: &str) -> Result<Timing, String> {
        let written = written.trim();
        let expression = match resolve_random(name, written) {
            Some(e) => e,
            None if written.starts_with('@') => written.to_string(),
            None => {
                let fields = written.split_whitespace().count();
                if !(5..=6).contains(&fields) {
                    return Err(format!(
                        "cron `{written}` has {fields} fields: write five (minute hour day-of-month month day-of-week) \
                         or six (seconds first), or @hourly, @daily, @weekly, @monthly, or their -random forms"
                    ));
                }
                written.to_string()
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&expression)
            .map_err(|e| format!("cron `{written}`: {e}"))?;
        let timezone = TimeZone::get(timezone).map_err(|_| {
            format!("time zone `{timezone}` is not known: write an IANA name such as UTC or Europe/Berlin")
        })?;
        Ok(Timing {
            written: written.to_string(),
            expression,
            timezone,
            cron,
        })
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.timezone.clone()), false)
            .ok()
            .map(|n| n.timestamp())
    }

    /// The runs after `after` up to and including `upto`: how many (counted up to
    /// `cap`) and the last of them.
    pub fn due(&self, after: Timestamp, upto: Timestamp, cap: u64) -> (u64, Option<Timestamp>) {
        let mut n = 0;
        let mut last = None;
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > upto {
                break;
            }
            n += 1;
            last = Some(next);
            t = next;
            if n == cap {
                // Too many to count one by one: the newest is the one that matters.
                last = self.last_at_or_before(upto).or(last);
                break;
            }
        }
        (n, last)
    }

    /// The newest run at or before `t`.
    fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_zoned(self.timezone.clone()), true)
            .ok()
            .map(|p| p.timestamp())
    }

    /// The longest gap between two runs from `from` on: what a staleness alert
    /// compares the newest success against. The runs of the next year are walked
    /// (at most 20,000 of them); for a schedule too dense for that, every hour
    /// boundary of the next 31 days is looked at too (a gap longer than an hour
    /// holds one), so that nights, weekends and month ends are found.
    pub fn expected_interval(&self, from: Timestamp) -> Duration {
        const YEAR: i64 = 366 * 86_400;
        let secs = |a: Timestamp, b: Timestamp| {
            Duration::try_from(b.duration_since(a)).unwrap_or_default()
        };
        let mut longest = Duration::ZERO;
        let Some(mut prev) = self.next_after(from) else {
            return longest;
        };
        let mut walked_a_year = false;
        for _ in 0..20_000 {
            let Some(next) = self.next_after(prev) else {
                walked_a_year = true;
                break;
            };
            longest = longest.max(secs(prev, next));
            prev = next;
            if next.as_second() - from.as_second() > YEAR {
                walked_a_year = true;
                break;
            }
        }
        if !walked_a_year {
            let start = from.as_second() - from.as_second().rem_euclid(3600);
            for h in 1..=31 * 24 {
                let Ok(boundary) = Timestamp::from_second(start + h * 3600) else {
                    break;
                };
                if let (Some(before), Some(after)) =
                    (self.last_at_or_before(boundary), self.next_after(boundary))
                {
                    longest = longest.max(secs(before, after));
                }
            }
        }
        longest
    }
}

/// A timestamp as the time of day in a zone (for messages and tables).
pub fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_in_a_time_zone() {
        let t = Timing::parse("x", "30 2 * * 1", "Europe/Berlin").unwrap();
        // Monday 2026-12-07 02:30 in Berlin is 01:30 UTC (winter).
        assert_eq!(
            t.next_after(ts("2026-12-06T12:00:00Z")),
            Some(ts("2026-12-07T01:30:00Z"))
        );
        // The longest gap over a year: the week in which the clocks go back.
        assert_eq!(
            t.expected_interval(ts("2026-12-06T12:00:00Z")).as_secs(),
            7 * 86_400 + 3600
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_vixie_cron() {
        // Both restricted: either matches (the 1st, or any Friday).
        let t = Timing::parse("x", "0 0 1 * 5", "UTC").unwrap();
        assert_eq!(
            t.next_after(ts("2026-12-01T00:00:00Z")),
            Some(ts("2026-12-04T00:00:00Z"))
        );
    }

    #[test]
    fn random_nicknames_are_stable_per_name_and_spread() {
        let a = Timing::parse("etcd", "@daily-random", "UTC").unwrap();
        let b = Timing::parse("etcd", "@daily-random", "UTC").unwrap();
        assert_eq!(a.expression, b.expression);
        let minutes: std::collections::HashSet<String> = (0..20)
            .map(|i| {
                Timing::parse(&format!("s{i}"), "@hourly-random", "UTC")
                    .unwrap()
                    .expression
            })
            .collect();
        assert!(minutes.len() > 10, "{minutes:?}");
        assert_eq!(
            a.expected_interval(ts("2026-12-06T12:00:00Z")).as_secs(),
            86_400
        );
    }

    #[test]
    fn a_dense_schedule_s_nights_and_weekends_are_its_expected_interval() {
        let from = ts("2026-12-07T10:00:00Z"); // a Monday
        let weekdays = Timing::parse("x", "*/5 * * * 1-5", "UTC").unwrap();
        // Friday 23:55 to Monday 00:00.
        assert_eq!(weekdays.expected_interval(from).as_secs(), 2 * 86_400 + 300);
        // Every second of office hours: too dense to walk past the first afternoon.
        let office = Timing::parse("x", "* * 9-17 * * *", "UTC").unwrap();
        // 17:59:59 to 09:00:00 the next day.
        assert_eq!(office.expected_interval(from).as_secs(), 15 * 3600 + 1);
        let seconds_on_weekdays = Timing::parse("x", "* * * * * 1-5", "UTC").unwrap();
        assert_eq!(
            seconds_on_weekdays.expected_interval(from).as_secs(),
            2 * 86_400 + 1
        );
    }

    #[test]
    fn runs_due_are_counted_and_the_last_named() {
        let t = Timing::parse("x", "0 * * * *", "UTC").unwrap();
        let (n, last) = t.due(ts("2026-12-07T00:30:00Z"), ts("2026-12-07T05:10:00Z"), 100);
        assert_eq!(n, 5);
        assert_eq!(last, Some(ts("2026-12-07T05:00:00Z")));
        let (n, last) = t.due(ts("2026-12-07T00:30:00Z"), ts("2026-12-07T05:10:00Z"), 2);
        assert_eq!(n, 2);
        assert_eq!(last, Some(ts("2026-12-07T05:00:00Z")));
        assert_eq!(
            t.due(ts("2026-12-07T00:30:00Z"), ts("2026-12-07T00:59:00Z"), 9)
                .0,
            0
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        assert!(Timing::parse("x", "0 * * *", "UTC")
            .unwrap_err()
            .contains("4 fields"));
        assert!(Timing::parse("x", "61 * * * *", "UTC")
            .unwrap_err()
            .contains("61 * * * *"));
        assert!(Timing::parse("x", "@daily", "Mars/Olympus")
            .unwrap_err()
            .contains("Mars/Olympus"));
    }
}
