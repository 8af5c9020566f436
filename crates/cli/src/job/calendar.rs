//! systemd calendar expressions (`OnCalendar=`, see `man systemd.time`),
//! so a job's `schedule` means the same to cairn as to the timer that runs
//! it: `cairn schedule status` and `cairn run --if-due` (under cron, which
//! has no calendar of its own) compute its occurrences with
//! [`Calendar::next_after`].
//!
//! Supported: the shorthands (`minutely`, `hourly`, `daily`, `weekly`,
//! `monthly`, `quarterly`, `semiannually`, `yearly`/`annually`) and
//! `[WEEKDAYS] [[YYYY-]MM-DD] [HH:MM[:SS]]`, each number field being `*`,
//! a value, a range `a..b`, a repetition `a/n` or `a..b/n`, or a list of
//! those (`1,15`); weekdays are names (`Mon`, `monday`), ranges
//! (`Mon..Fri`, `Mon-Fri`) and lists (`Sat,Sun`). A missing date is every
//! day, a missing time midnight, missing seconds `:00`. Not supported
//! (refused with an error, never misread): time zones, `~` (days from a
//! month's end) and fractional seconds.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// An example shown in every parse error.
const EXAMPLE: &str = "valid examples: daily, \"Mon..Fri *-*-* 02:30\", \"*-*-01 03:00\", \"*:0/15\"";

/// Years a calendar can name: systemd's range.
const YEARS: (u32, u32) = (1970, 2199);

/// How far [`Calendar::next_after`] looks: the Gregorian calendar repeats
/// every 400 years (weekdays included), so a date pattern that has no
/// occurrence within 400 years has none at all (`*-02-30`).
const SEARCH_YEARS: i16 = 400;

/// A parsed calendar expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    spec: String,
    /// Bit `d` for weekday `d`, Monday = 0.
    weekdays: u64,
    /// Sorted years, or `None` for any year.
    years: Option<Vec<i16>>,
    /// Bit `m` for month `m` (1..=12).
    months: u64,
    /// Bit `d` for day `d` (1..=31).
    days: u64,
    /// Bit `h` for hour `h` (0..=23).
    hours: u64,
    /// Bit `m` for minute `m` (0..=59).
    minutes: u64,
    /// Bit `s` for second `s` (0..=59).
    seconds: u64,
}

impl Calendar {
    /// Parses a calendar expression; the error says what is wrong and shows
    /// a valid example.
    pub fn parse(spec: &str) -> Result<Calendar, String> {
        parse(spec.trim()).map_err(|problem| format!("calendar {spec:?}: {problem} ({EXAMPLE})"))
    }

    /// The expression as written, for `OnCalendar=`.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The first occurrence strictly after `after`, in time zone `tz`, or
    /// `None` if there is none (a date that does not exist, a year passed).
    ///
    /// Walks days (skipping whole years and months that cannot match),
    /// then the day's matching times. Times are whole seconds in local
    /// time, as systemd's are: a time that a DST change skips happens at
    /// the same offset from midnight after the change (02:30 becomes 03:30),
    /// and a time that it repeats happens the first time only.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after.checked_add(jiff::SignedDuration::from_secs(1)).ok()?);
        let limit = start.year().saturating_add(SEARCH_YEARS);
        let mut date = start.date();
        let mut from = (start.hour() as u32, start.minute() as u32, start.second() as u32);
        loop {
            if date.year() > limit {
                return None;
            }
            if let Some(years) = &self.years {
                if !years.contains(&date.year()) {
                    let next = years.iter().find(|&&y| y > date.year())?;
                    date = Date::new(*next, 1, 1).ok()?;
                    from = (0, 0, 0);
                    continue;
                }
            }
            if !has(self.months, date.month() as u32) {
                date = first_of_next_month(date)?;
                from = (0, 0, 0);
                continue;
            }
            let weekday = date.weekday().to_monday_zero_offset() as u32;
            if has(self.days, date.day() as u32) && has(self.weekdays, weekday) {
                if let Some(found) = self.first_time_on(date, from, after, tz) {
                    return Some(found);
                }
            }
            date = date.tomorrow().ok()?;
            from = (0, 0, 0);
        }
    }

    /// The first matching time of `date` at or after `from` (hour, minute,
    /// second) that is an instant after `after`.
    fn first_time_on(&self, date: Date, from: (u32, u32, u32), after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        for hour in bits(self.hours).filter(|&h| h >= from.0) {
            let minute_from = if hour == from.0 { from.1 } else { 0 };
            for minute in bits(self.minutes).filter(|&m| m >= minute_from) {
                let second_from = if hour == from.0 && minute == from.1 { from.2 } else { 0 };
                for second in bits(self.seconds).filter(|&s| s >= second_from) {
                    let time = Time::new(hour as i8, minute as i8, second as i8, 0).ok()?;
                    let local = DateTime::from_parts(date, time);
                    // `compatible`: a skipped time moves forward by the
                    // gap, a repeated one is its first instant.
                    let instant = tz.to_ambiguous_timestamp(local).compatible().ok()?;
                    if instant > after {
                        return Some(instant);
                    }
                }
            }
        }
        None
    }
}

