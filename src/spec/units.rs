//! tc(8)'s units for `x-qos`, read as `tc` reads them (case-insensitive) and written back in
//! the shortest exact form, so that a rate prints as it was written.
//!
//! Rates: a bare number or `bit` is bits per second; `kbit`, `mbit`, `gbit`, `tbit` are
//! powers of 1000, `kibit`, `mibit`, `gibit`, `tibit` powers of 1024; `bps`, `kbps`, `mbps`,
//! `gbps`, `tbps` (and `kibps` ... `tibps`) are bytes per second, as in tc (`mbps` is
//! megabytes, not megabits). Sizes: a bare number or `b` is bytes; `k`/`kb`, `m`/`mb`,
//! `g`/`gb` are powers of 1024; `kbit`, `mbit`, `gbit` are 1024-based bits. Fractions are
//! allowed (`1.5mbit`).

/// Why a rate or a size does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a number followed by a unit")]
    Syntax(String),
    #[error("unknown unit `{0}`")]
    Unit(String),
    #[error("too large")]
    Overflow,
}

const RATES: &[(&str, f64)] = &[
    ("", 1.0),
    ("bit", 1.0),
    ("kbit", 1e3),
    ("mbit", 1e6),
    ("gbit", 1e9),
    ("tbit", 1e12),
    ("kibit", 1024.0),
    ("mibit", 1048576.0),
    ("gibit", 1073741824.0),
    ("tibit", 1099511627776.0),
    ("bps", 8.0),
    ("kbps", 8e3),
    ("mbps", 8e6),
    ("gbps", 8e9),
    ("tbps", 8e12),
    ("kibps", 8192.0),
    ("mibps", 8388608.0),
    ("gibps", 8589934592.0),
    ("tibps", 8796093022208.0),
];

const SIZES: &[(&str, f64)] = &[
    ("", 1.0),
    ("b", 1.0),
    ("k", 1024.0),
    ("kb", 1024.0),
    ("m", 1048576.0),
    ("mb", 1048576.0),
    ("g", 1073741824.0),
    ("gb", 1073741824.0),
    ("kbit", 128.0),
    ("mbit", 131072.0),
    ("gbit", 134217728.0),
];

/// The units a rate may have, for hints.
pub const RATE_UNITS: &str = "bit, kbit, mbit, gbit, tbit (1000-based), kibit, mibit, gibit (1024-based), or bytes per second: bps, kbps, mbps, gbps";
/// The units a size may have, for hints.
pub const SIZE_UNITS: &str = "b (bytes), k or kb, m or mb, g or gb (1024-based), kbit, mbit, gbit";

fn parse(text: &str, units: &[(&str, f64)]) -> Result<u64, UnitError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::Syntax(s.to_string()))?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor = units
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| *f)
        .ok_or(UnitError::Unit(unit))?;
    let total = (value * factor).round();
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(UnitError::Overflow);
    }
    Ok(total as u64)
}

/// A rate in bits per second.
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    parse(text, RATES)
}

/// A size in bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    parse(text, SIZES)
}

/// Bits per second in the largest 1000-based unit that holds it exactly: `10mbit`.
pub fn format_rate(bits: u64) -> String {
    for (unit, factor) in [
        ("tbit", 1_000_000_000_000),
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
    ] {
        if bits != 0 && bits % factor == 0 {
            return format!("{}{unit}", bits / factor);
        }
    }
    format!("{bits}bit")
}

/// Bytes in the largest 1024-based unit that holds it exactly: `64kb`.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
        if bytes != 0 && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_tc_reads_them() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("100kbit"), Ok(100_000));
        assert_eq!(parse_rate("1mibit"), Ok(1_048_576));
        assert_eq!(parse_rate("2mbps"), Ok(16_000_000));
        assert_eq!(parse_rate("8000"), Ok(8000));
        assert_eq!(parse_rate("10 mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("10mb"), Err(UnitError::Unit("mb".into())));
        assert_eq!(parse_rate("fast"), Err(UnitError::Syntax("fast".into())));
        assert_eq!(parse_rate("99999999999tbit"), Err(UnitError::Overflow));
    }

    #[test]
    fn sizes_read_as_tc_reads_them() {
        assert_eq!(parse_size("64kb"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("8kbit"), Ok(1024));
        assert!(parse_size("1xb").is_err());
    }

    #[test]
    fn written_back_exactly() {
        assert_eq!(format_rate(10_000_000), "10mbit");
        assert_eq!(format_rate(1_500_000), "1500kbit");
        assert_eq!(format_rate(1_048_576), "1048576bit");
        assert_eq!(format_size(65536), "64kb");
        assert_eq!(format_size(1500), "1500b");
        for r in ["10mbit", "1500kbit", "7bit"] {
            assert_eq!(format_rate(parse_rate(r).unwrap()), r);
        }
    }
}
