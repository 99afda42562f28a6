//! gzip files in lines mode, against versitygw: a gzip file larger than the split size goes as
//! pieces of whole lines, each a gzip stream of its own no larger than the split size, listed in
//! the manifest with both sizes and its lines; a second run sends nothing; a killed run resumes
//! without sending the pieces and parts it stored again; a corrupt stream is named. Text files
//! compressed on the way out (`--compress gzip`) take the same road.

mod upload_support;

use std::io::{Read, Write};

use upload_support::proxy;
use upload_support::*;

const MIB: usize = 1 << 20;

/// About `size` bytes of text lines of random letters (gzip shrinks it by a quarter only), one
/// line in seven ending in CRLF, the last without a newline. An 8 MiB stretch is repeated: far
/// beyond gzip's 32 KiB window, it compresses as if new.
fn random_lines(size: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = Rng::new(seed);
    let mut stretch = Vec::with_capacity(8 * MIB + 600);
    let mut n = 0u64;
    while stretch.len() < 8 * MIB {
        let len = 20 + (rng.next() % 500) as usize;
        let mut word = 0u64;
        for i in 0..len {
            if i % 10 == 0 {
                word = rng.next();
            }
            stretch.push(ALPHABET[(word & 63) as usize]);
            word >>= 6;
        }
        if n.is_multiple_of(7) {
            stretch.push(b'\r');
        }
        stretch.push(b'\n');
        n += 1;
    }
    let mut data = Vec::with_capacity(size + stretch.len());
    while data.len() < size {
        data.extend_from_slice(&stretch);
    }
    data.pop();
    data
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A gzip stream decompressed; panics (naming `what`) unless it is one whole stream.
fn gunzip(what: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{what} is not a gzip stream of its own: {e}"));
    out
}

/// The pieces under `prefix` named `stem-NNN.ext`, in order: key and bytes.
async fn pieces(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    stem: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (key, _, _) in list(client, bucket, prefix).await {
        if key[prefix.len()..].starts_with(&format!("{stem}-")) {
            let bytes = get(client, bucket, &key).await;
            out.push((key, bytes));
        }
    }
    out.sort();
    out
}

/// 200 MiB of gzip with a 16 MiB split size: every piece is at most 16 MiB, decompresses alone
/// to whole lines, and the pieces' decompressed concatenation is the source's; the manifest
/// gives each piece's sizes and lines; a second run sends nothing.
#[tokio::test]
async fn a_gzip_file_goes_in_gzip_pieces_of_whole_lines() {
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "gzip").await;
    let dir = source_dir();
    let data = random_lines(265 * MIB, 11);
    let gz = gzip(&data);
    assert!(gz.len() > 190 * MIB, "a 200 MiB gzip file: {}", gz.len());
    write(&dir.path().join("logs/big.log.gz"), &gz);
    // Under the split size: it goes as it is.
    let small = gzip(b"one\ntwo\n");
    write(&dir.path().join("logs/small.log.gz"), &small);

    let args = ["--split-size", "16Mi", "--prefix", "gz/", "--manifest"];
    let first = upload(&server, &bucket, dir.path(), &args).await;
    assert!(first.success, "{first:?}");

    let got = pieces(&s3, &bucket, "gz/logs/", "big").await;
    assert!(got.len() >= 12, "{} pieces", got.len());
    let mut joined = Vec::with_capacity(data.len());
    for (i, (key, bytes)) in got.iter().enumerate() {
        assert_eq!(key, &format!("gz/logs/big-{:03}.log.gz", i + 1));
        assert!(bytes.len() <= 16 * MIB, "{key} is {} bytes", bytes.len());
        let lines = gunzip(key, bytes);
        if i + 1 < got.len() {
            assert_eq!(lines.last(), Some(&b'\n'), "{key} ends inside a line");
            // Close to the split size: the pieces are cut by their compressed size.
            assert!(
                bytes.len() > 15 * MIB,
                "{key} is only {} bytes",
                bytes.len()
            );
        }
        joined.extend_from_slice(&lines);
    }
    assert!(joined == data, "the pieces' lines are the source's");
    assert_eq!(get(&s3, &bucket, "gz/logs/small.log.gz").await, small);

    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&s3, &bucket, "gz/manifest.json").await).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    assert_eq!(files.len(), got.len() + 1, "{manifest:#}");
    for (key, bytes) in &got {
        let entry = files
            .iter()
            .find(|f| f["FileName"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} not in the manifest"));
        let lines = gunzip(key, bytes);
        assert_eq!(entry["FileSize"], bytes.len() as u64, "{key}");
        assert_eq!(entry["UncompressedSize"], lines.len() as u64, "{key}");
        assert_eq!(entry["NumRecords"], count_lines(&lines), "{key}");
        assert_eq!(entry["SourceFile"], "logs/big.log.gz");
    }
    let records: u64 = files
        .iter()
        .filter(|f| f["SourceFile"] == "logs/big.log.gz")
        .map(|f| f["NumRecords"].as_u64().unwrap())
        .sum();
    assert_eq!(records, count_lines(&data), "every line once");

    let again = upload(&server, &bucket, dir.path(), &args).await;
    assert!(again.success, "{again:?}");
    assert_eq!(again.bytes_sent(), 0, "a re-run sends nothing: {again:?}");
}

