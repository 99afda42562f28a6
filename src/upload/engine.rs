//! The multipart engine: one object at a time per task, its parts read with pread and sent in
//! parallel under a fixed memory budget, every part and the whole object checksummed.
//!
//! Every request goes through one `RetryPolicy`. A failure never aborts an upload: a transient
//! one leaves it open for the next pod to resume, a permanent one leaves it to the operator, which
//! aborts the uploads of a delivery that ended `Failed` or was deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::CompletedPart;
use futures::StreamExt as _;

use super::error::UploadError;
use super::headers::WriteHeaders;
use super::retry::RetryPolicy;
use super::slots::{Slot, Slots};
use super::source::{Opened, PartRead, S3Source, read_part};
use super::state::{Progress, State};
use crate::checksum::{self, ChecksumAlgorithm};
use crate::plan::PlannedObject;

/// Object settings the destination decides.
#[derive(Clone, Debug, Default)]
pub struct ObjectSettings {
    /// What every object-creating request carries (shared with the destination probe).
    pub headers: WriteHeaders,
    pub overwrite: bool,
    /// Whether a multipart object's lines are counted: only the manifest reads them, and the
    /// count is a tenth of the client's CPU (bench/analysis.md).
    pub count_lines: bool,
}

/// How an object ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written by this run.
    Sent,
    /// Already there with the same size and checksum.
    AlreadyPresent,
}

/// What a read of the object's bytes found: its lines and checksums.
#[derive(Debug, Clone)]
pub struct Scan {
    pub lines: u64,
    /// Digest of each part (one for a single PUT), in S3's byte order.
    pub part_digests: Vec<Vec<u8>>,
    /// The object's checksum as S3 reports it (base64; `-N` suffix when composite).
    pub checksum: String,
}

/// The engine shared by all object tasks of a run.
pub struct Engine {
    pub s3: Client,
    pub bucket: String,
    pub settings: ObjectSettings,
    pub state: Arc<State>,
    pub concurrency: usize,
    /// Every request's retries; its stop flag is set once one object failed.
    pub retry: RetryPolicy,
    /// The largest object (what a gzip file's pieces are cut to).
    pub split_size: u64,
    /// Where a file compressed on the way out is cut: on lines, or anywhere (bytes mode).
    pub split_on: crate::plan::SplitOn,
    /// The provider's bucket the files are read from, when not a folder.
    pub source: Option<Arc<S3Source>>,
    /// Parts of objects cut from `source` are copied by the server (`upload::copy`).
    pub copy: bool,
    /// The server refused a copy: the rest of the run sends.
    pub(super) copy_refused: std::sync::atomic::AtomicBool,
    /// Parts in flight, each holding its part's bytes mapped: the memory budget. Served in plan
    /// order, so objects finish one after another, not all together at the end.
    pub(super) in_flight: Arc<Slots>,
}

impl Engine {
    pub fn new(
        s3: Client,
        bucket: String,
        settings: ObjectSettings,
        state: Arc<State>,
        concurrency: usize,
        retry: RetryPolicy,
    ) -> Engine {
        Engine {
            s3,
            bucket,
            settings,
            state,
            concurrency: concurrency.max(1),
            retry,
            split_size: crate::units::MAX_SPLIT_SIZE,
            split_on: crate::plan::SplitOn::Lines,
            source: None,
            copy: false,
            copy_refused: Default::default(),
            in_flight: Slots::new(concurrency.max(1)),
        }
    }

    /// A part slot for part `part` of `object` (the single PUT counts as part 0).
    pub(super) async fn permit(&self, object: &PlannedObject, part: u64) -> Slot {
        self.in_flight.acquire((object.index as u64, part)).await
    }

