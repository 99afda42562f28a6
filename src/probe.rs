//! Destination validation against S3: resolve the writing identity (STS), HeadBucket, write a
//! probe object with If-None-Match and exactly the headers of an upload (`WriteHeaders`), read it
//! back as uploads and the manifest do (HeadObject, GetObject) and delete it, then open a
//! multipart upload with the same headers, send it a part, list its parts and abort it (what
//! large objects, resumes and the operator's clean-up need); every failure mapped to a specific
//! reason with a message the customer can act on. Needs network (S3/STS), no Kubernetes client.

use crate::api::Identity;
pub use crate::credentials::masked_access_key_id;
use crate::credentials::{Access, Target, s3_client, sdk_config};
use crate::status::ProbeReport;
use crate::upload::headers::{BUCKET_OWNER_FULL_CONTROL, WriteHeaders};
use crate::validate::WriteSettings;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ObjectCannedAcl};
use aws_smithy_types::error::metadata::ErrorMetadata;

/// Why a destination is not ready (the `Ready=False` reasons).
pub mod reason {
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const INVALID_ACCESS_KEY_ID: &str = "InvalidAccessKeyId";
    pub const SIGNATURE_DOES_NOT_MATCH: &str = "SignatureDoesNotMatch";
    pub const EXPIRED_TOKEN: &str = "ExpiredToken";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const ASSUME_ROLE_DENIED: &str = "AssumeRoleDenied";
    pub const NO_SUCH_BUCKET: &str = "NoSuchBucket";
    pub const WRONG_REGION: &str = "WrongRegion";
    pub const KMS_ACCESS_DENIED: &str = "KmsAccessDenied";
    pub const UNREACHABLE: &str = "Unreachable";
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
    pub const PROBE_FAILED: &str = "ProbeFailed";
    pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
    pub const INVALID_CA_BUNDLE: &str = "InvalidCABundle";
    pub const EXTERNAL_ID_NOT_ALLOWED: &str = "ExternalIdNotAllowed";
    pub const CRD_OUTDATED: &str = "CRDOutdated";
    pub const BUCKET_OWNER_MISMATCH: &str = "BucketOwnerMismatch";
    /// The admin's tenancy grants do not allow the bucket, role or endpoint to the namespace.
    pub const NOT_GRANTED: &str = crate::tenancy::NOT_GRANTED;
    /// The bucket refuses the ACL the uploads send (a bucket policy that requires another one,
    /// or ACLs disabled by object ownership), while it accepts the same write otherwise.
    pub const ACL_REFUSED: &str = "AclRefused";
}

/// Replaces every occurrence of a secret value in `text`: servers may quote the request they
/// refused (a signature mismatch can carry the credential scope), and none of it may reach a
/// condition, an Event or a log line.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// The values of an access that must never be shown.
fn secret_values(access: &Access) -> Vec<&str> {
    match access {
        Access::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            let mut values = vec![access_key_id.as_str(), secret_access_key.as_str()];
            values.extend(session_token.as_deref());
            values
        }
        Access::WorkloadIdentity | Access::AssumeRole { .. } => Vec::new(),
    }
}

/// What the probe needs to know about a destination.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    pub bucket: String,
    pub prefix: String,
    pub target: Target,
    /// What the uploads to this destination send with every object (ACL, SSE, storage class,
    /// checksum): the probe object is written with the same.
    pub write: WriteSettings,
    /// The allowlist mode: our own identity, named in the customer's bucket policy.
    pub allowlist: bool,
}

/// The probe step that failed (shapes the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    AssumeRole,
    Identity,
    HeadBucket,
    PutObject,
    HeadObject,
    GetObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    ListParts,
    AbortMultipartUpload,
}

impl Step {
    fn action(self) -> &'static str {
        match self {
            Step::AssumeRole => "sts:AssumeRole",
            Step::Identity => "sts:GetCallerIdentity",
            Step::HeadBucket => "HeadBucket (s3:ListBucket)",
            Step::PutObject => "PutObject (s3:PutObject)",
            Step::HeadObject => "HeadObject (s3:GetObject)",
            Step::GetObject => "GetObject (s3:GetObject)",
            Step::DeleteObject => "DeleteObject (s3:DeleteObject)",
            Step::CreateMultipartUpload => "CreateMultipartUpload (s3:PutObject)",
            Step::UploadPart => "UploadPart (s3:PutObject)",
            Step::ListParts => "ListParts (s3:ListMultipartUploadParts)",
            Step::AbortMultipartUpload => "AbortMultipartUpload (s3:AbortMultipartUpload)",
        }
    }
}

/// What an SDK error says, reduced to what the mapping needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFacts {
    pub code: Option<String>,
    pub message: Option<String>,
    pub http_status: Option<u16>,
    /// `x-amz-bucket-region` of the response, when S3 tells where the bucket lives.
    pub bucket_region: Option<String>,
    /// The request never got an answer (DNS, connection, TLS, timeout).
    pub unreachable: bool,
    /// No credentials could be loaded (workload identity missing).
    pub no_credentials: bool,
    /// The whole error chain, for the message.
    pub text: String,
}

