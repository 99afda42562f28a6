//! Server-side copy: where one identity reads the provider's bucket and writes the destination
//! on the same endpoint, the server copies each part (UploadPartCopy of a byte range) or a whole
//! small object (CopyObject), pinned to the ETag the plan saw, so the data never passes through
//! the pod. A server or a
//! bucket that refuses copies turns the run back to sending, once, with a warning.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aws_sdk_s3::types::{CompletedPart, MetadataDirective};

use super::engine::{Engine, Outcome, SentPart, with_checksum};
use super::error::{S3Cause, UploadError, cause};
use super::source::Opened;
use super::state::Progress;
use crate::checksum::{self, ChecksumAlgorithm};
use crate::plan::PlannedObject;

/// Characters of a key left as they are in `x-amz-copy-source` (RFC 3986 unreserved, and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `bucket/key` as the `x-amz-copy-source` header wants it, the key percent-encoded.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, COPY_SOURCE)
    )
}

/// Whether a failed copy means that this server or bucket does not copy for us (no read access
/// to the source for the destination's identity, copies not implemented, a source on another
/// server): the bytes can still be sent.
fn refused(cause: &S3Cause) -> bool {
    matches!(cause.status, Some(400 | 403 | 501))
        || [
            "AccessDenied",
            "NotImplemented",
            "InvalidRequest",
            "XAmzContentSHA256Mismatch",
        ]
        .iter()
        .any(|code| cause.is_code(code))
}

impl Engine {
    /// Whether this object's parts are copied by the server: the run copies, copies have not been
    /// refused, and the object is cut from an object of the provider's bucket.
    pub(super) fn copies(&self, object: &PlannedObject, file: &Opened) -> bool {
        self.copy
            && !self.copy_refused.load(Ordering::Relaxed)
            && !object.gzip_pieces
            && object.size > 0
            && file.object().is_some()
    }