    /// Delivers one object; on a failure, stops the other objects of the run too (their open
    /// uploads stay open).
    pub async fn deliver(&self, object: &PlannedObject) -> Result<Outcome, UploadError> {
        if self.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        if object.gzip_pieces {
            // Counts its pieces as objects itself.
            let result = super::recut::deliver(self, object).await;
            if matches!(&result, Err(e) if !matches!(e, UploadError::Cancelled)) {
                self.retry.stop.store(true, Ordering::Relaxed);
            }
            return result;
        }
        let result = self.deliver_inner(object).await;
        match &result {
            Ok(outcome) => {
                Progress::add(&self.state.progress.objects_done, 1);
                if *outcome == Outcome::AlreadyPresent {
                    Progress::add(&self.state.progress.objects_skipped, 1);
                }
                tracing::info!(key = %object.key, size = object.size, ?outcome, "object delivered");
            }
            Err(UploadError::Cancelled) => {}
            Err(_) => self.retry.stop.store(true, Ordering::Relaxed),
        }
        result
    }

    async fn deliver_inner(&self, object: &PlannedObject) -> Result<Outcome, UploadError> {
        let file = Arc::new(Opened::open(object, self.source.as_ref())?);
        let resume = self.state.upload_for(&object.key);
        // Only an object already at the key needs a read before the send (to compare it); every
        // other object is read once, checksummed and counted from the bytes being sent.
        if let Some(found) = self.existing(object).await? {
            // Sent by an earlier run from the same, unchanged file: skip it unread, unless its
            // lines are needed and nowhere recorded (multipart objects carry no count).
            if found.written_from(object, &file)
                && (found.lines.is_some() || !self.settings.count_lines)
            {
                if let Some(upload_id) = resume {
                    self.abort(object, &upload_id).await;
                }
                Progress::add(&self.state.progress.bytes_done, object.size);
                if let Some(lines) = found.lines {
                    self.state.record_lines(object, lines);
                }
                return Ok(Outcome::AlreadyPresent);
            }
            let scan = file.scan(object, self.settings.headers.checksum).await?;
            Progress::add(&self.state.progress.bytes_read, object.size);
            if found.matches(object.size, &scan.checksum) {
                if let Some(upload_id) = resume {
                    self.abort(object, &upload_id).await;
                }
                Progress::add(&self.state.progress.bytes_done, object.size);
                self.state.record_lines(object, scan.lines);
                return Ok(Outcome::AlreadyPresent);
            }
            if !self.settings.overwrite {
                return Err(self.conflict(object, &scan, &found));
            }
        }
        let mut resume = resume;
        if self.copies(object, &file) {
            let copied = if object.whole && !object.multipart {
                self.copy_object(object, &file, self.metadata(object, &file, None))
                    .await
            } else {
                self.multipart(object, &file, resume).await
            };
            match copied {
                Err(refused @ UploadError::CopyRefused { .. }) => {
                    self.refuse_copies(&refused);
                    // The parts copied so far stay for the send to keep, if it is a multipart one.
                    resume = self.state.upload_for(&object.key);
                    if !object.multipart
                        && let Some(upload_id) = resume.take()
                    {
                        self.abort(object, &upload_id).await;
                    }
                }
                copied => return copied,
            }
        }
        if object.multipart {
            self.multipart(object, &file, resume).await
        } else {
            self.single_put(object, &file).await
        }
    }

    pub(super) fn conflict(
        &self,
        object: &PlannedObject,
        scan: &Scan,
        found: &Existing,
    ) -> UploadError {
        UploadError::Conflict {
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            found: found.describe(self.settings.headers.checksum),
            expected: format!(
                "size {}, {} {}",
                object.size,
                self.settings.headers.checksum.name(),
                scan.checksum
            ),
        }
    }

