//! Byte sizes as users write them: plain bytes or Kubernetes quantities (`8Mi`, `1Ti`, `5G`).

/// The largest split size (and so the largest object) Outbound ever writes: 1 TiB.
pub const MAX_SPLIT_SIZE: u64 = 1 << 40;

/// Why a size could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("invalid size {0:?}: expected bytes or a quantity such as 8Mi, 512Gi, 1Ti, 5G")]
    Invalid(String),
    #[error("size {0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Parses plain bytes (`1048576`) or a Kubernetes quantity with a binary (`Ki Mi Gi Ti`) or
/// decimal (`k M G T`) suffix. Fractions are refused: a byte count must be exact.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(SizeError::Invalid(text.to_string()));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(SizeError::Invalid(text.to_string())),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| SizeError::Overflow(text.to_string()))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::Overflow(text.to_string()))
}

/// Formats bytes for people: the largest binary unit that keeps at least 1 (`1.5 GiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_quantities() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8Mi"), Ok(8 << 20));
        assert_eq!(parse_size("1Ti"), Ok(MAX_SPLIT_SIZE));
        assert_eq!(parse_size("512Gi"), Ok(512 << 30));
        assert_eq!(parse_size("4Ki"), Ok(4096));
        assert_eq!(parse_size("5k"), Ok(5_000));
        assert_eq!(parse_size("5M"), Ok(5_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_size(" 7Mi "), Ok(7 << 20));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "Mi", "1.5Gi", "8MB", "-1", "1 Gi", "8mi", "1Pi"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(matches!(
            parse_size("99999999999Ti"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size(8 << 20), "8.0 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
