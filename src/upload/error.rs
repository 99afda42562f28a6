//! Upload errors, named after the failing action, and what each means: its reason (the delivery's
//! `Failed` reason), whether it heals by itself (transient) or never will (permanent), and the
//! exit code that tells the Job which.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::plan::PlanError;

/// What S3 (or the network) said when a request failed.
#[derive(Debug, Clone)]
pub struct S3Cause {
    /// The S3 error code (`SlowDown`, `AccessDenied`, `NoSuchBucket` ...), when the server sent one.
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
    /// Worth trying again: timeouts, broken connections, 500/503/SlowDown.
    pub retryable: bool,
}

impl std::fmt::Display for S3Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, self.status) {
            (Some(code), Some(status)) => write!(f, "{code} (HTTP {status})")?,
            (Some(code), None) => write!(f, "{code}")?,
            (None, Some(status)) => write!(f, "HTTP {status}")?,
            (None, None) => {}
        }
        if !self.message.is_empty() {
            if self.code.is_some() || self.status.is_some() {
                f.write_str(": ")?;
            }
            f.write_str(&self.message)?;
        }
        Ok(())
    }
}

impl S3Cause {
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.is_code("PreconditionFailed")
    }

    /// The upload ID is gone (aborted, expired or completed).
    pub fn no_such_upload(&self) -> bool {
        self.is_code("NoSuchUpload")
    }
}

/// Codes that heal by themselves: throttling and server trouble.
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ExpiredToken",
];

/// Describes an SDK failure without ever printing credentials (the SDK's errors do not carry them).
pub fn cause<E>(err: &SdkError<E, HttpResponse>) -> S3Cause
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let meta = service.err();
            // HEAD answers have no body, so there is no code: name the status instead.
            let body = service.raw().body().bytes().unwrap_or_default();
            let code = meta
                .code()
                .map(str::to_string)
                .or_else(|| xml_field(body, "Code"))
                .or_else(|| match status {
                    403 => Some("Forbidden".to_string()),
                    404 => Some("NotFound".to_string()),
                    _ => None,
                });
            let retryable = status >= 500
                || status == 408
                || status == 429
                || code
                    .as_deref()
                    .is_some_and(|c| RETRYABLE_CODES.contains(&c));
            S3Cause {
                code,
                status: Some(status),
                message: meta
                    .message()
                    .map(str::to_string)
                    .or_else(|| xml_field(body, "Message"))
                    .unwrap_or_default(),
                retryable,
            }
        }
        SdkError::TimeoutError(_) => S3Cause {
            code: Some("Timeout".into()),
            status: None,
            message: "no answer in time".into(),
            retryable: true,
        },
        SdkError::DispatchFailure(failure) => S3Cause {
            code: Some(
                if failure.is_timeout() {
                    "Timeout"
                } else {
                    "ConnectionError"
                }
                .into(),
            ),
            status: None,
            message: error_chain(err),
            retryable: !failure.is_user(),
        },
        SdkError::ResponseError(_) => S3Cause {
            code: Some("ResponseError".into()),
            status: None,
            message: error_chain(err),
            retryable: true,
        },
        _ => S3Cause {
            code: None,
            status: None,
            message: error_chain(err),
            retryable: false,
        },
    }
}

/// An element of an XML error body the SDK could not parse (some S3-compatible servers wrap
/// errors differently, e.g. `<ErrorResponse><Errors><Error>`).
fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].to_string()).filter(|v| !v.is_empty())
}

