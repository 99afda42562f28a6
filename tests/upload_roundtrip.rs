//! The uploader against versitygw: lines and bytes mode at several split sizes reassemble
//! byte-identically, the manifest matches the bucket, re-runs send nothing, conflicts are reported.

mod upload_support;

use std::collections::BTreeMap;

use upload_support::*;

const MIB: usize = 1 << 20;

/// The source of the round-trip tests: split and unsplit files, an empty one, one exactly at a
/// split size, one without a final newline, one in a subfolder.
fn fill_source(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "segments.sync".to_string(),
        write_lines(&dir.join("segments.sync"), 22 * MIB, 1, true),
    );
    files.insert(
        "no-newline.txt".to_string(),
        write_lines(&dir.join("no-newline.txt"), 9 * MIB + 77, 2, false),
    );
    files.insert(
        "empty.sync".to_string(),
        write_lines(&dir.join("empty.sync"), 0, 3, true),
    );
    // Exactly 8 MiB and ending with a newline: never split at an 8 MiB split size.
    let mut exact = write_lines(&dir.join("exact.sync"), 8 * MIB, 4, true);
    exact.truncate(8 * MIB - 1);
    exact.push(b'\n');
    write(&dir.join("exact.sync"), &exact);
    files.insert("exact.sync".to_string(), exact);
    files.insert(
        "sub/small.sync".to_string(),
        write_lines(&dir.join("sub/small.sync"), 1000, 5, true),
    );
    files
}

/// Groups the objects under `prefix` by the source file their metadata names, in key order, with
/// the line count the manifest gives each.
async fn objects_by_source(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    manifest: &str,
) -> BTreeMap<String, Vec<(String, Vec<u8>, u64)>> {
    let manifest_key = format!("{prefix}{manifest}");
    let listing: serde_json::Value =
        serde_json::from_slice(&get(client, bucket, &manifest_key).await).unwrap();
    let records: BTreeMap<String, u64> = listing["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["FileName"].as_str().unwrap().to_string();
            (name, f["NumRecords"].as_u64().unwrap())
        })
        .collect();
    let mut by_source: BTreeMap<String, Vec<(String, Vec<u8>, u64)>> = BTreeMap::new();
    for (key, size, _) in list(client, bucket, prefix).await {
        if key.ends_with(manifest) {
            continue;
        }
        let head = client
            .head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let meta = head.metadata().expect("user metadata");
        let source = meta["outbound-source"].clone();
        let lines = *records.get(&key).expect("the manifest lists every object");
        let body = get(client, bucket, &key).await;
        assert_eq!(body.len() as u64, size);
        by_source
            .entry(source)
            .or_default()
            .push((key, body, lines));
    }
    by_source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_and_bytes_modes_reassemble_byte_identically() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "roundtrip").await;
    let dir = source_dir();
    let files = fill_source(dir.path());
    // A binary file for bytes mode only (lines mode would find no newline to cut at).
    let binary = write_random(&dir.path().join("blob.bin"), 13 * MIB + 5, 9);

    // The last column is --io-threads: a single I/O thread and a pool of three.
    let cases: &[(&str, usize, &str, &str)] = &[
        ("lines", 8 * MIB, "CRC64NVME", "1"),
        ("lines", 5 * MIB + 12_345, "CRC32C", "3"),
        ("bytes", 8 * MIB, "SHA256", "1"),
        ("bytes", 6 * MIB + 1, "CRC64NVME", "3"),
    ];
    for &(mode, split, algorithm, io_threads) in cases {
        let prefix = format!("{mode}-{split}-{algorithm}/");
        let split_text = split.to_string();
        let mut args = vec![
            "--prefix",
            &prefix,
            "--split-size",
            &split_text,
            "--split-on",
            mode,
            "--part-size",
            "5Mi",
            "--multipart-threshold",
            "5Mi",
            "--concurrency",
            "4",
            "--checksum-algorithm",
            algorithm,
            "--io-threads",
            io_threads,
            "--manifest",
        ];
        if mode == "lines" {
            args.extend(["--exclude", "*.bin"]);
        }
        let run = upload(&server, &bucket, dir.path(), &args).await;
        assert!(run.success, "{mode} {split}: {run:?}");

        let mut expected = files.clone();
        if mode == "bytes" {
            expected.insert("blob.bin".into(), binary.clone());
        }
        let by_source = objects_by_source(&client, &bucket, &prefix, "manifest.json").await;
        assert_eq!(
            by_source.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{mode} {split}: every file delivered"
        );
        for (source, data) in &expected {
            let pieces = &by_source[source];
            let whole: Vec<u8> = pieces
                .iter()
                .flat_map(|(_, body, _)| body.clone())
                .collect();
            assert!(
                whole == *data,
                "{mode} {split}: {source} reassembles byte-identically"
            );
            for (i, (key, body, lines)) in pieces.iter().enumerate() {
                assert!(
                    body.len() <= split,
                    "{key} is {} bytes, above the split size {split}",
                    body.len()
                );
                if mode == "lines" {
                    assert_eq!(
                        *lines,
                        count_lines(body),
                        "{key}: the manifest's line count"
                    );
                    if i + 1 < pieces.len() {
                        assert_eq!(body.last(), Some(&b'\n'), "{key} ends with a newline");
                    }
                }
            }
            if mode == "lines" {
                let total: u64 = pieces.iter().map(|(_, _, l)| l).sum();
                assert_eq!(
                    total,
                    count_lines(data),
                    "{source}: no line lost or doubled"
                );
            }
            if data.len() <= split {
                assert_eq!(pieces.len(), 1, "{source} fits and is not split");
                assert_eq!(pieces[0].0, format!("{prefix}{source}"));
            } else {
                assert!(pieces.len() >= 2);
                let (stem, ext) = source.split_once('.').unwrap();
                assert_eq!(pieces[0].0, format!("{prefix}{stem}-001.{ext}"));
            }
        }
        check_manifest(&client, &bucket, &prefix, algorithm).await;
    }
}

