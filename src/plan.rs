//! Pure planning: source files and sizes -> objects (keys, byte ranges), part sizes, shards.
//!
//! The only IO is reading small windows just before each cut in lines mode, through [`ReadAt`],
//! so the planner never reads a file end to end and tests can feed it synthetic files.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::units::{MAX_SPLIT_SIZE, format_size};

/// S3's smallest part (except the last one).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's largest number of parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest single PUT.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;
/// With no part size given, a large object is cut into about this many parts ...
pub const GROWN_PARTS: u64 = 64;
/// ... of at most this size (memory in flight is the concurrency times the part size), and never
/// smaller than the default part size.
pub const MAX_GROWN_PART: u64 = 64 << 20;
/// Default (and, when parts grow, smallest) part size.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Default naming of the pieces of a split file.
pub const DEFAULT_NAME_TEMPLATE: &str = "{stem}-{n}{ext}";

/// How far back a cut search reads at a time in lines mode.
const CUT_WINDOW: usize = 64 << 10;

/// Where a file may be cut.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SplitOn {
    /// Only just after a newline: every piece is a readable file of whole lines.
    #[default]
    Lines,
    /// Exactly at the split size: for opaque files.
    Bytes,
}

impl SplitOn {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitOn::Lines => "lines",
            SplitOn::Bytes => "bytes",
        }
    }
}

/// Everything that decides a plan.
#[derive(Clone, Debug)]
pub struct PlanSettings {
    /// Largest object, at most [`MAX_SPLIT_SIZE`].
    pub split_size: u64,
    pub split_on: SplitOn,
    /// Preferred part size; raised when an object would otherwise need more than 10,000 parts.
    pub part_size: u64,
    /// Whether parts grow with the object (no part size given): about [`GROWN_PARTS`] parts, up
    /// to [`MAX_GROWN_PART`] each. Fewer, larger parts mean fewer requests and a shorter
    /// completion for large objects (bench/analysis.md).
    pub grow_parts: bool,
    /// Objects up to this size go up in one PUT.
    pub multipart_threshold: u64,
    /// Prepended to every key as is.
    pub prefix: String,
    /// Name of a split file's pieces: `{stem}` (name up to its first dot), `{n}` (piece number,
    /// zero-padded to at least three digits), `{ext}` (the rest of the name, from the first dot).
    pub name_template: String,
    /// Name every object by the template, an unsplit file too (as piece 1 of 1); else an
    /// unsplit file keeps its own name. True when the template was chosen, not defaulted.
    pub name_every_object: bool,
    /// Compress files that are not compressed already (nor a binary format) with gzip at this
    /// level (1-9) on the way out, `.gz` appended to their names (`upload::recut`).
    pub compress: Option<u32>,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            split_size: MAX_SPLIT_SIZE,
            split_on: SplitOn::Lines,
            part_size: DEFAULT_PART_SIZE,
            grow_parts: true,
            multipart_threshold: DEFAULT_PART_SIZE,
            prefix: String::new(),
            name_template: DEFAULT_NAME_TEMPLATE.to_string(),
            name_every_object: false,
            compress: None,
        }
    }
}

/// Why a source cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("split size {} is invalid: it must be between 1 byte and 1Ti", .0)]
    SplitSize(u64),
    #[error("part size {} is invalid: S3 parts are 5Mi to 5Gi", .0)]
    PartSize(u64),
    #[error("multipart threshold {} is invalid: a single PUT is at most 5Gi", .0)]
    Threshold(u64),
    #[error("name template {0:?} must contain {{n}}")]
    Template(String),
    #[error("gzip level {0} is invalid: it must be between 1 and 9")]
    Level(u32),
    #[error(
        "{file}: the line starting at byte {offset} is longer than the split size ({split}); \
         lines mode never cuts inside a line (use --split-on bytes for files without lines)"
    )]
    LineTooLong {
        file: String,
        offset: u64,
        split: u64,
    },
    #[error(
        "{file} is {format} and larger than the split size: lines mode cannot cut it into \
         readable pieces; use splitOn: bytes (--split-on bytes), or a split size above {size} bytes"
    )]
    Unsplittable {
        file: String,
        format: &'static str,
        size: u64,
    },
    #[error("failed to read {file} at byte {offset}: {source}")]
    Read {
        file: String,
        offset: u64,
        source: io::Error,
    },
}

