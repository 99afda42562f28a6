//! A bucket of the provider's own as the source (`--source-s3`), against versitygw (a second
//! bucket plays the provider's store): the volume tests' edge cases delivered byte for byte and
//! cut on lines, read with the source's own keys (never the destination's); a re-run sends
//! nothing; an object overwritten during the delivery fails it with its own reason; a killed run
//! resumes without sending again what it stored; compressed on the way out, text is sent and
//! gzip still copied.

mod upload_support;

use std::sync::atomic::Ordering;

use upload_support::proxy;
use upload_support::*;

const MIB: usize = 1 << 20;

/// The provider's bucket, with `objects` under `exports/` (and a folder marker).
async fn provider(s3: &aws_sdk_s3::Client, objects: &[(String, Vec<u8>)]) -> String {
    let bucket = new_bucket(s3, "provider").await;
    for (name, body) in objects
        .iter()
        .chain(std::iter::once(&("sub/".to_string(), Vec::new())))
    {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("exports/{name}"))
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
    }
    bucket
}

/// `outbound upload` of `s3://{source}/exports` to `server`/`bucket`, the source read through
/// `via` (an endpoint) with `keys`.
fn from_s3(
    server: &Server,
    bucket: &str,
    source: &str,
    via: &str,
    keys: (&str, &str),
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = upload_to(server, bucket);
    cmd.arg("--source-s3")
        .arg(format!("s3://{source}/exports"))
        .arg("--source-endpoint")
        .arg(via)
        .arg("--source-force-path-style")
        .args(args)
        .env("OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID", keys.0)
        .env("OUTBOUND_SOURCE_AWS_SECRET_ACCESS_KEY", keys.1);
    cmd
}

async fn run(mut cmd: tokio::process::Command) -> Run {
    finished(cmd.output().await.expect("run outbound upload"))
}

/// Text lines of varied length, each ending in CRLF.
fn crlf_lines(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(size + 400);
    while data.len() < size {
        let len = 1 + (rng.next() % 300) as usize;
        data.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        data.extend_from_slice(b"\r\n");
    }
    data
}

/// The volume tests' edge cases for a split size: empty, exactly the split size, one byte over,
/// no trailing newline, CRLF lines, names with spaces and Unicode, many dots, a subfolder.
fn edge_cases(dir: &tempfile::TempDir, split: usize) -> Vec<(String, Vec<u8>)> {
    let mut exact = write_lines(&dir.path().join("x"), split, 1, true);
    exact.truncate(split - 1);
    exact.push(b'\n');
    let mut over = exact.clone();
    over.push(b'z');
    vec![
        ("empty.sync".into(), Vec::new()),
        ("exact.sync".into(), exact),
        ("over.sync".into(), over),
        (
            "no-newline.txt".into(),
            write_lines(&dir.path().join("y"), 3 * split + 77, 2, false),
        ),
        ("crlf.csv".into(), crlf_lines(2 * split + 5, 3)),
        (
            "with space é.sync".into(),
            write_lines(&dir.path().join("z"), 2 * split, 4, true),
        ),
        (
            "a.b.c.d.sync".into(),
            write_lines(&dir.path().join("w"), 1500, 5, true),
        ),
        (
            "sub/deep.sync".into(),
            write_lines(&dir.path().join("v"), 1000, 6, true),
        ),
    ]
}

