//! `OutboundDelivery`: one delivery of files from a volume or a bucket to a destination, run as
//! a Job.

// kube's printcolumn(...) repeats `type_ = ...` inside one attribute, which clippy misreads.
#![allow(clippy::duplicated_attributes)]

use super::{SplitOn, SplitSize, prefix_rule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::shard::{OpenUpload, ShardStatus};

// (`has()` pairs rather than `.?` optionals: the API server's cost estimate of `.?` is far too high.)
// Once the controller has started the delivery (status.startTime is set) the spec may only change
// `suspend`: the Job, its keys and the manifest were decided from it.
const IMMUTABLE_ONCE_STARTED: &str = "!has(oldSelf.status) || !has(oldSelf.status.startTime) || (self.spec.destinationRef == oldSelf.spec.destinationRef\
 && self.spec.source == oldSelf.spec.source\
 && (has(self.spec.keyPrefix) == has(oldSelf.spec.keyPrefix)\
 && (!has(self.spec.keyPrefix) || self.spec.keyPrefix == oldSelf.spec.keyPrefix))\
 && (has(self.spec.nameTemplate) == has(oldSelf.spec.nameTemplate)\
 && (!has(self.spec.nameTemplate) || self.spec.nameTemplate == oldSelf.spec.nameTemplate))\
 && (has(self.spec.manifestName) == has(oldSelf.spec.manifestName)\
 && (!has(self.spec.manifestName) || self.spec.manifestName == oldSelf.spec.manifestName))\
 && (has(self.spec.splitSize) == has(oldSelf.spec.splitSize)\
 && (!has(self.spec.splitSize) || self.spec.splitSize == oldSelf.spec.splitSize))\
 && (has(self.spec.splitOn) == has(oldSelf.spec.splitOn)\
 && (!has(self.spec.splitOn) || self.spec.splitOn == oldSelf.spec.splitOn))\
 && (has(self.spec.compression) == has(oldSelf.spec.compression)\
 && (!has(self.spec.compression) || self.spec.compression == oldSelf.spec.compression))\
 && self.spec.parallelism == oldSelf.spec.parallelism\
 && self.spec.manifest == oldSelf.spec.manifest\
 && self.spec.backoffLimit == oldSelf.spec.backoffLimit\
 && (has(self.spec.activeDeadlineSeconds) == has(oldSelf.spec.activeDeadlineSeconds)\
 && (!has(self.spec.activeDeadlineSeconds) || self.spec.activeDeadlineSeconds == oldSelf.spec.activeDeadlineSeconds)))";

/// Files on a PersistentVolumeClaim or objects in the provider's bucket, delivered to an
/// OutboundDestination by an upload Job.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbound.dev",
    version = "v1alpha1",
    kind = "OutboundDelivery",
    namespaced,
    status = "OutboundDeliveryStatus",
    shortname = "odel",
    category = "outbound",
    doc = "A delivery of files from a volume or a bucket to an OutboundDestination.",
    validation = Rule::new(IMMUTABLE_ONCE_STARTED).message("the spec of a started delivery is immutable except suspend"),
    printcolumn(name = "Destination", type_ = "string", json_path = ".spec.destinationRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress.summary"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OutboundDeliverySpec {
    /// The OutboundDestination (same namespace) to deliver to.
    pub destination_ref: LocalRef,
    /// What to deliver.
    pub source: DeliverySource,
    /// Key prefix of this delivery, under the destination's prefix (e.g. `{date}/`). No
    /// control characters, no `.`, `..` or empty (`//`) segment, at most 512 bytes. Placeholders
    /// `{date}` (YYYY-MM-DD), `{time}` (HHMMSS), `{timestamp}` (Unix seconds), `{schedule}`,
    /// `{delivery}`, `{mode}` (`full` or `iter`) and `{run}` are expanded once, when the delivery
    /// starts (recorded in `status.target.prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(
        validation = Rule::new(prefix_rule::NO_CONTROL).message(prefix_rule::NO_CONTROL_MESSAGE),
        validation = Rule::new(prefix_rule::NO_DOT_SEGMENT).message(prefix_rule::NO_DOT_SEGMENT_MESSAGE),
        validation = Rule::new(prefix_rule::NO_EMPTY_SEGMENT).message(prefix_rule::NO_EMPTY_SEGMENT_MESSAGE),
        validation = Rule::new(prefix_rule::MAX_BYTES).message(prefix_rule::MAX_BYTES_MESSAGE),
        validation = Rule::new(crate::template::known_placeholders_rule(false)).message(crate::template::RUN_PLACEHOLDERS_MESSAGE)
    )]
    pub key_prefix: Option<String>,
    /// Name of each object: `{stem}` (the file's name up to its first dot), `{n}` (piece number,
    /// at least three digits), `{ext}` (the rest of the name), and the placeholders of
    /// `keyPrefix`. Default `{stem}-{n}{ext}` for split files (an unsplit file keeps its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(
        validation = Rule::new("self.contains('{n}')").message("must contain {n}"),
        validation = Rule::new(crate::template::known_placeholders_rule(true)).message(crate::template::PIECE_PLACEHOLDERS_MESSAGE),
        validation = Rule::new("!self.contains('/')").message("must not contain /")
    )]
    pub name_template: Option<String>,
    /// Name of the manifest object under the prefix, with the placeholders of `keyPrefix`
    /// (default `manifest.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(
        validation = Rule::new(crate::template::known_placeholders_rule(false)).message(crate::template::RUN_PLACEHOLDERS_MESSAGE),
        validation = Rule::new("!self.contains('/')").message("must not contain /")
    )]
    pub manifest_name: Option<String>,
    /// Largest object written; never above the destination's split size (nor 1Ti).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_size: Option<SplitSize>,
    /// Where a split falls (`lines` or `bytes`); default the destination's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_on: Option<SplitOn>,
    /// Compress the files on the way out, `.gz` appended to their names. A file already
    /// compressed (gzip, zstd, ...) or of a binary format (Parquet, ...) goes as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Pods of the upload Job, each taking its share of the objects (Indexed Job when above 1).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: i32,
    /// Write the manifest object (`manifest.json` under the prefix) last, after every object.
    #[serde(default = "default_true")]
    pub manifest: bool,
    /// Failed pods tolerated before the delivery fails.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
    /// Seconds the upload may run, all attempts together, before the delivery fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Pause the delivery (the Job's pods are stopped) until set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// Receipts sent when the delivery ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Compression of the files on the way out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    /// `gzip`: each object a complete gzip stream of at most the split size (compressed), cut
    /// on lines in lines mode, so that every object decompresses alone.
    pub format: CompressionFormat,
    /// 1 (fastest) to 9 (smallest); default 6, gzip's own.
    #[serde(default = "default_gzip_level")]
    #[schemars(range(min = 1, max = 9))]
    pub level: u32,
}

