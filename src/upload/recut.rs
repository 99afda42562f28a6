//! Gzip files cut on lines while they are sent (lines mode, a gzip file larger than the split
//! size): decompressed, cut into pieces of whole lines, each piece a complete gzip stream of its
//! own no larger than the split size. Files compressed on the way out (`compress`) take the same
//! road without the decompression (cut on lines, or on blocks in bytes mode).
//!
//! Pieces are built the way pigz builds a stream: the decompressed lines are taken in blocks of
//! about 1 MiB that end on a newline, and each block is compressed alone (raw deflate, flushed to
//! a byte boundary), on every core. A piece is a gzip header, its blocks, an empty final block and
//! the trailer (CRC-32 and size), so its compressed size is known exactly block by block, and a
//! piece ends before the block that would take it over the split size. The blocks fall in the
//! same places on every run, so a run that resumes rebuilds the same pieces byte for byte: a
//! piece already stored from this version of the file is recognised by its stamp and checksum and
//! not sent again, and the stored parts of an open upload that match are kept.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::engine::{Engine, Existing, Outcome, STAMP_KEY, Scan, header_safe};
use super::error::UploadError;
use super::source::{Opened, StreamBroke};
use super::state::{PieceRecord, Progress};
use crate::checksum;
use crate::plan::{PlanError, PlannedObject, SplitOn};

/// Decompressed bytes per block: large enough that flushing costs little ratio, small enough
/// that a piece ends close to the split size.
const BLOCK: usize = 1 << 20;
/// Every piece's gzip header: deflate, no name, no time (the same bytes on every run), OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final deflate block (fixed Huffman, end of block) after the byte-aligned blocks.
const FINAL: [u8; 2] = [0x03, 0x00];
/// What closes a piece after its blocks: the final block and the 8-byte trailer.
const TAIL: u64 = (FINAL.len() + 8) as u64;
/// Compression level of a gzip file's pieces (gzip's default).
const LEVEL: u32 = 6;

/// Decompressed lines of the file, ending on a newline (but the file's last).
struct Block {
    /// Offset of its first byte in the decompressed file.
    at: u64,
    data: Vec<u8>,
    /// Bytes of the gzip file read when the block was complete (progress).
    read: u64,
}

/// A block compressed.
struct Packed {
    at: u64,
    len: u64,
    newlines: u64,
    ends_open: bool,
    crc: u32,
    deflated: Vec<u8>,
    read: u64,
}

/// How a unit's file is read into blocks.
#[derive(Clone, Copy)]
struct Reading {
    /// A gzip file (all its members), decompressed; else the file's own bytes.
    gzip: bool,
    /// Blocks end on a newline; else they are cut at the block size (bytes mode).
    lines: bool,
}