/// Every object of the source is in `bucket` under `out/`, byte for byte, in pieces of at most
/// `split` bytes each ending on a line, with the manifest's line counts right.
async fn assert_delivered(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: &[(String, Vec<u8>)],
    split: usize,
) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(s3, bucket, "out/manifest.json").await).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    for (name, body) in objects {
        let pieces: Vec<&serde_json::Value> = files
            .iter()
            .filter(|f| f["SourceFile"] == name.as_str())
            .collect();
        assert!(!pieces.is_empty(), "{name} not delivered: {manifest:#}");
        assert!(
            pieces.len() >= body.len().div_ceil(split).max(1),
            "{name}: {} pieces",
            pieces.len()
        );
        let mut joined = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let key = piece["FileName"].as_str().unwrap();
            let bytes = get(s3, bucket, key).await;
            assert!(bytes.len() <= split, "{key} is {} bytes", bytes.len());
            if i + 1 < pieces.len() {
                assert_eq!(bytes.last(), Some(&b'\n'), "{key} ends inside a line");
            }
            assert_eq!(piece["NumRecords"], count_lines(&bytes), "{key}");
            joined.extend(bytes);
        }
        assert!(joined == *body, "{name}: the pieces are not the object");
    }
    // Names keep their spaces, accents and dots; the folder marker is not a file.
    for key in [
        "out/with space é-001.sync",
        "out/a.b.c.d.sync",
        "out/sub/deep.sync",
        "out/over-002.sync",
    ] {
        assert!(
            files.iter().any(|f| f["FileName"] == key),
            "{key}: {manifest:#}"
        );
    }
}

/// The edge cases with a 1 MiB split size, delivered byte for byte, every piece ending on a line;
/// a re-run sends nothing.
#[tokio::test]
async fn an_s3_source_is_delivered_byte_for_byte_and_cut_on_lines() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let split = MIB;
    let objects = edge_cases(&dir, split);
    let source = provider(&s3, &objects).await;
    let bucket = new_bucket(&s3, "fromsrc").await;
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = ["--split-size", "1Mi", "--prefix", "out/", "--manifest"];
    let first = run(from_s3(
        &server,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &args,
    ))
    .await;
    assert!(first.success, "{first:?}");
    assert_delivered(&s3, &bucket, &objects, split).await;

    let again = run(from_s3(
        &server,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &args,
    ))
    .await;
    assert!(again.success, "{again:?}");
    assert_eq!(again.bytes_sent(), 0, "a re-run sends nothing: {again:?}");
}

/// Copy mode (`--copy server`: one identity reads the source and writes the destination, on one
/// server): the server copies every part, so the pod sends under 1% of the bytes (request heads,
/// completions and the manifest, counted by the proxy both buckets are reached through); the
/// objects are the edge cases byte for byte, cut on lines, and the manifest's line counts are
/// right (counted by reading the source). A re-run neither sends nor copies anything.
#[tokio::test]
async fn in_copy_mode_the_server_copies_and_the_pod_sends_under_one_percent() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let split = 4 * MIB;
    let objects = edge_cases(&dir, split);
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    let source = provider(&s3, &objects).await;
    let bucket = new_bucket(&s3, "copied").await;
    let proxy = proxy::Proxy::start(&server.endpoint).await;
    let dest = server.via(&proxy.url());
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = [
        "--split-size",
        "4Mi",
        "--prefix",
        "out/",
        "--manifest",
        "--copy",
        "server",
    ];
    let first = run(from_s3(&dest, &bucket, &source, &proxy.url(), keys, &args)).await;
    assert!(first.success, "{first:?}");
    let up = proxy.faults.bytes_up();
    println!(
        "copy mode: {total} bytes delivered, {up} bytes sent by the pod ({:.2}%)",
        100.0 * up as f64 / total as f64
    );
    assert!(
        up < total as u64 / 100,
        "the pod sent {up} bytes of {total}: {first:?}"
    );
    assert_eq!(first.bytes_sent(), 0, "{first:?}");
    assert!(
        first
            .stdout
            .contains(&format!("copied {total} bytes by the server")),
        "{first:?}"
    );
    assert!(
        proxy
            .faults
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("partNumber=")),
        "parts were copied with UploadPartCopy"
    );
    // Whole small objects in one CopyObject: a PUT of an object, though nothing was sent.
    assert!(
        proxy.faults.requests().iter().any(|r| r.starts_with("PUT")
            && r.contains("a.b.c.d.sync")
            && !r.contains("partNumber=")),
        "a small object was copied with CopyObject"
    );
    assert_delivered(&s3, &bucket, &objects, split).await;
    let again = run(from_s3(&dest, &bucket, &source, &proxy.url(), keys, &args)).await;
    assert!(again.success, "{again:?}");
    assert_eq!(again.bytes_sent(), 0, "{again:?}");
    assert!(
        again.stdout.contains("copied 0 bytes by the server"),
        "a re-run copies nothing: {again:?}"
    );
    assert!(open_uploads(&s3, &bucket).await.is_empty());
}