/// The manifest's entries and totals match the bucket, and it was written last.
async fn check_manifest(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str, algorithm: &str) {
    let key = format!("{prefix}manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(client, bucket, &key).await).unwrap();
    let listed = list(client, bucket, prefix).await;
    let data: Vec<_> = listed.iter().filter(|(k, _, _)| *k != key).collect();
    let files = manifest["Files"].as_array().unwrap();
    assert_eq!(files.len(), data.len(), "one manifest entry per object");
    let mut total_size = 0;
    let mut total_lines = 0;
    for entry in files {
        let name = entry["FileName"].as_str().unwrap();
        let (_, size, _) = data
            .iter()
            .find(|(k, _, _)| k == name)
            .expect("entry names an object");
        assert_eq!(entry["FileSize"].as_u64().unwrap(), *size, "{name}");
        let head = client
            .head_object()
            .bucket(bucket)
            .key(name)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let stored = match algorithm {
            "CRC64NVME" => head.checksum_crc64_nvme(),
            "CRC32C" => head.checksum_crc32_c(),
            _ => head.checksum_sha256(),
        };
        assert_eq!(
            entry["Checksum"]["Value"].as_str(),
            stored,
            "{name}: checksum"
        );
        assert_eq!(entry["Checksum"]["Algorithm"].as_str(), Some(algorithm));
        let lines = count_lines(&get(client, bucket, name).await);
        assert_eq!(entry["NumRecords"].as_u64(), Some(lines), "{name}: lines");
        total_size += size;
        total_lines += lines;
    }
    assert_eq!(
        manifest["Totals"]["NumFiles"].as_u64(),
        Some(data.len() as u64)
    );
    assert_eq!(manifest["Totals"]["TotalSize"].as_u64(), Some(total_size));
    assert_eq!(manifest["Totals"]["NumRecords"].as_u64(), Some(total_lines));
    let manifest_time = listed.iter().find(|(k, _, _)| *k == key).unwrap().2;
    for (k, _, modified) in &data {
        assert!(
            manifest_time.secs() >= modified.secs(),
            "manifest older than {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_sends_nothing_and_a_conflict_is_reported_not_overwritten() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "rerun").await;
    let dir = source_dir();
    let data = write_lines(&dir.path().join("a.sync"), 12 * MIB, 7, true);
    write_lines(&dir.path().join("b.sync"), 1000, 8, true);
    let args = [
        "--split-size",
        "8Mi",
        "--part-size",
        "5Mi",
        "--multipart-threshold",
        "5Mi",
        "--manifest",
    ];

    let first = upload(&server, &bucket, dir.path(), &args).await;
    assert!(first.success, "{first:?}");
    assert!(first.bytes_sent() >= data.len() as u64, "{first:?}");
    let before = list(&client, &bucket, "").await;

    let again = upload(&server, &bucket, dir.path(), &args).await;
    assert!(again.success, "{again:?}");
    assert_eq!(again.bytes_sent(), 0, "a re-run sends nothing: {again:?}");
    assert!(
        again.stdout.contains("3 objects already present"),
        "{again:?}"
    );
    assert_eq!(
        list(&client, &bucket, "").await,
        before,
        "nothing rewritten"
    );

    // Different content at a key that exists: reported, not overwritten.
    let changed = write_lines(&dir.path().join("b.sync"), 1000, 99, true);
    let conflict = upload(&server, &bucket, dir.path(), &args).await;
    assert!(!conflict.success, "{conflict:?}");
    assert!(
        conflict.stderr.contains("s3://")
            && conflict.stderr.contains("b.sync")
            && conflict
                .stderr
                .contains("already exists with different content"),
        "{conflict:?}"
    );
    assert_ne!(get(&client, &bucket, "b.sync").await, changed);
    assert!(open_uploads(&client, &bucket).await.is_empty());

    // Asked to overwrite, it replaces the object (and then the manifest).
    let mut overwrite = args.to_vec();
    overwrite.push("--overwrite");
    let replaced = upload(&server, &bucket, dir.path(), &overwrite).await;
    assert!(replaced.success, "{replaced:?}");
    assert_eq!(get(&client, &bucket, "b.sync").await, changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_and_zstd_are_refused_in_lines_mode() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "refused").await;
    let dir = source_dir();
    let mut data = b"short\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 3000));
    data.push(b'\n');
    write(&dir.path().join("long.sync"), &data);
    let run = upload(&server, &bucket, dir.path(), &["--split-size", "1000"]).await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("long.sync") && run.stderr.contains("byte 6"),
        "{run:?}"
    );

    // A zstd frame cannot be cut into readable pieces (gzip can: tests/upload_gzip.rs).
    let dir = source_dir();
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.extend(std::iter::repeat_n(b'\n', 5000));
    write(&dir.path().join("seg.sync.zst"), &zst);
    let run = upload(&server, &bucket, dir.path(), &["--split-size", "1000"]).await;
    assert_eq!(run.code, Some(78), "{run:?}");
    assert!(
        run.stderr.contains("seg.sync.zst")
            && run.stderr.contains("zstd")
            && run.stderr.contains("--split-on bytes"),
        "{run:?}"
    );
    assert!(
        list(&client, &bucket, "").await.is_empty(),
        "nothing written"
    );

    let run = upload(
        &server,
        &bucket,
        dir.path(),
        &["--split-size", "1000", "--split-on", "bytes"],
    )
    .await;
    assert!(run.success, "{run:?}");
    assert_eq!(list(&client, &bucket, "").await.len(), 6);
}

/// On a terminal (a pseudo-terminal from `script`), `outbound upload` draws a live progress bar
/// with bytes, objects, rate and time left; through a pipe it prints no escape code at all.
#[tokio::test]
async fn a_terminal_gets_a_progress_bar_and_a_pipe_plain_lines() {
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "bar").await;
    let dir = source_dir();
    write_random(&dir.path().join("a.bin"), 24 << 20, 7);
    write_random(&dir.path().join("b.bin"), 1 << 20, 8);

    let piped = finished(
        upload_command(&server, &bucket, dir.path(), &["--prefix", "piped/"])
            .env_remove("NO_COLOR")
            .output()
            .await
            .unwrap(),
    );
    assert!(piped.success, "{piped:?}");
    assert!(
        !piped.stderr.contains('\u{1b}') && !piped.stdout.contains('\u{1b}'),
        "escape codes through a pipe: {piped:?}"
    );

    // The same upload under a pseudo-terminal.
    let cmd = upload_command(&server, &bucket, dir.path(), &["--prefix", "tty/"]);
    let std_cmd = cmd.as_std();
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(quote(std_cmd.get_program()))
        .chain(std_cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let mut tty = tokio::process::Command::new("script");
    tty.args(["-qefc", &line, "/dev/null"]);
    for (k, v) in std_cmd.get_envs() {
        match v {
            Some(v) => tty.env(k, v),
            None => tty.env_remove(k),
        };
    }
    let out = tty
        .env_remove("NO_COLOR")
        .output()
        .await
        .expect("script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2/2 objects"),
        "no progress bar with the objects: {text:?}"
    );
    assert!(text.contains("MiB"), "no bytes on the bar: {text:?}");
    assert!(
        text.contains('\u{1b}'),
        "a terminal gets a live bar (cursor codes): {text:?}"
    );
}
