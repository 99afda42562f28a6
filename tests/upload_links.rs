//! The uploader against versitygw with links in the source folder: a link out of it (a token, a
//! system file, a folder) fails the run naming the file, and nothing reaches the bucket; a link
//! inside is delivered as the file it names.

mod upload_support;

use std::os::unix::fs::symlink;

use upload_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_source_are_refused_and_nothing_is_delivered() {
    let server = versitygw();
    let client = server.client();
    let outside = tempfile::tempdir().unwrap();
    let token = outside.path().join("token");
    write(&token, b"eyJhbGciOiJSUzI1NiJ9.not-for-the-bucket\n");
    let cases: [(&str, &std::path::Path); 3] = [
        ("token.sync", &token),
        ("passwd.sync", std::path::Path::new("/etc/passwd")),
        ("secrets", outside.path()),
    ];
    for (link, target) in cases {
        let bucket = new_bucket(&client, "links").await;
        let dir = source_dir();
        write_lines(&dir.path().join("a.sync"), 1000, 1, true);
        symlink(target, dir.path().join(link)).unwrap();
        let report = outside.path().join(format!("{link}.termination-log"));
        let args = [
            "--prefix",
            "in/",
            "--termination-log",
            report.to_str().unwrap(),
        ];
        let run = upload(&server, &bucket, dir.path(), &args).await;
        assert!(!run.success, "{link}: {run:?}");
        // The final line (the pod's termination message) names the reason and the file.
        let line = std::fs::read_to_string(&report).unwrap();
        assert!(
            line.starts_with(&format!(
                "failed: SourceOutsideVolume: source file {link} is a link to"
            )) && line.contains("outside the source folder"),
            "{link}: {line}"
        );
        // Refused before any request: not even the regular file went up.
        assert!(list(&client, &bucket, "").await.is_empty(), "{link}");
        assert_eq!(open_uploads(&client, &bucket).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_inside_the_source_is_delivered_under_its_own_name() {
    let server = versitygw();
    let client = server.client();
    let bucket = new_bucket(&client, "links-in").await;
    let dir = source_dir();
    let data = write_lines(&dir.path().join("days/2026-11-27.sync"), 1000, 2, true);
    symlink("days/2026-11-27.sync", dir.path().join("latest.sync")).unwrap();
    let run = upload(&server, &bucket, dir.path(), &["--prefix", "in/"]).await;
    assert!(run.success, "{run:?}");
    let keys: Vec<String> = list(&client, &bucket, "in/")
        .await
        .into_iter()
        .map(|(k, _, _)| k)
        .filter(|k| k.ends_with(".sync"))
        .collect();
    assert_eq!(keys, ["in/days/2026-11-27.sync", "in/latest.sync"]);
    assert_eq!(get(&client, &bucket, "in/latest.sync").await, data);
}