/// Copy mode with `--compress gzip`: the text object is read, compressed into gzip pieces of
/// whole lines and sent; the gzip object, already compressed, is still copied by the server.
#[tokio::test]
async fn compressing_a_bucket_source_sends_the_text_and_copies_the_gzip() {
    use std::io::{Read, Write};
    let server = versitygw();
    let s3 = server.client();
    // Random letters, so that gzip keeps most of it: several pieces of at most 1 MiB.
    let mut rng = Rng::new(21);
    let mut text = Vec::with_capacity(3 * MIB + 400);
    while text.len() < 3 * MIB {
        let len = 1 + (rng.next() % 300) as usize;
        text.extend((0..len).map(|_| b'a' + (rng.next() % 26) as u8));
        text.extend_from_slice(b"\r\n");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"already\ncompressed\n").unwrap();
    let gz = gz.finish().unwrap();
    let source = provider(
        &s3,
        &[
            ("a.csv".into(), text.clone()),
            ("b.csv.gz".into(), gz.clone()),
        ],
    )
    .await;
    let bucket = new_bucket(&s3, "packed").await;
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = [
        "--split-size",
        "1Mi",
        "--copy",
        "server",
        "--compress",
        "gzip",
    ];
    let out = run(from_s3(
        &server,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &args,
    ))
    .await;
    assert!(out.success, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("copied {} bytes by the server", gz.len())),
        "{out:?}"
    );
    let mut joined = Vec::new();
    let mut pieces = 0;
    for (key, size, _) in list(&s3, &bucket, "").await {
        if !key.starts_with("a-") {
            continue;
        }
        pieces += 1;
        assert_eq!(key, format!("a-{pieces:03}.csv.gz"));
        assert!(size <= MIB as u64, "{key} is {size} bytes");
        let mut lines = Vec::new();
        flate2::read::GzDecoder::new(get(&s3, &bucket, &key).await.as_slice())
            .read_to_end(&mut lines)
            .unwrap_or_else(|e| panic!("{key} is not a gzip stream of its own: {e}"));
        assert!(lines.ends_with(b"\r\n"), "{key} ends on a line");
        joined.extend(lines);
    }
    assert!(pieces >= 2, "{pieces} pieces of a.csv");
    assert!(joined == text, "the pieces' lines are the object's");
    assert_eq!(get(&s3, &bucket, "b.csv.gz").await, gz);
}

/// Copy mode, the source overwritten while its parts are being copied: every copy names the
/// ETag planned on, so the run fails with `SourceObjectChanged` naming the object, and nothing is
/// made visible.
#[tokio::test]
async fn in_copy_mode_an_overwritten_source_fails_the_delivery_with_its_reason() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let body = write_lines(&dir.path().join("c"), 24 * MIB, 12, true);
    let source = provider(&s3, &[("big.sync".into(), body.clone())]).await;
    let bucket = new_bucket(&s3, "copychanged").await;
    let proxy = proxy::Proxy::start(&server.endpoint).await;
    proxy.faults.hold_parts.store(true, Ordering::SeqCst);
    let dest = server.via(&proxy.url());
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = ["--part-size", "5Mi", "--copy", "server"];
    let child = from_s3(&dest, &bucket, &source, &server.endpoint, keys, &args)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !proxy
        .faults
        .requests()
        .iter()
        .any(|r| r.starts_with("PUT") && r.contains("partNumber="))
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut changed = body.clone();
    changed[0] = b'#';
    s3.put_object()
        .bucket(&source)
        .key("exports/big.sync")
        .body(changed.into())
        .send()
        .await
        .unwrap();
    proxy.faults.hold_parts.store(false, Ordering::SeqCst);
    let out = finished(child.wait_with_output().await.unwrap());
    assert_eq!(out.code, Some(78), "a permanent failure: {out:?}");
    assert!(
        out.stderr
            .contains("exports/big.sync changed during the delivery: it was overwritten"),
        "{out:?}"
    );
    assert!(
        list(&s3, &bucket, "").await.is_empty(),
        "nothing made visible"
    );
}