/// Reads the file (a gzip file decompressed) and sends its bytes as blocks (of whole lines in
/// lines mode); a line longer than the split size is an error naming where it starts.
fn read_blocks(
    file: Box<dyn Read + Send>,
    name: &str,
    split: u64,
    how: Reading,
    tx: &tokio::sync::mpsc::Sender<Result<Block, UploadError>>,
) -> Result<(), UploadError> {
    let read = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: file,
        read: Arc::clone(&read),
    };
    let buffered = std::io::BufReader::with_capacity(1 << 20, counted);
    let mut gz: Box<dyn Read> = if how.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let what = shown(name, how.gzip);
    let mut pending: Vec<u8> = Vec::with_capacity(2 * BLOCK);
    let mut at = 0u64;
    let mut eof = false;
    let mut want = BLOCK;
    loop {
        while !eof && pending.len() < want {
            let start = pending.len();
            pending.resize(start + (256 << 10), 0);
            match gz.read(&mut pending[start..]) {
                Ok(0) => {
                    pending.truncate(start);
                    eof = true;
                }
                Ok(n) => pending.truncate(start + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => pending.truncate(start),
                Err(e) if e.get_ref().is_some_and(|inner| inner.is::<StreamBroke>()) => {
                    let broke = e
                        .into_inner()
                        .and_then(|inner| inner.downcast::<StreamBroke>().ok())
                        .expect("checked above");
                    return Err(UploadError::SourceRead {
                        bucket: broke.bucket,
                        key: broke.key,
                        cause: super::error::S3Cause {
                            code: None,
                            status: None,
                            message: format!("the body broke off: {}", broke.message),
                            retryable: true,
                        },
                    });
                }
                Err(e) if how.gzip => {
                    return Err(UploadError::Read {
                        file: name.to_string(),
                        offset: read.load(Ordering::Relaxed),
                        source: std::io::Error::new(
                            e.kind(),
                            format!("not a readable gzip stream: {e}"),
                        ),
                    });
                }
                Err(e) => {
                    return Err(UploadError::Read {
                        file: name.to_string(),
                        offset: read.load(Ordering::Relaxed),
                        source: e,
                    });
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let head = BLOCK.min(pending.len());
        let cut = if !how.lines {
            Some(head)
        } else {
            match memchr::memrchr(b'\n', &pending[..head]) {
                Some(i) if pending.len() > BLOCK || !eof => Some(i + 1),
                _ if eof && pending.len() <= BLOCK => Some(pending.len()),
                _ => memchr::memchr(b'\n', &pending[head..])
                    .map(|i| head + i + 1)
                    .or(eof.then_some(pending.len())),
            }
        };
        let Some(cut) = cut else {
            // A line longer than a block: read on until it ends, unless it cannot fit a piece.
            if pending.len() as u64 > split {
                return Err(UploadError::Plan(PlanError::LineTooLong {
                    file: what,
                    offset: at,
                    split,
                }));
            }
            want = pending.len() * 2;
            continue;
        };
        want = BLOCK;
        let rest = pending.split_off(cut);
        let data = std::mem::replace(&mut pending, rest);
        let len = data.len() as u64;
        let block = Block {
            at,
            data,
            read: read.load(Ordering::Relaxed),
        };
        at += len;
        if tx.blocking_send(Ok(block)).is_err() {
            // The sender stopped (an error, a stop): nothing more to read.
            return Ok(());
        }
    }
}

/// The file as errors name it: a gzip file's lines are its decompressed bytes.
fn shown(name: &str, gzip: bool) -> String {
    if gzip {
        format!("{name} (decompressed)")
    } else {
        name.to_string()
    }
}

/// Counts the bytes read from the gzip file.
struct Counted {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Compresses a block alone at `level`, flushed to a byte boundary, so that blocks concatenate.
fn pack(block: Block, level: u32) -> std::io::Result<Packed> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(block.data.len() / 2 + 4096);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&block.data[done..], &mut out, flate2::FlushCompress::Full)
            .map_err(std::io::Error::other)?;
        // The flush is complete once the input is in and room was left over.
        if c.total_in() as usize == block.data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64 << 10));
    }
    Ok(Packed {
        at: block.at,
        len: block.data.len() as u64,
        newlines: memchr::memchr_iter(b'\n', &block.data).count() as u64,
        ends_open: block.data.last().is_some_and(|&b| b != b'\n'),
        crc: crc32fast::hash(&block.data),
        deflated: out,
        read: block.read,
    })
}

/// What is done with a piece's bytes.
enum Mode {
    /// Sent; a multipart piece's upload once it has one.
    Send(Option<Upload>),
    /// Not sent: an object is already at the key; the piece is compared with it at the end.
    Compare(Existing),
}

/// A multipart upload of a piece: its id and the parts a previous run stored.
struct Upload {
    id: String,
    stored: HashMap<u64, (u64, CompletedPart)>,
}

/// The piece being built, then closed while its last requests run.
struct Piece {
    n: u64,
    /// The piece as an object: its key, the decompressed offset it starts at, its size so far.
    object: PlannedObject,
    mode: Mode,
    /// Bytes not yet cut into a part (the whole piece while it goes in one PUT).
    buf: Vec<u8>,
    size: u64,
    ulen: u64,
    newlines: u64,
    ends_open: bool,
    crc: crc32fast::Hasher,
    /// Each part's digest and size, in order (multipart pieces).
    parts: Vec<(Vec<u8>, u64)>,
    completed: Vec<CompletedPart>,
    /// Parts sent and not yet answered.
    in_flight: usize,
    multipart: bool,
    /// The stamp it carries: this version of the file, from the piece's first decompressed byte.
    stamp: String,
    /// Bytes of the gzip file read when its last block was complete (progress).
    read: u64,
}

