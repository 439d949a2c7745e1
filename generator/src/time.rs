//! UTC civil time without a date crate: epoch milliseconds to and from RFC 3339.
//!
//! Every timestamp the generator writes goes through [`format_rfc3339`], so it is the one place that decides
//! what "millisecond precision" and "offset converted correctly" mean. The conversion between days since the
//! epoch and a (year, month, day) uses Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms
//! (proleptic Gregorian calendar), which are exact for every year we accept.

use std::fmt::Write as _;

use adstream_abi::time::civil_from_days;
use anyhow::{Context as _, Result, ensure};

/// Milliseconds since 1970-01-01T00:00:00Z. Every event time in the generator is one of these.
pub type EpochMillis = i64;

const MS_PER_DAY: i64 = 86_400_000;

/// The years we parse. RFC 3339 has four-digit years, and nothing before the epoch is useful here.
pub const YEARS: std::ops::RangeInclusive<i64> = 1970..=9999;

/// Event times the host accepts as valid (`host/src/event.rs`): from 2000-01-01 up to, not including,
/// 2100-01-01. Outside it a timestamp is out of range and the event goes to the dead-letter topic, so every
/// valid event the generator makes falls inside.
pub const VALID_EVENT_TIMES: std::ops::Range<EpochMillis> = 946_684_800_000..4_102_444_800_000;

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
    let ms = adstream_abi::time::parse_rfc3339_millis(text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("`{text}` is not an RFC 3339 date-time"))?;
    let year = civil_from_days(ms.div_euclid(MS_PER_DAY)).0;
    ensure!(YEARS.contains(&year), "`{text}`: year {year} is outside {YEARS:?}");
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_event_times_are_this_century() {
        assert_eq!(VALID_EVENT_TIMES.start, adstream_abi::time::days_from_civil(2000, 1, 1) * MS_PER_DAY);
        assert_eq!(VALID_EVENT_TIMES.end, adstream_abi::time::days_from_civil(2100, 1, 1) * MS_PER_DAY);
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
