//! The S3 requests of the engine, each through the run's `RetryPolicy`: what is at a key, create,
//! upload a part, put, complete, verify, list an upload's parts, adopt and abort an upload.
//! `engine` (objects cut from a file's byte ranges) and `recut` (gzip pieces built while
//! sending) share them.

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::engine::{
    Engine, Existing, Outcome, STAMP_KEY, Scan, test_hook_exit_after_create, with_checksum,
};
use super::error::{S3Cause, UploadError, cause};
use super::state::Progress;
use crate::checksum::{ChecksumAlgorithm, ChecksumKind};
use crate::plan::PlannedObject;

impl Engine {
    /// The object at the key, if any (`None` also when HEAD is forbidden: then If-None-Match
    /// still guards the write).
    pub(super) async fn existing(
        &self,
        object: &PlannedObject,
    ) -> Result<Option<Existing>, UploadError> {
        let result = self
            .retry
            .run("HeadObject", &object.key, || async {
                self.s3
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&object.key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await;
        match result {
            Ok(head) => Ok(Some(Existing {
                size: head.content_length().unwrap_or(-1),
                stamp: head.metadata().and_then(|m| m.get(STAMP_KEY)).cloned(),
                lines: head
                    .metadata()
                    .and_then(|m| m.get("outbound-lines"))
                    .and_then(|v| v.parse().ok()),
                checksum: match self.settings.headers.checksum {
                    ChecksumAlgorithm::Crc64Nvme => head.checksum_crc64_nvme,
                    ChecksumAlgorithm::Crc32C => head.checksum_crc32_c,
                    ChecksumAlgorithm::Sha256 => head.checksum_sha256,
                },
            })),
            Err(cause) => {
                if cause.not_found() {
                    Ok(None)
                } else if cause.status == Some(403) {
                    tracing::debug!(key = %object.key, "HEAD forbidden; relying on If-None-Match");
                    Ok(None)
                } else {
                    Err(UploadError::Head {
                        bucket: self.bucket.clone(),
                        key: object.key.clone(),
                        cause,
                    })
                }
            }
        }
    }

    /// After a failed precondition: someone wrote the key; same content counts as delivered.
    pub(super) async fn settle_existing(
        &self,
        object: &PlannedObject,
        scan: &Scan,
    ) -> Result<Outcome, UploadError> {
        match self.existing(object).await? {
            Some(found) if found.matches(object.size, &scan.checksum) => {
                Progress::add(&self.state.progress.bytes_done, object.size);
                self.state.record_lines(object, scan.lines);
                Ok(Outcome::AlreadyPresent)
            }
            Some(found) => Err(self.conflict(object, scan, &found)),
            None => Err(UploadError::Put {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                cause: S3Cause {
                    code: Some("PreconditionFailed".into()),
                    status: Some(412),
                    message: "the key exists but cannot be read to compare it".into(),
                    retryable: false,
                },
            }),
        }
    }

    /// Compares the checksum the server reports with ours; asks with HEAD when the answer had none.
    pub(super) async fn verify(
        &self,
        object: &PlannedObject,
        scan: &Scan,
        stored: Option<String>,
    ) -> Result<(), UploadError> {
        let stored = match stored {
            Some(value) => Some(value),
            None => self.existing(object).await?.and_then(|e| e.checksum),
        };
        match stored {
            Some(value) if value == scan.checksum => Ok(()),
            other => Err(UploadError::Mismatch {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                algorithm: self.settings.headers.checksum.name(),
                local: scan.checksum.clone(),
                remote: other.unwrap_or_else(|| "no checksum".into()),
            }),
        }
    }

    /// The newest open upload of exactly `object`'s key, if any.
    pub(super) async fn adopt(
        &self,
        object: &PlannedObject,
    ) -> Result<Option<String>, UploadError> {
        let newest = self
            .open_uploads(object)
            .await
            .map_err(|cause| UploadError::ListParts {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                cause,
            })?
            .into_iter()
            .max_by_key(|(_, initiated)| *initiated)
            .map(|(id, _)| id);
        if newest.is_some() {
            tracing::info!(key = %object.key, "found the upload a previous run started but never recorded");
        }
        Ok(newest)
    }

    /// The open multipart uploads of exactly `object`'s key: their ids and when they started.
    async fn open_uploads(
        &self,
        object: &PlannedObject,
    ) -> Result<Vec<(String, (i64, u32))>, S3Cause> {
        let out = self
            .retry
            .run("ListMultipartUploads", &object.key, || async {
                self.s3
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(&object.key)
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await?;
        Ok(out
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(object.key.as_str()))
            .filter_map(|u| {
                let initiated = u
                    .initiated()
                    .map_or((0, 0), |t| (t.secs(), t.subsec_nanos()));
                Some((u.upload_id()?.to_string(), initiated))
            })
            .collect())
    }

    /// Once `object` is complete, aborts every other upload still open at its key: a
    /// CreateMultipartUpload whose answer was lost and was sent again (the server restarting under
    /// it) leaves a second upload that nobody recorded, which would keep its parts (and cost)
    /// in the customer's bucket for ever. Best effort: the object is delivered either way.
    pub(super) async fn abort_strays(&self, object: &PlannedObject) {
        let strays = match self.open_uploads(object).await {
            Ok(strays) => strays,
            Err(cause) => {
                tracing::warn!(key = %object.key, %cause, "could not list the key's other uploads");
                return;
            }
        };
        for (upload_id, _) in strays {
            // The key was forgotten on completion: abort's own forget changes nothing.
            if self.abort(object, &upload_id).await {
                tracing::info!(key = %object.key, %upload_id, "aborted a stray upload of a delivered key");
            }
        }
    }

    /// Starts a multipart upload of `object` carrying `metadata`, recorded before any part goes.
    pub(super) async fn create(
        &self,
        object: &PlannedObject,
        metadata: HashMap<String, String>,
    ) -> Result<String, UploadError> {
        // The key goes on record before the upload exists, so a death in between leaves a trace.
        self.state.intend(&object.key).await?;
        let failed = |cause| UploadError::Create {
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            cause,
        };
        let out = self
            .retry
            .run("CreateMultipartUpload", &object.key, || async {
                self.settings
                    .headers
                    .create(
                        self.s3
                            .create_multipart_upload()
                            .bucket(&self.bucket)
                            .key(&object.key)
                            .set_metadata(Some(metadata.clone())),
                    )
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await
            .map_err(failed)?;
        let upload_id = out.upload_id.ok_or_else(|| {
            failed(S3Cause {
                code: None,
                status: None,
                message: "the server returned no upload ID".into(),
                retryable: false,
            })
        })?;
        tracing::info!(key = %object.key, parts = object.parts, part_size = object.part_size, "multipart upload started");
        test_hook_exit_after_create();
        // Recorded before any part goes out (retried for as long as it takes): whoever resumes
        // or cleans up must find it. Until then nothing is sent; the upload stays open.
        let source = metadata.get(STAMP_KEY).map(String::as_str);
        self.state.record(&object.key, &upload_id, source).await?;
        Ok(upload_id)
    }

    pub(super) async fn list_parts(
        &self,
        object: &PlannedObject,
        upload_id: &str,
    ) -> Result<Vec<(i32, u64, CompletedPart)>, S3Cause> {
        let algorithm = self.settings.headers.checksum;
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .retry
                .run("ListParts", &object.key, || async {
                    self.s3
                        .list_parts()
                        .bucket(&self.bucket)
                        .key(&object.key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                        .await
                        .map_err(|e| cause(&e))
                })
                .await?;
            for part in out.parts() {
                let (Some(number), Some(size)) = (part.part_number(), part.size()) else {
                    continue;
                };
                let mut completed = CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string));
                let value = match algorithm {
                    ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64_nvme(),
                    ChecksumAlgorithm::Crc32C => part.checksum_crc32_c(),
                    ChecksumAlgorithm::Sha256 => part.checksum_sha256(),
                };
                if let Some(value) = value {
                    completed = with_checksum(completed, algorithm, value);
                }
                parts.push((number, size.max(0) as u64, completed.build()));
            }
            if out.is_truncated() == Some(true) && out.next_part_number_marker().is_some() {
                marker = out.next_part_number_marker().map(str::to_string);
            } else {
                break;
            }
        }
        Ok(parts)
    }

    pub(super) async fn complete(
        &self,
        object: &PlannedObject,
        scan: &Scan,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<Outcome, UploadError> {
        let algorithm = self.settings.headers.checksum;
        let kind = algorithm.multipart_kind();
        let completed = self
            .retry
            .run("CompleteMultipartUpload", &object.key, || async {
                let mut request = self
                    .s3
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&object.key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    )
                    .checksum_type(ChecksumAlgorithm::sdk_kind(kind));
                if kind == ChecksumKind::FullObject {
                    // The server checks the whole object against it before making it visible.
                    request = match algorithm {
                        ChecksumAlgorithm::Crc64Nvme => request.checksum_crc64_nvme(&scan.checksum),
                        ChecksumAlgorithm::Crc32C => request.checksum_crc32_c(&scan.checksum),
                        ChecksumAlgorithm::Sha256 => request,
                    };
                }
                if !self.settings.overwrite {
                    request = request.if_none_match("*");
                }
                request.send().await.map_err(|e| cause(&e))
            })
            .await;
        let cause = match completed {
            Ok(out) => {
                let stored = match algorithm {
                    ChecksumAlgorithm::Crc64Nvme => out.checksum_crc64_nvme,
                    ChecksumAlgorithm::Crc32C => out.checksum_crc32_c,
                    ChecksumAlgorithm::Sha256 => out.checksum_sha256,
                };
                self.verify(object, scan, stored).await?;
                return Ok(Outcome::Sent);
            }
            Err(cause) => cause,
        };
        if cause.precondition_failed() {
            // Someone else wrote the key meanwhile: the same bytes count as delivered (and our
            // upload is of no more use); different bytes are a conflict for the operator to see.
            let settled = self.settle_existing(object, scan).await;
            if settled.is_ok() {
                self.abort(object, upload_id).await;
            }
            return settled;
        }
        if cause.no_such_upload()
            && let Some(found) = self.existing(object).await?
            && found.matches(object.size, &scan.checksum)
        {
            // A retried completion may find its first attempt already done.
            return Ok(Outcome::Sent);
        }
        Err(UploadError::Complete {
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            cause,
        })
    }

    /// Aborts an upload this run no longer needs because the key already holds the same bytes
    /// (never on a failure), and forgets it; true if this call aborted it. Best effort: the
    /// operator's cleanup finds what is left.
    pub async fn abort(&self, object: &PlannedObject, upload_id: &str) -> bool {
        let result = self
            .retry
            .run("AbortMultipartUpload", &object.key, || async {
                self.s3
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&object.key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await;
        let aborted = match result {
            Ok(_) => {
                tracing::info!(key = %object.key, "multipart upload aborted");
                true
            }
            Err(cause) if cause.no_such_upload() || cause.not_found() => false,
            Err(cause) => {
                tracing::warn!(key = %object.key, %cause, "failed to abort a multipart upload");
                return false;
            }
        };
        self.state.forget(&object.key).await;
        aborted
    }

    /// Uploads part `number` of `object`'s upload from `body` (its checksum `digest`, base64):
    /// the completed part to name in the completion.
    pub(super) async fn upload_part(
        &self,
        object: &PlannedObject,
        upload_id: &str,
        number: u64,
        body: Bytes,
        digest: &str,
    ) -> Result<CompletedPart, UploadError> {
        let len = body.len() as i64;
        let out = self
            .retry
            .run("UploadPart", &object.key, || async {
                let request = self.settings.headers.part(
                    self.s3
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(&object.key)
                        .upload_id(upload_id)
                        .part_number(number as i32)
                        .content_length(len)
                        .body(ByteStream::from(body.clone())),
                    digest,
                );
                // The part checksum already protects the body: spare SigV4's extra SHA-256 pass.
                request
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await
            .map_err(|cause| UploadError::Part {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                part: number,
                cause,
            })?;
        let part = CompletedPart::builder()
            .part_number(number as i32)
            .set_e_tag(out.e_tag);
        Ok(with_checksum(part, self.settings.headers.checksum, digest).build())
    }

    /// One PUT of `body` at `object`'s key with `metadata`, unless the key exists (without
    /// `overwrite`); verified against `scan`. The same bytes already there count as delivered.
    pub(super) async fn put(
        &self,
        object: &PlannedObject,
        body: Bytes,
        scan: &Scan,
        metadata: HashMap<String, String>,
    ) -> Result<Outcome, UploadError> {
        let size = body.len() as i64;
        let sent = self
            .retry
            .run("PutObject", &object.key, || async {
                let mut request = self.settings.headers.put(
                    self.s3
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&object.key)
                        .content_length(size)
                        .body(ByteStream::from(body.clone()))
                        .set_metadata(Some(metadata.clone())),
                    &scan.checksum,
                );
                if !self.settings.overwrite {
                    request = request.if_none_match("*");
                }
                request
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| cause(&e))
            })
            .await;
        match sent {
            Ok(out) => {
                let stored = match self.settings.headers.checksum {
                    ChecksumAlgorithm::Crc64Nvme => out.checksum_crc64_nvme,
                    ChecksumAlgorithm::Crc32C => out.checksum_crc32_c,
                    ChecksumAlgorithm::Sha256 => out.checksum_sha256,
                };
                self.verify(object, scan, stored).await?;
                Ok(Outcome::Sent)
            }
            Err(cause) if cause.precondition_failed() => self.settle_existing(object, scan).await,
            Err(cause) => Err(UploadError::Put {
                bucket: self.bucket.clone(),
                key: object.key.clone(),
                cause,
            }),
        }
    }
}