/// What a request of the unit brought.
enum Done {
    Part { n: u64, part: Box<CompletedPart> },
    Piece(Box<Piece>, Outcome),
}

type Request<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Done, UploadError>> + Send + 'a>>;

/// Delivers the pieces of a gzip unit of the plan; records them (key, size, decompressed size,
/// lines) for the manifest.
pub async fn deliver(engine: &Engine, unit: &PlannedObject) -> Result<Outcome, UploadError> {
    let file = Arc::new(Opened::open(unit, engine.source.as_ref())?);
    let split = engine.split_size;
    let split_on = engine.split_on;
    let level = unit.compress.unwrap_or(LEVEL);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Block, UploadError>>(4);
    let reader = {
        let (opened, unit) = (Arc::clone(&file), unit.clone());
        // Opened on the blocking thread: an S3 source's body is read by blocking on it.
        tokio::task::spawn_blocking(move || {
            let how = Reading {
                gzip: unit.compress.is_none(),
                lines: unit.compress.is_none() || split_on == SplitOn::Lines,
            };
            let read = opened
                .stream(&unit)
                .and_then(|stream| read_blocks(stream, &unit.source, split, how, &tx));
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(e));
            }
        })
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut blocks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|block| async move {
            let block = block?;
            let at = block.at;
            tokio::task::spawn_blocking(move || pack(block, level))
                .await
                .expect("compressing does not panic")
                .map_err(|e| UploadError::Read {
                    file: "compressing".into(),
                    offset: at,
                    source: e,
                })
        })
        .buffered(workers + 1);

    let mut run = Run {
        engine,
        unit,
        file: Arc::clone(&file),
        records: Vec::new(),
        closing: HashMap::new(),
        counted: 0,
        pieces: 0,
    };
    let mut piece: Option<Piece> = None;
    let mut requests: FuturesUnordered<Request<'_>> = FuturesUnordered::new();
    let result: Result<(), UploadError> = async {
        loop {
            tokio::select! {
                Some(done) = requests.next(), if !requests.is_empty() => {
                    run.done(done?, &mut piece, &mut requests);
                }
                block = blocks.next(), if requests.len() < engine.concurrency => {
                    let Some(block) = block else { break };
                    let block = block?;
                    if engine.is_cancelled() {
                        return Err(UploadError::Cancelled);
                    }
                    if HEADER.len() as u64 + block.deflated.len() as u64 + TAIL > split {
                        return Err(UploadError::Plan(PlanError::LineTooLong {
                            file: shown(&unit.source, unit.compress.is_none()),
                            offset: block.at,
                            split,
                        }));
                    }
                    let fits = piece.as_ref().is_some_and(|p| {
                        p.ulen == 0 || p.size + block.deflated.len() as u64 + TAIL <= split
                    });
                    if !fits {
                        if let Some(done) = piece.take() {
                            run.close(done, &mut requests).await?;
                        }
                        piece = Some(run.start(block.at).await?);
                    }
                    let p = piece.as_mut().expect("a piece");
                    run.add(p, &block, &mut requests).await?;
                }
            }
        }
        // The last piece (a file that decompresses to nothing has one, empty).
        let last = match piece.take() {
            Some(p) => p,
            None => run.start(0).await?,
        };
        run.close(last, &mut requests).await?;
        while let Some(done) = requests.next().await {
            run.done(done?, &mut piece, &mut requests);
        }
        Ok(())
    }
    .await;
    drop(blocks);
    let _ = reader.await;
    result?;
    file.check(unit)?;
    let mut records = std::mem::take(&mut run.records);
    records.sort_by_key(|r| r.sequence);
    // Whatever of the file the pieces' progress did not count (its trailer, read-ahead).
    Progress::add(
        &engine.state.progress.bytes_done,
        unit.size.saturating_sub(run.counted),
    );
    Progress::add(&engine.state.progress.bytes_read, unit.size);
    tracing::info!(source = %unit.source, pieces = records.len(), compressed = unit.compress.is_some(), "file delivered in gzip pieces");
    engine.state.record_pieces(unit, records);
    Ok(Outcome::Sent)
}