impl PlanSettings {
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.split_size == 0 || self.split_size > MAX_SPLIT_SIZE {
            return Err(PlanError::SplitSize(self.split_size));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(PlanError::PartSize(self.part_size));
        }
        if self.multipart_threshold > MAX_SINGLE_PUT {
            return Err(PlanError::Threshold(self.multipart_threshold));
        }
        if !self.name_template.contains("{n}") {
            return Err(PlanError::Template(self.name_template.clone()));
        }
        if let Some(level) = self.compress.filter(|l| !(1..=9).contains(l)) {
            return Err(PlanError::Level(level));
        }
        Ok(())
    }
}

/// Positioned reads (pread): many readers may share one file without a cursor.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Fills `buf` unless the source ends first; returns how much was read.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset as usize).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A file found in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the source folder, `/`-separated: the key below the prefix.
    pub relative: String,
    /// Where it is read: a file's path, or an S3 source object's key.
    pub path: PathBuf,
    pub size: u64,
    /// An S3 source object's version (its ETag): every read is pinned to it.
    pub version: Option<String>,
}

/// One object to write.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    /// Position in the plan from 0; object `n` belongs to shard `n % shard_count`.
    pub index: usize,
    pub key: String,
    /// Source file, relative to the source folder.
    pub source: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// The source object's version (ETag) it was planned on (S3 sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Piece number within its source file, from 1 (1 for an unsplit file).
    pub sequence: u32,
    /// Byte range of the source file.
    pub offset: u64,
    pub size: u64,
    pub multipart: bool,
    pub part_size: u64,
    pub parts: u64,
    /// A gzip file cut on lines while it is sent (lines mode, larger than the split size): `key`
    /// holds `{n}`, and the pieces, each a gzip stream of whole lines no larger than the split
    /// size, are found as the file is decompressed (`upload::recut`). `size` is the file's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gzip_pieces: bool,
    /// With [`Self::gzip_pieces`]: the file is not compressed, and its pieces are compressed at
    /// this gzip level (`compress`); else the file is gzip, decompressed and compressed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<u32>,
    /// The whole source file in one object (not a piece of it): a bucket source's object can be
    /// copied by the server in one request.
    #[serde(skip)]
    pub whole: bool,
}

impl PlannedObject {
    /// The key of piece `n` (from 1) of a [`Self::gzip_pieces`] object: three digits at least,
    /// as for any split file (the number of pieces is not known beforehand).
    pub fn piece_key(&self, n: u64) -> String {
        self.key.replace("{n}", &format!("{n:03}"))
    }

    /// The byte range of part `number` (from 1) within the source file.
    pub fn part_range(&self, number: u64) -> (u64, u64) {
        let start = (number - 1) * self.part_size;
        let len = self.part_size.min(self.size - start);
        (self.offset + start, len)
    }
}

/// The whole plan, deterministic for a given source and settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub objects: Vec<PlannedObject>,
    pub total_bytes: u64,
}

impl Plan {
    /// The objects of one shard.
    pub fn shard(&self, index: usize, count: usize) -> impl Iterator<Item = &PlannedObject> {
        self.objects
            .iter()
            .filter(move |o| o.index % count.max(1) == index)
    }
}

/// Pieces of a file cut at exactly `split` bytes: (offset, length).
pub fn cuts_bytes(size: u64, split: u64) -> Vec<(u64, u64)> {
    if size <= split {
        return vec![(0, size)];
    }
    let mut cuts = Vec::with_capacity(size.div_ceil(split) as usize);
    let mut start = 0;
    while start < size {
        let len = split.min(size - start);
        cuts.push((start, len));
        start += len;
    }
    cuts
}

