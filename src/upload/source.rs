//! Where an upload's bytes come from, and reading them: a folder's files (mapped from the page
//! cache, refused when written while sent), or the objects of a bucket and prefix of the
//! provider's own (`--source-s3`), read with the provider's credentials, which are kept apart from
//! the destination's, in ranged GETs pinned to the ETag the plan saw (an object overwritten
//! during the delivery is a failure of its own, never a mix of two versions).

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::engine::Scan;
use super::error::{UploadError, cause};
use super::walk::{compile_globs, selected};
use crate::checksum::{self, ChecksumAlgorithm, Hasher};
use crate::credentials::{Access, Target};
use crate::plan::{PlanProgress, PlannedObject, ReadAt, SourceFile};

/// Chunk size of reads: hashed, then counted while still in L2 (512 KiB a core here).
const SCAN_CHUNK: usize = 1 << 18;

/// A bucket and prefix of the provider's own, and the client that reads it.
pub struct S3Source {
    pub client: Client,
    pub bucket: String,
    /// Ends with `/` unless empty: the objects below it are the source's files.
    pub prefix: String,
    /// The runtime that blocking readers (the planner, the gzip reader) wait on.
    handle: tokio::runtime::Handle,
}

/// The environment variables of the source's keys: `OUTBOUND_SOURCE_` and the SDK's names, so
/// that they never mix with the destination's (`AWS_ACCESS_KEY_ID` ...).
pub const SOURCE_KEY_ENV: [&str; 3] = [
    "OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID",
    "OUTBOUND_SOURCE_AWS_SECRET_ACCESS_KEY",
    "OUTBOUND_SOURCE_AWS_SESSION_TOKEN",
];

impl S3Source {
    /// Connects to `s3://bucket/prefix` with the source's keys from the environment (else the
    /// workload identity).
    pub async fn connect(
        url: &str,
        region: &str,
        endpoint: Option<&str>,
        force_path_style: bool,
        ca_bundle: Option<&str>,
    ) -> Result<Arc<S3Source>, UploadError> {
        let (bucket, prefix) = parse_url(url)?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let target = Target {
            region: region.to_string(),
            endpoint: endpoint.map(str::to_string),
            force_path_style,
            sts_endpoint: None,
            expected_bucket_owner: None,
            ca_bundle: ca_bundle.map(str::to_string),
        };
        let config = match (var(SOURCE_KEY_ENV[0]), var(SOURCE_KEY_ENV[1])) {
            (Some(access_key_id), Some(secret_access_key)) => {
                let access = Access::Keys {
                    access_key_id,
                    secret_access_key,
                    session_token: var(SOURCE_KEY_ENV[2]),
                };
                crate::credentials::sdk_config(&access, &target).await
            }
            // Never the environment's AWS_* keys: in a pod they may be the destination's.
            _ => crate::credentials::workload_identity_config(&target).await,
        };
        let conf = crate::credentials::s3_config(&config, &target)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(std::time::Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .build(),
            )
            .build();
        Ok(Arc::new(S3Source {
            client: Client::from_conf(conf),
            bucket,
            prefix,
            handle: tokio::runtime::Handle::current(),
        }))
    }