    /// Stops copying for the rest of the run after `error` (a [`UploadError::CopyRefused`]).
    pub(super) fn refuse_copies(&self, error: &UploadError) {
        if !self.copy_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "the server refused a copy: sending the bytes from here on");
        }
    }

    /// What a failed copy means: the source overwritten or deleted (its own reason), a refusal
    /// (the run turns to sending), or a failure like a sent part's (`part`, 0 for CopyObject).
    fn copy_failed(
        &self,
        object: &PlannedObject,
        part: u64,
        source_bucket: &str,
        key: &str,
        cause: S3Cause,
    ) -> UploadError {
        if cause.no_such_upload() {
            // The engine starts the object afresh, as for a sent part.
            UploadError::Part {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                part,
                cause,
            }
        } else if cause.precondition_failed() || cause.not_found() {
            UploadError::SourceObjectChanged {
                bucket: source_bucket.to_string(),
                key: key.to_string(),
                what: if cause.not_found() {
                    "it was deleted".into()
                } else {
                    "it was overwritten (its ETag is not the one planned on)".into()
                },
            }
        } else if refused(&cause) {
            UploadError::CopyRefused {
                key: object.key.clone(),
                from: format!("s3://{source_bucket}/{key}"),
                cause: Box::new(cause),
            }
        } else if part == 0 {
            UploadError::Put {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                cause,
            }
        } else {
            UploadError::Part {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                part,
                cause,
            }
        }
    }

    /// Copies a whole small object of the provider's bucket in one CopyObject, with the run's
    /// headers and `metadata`, unless the key exists (without `overwrite`). The server computes
    /// the new object's checksum as it copies.
    pub(super) async fn copy_object(
        &self,
        object: &PlannedObject,
        file: &Opened,
        metadata: HashMap<String, String>,
    ) -> Result<Outcome, UploadError> {
        let _permit = self.permit(object, 0).await;
        if self.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        let (source, key, etag) = file.object().expect("copies() checked the source");
        let from = copy_source(&source.bucket, key);
        let algorithm = self.settings.headers.checksum;
        let copied = self
            .retry
            .run("CopyObject", &object.key, || async {
                let mut request = self.settings.headers.copy(
                    self.s3
                        .copy_object()
                        .bucket(&self.bucket)
                        .key(&object.key)
                        .copy_source(&from)
                        .copy_source_if_match(etag)
                        .metadata_directive(MetadataDirective::Replace)
                        .set_metadata(Some(metadata.clone())),
                );
                if !self.settings.overwrite {
                    request = request.if_none_match("*");
                }
                request.send().await.map_err(|e| cause(&e))
            })
            .await;
        let stored = match copied {
            Ok(out) => out.copy_object_result.and_then(|r| match algorithm {
                ChecksumAlgorithm::Crc64Nvme => r.checksum_crc64_nvme,
                ChecksumAlgorithm::Crc32C => r.checksum_crc32_c,
                ChecksumAlgorithm::Sha256 => r.checksum_sha256,
            }),
            // Both preconditions answer 412: the key written meanwhile, or the source changed.
            Err(cause) if cause.precondition_failed() => {
                return match self.existing(object).await? {
                    Some(found) if found.written_from(object, file) => {
                        Progress::add(&self.state.progress.bytes_done, object.size);
                        Ok(Outcome::AlreadyPresent)
                    }
                    Some(found) => Err(UploadError::Conflict {
                        bucket: self.bucket.clone(),
                        key: object.key.clone(),
                        found: found.describe(algorithm),
                        expected: format!("a copy of s3://{}/{key}", source.bucket),
                    }),
                    None => Err(self.copy_failed(object, 0, &source.bucket, key, cause)),
                };
            }
            Err(cause) => return Err(self.copy_failed(object, 0, &source.bucket, key, cause)),
        };
        // A copy the server kept no checksum of cannot be checked by anyone: refused.
        let stored = match stored {
            Some(value) => Some(value),
            None => self.existing(object).await?.and_then(|e| e.checksum),
        };
        if stored.is_none() {
            return Err(UploadError::Mismatch {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                algorithm: algorithm.name(),
                local: format!("a copy of s3://{}/{key}", source.bucket),
                remote: "no checksum".into(),
            });
        }
        Progress::add(&self.state.progress.bytes_copied, object.size);
        Progress::add(&self.state.progress.parts_sent, 1);
        Progress::add(&self.state.progress.bytes_done, object.size);
        Ok(Outcome::Sent)
    }

    /// Copies part `number` of `object` from the provider's object into the upload: the completed
    /// part, with the checksum the server computed (its digest goes into the object's checksum,
    /// which the completion checks).
    pub(super) async fn copy_part(
        &self,
        object: &PlannedObject,
        file: &Opened,
        upload_id: &str,
        number: u64,
    ) -> Result<SentPart, UploadError> {
        let _permit = self.permit(object, number).await;
        if self.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        let (source, key, etag) = file.object().expect("copies() checked the source");
        let from = copy_source(&source.bucket, key);
        let (offset, len) = object.part_range(number);
        let algorithm = self.settings.headers.checksum;
        let out = self
            .retry
            .run("UploadPartCopy", &object.key, || async {
                self.s3
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&object.key)
                    .upload_id(upload_id)
                    .part_number(number as i32)
                    .copy_source(&from)
                    .copy_source_range(format!("bytes={offset}-{}", offset + len - 1))
                    .copy_source_if_match(etag)
                    .send()
                    .await
                    .map_err(|e| super::error::cause(&e))
            })
            .await
            .map_err(|cause| self.copy_failed(object, number, &source.bucket, key, cause))?;
        let result = out.copy_part_result;
        let value = result.as_ref().and_then(|r| match algorithm {
            ChecksumAlgorithm::Crc64Nvme => r.checksum_crc64_nvme.clone(),
            ChecksumAlgorithm::Crc32C => r.checksum_crc32_c.clone(),
            ChecksumAlgorithm::Sha256 => r.checksum_sha256.clone(),
        });
        // Without the part's checksum the object's cannot be checked: send the bytes instead.
        let Some((value, digest)) =
            value.and_then(|v| checksum::from_base64(&v).map(|digest| (v, digest)))
        else {
            return Err(UploadError::CopyRefused {
                key: object.key.clone(),
                from: format!("s3://{}/{key}", source.bucket),
                cause: Box::new(S3Cause {
                    code: None,
                    status: None,
                    message: format!("the server gave no {} of the copied part", algorithm.name()),
                    retryable: false,
                }),
            });
        };
        let part = CompletedPart::builder()
            .part_number(number as i32)
            .set_e_tag(result.and_then(|r| r.e_tag));
        Progress::add(&self.state.progress.bytes_copied, len);
        Progress::add(&self.state.progress.parts_sent, 1);
        Progress::add(&self.state.progress.bytes_done, len);
        Ok(SentPart {
            part: with_checksum(part, algorithm, &value).build(),
            digest,
            newlines: 0,
            ends_open: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_encode_the_key_and_keep_its_slashes() {
        assert_eq!(copy_source("b", "a/b.sync"), "b/a/b.sync");
        assert_eq!(
            copy_source("b", "dir/with space+plus/é?.txt"),
            "b/dir/with%20space%2Bplus/%C3%A9%3F.txt"
        );
    }

    #[test]
    fn only_refusals_turn_the_run_to_sending() {
        let cause = |code: &str, status| S3Cause {
            code: Some(code.into()),
            status: Some(status),
            message: String::new(),
            retryable: false,
        };
        assert!(refused(&cause("AccessDenied", 403)));
        assert!(refused(&cause("NotImplemented", 501)));
        assert!(!refused(&cause("SlowDown", 503)));
        assert!(!refused(&cause("InternalError", 500)));
    }
}
