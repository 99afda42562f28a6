//! The split size: an integer number of bytes or a Kubernetes quantity, at most 1 TiB.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The largest split size S3 and the product allow: 1 TiB.
pub const MAX_SPLIT_BYTES: u64 = 1 << 40;

/// A size as users write it: `1073741824` or `512Gi`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SplitSize {
    Bytes(u64),
    Quantity(String),
}

impl SplitSize {
    /// The size in bytes, or why it is not a valid size.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SplitSize::Bytes(n) => Ok(*n),
            SplitSize::Quantity(q) => parse_quantity(q),
        }
    }
}

impl std::fmt::Display for SplitSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitSize::Bytes(n) => write!(f, "{n}"),
            SplitSize::Quantity(q) => f.write_str(q),
        }
    }
}

// The API server checks the same bounds with CEL, so a bad size never reaches the controller.
const SPLIT_SIZE_RULE: &str = "type(self) == int ? (self > 0 && self <= 1099511627776) : \
(isQuantity(self) && quantity(self).isInteger() && quantity(self).isGreaterThan(quantity('0')) \
&& quantity(self).compareTo(quantity('1Ti')) <= 0)";

impl JsonSchema for SplitSize {
    fn schema_name() -> Cow<'static, str> {
        "SplitSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": SPLIT_SIZE_RULE,
                "message": "must be a positive whole number of bytes or a quantity (e.g. 512Gi) of at most 1Ti",
            }],
        })
    }
}

/// Parses a Kubernetes quantity into bytes (binary and decimal suffixes, whole bytes only).
///
/// Kept private to the API until `units::parse_size` is shared by the uploader.
pub(crate) fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        other => return Err(format!("unknown size suffix {other:?} in {text:?}")),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(format!("{text:?} is not a size"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("{text:?} is not a size"))?
    };
    let mut bytes = whole
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if !frac.is_empty() {
        let digits: u32 = frac.len() as u32;
        let frac_value: u64 = frac
            .parse()
            .map_err(|_| format!("{text:?} is not a size"))?;
        let scale = 10u64
            .checked_pow(digits)
            .ok_or_else(|| format!("{text:?} has too many decimals"))?;
        let scaled = (frac_value as u128) * (multiplier as u128);
        if !scaled.is_multiple_of(scale as u128) {
            return Err(format!("{text:?} is not a whole number of bytes"));
        }
        bytes = bytes
            .checked_add((scaled / scale as u128) as u64)
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("1Ti"), Ok(MAX_SPLIT_BYTES));
        assert_eq!(parse_quantity("512Gi"), Ok(512 << 30));
        assert_eq!(parse_quantity("8Mi"), Ok(8 << 20));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("5G"), Ok(5_000_000_000));
        assert_eq!(parse_quantity("42"), Ok(42));
        assert!(parse_quantity("0.3").is_err());
        assert!(parse_quantity("1Xi").is_err());
        assert!(parse_quantity("").is_err());
    }

    #[test]
    fn split_size_accepts_int_or_string() {
        let n: SplitSize = serde_json::from_str("1024").unwrap();
        assert_eq!(n.bytes(), Ok(1024));
        let q: SplitSize = serde_json::from_str("\"2Ti\"").unwrap();
        assert_eq!(q.bytes(), Ok(2 << 40));
    }
}
