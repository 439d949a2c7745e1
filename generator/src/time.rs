//! UTC civil time without a date crate: epoch milliseconds to and from RFC 3339.
//!
//! Every timestamp the generator writes goes through [`format_rfc3339`], so it is the one place that decides
//! what "millisecond precision" and "offset converted correctly" mean. The conversion between days since the
//! epoch and a (year, month, day) uses Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms
//! (proleptic Gregorian calendar), which are exact for every year we accept.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail, ensure};

/// Milliseconds since 1970-01-01T00:00:00Z. Every event time in the generator is one of these.
pub type EpochMillis = i64;

const MS_PER_DAY: i64 = 86_400_000;

/// The years we parse. RFC 3339 has four-digit years, and nothing before the epoch is useful here.
pub const YEARS: std::ops::RangeInclusive<i64> = 1970..=9999;

/// Event times the host accepts as valid (`host/src/event.rs`): from 2000-01-01 up to, not including,
/// 2100-01-01. Outside it a timestamp is out of range and the event goes to the dead-letter topic, so every
/// valid event the generator makes falls inside.
pub const VALID_EVENT_TIMES: std::ops::Range<EpochMillis> = 946_684_800_000..4_102_444_800_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day counted from 1970-01-01; the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Appends `instant` as RFC 3339 with milliseconds, as seen from `offset_minutes` east of UTC: `Z` for an
/// offset of `None`, `+02:00`-style otherwise. Both forms denote the same instant.
pub fn write_rfc3339(out: &mut String, instant: EpochMillis, offset_minutes: Option<i32>) {
    let local = instant + i64::from(offset_minutes.unwrap_or(0)) * 60_000;
    let (year, month, day) = civil_from_days(local.div_euclid(MS_PER_DAY));
    let ms_of_day = local.rem_euclid(MS_PER_DAY);
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    // Writing into a String cannot fail.
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}");
    match offset_minutes {
        None => out.push('Z'),
        Some(offset) => {
            let sign = if offset < 0 { '-' } else { '+' };
            let offset = offset.unsigned_abs();
            let _ = write!(out, "{sign}{:02}:{:02}", offset / 60, offset % 60);
        }
    }
}

/// `instant` as `2026-11-29T10:00:00.123Z`.
pub fn format_rfc3339(instant: EpochMillis) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(&mut out, instant, None);
    out
}

/// Parses an RFC 3339 date-time (`2026-11-29T10:00:00Z`, `2026-11-29T12:00:00.5+02:00`) to epoch milliseconds.
/// Digits beyond milliseconds are truncated. Strict: an offset is required, and the date must exist.
pub fn parse_rfc3339(text: &str) -> Result<EpochMillis> {
    parse_strict(text.as_bytes()).with_context(|| format!("`{text}` is not an RFC 3339 date-time"))
}