/// Copy mode where the destination's identity may not read the source (a versitygw user that
/// owns only the destination bucket): the first copy is refused, the run says so once and sends
/// the bytes instead, read with the source's own keys; the delivery succeeds, byte for byte.
#[tokio::test]
async fn a_refused_copy_turns_the_run_to_sending() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let body = write_lines(&dir.path().join("r"), 12 * MIB, 13, true);
    let source = provider(&s3, &[("r.sync".into(), body.clone())]).await;
    let user = format!("copyuser{}", std::process::id());
    let bucket = new_bucket(&s3, "refused").await;
    // versitygw's admin API, as the ground's root: a user account, given the bucket.
    let admin = std::env::var("S3_ADMIN_ENDPOINT").expect("S3_ADMIN_ENDPOINT from the ground");
    for command in [
        vec![
            "create-user",
            "--access",
            &user,
            "--secret",
            "copyusersecret",
            "--role",
            "user",
        ],
        vec!["change-bucket-owner", "--bucket", &bucket, "--owner", &user],
    ] {
        let out = std::process::Command::new("versitygw")
            .args(["admin", "--access", &server.access_key, "--secret"])
            .arg(&server.secret_key)
            .args(["--endpoint-url", &admin])
            .args(&command)
            .output()
            .expect("versitygw (on the ground's PATH)");
        assert!(out.status.success(), "{command:?}: {out:?}");
    }
    let writer = Server {
        access_key: user.clone(),
        secret_key: "copyusersecret".into(),
        ..server.clone()
    };
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = ["--part-size", "5Mi", "--copy", "server"];
    let out = run(from_s3(
        &writer,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &args,
    ))
    .await;
    assert!(out.success, "{out:?}");
    assert!(
        out.stderr.contains("refused a copy") && out.stderr.contains("AccessDenied"),
        "{out:?}"
    );
    assert_eq!(out.bytes_sent(), body.len() as u64, "{out:?}");
    assert!(get(&s3, &bucket, "r.sync").await == body);
    assert!(open_uploads(&s3, &bucket).await.is_empty());
}