impl ErrorFacts {
    pub fn from_sdk<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // The Display chain of every source, without the Debug dump DisplayErrorContext ends with.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        let meta: Option<&ErrorMetadata> = match err {
            SdkError::ServiceError(e) => Some(e.err().meta()),
            _ => None,
        };
        let raw = err.raw_response();
        let no_credentials = matches!(err, SdkError::DispatchFailure(_))
            && text.to_ascii_lowercase().contains("credential");
        ErrorFacts {
            code: meta.and_then(|m| m.code()).map(str::to_string),
            message: meta.and_then(|m| m.message()).map(str::to_string),
            http_status: raw.map(|r| r.status().as_u16()),
            bucket_region: raw
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_string),
            unreachable: !no_credentials
                && matches!(
                    err,
                    SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
                ),
            no_credentials,
            text,
        }
    }
}

/// A server-sent token (error code, region) as it may be quoted, or `None` when it is anything
/// but a short word: a custom endpoint answers whatever it likes.
fn token(value: &str, allowed: impl Fn(char) -> bool) -> Option<&str> {
    (!value.is_empty() && value.len() <= 64 && value.chars().all(allowed)).then_some(value)
}

impl ErrorFacts {
    /// The same facts with the server's own text replaced by the class of the failure (what kind
    /// of network failure, or the error code and HTTP status): a custom endpoint is any server a
    /// namespace's user names, and its answers must not be relayed into status, Events and logs.
    pub fn classed(&self) -> ErrorFacts {
        let lower = self.text.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
        let code = self
            .code
            .as_deref()
            .and_then(|c| token(c, |ch| ch.is_ascii_alphanumeric() || ch == '.'));
        let class = if self.no_credentials {
            "no credentials".to_string()
        } else if self.unreachable {
            if has(&["connection refused"]) {
                "connection refused".into()
            } else if has(&["timed out", "timeout"]) {
                "timed out".into()
            } else if has(&["dns", "lookup", "resolve", "name or service"]) {
                "name not resolved".into()
            } else if has(&[
                "unknownissuer",
                "unknown issuer",
                "invalid peer certificate",
            ]) {
                "the server's TLS certificate is not trusted (signed by a private CA? give that \
                 CA in caBundle)"
                    .into()
            } else if has(&["tls", "certificate", "handshake"]) {
                "TLS handshake failed".into()
            } else if has(&["connection reset", "broken pipe", "connection closed"]) {
                "connection reset".into()
            } else {
                "no answer".into()
            }
        } else {
            match (code, self.http_status) {
                (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
                (Some(code), None) => code.to_string(),
                (None, Some(status)) => format!("HTTP {status}"),
                (None, None) => "unexpected answer".into(),
            }
        };
        ErrorFacts {
            code: code.map(str::to_string),
            message: None,
            http_status: self.http_status,
            bucket_region: self.bucket_region.as_deref().and_then(|r| {
                token(r, |ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'
                })
                .map(str::to_string)
            }),
            unreachable: self.unreachable,
            no_credentials: self.no_credentials,
            text: class,
        }
    }
}