    /// User metadata of the object; `outbound-lines` only where the count is known before the
    /// request (a single PUT): a multipart object's lines are counted while its parts go out.
    fn metadata(
        &self,
        object: &PlannedObject,
        file: &Opened,
        lines: Option<u64>,
    ) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            ("outbound-source".to_string(), header_safe(&object.source)),
            ("outbound-sequence".to_string(), object.sequence.to_string()),
            (STAMP_KEY.to_string(), file.token(object)),
        ]);
        if let Some(lines) = lines {
            metadata.insert("outbound-lines".to_string(), lines.to_string());
        }
        metadata
    }

    async fn single_put(
        &self,
        object: &PlannedObject,
        file: &Arc<Opened>,
    ) -> Result<Outcome, UploadError> {
        let _permit = self.permit(object, 0).await;
        let algorithm = self.settings.headers.checksum;
        let read = read_part(file, object, object.offset, object.size, algorithm, true).await?;
        Progress::add(&self.state.progress.bytes_read, object.size);
        let lines = read.newlines + u64::from(read.ends_open);
        let scan = Scan {
            lines,
            checksum: checksum::to_base64(&read.digest),
            part_digests: vec![read.digest],
        };
        let metadata = self.metadata(object, file, Some(lines));
        let outcome = self.put(object, read.body, &scan, metadata).await?;
        if outcome == Outcome::Sent {
            Progress::add(&self.state.progress.bytes_sent, object.size);
            Progress::add(&self.state.progress.parts_sent, 1);
            Progress::add(&self.state.progress.bytes_done, object.size);
            self.state.record_lines(object, lines);
        }
        Ok(outcome)
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.retry.stopping()
    }

    async fn multipart(
        &self,
        object: &PlannedObject,
        file: &Arc<Opened>,
        resume: Option<String>,
    ) -> Result<Outcome, UploadError> {
        // A previous run that died between starting an upload and recording it left the key
        // without an id: that upload is found by listing the key, and resumed.
        let resume = match resume {
            None if self.state.intended(&object.key) => self.adopt(object).await?,
            resume => resume,
        };
        // Parts a previous run stored, if its upload is still open.
        let mut stored = HashMap::new();
        let mut upload_id = None;
        if let Some(id) = resume {
            match self.list_parts(object, &id).await {
                Ok(parts) => {
                    // Started from this very version and range of the source, and no line to
                    // count: the stored parts are what it holds, and need no read. Else each is
                    // read once and kept where it matches.
                    let same = self.state.source_of(&object.key) == Some(file.token(object));
                    stored = if same && !self.settings.count_lines {
                        self.trusted_parts(object, parts)
                    } else {
                        self.keep_stored_parts(object, file, parts).await?
                    };
                    tracing::info!(key = %object.key, stored = stored.len(), parts = object.parts, "resuming upload");
                    upload_id = Some(id);
                }
                Err(cause) if cause.no_such_upload() || cause.not_found() => {
                    tracing::info!(key = %object.key, "previous upload is gone; starting the object afresh");
                    self.state.forget(&object.key).await;
                }
                Err(cause) => {
                    return Err(UploadError::ListParts {
                        bucket: self.bucket.clone(),
                        key: object.key.clone(),
                        cause,
                    });
                }
            }
        }
        let upload_id = match upload_id {
            Some(id) => id,
            None => {
                self.create(object, self.metadata(object, file, None))
                    .await?
            }
        };

        let mut upload_id = upload_id;
        let mut result = self
            .send_parts_and_complete(object, file, &upload_id, stored)
            .await;
        if let Err(UploadError::Part { cause, .. }) = &result
            && cause.no_such_upload()
        {
            // Aborted under our feet (an operator, a lifecycle rule): start the object afresh once.
            tracing::warn!(key = %object.key, "upload vanished; starting the object afresh");
            self.state.forget(&object.key).await;
            upload_id = self
                .create(object, self.metadata(object, file, None))
                .await?;
            result = self
                .send_parts_and_complete(object, file, &upload_id, HashMap::new())
                .await;
        }
        // A failure leaves the upload open: the next pod resumes it, or the operator aborts it
        // once the delivery ends Failed or is deleted.
        if result.is_ok() {
            self.state.forget(&object.key).await;
            self.abort_strays(object).await;
        }
        result
    }

    /// The stored parts of an upload started from the source as it is now, unread: their sizes
    /// and checksums as S3 lists them (a part without a checksum is sent again).
    fn trusted_parts(
        &self,
        object: &PlannedObject,
        parts: Vec<(i32, u64, CompletedPart)>,
    ) -> HashMap<u64, SentPart> {
        let algorithm = self.settings.headers.checksum;
        parts
            .into_iter()
            .filter_map(|(number, size, part)| {
                let n = number as u64;
                let fits = n >= 1 && n <= object.parts && size == object.part_range(n).1;
                let digest = stored_checksum(&part, algorithm)
                    .and_then(|b64| checksum::from_base64(&b64))?;
                fits.then_some((
                    n,
                    SentPart {
                        part,
                        digest,
                        newlines: 0,
                        ends_open: false,
                    },
                ))
            })
            .collect()
    }

    /// Of the parts a previous run stored, keeps those whose size and checksum match what the
    /// file holds now (each read once, never sent); the rest are sent again.
    async fn keep_stored_parts(
        &self,
        object: &PlannedObject,
        file: &Arc<Opened>,
        parts: Vec<(i32, u64, CompletedPart)>,
    ) -> Result<HashMap<u64, SentPart>, UploadError> {
        let algorithm = self.settings.headers.checksum;
        let candidates = parts.into_iter().filter(|(number, size, _)| {
            let n = *number as u64;
            n >= 1 && n <= object.parts && *size == object.part_range(n).1
        });
        let mut checks = futures::stream::iter(candidates)
            .map(|(number, _, part)| async move {
                let n = number as u64;
                let _permit = self.permit(object, n).await;
                let read = self.read_nth_part(file, object, n).await?;
                let digest = checksum::to_base64(&read.digest);
                let good = stored_checksum(&part, algorithm).as_deref() == Some(digest.as_str());
                Ok::<_, UploadError>(good.then_some((
                    n,
                    SentPart {
                        part,
                        digest: read.digest,
                        newlines: read.newlines,
                        ends_open: read.ends_open,
                    },
                )))
            })
            .buffer_unordered(self.concurrency);
        let mut kept = HashMap::new();
        while let Some(checked) = checks.next().await {
            if let Some((n, part)) = checked? {
                kept.insert(n, part);
            }
        }
        Ok(kept)
    }

    async fn send_parts_and_complete(
        &self,
        object: &PlannedObject,
        file: &Arc<Opened>,
        upload_id: &str,
        mut parts: HashMap<u64, SentPart>,
    ) -> Result<Outcome, UploadError> {
        let mut missing = Vec::new();
        for n in 1..=object.parts {
            if parts.contains_key(&n) {
                Progress::add(&self.state.progress.bytes_done, object.part_range(n).1);
            } else {
                missing.push(n);
            }
        }
        let mut sends = futures::stream::iter(missing)
            .map(|n| async move { (n, self.send_part(object, file, upload_id, n).await) })
            .buffer_unordered(self.concurrency);
        while let Some((n, result)) = sends.next().await {
            parts.insert(n, result?);
        }
        drop(sends);
        // Every byte of the object went through exactly one part: its digests and line counts
        // give the object's checksum and lines without another read.
        let mut numbered: Vec<(u64, SentPart)> = parts.into_iter().collect();
        numbered.sort_by_key(|(n, _)| *n);
        let lines = numbered.iter().map(|(_, p)| p.newlines).sum::<u64>()
            + numbered.last().map_or(0, |(_, p)| u64::from(p.ends_open));
        let sized: Vec<(Vec<u8>, u64)> = numbered
            .iter()
            .map(|(n, p)| (p.digest.clone(), object.part_range(*n).1))
            .collect();
        let scan = Scan {
            lines,
            checksum: checksum::multipart_checksum(self.settings.headers.checksum, &sized),
            part_digests: sized.into_iter().map(|(d, _)| d).collect(),
        };
        let completed = numbered.into_iter().map(|(_, p)| p.part).collect();
        file.check(object)?;
        let outcome = self.complete(object, &scan, upload_id, completed).await?;
        if self.settings.count_lines {
            self.state.record_lines(object, lines);
        }
        Ok(outcome)
    }

    /// Part `number` of a multipart object, read as these settings want it.
    async fn read_nth_part(
        &self,
        file: &Arc<Opened>,
        object: &PlannedObject,
        number: u64,
    ) -> Result<PartRead, UploadError> {
        let (offset, len) = object.part_range(number);
        let (algorithm, count_lines) = (self.settings.headers.checksum, self.settings.count_lines);
        let read = read_part(file, object, offset, len, algorithm, count_lines).await?;
        Progress::add(&self.state.progress.bytes_read, len);
        Ok(read)
    }

    async fn send_part(
        &self,
        object: &PlannedObject,
        file: &Arc<Opened>,
        upload_id: &str,
        number: u64,
    ) -> Result<SentPart, UploadError> {
        if self.copies(object, file) {
            return self.copy_part(object, file, upload_id, number).await;
        }
        let _permit = self.permit(object, number).await;
        if self.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        let len = object.part_range(number).1;
        let read = self.read_nth_part(file, object, number).await?;
        let digest = checksum::to_base64(&read.digest);
        let part = self
            .upload_part(object, upload_id, number, read.body, &digest)
            .await?;
        Progress::add(&self.state.progress.bytes_sent, len);
        Progress::add(&self.state.progress.parts_sent, 1);
        Progress::add(&self.state.progress.bytes_done, len);
        Ok(SentPart {
            part,
            digest: read.digest,
            newlines: read.newlines,
            ends_open: read.ends_open,
        })
    }
}