/// Pieces larger than a part go in multipart uploads; a run killed half-way leaves them open
/// and the next run keeps every piece and part already stored: it sends under a quarter of the
/// file again.
#[tokio::test]
async fn a_killed_gzip_delivery_resumes_without_sending_pieces_again() {
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "gzresume").await;
    let dir = source_dir();
    let data = random_lines(130 * MIB, 12);
    let gz = gzip(&data);
    write(&dir.path().join("big.csv.gz"), &gz);
    let proxy = proxy::Proxy::start(&server.endpoint).await;
    let via = server.via(&proxy.url());
    let state = temp_path(&dir, "state.json");
    let args = [
        "--split-size",
        "40Mi",
        "--part-size",
        "8Mi",
        "--concurrency",
        "2",
        "--state-file",
        state.to_str().unwrap(),
    ];
    // Slowed down, so that the kill finds it half-way.
    proxy
        .faults
        .rate
        .store(24 << 20, std::sync::atomic::Ordering::SeqCst);
    let mut child = upload_command(&via, &bucket, dir.path(), &args)
        .spawn()
        .unwrap();
    let half = gz.len() as u64 / 2;
    let started = std::time::Instant::now();
    while proxy.faults.bytes_up() < half {
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let before = proxy.faults.bytes_up();
    assert!(
        !open_uploads(&s3, &bucket).await.is_empty(),
        "a multipart piece was left open"
    );
    proxy
        .faults
        .rate
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let second = upload(&via, &bucket, dir.path(), &args).await;
    assert!(second.success, "{second:?}");
    let got = pieces(&s3, &bucket, "", "big").await;
    let stored: u64 = got.iter().map(|(_, b)| b.len() as u64).sum();
    let total = proxy.faults.bytes_up();
    let resent = total.saturating_sub(stored);
    println!(
        "gzip resume: {before} bytes sent before the kill, {total} in all, {stored} stored, {resent} re-sent ({:.1}% of the file)",
        100.0 * resent as f64 / gz.len() as f64
    );
    assert!(
        resent < gz.len() as u64 / 4,
        "re-sent {resent} of {} bytes",
        gz.len()
    );
    let mut joined = Vec::new();
    for (key, bytes) in &got {
        assert!(bytes.len() <= 40 * MIB, "{key}");
        joined.extend(gunzip(key, bytes));
    }
    assert!(joined == data, "the pieces' lines are the source's");
    assert!(
        open_uploads(&s3, &bucket).await.is_empty(),
        "nothing left open"
    );
}

/// A file that starts like gzip but is not a readable stream: the run fails, naming the file.
#[tokio::test]
async fn a_corrupt_gzip_file_is_named() {
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "gzbad").await;
    let dir = source_dir();
    let mut bad = vec![0x1f, 0x8b, 0x08, 0x00];
    bad.extend((0..(2u32 << 20)).map(|i| (i % 251) as u8));
    write(&dir.path().join("broken.sync.gz"), &bad);
    let run = upload(&server, &bucket, dir.path(), &["--split-size", "1Mi"]).await;
    assert_eq!(run.code, Some(78), "a permanent failure: {run:?}");
    assert!(
        run.stderr.contains("broken.sync.gz") && run.stderr.contains("gzip"),
        "{run:?}"
    );
    assert!(list(&s3, &bucket, "").await.is_empty());
}