/// Due when an occurrence of `calendar` has passed since `last` (never
/// run: due).
pub fn is_due(calendar: &Calendar, last: Option<Timestamp>, now: Timestamp, tz: &TimeZone) -> bool {
    match last {
        None => true,
        Some(last) => calendar.next_after(last, tz).is_some_and(|next| next <= now),
    }
}

fn has(mask: u64, value: u32) -> bool {
    value < 64 && mask & (1 << value) != 0
}

/// The values set in `mask`, in increasing order.
fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |&b| mask & (1 << b) != 0)
}

fn first_of_next_month(date: Date) -> Option<Date> {
    if date.month() == 12 {
        Date::new(date.year().checked_add(1)?, 1, 1).ok()
    } else {
        Date::new(date.year(), date.month() + 1, 1).ok()
    }
}

/// What a shorthand stands for (systemd's normalized forms).
fn shorthand(word: &str) -> Option<&'static str> {
    Some(match word {
        "minutely" => "*-*-* *:*:00",
        "hourly" => "*-*-* *:00:00",
        "daily" => "*-*-* 00:00:00",
        "weekly" => "Mon *-*-* 00:00:00",
        "monthly" => "*-*-01 00:00:00",
        "quarterly" => "*-01,04,07,10-01 00:00:00",
        "semiannually" => "*-01,07-01 00:00:00",
        "yearly" | "annually" => "*-01-01 00:00:00",
        _ => return None,
    })
}

fn parse(spec: &str) -> Result<Calendar, String> {
    if spec.is_empty() {
        return Err("it is empty".into());
    }
    let lower = spec.to_ascii_lowercase();
    let expanded = shorthand(&lower).unwrap_or(spec);
    let mut calendar = Calendar {
        spec: spec.to_owned(),
        weekdays: 0x7f,
        years: None,
        months: range_mask(1, 12),
        days: range_mask(1, 31),
        hours: 1,
        minutes: 1,
        seconds: 1,
    };
    let mut words = expanded.split_whitespace().peekable();
    if let Some(first) = words.peek() {
        if first.starts_with(|c: char| c.is_ascii_alphabetic()) {
            calendar.weekdays = weekdays(first)?;
            words.next();
        }
    }
    let (mut date, mut time) = (None, None);
    for word in words {
        if word.contains(':') && time.is_none() {
            time = Some(word);
        } else if word.contains('-') && date.is_none() && time.is_none() {
            date = Some(word);
        } else if word.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(format!("{word:?} is not a weekday, and time zones are not supported"));
        } else {
            return Err(format!("{word:?} is neither a date (YYYY-MM-DD) nor a time (HH:MM[:SS]) in its place"));
        }
    }
    if let Some(date) = date {
        if date.contains('~') {
            return Err("`~` (days counted from the month's end) is not supported".into());
        }
        let parts: Vec<&str> = date.split('-').collect();
        let (year, month, day) = match parts.as_slice() {
            [y, m, d] => (Some(*y), *m, *d),
            [m, d] => (None, *m, *d),
            _ => return Err(format!("date {date:?} is not YYYY-MM-DD or MM-DD")),
        };
        if let Some(year) = year.filter(|y| *y != "*") {
            let mut years = Vec::new();
            for item in year.split(',') {
                years.extend(values(item, "year", YEARS)?);
            }
            years.sort_unstable();
            years.dedup();
            calendar.years = Some(years.into_iter().map(|y| y as i16).collect());
        }
        calendar.months = mask(month, "month", (1, 12))?;
        calendar.days = mask(day, "day", (1, 31))?;
    }
    if let Some(time) = time {
        if time.replace("..", "").contains('.') {
            return Err("fractional seconds are not supported".into());
        }
        let parts: Vec<&str> = time.split(':').collect();
        let (hour, minute, second) = match parts.as_slice() {
            [h, m] => (*h, *m, "00"),
            [h, m, s] => (*h, *m, *s),
            _ => return Err(format!("time {time:?} is not HH:MM or HH:MM:SS")),
        };
        calendar.hours = mask(hour, "hour", (0, 23))?;
        calendar.minutes = mask(minute, "minute", (0, 59))?;
        calendar.seconds = mask(second, "second", (0, 59))?;
    }
    Ok(calendar)
}