/// Maps a failed step to a `Ready=False` reason and an actionable message. Pure.
pub fn classify(
    step: Step,
    facts: &ErrorFacts,
    bucket: &str,
    region: &str,
    kms: bool,
) -> (String, String) {
    let detail = facts.message.clone().unwrap_or_else(|| facts.text.clone());
    let action = step.action();
    let r = |reason: &str, msg: String| (reason.to_string(), msg);
    if facts.no_credentials {
        return r(
            reason::CREDENTIALS_UNAVAILABLE,
            format!(
                "no AWS credentials for {action}: give the upload pods a workload identity (IRSA, Pod Identity, instance profile): {detail}"
            ),
        );
    }
    if facts.unreachable {
        return r(
            reason::UNREACHABLE,
            format!(
                "failed to reach the endpoint for {action}: check the endpoint, region and network: {detail}"
            ),
        );
    }
    let code = facts.code.as_deref().unwrap_or("");
    let lower_detail = detail.to_ascii_lowercase();
    match code {
        "InvalidAccessKeyId" | "InvalidClientTokenId" => r(
            reason::INVALID_ACCESS_KEY_ID,
            format!(
                "{action}: the access key id is unknown to the server: check the access key id in the Secret"
            ),
        ),
        "SignatureDoesNotMatch" => r(
            reason::SIGNATURE_DOES_NOT_MATCH,
            format!(
                "{action}: the signature does not match: the secret access key in the Secret is wrong for this access key id"
            ),
        ),
        "ExpiredToken" | "TokenRefreshRequired" => r(
            reason::EXPIRED_TOKEN,
            format!("{action}: the session token has expired: rotate the keys in the Secret"),
        ),
        "NoSuchBucket" => r(
            reason::NO_SUCH_BUCKET,
            format!("bucket {bucket} does not exist: check spec.s3.bucket"),
        ),
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => r(
            reason::WRONG_REGION,
            match &facts.bucket_region {
                Some(actual) => format!(
                    "bucket {bucket} is in region {actual}, not {region}: set spec.s3.region to {actual}"
                ),
                None => format!(
                    "bucket {bucket} is not in region {region}: fix spec.s3.region ({detail})"
                ),
            },
        ),
        c if c.starts_with("KMS.") || (kms && lower_detail.contains("kms")) => r(
            reason::KMS_ACCESS_DENIED,
            format!(
                "{action} with SSE-KMS was denied: grant kms:GenerateDataKey and kms:Decrypt on the key to the writing identity: {detail}"
            ),
        ),
        // STS answers some refusals without a parseable code (moto): a 403 there is a refusal too.
        _ if step == Step::AssumeRole
            && (code == "AccessDenied" || facts.http_status == Some(403)) =>
        {
            r(
                reason::ASSUME_ROLE_DENIED,
                format!(
                    "assuming the role was denied: the role's trust policy must allow our identity with the configured sts:ExternalId: {detail}"
                ),
            )
        }
        "AccessControlListNotSupported" => r(
            reason::ACL_REFUSED,
            format!(
                "{action} on bucket {bucket} was refused: the bucket has ACLs disabled (object ownership BucketOwnerEnforced) and takes no ACL but bucket-owner-full-control: set spec.upload.acl to bucket-owner-full-control"
            ),
        ),
        "AccessDenied" | "AllAccessDisabled" | "Forbidden" => r(
            reason::ACCESS_DENIED,
            format!(
                "{action} on bucket {bucket} was denied: grant it to the writing identity: {detail}"
            ),
        ),
        _ => match facts.http_status {
            // The object was written a moment ago: a missing one is the server's oddity, not a
            // missing bucket.
            Some(404) if matches!(step, Step::HeadObject | Step::GetObject) => r(
                reason::PROBE_FAILED,
                format!("{action} did not find the probe object just written to bucket {bucket}"),
            ),
            Some(404) => r(
                reason::NO_SUCH_BUCKET,
                format!("bucket {bucket} does not exist: check spec.s3.bucket"),
            ),
            Some(301) => r(
                reason::WRONG_REGION,
                match &facts.bucket_region {
                    Some(actual) => format!(
                        "bucket {bucket} is in region {actual}, not {region}: set spec.s3.region to {actual}"
                    ),
                    None => {
                        format!("bucket {bucket} is not in region {region}: fix spec.s3.region")
                    }
                },
            ),
            Some(403) => r(
                reason::ACCESS_DENIED,
                format!(
                    "{action} on bucket {bucket} was denied (403): check the keys and the permissions of the writing identity"
                ),
            ),
            _ => r(reason::PROBE_FAILED, format!("{action} failed: {detail}")),
        },
    }
}

/// The bucket-policy statements that let `principal_arn` deliver under `prefix` (allowlist mode).
pub fn bucket_policy_statement(principal_arn: &str, bucket: &str, prefix: &str) -> String {
    let principal = role_arn_of(principal_arn);
    let statement = serde_json::json!([
        {
            "Sid": "OutboundDeliverObjects",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": format!("arn:aws:s3:::{bucket}/{prefix}*"),
        },
        {
            "Sid": "OutboundListBucket",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"],
            "Resource": format!("arn:aws:s3:::{bucket}"),
        }
    ]);
    serde_json::to_string_pretty(&statement).expect("json serializes")
}

/// The trust-policy statement that lets `principal_arn` assume the customer's role with
/// `external_id` (the AssumeRole mode).
pub fn trust_policy_statement(principal_arn: &str, external_id: &str) -> String {
    let statement = serde_json::json!({
        "Sid": "OutboundAssumeRole",
        "Effect": "Allow",
        "Principal": {"AWS": role_arn_of(principal_arn)},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
    });
    serde_json::to_string_pretty(&statement).expect("json serializes")
}

/// An assumed-role session ARN names its role: bucket policies must name the role, not the session.
pub fn role_arn_of(arn: &str) -> String {
    // arn:aws:sts::123456789012:assumed-role/Role/session -> arn:aws:iam::123456789012:role/Role
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6
        && parts[2] == "sts"
        && let Some(rest) = parts[5].strip_prefix("assumed-role/")
    {
        let role = rest.split('/').next().unwrap_or(rest);
        return format!("{}:{}:iam::{}:role/{role}", parts[0], parts[1], parts[4]);
    }
    arn.to_string()
}

/// Probes a destination. Never returns an error: every failure is a report with a reason, whose
/// message holds no value of the Secret.
pub async fn probe(target: &ProbeTarget, access: &Access) -> ProbeReport {
    let mut report = probe_unredacted(target, access).await;
    // Shown even (above all) when AssumeRole is refused: it says what the customer must add.
    if let Access::AssumeRole {
        external_id: Some(external_id),
        ..
    } = access
    {
        report.trust_policy_statement = our_arn(target)
            .await
            .map(|arn| trust_policy_statement(&arn, external_id));
    }
    if let Some((_, message)) = &mut report.failure {
        *message = redact(message, &secret_values(access));
    }
    report
}

