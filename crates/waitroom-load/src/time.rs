//! Time: one time base for the whole trace (microseconds since the Unix epoch), RFC 3339
//! parsing of the server's timestamps and formatting of ours.
//!
//! Client times come from a monotonic clock anchored once to the wall clock at the start of the
//! run, so they never jump; server times (`joinedAt`, `admittedAt`) are the server's clock. Both
//! are compared directly, which assumes the two clocks agree (true on one machine); the report
//! carries an estimate of the offset (see `metrics::clock_offset`) so a reader can judge.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (UTC). Signed so differences need no care.
pub type TimeUs = i64;

/// Resolution of the server's timestamps: the API writes whole milliseconds, so a server time
/// `T` stands for an instant in `[T, T + 1 ms)`.
pub const SERVER_TIME_RESOLUTION_US: TimeUs = 1_000;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A monotonic clock that reads as wall-clock microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start_instant: Instant,
    start_us: TimeUs,
}

impl Clock {
    /// Anchors a clock to the wall clock now.
    pub fn start() -> Self {
        let start_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            start_instant: Instant::now(),
            start_us,
        }
    }

    /// The current time.
    pub fn now_us(&self) -> TimeUs {
        self.time_of(Instant::now())
    }

    /// The time of `instant`.
    pub fn time_of(&self, instant: Instant) -> TimeUs {
        let elapsed = instant.saturating_duration_since(self.start_instant);
        self.start_us
            .saturating_add(i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
    }

    /// The instant at time `at_us` (never before the clock's start).
    pub fn instant_at(&self, at_us: TimeUs) -> Instant {
        let offset = u64::try_from(at_us.saturating_sub(self.start_us)).unwrap_or(0);
        self.start_instant + std::time::Duration::from_micros(offset)
    }

    /// The wall-clock time at which the clock was started.
    pub fn start_us(&self) -> TimeUs {
        self.start_us
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-27T10:00:00.123Z`, any fraction length, `Z` or a
/// `±hh:mm` offset) into microseconds since the epoch. `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<TimeUs> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0_i64, |acc, digit| acc * 10 + i64::from(digit - b'0')),
        )
    };
    let year = number(0..4)?;
    let month = number(5..7)?;
    let day = number(8..10)?;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    if bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut index = 19;
    let mut fraction_us = 0_i64;
    if bytes.get(index) == Some(&b'.') {
        index += 1;
        let start = index;
        while bytes.get(index).is_some_and(u8::is_ascii_digit) {
            if index - start < 6 {
                fraction_us = fraction_us * 10 + i64::from(bytes[index] - b'0');
            }
            index += 1;
        }
        let digits = index - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            fraction_us *= 10;
        }
    }
    let offset_seconds = match bytes.get(index)? {
        b'Z' | b'z' if index + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if index + 6 == bytes.len() && bytes[index + 3] == b':' => {
            let hours = number(index + 1..index + 3)?;
            let minutes = number(index + 4..index + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    // A leap second (:60) is folded onto the next second, as most clocks do.
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + fraction_us)
}

/// Formats a time as RFC 3339 UTC with millisecond precision, like the API does.
pub fn format_rfc3339_ms(at_us: TimeUs) -> String {
    let seconds = at_us.div_euclid(MICROS_PER_SECOND);
    let millis = at_us.rem_euclid(MICROS_PER_SECOND) / 1000;
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_format() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-27T10:00:00.123Z"),
            Some(1_795_773_600_123_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.5Z"), Some(500_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.1234567Z"), Some(123_456));
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:00+01:00"),
            parse_rfc3339("1970-01-01T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "2026-11-27",
            "2026-11-27T10:00:00",
            "2026-13-27T10:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T10:00:00Zjunk",
            "2026-11-27T10:00:00+0100",
            "２０２６-11-27T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_773_600_123_456),
            "2026-11-27T10:00:00.123Z"
        );
        for at_us in [-86_400_000_000, 951_782_400_000_000, 4_107_542_400_999_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339_ms(at_us)), Some(at_us));
        }
    }

    #[test]
    fn clock_reads_forward_from_its_anchor() {
        let clock = Clock::start();
        let first = clock.now_us();
        let second = clock.now_us();
        assert!(first >= clock.start_us());
        assert!(second >= first);
        assert_eq!(clock.time_of(clock.instant_at(first)), first);
    }
}