/// An incremental run of a bucket source takes the objects written (LastModified) in its window:
/// `--changed-after` those from the cut on, `--changed-before` those before it.
#[tokio::test]
async fn an_incremental_run_takes_the_objects_written_in_its_window() {
    let server = versitygw();
    let s3 = server.client();
    let source = provider(&s3, &[("old.sync".into(), b"old\n".to_vec())]).await;
    let written = |key: &'static str| {
        let (s3, source) = (s3.clone(), source.clone());
        async move {
            let head = s3
                .head_object()
                .bucket(&source)
                .key(format!("exports/{key}"))
                .send()
                .await
                .unwrap();
            head.last_modified().unwrap().secs()
        }
    };
    let old = written("old.sync").await;
    // LastModified counts whole seconds: write the new object until it is a second later.
    let started = std::time::Instant::now();
    let new = loop {
        s3.put_object()
            .bucket(&source)
            .key("exports/new.sync")
            .body(b"new\n".to_vec().into())
            .send()
            .await
            .unwrap();
        let at = written("new.sync").await;
        if at > old {
            break at;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let cut = jiff::Timestamp::from_second(new).unwrap().to_string();
    let bucket = new_bucket(&s3, "window").await;
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    for (window, prefix) in [
        ("--changed-after", "after/"),
        ("--changed-before", "before/"),
    ] {
        let args = [window, cut.as_str(), "--prefix", prefix];
        let out = run(from_s3(
            &server,
            &bucket,
            &source,
            &server.endpoint,
            keys,
            &args,
        ))
        .await;
        assert!(out.success, "{out:?}");
    }
    for (prefix, expected) in [("after/", "after/new.sync"), ("before/", "before/old.sync")] {
        let keys: Vec<String> = list(&s3, &bucket, prefix)
            .await
            .into_iter()
            .map(|(key, _, _)| key)
            .collect();
        assert_eq!(keys, [expected]);
    }
}

/// The source's keys are its own: wrong source keys fail on the source (named), whatever the
/// destination's; the destination's keys are never used to read it.
#[tokio::test]
async fn the_source_is_read_with_its_own_keys() {
    let server = versitygw();
    let s3 = server.client();
    let source = provider(&s3, &[("a.sync".into(), b"one\ntwo\n".to_vec())]).await;
    let bucket = new_bucket(&s3, "ownkeys").await;
    let wrong = run(from_s3(
        &server,
        &bucket,
        &source,
        &server.endpoint,
        ("AKIAWRONGWRONGWRONG1", "not-the-secret"),
        &[],
    ))
    .await;
    assert_eq!(wrong.code, Some(78), "{wrong:?}");
    assert!(
        wrong.stderr.contains(&format!("s3://{source}/exports/")),
        "names the source: {wrong:?}"
    );
    assert!(list(&s3, &bucket, "").await.is_empty());
}

/// An object overwritten by the provider while it is delivered: every read is pinned to the
/// ETag the plan saw, so the delivery fails (SourceObjectChanged, naming it) instead of mixing
/// two versions.
#[tokio::test]
async fn an_object_overwritten_during_the_delivery_fails_it_with_its_own_reason() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let body = write_lines(&dir.path().join("b"), 40 * MIB, 7, true);
    let source = provider(&s3, &[("big.sync".into(), body.clone())]).await;
    let bucket = new_bucket(&s3, "overwritten").await;
    // The destination slowed down: parts are read one after another, as they are sent.
    let proxy = proxy::Proxy::start(&server.endpoint).await;
    proxy.faults.rate.store(4 << 20, Ordering::SeqCst);
    let dest = server.via(&proxy.url());
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let args = ["--part-size", "5Mi", "--concurrency", "1"];
    let child = from_s3(&dest, &bucket, &source, &server.endpoint, keys, &args)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while proxy.faults.bytes_up() < 6 << 20 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut changed = body.clone();
    changed[0] = b'#';
    s3.put_object()
        .bucket(&source)
        .key("exports/big.sync")
        .body(changed.into())
        .send()
        .await
        .unwrap();
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let out = finished(child.wait_with_output().await.unwrap());
    assert_eq!(out.code, Some(78), "a permanent failure: {out:?}");
    assert!(
        out.stderr.contains("SourceObjectChanged")
            || out.stderr.contains("changed during the delivery"),
        "{out:?}"
    );
    assert!(out.stderr.contains("exports/big.sync"), "{out:?}");
    assert!(
        list(&s3, &bucket, "").await.is_empty(),
        "nothing made visible"
    );
}