/// Our own identity's ARN (the principal a customer's trust policy names), when STS tells it.
async fn our_arn(target: &ProbeTarget) -> Option<String> {
    let base = sdk_config(&Access::WorkloadIdentity, &target.target).await;
    match crate::credentials::sts_client(&base, &target.target)
        .get_caller_identity()
        .send()
        .await
    {
        Ok(out) => out.arn,
        Err(e) => {
            let error = ErrorFacts::from_sdk(&e).classed().text;
            tracing::debug!(%error, "our own identity is unknown; no trust-policy statement");
            None
        }
    }
}

async fn probe_unredacted(target: &ProbeTarget, access: &Access) -> ProbeReport {
    // The uploader parses the same text; what it would refuse, the probe refuses first.
    let headers = match target.write.headers() {
        Ok(headers) => headers,
        Err(message) => {
            return ProbeReport::refused(
                reason::PROBE_FAILED,
                format!("spec.upload cannot be sent: {message}"),
            );
        }
    };
    let kms = target.write.sse.as_deref() == Some("aws:kms");
    // AWS's answers are quoted as they are (they say what to fix); a custom endpoint's only by
    // class.
    let custom = target.target.endpoint.is_some() || target.target.sts_endpoint.is_some();
    let fail = |step: Step,
                facts: &ErrorFacts,
                identity: Option<Identity>,
                policy: Option<String>| ProbeReport {
        failure: Some(classify(
            step,
            &if custom {
                facts.classed()
            } else {
                facts.clone()
            },
            &target.bucket,
            &target.target.region,
            kms,
        )),
        identity,
        bucket_policy_statement: policy,
        trust_policy_statement: None,
    };
    // With a custom endpoint and no explicit stsEndpoint, STS is only a guess: many S3-compatible
    // servers (versitygw) have none, so a failing identity call does not fail the probe there.
    let sts_optional = target.target.endpoint.is_some() && target.target.sts_endpoint.is_none();

    let base_access = match access {
        Access::AssumeRole { .. } => Access::WorkloadIdentity,
        other => other.clone(),
    };
    let base = sdk_config(&base_access, &target.target).await;
    let sts_for =
        |config: &aws_config::SdkConfig| crate::credentials::sts_client(config, &target.target);

    // AssumeRole explicitly, so that a trust-policy or ExternalId refusal gets its own reason.
    let (config, access_key_id) = match access {
        Access::AssumeRole {
            role_arn,
            external_id,
            session_name,
        } => {
            let mut req = sts_for(&base)
                .assume_role()
                .role_arn(role_arn)
                .role_session_name(session_name);
            if let Some(external_id) = external_id {
                req = req.external_id(external_id);
            }
            match req.send().await {
                Ok(out) => {
                    let Some(c) = out.credentials else {
                        let facts = ErrorFacts {
                            text: "no credentials in the AssumeRole answer".into(),
                            ..Default::default()
                        };
                        return fail(Step::AssumeRole, &facts, None, None);
                    };
                    let keys = Access::Keys {
                        access_key_id: c.access_key_id,
                        secret_access_key: c.secret_access_key,
                        session_token: Some(c.session_token),
                    };
                    (sdk_config(&keys, &target.target).await, None)
                }
                Err(e) => return fail(Step::AssumeRole, &ErrorFacts::from_sdk(&e), None, None),
            }
        }
        // Only ever masked: the identity itself comes from STS or from nowhere.
        Access::Keys { access_key_id, .. } => (base, masked_access_key_id(access_key_id)),
        Access::WorkloadIdentity => (base, None),
    };

    let identity = match sts_for(&config).get_caller_identity().send().await {
        Ok(out) => Identity {
            account: out.account,
            arn: out.arn,
            access_key_id: access_key_id.clone(),
            source: "STS".into(),
        },
        Err(e) if sts_optional => {
            let error = ErrorFacts::from_sdk(&e).classed().text;
            tracing::debug!(%error, "no STS at the endpoint; identity unverified");
            Identity {
                account: None,
                arn: None,
                access_key_id: access_key_id.clone(),
                source: "Unverified".into(),
            }
        }
        Err(e) => return fail(Step::Identity, &ErrorFacts::from_sdk(&e), None, None),
    };
    let policy = match (&identity.arn, target.allowlist) {
        (Some(arn), true) => Some(bucket_policy_statement(arn, &target.bucket, &target.prefix)),
        _ => None,
    };

    let s3 = s3_client(&config, &target.target);
    // HEAD answers carry no error code: a 403 here is only understood after PutObject.
    let head_denied = match s3.head_bucket().bucket(&target.bucket).send().await {
        Ok(_) => None,
        Err(e) => {
            let facts = ErrorFacts::from_sdk(&e);
            if facts.http_status == Some(403) {
                // S3 answers a wrong owner as it answers a missing permission (403). Only the same
                // HEAD without the condition tells them apart: allowed there, refused with it.
                if let Some(owner) = &target.target.expected_bucket_owner {
                    let unconditioned = Target {
                        expected_bucket_owner: None,
                        ..target.target.clone()
                    };
                    let plain = s3_client(&config, &unconditioned);
                    if plain
                        .head_bucket()
                        .bucket(&target.bucket)
                        .send()
                        .await
                        .is_ok()
                    {
                        return ProbeReport {
                            failure: Some((
                                reason::BUCKET_OWNER_MISMATCH.into(),
                                format!(
                                    "bucket {} is not owned by account {owner} (spec.s3.expectedBucketOwner): nothing is written to it; check the bucket name and the account id",
                                    target.bucket
                                ),
                            )),
                            identity: Some(identity),
                            bucket_policy_statement: policy,
                            trust_policy_statement: None,
                        };
                    }
                }
                Some(facts)
            } else {
                return fail(Step::HeadBucket, &facts, Some(identity), policy);
            }
        }
    };

    let key = probe_key(&target.prefix);
    if let Err(facts) = put_probe(&s3, &target.bucket, &key, &headers).await {
        // Someone else's object at our random key: the write permission is proven all the same.
        if facts.code.as_deref() != Some("PreconditionFailed") {
            if let Some(message) = acl_refusal(&s3, target, &key, &headers, &facts).await {
                return ProbeReport {
                    failure: Some((reason::ACL_REFUSED.into(), message)),
                    identity: Some(identity),
                    bucket_policy_statement: policy,
                    trust_policy_statement: None,
                };
            }
            return fail(Step::PutObject, &facts, Some(identity), policy);
        }
    }
    let read = read_back(&s3, &target.bucket, &key).await;
    let deleted = s3
        .delete_object()
        .bucket(&target.bucket)
        .key(&key)
        .send()
        .await;
    if let Err((step, facts)) = read {
        let mut report = fail(step, &facts, Some(identity), policy);
        if let Some((_, message)) = &mut report.failure {
            message.push_str(&format!(
                " (probe object {key}{}): uploads read objects back, HeadObject to compare and resume them, GetObject for the manifest",
                if deleted.is_err() {
                    ", left in the bucket: DeleteObject failed too"
                } else {
                    ""
                }
            ));
        }
        return report;
    }
    if let Err(e) = deleted {
        let facts = ErrorFacts::from_sdk(&e);
        let mut report = fail(Step::DeleteObject, &facts, Some(identity), policy);
        if let Some((_, message)) = &mut report.failure {
            message.push_str(&format!(" (probe object {key} was left in the bucket)"));
        }
        return report;
    }
    if let Err(refusal) = multipart_probe(&s3, target, &headers).await {
        let mut report = fail(refusal.step, &refusal.facts, Some(identity), policy);
        if let Some((_, message)) = &mut report.failure {
            message.push_str(&refusal.note());
        }
        return report;
    }
    if let Some(facts) = head_denied {
        return fail(Step::HeadBucket, &facts, Some(identity), policy);
    }
    ProbeReport {
        failure: None,
        identity: Some(identity),
        bucket_policy_statement: policy,
        trust_policy_statement: None,
    }
}