/// A test hook (`OUTBOUND_TEST_EXIT_AFTER_CREATE=1`): the process dies between creating a
/// multipart upload and recording it, the window the operator's cleanup must cover by listing.
pub(super) fn test_hook_exit_after_create() {
    if std::env::var_os("OUTBOUND_TEST_EXIT_AFTER_CREATE").is_some_and(|v| v == "1") {
        tracing::warn!("test hook: exiting before the upload is recorded");
        std::process::exit(i32::from(super::error::EXIT_RETRYABLE));
    }
}

/// User metadata naming the version of the source file an object was cut from (size, mtime,
/// inode, offset): a later run that finds the same stamp knows the object holds those bytes
/// without reading them again.
pub(super) const STAMP_KEY: &str = "outbound-source-stamp";

/// What HEAD found at a key.
pub(super) struct Existing {
    pub size: i64,
    pub checksum: Option<String>,
    /// The source stamp and line count the writer recorded, if it was us.
    pub stamp: Option<String>,
    pub lines: Option<u64>,
}

impl Existing {
    /// The object was written from this very version of the file and range, and the server
    /// holds a checksum for it: it is delivered, no read needed.
    pub(super) fn written_from(&self, object: &PlannedObject, file: &Opened) -> bool {
        self.size == object.size as i64
            && self.checksum.is_some()
            && self.stamp.as_deref() == Some(file.token(object).as_str())
    }