/// SIGKILL half-way through an S3-source delivery: the next run resumes the open uploads and
/// sends under a quarter of what the first sent again.
#[tokio::test]
async fn a_killed_s3_source_delivery_resumes() {
    let server = versitygw();
    let s3 = server.client();
    let dir = source_dir();
    let a = write_lines(&dir.path().join("a"), 96 * MIB, 8, true);
    let b = write_lines(&dir.path().join("b"), 32 * MIB, 9, true);
    let source = provider(
        &s3,
        &[("a.sync".into(), a.clone()), ("b.sync".into(), b.clone())],
    )
    .await;
    let bucket = new_bucket(&s3, "s3resume").await;
    let proxy = proxy::Proxy::start(&server.endpoint).await;
    let dest = server.via(&proxy.url());
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let state = temp_path(&dir, "state.json");
    let args = [
        "--part-size",
        "5Mi",
        "--concurrency",
        "2",
        "--state-file",
        state.to_str().unwrap(),
    ];
    proxy.faults.rate.store(16 << 20, Ordering::SeqCst);
    let mut child = from_s3(&dest, &bucket, &source, &server.endpoint, keys, &args)
        .spawn()
        .unwrap();
    let total = (a.len() + b.len()) as u64;
    let started = std::time::Instant::now();
    while proxy.faults.bytes_up() < total / 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let before = proxy.faults.bytes_up();
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let second = run(from_s3(
        &dest,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &args,
    ))
    .await;
    assert!(second.success, "{second:?}");
    let sent = proxy.faults.bytes_up();
    let resent = sent.saturating_sub(total);
    // What the second run read that the first had already sent: its reads past what was left.
    let read: u64 = {
        let at = second.stdout.find("read ").expect("report line") + 5;
        second.stdout[at..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let reread = (read + before).saturating_sub(total);
    println!(
        "s3 source resume: {before} bytes sent before the kill, {sent} in all, {resent} re-sent, {reread} read again ({:.1}% and {:.1}% of those before the kill)",
        100.0 * resent as f64 / before as f64,
        100.0 * reread as f64 / before as f64
    );
    assert!(resent < before / 4, "re-sent {resent} of {before}");
    assert!(
        reread < before / 4,
        "read again {reread} of {before}: {second:?}"
    );
    assert!(get(&s3, &bucket, "a.sync").await == a);
    assert!(get(&s3, &bucket, "b.sync").await == b);
    assert!(open_uploads(&s3, &bucket).await.is_empty());
}

/// A gzip object of the source larger than the split size goes in gzip pieces of whole lines,
/// read from the bucket as one stream pinned to its ETag.
#[tokio::test]
async fn a_gzip_object_of_the_source_goes_in_gzip_pieces() {
    use std::io::{Read, Write};
    let server = versitygw();
    let s3 = server.client();
    let mut rng = Rng::new(21);
    let mut text = Vec::new();
    while text.len() < 4 * MIB {
        for _ in 0..(20 + rng.next() % 200) {
            text.push(b'a' + (rng.next() % 26) as u8);
        }
        text.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&text).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() > 2 * MIB);
    let source = provider(&s3, &[("day.log.gz".into(), gz)]).await;
    let bucket = new_bucket(&s3, "s3gzip").await;
    let keys = (server.access_key.as_str(), server.secret_key.as_str());
    let out = run(from_s3(
        &server,
        &bucket,
        &source,
        &server.endpoint,
        keys,
        &["--split-size", "1Mi"],
    ))
    .await;
    assert!(out.success, "{out:?}");
    let mut joined = Vec::new();
    let objects = list(&s3, &bucket, "").await;
    assert!(objects.len() >= 3, "{objects:?}");
    for (i, (key, size, _)) in objects.iter().enumerate() {
        assert_eq!(key, &format!("day-{:03}.log.gz", i + 1));
        assert!(*size <= MIB as u64, "{key}");
        let mut lines = Vec::new();
        flate2::read::GzDecoder::new(get(&s3, &bucket, key).await.as_slice())
            .read_to_end(&mut lines)
            .unwrap();
        assert_eq!(lines.last(), Some(&b'\n'), "{key}");
        joined.extend(lines);
    }
    assert!(joined == text, "the pieces' lines are the object's");
}
