//! Epoch-millisecond timestamps to and from RFC 3339 (UTC), by the days-from-civil algorithm
//! (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms"), so no date crate is needed.

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `ms` as `2026-11-29T10:00:00.000Z` (always UTC, always milliseconds).
pub fn write_rfc3339_millis(out: &mut String, ms: i64) {
    use std::fmt::Write;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z").expect("String writes cannot fail");
}

/// `ms` as an RFC 3339 string in UTC with milliseconds.
pub fn format_rfc3339_millis(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339_millis(&mut s, ms);
    s
}

/// Why a timestamp string could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    Syntax,
    /// Well-formed, but a field is out of range (month 13, hour 25, Feb 30...).
    Range,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeError::Syntax => "not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM))",
            TimeError::Range => "RFC 3339 timestamp with a field out of range",
        })
    }
}

impl std::error::Error for TimeError {}

fn digits(b: &[u8]) -> Result<u32, TimeError> {
    b.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() { Ok(acc * 10 + u32::from(c - b'0')) } else { Err(TimeError::Syntax) }
    })
}

/// Parses an RFC 3339 date-time with any offset into epoch milliseconds (UTC). Fractions of a
/// second beyond milliseconds are truncated. Leap seconds (`:60`) are rejected.
pub fn parse_rfc3339_millis(s: &str) -> Result<i64, TimeError> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(TimeError::Syntax);
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let mut rest = &b[19..];
    let mut millis = 0u32;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(TimeError::Syntax);
        }
        let frac = &rest[1..1 + n];
        for i in 0..3 {
            millis = millis * 10 + frac.get(i).map_or(0, |c| u32::from(c - b'0'));
        }
        rest = &rest[1 + n..];
    }
    let offset_min: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return Err(TimeError::Range);
            }
            let minutes = i64::from(oh * 60 + om);
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return Err(TimeError::Syntax),
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month)
        || day == 0
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(TimeError::Range);
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_min * 60;
    Ok(secs * 1000 + i64::from(millis))
}

/// Start of the tumbling window of `size_ms` that contains `ts_ms` (windows aligned to the epoch).
pub fn window_start(ts_ms: i64, size_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(size_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        let ms = parse_rfc3339_millis("2026-11-29T10:00:00.123Z").unwrap();
        assert_eq!(ms, 1_795_946_400_123);
        assert_eq!(format_rfc3339_millis(ms), "2026-11-29T10:00:00.123Z");
        assert_eq!(parse_rfc3339_millis("2026-11-29T12:00:00.123+02:00"), Ok(ms));
        assert_eq!(parse_rfc3339_millis("2026-11-29T09:30:00.1234567-00:30"), Ok(ms));
        assert_eq!(parse_rfc3339_millis("2026-11-29t10:00:00.123z"), Ok(ms));
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339_millis("2024-02-29T00:00:00Z").map(format_rfc3339_millis).unwrap(),
            "2024-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29 10:00:00Z",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00:00.Z",
            "2026-11-29T10:00:00+0200",
            "26-11-29T10:00:00Z",
            "2026-11-29T10:00:00Zjunk",
            "２026-11-29T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), Err(TimeError::Syntax), "{bad}");
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T10:00:60Z",
            "2026-11-00T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), Err(TimeError::Range), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-200_000..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(59_999, MINUTE_MS), 0);
        assert_eq!(window_start(60_000, MINUTE_MS), 60_000);
        assert_eq!(window_start(-1, MINUTE_MS), -60_000);
    }
}