/// The error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Everything that can stop a delivery.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("failed to read source folder {path}: {source}")]
    Walk {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to read {file} at byte {offset}: {source}")]
    Read {
        file: String,
        offset: u64,
        source: std::io::Error,
    },
    #[error("failed to assume role {role}: {cause}")]
    AssumeRole { role: String, cause: S3Cause },
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("failed to check existing object s3://{bucket}/{key}: {cause}")]
    Head {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error(
        "s3://{bucket}/{key} already exists with different content ({found}); expected {expected}; \
         not overwriting it (set overwrite to replace it)"
    )]
    Conflict {
        bucket: String,
        key: String,
        found: String,
        expected: String,
    },
    #[error("failed to start upload of s3://{bucket}/{key}: {cause}")]
    Create {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error("failed to list stored parts of s3://{bucket}/{key}: {cause}")]
    ListParts {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error("failed to upload part {part} of s3://{bucket}/{key}: {cause}")]
    Part {
        bucket: String,
        key: String,
        part: u64,
        cause: S3Cause,
    },
    #[error("failed to complete upload of s3://{bucket}/{key}: {cause}")]
    Complete {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error("failed to put s3://{bucket}/{key}: {cause}")]
    Put {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error(
        "checksum mismatch on s3://{bucket}/{key}: computed {algorithm} {local} from the source, \
         the server stored {remote}"
    )]
    Mismatch {
        bucket: String,
        key: String,
        algorithm: &'static str,
        local: String,
        remote: String,
    },
    #[error("failed to record resume state: {0}")]
    State(String),
    #[error("failed to write manifest s3://{bucket}/{key}: {reason}")]
    Manifest {
        bucket: String,
        key: String,
        reason: String,
        /// The server was unavailable (worth another pod), not refusing.
        retryable: bool,
    },
    #[error("stopped because another object failed")]
    Cancelled,
    #[error("{file} changed while it was delivered: {what}")]
    Changed { file: String, what: String },
    #[error("source object s3://{bucket}/{key} changed during the delivery: {what}")]
    SourceObjectChanged {
        bucket: String,
        key: String,
        what: String,
    },
    #[error("the server refused to copy {from} to {key}: {cause}")]
    CopyRefused {
        key: String,
        from: String,
        cause: Box<S3Cause>,
    },
    #[error("failed to read source s3://{bucket}/{key}: {cause}")]
    SourceRead {
        bucket: String,
        key: String,
        cause: S3Cause,
    },
    #[error("invalid glob {pattern:?}: {reason}")]
    Glob { pattern: String, reason: String },
    #[error("stopped by SIGTERM (a drain or a deletion): open uploads stay open for the next pod")]
    Interrupted,
    /// A link in the source folder that resolves outside it: never followed (it could name a
    /// token or any file of the pod).
    #[error("source file {file} is a link to {target}, outside the source folder")]
    OutsideVolume { file: String, target: String },
}

/// The delivery's Failed reason for [`UploadError::OutsideVolume`].
pub const SOURCE_OUTSIDE_VOLUME: &str = "SourceOutsideVolume";

/// Exit code of an upload that failed for good: the Job's pod failure policy fails the Job at
/// once instead of burning its retries.
pub const EXIT_PERMANENT: u8 = 78;
/// Exit code of an upload stopped by a transient failure or SIGTERM: the Job runs another pod,
/// which resumes the uploads this one left open.
pub const EXIT_RETRYABLE: u8 = 75;

impl S3Cause {
    /// The delivery reason of a permanent S3 refusal.
    fn reason(&self) -> &'static str {
        match self.code.as_deref() {
            Some("AccessDenied" | "Forbidden" | "AllAccessDisabled") => "AccessDenied",
            Some("NoSuchBucket") => "NoSuchBucket",
            Some("InvalidAccessKeyId") => "InvalidAccessKeyId",
            Some("SignatureDoesNotMatch") => "SignatureDoesNotMatch",
            Some(
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException",
            ) => "WrongRegion",
            Some(code) if code.starts_with("KMS") => "KmsAccessDenied",
            Some("InvalidStorageClass" | "InvalidArgument" | "InvalidRequest") => "InvalidSettings",
            _ => "S3Rejected",
        }
    }
}