    /// The objects below the prefix that the globs select (and, when given, that were written in
    /// `[after, before)`): their names relative to the prefix, keys, sizes and ETags. Blocking: it
    /// runs on the planner's thread.
    pub fn list(
        &self,
        include: &[String],
        exclude: &[String],
        window: (Option<jiff::Timestamp>, Option<jiff::Timestamp>),
        progress: &PlanProgress,
    ) -> Result<Vec<SourceFile>, UploadError> {
        let (include, exclude) = (compile_globs(include)?, compile_globs(exclude)?);
        let mut files = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .handle
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&self.prefix)
                        .set_continuation_token(token.clone())
                        .send(),
                )
                .map_err(|e| UploadError::SourceRead {
                    bucket: self.bucket.clone(),
                    key: self.prefix.clone(),
                    cause: cause(&e),
                })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let relative = &key[self.prefix.len().min(key.len())..];
                // Folder markers are not files.
                if relative.is_empty() || key.ends_with('/') {
                    continue;
                }
                if !selected(&include, &exclude, relative) {
                    continue;
                }
                let written = object
                    .last_modified()
                    .and_then(|t| jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok());
                if let (Some(after), Some(at)) = (window.0, written)
                    && at < after
                {
                    continue;
                }
                if let (Some(before), Some(at)) = (window.1, written)
                    && at >= before
                {
                    continue;
                }
                let size = object.size().unwrap_or(0).max(0) as u64;
                progress.found(size);
                files.push(SourceFile {
                    relative: relative.to_string(),
                    path: key.into(),
                    size,
                    version: object.e_tag().map(str::to_string),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(files)
    }

    /// `len` bytes at `offset` of the object `key`, as long as it is still the version `etag`.
    pub async fn get_range(
        &self,
        key: &str,
        etag: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, UploadError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .if_match(etag)
            .send()
            .await
            .map_err(|e| self.read_error(key, cause(&e)))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| UploadError::SourceRead {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                cause: super::error::S3Cause {
                    code: None,
                    status: None,
                    message: format!("the body broke off: {e}"),
                    retryable: true,
                },
            })?
            .into_bytes();
        if body.len() as u64 != len {
            return Err(UploadError::SourceObjectChanged {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                what: format!("{} bytes came back for {len} at byte {offset}", body.len()),
            });
        }
        Ok(body)
    }

    /// A failed read: the object overwritten or deleted since the plan (its own reason), or an
    /// S3 error (transient ones retried by the next pod).
    fn read_error(&self, key: &str, cause: super::error::S3Cause) -> UploadError {
        if cause.precondition_failed() || cause.not_found() {
            UploadError::SourceObjectChanged {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                what: if cause.not_found() {
                    "it was deleted".into()
                } else {
                    "it was overwritten (its ETag is not the one planned on)".into()
                },
            }
        } else {
            UploadError::SourceRead {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                cause,
            }
        }
    }

    /// A reader of the whole object `key` at version `etag`, for blocking code (the gzip reader).
    pub fn stream(self: &Arc<Self>, key: &str, etag: &str) -> Result<ObjectStream, UploadError> {
        let out = self
            .handle
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .if_match(etag)
                    .send(),
            )
            .map_err(|e| self.read_error(key, cause(&e)))?;
        Ok(ObjectStream {
            handle: self.handle.clone(),
            body: out.body,
            chunk: Bytes::new(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
        })
    }
}

/// `s3://bucket/prefix` -> (bucket, prefix ending with `/` unless empty).
pub fn parse_url(url: &str) -> Result<(String, String), UploadError> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        UploadError::Settings(format!("source {url:?} must look like s3://bucket/prefix/"))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(UploadError::Settings(format!(
            "source {url:?} names no bucket"
        )));
    }
    let mut prefix = prefix.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok((bucket.to_string(), prefix))
}

/// Positioned reads of one object version, for the planner (a window before each cut).
pub struct ObjectReader {
    source: Arc<S3Source>,
    key: String,
    etag: String,
    size: u64,
}

impl ObjectReader {
    pub fn new(source: &Arc<S3Source>, file: &SourceFile) -> ObjectReader {
        ObjectReader {
            source: Arc::clone(source),
            key: file.path.to_string_lossy().into_owned(),
            etag: file.version.clone().unwrap_or_default(),
            size: file.size,
        }
    }
}

impl ReadAt for ObjectReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset);
        let bytes = self
            .source
            .handle
            .block_on(self.source.get_range(&self.key, &self.etag, offset, len))
            .map_err(std::io::Error::other)?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
}

/// An object's body read by blocking code.
pub struct ObjectStream {
    handle: tokio::runtime::Handle,
    body: aws_sdk_s3::primitives::ByteStream,
    chunk: Bytes,
    bucket: String,
    key: String,
}

/// The body of a source object broke off (the network): the reader tells it from a corrupt
/// stream, and the next pod reads it again.
#[derive(Debug, thiserror::Error)]
#[error("the body of s3://{bucket}/{key} broke off: {message}")]
pub struct StreamBroke {
    pub bucket: String,
    pub key: String,
    pub message: String,
}