/// A fresh key under the prefix for one probe object.
fn probe_key(prefix: &str) -> String {
    format!("{prefix}.outbound-probe-{:016x}", rand::random::<u64>())
}

const PROBE_BODY: &[u8] = b"outbound probe\n";

/// Writes a probe object as an upload would: If-None-Match, and `headers` with the body's
/// checksum.
async fn put_probe(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    headers: &WriteHeaders,
) -> Result<(), ErrorFacts> {
    let checksum =
        crate::checksum::to_base64(&crate::checksum::digest(headers.checksum, PROBE_BODY));
    let request = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .body(ByteStream::from_static(PROBE_BODY));
    match headers.put(request, &checksum).send().await {
        Ok(_) => Ok(()),
        Err(e) => Err(ErrorFacts::from_sdk(&e)),
    }
}

/// Reads the probe object back as the uploads do: HeadObject with checksums (comparing an object
/// already at a key, resuming, the manifest's sizes and checksums), then GetObject (an existing
/// manifest is compared by its content).
async fn read_back(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(), (Step, ErrorFacts)> {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| (Step::HeadObject, ErrorFacts::from_sdk(&e)))?;
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| (Step::GetObject, ErrorFacts::from_sdk(&e)))?;
    // The body too: a KMS-encrypted object is only decrypted as it is read.
    object.body.collect().await.map_err(|e| {
        (
            Step::GetObject,
            ErrorFacts {
                unreachable: true,
                text: e.to_string(),
                ..Default::default()
            },
        )
    })?;
    Ok(())
}

