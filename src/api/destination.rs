//! `OutboundDestination`: a customer's bucket and how we are allowed to write to it.

// kube's printcolumn(...) repeats `type_ = ...` inside one attribute, which clippy misreads.
#![allow(clippy::duplicated_attributes)]

use super::{SplitSize, prefix_rule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A customer's S3 bucket, the credentials mode that writes to it and the upload defaults.
/// The controller probes it (identity, HeadBucket, a probe object) and reports the outcome in the
/// `Ready` condition.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbound.dev",
    version = "v1alpha1",
    kind = "OutboundDestination",
    namespaced,
    status = "OutboundDestinationStatus",
    shortname = "odest",
    category = "outbound",
    doc = "A customer's S3 bucket and the credentials that write to it.",
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.s3.bucket"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Identity",
        type_ = "string",
        json_path = ".status.identity.arn",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OutboundDestinationSpec {
    /// Where the bucket is.
    pub s3: S3Location,
    /// How the uploader authenticates: exactly one of `secret` or `crossAccount`.
    pub credentials: CredentialsSource,
    /// Defaults for every delivery to this destination; deliveries may lower the split size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSettings>,
}

/// The bucket and the endpoint that serves it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix under which every delivery's objects are written (e.g. `audience/`). It ends
    /// in `/`, and holds no control characters, no `.`, `..` or empty (`//`) segment and at most
    /// 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(
        validation = Rule::new("self == '' || self.endsWith('/')").message("a non-empty prefix must end in / (e.g. audience/)"),
        validation = Rule::new(prefix_rule::NO_CONTROL).message(prefix_rule::NO_CONTROL_MESSAGE),
        validation = Rule::new(prefix_rule::NO_DOT_SEGMENT).message(prefix_rule::NO_DOT_SEGMENT_MESSAGE),
        validation = Rule::new(prefix_rule::NO_EMPTY_SEGMENT).message(prefix_rule::NO_EMPTY_SEGMENT_MESSAGE),
        validation = Rule::new(prefix_rule::MAX_BYTES).message(prefix_rule::MAX_BYTES_MESSAGE)
    )]
    pub prefix: Option<String>,
    /// URL of an S3-compatible server (e.g. `https://minio.storage.svc:9000`); unset means
    /// Amazon S3. Must be https, and not a loopback, link-local or cloud metadata address, unless
    /// the operator's admin allowed them (`Ready=False`, reason `EndpointNotAllowed`, otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// URL of the STS service used to show the writing identity and to assume roles. Unset: AWS
    /// STS, or `endpoint` when that is set (moto and MinIO serve STS there). When the endpoint
    /// serves no STS, the destination is still validated by the S3 probe and the identity shows
    /// at most a masked access key id. The same rules as for `endpoint` apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    /// The 12-digit AWS account id that owns the bucket. Sent as `ExpectedBucketOwner` with every
    /// request of the probe and the uploads, so nothing is written to (nor read from) a bucket of
    /// that name owned by anyone else; a probe that finds another owner reports
    /// `Ready=False`, reason `BucketOwnerMismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{12}$"))]
    pub expected_bucket_owner: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// PEM certificates of the private CA that signs `endpoint`'s certificate (an S3-compatible
    /// server inside the organisation), trusted besides the system's (the image's) trust store.
    /// Nothing is turned off: the certificate and its name are still checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("must hold PEM certificates (-----BEGIN CERTIFICATE-----)"))]
    pub ca_bundle: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Exactly one credentials mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secret) != has(self.crossAccount)").message("exactly one of credentials.secret or credentials.crossAccount must be set"))]
pub struct CredentialsSource {
    /// Keys handed over by the customer, in a Secret of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKeys>,
    /// No keys: our own workload identity (IRSA, Pod Identity, instance profile) writes, either
    /// directly (the customer allowlists it in the bucket policy) or by assuming `roleArn` in the
    /// customer's account with the ExternalId the operator generated (`status.externalId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_account: Option<CrossAccount>,
}

/// A Secret holding an access key pair.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeys {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key of the Secret holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the Secret holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
    /// Key of the Secret holding a session token, when the keys are temporary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

fn default_access_key_id_key() -> String {
    super::DEFAULT_ACCESS_KEY_ID_KEY.into()
}

fn default_secret_access_key_key() -> String {
    super::DEFAULT_SECRET_ACCESS_KEY_KEY.into()
}

/// Cross-account access without keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.externalId) || has(self.roleArn)").message("externalId needs roleArn"))]
pub struct CrossAccount {
    /// ARN of the role in the customer's account to assume; unset means our own identity writes
    /// and the customer's bucket policy allowlists it (see `status.bucketPolicyStatement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,
    /// An ExternalId of your own instead of the one the operator generates (`status.externalId`).
    /// Refused (`Ready=False`, reason `ExternalIdNotAllowed`) unless the operator's admin allows
    /// it: an ExternalId that the namespace's users choose does not protect the customer from a
    /// confused deputy, so AWS prescribes that the third party generate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,
    /// Service account the upload pods run as, carrying the workload identity (e.g. annotated
    /// for IRSA). Unset: the namespace's `outbound-upload` service account, which the operator
    /// creates and which uses the node's or the default chain's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// Upload settings; every field is optional.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadSettings {
    /// Largest object written: bigger files become several objects. Bytes or a quantity; default
    /// and maximum `1Ti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_size: Option<SplitSize>,
    /// Where a split falls: `lines` (every part a complete file of whole lines) or `bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_on: Option<SplitOn>,
    /// S3 storage class of the objects (e.g. `STANDARD`, `INTELLIGENT_TIERING`); unset: the
    /// bucket's default (`STANDARD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    /// Server-side encryption of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// Checksum sent with every part and checked on the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// Canned ACL sent with every object. Default `bucket-owner-full-control` in cross-account
    /// modes (safe to send, and gives the bucket owner the objects), none with keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<CannedAcl>,
}