/// Pieces of a file cut just after the last newline before each split boundary: (offset, length).
/// Reads only windows before each boundary, never the whole file.
pub fn cuts_lines<R: ReadAt + ?Sized>(
    source: &R,
    file: &str,
    size: u64,
    split: u64,
) -> Result<Vec<(u64, u64)>, PlanError> {
    let mut cuts = Vec::new();
    let mut start = 0;
    let mut window = vec![0u8; CUT_WINDOW.min(split as usize)];
    while size - start > split {
        let limit = start + split;
        let mut end = limit;
        let cut = loop {
            if end <= start {
                return Err(PlanError::LineTooLong {
                    file: file.to_string(),
                    offset: start,
                    split,
                });
            }
            let from = end.saturating_sub(window.len() as u64).max(start);
            let buf = &mut window[..(end - from) as usize];
            let n = source
                .read_full_at(buf, from)
                .map_err(|source| PlanError::Read {
                    file: file.to_string(),
                    offset: from,
                    source,
                })?;
            if n < buf.len() {
                return Err(PlanError::Read {
                    file: file.to_string(),
                    offset: from + n as u64,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while planning",
                    ),
                });
            }
            if let Some(i) = memchr::memrchr(b'\n', buf) {
                break from + i as u64 + 1;
            }
            end = from;
        };
        cuts.push((start, cut - start));
        start = cut;
    }
    cuts.push((start, size - start));
    Ok(cuts)
}

/// Part size for an object: the preferred size (grown towards [`GROWN_PARTS`] parts when `grow`),
/// raised (to whole MiB) so that the object needs at most 10,000 parts, within S3's 5 MiB..5 GiB.
pub fn part_size_for(object_size: u64, preferred: u64, grow: bool) -> u64 {
    let whole_mib = |n: u64| n.div_ceil(1 << 20) << 20;
    let grown = if grow {
        whole_mib(object_size.div_ceil(GROWN_PARTS)).min(MAX_GROWN_PART)
    } else {
        0
    };
    let needed = whole_mib(object_size.div_ceil(MAX_PARTS));
    preferred
        .max(grown)
        .max(needed)
        .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

fn count_planned(progress: &PlanProgress, file: &SourceFile, objects: usize) {
    progress.files_planned.fetch_add(1, Ordering::Relaxed);
    progress
        .bytes_planned
        .fetch_add(file.size, Ordering::Relaxed);
    progress
        .objects_planned
        .store(objects as u64, Ordering::Relaxed);
}

/// Formats known by their first bytes (and Parquet by its last four too) that lines mode cannot
/// cut into readable pieces, but gzip, which it can (`upload::recut`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    Lz4,
    Zip,
    SevenZip,
    Snappy,
    Parquet,
    Orc,
    Avro,
}

impl Format {
    /// The format of a file from its first bytes and its last four, if it is one of these.
    pub fn sniff(head: &[u8], tail: &[u8]) -> Option<Format> {
        let starts = |magic: &[u8]| head.starts_with(magic);
        Some(if starts(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else if starts(b"BZh") && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d)) {
            Format::Bzip2
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Format::Xz
        } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
            Format::Lz4
        } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
            Format::Zip
        } else if starts(&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c]) {
            Format::SevenZip
        } else if starts(b"\xff\x06\x00\x00sNaPpY") {
            Format::Snappy
        } else if starts(b"PAR1") || tail == b"PAR1" {
            Format::Parquet
        } else if starts(b"ORC") {
            Format::Orc
        } else if starts(b"Obj\x01") {
            Format::Avro
        } else {
            return None;
        })
    }

    /// The format in words, for the refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Gzip => "gzip-compressed",
            Format::Zstd => "zstd-compressed",
            Format::Bzip2 => "bzip2-compressed",
            Format::Xz => "xz-compressed",
            Format::Lz4 => "lz4-compressed",
            Format::Zip => "a zip archive",
            Format::SevenZip => "a 7z archive",
            Format::Snappy => "snappy-compressed",
            Format::Parquet => "a Parquet file",
            Format::Orc => "an ORC file",
            Format::Avro => "an Avro file",
        }
    }
}

/// The format of a file from its first 16 bytes and its last 4.
fn sniff<R: ReadAt>(reader: &R, file: &SourceFile) -> Result<Option<Format>, PlanError> {
    let read_err = |offset: u64| {
        let file = file.relative.clone();
        move |source| PlanError::Read {
            file,
            offset,
            source,
        }
    };
    let mut head = [0u8; 16];
    let n = reader.read_full_at(&mut head, 0).map_err(read_err(0))?;
    let mut tail = [0u8; 4];
    let at = file.size.saturating_sub(4);
    let m = reader.read_full_at(&mut tail, at).map_err(read_err(at))?;
    Ok(Format::sniff(&head[..n], &tail[..m]))
}