/// A compression format.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionFormat {
    Gzip,
}

fn default_gzip_level() -> u32 {
    6
}

/// Receipts of a delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Notify {
    /// A URL that receives one CloudEvent when the delivery succeeds or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// A webhook receiving a delivery's receipt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Receives a POST of one CloudEvents 1.0 JSON message (`application/cloudevents+json`,
    /// type `dev.outbound.delivery.succeeded` or `.failed`) when the delivery ends; retried with
    /// backoff for about 40 minutes. https only, and no loopback, link-local or metadata address,
    /// unless the admin allows those endpoints.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http:// or https:// URL"))]
    pub url: String,
    /// A key of a Secret in the delivery's namespace: the body is signed with HMAC-SHA256 under
    /// its value, in the header `X-Outbound-Signature: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<WebhookSecret>,
}

/// A key of a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WebhookSecret {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the signing key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What became of a delivery's receipt.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    /// Attempts made.
    #[serde(default)]
    pub attempts: i32,
    /// When the receiver accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_time: Option<Time>,
    /// When the last attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// Why the last attempt failed (by class: the receiver's answer is not echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No more attempts (refused by the endpoint rules, or every attempt failed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
}

fn default_parallelism() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_backoff_limit() -> i32 {
    3
}

/// A reference to an object in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The source of a delivery: exactly one of `volume` and `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.volume) != has(self.s3)").message("exactly one of source.volume or source.s3 must be set"))]
pub struct DeliverySource {
    /// Files on a PersistentVolumeClaim, mounted read-only into the upload pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,
    /// Objects in a bucket of the provider's own, read with the provider's credentials (never
    /// the destination's) in ranged GETs, each pinned to the version the plan saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<BucketSource>,
}

impl DeliverySource {
    /// The include globs of whichever source is set.
    pub fn include(&self) -> &[String] {
        match (&self.volume, &self.s3) {
            (Some(v), _) => &v.include,
            (None, Some(s)) => &s.include,
            (None, None) => &[],
        }
    }

    /// The exclude globs of whichever source is set.
    pub fn exclude(&self) -> &[String] {
        match (&self.volume, &self.s3) {
            (Some(v), _) => &v.exclude,
            (None, Some(s)) => &s.exclude,
            (None, None) => &[],
        }
    }

    /// The changed window `[after, before)` of whichever source is set.
    pub fn window(&self) -> (Option<&Time>, Option<&Time>) {
        match (&self.volume, &self.s3) {
            (Some(v), _) => (v.changed_after.as_ref(), v.changed_before.as_ref()),
            (None, Some(s)) => (s.changed_after.as_ref(), s.changed_before.as_ref()),
            (None, None) => (None, None),
        }
    }

    /// Sets the changed window (an incremental run of a schedule): ctime on a volume,
    /// LastModified in a bucket.
    pub fn set_window(&mut self, after: Option<Time>, before: Option<Time>) {
        if let Some(v) = &mut self.volume {
            (v.changed_after, v.changed_before) = (after, before);
        } else if let Some(s) = &mut self.s3 {
            (s.changed_after, s.changed_before) = (after, before);
        }
    }
}