fn parse_strict(s: &[u8]) -> Result<EpochMillis> {
    fn digits(s: &[u8], at: usize, len: usize) -> Result<i64> {
        let field = s.get(at..at + len).context("too short")?;
        ensure!(field.iter().all(u8::is_ascii_digit), "expected {len} digits at byte {at}");
        Ok(field.iter().fold(0, |acc, digit| acc * 10 + i64::from(digit - b'0')))
    }
    fn expect(s: &[u8], at: usize, allowed: &[u8]) -> Result<()> {
        match s.get(at) {
            Some(byte) if allowed.contains(byte) => Ok(()),
            _ => bail!("expected one of {:?} at byte {at}", String::from_utf8_lossy(allowed)),
        }
    }
    let year = digits(s, 0, 4)?;
    expect(s, 4, b"-")?;
    let month = digits(s, 5, 2)? as u32;
    expect(s, 7, b"-")?;
    let day = digits(s, 8, 2)? as u32;
    expect(s, 10, b"Tt ")?;
    let hour = digits(s, 11, 2)?;
    expect(s, 13, b":")?;
    let minute = digits(s, 14, 2)?;
    expect(s, 16, b":")?;
    let second = digits(s, 17, 2)?;
    ensure!(YEARS.contains(&year), "year {year} is outside {YEARS:?}");
    ensure!((1..=12).contains(&month), "month {month} does not exist");
    ensure!(day >= 1 && day <= days_in_month(year, month), "day {day} does not exist in {year}-{month:02}");
    ensure!(hour < 24 && minute < 60 && second < 60, "time of day out of range");

    let mut at = 19;
    let mut milli = 0;
    if s.get(at) == Some(&b'.') {
        let fraction = s[at + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        ensure!(fraction > 0, "a '.' must be followed by digits");
        for (place, digit) in s[at + 1..at + 1 + fraction.min(3)].iter().enumerate() {
            milli += i64::from(digit - b'0') * [100, 10, 1][place];
        }
        at += 1 + fraction;
    }
    let offset_minutes = match s.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let hours = digits(s, at + 1, 2)?;
            expect(s, at + 3, b":")?;
            let minutes = digits(s, at + 4, 2)?;
            ensure!(hours < 24 && minutes < 60, "offset out of range");
            at += 6;
            if *sign == b'-' { -(hours * 60 + minutes) } else { hours * 60 + minutes }
        }
        _ => bail!("missing offset (`Z` or `+hh:mm`)"),
    };
    ensure!(at == s.len(), "unexpected text after the offset");
    let local = days_from_civil(year, month, day) * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + milli;
    Ok(local - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_over_the_accepted_years() {
        let first = days_from_civil(*YEARS.start(), 1, 1);
        let last = days_from_civil(*YEARS.end(), 12, 31);
        assert_eq!(first, 0);
        let mut expected = civil_from_days(first);
        for days in first..=last {
            let civil = civil_from_days(days);
            assert_eq!(civil, expected, "day {days}");
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), days);
            expected = if civil.2 < days_in_month(civil.0, civil.1) {
                (civil.0, civil.1, civil.2 + 1)
            } else if civil.1 < 12 {
                (civil.0, civil.1 + 1, 1)
            } else {
                (civil.0 + 1, 1, 1)
            };
        }
    }

    #[test]
    fn the_valid_event_times_are_this_century() {
        assert_eq!(VALID_EVENT_TIMES.start, days_from_civil(2000, 1, 1) * MS_PER_DAY);
        assert_eq!(VALID_EVENT_TIMES.end, days_from_civil(2100, 1, 1) * MS_PER_DAY);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        // date -u -d 2026-11-29T10:00:00Z +%s → 1795946400
        assert_eq!(format_rfc3339(1_795_946_400_123), "2026-11-29T10:00:00.123Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        let mut shifted = String::new();
        write_rfc3339(&mut shifted, 1_795_946_400_123, Some(120));
        assert_eq!(shifted, "2026-11-29T12:00:00.123+02:00");
        shifted.clear();
        write_rfc3339(&mut shifted, 1_795_946_400_123, Some(-(11 * 60 + 30)));
        assert_eq!(shifted, "2026-11-28T22:30:00.123-11:30");
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for instant in [0, 1_795_946_400_123, 951_782_400_999, 253_402_127_999_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(instant)).unwrap(), instant);
            for offset in [-720, -330, 0, 60, 345, 840] {
                let mut text = String::new();
                write_rfc3339(&mut text, instant + 86_400_000, Some(offset));
                assert_eq!(parse_rfc3339(&text).unwrap(), instant + 86_400_000, "{text}");
            }
        }
        assert_eq!(parse_rfc3339("2026-11-29T10:00:00Z").unwrap(), 1_795_946_400_000);
        assert_eq!(parse_rfc3339("2026-11-29t10:00:00.5z").unwrap(), 1_795_946_400_500);
        assert_eq!(parse_rfc3339("2026-11-29T10:00:00.123456789Z").unwrap(), 1_795_946_400_123);
        assert_eq!(parse_rfc3339("2026-11-29T12:00:00+02:00").unwrap(), 1_795_946_400_000);
    }

    #[test]
    fn rejects_what_is_not_rfc_3339() {
        for bad in [
            "",
            "yesterday",
            "2026-11-29",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00Z",
            "2026-11-29T25:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-11-31T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-11-29T10:00:00.Z",
            "2026-11-29T10:00:00Zjunk",
            "2026-11-29T10:00:00+0200",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