fn range_mask(low: u32, high: u32) -> u64 {
    (low..=high).fold(0, |m, v| m | 1 << v)
}

/// A field's values as a bit mask.
fn mask(field: &str, what: &str, bounds: (u32, u32)) -> Result<u64, String> {
    let mut mask = 0;
    for item in field.split(',') {
        for v in values(item, what, bounds)? {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

/// One item of a list: `*`, `a`, `a..b`, `a/n`, `a..b/n` or `*/n`.
fn values(item: &str, what: &str, (low, high): (u32, u32)) -> Result<Vec<u32>, String> {
    let number = |text: &str| -> Result<u32, String> {
        let n: u32 = text.parse().map_err(|_| format!("{what} {text:?} is not a number, `*` or a range a..b"))?;
        if n < low || n > high {
            return Err(format!("{what} {n} is out of range {low}..{high}"));
        }
        Ok(n)
    };
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let n: u32 = step.parse().map_err(|_| format!("repetition {step:?} of {what} is not a number"))?;
            if n == 0 {
                return Err(format!("repetition /0 of {what}: it must be at least 1"));
            }
            (range, n)
        }
        None => (item, 1),
    };
    let (first, last) = if range == "*" {
        (low, high)
    } else if let Some((a, b)) = range.split_once("..") {
        let (a, b) = (number(a)?, number(b)?);
        if a > b {
            return Err(format!("{what} range {a}..{b} is backwards"));
        }
        (a, b)
    } else {
        // `a/n` repeats up to the field's end.
        let a = number(range)?;
        (a, if step > 1 || item.contains('/') { high } else { a })
    };
    Ok((first..=last).step_by(step as usize).collect())
}

/// Weekdays: names, ranges (`Mon..Fri`, `Mon-Fri`) and lists.
fn weekdays(word: &str) -> Result<u64, String> {
    const NAMES: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let day = |name: &str| -> Result<u32, String> {
        let lower = name.to_ascii_lowercase();
        NAMES
            .iter()
            .position(|full| lower.len() >= 3 && full.starts_with(&lower) && (lower.len() == 3 || lower == **full))
            .map(|i| i as u32)
            .ok_or_else(|| format!("{name:?} is not a weekday (Mon, Tue, ..., or the full name)"))
    };
    let mut mask = 0;
    for item in word.split(',') {
        let range = item.split_once("..").or_else(|| item.split_once('-'));
        let (a, b) = match range {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(item)?, day(item)?),
        };
        if a > b {
            return Err(format!("weekday range {item:?} is backwards (weeks start on Monday)"));
        }
        mask |= (a..=b).fold(0, |m, d| m | 1 << d);
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Expression, base time, the next three occurrences (UTC).
    #[test]
    fn next_occurrences() {
        let table: &[(&str, &str, [&str; 3])] = &[
            ("daily", "2024-01-15T12:00:00Z", ["2024-01-16T00:00:00Z", "2024-01-17T00:00:00Z", "2024-01-18T00:00:00Z"]),
            (
                "hourly",
                "2024-01-15T12:00:00Z",
                ["2024-01-15T13:00:00Z", "2024-01-15T14:00:00Z", "2024-01-15T15:00:00Z"],
            ),
            (
                "minutely",
                "2024-01-15T12:00:30Z",
                ["2024-01-15T12:01:00Z", "2024-01-15T12:02:00Z", "2024-01-15T12:03:00Z"],
            ),
            (
                "weekly",
                "2024-01-15T00:00:00Z",
                ["2024-01-22T00:00:00Z", "2024-01-29T00:00:00Z", "2024-02-05T00:00:00Z"],
            ),
            (
                "monthly",
                "2024-01-31T23:59:59Z",
                ["2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"],
            ),
            (
                "quarterly",
                "2024-01-15T00:00:00Z",
                ["2024-04-01T00:00:00Z", "2024-07-01T00:00:00Z", "2024-10-01T00:00:00Z"],
            ),
            (
                "semiannually",
                "2024-01-15T00:00:00Z",
                ["2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-07-01T00:00:00Z"],
            ),
            (
                "Yearly",
                "2024-01-15T00:00:00Z",
                ["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            ("02:30", "2024-01-15T02:30:00Z", ["2024-01-16T02:30:00Z", "2024-01-17T02:30:00Z", "2024-01-18T02:30:00Z"]),
            // Friday evening: the next weekdays are Monday's.
            (
                "Mon..Fri *-*-* 02:30",
                "2024-01-19T03:00:00Z",
                ["2024-01-22T02:30:00Z", "2024-01-23T02:30:00Z", "2024-01-24T02:30:00Z"],
            ),
            (
                "Sat,Sun 10:00",
                "2024-01-15T12:00:00Z",
                ["2024-01-20T10:00:00Z", "2024-01-21T10:00:00Z", "2024-01-27T10:00:00Z"],
            ),
            (
                "*:0/15",
                "2024-01-15T12:00:00Z",
                ["2024-01-15T12:15:00Z", "2024-01-15T12:30:00Z", "2024-01-15T12:45:00Z"],
            ),
            (
                "*-*-31",
                "2024-01-15T12:00:00Z",
                ["2024-01-31T00:00:00Z", "2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z"],
            ),
            (
                "*-02-29 12:00",
                "2024-03-01T00:00:00Z",
                ["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z", "2036-02-29T12:00:00Z"],
            ),
            (
                "*-1/5-1 3:4:5",
                "2024-01-15T00:00:00Z",
                ["2024-06-01T03:04:05Z", "2024-11-01T03:04:05Z", "2025-01-01T03:04:05Z"],
            ),
            ("2025,2027-01-01", "2024-01-15T00:00:00Z", ["2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z", ""]),
            (
                "*-*-* 8..10:00/30",
                "2024-01-15T09:45:00Z",
                ["2024-01-15T10:00:00Z", "2024-01-15T10:30:00Z", "2024-01-16T08:00:00Z"],
            ),
            ("*-02-30", "2024-01-15T00:00:00Z", ["", "", ""]),
        ];
        for (spec, base, expected) in table {
            let calendar = Calendar::parse(spec).unwrap_or_else(|e| panic!("{e}"));
            let mut t = at(base);
            for want in expected {
                let got = calendar.next_after(t, &TimeZone::UTC);
                if want.is_empty() {
                    assert_eq!(got, None, "{spec} after {t}");
                    break;
                }
                assert_eq!(got, Some(at(want)), "{spec} after {t}");
                t = at(want);
            }
        }
    }

    #[test]
    fn local_time_and_dst() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let calendar = Calendar::parse("02:30").unwrap();
        // 2024-03-31 skips 02:00..03:00 in Berlin: that night's run is at 03:30 CEST.
        assert_eq!(calendar.next_after(at("2024-03-30T12:00:00Z"), &berlin), Some(at("2024-03-31T01:30:00Z")));
        // An ordinary night: 02:30 CET is 01:30 UTC.
        assert_eq!(calendar.next_after(at("2024-01-15T12:00:00Z"), &berlin), Some(at("2024-01-16T01:30:00Z")));
    }

    #[test]
    fn due() {
        let daily = Calendar::parse("daily").unwrap();
        let tz = TimeZone::UTC;
        let now = at("2024-01-15T12:00:00Z");
        assert!(is_due(&daily, None, now, &tz), "never run");
        assert!(!is_due(&daily, Some(at("2024-01-15T00:10:00Z")), now, &tz), "ran after midnight");
        assert!(is_due(&daily, Some(at("2024-01-14T23:50:00Z")), now, &tz), "midnight passed since");
        assert!(!is_due(&Calendar::parse("*-02-30").unwrap(), Some(now), now, &tz), "never occurs");
    }

    /// Each mistake, and words its error must contain.
    #[test]
    fn mistakes_are_named() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("25:00", "hour 25 is out of range 0..23"),
            ("*-13-01", "month 13"),
            ("Mon..Fry", "\"Fry\" is not a weekday"),
            ("Fri..Mon", "backwards"),
            ("*:0/0", "at least 1"),
            ("*-*-* 00:00 Europe/Berlin", "time zones are not supported"),
            ("*-*~03", "`~`"),
            ("12:00:00.5", "fractional"),
            ("noon", "not a weekday"),
            ("1-2-3-4", "not YYYY-MM-DD"),
            ("1969-01-01", "year 1969 is out of range"),
            ("*-*-* 10..8:00", "backwards"),
        ];
        for (spec, expected) in table {
            let err = Calendar::parse(spec).unwrap_err();
            assert!(err.contains(expected) && err.contains("valid examples"), "{spec}: {err}");
        }
    }

    #[test]
    fn spec_is_as_written() {
        assert_eq!(Calendar::parse(" Mon..Fri 02:30 ").unwrap().spec(), "Mon..Fri 02:30");
        assert_eq!(Calendar::parse("Mon-Fri 02:30").unwrap(), {
            let mut c = Calendar::parse("Mon..Fri *-*-* 02:30:00").unwrap();
            c.spec = "Mon-Fri 02:30".into();
            c
        });
    }

    /// `systemd-analyze calendar` agrees, where it is installed.
    #[test]
    fn agrees_with_systemd() {
        let exprs = [
            "daily",
            "hourly",
            "weekly",
            "monthly",
            "quarterly",
            "semiannually",
            "yearly",
            "02:30",
            "Mon..Fri *-*-* 02:30",
            "Sat,Sun 10:00",
            "*:0/15",
            "*-*-31",
            "*-02-29 12:00",
            "*-1/5-1 3:4:5",
            "2025..2027-*-10 00/7:00",
            "Mon-Wed,Fri *-*-1..7 23:59:59",
        ];
        let base = "2024-01-15 12:00:00 UTC";
        for expr in exprs {
            let output = std::process::Command::new("systemd-analyze")
                .args(["calendar", "--iterations=5", &format!("--base-time={base}"), expr])
                .env("TZ", "UTC")
                .output();
            let output = match output {
                Ok(o) => o,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("note: no systemd-analyze here; not comparing with systemd");
                    return;
                }
                Err(e) => panic!("systemd-analyze: {e}"),
            };
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{expr}: {text}{}", String::from_utf8_lossy(&output.stderr));
            let systemd: Vec<Timestamp> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Next elapse:").or_else(|| l.trim().strip_prefix("Iter. #")))
                .map(|l| {
                    // "Mon 2024-01-15 12:15:00 UTC", after "Iter. #2:" for the later ones.
                    let l = l.split_once(':').filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit())).map_or(l, |p| p.1);
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    format!("{}T{}Z", fields[1], fields[2]).parse().unwrap()
                })
                .collect();
            assert_eq!(systemd.len(), 5, "{expr}: {text}");
            let calendar = Calendar::parse(expr).unwrap();
            let mut t: Timestamp = "2024-01-15T12:00:00Z".parse().unwrap();
            let mut ours = Vec::new();
            for _ in 0..5 {
                t = calendar.next_after(t, &TimeZone::UTC).unwrap();
                ours.push(t);
            }
            assert_eq!(ours, systemd, "{expr}");
        }
    }
}
