//! Human durations as written in the config: `90s`, `30m`, `8h`, `1h30m`, `250ms`, `2d`.

use std::time::Duration;

/// Parses a duration made of one or more `<digits><unit>` parts, units `ms`, `s`, `m`, `h`, `d`.
///
/// Bare numbers are refused on purpose: `timeout: 30` is ambiguous (seconds? milliseconds?).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i || i - start > 12 {
            return None;
        }
        let value: u64 = text[start..i].parse().ok()?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let part = match &text[unit_start..i] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60)?),
            "h" => Duration::from_secs(value.checked_mul(3600)?),
            "d" => Duration::from_secs(value.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("8h"), Some(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_input() {
        for bad in [
            "",
            "30",
            "s",
            "1.5h",
            "-5s",
            "5 s",
            "5sec",
            "5S",
            "h1",
            "1h 30m",
            "99999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?} should be refused");
        }
    }
}