/// A canned ACL S3 accepts on objects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CannedAcl {
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
    AwsExecRead,
    BucketOwnerRead,
    BucketOwnerFullControl,
}

impl CannedAcl {
    /// The spelling S3 (and the spec) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CannedAcl::Private => "private",
            CannedAcl::PublicRead => "public-read",
            CannedAcl::PublicReadWrite => "public-read-write",
            CannedAcl::AuthenticatedRead => "authenticated-read",
            CannedAcl::AwsExecRead => "aws-exec-read",
            CannedAcl::BucketOwnerRead => "bucket-owner-read",
            CannedAcl::BucketOwnerFullControl => "bucket-owner-full-control",
        }
    }
}

/// An S3 storage class.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    Standard,
    ReducedRedundancy,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    Glacier,
    DeepArchive,
    Outposts,
    GlacierIr,
    Snow,
    ExpressOnezone,
}

impl StorageClass {
    /// The spelling S3 (and the spec) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::Outposts => "OUTPOSTS",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Snow => "SNOW",
            StorageClass::ExpressOnezone => "EXPRESS_ONEZONE",
        }
    }
}

// One definition of each, shared with the data plane: what a user writes is what the uploader
// takes on its command line.
pub use crate::checksum::ChecksumAlgorithm;
pub use crate::plan::SplitOn;

/// Server-side encryption.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kmsKeyId) || self.algorithm == 'aws:kms'").message("kmsKeyId needs algorithm aws:kms"))]
pub struct ServerSideEncryption {
    /// `AES256` (S3-managed keys) or `aws:kms`.
    pub algorithm: SseAlgorithm,
    /// KMS key id or ARN (with `aws:kms`); unset means the bucket's default KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// Server-side encryption algorithm.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseAlgorithm {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl SseAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SseAlgorithm::Aes256 => "AES256",
            SseAlgorithm::AwsKms => "aws:kms",
        }
    }
}

/// What the controller last observed about the destination.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundDestinationStatus {
    /// `Ready`: whether the last probe could write to the bucket; its reason names what failed
    /// (SecretNotFound, SecretKeyMissing, InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied,
    /// NoSuchBucket, WrongRegion, KmsAccessDenied, Unreachable, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The identity that writes to the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// For the allowlist mode (crossAccount without roleArn): the statement the customer adds to
    /// the bucket policy so that our identity may write, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_policy_statement: Option<String>,
    /// With `roleArn`: the ExternalId the operator generated for this destination and sends when
    /// it assumes the role. Random, generated once and kept while the destination exists; the
    /// customer's trust policy requires it (see `trustPolicyStatement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// With `roleArn`: the statement the customer adds to the role's trust policy so that our
    /// identity may assume it with the ExternalId in use, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy_statement: Option<String>,
    /// When the bucket was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

/// The writing identity.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// AWS account id (from STS GetCallerIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// ARN of the principal (from STS GetCallerIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The access key id in use, masked to its first and last four characters (`AKIA…WXYZ`),
    /// when the Secret mode is used and the value looks like an access key id; never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// How the identity was learnt: `STS`, or `Unverified` when the endpoint serves no STS (the
    /// S3 probe still proved the keys can write).
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_and_storage_class_keep_the_spelling_users_write() {
        let upload: UploadSettings =
            serde_yaml::from_str("{acl: bucket-owner-full-control, storageClass: GLACIER_IR}")
                .unwrap();
        assert_eq!(upload.acl, Some(CannedAcl::BucketOwnerFullControl));
        assert_eq!(upload.storage_class, Some(StorageClass::GlacierIr));
        // What reaches the Job (as_str) is what serde reads and writes.
        for acl in [
            CannedAcl::Private,
            CannedAcl::PublicRead,
            CannedAcl::PublicReadWrite,
            CannedAcl::AuthenticatedRead,
            CannedAcl::AwsExecRead,
            CannedAcl::BucketOwnerRead,
            CannedAcl::BucketOwnerFullControl,
        ] {
            assert_eq!(serde_json::to_value(acl).unwrap(), acl.as_str());
        }
        for class in [
            StorageClass::Standard,
            StorageClass::ReducedRedundancy,
            StorageClass::StandardIa,
            StorageClass::OnezoneIa,
            StorageClass::IntelligentTiering,
            StorageClass::Glacier,
            StorageClass::DeepArchive,
            StorageClass::Outposts,
            StorageClass::GlacierIr,
            StorageClass::Snow,
            StorageClass::ExpressOnezone,
        ] {
            assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
        }
        assert!(serde_yaml::from_str::<UploadSettings>("{acl: everyone}").is_err());
        assert!(serde_yaml::from_str::<UploadSettings>("{storageClass: standard}").is_err());
    }
}