impl UploadError {
    /// The S3 cause, for errors of an S3 request.
    fn s3_cause(&self) -> Option<&S3Cause> {
        match self {
            UploadError::Head { cause, .. }
            | UploadError::Create { cause, .. }
            | UploadError::ListParts { cause, .. }
            | UploadError::Part { cause, .. }
            | UploadError::Complete { cause, .. }
            | UploadError::Put { cause, .. }
            | UploadError::SourceRead { cause, .. }
            | UploadError::AssumeRole { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// Heals by itself (network, 5xx, throttling, the API server away, SIGTERM): the uploads stay
    /// open and the next pod resumes them. Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            UploadError::State(_)
            | UploadError::Cancelled
            | UploadError::Interrupted
            | UploadError::Manifest {
                retryable: true, ..
            } => true,
            other => other.s3_cause().is_some_and(|c| c.retryable),
        }
    }

    /// The reason a delivery that ends on this error shows (`Failed` condition): one word per
    /// kind of failure, so alerts and users can tell them apart.
    pub fn reason(&self) -> &'static str {
        if self.is_transient() {
            return match self {
                UploadError::State(_) => "StatusUnavailable",
                UploadError::Interrupted => "Interrupted",
                UploadError::Cancelled => "Cancelled",
                UploadError::AssumeRole { .. } => "StsUnavailable",
                _ => "S3Unavailable",
            };
        }
        match self {
            UploadError::Plan(PlanError::LineTooLong { .. }) => "LineTooLong",
            UploadError::Plan(PlanError::Unsplittable { .. }) => "UnsplittableSource",
            UploadError::Plan(PlanError::Read { .. })
            | UploadError::Walk { .. }
            | UploadError::Read { .. } => "SourceUnreadable",
            UploadError::Plan(_) | UploadError::Settings(_) => "InvalidSettings",
            UploadError::Changed { .. } => "SourceChanged",
            UploadError::SourceObjectChanged { .. } => "SourceObjectChanged",
            UploadError::SourceRead { .. } => "SourceUnreadable",
            UploadError::CopyRefused { .. } => "CopyRefused",
            UploadError::Glob { .. } => "InvalidGlob",
            UploadError::OutsideVolume { .. } => SOURCE_OUTSIDE_VOLUME,
            UploadError::AssumeRole { .. } => "AssumeRoleFailed",
            UploadError::Conflict { .. } => "ObjectConflict",
            UploadError::Mismatch { .. } => "ChecksumMismatch",
            UploadError::Manifest { .. } => "ManifestFailed",
            other => other.s3_cause().map_or("UploadFailed", S3Cause::reason),
        }
    }

    /// The process exit code for this error (`EXIT_PERMANENT` or `EXIT_RETRYABLE`).
    pub fn exit_code(&self) -> u8 {
        if self.is_transient() {
            EXIT_RETRYABLE
        } else {
            EXIT_PERMANENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_unusual_error_bodies() {
        let moto =
            b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: x is not \
                     authorized</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_field(moto, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_field(moto, "Message").as_deref(),
            Some("User: x is not authorized")
        );
        assert_eq!(xml_field(b"", "Code"), None);
        assert_eq!(xml_field(b"<Code></Code>", "Code"), None);
    }

    #[test]
    fn a_link_out_names_the_file_and_its_reason() {
        let err = UploadError::OutsideVolume {
            file: "token.sync".into(),
            target: "/var/run/secrets/token".into(),
        };
        assert_eq!(
            err.to_string(),
            "source file token.sync is a link to /var/run/secrets/token, outside the source folder"
        );
        assert_eq!(err.reason(), "SourceOutsideVolume");
    }

    #[test]
    fn causes_read_well() {
        let cause = S3Cause {
            code: Some("SlowDown".into()),
            status: Some(503),
            message: "Please reduce your request rate.".into(),
            retryable: true,
        };
        assert_eq!(
            cause.to_string(),
            "SlowDown (HTTP 503): Please reduce your request rate."
        );
        let err = UploadError::Part {
            bucket: "b".into(),
            key: "k-001.sync".into(),
            part: 7,
            cause,
        };
        assert_eq!(
            err.to_string(),
            "failed to upload part 7 of s3://b/k-001.sync: SlowDown (HTTP 503): Please reduce your request rate."
        );
    }
}
