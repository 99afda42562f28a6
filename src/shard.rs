//! The report each upload pod writes into its delivery's `status.shards.<index>`: typed once,
//! so the pods that write it and the controller that reads it cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one upload pod (one Job index) reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Bytes of this shard delivered.
    #[schemars(extend("format" = "int64"))]
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes of this shard.
    #[schemars(extend("format" = "int64"))]
    #[serde(default)]
    pub bytes_total: u64,
    /// Objects of this shard delivered.
    #[schemars(extend("format" = "int64"))]
    #[serde(default)]
    pub objects_done: u64,
    /// Objects of this shard.
    #[schemars(extend("format" = "int64"))]
    #[serde(default)]
    pub objects_total: u64,
    /// Open multipart uploads (aborted if the delivery is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<OpenUpload>,
    /// Every object of this shard is complete.
    #[serde(default)]
    pub finished: bool,
    /// Line counts of this shard's objects by plan index, reported once it finishes, for the
    /// manifest (left out above 10,000 objects; the manifest's writer then counts them itself).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "line_counts_schema")]
    pub lines: BTreeMap<String, u64>,
    /// The reason of the last error, if any (e.g. `S3Unavailable`, `AccessDenied`, `LineTooLong`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last error, naming the file, key or part, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last error can never heal: the pod stopped the Job (its delivery fails with `reason`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// When the pod last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Kubernetes knows int64, not schemars' `uint64`.
fn line_counts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int64", "minimum": 0}
    })
}

/// An open multipart upload.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OpenUpload {
    /// Object key.
    pub key: String,
    /// Multipart upload id.
    pub upload_id: String,
}