    pub fn matches(&self, size: u64, checksum: &str) -> bool {
        self.size == size as i64 && self.checksum.as_deref() == Some(checksum)
    }

    pub(super) fn describe(&self, algorithm: ChecksumAlgorithm) -> String {
        match &self.checksum {
            Some(value) => format!("size {}, {} {}", self.size, algorithm.name(), value),
            None => format!("size {}, no {} checksum", self.size, algorithm.name()),
        }
    }
}

pub(super) fn with_checksum(
    part: aws_sdk_s3::types::builders::CompletedPartBuilder,
    algorithm: ChecksumAlgorithm,
    value: &str,
) -> aws_sdk_s3::types::builders::CompletedPartBuilder {
    match algorithm {
        ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64_nvme(value),
        ChecksumAlgorithm::Crc32C => part.checksum_crc32_c(value),
        ChecksumAlgorithm::Sha256 => part.checksum_sha256(value),
    }
}

fn stored_checksum(part: &CompletedPart, algorithm: ChecksumAlgorithm) -> Option<String> {
    match algorithm {
        ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64_nvme.clone(),
        ChecksumAlgorithm::Crc32C => part.checksum_crc32_c.clone(),
        ChecksumAlgorithm::Sha256 => part.checksum_sha256.clone(),
    }
}

/// A part stored in S3 and what its bytes gave.
pub(super) struct SentPart {
    pub part: CompletedPart,
    pub digest: Vec<u8>,
    pub newlines: u64,
    pub ends_open: bool,
}

/// User metadata travels in HTTP headers: keep ASCII, percent-encode the rest.
pub(super) fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_stay_ascii() {
        assert_eq!(header_safe("a/b c.sync"), "a/b c.sync");
        assert_eq!(header_safe("é%"), "%C3%A9%25");
    }
}
