//! The manifest: one JSON object per delivery, modelled on Audience Manager's `.info` file,
//! rebuilt from what the bucket holds (HEAD of every object) and written last.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use futures::StreamExt as _;

use super::engine::ObjectSettings;
use super::error::{UploadError, cause};
use super::retry::RetryPolicy;
use super::source::{ObjectReader, S3Source, scan};
use super::state::PieceRecord;
use crate::checksum::{self, ChecksumAlgorithm};
use crate::plan::{Plan, PlannedObject, SourceFile};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManifestFile {
    /// The object's key in the bucket.
    pub file_name: String,
    /// Piece number within its source file, from 1.
    pub file_sequence_number: u32,
    pub file_size: u64,
    /// A piece of a gzip file cut on lines: its decompressed size (`FileSize` is compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    pub num_records: u64,
    pub source_file: String,
    pub checksum: ManifestChecksum,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManifestChecksum {
    pub algorithm: String,
    /// `FULL_OBJECT` or `COMPOSITE` (S3's checksum types).
    #[serde(rename = "Type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Totals {
    pub num_files: u64,
    pub num_records: u64,
    pub total_size: u64,
}

/// HEADs every object of the plan and builds the manifest from what is stored; fails when an
/// object is missing or differs in size from the plan. Line counts come from `known` (counted
/// while the objects were sent, by plan index), else from the object's `outbound-lines` metadata
/// (single PUTs carry it), else from counting the source's bytes here. A gzip file cut on lines
/// is listed piece by piece, as its shard reported them (`pieces`, by plan index).
#[allow(clippy::too_many_arguments)]
pub async fn build(
    s3: &Client,
    bucket: &str,
    plan: &Plan,
    algorithm: ChecksumAlgorithm,
    known: &BTreeMap<usize, u64>,
    pieces: &BTreeMap<usize, Vec<PieceRecord>>,
    retry: &RetryPolicy,
    bytes_read: &std::sync::atomic::AtomicU64,
    source: Option<&Arc<S3Source>>,
) -> Result<Manifest, UploadError> {
    // Each gzip unit stands for its pieces: objects of their own, with their own counts.
    let mut entries: Vec<(PlannedObject, Option<&PieceRecord>)> = Vec::new();
    for object in &plan.objects {
        if !object.gzip_pieces {
            entries.push((object.clone(), None));
            continue;
        }
        let Some(records) = pieces.get(&object.index) else {
            return Err(UploadError::Manifest {
                bucket: bucket.to_string(),
                key: object.key.clone(),
                reason: format!(
                    "the pieces {} was cut into were not reported by the shard that sent them",
                    object.source
                ),
                retryable: false,
            });
        };
        for record in records {
            let mut piece = object.clone();
            piece.key = record.key.clone();
            piece.sequence = record.sequence as u32;
            piece.size = record.size;
            piece.gzip_pieces = false;
            entries.push((piece, Some(record)));
        }
    }
    let heads = futures::stream::iter(entries.iter())
        .map(|(object, record)| async move {
            let head = retry
                .run("HeadObject", &object.key, || async {
                    s3.head_object()
                        .bucket(bucket)
                        .key(&object.key)
                        .checksum_mode(ChecksumMode::Enabled)
                        .send()
                        .await
                        .map_err(|e| cause(&e))
                })
                .await
                .map_err(|cause| UploadError::Head {
                    bucket: bucket.to_string(),
                    key: object.key.clone(),
                    cause,
                })?;
            let size = head.content_length().unwrap_or(-1);
            let value = match algorithm {
                ChecksumAlgorithm::Crc64Nvme => head.checksum_crc64_nvme(),
                ChecksumAlgorithm::Crc32C => head.checksum_crc32_c(),
                ChecksumAlgorithm::Sha256 => head.checksum_sha256(),
            };
            let incomplete = |reason: String| UploadError::Manifest {
                bucket: bucket.to_string(),
                key: object.key.clone(),
                reason,
                retryable: false,
            };
            if size != object.size as i64 {
                return Err(incomplete(format!(
                    "object is {size} bytes in the bucket, {} planned",
                    object.size
                )));
            }
            let Some(value) = value else {
                return Err(incomplete(format!(
                    "object has no {} checksum",
                    algorithm.name()
                )));
            };
            let kind = head
                .checksum_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "FULL_OBJECT".to_string());
            let from_metadata = || {
                head.metadata()
                    .and_then(|m| m.get("outbound-lines"))
                    .and_then(|v| v.parse().ok())
            };
            let known = match record {
                Some(r) => Some(r.lines),
                None => known.get(&object.index).copied(),
            };
            let lines = match known.or_else(from_metadata) {
                Some(lines) => lines,
                None => {
                    let object = object.clone();
                    let size = object.size;
                    let source = source.cloned();
                    let lines =
                        tokio::task::spawn_blocking(move || count_lines(&object, source.as_ref()))
                            .await
                            .expect("counting does not panic")?;
                    bytes_read.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    lines
                }
            };
            Ok(ManifestFile {
                file_name: object.key.clone(),
                file_sequence_number: object.sequence,
                file_size: object.size,
                uncompressed_size: record.map(|r| r.uncompressed_size),
                num_records: lines,
                source_file: object.source.clone(),
                checksum: ManifestChecksum {
                    algorithm: algorithm.name().to_string(),
                    kind,
                    value: value.to_string(),
                },
            })
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
    let files = heads.into_iter().collect::<Result<Vec<_>, _>>()?;
    let totals = Totals {
        num_files: files.len() as u64,
        num_records: files.iter().map(|f| f.num_records).sum(),
        total_size: files.iter().map(|f| f.file_size).sum(),
    };
    Ok(Manifest { files, totals })
}

/// Counts the lines of a planned object by reading its bytes (a last line without a newline
/// counts). Rare (only counts no shard reported), so the scan's checksum is simply not used.
pub fn count_lines(
    object: &PlannedObject,
    source: Option<&Arc<S3Source>>,
) -> Result<u64, UploadError> {
    let scanned = match source {
        Some(s3) => {
            let file = SourceFile {
                relative: object.source.clone(),
                path: object.path.clone(),
                size: object.offset + object.size,
                version: object.source_version.clone(),
            };
            scan(
                &ObjectReader::new(s3, &file),
                object,
                ChecksumAlgorithm::Crc32C,
            )?
        }
        None => {
            let file = super::walk::open_source(&object.source, &object.path)?;
            scan(&file, object, ChecksumAlgorithm::Crc32C)?
        }
    };
    Ok(scanned.lines)
}

/// Writes the manifest with If-None-Match; an identical manifest already there counts as written.
pub async fn write(
    s3: &Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
    settings: &ObjectSettings,
    retry: &RetryPolicy,
) -> Result<bool, UploadError> {
    let failed_as = |reason: String, retryable: bool| UploadError::Manifest {
        bucket: bucket.to_string(),
        key: key.to_string(),
        reason,
        retryable,
    };
    let failed = |reason: String| failed_as(reason, false);
    let mut body = serde_json::to_vec_pretty(manifest).map_err(|e| failed(e.to_string()))?;
    body.push(b'\n');
    let digest = checksum::to_base64(&checksum::digest(settings.headers.checksum, &body));
    let sent = retry
        .run("PutObject", key, || async {
            let mut request = settings.headers.put(
                s3.put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("application/json")
                    .body(ByteStream::from(body.clone())),
                &digest,
            );
            if !settings.overwrite {
                request = request.if_none_match("*");
            }
            request.send().await.map_err(|e| cause(&e))
        })
        .await;
    match sent {
        Ok(_) => Ok(true),
        Err(c) => {
            if !c.precondition_failed() {
                return Err(failed_as(c.to_string(), c.retryable));
            }
            let existing = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    let c = cause(&e);
                    failed_as(format!("it exists and cannot be read: {c}"), c.retryable)
                })?;
            let bytes = existing
                .body
                .collect()
                .await
                .map_err(|e| failed_as(format!("it exists and cannot be read: {e}"), true))?
                .into_bytes();
            if bytes.as_ref() == body.as_slice() {
                Ok(false)
            } else {
                Err(failed(
                    "a different manifest already exists (set overwrite to replace it)".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_from_the_source_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"skip\na\nb\nlast without newline").unwrap();
        let object = |offset: u64, size: u64| PlannedObject {
            index: 0,
            key: "k".into(),
            source: "f".into(),
            path: path.clone(),
            sequence: 1,
            offset,
            size,
            multipart: false,
            part_size: 0,
            parts: 1,
            gzip_pieces: false,
            compress: None,
            whole: false,
            source_version: None,
        };
        assert_eq!(count_lines(&object(5, 4), None).unwrap(), 2, "a\\nb\\n");
        assert_eq!(
            count_lines(&object(5, 24), None).unwrap(),
            3,
            "the open last line counts"
        );
        assert_eq!(count_lines(&object(0, 0), None).unwrap(), 0);
        let err = count_lines(&object(5, 100), None).unwrap_err();
        assert!(err.to_string().contains("shorter than planned"), "{err}");
    }
}