/// Whether a refused probe write was refused for its ACL: either S3 says so
/// (`AccessControlListNotSupported`), or a 403 that the same write with
/// `bucket-owner-full-control` (the ACL every bucket that takes cross-account writes accepts)
/// does not get. Then the message that names the bucket, the key and the header; `None` when the
/// ACL is not the cause (the refusal is then reported as it is).
async fn acl_refusal(
    s3: &aws_sdk_s3::Client,
    target: &ProbeTarget,
    key: &str,
    headers: &WriteHeaders,
    facts: &ErrorFacts,
) -> Option<String> {
    let bucket = &target.bucket;
    let sent = match &headers.acl {
        Some(acl) => format!("with x-amz-acl: {}", acl.as_str()),
        None => "without an x-amz-acl header".to_string(),
    };
    let fix = format!("set spec.upload.acl to {BUCKET_OWNER_FULL_CONTROL}");
    if facts.code.as_deref() == Some("AccessControlListNotSupported") {
        return Some(format!(
            "bucket {bucket} refuses PutObject of {key} {sent}: it has ACLs disabled (object ownership BucketOwnerEnforced) and takes no ACL but {BUCKET_OWNER_FULL_CONTROL}: {fix}"
        ));
    }
    let owner_acl = ObjectCannedAcl::BucketOwnerFullControl;
    if facts.http_status != Some(403) || headers.acl.as_ref() == Some(&owner_acl) {
        return None;
    }
    let other = probe_key(&target.prefix);
    match put_probe(s3, bucket, &other, &headers.with_acl(Some(owner_acl))).await {
        Ok(()) => {}
        Err(f) if f.code.as_deref() == Some("PreconditionFailed") => {}
        Err(_) => return None,
    }
    let left = match s3.delete_object().bucket(bucket).key(&other).send().await {
        Ok(_) => String::new(),
        Err(_) => format!(" (probe object {other} was left in the bucket)"),
    };
    Some(format!(
        "bucket {bucket} refuses PutObject of {key} {sent} and accepts the same write with x-amz-acl: {BUCKET_OWNER_FULL_CONTROL} (its bucket policy requires that ACL): {fix}{left}"
    ))
}

/// A multipart step the bucket refused, with what it left behind.
struct MultipartRefusal {
    step: Step,
    facts: ErrorFacts,
    key: String,
    /// The probe's upload, when its abort failed too.
    left_open: Option<String>,
}

impl MultipartRefusal {
    /// Why the uploads need the refused step, and what the probe left in the bucket.
    fn note(&self) -> String {
        let key = &self.key;
        let why = match self.step {
            // CreateMultipartUpload of the same key with the same headers passed: what differs
            // is the headers only object creation carries.
            Step::UploadPart if self.facts.http_status == Some(403) => {
                "; CreateMultipartUpload of the same key was accepted, so a condition on a header that parts do not carry refuses them (a bucket policy that requires s3:x-amz-acl on s3:PutObject does: a part carries no ACL): objects above the multipart threshold cannot be delivered until the condition lets requests without that header through (for example with \"Null\": {\"s3:x-amz-acl\": \"false\"}) or the bucket uses object ownership BucketOwnerEnforced instead"
            }
            Step::ListParts => "; a resumed upload lists the parts already stored",
            Step::AbortMultipartUpload => {
                "; the operator aborts the open uploads of failed and deleted deliveries"
            }
            _ => "; objects above the multipart threshold are written as multipart uploads",
        };
        let left = match &self.left_open {
            Some(id) => format!(", upload {id} left open: AbortMultipartUpload failed too"),
            None => String::new(),
        };
        format!(" (multipart probe object {key}{left}){why}")
    }
}