/// One gzip unit being delivered.
struct Run<'a> {
    engine: &'a Engine,
    unit: &'a PlannedObject,
    file: Arc<Opened>,
    records: Vec<PieceRecord>,
    /// Closed multipart pieces waiting for their parts, by number.
    closing: HashMap<u64, Piece>,
    /// Bytes of the gzip file counted as done.
    counted: u64,
    /// Pieces started.
    pieces: u64,
}

impl<'a> Run<'a> {
    /// Starts the next piece at decompressed byte `at`: finds what is at its key already.
    async fn start(&mut self, at: u64) -> Result<Piece, UploadError> {
        let engine = self.engine;
        self.pieces += 1;
        let n = self.pieces;
        // A file compressed into one piece keeps its name: the plan chose that only where even
        // incompressible bytes fit the split size, so no second piece can follow.
        assert!(
            n == 1 || self.unit.key.contains("{n}"),
            "a second piece of {} planned as one",
            self.unit.source
        );
        let mut object = self.unit.clone();
        object.key = self.unit.piece_key(n);
        object.sequence = n as u32;
        object.offset = at;
        object.size = 0;
        object.gzip_pieces = false;
        object.compress = None;
        if n > 1 {
            Progress::add(&engine.state.progress.objects_total, 1);
        }
        let stamp = self.file.piece_token(at);
        let mode = match engine.existing(&object).await? {
            // From this very version of the file, from here: it should be these bytes; the end
            // tells. Any other object is compared too, unless it may be replaced.
            Some(found) if found.stamp.as_deref() == Some(stamp.as_str()) => Mode::Compare(found),
            Some(_) if engine.settings.overwrite => Mode::Send(None),
            Some(found) => Mode::Compare(found),
            None => Mode::Send(None),
        };
        Ok(Piece {
            n,
            object,
            mode,
            buf: HEADER.to_vec(),
            size: HEADER.len() as u64,
            ulen: 0,
            newlines: 0,
            ends_open: false,
            crc: crc32fast::Hasher::new(),
            parts: Vec::new(),
            completed: Vec::new(),
            in_flight: 0,
            multipart: false,
            stamp,
            read: 0,
        })
    }