impl Read for ObjectStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.body.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(StreamBroke {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        message: e.to_string(),
                    }));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A source opened for one object: a file (with what it looked like when opened), or an object
/// version of an S3 source.
pub struct Opened {
    kind: Kind,
}

enum Kind {
    File {
        file: File,
        stamp: Stamp,
    },
    Object {
        source: Arc<S3Source>,
        key: String,
        etag: String,
    },
}

impl Opened {
    pub(super) fn open(
        object: &PlannedObject,
        s3: Option<&Arc<S3Source>>,
    ) -> Result<Opened, UploadError> {
        if let Some(source) = s3 {
            return Ok(Opened {
                kind: Kind::Object {
                    source: Arc::clone(source),
                    key: object.path.to_string_lossy().into_owned(),
                    etag: object.source_version.clone().unwrap_or_default(),
                },
            });
        }
        let failed = |source| UploadError::Read {
            file: object.source.clone(),
            offset: 0,
            source,
        };
        let file = super::walk::open_source(&object.source, &object.path)?;
        let stamp = Stamp::of(&file.metadata().map_err(failed)?);
        if stamp.len < object.offset + object.size {
            return Err(UploadError::Changed {
                file: object.source.clone(),
                what: format!(
                    "it is {} bytes, planned to at least byte {}",
                    stamp.len,
                    object.offset + object.size
                ),
            });
        }
        Ok(Opened {
            kind: Kind::File { file, stamp },
        })
    }

    /// The provider's bucket, the object's key and the ETag planned on, when the source is one.
    pub(super) fn object(&self) -> Option<(&S3Source, &str, &str)> {
        match &self.kind {
            Kind::Object { source, key, etag } => Some((source, key, etag)),
            Kind::File { .. } => None,
        }
    }

    /// This version of the source: a file's size, modification time and inode, or an object's
    /// ETag.
    fn version(&self) -> String {
        match &self.kind {
            Kind::File { stamp, .. } => stamp.version(),
            Kind::Object { etag, .. } => format!("s3:{}", etag.trim_matches('"')),
        }
    }

    /// The object's stamp as its metadata records it: this version of the source and the
    /// object's range.
    pub(super) fn token(&self, object: &PlannedObject) -> String {
        format!("{}@{}+{}", self.version(), object.offset, object.size)
    }

    /// The stamp of a gzip piece cut from this version of the file, starting at decompressed byte
    /// `at`: a run that finds it knows the piece holds that file's lines from there.
    pub(super) fn piece_token(&self, at: u64) -> String {
        format!("{}@gz{at}", self.version())
    }

    /// Fails when the file was written since it was opened (before an object is made visible:
    /// an object must be the bytes of one version of its file). An S3 source's every read is
    /// pinned to the version planned on, so there is nothing to look at again.
    pub(super) fn check(&self, object: &PlannedObject) -> Result<(), UploadError> {
        let Kind::File { file, stamp } = &self.kind else {
            return Ok(());
        };
        let now = file.metadata().map_err(|source| UploadError::Read {
            file: object.source.clone(),
            offset: 0,
            source,
        })?;
        match stamp.changed_to(&Stamp::of(&now)) {
            Some(what) => Err(UploadError::Changed {
                file: object.source.clone(),
                what,
            }),
            None => Ok(()),
        }
    }

    /// The whole source, read from the start (the gzip reader's input).
    pub(super) fn stream(
        &self,
        object: &PlannedObject,
    ) -> Result<Box<dyn Read + Send>, UploadError> {
        match &self.kind {
            Kind::File { file, .. } => Ok(Box::new(file.try_clone().map_err(|e| {
                UploadError::Read {
                    file: object.source.clone(),
                    offset: 0,
                    source: e,
                }
            })?)),
            Kind::Object { source, key, etag } => Ok(Box::new(source.stream(key, etag)?)),
        }
    }

