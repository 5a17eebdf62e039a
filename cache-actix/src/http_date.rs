//! HTTP dates (RFC 9110 section 5.6.7) as a cache reads them: the three formats a recipient
//! must accept (IMF-fixdate, RFC 850, asctime), with names in any letter case and the weekday
//! not checked against the date (it carries no information, and senders get it wrong).
//!
//! What must stay true: everything else is `None` (a malformed `Expires` then means "already
//! expired"): other time zones, missing commas, extra spaces, one-digit hours, other
//! separators, a two-digit year outside RFC 850's form. Never panics, whatever the input.

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Unix seconds of an HTTP date; `None` when malformed.
pub(crate) fn parse(text: &str) -> Option<u64> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    let lower = text.to_ascii_lowercase();
    imf_fixdate(&lower)
        .or_else(|| rfc850(&lower))
        .or_else(|| asctime(&lower))
}

/// `sun, 06 nov 1994 08:49:37 gmt`
fn imf_fixdate(t: &str) -> Option<u64> {
    let (day, rest) = t.split_once(", ")?;
    DAYS.contains(&day).then_some(())?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [dd, mon, yyyy, time, "gmt"] = parts.as_slice() else {
        return None;
    };
    let year = digits(yyyy, 4)?;
    to_unix(year, month(mon)?, digits(dd, 2)?, time)
}

/// `sunday, 06-nov-94 08:49:37 gmt`
fn rfc850(t: &str) -> Option<u64> {
    let (day, rest) = t.split_once(", ")?;
    LONG_DAYS.contains(&day).then_some(())?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [date, time, "gmt"] = parts.as_slice() else {
        return None;
    };
    let d: Vec<&str> = date.split('-').collect();
    let [dd, mon, yy] = d.as_slice() else {
        return None;
    };
    let yy = digits(yy, 2)?;
    // RFC 9110 5.6.7: a two-digit year more than 50 years ahead is in the past century.
    let this_year = 1970 + now_secs() / 31_556_952;
    let mut year = 2000 + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    to_unix(year, month(mon)?, digits(dd, 2)?, time)
}

/// `sun nov  6 08:49:37 1994`
fn asctime(t: &str) -> Option<u64> {
    let (day, rest) = t.split_once(' ')?;
    DAYS.contains(&day).then_some(())?;
    let (mon, rest) = rest.split_once(' ')?;
    let (dd, rest) = match rest.strip_prefix(' ') {
        Some(one_digit) => (one_digit.get(..1)?, one_digit.get(1..)?),
        None => (rest.get(..2)?, rest.get(2..)?),
    };
    let rest = rest.strip_prefix(' ')?;
    let (time, yyyy) = rest.split_once(' ')?;
    let dd = digits(dd, dd.len())?;
    to_unix(digits(yyyy, 4)?, month(mon)?, dd, time)
}

fn month(name: &str) -> Option<u64> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1)
}

/// Exactly `len` ASCII digits.
fn digits(text: &str, len: usize) -> Option<u64> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `hh:mm:ss` on the given day, as Unix seconds.
fn to_unix(year: u64, month: u64, day: u64, time: &str) -> Option<u64> {
    let t: Vec<&str> = time.split(':').collect();
    let [h, m, s] = t.as_slice() else {
        return None;
    };
    let (h, m, s) = (digits(h, 2)?, digits(m, 2)?, digits(s, 2)?);
    if h > 23 || m > 59 || s > 60 || year < 1970 || day == 0 || day > days_in(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

fn days_in(year: u64, month: u64) -> u64 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, for years from 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

fn now_secs() -> u64 {
    cache_core::time::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::parse;

    const NOV_6_1994: u64 = 784_111_777;

    #[test]
    fn the_three_formats_in_any_case() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(NOV_6_1994));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(NOV_6_1994));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(NOV_6_1994));
        assert_eq!(parse("SUN, 06 NOV 1994 08:49:37 gMT"), Some(NOV_6_1994));
        // The weekday is not checked: 8 Aug 2050 is a Monday.
        assert_eq!(
            parse("Thu Aug  8 02:01:18 2050"),
            parse("Mon, 08 Aug 2050 02:01:18 GMT")
        );
        assert!(parse("Thursday, 18-Aug-50 02:01:18 GMT").is_some_and(|t| t > NOV_6_1994));
    }

    #[test]
    fn everything_else_is_malformed() {
        for bad in [
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu,  18 Aug 2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:01:18 GMT",
            "Thu, 18 Aug 1969 02:01:18 GMT",
            "Thursday, 18 Aug 2050 02:01:18 GMT",
            "é, 18 Aug 2050 02:01:18 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
