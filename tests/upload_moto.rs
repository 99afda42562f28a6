//! The uploader against moto with IAM enforced: wrong keys, a missing bucket, a principal without
//! permission and a wrong ExternalId give errors that name the cause.

mod upload_support;

use std::time::{SystemTime, UNIX_EPOCH};

use upload_support::*;

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// A source with one small file and one multipart-sized file.
fn source() -> tempfile::TempDir {
    let dir = source_dir();
    write_lines(&dir.path().join("small.sync"), 1000, 1, true);
    dir
}

fn assert_fails_naming(run: &Run, needles: &[&str]) {
    assert!(!run.success, "{run:?}");
    for needle in needles {
        assert!(run.stderr.contains(needle), "{needle:?} missing: {run:?}");
    }
    assert!(
        !run.stderr.contains(&moto().secret_key),
        "a secret leaked into the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_missing_bucket_and_access_denied_name_the_cause() {
    let admin = moto();
    let client = admin.client();
    let bucket = new_bucket(&client, "moto").await;
    let dir = source();
    let args: [&str; 0] = [];

    let unknown = Server {
        access_key: "AKIAIOSFODNN7EXAMPLE".into(),
        ..admin.clone()
    };
    let run = upload(&unknown, &bucket, dir.path(), &args).await;
    assert_fails_naming(&run, &["InvalidAccessKeyId", &bucket, "small.sync"]);

    let wrong_secret = Server {
        secret_key: "not-the-secret".into(),
        ..admin.clone()
    };
    let run = upload(&wrong_secret, &bucket, dir.path(), &args).await;
    assert_fails_naming(&run, &["SignatureDoesNotMatch", "small.sync"]);

    let missing = unique("missing");
    let run = upload(&admin, &missing, dir.path(), &args).await;
    assert_fails_naming(&run, &["NoSuchBucket", &missing]);

    // A user with keys and no policy at all.
    let user = unique("nopolicy");
    aws(&admin, &["iam", "create-user", "--user-name", &user]);
    let key = aws(&admin, &["iam", "create-access-key", "--user-name", &user]);
    let denied = Server {
        access_key: key["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        secret_key: key["AccessKey"]["SecretAccessKey"].as_str().unwrap().into(),
        ..admin.clone()
    };
    let run = upload(&denied, &bucket, dir.path(), &args).await;
    assert_fails_naming(&run, &["AccessDenied", "small.sync", "403"]);
    assert!(
        list(&client, &bucket, "").await.is_empty(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_with_a_wrong_external_id_is_denied() {
    let admin = moto();
    let client = admin.client();
    let bucket = new_bucket(&client, "role").await;
    let dir = source();
    let role = unique("outbound");
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "right-id"}},
        }],
    });
    let created = aws(
        &admin,
        &[
            "iam",
            "create-role",
            "--role-name",
            &role,
            "--assume-role-policy-document",
            &trust.to_string(),
        ],
    );
    let arn = created["Role"]["Arn"].as_str().unwrap().to_string();
    let run = upload(
        &admin,
        &bucket,
        dir.path(),
        &[
            "--credentials",
            "assume-role",
            "--role-arn",
            &arn,
            "--external-id",
            "wrong-id",
        ],
    )
    .await;
    assert_fails_naming(&run, &["AccessDenied"]);
    assert!(list(&client, &bucket, "").await.is_empty());
}
