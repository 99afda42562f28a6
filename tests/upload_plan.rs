//! `outbound plan` as a user runs it: the table and JSON outputs, part sizes (grown for large
//! objects unless given), and refusals (split size above 1Ti, a line longer than the split size,
//! an uploader without I/O threads). Needs no S3 server.

mod upload_support;

use upload_support::*;

fn plan(source: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
        .arg("plan")
        .arg("--source")
        .arg(source)
        .args(args)
        .env_remove("OUTBOUND_SPLIT_SIZE")
        .output()
        .expect("run outbound plan")
}

#[test]
fn plan_prints_keys_sizes_and_part_sizes() {
    let dir = source_dir();
    let data = write_lines(&dir.path().join("segments.sync.gz.txt"), 20 << 20, 1, true);
    let small = write_lines(&dir.path().join("d/small.sync"), 100, 2, true);
    let out = plan(
        dir.path(),
        &["--split-size", "8Mi", "--prefix", "p/", "--output", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects = json["objects"].as_array().unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "p/d/small.sync",
            "p/segments-001.sync.gz.txt",
            "p/segments-002.sync.gz.txt",
            "p/segments-003.sync.gz.txt"
        ]
    );
    let sizes: u64 = objects[1..]
        .iter()
        .map(|o| o["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, data.len() as u64);
    for o in &objects[1..] {
        assert!(o["size"].as_u64().unwrap() <= 8 << 20);
        // Below the default 16 MiB threshold: one PUT each.
        assert_eq!(o["multipart"], false);
        assert_eq!(o["partSize"], o["size"]);
    }
    assert_eq!(
        json["totalBytes"].as_u64().unwrap(),
        sizes + small.len() as u64
    );

    let out = plan(
        dir.path(),
        &[
            "--split-size",
            "8Mi",
            "--part-size",
            "5Mi",
            "--multipart-threshold",
            "5Mi",
        ],
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("KEY"), "{table}");
    assert!(
        table.contains("segments-002.sync.gz.txt") && table.contains("2 parts of 5.0 MiB"),
        "{table}"
    );
    assert!(table.contains("4 objects"), "{table}");
}

#[test]
fn plan_refuses_split_sizes_above_one_tib_and_long_lines() {
    let dir = source_dir();
    write(&dir.path().join("a.sync"), b"0123456789\n");
    let out = plan(dir.path(), &["--split-size", "1025Gi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("split size") && err.contains("1Ti"), "{err}");
    let out = plan(dir.path(), &["--split-size", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.sync") && err.contains("byte 0"), "{err}");
}

#[test]
fn upload_refuses_zero_io_threads_before_touching_anything() {
    let dir = source_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["upload", "--bucket", "b", "--io-threads", "0", "--source"])
        .arg(dir.path())
        .env_remove("OUTBOUND_IO_THREADS")
        .output()
        .expect("run outbound upload");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--io-threads") && err.contains("0"), "{err}");
}

#[test]
fn parts_grow_for_large_objects_unless_a_part_size_is_given() {
    let dir = source_dir();
    // A sparse 4 GiB file: planning it reads no data past the gzip check.
    let file = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    file.set_len(4 << 30).unwrap();
    let parts = |args: &[&str]| {
        let out = plan(dir.path(), &[&["--output", "json"], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = &json["objects"][0];
        (
            o["partSize"].as_u64().unwrap(),
            o["parts"].as_u64().unwrap(),
        )
    };
    assert_eq!(parts(&[]), (64 << 20, 64));
    assert_eq!(parts(&["--part-size", "16Mi"]), (16 << 20, 256));
}

/// Output that is not a terminal (a pipe, here) carries no colour codes, logs included (before,
/// a failed upload's piped log held dozens); NO_COLOR turns them off on a terminal too (the same
/// switch).
#[test]
fn piped_output_has_no_colour_codes() {
    let dir = source_dir();
    write_lines(&dir.path().join("a.sync"), 1 << 10, 1, true);
    // An upload to a port nobody listens on: it logs, fails at once and exits.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["upload", "--bucket", "b", "--force-path-style"])
        .args([
            "--endpoint",
            "http://127.0.0.1:1",
            "--max-attempts",
            "1",
            "--part-retries",
            "0",
        ])
        .arg("--source")
        .arg(dir.path())
        .env("AWS_ACCESS_KEY_ID", "a")
        .env("AWS_SECRET_ACCESS_KEY", "b")
        .env("OUTBOUND_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .expect("run outbound upload");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().count() > 5,
        "too little logged to check: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in piped logs: {stderr:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
}

/// On a terminal (a pseudo-terminal from `script`), `outbound plan` draws a progress bar of the
/// files and bytes planned; through a pipe it prints the table and no escape code.
#[test]
fn plan_on_a_terminal_shows_progress_and_through_a_pipe_none() {
    let dir = source_dir();
    write_lines(&dir.path().join("a.sync"), 20 << 20, 1, true);
    write_lines(&dir.path().join("d/b.sync"), 100, 2, true);
    let piped = plan(dir.path(), &["--split-size", "8Mi"]);
    assert!(piped.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&piped.stdout),
        String::from_utf8_lossy(&piped.stderr),
    );
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "escape codes through a pipe: {stdout}{stderr}"
    );
    assert!(stdout.contains("a-001.sync"), "{stdout}");

    let line = format!(
        "'{}' plan --source '{}' --split-size 8Mi",
        env!("CARGO_BIN_EXE_outbound"),
        dir.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("OUTBOUND_SPLIT_SIZE")
        .output()
        .expect("script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2/2 files planned, 4 objects"),
        "no progress bar with the files and objects: {text:?}"
    );
    assert!(text.contains("MiB"), "no bytes on the bar: {text:?}");
    assert!(
        text.contains('\u{1b}'),
        "a terminal gets a live bar: {text:?}"
    );
    assert!(text.contains("a-003.sync"), "and the table: {text:?}");
}
