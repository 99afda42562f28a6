//! The uploader through a fault-injecting proxy in front of versitygw: resets, 503 SlowDown and
//! stalls heal; a storm that outlasts every retry exits retryable with the upload left open, and
//! the next run resumes it; so does a run stopped by SIGTERM or SIGKILL, re-sending little; the
//! manifest is the last write.

mod upload_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use upload_support::proxy::Proxy;
use upload_support::*;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_heals_through_resets_slowdowns_and_stalls() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "faults").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let big = write_random(&dir.path().join("big.bin"), 31 * MIB + 3, 11);
    let small = write_lines(&dir.path().join("small.sync"), 2 * MIB, 12, true);
    proxy.faults.resets.store(3, Ordering::SeqCst);
    proxy.faults.slowdowns.store(4, Ordering::SeqCst);
    proxy.faults.stalls.store(1, Ordering::SeqCst);

    let run = upload_command(
        &server.via(&proxy.url()),
        &bucket,
        dir.path(),
        &[
            "--split-on",
            "bytes",
            "--part-size",
            "5Mi",
            "--concurrency",
            "3",
            "--manifest",
        ],
    )
    .env("OUTBOUND_ATTEMPT_TIMEOUT", "4")
    .output()
    .await
    .unwrap();
    let run = finished(run);
    assert!(run.success, "{run:?}");
    assert_eq!(
        proxy.faults.injected.load(Ordering::SeqCst),
        8,
        "every fault fired"
    );
    assert_eq!(get(&client, &bucket, "big.bin").await, big);
    assert_eq!(get(&client, &bucket, "small.sync").await, small);
    assert!(open_uploads(&client, &bucket).await.is_empty());

    // The manifest is the last thing written.
    let writes: Vec<String> = proxy
        .faults
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT") || r.starts_with("POST"))
        .collect();
    assert!(
        writes.last().unwrap().contains("/manifest.json"),
        "{writes:#?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|r| r.contains("manifest.json"))
            .count(),
        1
    );
}

/// Parts a bucket holds for its one open upload: (upload id, bytes stored).
async fn stored_parts(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (String, u64) {
    let open = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let uploads = open.uploads();
    assert_eq!(uploads.len(), 1, "one upload left open: {uploads:?}");
    let id = uploads[0].upload_id().unwrap().to_string();
    let parts = client
        .list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let bytes = parts.parts().iter().map(|p| p.size().unwrap() as u64).sum();
    (id, bytes)
}

/// The proxy's byte count once what an ended run had handed to the kernel has drained through.
async fn settled_bytes(proxy: &Proxy) -> u64 {
    let mut seen = proxy.faults.bytes_up();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = proxy.faults.bytes_up();
        if now == seen {
            return now;
        }
        seen = now;
    }
}