/// The key of piece `n` (from 1) of `count` of a split file, per the naming template.
pub fn piece_name(relative: &str, n: usize, count: usize, template: &str) -> String {
    let width = count.to_string().len().max(3);
    piece_name_with(relative, &format!("{n:0width$}"), template)
}

/// The name of a piece whose number is written `number`.
fn piece_name_with(relative: &str, number: &str, template: &str) -> String {
    let (dir, name) = match relative.rfind('/') {
        Some(i) => relative.split_at(i + 1),
        None => ("", relative),
    };
    // The first dot after the first character: a dotfile's leading dot is part of its stem.
    let dot = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '.')
        .map(|(i, _)| i)
        .unwrap_or(name.len());
    let (stem, ext) = name.split_at(dot);
    let piece = template
        .replace("{stem}", stem)
        .replace("{ext}", ext)
        .replace("{n}", number);
    format!("{dir}{piece}")
}

/// How far a plan has got, for a progress bar: files and bytes found by the walk, then files,
/// bytes and objects planned.
#[derive(Debug, Default)]
pub struct PlanProgress {
    pub files_found: AtomicU64,
    pub bytes_found: AtomicU64,
    /// Set once the walk has found every file (the totals are final).
    pub walked: std::sync::atomic::AtomicBool,
    pub files_planned: AtomicU64,
    pub bytes_planned: AtomicU64,
    pub objects_planned: AtomicU64,
}

impl PlanProgress {
    pub fn found(&self, size: u64) {
        self.files_found.fetch_add(1, Ordering::Relaxed);
        self.bytes_found.fetch_add(size, Ordering::Relaxed);
    }
}

/// Plans every file; `open` gives a reader for a file (only used in lines mode for files larger
/// than the split size).
pub fn plan<R, F>(files: &[SourceFile], settings: &PlanSettings, open: F) -> Result<Plan, PlanError>
where
    R: ReadAt,
    F: Fn(&SourceFile) -> io::Result<R>,
{
    plan_counted(files, settings, open, &PlanProgress::default())
}

/// [`plan`], counting each file planned into `progress`.
pub fn plan_counted<R, F>(
    files: &[SourceFile],
    settings: &PlanSettings,
    open: F,
    progress: &PlanProgress,
) -> Result<Plan, PlanError>
where
    R: ReadAt,
    F: Fn(&SourceFile) -> io::Result<R>,
{
    settings.validate()?;
    let mut files: Vec<&SourceFile> = files.iter().collect();
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    let mut objects = Vec::new();
    let mut total_bytes = 0;
    for file in files {
        let lines_split = file.size > settings.split_size && settings.split_on == SplitOn::Lines;
        // Read only where the format decides something: to compress, or to cut on lines.
        let opened = if settings.compress.is_some() || lines_split {
            let reader = open(file).map_err(|source| PlanError::Read {
                file: file.relative.clone(),
                offset: 0,
                source,
            })?;
            let format = sniff(&reader, file)?;
            Some((reader, format))
        } else {
            None
        };
        let format = opened.as_ref().and_then(|(_, format)| *format);
        let pieces = match (settings.compress, format) {
            // Compressed on the way out, in pieces of at most the split size once compressed:
            // one piece keeping the file's name where even incompressible bytes fit (deflate
            // adds under 0.01%), else numbered pieces.
            (Some(level), None) => {
                let one = !settings.name_every_object
                    && file.size + file.size / 1024 + 1024 <= settings.split_size;
                Some((one, Some(level)))
            }
            (_, Some(Format::Gzip)) if lines_split => Some((false, None)),
            _ => None,
        };
        if let Some((one, compress)) = pieces {
            let name = if one {
                file.relative.clone()
            } else {
                piece_name_with(&file.relative, "{n}", &settings.name_template)
            };
            let gz = if compress.is_some() { ".gz" } else { "" };
            // The largest piece decides the part size: it must fit 10,000 parts.
            let part_size =
                part_size_for(settings.split_size, settings.part_size, settings.grow_parts);
            objects.push(PlannedObject {
                index: objects.len(),
                key: format!("{}{name}{gz}", settings.prefix),
                source: file.relative.clone(),
                path: file.path.clone(),
                source_version: file.version.clone(),
                sequence: 1,
                offset: 0,
                size: file.size,
                multipart: false,
                part_size,
                parts: 0,
                gzip_pieces: true,
                compress,
                whole: false,
            });
            total_bytes += file.size;
            count_planned(progress, file, objects.len());
            continue;
        }
        let cuts = if file.size <= settings.split_size {
            vec![(0, file.size)]
        } else {
            match (settings.split_on, opened) {
                (SplitOn::Lines, Some((reader, format))) => {
                    if let Some(format) = format {
                        return Err(PlanError::Unsplittable {
                            file: file.relative.clone(),
                            format: format.describe(),
                            size: file.size,
                        });
                    }
                    cuts_lines(&reader, &file.relative, file.size, settings.split_size)?
                }
                _ => cuts_bytes(file.size, settings.split_size),
            }
        };
        let count = cuts.len();
        for (i, (offset, size)) in cuts.into_iter().enumerate() {
            let name = if count == 1 && !settings.name_every_object {
                file.relative.clone()
            } else {
                piece_name(&file.relative, i + 1, count, &settings.name_template)
            };
            let multipart = size > settings.multipart_threshold;
            let (part_size, parts) = if multipart {
                let part_size = part_size_for(size, settings.part_size, settings.grow_parts);
                (part_size, size.div_ceil(part_size))
            } else {
                (size, 1)
            };
            objects.push(PlannedObject {
                index: objects.len(),
                key: format!("{}{}", settings.prefix, name),
                source: file.relative.clone(),
                path: file.path.clone(),
                source_version: file.version.clone(),
                sequence: (i + 1) as u32,
                offset,
                size,
                multipart,
                part_size,
                parts,
                gzip_pieces: false,
                compress: None,
                whole: count == 1,
            });
            total_bytes += size;
        }
        count_planned(progress, file, objects.len());
    }
    Ok(Plan {
        objects,
        total_bytes,
    })
}

