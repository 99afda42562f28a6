//! The split size: an integer number of bytes or a Kubernetes quantity, at most 1 TiB.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
            SplitSize::Quantity(q) => crate::units::parse_size(q).map_err(|e| e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_size_accepts_int_or_string() {
        let n: SplitSize = serde_json::from_str("1024").unwrap();
        assert_eq!(n.bytes(), Ok(1024));
        let q: SplitSize = serde_json::from_str("\"2Ti\"").unwrap();
        assert_eq!(q.bytes(), Ok(2 << 40));
    }
}