    /// Adds a compressed block to the piece, and sends the parts it fills.
    async fn add(
        &mut self,
        p: &mut Piece,
        block: &Packed,
        requests: &mut FuturesUnordered<Request<'a>>,
    ) -> Result<(), UploadError> {
        p.buf.extend_from_slice(&block.deflated);
        p.size += block.deflated.len() as u64;
        p.ulen += block.len;
        p.newlines += block.newlines;
        p.ends_open = block.ends_open;
        p.read = block.read;
        p.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            block.crc, block.len,
        ));
        let part_size = self.unit.part_size as usize;
        // Up to one part, a piece may still go in one PUT; past it, it is a multipart upload.
        while p.buf.len() > part_size {
            // The part leaves as it is; only the few bytes past it are copied.
            let rest = p.buf.split_off(part_size);
            let body = std::mem::replace(&mut p.buf, rest);
            self.cut_part(p, body, requests).await?;
        }
        Ok(())
    }

    /// Makes `body` the next part of a multipart piece: sent, kept from a previous run, or
    /// (when the piece is compared) only digested.
    async fn cut_part(
        &mut self,
        p: &mut Piece,
        body: Vec<u8>,
        requests: &mut FuturesUnordered<Request<'a>>,
    ) -> Result<(), UploadError> {
        let engine = self.engine;
        if !p.multipart {
            p.multipart = true;
            if matches!(p.mode, Mode::Send(None)) {
                p.mode = Mode::Send(Some(open_upload(engine, p).await?));
            }
        }
        let number = p.parts.len() as u64 + 1;
        let digest = checksum::digest(engine.settings.headers.checksum, &body);
        let len = body.len() as u64;
        p.parts.push((digest.clone(), len));
        let Mode::Send(Some(upload)) = &p.mode else {
            return Ok(());
        };
        let b64 = checksum::to_base64(&digest);
        if let Some((size, stored)) = upload.stored.get(&number)
            && *size == len
            && stored_checksum(stored, engine).as_deref() == Some(b64.as_str())
        {
            p.completed.push(stored.clone());
            return Ok(());
        }
        let (object, id, n) = (p.object.clone(), upload.id.clone(), p.n);
        p.in_flight += 1;
        requests.push(Box::pin(async move {
            let _permit = engine.permit(&object, number).await;
            if engine.is_cancelled() {
                return Err(UploadError::Cancelled);
            }
            let part = engine
                .upload_part(&object, &id, number, Bytes::from(body), &b64)
                .await?;
            Progress::add(&engine.state.progress.bytes_sent, len);
            Progress::add(&engine.state.progress.parts_sent, 1);
            Ok(Done::Part {
                n,
                part: Box::new(part),
            })
        }));
        Ok(())
    }

    /// Closes the piece: final block and trailer, its last part; then it is completed (or put)
    /// once its parts are in, or compared with the object found at its key.
    async fn close(
        &mut self,
        mut p: Piece,
        requests: &mut FuturesUnordered<Request<'a>>,
    ) -> Result<(), UploadError> {
        let crc = p.crc.clone().finalize();
        p.buf.extend_from_slice(&FINAL);
        p.buf.extend_from_slice(&crc.to_le_bytes());
        // ISIZE: the decompressed size modulo 2^32, as gzip defines it.
        p.buf.extend_from_slice(&(p.ulen as u32).to_le_bytes());
        p.size += TAIL;
        p.object.size = p.size;
        if p.multipart || p.buf.len() > self.unit.part_size as usize {
            let rest = std::mem::take(&mut p.buf);
            if !rest.is_empty() || p.parts.is_empty() {
                self.cut_part(&mut p, rest, requests).await?;
            }
        }
        if let Mode::Compare(found) = &p.mode {
            let scan = scan_of(&p, self.engine);
            let outcome = if found.matches(p.size, &scan.checksum) {
                Outcome::AlreadyPresent
            } else {
                return Err(self.engine.conflict(&p.object, &scan, found));
            };
            self.ended(p, outcome).await;
            return Ok(());
        }
        if p.in_flight == 0 {
            requests.push(self.complete(p));
        } else {
            self.closing.insert(p.n, p);
        }
        Ok(())
    }

    /// The request that makes a closed piece visible: its completion, or its one PUT.
    fn complete(&self, mut p: Piece) -> Request<'a> {
        let (engine, file, unit) = (self.engine, Arc::clone(&self.file), self.unit);
        Box::pin(async move {
            let scan = scan_of(&p, engine);
            // An object must be the bytes of one version of its file.
            file.check(unit)?;
            let outcome = if p.multipart {
                let Mode::Send(Some(upload)) = &p.mode else {
                    unreachable!("a multipart piece that is sent has an upload")
                };
                let mut parts = std::mem::take(&mut p.completed);
                parts.sort_by_key(|part| part.part_number());
                let outcome = engine.complete(&p.object, &scan, &upload.id, parts).await?;
                engine.state.forget(&p.object.key).await;
                outcome
            } else {
                let lines = p.newlines + u64::from(p.ends_open);
                let meta = metadata(&p, Some((lines, p.ulen)));
                let body = Bytes::from(std::mem::take(&mut p.buf));
                let outcome = engine.put(&p.object, body, &scan, meta).await?;
                if outcome == Outcome::Sent {
                    Progress::add(&engine.state.progress.bytes_sent, p.size);
                    Progress::add(&engine.state.progress.parts_sent, 1);
                }
                outcome
            };
            Ok(Done::Piece(Box::new(p), outcome))
        })
    }

    /// Takes in what a request brought: a part (of the piece being built, or of a closed one,
    /// which is completed once its last part is in), or a piece made visible.
    fn done(
        &mut self,
        done: Done,
        current: &mut Option<Piece>,
        requests: &mut FuturesUnordered<Request<'a>>,
    ) {
        match done {
            Done::Part { n, part } => {
                if let Some(p) = current.as_mut().filter(|p| p.n == n) {
                    p.in_flight -= 1;
                    p.completed.push(*part);
                } else if let Some(p) = self.closing.get_mut(&n) {
                    p.in_flight -= 1;
                    p.completed.push(*part);
                    if p.in_flight == 0 {
                        let p = self.closing.remove(&n).expect("closing");
                        requests.push(self.complete(p));
                    }
                }
            }
            Done::Piece(p, outcome) => self.record(&p, outcome),
        }
    }

    /// A piece is delivered (sent or found): aborts an upload a previous run left open for it
    /// if it was found whole, and records it.
    async fn ended(&mut self, p: Piece, outcome: Outcome) {
        if outcome == Outcome::AlreadyPresent
            && let Some(id) = self.engine.state.upload_for(&p.object.key)
        {
            self.engine.abort(&p.object, &id).await;
        }
        self.record(&p, outcome);
    }

    fn record(&mut self, p: &Piece, outcome: Outcome) {
        let engine = self.engine;
        let lines = p.newlines + u64::from(p.ends_open);
        // Progress in bytes of the gzip file: what the piece's blocks took of it.
        let read = p.read.saturating_sub(self.counted);
        self.counted += read;
        Progress::add(&engine.state.progress.bytes_done, read);
        Progress::add(&engine.state.progress.objects_done, 1);
        if outcome == Outcome::AlreadyPresent {
            Progress::add(&engine.state.progress.objects_skipped, 1);
        }
        tracing::info!(key = %p.object.key, size = p.size, uncompressed = p.ulen, lines, ?outcome, "gzip piece delivered");
        self.records.push(PieceRecord {
            key: p.object.key.clone(),
            sequence: p.n,
            size: p.size,
            uncompressed_size: p.ulen,
            lines,
        });
    }
}