/// The plan as a table for people.
pub fn render_table(plan: &Plan) -> String {
    let mut rows = vec![[
        "KEY".to_string(),
        "SOURCE".to_string(),
        "OFFSET".to_string(),
        "SIZE".to_string(),
        "UPLOAD".to_string(),
    ]];
    for o in &plan.objects {
        let upload = if o.multipart {
            format!("{} parts of {}", o.parts, format_size(o.part_size))
        } else {
            "single PUT".to_string()
        };
        rows.push([
            o.key.clone(),
            o.source.clone(),
            o.offset.to_string(),
            format!("{} ({})", o.size, format_size(o.size)),
            upload,
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} objects, {} ({} bytes)\n",
        plan.objects.len(),
        format_size(plan.total_bytes),
        plan.total_bytes
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIB: u64 = 1 << 40;
    const MIB: u64 = 1 << 20;

    /// A synthetic file of any size: lines of `line` bytes (the last one a newline).
    struct Lines {
        size: u64,
        line: u64,
    }

    impl ReadAt for Lines {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = buf.len().min(self.size.saturating_sub(offset) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = if (offset + i as u64) % self.line == self.line - 1 {
                    b'\n'
                } else {
                    b'x'
                };
            }
            Ok(n)
        }
    }

    fn file(relative: &str, size: u64) -> SourceFile {
        SourceFile {
            relative: relative.into(),
            path: PathBuf::from(relative),
            size,
            version: None,
        }
    }

    fn settings(split: u64, split_on: SplitOn) -> PlanSettings {
        PlanSettings {
            split_size: split,
            split_on,
            ..PlanSettings::default()
        }
    }

    fn plan_lines(files: &[SourceFile], s: &PlanSettings, line: u64) -> Result<Plan, PlanError> {
        plan(files, s, |f| Ok(Lines { size: f.size, line }))
    }

    #[test]
    fn one_tib_object_fits_in_ten_thousand_parts() {
        let p = plan_lines(&[file("big.sync", TIB)], &PlanSettings::default(), 1000).unwrap();
        assert_eq!(p.objects.len(), 1);
        let o = &p.objects[0];
        assert!(o.multipart);
        assert!(o.part_size >= TIB / MAX_PARTS, "part size {}", o.part_size);
        assert!(o.parts <= MAX_PARTS);
        assert_eq!(o.parts, TIB.div_ceil(o.part_size));
        assert_eq!(o.part_size % MIB, 0);
    }

    #[test]
    fn tiny_object_is_one_part() {
        let p = plan_lines(&[file("a.sync", 10)], &PlanSettings::default(), 5).unwrap();
        assert_eq!(p.objects[0].parts, 1);
        assert!(!p.objects[0].multipart);
        let s = PlanSettings {
            multipart_threshold: 0,
            ..PlanSettings::default()
        };
        let p = plan_lines(&[file("a.sync", 10)], &s, 5).unwrap();
        assert!(p.objects[0].multipart);
        assert_eq!(p.objects[0].parts, 1);
    }

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        for size in [0, 1, 5 * MIB, 100 * MIB, 50 << 30, TIB] {
            for grow in [false, true] {
                let part = part_size_for(size, MIN_PART_SIZE, grow);
                assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part));
                assert!(size.div_ceil(part) <= MAX_PARTS, "{size}");
            }
        }
        assert_eq!(part_size_for(100 * MIB, 16 * MIB, false), 16 * MIB);
    }

    #[test]
    fn parts_grow_with_the_object_unless_a_size_was_given() {
        let grown = |size| part_size_for(size, DEFAULT_PART_SIZE, true);
        // Up to 1 GiB: the default part size.
        assert_eq!(grown(64 * MIB), 16 * MIB);
        assert_eq!(grown(1 << 30), 16 * MIB);
        // Then about 64 parts, in whole MiB ...
        assert_eq!(grown((1 << 30) + 1), 17 * MIB);
        assert_eq!(grown(2 << 30), 32 * MIB);
        assert_eq!(grown(4 << 30), 64 * MIB);
        // ... of at most 64 MiB, until 10,000 parts need more.
        assert_eq!(grown(100 << 30), 64 * MIB);
        assert_eq!(grown(TIB), 105 * MIB);
        // A given part size is kept.
        assert_eq!(part_size_for(4 << 30, 8 * MIB, false), 8 * MIB);
        let s = PlanSettings {
            multipart_threshold: 0,
            ..PlanSettings::default()
        };
        let p = plan_lines(&[file("big.sync", 4 << 30)], &s, 100).unwrap();
        assert_eq!((p.objects[0].part_size, p.objects[0].parts), (64 * MIB, 64));
        let fixed = PlanSettings {
            grow_parts: false,
            ..s
        };
        let p = plan_lines(&[file("big.sync", 4 << 30)], &fixed, 100).unwrap();
        assert_eq!(
            (p.objects[0].part_size, p.objects[0].parts),
            (16 * MIB, 256)
        );
    }

    #[test]
    fn one_byte_over_a_tib_splits() {
        for split_on in [SplitOn::Bytes, SplitOn::Lines] {
            let p = plan_lines(
                &[file("big.sync", TIB + 1)],
                &settings(TIB, split_on),
                1 << 20,
            )
            .unwrap();
            assert_eq!(p.objects.len(), 2, "{split_on:?}");
            assert!(p.objects.iter().all(|o| o.size <= TIB));
            assert_eq!(p.objects.iter().map(|o| o.size).sum::<u64>(), TIB + 1);
            assert_eq!(p.objects[0].key, "big-001.sync");
            assert_eq!(p.objects[1].key, "big-002.sync");
        }
        let p = plan_lines(&[file("big.sync", TIB)], &settings(TIB, SplitOn::Bytes), 10).unwrap();
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn split_size_above_one_tib_is_refused() {
        let err = plan_lines(&[file("a", 1)], &settings(TIB + 1, SplitOn::Bytes), 1).unwrap_err();
        assert!(matches!(err, PlanError::SplitSize(_)));
        assert!(plan_lines(&[file("a", 1)], &settings(0, SplitOn::Bytes), 1).is_err());
    }

    #[test]
    fn lines_cut_after_newlines_and_never_above_split() {
        let data: Vec<u8> = b"aaa\nbb\ncccc\nd\neeeee\n".to_vec();
        for split in 6..=data.len() as u64 + 1 {
            let cuts = cuts_lines(data.as_slice(), "f", data.len() as u64, split).unwrap();
            let mut next = 0;
            for (i, &(off, len)) in cuts.iter().enumerate() {
                assert_eq!(off, next);
                assert!(len <= split && len > 0);
                if i + 1 < cuts.len() {
                    assert_eq!(data[(off + len - 1) as usize], b'\n');
                }
                next = off + len;
            }
            assert_eq!(next, data.len() as u64);
        }
    }

    #[test]
    fn long_line_is_an_error_naming_file_and_offset() {
        let data = b"ab\ncdefghij\nk\n";
        let err = cuts_lines(&data[..], "dir/f.sync", data.len() as u64, 4).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, PlanError::LineTooLong { offset: 3, .. }),
            "{text}"
        );
        assert!(
            text.contains("dir/f.sync") && text.contains("byte 3"),
            "{text}"
        );
    }

    #[test]
    fn empty_and_exact_files_are_not_split() {
        let p = plan_lines(
            &[file("empty.sync", 0), file("exact.sync", 8 * MIB)],
            &settings(8 * MIB, SplitOn::Lines),
            100,
        )
        .unwrap();
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].key, "empty.sync");
        assert_eq!(p.objects[0].size, 0);
        assert_eq!(p.objects[1].key, "exact.sync");
        assert_eq!(p.objects[1].size, 8 * MIB);
    }

    #[test]
    fn gzip_in_lines_mode_is_planned_as_pieces_found_while_sending() {
        let mut data = vec![0x1f, 0x8b, 8, 0];
        data.extend(std::iter::repeat_n(b'\n', 100));
        let files = [file("d/a.sync.gz", data.len() as u64)];
        let p = plan(&files, &settings(10, SplitOn::Lines), |_| Ok(data.clone())).unwrap();
        assert_eq!(p.objects.len(), 1);
        let o = &p.objects[0];
        assert!(o.gzip_pieces);
        assert_eq!(o.key, "d/a-{n}.sync.gz");
        assert_eq!(o.piece_key(7), "d/a-007.sync.gz");
        assert_eq!((o.offset, o.size), (0, data.len() as u64));
        // Bytes mode cuts it like any file; small enough, it goes whole.
        let bytes = plan(&files, &settings(10, SplitOn::Bytes), |_| Ok(data.clone())).unwrap();
        assert!(bytes.objects.len() > 1 && bytes.objects.iter().all(|o| !o.gzip_pieces));
        let whole = plan(
            &files,
            &settings(1000, SplitOn::Lines),
            |_| Ok(data.clone()),
        )
        .unwrap();
        assert_eq!(whole.objects[0].key, "d/a.sync.gz");
    }

    #[test]
    fn compressing_plans_plain_files_as_gzip_pieces_and_leaves_compressed_ones() {
        let text = b"a,b\nc,d\n".repeat(50);
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.extend(std::iter::repeat_n(b'\n', 100));
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, b'\n'];
        let files = [
            file("d/big.csv", text.len() as u64),
            file("d/small.csv", 10),
            file("d/z.zst", zstd.len() as u64),
            file("d/g.csv.gz", gz.len() as u64),
        ];
        let read = |f: &SourceFile| -> io::Result<Vec<u8>> {
            Ok(match f.relative.as_str() {
                "d/big.csv" => text.clone(),
                "d/small.csv" => text[..10].to_vec(),
                "d/z.zst" => zstd.to_vec(),
                _ => gz.clone(),
            })
        };
        let s = PlanSettings {
            compress: Some(9),
            ..settings(1200, SplitOn::Lines)
        };
        let p = plan(&files, &s, read).unwrap();
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        // The 400-byte file may not fit one piece once compressed (1200 bytes is below the
        // margin): numbered pieces. The small one keeps its name; compressed ones go as they are.
        assert_eq!(
            keys,
            [
                "d/big-{n}.csv.gz",
                "d/g.csv.gz",
                "d/small.csv.gz",
                "d/z.zst"
            ]
        );
        assert!(p.objects[0].gzip_pieces && p.objects[0].compress == Some(9));
        assert!(p.objects[2].gzip_pieces && p.objects[2].compress == Some(9));
        assert!(!p.objects[1].gzip_pieces && !p.objects[3].gzip_pieces);
        // A split size with room for even incompressible bytes: one piece, the file's name.
        let roomy = PlanSettings {
            compress: Some(6),
            ..settings(4000, SplitOn::Lines)
        };
        let p = plan(&files[..1], &roomy, read).unwrap();
        assert_eq!(p.objects[0].key, "d/big.csv.gz");
        // Bytes mode compresses too; a chosen template names every piece.
        let named = PlanSettings {
            compress: Some(1),
            name_template: "{stem}.part{n}{ext}".into(),
            name_every_object: true,
            ..settings(4000, SplitOn::Bytes)
        };
        let p = plan(&files[..1], &named, read).unwrap();
        assert_eq!(p.objects[0].key, "d/big.part{n}.csv.gz");
        let bad = PlanSettings {
            compress: Some(10),
            ..settings(4000, SplitOn::Bytes)
        };
        assert!(matches!(
            plan(&files, &bad, read),
            Err(PlanError::Level(10))
        ));
    }

    #[test]
    fn formats_that_cannot_be_cut_on_lines_are_refused_by_name() {
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("a.zst", vec![0x28, 0xb5, 0x2f, 0xfd], "zstd-compressed"),
            ("a.bz2", b"BZh9".to_vec(), "bzip2-compressed"),
            (
                "a.xz",
                vec![0xfd, b'7', b'z', b'X', b'Z', 0],
                "xz-compressed",
            ),
            ("a.zip", b"PK\x03\x04".to_vec(), "a zip archive"),
            ("a.parquet", b"PAR1".to_vec(), "a Parquet file"),
        ];
        for (name, magic, format) in cases {
            let mut data = magic;
            data.extend(std::iter::repeat_n(b'\n', 100));
            let files = [file(name, data.len() as u64)];
            let err =
                plan(&files, &settings(10, SplitOn::Lines), |_| Ok(data.clone())).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(format) && text.contains("splitOn: bytes"),
                "{text}"
            );
            assert!(plan(&files, &settings(10, SplitOn::Bytes), |_| Ok(data.clone())).is_ok());
        }
        // Parquet known by its footer alone too; text that merely starts like one is not refused.
        let mut footer = vec![b'\n'; 100];
        footer.extend(b"PAR1");
        assert_eq!(Format::sniff(b"\n\n", b"PAR1"), Some(Format::Parquet));
        let files = [file("t.parquet", footer.len() as u64)];
        assert!(
            plan(
                &files,
                &settings(10, SplitOn::Lines),
                |_| Ok(footer.clone())
            )
            .is_err()
        );
        assert_eq!(Format::sniff(b"BZh is a word\n", b"d.\n\n"), None);
        assert_eq!(Format::sniff(b"plain,csv\n", b"1,2\n"), None);
    }

    #[test]
    fn naming_follows_audience_manager() {
        assert_eq!(
            piece_name("segments.sync.gz", 1, 2, DEFAULT_NAME_TEMPLATE),
            "segments-001.sync.gz"
        );
        assert_eq!(
            piece_name("d/x/seg", 12, 1500, DEFAULT_NAME_TEMPLATE),
            "d/x/seg-0012"
        );
        assert_eq!(
            piece_name(".hidden.txt", 2, 2, DEFAULT_NAME_TEMPLATE),
            ".hidden-002.txt"
        );
        assert_eq!(
            piece_name("a.b.c", 3, 3, "{stem}{ext}.part{n}"),
            "a.b.c.part003"
        );
        let s = PlanSettings {
            name_template: "{stem}".into(),
            ..PlanSettings::default()
        };
        assert!(matches!(s.validate(), Err(PlanError::Template(_))));
    }

    #[test]
    fn plan_is_sorted_prefixed_and_sharded() {
        let s = PlanSettings {
            prefix: "2026/".into(),
            ..settings(10, SplitOn::Bytes)
        };
        let p = plan_lines(&[file("b", 25), file("a", 5)], &s, 5).unwrap();
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["2026/a", "2026/b-001", "2026/b-002", "2026/b-003"]);
        assert_eq!(p.total_bytes, 30);
        let shard1: Vec<_> = p.shard(1, 2).map(|o| o.index).collect();
        assert_eq!(shard1, [1, 3]);
        assert_eq!(p.objects[3].sequence, 3);
    }

    #[test]
    fn part_ranges_cover_the_object() {
        let o = PlannedObject {
            index: 0,
            key: "k".into(),
            source: "s".into(),
            path: PathBuf::new(),
            sequence: 1,
            offset: 100,
            size: 12 * MIB + 3,
            multipart: true,
            part_size: 5 * MIB,
            parts: 3,
            gzip_pieces: false,
            compress: None,
            whole: false,
            source_version: None,
        };
        assert_eq!(o.part_range(1), (100, 5 * MIB));
        assert_eq!(o.part_range(3), (100 + 10 * MIB, 2 * MIB + 3));
    }
}