/// Waits until the proxy has seen `bytes` from the client, while `child` still runs.
async fn wait_for_bytes(proxy: &Proxy, child: &mut tokio::process::Child, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.faults.bytes_up() < bytes {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upload ended too early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the upload made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_that_outlasts_every_retry_keeps_the_upload_open_for_the_next_run() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "storm").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let size = 40 * MIB;
    let data = write_random(&dir.path().join("big.bin"), size, 13);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    let log = dir.path().join("termination-log");
    let args = [
        "--split-on",
        "bytes",
        "--part-size",
        "5Mi",
        "--concurrency",
        "2",
        "--include",
        "*.bin",
        "--state-file",
        state_file.to_str().unwrap(),
        "--termination-log",
        log.to_str().unwrap(),
    ];
    let via = server.via(&proxy.url());
    proxy.faults.rate.store(8 << 20, Ordering::SeqCst);
    let mut child = upload_command(&via, &bucket, dir.path(), &args)
        .env("OUTBOUND_MAX_ATTEMPTS", "2")
        .env("OUTBOUND_PART_RETRIES", "2")
        .spawn()
        .unwrap();
    // Half-way, every part gets 503 SlowDown for longer than every retry lasts.
    wait_for_bytes(&proxy, &mut child, size as u64 / 2).await;
    proxy.faults.parts_always_fail.store(true, Ordering::SeqCst);
    let run = finished(child.wait_with_output().await.unwrap());
    assert_eq!(
        run.code,
        Some(75),
        "a transient failure exits retryable: {run:?}"
    );
    let message = std::fs::read_to_string(&log).unwrap();
    assert_eq!(message.lines().count(), 1, "{message}");
    for needle in [
        "failed: S3Unavailable:",
        "failed to upload part",
        "big.bin",
        "SlowDown",
        "503",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message:?}"
        );
    }
    // Nothing was aborted: the upload and its stored parts wait for the next run.
    assert!(
        !proxy
            .faults
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE")),
        "no abort on a transient failure"
    );
    let (id, stored) = stored_parts(&client, &bucket, "big.bin").await;
    assert!(
        stored >= 5 * MIB as u64,
        "parts were stored before the storm"
    );
    assert!(std::fs::read_to_string(&state_file).unwrap().contains(&id));

    // The storm is over: the next run resumes and re-sends under 10% of what was stored.
    proxy
        .faults
        .parts_always_fail
        .store(false, Ordering::SeqCst);
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let before = settled_bytes(&proxy).await;
    let run = finished(
        upload_command(&via, &bucket, dir.path(), &args)
            .output()
            .await
            .unwrap(),
    );
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("resuming upload"), "{run:?}");
    let sent = proxy.faults.bytes_up() - before;
    let resent = sent.saturating_sub(size as u64 - stored);
    eprintln!("stored before the storm {stored}, second run sent {sent}, re-sent {resent}");
    assert!(
        resent < stored / 10,
        "re-sent {resent} of the {stored} bytes stored before the storm"
    );
    assert_eq!(get(&client, &bucket, "big.bin").await, data);
    assert!(open_uploads(&client, &bucket).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_seconds_and_the_next_run_resumes() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "sigterm").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let size = 40 * MIB;
    let data = write_lines(&dir.path().join("big.sync"), size, 17, true);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    let args = [
        "--part-size",
        "5Mi",
        "--concurrency",
        "2",
        "--state-file",
        state_file.to_str().unwrap(),
    ];
    let via = server.via(&proxy.url());
    proxy.faults.rate.store(4 << 20, Ordering::SeqCst);
    let mut child = upload_command(&via, &bucket, dir.path(), &args)
        .spawn()
        .unwrap();
    wait_for_bytes(&proxy, &mut child, size as u64 / 2).await;
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = std::time::Instant::now();
    let run = finished(child.wait_with_output().await.unwrap());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "exited {:?} after SIGTERM",
        stopped.elapsed()
    );
    assert_eq!(run.code, Some(75), "{run:?}");
    assert!(run.stderr.contains("SIGTERM"), "{run:?}");
    assert!(
        !proxy
            .faults
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE")),
        "nothing aborted"
    );
    let (_, stored) = stored_parts(&client, &bucket, "big.sync").await;
    assert!(stored > 0);

    proxy.faults.rate.store(0, Ordering::SeqCst);
    let run = finished(
        upload_command(&via, &bucket, dir.path(), &args)
            .output()
            .await
            .unwrap(),
    );
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("resuming upload"), "{run:?}");
    assert_eq!(get(&client, &bucket, "big.sync").await, data);
    assert!(open_uploads(&client, &bucket).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_upload_resumes_and_resends_little() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "resume").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    let size = 48 * MIB;
    let data = write_lines(&dir.path().join("big.sync"), size, 21, true);
    let size = data.len() as u64;
    let args = [
        "--part-size",
        "5Mi",
        "--concurrency",
        "2",
        "--state-file",
        state_file.to_str().unwrap(),
    ];
    // Slow enough to be caught mid-object: 4 MiB/s per connection.
    proxy.faults.rate.store(4 << 20, Ordering::SeqCst);
    let via = server.via(&proxy.url());
    let mut child = upload_command(&via, &bucket, dir.path(), &args)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.faults.bytes_up() < size * 3 / 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upload ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the upload made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    // What the dead process had already handed to the kernel still drains through the proxy.
    let mut sent_before = proxy.faults.bytes_up();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = proxy.faults.bytes_up();
        if now == sent_before {
            break;
        }
        sent_before = now;
    }
    assert!(sent_before < size, "killed mid-object");
    assert_eq!(
        open_uploads(&client, &bucket).await.len(),
        1,
        "the killed run left its upload open"
    );
    let recorded = std::fs::read_to_string(&state_file).unwrap();
    assert!(recorded.contains("big.sync"), "{recorded}");

    proxy.faults.rate.store(0, Ordering::SeqCst);
    let start_second = proxy.faults.bytes_up();
    let run = upload_command(&via, &bucket, dir.path(), &args)
        .output()
        .await
        .unwrap();
    let run = finished(run);
    assert!(run.success, "{run:?}");
    let sent_after = proxy.faults.bytes_up() - start_second;
    let resent = (sent_before + sent_after).saturating_sub(size);
    eprintln!(
        "object {size} bytes: first run sent {sent_before}, second {sent_after}, re-sent {resent}"
    );
    assert!(
        resent < sent_before / 4,
        "re-sent {resent} of {sent_before} bytes already sent (second run sent {sent_after})"
    );
    assert!(run.stderr.contains("resuming upload"), "{run:?}");
    assert_eq!(get(&client, &bucket, "big.sync").await, data);
    assert!(open_uploads(&client, &bucket).await.is_empty());
    assert!(
        !std::fs::read_to_string(&state_file)
            .unwrap()
            .contains("big.sync")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_upload_id_starts_the_object_afresh() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "expired").await;
    let dir = source_dir();
    let data = write_random(&dir.path().join("x.bin"), 11 * MIB, 31);
    // A state file naming an upload that no longer exists (aborted, or expired by a lifecycle rule).
    let created = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("x.bin")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap().to_string();
    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key("x.bin")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    std::fs::write(
        &state_file,
        format!(r#"{{"uploads": {{"x.bin": "{upload_id}"}}}}"#),
    )
    .unwrap();
    let run = upload(
        &server,
        &bucket,
        dir.path(),
        &[
            "--split-on",
            "bytes",
            "--part-size",
            "5Mi",
            "--state-file",
            state_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("starting the object afresh"), "{run:?}");
    assert_eq!(get(&client, &bucket, "x.bin").await, data);
}

/// A second upload of a key that nobody recorded (a CreateMultipartUpload whose answer was lost
/// when the server restarted, sent again) is aborted once the object is delivered: nothing of
/// the delivery stays open in the bucket. An upload of another key is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_upload_of_a_delivered_key_is_aborted() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "strays").await;
    let dir = source_dir();
    let data = write_random(&dir.path().join("x.bin"), 11 * MIB, 37);
    for key in ["x.bin", "x.bin.other"] {
        client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let run = upload(
        &server,
        &bucket,
        dir.path(),
        &["--split-on", "bytes", "--part-size", "5Mi"],
    )
    .await;
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("aborted a stray upload"), "{run:?}");
    assert_eq!(get(&client, &bucket, "x.bin").await, data);
    let left = open_uploads(&client, &bucket).await;
    assert!(
        left.len() == 1 && left[0].starts_with("x.bin.other "),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_aborted_mid_run_starts_the_object_afresh() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "vanished").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let data = write_random(&dir.path().join("y.bin"), 24 * MIB, 41);
    proxy.faults.rate.store(4 << 20, Ordering::SeqCst);
    let child = upload_command(
        &server.via(&proxy.url()),
        &bucket,
        dir.path(),
        &[
            "--split-on",
            "bytes",
            "--part-size",
            "5Mi",
            "--concurrency",
            "2",
        ],
    )
    .spawn()
    .unwrap();
    // Someone aborts the upload between parts. (Aborting while a part streams in makes versitygw
    // 1.8 recreate the upload without its checksum mode, so later parts and the completion see
    // a broken upload instead of NoSuchUpload: the proxy holds new parts while the abort lands.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let upload_id = loop {
        let open = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        if let Some(upload) = open.uploads().first()
            && proxy.faults.bytes_up() > 6 * MIB as u64
        {
            break upload.upload_id().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no upload started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    proxy.faults.hold_parts.store(true, Ordering::SeqCst);
    proxy.faults.rate.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key("y.bin")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    proxy.faults.hold_parts.store(false, Ordering::SeqCst);
    let run = finished(child.wait_with_output().await.unwrap());
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("starting the object afresh"), "{run:?}");
    assert_eq!(get(&client, &bucket, "y.bin").await, data);
    assert!(open_uploads(&client, &bucket).await.is_empty());
}

