//! Byte sizes as users write them: plain bytes or Kubernetes quantities (`8Mi`, `1Ti`, `5G`).

/// The largest split size (and so the largest object) Outbound ever writes: 1 TiB.
pub const MAX_SPLIT_SIZE: u64 = 1 << 40;

/// Why a size could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("invalid size {0:?}: expected whole bytes or a quantity such as 8Mi, 512Gi, 1Ti, 5G")]
    Invalid(String),
    #[error("size {0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Parses plain bytes (`1048576`) or a Kubernetes quantity with a binary (`Ki Mi Gi Ti Pi`) or
/// decimal (`k M G T P`) suffix, as the API server reads it: a fraction is accepted when it makes
/// whole bytes (`1.5Ki`), refused otherwise. The one parser of the CLI and the CRDs.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    let invalid = || SizeError::Invalid(text.to_string());
    let overflow = || SizeError::Overflow(text.to_string());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return Err(invalid()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.contains('.') || number.ends_with('.') {
        return Err(invalid());
    }
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !frac.is_empty() {
        let scale = 10u128.checked_pow(frac.len() as u32).ok_or_else(overflow)?;
        let scaled = frac.parse::<u128>().map_err(|_| overflow())? * u128::from(multiplier);
        if !scaled.is_multiple_of(scale) {
            return Err(invalid());
        }
        let extra = u64::try_from(scaled / scale).map_err(|_| overflow())?;
        bytes = bytes.checked_add(extra).ok_or_else(overflow)?;
    }
    Ok(bytes)
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
        // Fractions the API server calls integers are whole bytes.
        assert_eq!(parse_size("1.5Ki"), Ok(1536));
        assert_eq!(parse_size("1Pi"), Ok(1 << 50));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "", "Mi", "0.3", "1.5", "8MB", "-1", "1 Gi", "8mi", "1.", ".5Ki", "1.2.3Ki",
        ] {
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