/// `--compress gzip`: a text file larger than the split size goes as gzip pieces of whole lines
/// (each at most the split size, each decompressing alone), a small one as `name.gz`, an empty
/// one as an empty gzip stream; a gzip file and a Parquet file go as they are. The manifest gives
/// the sizes and lines of each; a second run sends nothing. In bytes mode the pieces need not end
/// on a line; in lines mode a line longer than the split size is named with its file.
#[tokio::test]
async fn compressing_sends_text_files_as_gzip_pieces_and_compressed_files_as_they_are() {
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "compress").await;
    let dir = source_dir();
    let data = random_lines(40 * MIB, 13);
    write(&dir.path().join("logs/big.csv"), &data);
    write(&dir.path().join("logs/small.txt"), b"one\ntwo\n");
    write(&dir.path().join("empty.csv"), b"");
    let already = gzip(b"already\ncompressed\n");
    write(&dir.path().join("logs/already.csv.gz"), &already);
    let mut parquet = b"PAR1".to_vec();
    parquet.extend((0..5000u32).map(|i| (i % 253) as u8));
    parquet.extend(b"PAR1");
    write(&dir.path().join("logs/data.parquet"), &parquet);

    let args = [
        "--split-size",
        "8Mi",
        "--compress",
        "gzip",
        "--compress-level",
        "1",
        "--prefix",
        "c/",
        "--manifest",
    ];
    let first = upload(&server, &bucket, dir.path(), &args).await;
    assert!(first.success, "{first:?}");

    let got = pieces(&s3, &bucket, "c/logs/", "big").await;
    assert!(got.len() >= 3, "{} pieces", got.len());
    let mut joined = Vec::with_capacity(data.len());
    for (i, (key, bytes)) in got.iter().enumerate() {
        assert_eq!(key, &format!("c/logs/big-{:03}.csv.gz", i + 1));
        assert!(bytes.len() <= 8 * MIB, "{key} is {} bytes", bytes.len());
        let lines = gunzip(key, bytes);
        if i + 1 < got.len() {
            assert_eq!(lines.last(), Some(&b'\n'), "{key} ends inside a line");
        }
        joined.extend_from_slice(&lines);
    }
    assert!(joined == data, "the pieces' lines are the source's");
    let small = get(&s3, &bucket, "c/logs/small.txt.gz").await;
    assert_eq!(gunzip("small.txt.gz", &small), b"one\ntwo\n");
    assert!(gunzip("empty.csv.gz", &get(&s3, &bucket, "c/empty.csv.gz").await).is_empty());
    assert_eq!(get(&s3, &bucket, "c/logs/already.csv.gz").await, already);
    assert_eq!(get(&s3, &bucket, "c/logs/data.parquet").await, parquet);

    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&s3, &bucket, "c/manifest.json").await).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    assert_eq!(files.len(), got.len() + 4, "{manifest:#}");
    let entry = |key: &str| {
        files
            .iter()
            .find(|f| f["FileName"] == key)
            .unwrap_or_else(|| panic!("{key} not in the manifest: {manifest:#}"))
            .clone()
    };
    for (key, bytes) in &got {
        let lines = gunzip(key, bytes);
        let e = entry(key);
        assert_eq!(e["FileSize"], bytes.len() as u64, "{key}");
        assert_eq!(e["UncompressedSize"], lines.len() as u64, "{key}");
        assert_eq!(e["NumRecords"], count_lines(&lines), "{key}");
        assert_eq!(e["SourceFile"], "logs/big.csv");
    }
    let e = entry("c/logs/small.txt.gz");
    assert_eq!(
        (
            e["FileSize"].as_u64(),
            e["UncompressedSize"].as_u64(),
            e["NumRecords"].as_u64()
        ),
        (Some(small.len() as u64), Some(8), Some(2)),
        "{e}"
    );

    let again = upload(&server, &bucket, dir.path(), &args).await;
    assert!(again.success, "{again:?}");
    assert_eq!(again.bytes_sent(), 0, "a re-run sends nothing: {again:?}");

    // Bytes mode: one 12 MiB line, cut anywhere, each piece a gzip stream of its own.
    let bin = dir.path().join("bin");
    let line: Vec<u8> = random_lines(12 * MIB, 14)
        .into_iter()
        .filter(|&b| b != b'\n' && b != b'\r')
        .collect();
    write(&bin.join("one.line"), &line);
    let bytes_args = [
        "--split-size",
        "4Mi",
        "--compress",
        "gzip",
        "--split-on",
        "bytes",
    ];
    let run = upload(&server, &bucket, &bin, &bytes_args).await;
    assert!(run.success, "{run:?}");
    let got = pieces(&s3, &bucket, "", "one").await;
    assert!(got.len() >= 3, "{} pieces", got.len());
    let mut joined = Vec::new();
    for (key, bytes) in &got {
        assert!(bytes.len() <= 4 * MIB, "{key} is {} bytes", bytes.len());
        joined.extend(gunzip(key, bytes));
    }
    assert!(joined == line, "the pieces are the line's bytes");
    // Lines mode cannot cut that line: the file is named (as it is, not "decompressed").
    let lines_args = ["--split-size", "4Mi", "--compress", "gzip"];
    let run = upload(&server, &bucket, &bin, &lines_args).await;
    assert_eq!(run.code, Some(78), "a permanent failure: {run:?}");
    assert!(
        run.stderr
            .contains("one.line: the line starting at byte 0 is longer than the split size"),
        "{run:?}"
    );
}