/// Bytes the uploader read from its source (from its one-line report).
fn bytes_read(run: &Run) -> u64 {
    let at = run.stdout.find("read ").expect("report line") + 5;
    run.stdout[at..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("bytes read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_most_of_a_delivery_reads_little_again() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "reread").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    let files = 120;
    let mut total = 0u64;
    for i in 0..files {
        total +=
            write_lines(&dir.path().join(format!("f{i:03}.sync")), 400_000, i, true).len() as u64;
    }
    let args = ["--concurrency", "4", "--manifest"];
    let via = server.via(&proxy.url());
    proxy.faults.rate.store(4 << 20, Ordering::SeqCst);
    let mut child = upload_command(&via, &bucket, dir.path(), &args)
        .spawn()
        .unwrap();
    wait_for_bytes(&proxy, &mut child, total * 4 / 5).await;
    child.start_kill().unwrap(); // SIGKILL: nothing recorded but what is in the bucket
    child.wait().await.unwrap();
    let delivered: u64 = list(&client, &bucket, "")
        .await
        .iter()
        .map(|(_, size, _)| *size)
        .sum();
    assert!(
        delivered > total / 2 && delivered < total,
        "{delivered} of {total}"
    );

    proxy.faults.rate.store(0, Ordering::SeqCst);
    let run = finished(
        upload_command(&via, &bucket, dir.path(), &args)
            .output()
            .await
            .unwrap(),
    );
    assert!(run.success, "{run:?}");
    let read = bytes_read(&run);
    let read_again = read.saturating_sub(total - delivered);
    eprintln!(
        "delivered {delivered} of {total} before the retry; it read {read}, {read_again} of them again"
    );
    assert!(
        read_again < delivered / 20,
        "read {read_again} of the {delivered} delivered bytes again"
    );
    // The manifest still has every count, from the objects' own metadata.
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&client, &bucket, "manifest.json").await).unwrap();
    let records = manifest["Totals"]["NumRecords"].as_u64().unwrap();
    let mut expected = 0;
    for i in 0..files {
        expected += count_lines(&std::fs::read(dir.path().join(format!("f{i:03}.sync"))).unwrap());
    }
    assert_eq!(records, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_source_file_is_a_permanent_failure_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "unreadable").await;
    let dir = source_dir();
    write_lines(&dir.path().join("ok.sync"), 4000, 5, true);
    let secret = dir.path().join("locked.sync");
    write_lines(&secret, 4000, 6, true);
    // Readable by nobody but its owner; the uploader runs as another user (as pods do).
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tempfile::tempdir().unwrap();
    std::fs::set_permissions(log.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = log.path().join("termination-log");
    let plain = upload_command(
        &server,
        &bucket,
        dir.path(),
        &["--termination-log", log.to_str().unwrap()],
    );
    let plain = plain.as_std();
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(plain.get_program())
        .args(plain.get_args())
        .envs(plain.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .kill_on_drop(true);
    let run = finished(cmd.output().await.unwrap());
    assert_eq!(run.code, Some(78), "a permanent failure: {run:?}");
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.starts_with("failed: SourceUnreadable: failed to read locked.sync"),
        "{message}"
    );
    assert!(message.contains("ermission denied"), "{message}");
    assert!(list(&client, &bucket, "locked").await.is_empty());
}