    /// Reads the object's range once: its lines, each part's digest and its checksum as S3 will
    /// report it (to compare with an object found at its key).
    pub(super) async fn scan(
        self: &Arc<Self>,
        object: &PlannedObject,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Scan, UploadError> {
        match &self.kind {
            Kind::File { .. } => {
                let (file, object) = (Arc::clone(self), object.clone());
                tokio::task::spawn_blocking(move || {
                    let Kind::File { file: handle, .. } = &file.kind else {
                        unreachable!("a file")
                    };
                    scan(handle, &object, algorithm)
                })
                .await
                .expect("the scan does not panic")
            }
            Kind::Object { .. } => {
                let mut lines = 0u64;
                let mut parts = Vec::new();
                let mut last = None;
                for n in 1..=object.parts.max(1) {
                    let (offset, len) = if object.multipart {
                        object.part_range(n)
                    } else {
                        (object.offset, object.size)
                    };
                    let read = read_part(self, object, offset, len, algorithm, true).await?;
                    lines += read.newlines;
                    last = Some(read.ends_open);
                    parts.push((read.digest, len));
                }
                lines += u64::from(last.unwrap_or(false));
                let checksum = if object.multipart {
                    checksum::multipart_checksum(algorithm, &parts)
                } else {
                    checksum::to_base64(&parts[0].0)
                };
                Ok(Scan {
                    lines,
                    part_digests: parts.into_iter().map(|(d, _)| d).collect(),
                    checksum,
                })
            }
        }
    }
}

/// Size, modification time and inode of a file: a change of the first two means it was
/// written; a new inode, that it was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }

    /// This version of the file: size, modification time (ns) and inode.
    fn version(&self) -> String {
        let modified = self
            .modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{}-{modified}-{}", self.len, self.inode)
    }

    /// What changed between `self` and `now`, in words.
    fn changed_to(&self, now: &Stamp) -> Option<String> {
        if self.len != now.len {
            Some(format!(
                "its size went from {} to {} bytes",
                self.len, now.len
            ))
        } else if self.modified != now.modified {
            Some("it was modified".into())
        } else {
            None
        }
    }
}

/// A range read for sending: its bytes, digest and newline count.
pub(super) struct PartRead {
    pub body: Bytes,
    pub digest: Vec<u8>,
    pub newlines: u64,
    /// The range is not empty and its last byte is not a newline.
    pub ends_open: bool,
}

/// Reads `len` bytes at `offset` of the object's source, checksums them and counts their
/// newlines (when asked): the only pass over the bytes before the socket.
pub(super) async fn read_part(
    file: &Arc<Opened>,
    object: &PlannedObject,
    offset: u64,
    len: u64,
    algorithm: ChecksumAlgorithm,
    count_lines: bool,
) -> Result<PartRead, UploadError> {
    match &file.kind {
        Kind::File { .. } => {
            read_file_part(file, object, offset, len, algorithm, count_lines).await
        }
        Kind::Object { source, key, etag } => {
            let body = if len == 0 {
                Bytes::new()
            } else {
                source.get_range(key, etag, offset, len).await?
            };
            tokio::task::spawn_blocking(move || Ok(digested(body, algorithm, count_lines)))
                .await
                .expect("hashing does not panic")
        }
    }
}

/// Maps `len` bytes at `offset` of a file (on a blocking thread), checksums them and counts
/// their newlines. The part is sent straight from the page cache (the mapping is the body),
/// because copying parts into buffers of their own cost more CPU than everything else together
/// (measured: bench/analysis.md).
async fn read_file_part(
    file: &Arc<Opened>,
    object: &PlannedObject,
    offset: u64,
    len: u64,
    algorithm: ChecksumAlgorithm,
    count_lines: bool,
) -> Result<PartRead, UploadError> {
    let file = Arc::clone(file);
    let source = object.source.clone();
    tokio::task::spawn_blocking(move || {
        let Kind::File {
            file: handle,
            stamp,
        } = &file.kind
        else {
            unreachable!("a file part of a file")
        };
        let failed = |offset: u64, e: std::io::Error| UploadError::Read {
            file: source.clone(),
            offset,
            source: e,
        };
        if len == 0 {
            return Ok(digested(Bytes::new(), algorithm, count_lines));
        }
        // A file written while it is sent would deliver a mix of old and new bytes; touching a
        // mapped page past the end of a shrunk file would kill the process (SIGBUS). Refuse both
        // with a clear error, checked before every part.
        let now = Stamp::of(&handle.metadata().map_err(|e| failed(offset, e))?);
        if let Some(what) = stamp.changed_to(&now) {
            return Err(UploadError::Changed { file: source, what });
        }
        // SAFETY: the mapping is read-only and private to this part; the source is a read-only
        // file that is not written during the delivery (the contract of a source volume), and a
        // shorter file was refused just above.
        // Populated at once: one call maps the whole part instead of a page fault every few
        // pages while it is checksummed.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .populate()
                .map(handle)
        }
        .map_err(|e| failed(offset, e))?;
        Ok(digested(Bytes::from_owner(map), algorithm, count_lines))
    })
    .await
    .expect("reading does not panic")
}

