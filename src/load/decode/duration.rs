//! Compose's duration syntax (Go's `time.ParseDuration`, which compose-go uses): a sequence of
//! decimal numbers, each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), as in `1m30s`,
//! `1.5s` or `100ms`; a bare `0` is zero. Durations here are waits, so a sign is refused.

use std::time::Duration;

/// Why a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a number followed by a unit")]
    Syntax(String),
    #[error("unknown unit `{0}`")]
    Unit(String),
    #[error("too long")]
    Overflow,
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parse `1m30s`, `1.5s`, `100ms`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let syntax = || DurationError::Syntax(s.to_string());
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, n)| *n)
            .ok_or_else(|| DurationError::Unit(unit.to_string()))?;
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(syntax());
        }
        let whole: u128 = match whole {
            "" => 0,
            w => w.parse().map_err(|_| DurationError::Overflow)?,
        };
        // The fraction to nanosecond precision; further digits cannot change the result.
        let mut frac_nanos: u128 = 0;
        let mut div: u128 = 1;
        for d in frac.bytes().take(18) {
            frac_nanos = frac_nanos * 10 + u128::from(d - b'0');
            div *= 10;
        }
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(frac_nanos * scale / div))
            .and_then(|n| nanos.checked_add(n))
            .ok_or(DurationError::Overflow)?;
        rest = tail;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("3us"), Ok(Duration::from_nanos(3_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 5s "), Ok(ms(5_000)));
    }

    #[test]
    fn bad_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::Syntax("10".into()))
        );
        assert_eq!(parse_duration("5d"), Err(DurationError::Unit("d".into())));
        assert_eq!(parse_duration("s"), Err(DurationError::Syntax("s".into())));
        assert_eq!(parse_duration("-5s"), Err(DurationError::Unit("-".into())));
        assert_eq!(
            parse_duration("1.2.3s"),
            Err(DurationError::Syntax("1.2.3s".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }
}