/// Objects under a prefix of the provider's own bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BucketSource {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Folder of the bucket to deliver: empty (the whole bucket) or ending in `/`. Keys are
    /// delivered relative to it.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    #[x_kube(
        validation = Rule::new("self == '' || self.endsWith('/')").message("a non-empty prefix must end in / (e.g. exports/)"),
        validation = Rule::new(prefix_rule::NO_CONTROL).message(prefix_rule::NO_CONTROL_MESSAGE)
    )]
    pub prefix: String,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// URL of an S3-compatible server; unset means Amazon S3. The same rules as a destination's
    /// `s3.endpoint` (https, no loopback, link-local or metadata address unless the admin allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing, needed by most S3-compatible servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// PEM certificates of the private CA that signs `endpoint`'s certificate (an S3-compatible
    /// server inside the organisation), trusted besides the system's (the image's) trust store.
    /// Nothing is turned off: the certificate and its name are still checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("must hold PEM certificates (-----BEGIN CERTIFICATE-----)"))]
    pub ca_bundle: Option<String>,
    /// Keys of the provider's own, in a Secret of this namespace. Unset: the operator's workload
    /// identity reads, where the admin's OutboundTenancy grants this namespace the bucket
    /// (`grants[].sourceBuckets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<super::SecretKeys>,
    /// Globs of objects to deliver, relative to `prefix` (default: every object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub include: Vec<String>,
    /// Globs of objects to leave out, relative to `prefix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub exclude: Vec<String>,
    /// Only objects written (LastModified) at or after this time: an incremental run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_after: Option<Time>,
    /// Only objects written before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_before: Option<Time>,
    /// `Auto`: where one identity may read this bucket and write the destination on the same
    /// endpoint (the workload identity on both sides, or the same Secret), the server copies the
    /// parts (UploadPartCopy, CopyObject) and the data never passes through the pod; else, or
    /// when the server refuses a copy, the pod sends it. `Never`: the pod always sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyMode>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Whether the server may copy the data (`Auto`) or the pod must send it (`Never`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CopyMode {
    #[default]
    Auto,
    Never,
}

/// Files on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// Name of the PersistentVolumeClaim (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Folder inside the volume to deliver, relative to its root (default: the whole volume).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("path must be relative and stay inside the volume"))]
    pub path: String,
    /// Globs of files to deliver, relative to `path` (default: every file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub include: Vec<String>,
    /// Globs of files to leave out, relative to `path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub exclude: Vec<String>,
    /// Only files created or changed at or after this time (their inode change time, which no
    /// copy tool can set back): an incremental run of a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_after: Option<Time>,
    /// Only files last created or changed before this time: a file still being written is left
    /// to the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_before: Option<Time>,
}

/// The phase of a delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Waiting: references not ready, the Job not started, or suspended.
    #[default]
    Pending,
    /// The upload Job runs.
    Uploading,
    /// Every object (and the manifest) is delivered.
    Succeeded,
    /// The delivery failed; see the `Failed` condition.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Uploading => "Uploading",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// What the controller reports about a delivery (the pods report to their OutboundShards).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundDeliveryStatus {
    /// Pending, Uploading, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready` (True once delivered), `Complete`, `Failed` and `Progressing`, each with the
    /// generation it describes (kstatus, Argo CD and `kubectl wait --for=condition=Complete`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Bytes and objects delivered so far, of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Name of the upload Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Key of the manifest object, when one is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// When the upload Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the delivery succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Upload pods started so far (retries included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Where the upload Job writes, recorded when it starts: the operator aborts open uploads
    /// there, whatever the destination says later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DeliveryTarget>,
    /// The receipt sent by webhook when the delivery ended (`spec.notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationStatus>,
}

/// Progress totals folded from every shard.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes delivered.
    #[schemars(extend("format" = "int64"))]
    pub bytes_done: u64,
    /// Bytes to deliver (known once every shard has planned).
    #[schemars(extend("format" = "int64"))]
    pub bytes_total: u64,
    /// Objects delivered.
    #[schemars(extend("format" = "int64"))]
    pub objects_done: u64,
    /// Objects to deliver.
    #[schemars(extend("format" = "int64"))]
    pub objects_total: u64,
    /// Bytes the upload pods sent (all attempts).
    #[schemars(extend("format" = "int64"))]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_sent: u64,
    /// Bytes the server copied from the provider's bucket (`source.s3` in copy mode): they
    /// never passed through a pod.
    #[schemars(extend("format" = "int64"))]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_copied: u64,
    /// Multipart uploads open now (each pod journals its own in its OutboundShard).
    #[schemars(extend("format" = "int64"))]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_uploads: u64,
    /// Human-readable summary (printer column), e.g. `3/10 objects, 45%`.
    pub summary: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The bucket a delivery writes to, as it was when its Job started.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryTarget {
    /// Bucket name.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// S3-compatible endpoint, when not Amazon S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
    /// STS endpoint, when not AWS STS nor `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    /// The account id that must own the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bucket_owner: Option<String>,
    /// The private CA trusted for `endpoint` (PEM), when the destination names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Key prefix of every object of the delivery (destination prefix + keyPrefix, expanded).
    #[serde(default)]
    pub prefix: String,
    /// The pieces' name template as expanded when the Job started (when the spec sets one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
}
