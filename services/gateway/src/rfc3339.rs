//! RFC 3339 times (`2026-11-30T09:00:00Z`, `2026-11-30T10:00:00.250+01:00`) to and from Unix
//! milliseconds, for the operator API's query parameters and answers. Written out here (a
//! proleptic Gregorian calendar in UTC, Howard Hinnant's day arithmetic) rather than pulling a
//! date crate into the workspace for two functions.

const DAY_MS: i64 = 86_400_000;

/// Unix ms of an RFC 3339 date-time; `None` when it is not one (or not a real date).
pub fn parse(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded; finer digits are dropped.
        let mut padded = [b'0'; 3];
        for (slot, digit) in padded.iter_mut().zip(&fraction[..len]) {
            *slot = *digit;
        }
        millis = digits(&padded)?;
        rest = &fraction[len..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// `2026-11-30T09:00:00.000Z`: always UTC, always milliseconds.
pub fn format(unix_ms: i64) -> String {
    let (days, ms) = (unix_ms.div_euclid(DAY_MS), unix_ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let (seconds, millis) = (ms / 1_000, ms % 1_000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 00:00 UTC.
    const NOV_30: i64 = 20_787 * DAY_MS;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-11-30T00:00:00Z"), Some(NOV_30));
        assert_eq!(parse("2026-11-30t09:30:00z"), Some(NOV_30 + 34_200_000));
        assert_eq!(
            parse("2026-11-30 10:00:00+01:00"),
            Some(NOV_30 + 9 * 3_600_000)
        );
        assert_eq!(parse("2026-11-29T19:00:00-05:00"), Some(NOV_30));
        assert_eq!(parse("2026-11-30T00:00:00.25Z"), Some(NOV_30 + 250));
        assert_eq!(parse("2026-11-30T00:00:00.123456789Z"), Some(NOV_30 + 123));
        assert_eq!(parse("2024-02-29T00:00:00Z"), Some(19_782 * DAY_MS));
        assert_eq!(parse("1969-12-31T23:59:59.999Z"), Some(-1));
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "2026-11-30",
            "2026-11-30T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T00:00:00.Z",
            "2026-11-30T00:00:00+0100",
            "2026-11-30T00:00:00Z ",
            "+2026-11-30T00:00:00Z",
            "١٩٧٠-01-01T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_parses_back() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(NOV_30 + 34_200_250), "2026-11-30T09:30:00.250Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            -1,
            951_782_400_000,
            NOV_30 + 1,
            4_102_444_800_000 + 86_399_999,
        ] {
            assert_eq!(parse(&format(ms)), Some(ms), "{ms}");
        }
    }
}
