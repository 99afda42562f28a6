//! `OutboundShard`: the journal of one Job index of a delivery, written by its upload pod and
//! read by the operator (progress, failure reason, open uploads to abort) and by shard 0 (the
//! manifest's line counts). Typed once, so the pods and the controller cannot drift apart; kept
//! out of the delivery so that its size does not grow with the number of shards.

// kube's printcolumn(...) repeats `type_ = ...` inside one attribute, which clippy misreads.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Held by every shard object until the operator has aborted its delivery's uploads: a
/// foreground deletion (Argo CD's default) deletes dependents first, and these hold the upload
/// ids to abort.
pub const SHARD_FINALIZER: &str = "outbound.dev/journal";
/// Label naming the upload Job a shard object belongs to.
pub const JOB_LABEL: &str = "outbound.dev/job";

/// The name of the shard object of Job `job`'s index `index`: what the upload-pods policy
/// matches the writing pod's name against (`<job>-<index>-<5 chars>`).
pub fn shard_name(job: &str, index: usize) -> String {
    format!("{job}-{index}")
}

/// Which delivery and which Job index a shard object journals.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "outbound.dev",
    version = "v1alpha1",
    kind = "OutboundShard",
    namespaced,
    status = "ShardStatus",
    shortname = "oshard",
    doc = "The journal of one upload pod of an OutboundDelivery (written by the pod; read by the operator).",
    printcolumn(name = "Delivery", type_ = "string", json_path = ".spec.delivery"),
    printcolumn(name = "Index", type_ = "integer", json_path = ".spec.index"),
    printcolumn(name = "Objects", type_ = "integer", json_path = ".status.objectsDone"),
    printcolumn(name = "Of", type_ = "integer", json_path = ".status.objectsTotal"),
    printcolumn(name = "Finished", type_ = "boolean", json_path = ".status.finished"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason")
)]
#[serde(rename_all = "camelCase")]
pub struct ShardSpec {
    /// Name of the OutboundDelivery.
    pub delivery: String,
    /// The Job completion index this shard is.
    pub index: u32,
}

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
    /// Bytes this shard's pods sent, every attempt together.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int64"))]
    pub bytes_sent: u64,
    /// Bytes the server copied from the provider's bucket for this shard (copy mode), every
    /// attempt together.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int64"))]
    pub bytes_copied: u64,
    /// Open multipart uploads (aborted if the delivery is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<OpenUpload>,
    /// Every object of this shard is complete.
    #[serde(default)]
    pub finished: bool,
    /// Line counts of this shard's multipart objects by plan index (single PUTs carry theirs in
    /// metadata), reported once it finishes, for the manifest (left out above 5,000 objects; the
    /// manifest's writer then counts them itself).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "line_counts_schema")]
    pub lines: BTreeMap<String, u64>,
    /// The pieces each gzip file of this shard was cut into (lines mode), by plan index,
    /// reported once it finishes, for the manifest: they are only known once sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pieces_schema")]
    pub pieces: BTreeMap<String, Vec<PieceRecord>>,
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

/// Kubernetes knows int64, not schemars' `uint64`. Atomic: one managed-fields entry for the
/// whole map, not one per object.
fn line_counts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "additionalProperties": {"type": "integer", "format": "int64", "minimum": 0}
    })
}

/// One piece of a gzip file cut on lines: a gzip stream of its own.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PieceRecord {
    /// Object key.
    pub key: String,
    /// Piece number, from 1.
    #[schemars(extend("format" = "int64"))]
    pub sequence: u64,
    /// Compressed size (the object's).
    #[schemars(extend("format" = "int64"))]
    pub size: u64,
    /// Decompressed size.
    #[schemars(extend("format" = "int64"))]
    pub uncompressed_size: u64,
    /// Lines (a last line without a newline counts).
    #[schemars(extend("format" = "int64"))]
    pub lines: u64,
}

/// Atomic, like the line counts.
fn pieces_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let piece = generator.subschema_for::<PieceRecord>();
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "additionalProperties": {"type": "array", "items": piece}
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
    /// The stamp of the source the upload was started from (version and range): a pod that
    /// finds it unchanged keeps the stored parts without reading them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