/// Opens a multipart upload as the uploads do (their headers), sends one part, lists the parts and
/// aborts it: the steps of a large object, a resume and the operator's clean-up.
async fn multipart_probe(
    s3: &aws_sdk_s3::Client,
    target: &ProbeTarget,
    headers: &WriteHeaders,
) -> Result<(), MultipartRefusal> {
    let bucket = &target.bucket;
    let key = probe_key(&target.prefix);
    let refused = |step: Step, facts: ErrorFacts, left_open: Option<String>| MultipartRefusal {
        step,
        facts,
        key: key.clone(),
        left_open,
    };
    let created = headers
        .create(s3.create_multipart_upload().bucket(bucket).key(&key))
        .send()
        .await
        .map_err(|e| refused(Step::CreateMultipartUpload, ErrorFacts::from_sdk(&e), None))?;
    let Some(upload_id) = created.upload_id else {
        let facts = ErrorFacts {
            text: "no upload id in the answer".into(),
            ..Default::default()
        };
        return Err(refused(Step::CreateMultipartUpload, facts, None));
    };
    let checksum =
        crate::checksum::to_base64(&crate::checksum::digest(headers.checksum, PROBE_BODY));
    let used = async {
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(1)
            .body(ByteStream::from_static(PROBE_BODY));
        headers
            .part(part, &checksum)
            .send()
            .await
            .map_err(|e| (Step::UploadPart, ErrorFacts::from_sdk(&e)))?;
        if let Err(e) = s3
            .list_parts()
            .bucket(bucket)
            .key(&key)
            .upload_id(&upload_id)
            .send()
            .await
        {
            let facts = ErrorFacts::from_sdk(&e);
            // Only a refusal counts here: moto 5.2.5 answers 200 with a root element the SDK does
            // not take (ListPartsResponse), which still says the permission is there.
            if !facts.http_status.is_some_and(|s| (200..300).contains(&s)) {
                return Err((Step::ListParts, facts));
            }
        }
        Ok(())
    }
    .await;
    let aborted = s3
        .abort_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await;
    match (used, aborted) {
        (Err((step, facts)), aborted) => Err(refused(
            step,
            facts,
            aborted.is_err().then(|| upload_id.clone()),
        )),
        (Ok(()), Err(e)) => Err(refused(
            Step::AbortMultipartUpload,
            ErrorFacts::from_sdk(&e),
            Some(upload_id.clone()),
        )),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_trust_statement_names_the_role_of_our_session_and_the_external_id() {
        let statement = trust_policy_statement(
            "arn:aws:sts::111122223333:assumed-role/outbound-operator/i-1",
            "0123456789abcdef0123456789abcdef",
        );
        let v: serde_json::Value = serde_json::from_str(&statement).unwrap();
        assert_eq!(v["Action"], "sts:AssumeRole");
        assert_eq!(
            v["Principal"]["AWS"],
            "arn:aws:iam::111122223333:role/outbound-operator"
        );
        assert_eq!(
            v["Condition"]["StringEquals"]["sts:ExternalId"],
            "0123456789abcdef0123456789abcdef"
        );
    }
    use super::*;

    fn facts(code: &str, status: u16) -> ErrorFacts {
        ErrorFacts {
            code: (!code.is_empty()).then(|| code.to_string()),
            http_status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn maps_error_codes_to_reasons() {
        let cases = [
            (
                Step::PutObject,
                facts("InvalidAccessKeyId", 403),
                reason::INVALID_ACCESS_KEY_ID,
            ),
            (
                Step::Identity,
                facts("InvalidClientTokenId", 403),
                reason::INVALID_ACCESS_KEY_ID,
            ),
            (
                Step::PutObject,
                facts("SignatureDoesNotMatch", 403),
                reason::SIGNATURE_DOES_NOT_MATCH,
            ),
            (
                Step::PutObject,
                facts("AccessDenied", 403),
                reason::ACCESS_DENIED,
            ),
            (
                Step::AssumeRole,
                facts("AccessDenied", 403),
                reason::ASSUME_ROLE_DENIED,
            ),
            (
                Step::PutObject,
                facts("NoSuchBucket", 404),
                reason::NO_SUCH_BUCKET,
            ),
            (Step::HeadBucket, facts("", 404), reason::NO_SUCH_BUCKET),
            (Step::HeadBucket, facts("", 301), reason::WRONG_REGION),
            (
                Step::PutObject,
                facts("PermanentRedirect", 301),
                reason::WRONG_REGION,
            ),
            (
                Step::PutObject,
                facts("KMS.DisabledException", 400),
                reason::KMS_ACCESS_DENIED,
            ),
            (
                Step::PutObject,
                facts("ExpiredToken", 400),
                reason::EXPIRED_TOKEN,
            ),
            (
                Step::PutObject,
                facts("InternalError", 500),
                reason::PROBE_FAILED,
            ),
        ];
        for (step, f, want) in cases {
            assert_eq!(
                classify(step, &f, "b", "us-east-1", false).0,
                want,
                "{step:?} {f:?}"
            );
        }
        let kms = ErrorFacts {
            code: Some("AccessDenied".into()),
            message: Some("User is not authorized to perform kms:GenerateDataKey".into()),
            ..Default::default()
        };
        assert_eq!(
            classify(Step::PutObject, &kms, "b", "r", true).0,
            reason::KMS_ACCESS_DENIED
        );
        let down = ErrorFacts {
            unreachable: true,
            text: "connection refused".into(),
            ..Default::default()
        };
        assert_eq!(
            classify(Step::Identity, &down, "b", "r", false).0,
            reason::UNREACHABLE
        );
    }

    #[test]
    fn refused_acls_and_reads_get_their_own_reasons() {
        let (reason, msg) = classify(
            Step::PutObject,
            &facts("AccessControlListNotSupported", 400),
            "acme",
            "r",
            false,
        );
        assert_eq!(reason, reason::ACL_REFUSED);
        assert!(
            msg.contains("acme") && msg.contains("bucket-owner-full-control"),
            "{msg}"
        );
        // HEAD answers carry no code: a 403 is a missing s3:GetObject, named as such.
        let (reason, msg) = classify(Step::HeadObject, &facts("", 403), "acme", "r", false);
        assert_eq!(reason, reason::ACCESS_DENIED);
        assert!(
            msg.starts_with("HeadObject (s3:GetObject) on bucket acme"),
            "{msg}"
        );
        // The object was just written: not finding it is no missing bucket.
        let (reason, _) = classify(Step::GetObject, &facts("", 404), "acme", "r", false);
        assert_eq!(reason, reason::PROBE_FAILED);
    }

    #[test]
    fn a_refused_part_says_what_a_policy_on_the_acl_does_to_multipart_uploads() {
        let refusal = |step, status| MultipartRefusal {
            step,
            facts: facts("AccessDenied", status),
            key: "in/.outbound-probe-1".into(),
            left_open: None,
        };
        let note = refusal(Step::UploadPart, 403).note();
        assert!(
            note.contains("in/.outbound-probe-1") && note.contains("s3:x-amz-acl"),
            "{note}"
        );
        assert!(
            !refusal(Step::UploadPart, 500)
                .note()
                .contains("s3:x-amz-acl")
        );
        let open = MultipartRefusal {
            left_open: Some("upload-7".into()),
            ..refusal(Step::ListParts, 403)
        }
        .note();
        assert!(
            open.contains("upload upload-7 left open") && open.contains("resumed"),
            "{open}"
        );
    }

    #[test]
    fn only_key_shaped_access_key_ids_show_and_only_masked() {
        assert_eq!(
            masked_access_key_id("AKIAIOSFODNN7EXAMPLE").as_deref(),
            Some("AKIA\u{2026}MPLE")
        );
        for not_a_key in [
            "sentinel-db-password-1234",
            "hunter2",
            "akiaiosfodnn7example",
            "AKIA IOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7",
            "",
            "ÄKIAIOSFODNN7EXAMPLE",
        ] {
            assert_eq!(masked_access_key_id(not_a_key), None, "{not_a_key}");
        }
        assert_eq!(masked_access_key_id(&"A".repeat(129)), None);
    }

    #[test]
    fn secret_values_are_cut_out_of_messages() {
        let access = Access::Keys {
            access_key_id: "db-password".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("tok".into()),
        };
        let text = "Credential=db-password/20261127 signed with s3cr3t and tok";
        let clean = redact(text, &secret_values(&access));
        assert_eq!(
            clean,
            "Credential=[redacted]/20261127 signed with [redacted] and [redacted]"
        );
        assert_eq!(redact("nothing", &[""]), "nothing");
    }

    #[test]
    fn a_custom_endpoint_is_reported_by_class_never_by_its_text() {
        let refused = ErrorFacts {
            unreachable: true,
            text: "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)".into(),
            ..Default::default()
        };
        let (reason, msg) = classify(Step::HeadBucket, &refused.classed(), "b", "r", false);
        assert_eq!(reason, reason::UNREACHABLE);
        assert!(msg.ends_with(": connection refused"), "{msg}");
        let answer = ErrorFacts {
            code: Some("AccessDenied".into()),
            message: Some("ami-id\nhostname\niam/security-credentials/role".into()),
            http_status: Some(403),
            bucket_region: Some("<html>".into()),
            text: "service error: ami-id hostname".into(),
            ..Default::default()
        };
        let classed = answer.classed();
        assert_eq!(classed.bucket_region, None);
        let (reason, msg) = classify(Step::PutObject, &classed, "b", "r", false);
        assert_eq!(reason, reason::ACCESS_DENIED);
        assert!(
            msg.ends_with(": AccessDenied (HTTP 403)") && !msg.contains("ami-id"),
            "{msg}"
        );
        let odd = ErrorFacts {
            code: Some("<b>nope</b>".into()),
            http_status: Some(500),
            text: "whatever the server said".into(),
            ..Default::default()
        };
        let (_, msg) = classify(Step::PutObject, &odd.classed(), "b", "r", false);
        assert!(msg.ends_with("failed: HTTP 500"), "{msg}");
    }

    #[test]
    fn wrong_region_names_the_right_one() {
        let f = ErrorFacts {
            http_status: Some(301),
            bucket_region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let (_, msg) = classify(Step::HeadBucket, &f, "acme", "us-east-1", false);
        assert!(msg.contains("eu-west-1") && msg.contains("acme"), "{msg}");
    }

    #[test]
    fn bucket_policy_names_the_role_not_the_session() {
        assert_eq!(
            role_arn_of("arn:aws:sts::123456789012:assumed-role/outbound/i-0abc"),
            "arn:aws:iam::123456789012:role/outbound"
        );
        assert_eq!(
            role_arn_of("arn:aws:iam::123456789012:user/x"),
            "arn:aws:iam::123456789012:user/x"
        );
        let p = bucket_policy_statement(
            "arn:aws:sts::123456789012:assumed-role/outbound/s",
            "acme",
            "in/",
        );
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(
            v[0]["Principal"]["AWS"],
            "arn:aws:iam::123456789012:role/outbound"
        );
        assert_eq!(v[0]["Resource"], "arn:aws:s3:::acme/in/*");
        assert_eq!(v[1]["Resource"], "arn:aws:s3:::acme");
    }
}