/// The piece's checksum as S3 reports it (and its lines).
fn scan_of(p: &Piece, engine: &Engine) -> Scan {
    let algorithm = engine.settings.headers.checksum;
    let lines = p.newlines + u64::from(p.ends_open);
    if p.multipart {
        Scan {
            lines,
            checksum: checksum::multipart_checksum(algorithm, &p.parts),
            part_digests: p.parts.iter().map(|(d, _)| d.clone()).collect(),
        }
    } else {
        let digest = checksum::digest(algorithm, &p.buf);
        Scan {
            lines,
            checksum: checksum::to_base64(&digest),
            part_digests: vec![digest],
        }
    }
}

fn stored_checksum(part: &CompletedPart, engine: &Engine) -> Option<String> {
    use crate::checksum::ChecksumAlgorithm::*;
    match engine.settings.headers.checksum {
        Crc64Nvme => part.checksum_crc64_nvme.clone(),
        Crc32C => part.checksum_crc32_c.clone(),
        Sha256 => part.checksum_sha256.clone(),
    }
}

/// The piece's multipart upload: the one a previous run left open (its parts kept where they
/// match), or a new one.
async fn open_upload(engine: &Engine, p: &Piece) -> Result<Upload, UploadError> {
    let resume = match engine.state.upload_for(&p.object.key) {
        None if engine.state.intended(&p.object.key) => engine.adopt(&p.object).await?,
        resume => resume,
    };
    if let Some(id) = resume {
        match engine.list_parts(&p.object, &id).await {
            Ok(parts) => {
                tracing::info!(key = %p.object.key, stored = parts.len(), "resuming the upload of a gzip piece");
                let stored = parts
                    .into_iter()
                    .map(|(n, size, part)| (n as u64, (size, part)))
                    .collect();
                return Ok(Upload { id, stored });
            }
            Err(cause) if cause.no_such_upload() || cause.not_found() => {
                engine.state.forget(&p.object.key).await;
            }
            Err(cause) => {
                return Err(UploadError::ListParts {
                    bucket: engine.bucket.clone(),
                    key: p.object.key.clone(),
                    cause,
                });
            }
        }
    }
    let id = engine.create(&p.object, metadata(p, None)).await?;
    Ok(Upload {
        id,
        stored: HashMap::new(),
    })
}

/// The piece's user metadata: its source, number and stamp; its lines and decompressed size
/// where they are known before the request (a single PUT).
fn metadata(p: &Piece, known: Option<(u64, u64)>) -> HashMap<String, String> {
    let mut m = HashMap::from([
        ("outbound-source".to_string(), header_safe(&p.object.source)),
        ("outbound-sequence".to_string(), p.n.to_string()),
        (STAMP_KEY.to_string(), p.stamp.clone()),
    ]);
    if let Some((lines, ulen)) = known {
        m.insert("outbound-lines".to_string(), lines.to_string());
        m.insert("outbound-uncompressed-size".to_string(), ulen.to_string());
    }
    m
}