/// A part's bytes with their digest and (when asked) newline count: the one pass over them.
fn digested(body: Bytes, algorithm: ChecksumAlgorithm, count_lines: bool) -> PartRead {
    let mut hasher = Hasher::new(algorithm);
    let mut newlines = 0u64;
    for chunk in body.chunks(SCAN_CHUNK) {
        hasher.update(chunk);
        if count_lines {
            newlines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        }
    }
    PartRead {
        ends_open: body.last().is_some_and(|&b| b != b'\n'),
        digest: hasher.finish(),
        newlines,
        body,
    }
}

/// Reads the object once: counts its lines and computes the digest of every part and the object's
/// checksum as S3 will report it.
pub fn scan<R: ReadAt + ?Sized>(
    source: &R,
    object: &PlannedObject,
    algorithm: ChecksumAlgorithm,
) -> Result<Scan, UploadError> {
    let mut buf = vec![0u8; SCAN_CHUNK.min(object.size.max(1) as usize)];
    let mut lines = 0u64;
    let mut parts = Vec::with_capacity(object.parts as usize);
    for n in 1..=object.parts.max(1) {
        let (offset, len) = if object.multipart {
            object.part_range(n)
        } else {
            (object.offset, object.size)
        };
        let mut hasher = Hasher::new(algorithm);
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let at = offset + done;
            let got = source
                .read_full_at(&mut buf[..want], at)
                .map_err(|e| UploadError::Read {
                    file: object.source.clone(),
                    offset: at,
                    source: e,
                })?;
            if got < want {
                return Err(UploadError::Read {
                    file: object.source.clone(),
                    offset: at + got as u64,
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than planned",
                    ),
                });
            }
            let chunk = &buf[..want];
            hasher.update(chunk);
            lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
            done += want as u64;
        }
        parts.push((hasher.finish(), len));
    }
    let checksum = if !object.multipart {
        checksum::to_base64(&parts[0].0)
    } else {
        checksum::multipart_checksum(algorithm, &parts)
    };
    // A file that does not end with a newline still has a last line.
    if object.size > 0 {
        let mut last = [0u8; 1];
        source
            .read_full_at(&mut last, object.offset + object.size - 1)
            .map_err(|e| UploadError::Read {
                file: object.source.clone(),
                offset: object.offset + object.size - 1,
                source: e,
            })?;
        if last[0] != b'\n' {
            lines += 1;
        }
    }
    Ok(Scan {
        lines,
        part_digests: parts.into_iter().map(|(d, _)| d).collect(),
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn object(size: u64, multipart: bool, part_size: u64) -> PlannedObject {
        PlannedObject {
            index: 0,
            key: "k".into(),
            source: "s".into(),
            path: PathBuf::new(),
            sequence: 1,
            offset: 3,
            size,
            multipart,
            part_size,
            parts: if multipart {
                size.div_ceil(part_size)
            } else {
                1
            },
            gzip_pieces: false,
            compress: None,
            whole: false,
            source_version: None,
        }
    }

    #[test]
    fn source_urls_name_a_bucket_and_a_folder() {
        assert_eq!(
            parse_url("s3://provider/exports/daily").unwrap(),
            ("provider".into(), "exports/daily/".into())
        );
        assert_eq!(
            parse_url("s3://provider").unwrap(),
            ("provider".into(), "".into())
        );
        assert!(parse_url("provider/x").is_err());
        assert!(parse_url("s3:///x").is_err());
    }

    #[test]
    fn scan_counts_lines_and_checksums() {
        let mut data = b"xyz".to_vec();
        let body: Vec<u8> = (0..12_000_000u32)
            .map(|i| {
                if i % 100 == 99 {
                    b'\n'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        data.extend_from_slice(&body);
        data.extend_from_slice(b"tail");
        let single = scan(
            &data,
            &object(body.len() as u64, false, 0),
            ChecksumAlgorithm::Crc64Nvme,
        )
        .unwrap();
        assert_eq!(single.lines, 120_000);
        let whole = checksum::to_base64(&checksum::digest(ChecksumAlgorithm::Crc64Nvme, &body));
        assert_eq!(single.checksum, whole);
        let multi = scan(
            &data,
            &object(body.len() as u64, true, 5 << 20),
            ChecksumAlgorithm::Crc64Nvme,
        )
        .unwrap();
        assert_eq!(multi.part_digests.len(), 3);
        assert_eq!(
            multi.checksum, whole,
            "full-object CRC of a multipart object is the plain CRC"
        );
        let sha = scan(
            &data,
            &object(body.len() as u64, true, 5 << 20),
            ChecksumAlgorithm::Sha256,
        )
        .unwrap();
        assert!(sha.checksum.ends_with("-3"));
        // No newline at the end: the last line still counts.
        let partial = scan(
            &data,
            &object(body.len() as u64 + 2, false, 0),
            ChecksumAlgorithm::Crc32C,
        )
        .unwrap();
        assert_eq!(partial.lines, 120_001);
        let empty = scan(&data, &object(0, false, 0), ChecksumAlgorithm::Crc64Nvme).unwrap();
        assert_eq!(empty.lines, 0);
        assert_eq!(empty.part_digests.len(), 1);
    }

    #[tokio::test]
    async fn a_part_read_agrees_with_the_scan_and_a_shrunk_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let body: Vec<u8> = (0..3_000_000u32)
            .map(|i| if i % 70 == 69 { b'\n' } else { b'x' })
            .collect();
        std::fs::write(&path, &body).unwrap();
        let mut planned = object(1_000_001, true, 1 << 20);
        planned.path = path.clone();
        let file = Arc::new(Opened::open(&planned, None).unwrap());
        let (offset, len) = planned.part_range(1);
        let part_1 = async |count_lines| {
            read_part(
                &file,
                &planned,
                offset,
                len,
                ChecksumAlgorithm::Crc64Nvme,
                count_lines,
            )
            .await
        };
        let read = part_1(true).await.unwrap();
        let range = &body[offset as usize..(offset + len) as usize];
        assert_eq!(&read.body[..], range);
        assert_eq!(
            read.digest,
            checksum::digest(ChecksumAlgorithm::Crc64Nvme, range)
        );
        assert_eq!(
            read.newlines,
            memchr::memchr_iter(b'\n', range).count() as u64
        );
        assert_eq!(read.ends_open, range.last() != Some(&b'\n'));
        // Uncounted (no manifest to read the count): the same bytes and digest, no count.
        let uncounted = part_1(false).await.unwrap();
        assert_eq!(uncounted.digest, read.digest);
        assert_eq!(&uncounted.body[..], range);
        assert_eq!(uncounted.newlines, 0);
        let empty = read_part(&file, &planned, 0, 0, ChecksumAlgorithm::Crc32C, true)
            .await
            .unwrap();
        assert!(empty.body.is_empty() && !empty.ends_open);

        std::fs::write(&path, &body[..1000]).unwrap();
        let err = part_1(true)
            .await
            .err()
            .expect("a file that changed since it was opened is refused");
        assert!(
            err.to_string().contains("size went from 3000000 to 1000"),
            "{err}"
        );
        assert_eq!(err.reason(), "SourceChanged");
        assert!(!err.is_transient());
    }
}
