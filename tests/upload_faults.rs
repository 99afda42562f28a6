//! The uploader through a fault-injecting proxy in front of versitygw: resets, 503 SlowDown and
//! stalls heal; faults that never heal fail cleanly with no open multipart upload; a SIGKILLed
//! upload resumes, re-sending little; the manifest is the last write.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_that_never_heal_fail_clearly_and_leave_no_upload_open() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "neverheal").await;
    let proxy = Proxy::start(&server.endpoint).await;
    let dir = source_dir();
    write_random(&dir.path().join("big.bin"), 16 * MIB, 13);
    proxy.faults.parts_always_fail.store(true, Ordering::SeqCst);

    let started = std::time::Instant::now();
    let log = dir.path().join("termination-log");
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
            "2",
            "--include",
            "*.bin",
            "--termination-log",
            log.to_str().unwrap(),
        ],
    )
    .env("OUTBOUND_MAX_ATTEMPTS", "2")
    .env("OUTBOUND_PART_RETRIES", "2")
    .output()
    .await
    .unwrap();
    let run = finished(run);
    assert!(!run.success, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(90));
    let message = std::fs::read_to_string(&log).unwrap();
    assert_eq!(message.lines().count(), 1, "{message}");
    for needle in ["failed to upload part", "big.bin", "SlowDown", "503"] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message:?}"
        );
    }
    assert!(
        open_uploads(&client, &bucket).await.is_empty(),
        "no multipart upload left open"
    );
    assert!(list(&client, &bucket, "").await.is_empty());
    // It gave up on the parts and aborted: the proxy saw the DELETE.
    assert!(
        proxy
            .faults
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE") && r.contains("uploadId="))
    );
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
