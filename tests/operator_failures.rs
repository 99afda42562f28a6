//! The operator on a bad day, on the ground: each permanent failure ends its delivery `Failed`
//! after one pod with its own reason, naming the file or key; an ended delivery never runs
//! again; deleting a delivery ends within a bound even when its uploads cannot be aborted; an
//! upload created but never recorded is still aborted.

mod operator_support;
#[path = "upload_support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination, OutboundShard};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn destination_yaml(name: &str, bucket: &str, endpoint: &str, credentials: &str) -> String {
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: {bucket}, region: us-east-1, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {credentials}\n"
    )
}

fn delivery_yaml(name: &str, destination: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: {name}}}\nspec:\n  destinationRef: {{name: {destination}}}\n  source: {{volume: {{claimName: exports, path: {source}}}}}\n{extra}"
    )
}

/// Lines of 100 bytes each.
fn write_lines(path: &std::path::Path, lines: usize) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..lines {
        writeln!(f, "{i:010}{}", "x".repeat(89)).unwrap();
    }
    f.flush().unwrap();
}

async fn keyed(world: &World, name: &str, bucket: &str, endpoint: &str, key: &str, secret: &str) {
    let secret_name = format!("{name}-keys");
    world
        .secret(
            &secret_name,
            &[
                ("AWS_ACCESS_KEY_ID", key),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            name,
            bucket,
            endpoint,
            &format!("{{secret: {{name: {secret_name}}}}}"),
        ))
        .await
        .unwrap();
}

/// A test's stage: a world with the operator running, a new versitygw bucket, the claim
/// `exports` (its folder) and the destination `acme` (keys in a Secret), Ready, writing through a
/// fault proxy that lets `rate` bytes a second through each connection (0: no limit).
struct Stage {
    world: World,
    gw: aws_sdk_s3::Client,
    bkt: String,
    folder: std::path::PathBuf,
    proxy: proxy::Proxy,
}

async fn stage(name: &str, bucket_prefix: &str, rate: u64) -> Stage {
    let mut world = World::new(name).await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("{bucket_prefix}-{}", suffix());
    gw.create_bucket().bucket(&bkt).send().await.unwrap();
    let folder = world.volume("exports").await;
    let proxy = proxy::Proxy::start(&endpoint).await;
    proxy.faults.rate.store(rate, Ordering::SeqCst);
    keyed(&world, "acme", &bkt, &proxy.url(), &key, &secret).await;
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    Stage {
        world,
        gw,
        bkt,
        folder,
        proxy,
    }
}

/// A moto user whose policy allows the probe (its probe objects and multipart upload, listing,
/// the bucket) and nothing else: the destination is Ready, and every PutObject of a delivery is AccessDenied.
fn moto_probe_only_user(env: &GroundEnv, name: &str, bucket: &str) -> (String, String) {
    let python = std::env::var("HOME").unwrap() + "/.cache/outbound/venv/bin/python";
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": format!("arn:aws:s3:::{bucket}")},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"], "Resource": format!("arn:aws:s3:::{bucket}/.outbound-probe-*")},
    ]});
    let script = format!(
        "import boto3,json\niam=boto3.client('iam',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{}',aws_secret_access_key='{}')\niam.create_user(UserName='{name}')\niam.put_user_policy(UserName='{name}',PolicyName='probe-only',PolicyDocument={})\nk=iam.create_access_key(UserName='{name}')['AccessKey']\nprint(json.dumps([k['AccessKeyId'],k['SecretAccessKey']]))",
        env.moto_endpoint,
        env.moto_access_key,
        env.moto_secret_key,
        serde_json::to_string(&policy.to_string()).unwrap()
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keys json")
}

/// Whether a request the proxy saw aborts a delivery's multipart upload (the destination probe
/// opens and aborts one of its own at a `.outbound-probe-` key every time it runs).
fn is_abort_of_a_delivery(request: &str) -> bool {
    request.starts_with("DELETE")
        && request.contains("uploadId=")
        && !request.contains(".outbound-probe-")
}

/// The two tests that move the most bytes take turns: together on two cores they starve the
/// other tests of this file (which run beside them) of time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn job_of(world: &World, delivery: &str) -> Option<Job> {
    let jobs = world
        .api::<Job>()
        .list(&ListParams::default().labels(&format!("outbound.dev/delivery={delivery}")))
        .await
        .unwrap();
    jobs.items.into_iter().next()
}

#[tokio::test]
async fn each_permanent_failure_fails_its_delivery_after_one_pod_with_its_reason() {
    let mut world = World::new("permanent").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("perm-{}", suffix());
    gw.create_bucket().bucket(&bkt).send().await.unwrap();
    let gone = format!("gone-{}", suffix());
    gw.create_bucket().bucket(&gone).send().await.unwrap();
    let moto = s3(
        &env.moto_endpoint,
        "us-east-1",
        &env.moto_access_key,
        &env.moto_secret_key,
    )
    .await;
    let denied_bkt = format!("denied-{}", suffix());
    moto.create_bucket()
        .bucket(&denied_bkt)
        .send()
        .await
        .unwrap();
    let (denied_key, denied_secret) =
        moto_probe_only_user(env, &format!("probe-only-{}", suffix()), &denied_bkt);
    let moto_endpoint = env.moto_endpoint.clone();

    let folder = world.volume("exports").await;
    // A line of 3 MiB against a split size of 1Mi.
    std::fs::create_dir_all(folder.join("long")).unwrap();
    std::fs::write(
        folder.join("long/wide.sync"),
        [vec![b'x'; 3 << 20], b"\n".to_vec()].concat(),
    )
    .unwrap();
    // A zstd frame and a Parquet file (magic bytes) larger than the split size, in lines mode.
    let body: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(folder.join("zstd")).unwrap();
    std::fs::write(
        folder.join("zstd/segments.sync.zst"),
        [&[0x28, 0xb5, 0x2f, 0xfd][..], &body].concat(),
    )
    .unwrap();
    std::fs::create_dir_all(folder.join("parquet")).unwrap();
    std::fs::write(
        folder.join("parquet/events.parquet"),
        [&b"PAR1"[..], &body, b"PAR1"].concat(),
    )
    .unwrap();
    // Plain small files for the destinations that refuse them.
    for dir in ["plain", "conflict", "glob"] {
        write_lines(&folder.join(format!("{dir}/part.sync")), 1000);
    }
    // A different object already at the key a delivery will write.
    gw.put_object()
        .bucket(&bkt)
        .key("conflict/part.sync")
        .body(b"someone else's bytes\n".to_vec().into())
        .send()
        .await
        .unwrap();
    // A file that grows while it is sent (through a slow proxy).
    write_lines(&folder.join("growing/big.sync"), 200_000);
    let slow = proxy::Proxy::start(&endpoint).await;
    slow.faults.rate.store(2 << 20, Ordering::SeqCst);

    keyed(&world, "gw", &bkt, &endpoint, &key, &secret).await;
    keyed(&world, "slow", &bkt, &slow.url(), &key, &secret).await;
    keyed(&world, "nobucket", &gone, &endpoint, &key, &secret).await;
    keyed(
        &world,
        "denied",
        &denied_bkt,
        &moto_endpoint,
        &denied_key,
        &denied_secret,
    )
    .await;
    world.start_operator();
    for d in ["gw", "slow", "nobucket", "denied"] {
        world.wait_destination(d, "True", "Validated").await;
    }
    let prefix = |p: &str| format!("  keyPrefix: {p}/\n  backoffLimit: 3\n");
    // The delivery to the bucket about to go gets its Job (suspended) while its destination is
    // still Ready: on a busy machine the destination's next probe (20 s on) could otherwise find
    // the bucket gone first and hold the delivery back (DestinationNotReady), so no pod would ever
    // meet NoSuchBucket. Applied again below without `suspend`, it runs.
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "no-bucket",
            "nobucket",
            "plain",
            &format!("{}  suspend: true\n", prefix("plain")),
        ))
        .await
        .unwrap();
    wait_for(
        "the no-bucket delivery's Job",
        Duration::from_secs(60),
        || async { job_of(&world, "no-bucket").await.map(|_| ()) },
        || world.diagnose(),
    )
    .await;
    // Then the bucket goes. A probe may have its probe object in it at that moment
    // (BucketNotEmpty): try again once the probe has deleted it.
    wait_for(
        "the bucket deleted",
        Duration::from_secs(30),
        || async { gw.delete_bucket().bucket(&gone).send().await.ok() },
        || world.diagnose(),
    )
    .await;

    // (delivery, destination, source folder, extra spec, reason, words of the message)
    type Case<'a> = (&'a str, &'a str, &'a str, String, &'a str, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "long-line",
            "gw",
            "long",
            format!("{}  splitSize: 1Mi\n", prefix("long")),
            "LineTooLong",
            &["wide.sync", "longer than the split size"],
        ),
        (
            "zstd",
            "gw",
            "zstd",
            format!("{}  splitSize: 1Mi\n", prefix("zstd")),
            "UnsplittableSource",
            &["segments.sync.zst", "zstd", "splitOn: bytes"],
        ),
        (
            "parquet",
            "gw",
            "parquet",
            format!("{}  splitSize: 1Mi\n", prefix("parquet")),
            "UnsplittableSource",
            &["events.parquet", "Parquet", "splitOn: bytes"],
        ),
        (
            "no-bucket",
            "nobucket",
            "plain",
            prefix("plain"),
            "NoSuchBucket",
            &["part.sync", "NoSuchBucket"],
        ),
        (
            "denied",
            "denied",
            "plain",
            prefix("plain"),
            "AccessDenied",
            &["part.sync", "AccessDenied"],
        ),
        (
            "conflict",
            "gw",
            "conflict",
            prefix("conflict"),
            "ObjectConflict",
            &["conflict/part.sync", "already exists"],
        ),
        (
            "bad-glob",
            "gw",
            "glob",
            prefix("glob"),
            "InvalidGlob",
            &["[unclosed"],
        ),
        (
            "growing",
            "slow",
            "growing",
            prefix("growing"),
            "SourceChanged",
            &["big.sync", "changed"],
        ),
    ];
    for (name, dest, source, extra, _, _) in &cases {
        let mut yaml = delivery_yaml(name, dest, source, extra);
        if *name == "bad-glob" {
            yaml = yaml.replace(
                &format!("path: {source}}}"),
                &format!("path: {source}, include: [\"[unclosed\"]}}"),
            );
        }
        world.apply_yaml::<OutboundDelivery>(&yaml).await.unwrap();
    }
    // Once the growing file's upload is under way, append to it.
    wait_for(
        "the growing file's upload under way",
        Duration::from_secs(300),
        || async { (slow.faults.bytes_up() > 1 << 20).then_some(()) },
        || world.diagnose(),
    )
    .await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(folder.join("growing/big.sync"))
            .unwrap();
        writeln!(f, "one more line").unwrap();
    }

    for (name, _, _, _, reason, words) in &cases {
        let d = world
            .wait_delivery(name, "Failed", Some(reason), Duration::from_secs(180))
            .await;
        let status = d.status.unwrap();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        for word in *words {
            assert!(
                ready.message.contains(word),
                "{name}: {word:?} missing from {:?}",
                ready.message
            );
        }
        let failed = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .unwrap();
        assert_eq!(failed.status, "True", "{name}");
        // One pod, no retry burned on an error that cannot heal.
        let job = job_of(&world, name).await.expect("the Job is kept");
        let job_status = job.status.unwrap();
        assert_eq!(
            job_status.failed.unwrap_or(0),
            1,
            "{name}: exactly one pod ran: {job_status:?}"
        );
        assert_eq!(status.attempts, Some(1), "{name}");
    }
    // A failed delivery's uploads are aborted by the operator: the growing file's one is gone.
    wait_for(
        "no open upload left by the failed deliveries",
        Duration::from_secs(60),
        || async { open_uploads(&gw, &bkt).await.is_empty().then_some(()) },
        || world.diagnose(),
    )
    .await;
    world.cleanup().await;
}

#[tokio::test]
async fn an_ended_delivery_never_runs_again() {
    let Stage {
        mut world,
        folder,
        proxy,
        gw,
        bkt,
    } = stage("terminal", "term", 0).await;
    write_lines(&folder.join("daily/a.sync"), 5000);
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("once", "acme", "daily", ""))
        .await
        .unwrap();
    let done = world
        .wait_delivery("once", "Succeeded", None, Duration::from_secs(120))
        .await;
    let job_name = done.status.as_ref().unwrap().job_name.clone().unwrap();
    let writes = || {
        proxy
            .faults
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("PUT") || r.starts_with("POST"))
            // The destination's probes write (and remove) probe objects of their own.
            .filter(|r| !r.contains(".outbound-probe-") && r != "POST /")
            .count()
    };
    let writes_when_done = writes();

    // The Job goes (a TTL, a person), and someone points status.jobName elsewhere.
    world
        .api::<Job>()
        .delete(&job_name, &DeleteParams::background())
        .await
        .unwrap();
    let status = serde_json::json!({"apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDelivery",
        "status": {"jobName": "odel-somebody-else"}});
    world
        .api::<OutboundDelivery>()
        .patch_status(
            "once",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    // A later change to the destination makes the operator look at every delivery again.
    world
        .api::<OutboundDestination>()
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let jobs = world
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let alive: Vec<_> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        assert!(
            alive.is_empty(),
            "a new Job for an ended delivery: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(writes(), writes_when_done, "no byte sent again");
    let d = world.delivery("once").await;
    assert_eq!(d.status.unwrap().phase.unwrap().as_str(), "Succeeded");

    // An upload the sweep at the end never saw (as if the operator had stopped between the end
    // and its sweep): found in the shard's journal when the operator starts again, aborted, and
    // cleared from the journal so that no later start aborts it again.
    let left = gw
        .create_multipart_upload()
        .bucket(&bkt)
        .key("left-open.sync")
        .send()
        .await
        .unwrap();
    let shard = outbound::api::shard_name(&job_name, 0);
    let journal = serde_json::json!({"apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundShard",
        "status": {"uploads": [{"key": "left-open.sync", "uploadId": left.upload_id().unwrap()}]}});
    world.kill_operator();
    world
        .api::<OutboundShard>()
        .patch_status(
            &shard,
            &PatchParams::apply("outbound-uploader-0").force(),
            &Patch::Apply(&journal),
        )
        .await
        .unwrap();
    world.start_operator();
    wait_for(
        "the left upload aborted and forgotten",
        Duration::from_secs(60),
        || async {
            let cleared = world.shards("once").await[0].uploads.is_empty();
            (cleared && open_uploads(&gw, &bkt).await.is_empty()).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(writes(), writes_when_done, "still no byte sent again");
    world.cleanup().await;
}

/// Adds `image -> executable` to the ground's image map (the node re-reads it per pod), under
/// a lock shared with the other tests that do so.
fn map_image(image: &str, executable: &std::path::Path) {
    let state = std::env::var("GROUND_STATE").expect("GROUND_STATE from the ground's env");
    let path = std::path::Path::new(&state).join("images.json");
    let lock = std::fs::File::create(path.with_extension("lock")).unwrap();
    let status = std::process::Command::new("flock")
        .arg("-x")
        .arg(path.with_extension("lock"))
        .arg("python3")
        .arg("-c")
        .arg(format!(
            "import json,os\np='{}'\nm=json.load(open(p))\nm['{image}']='{}'\nopen(p+'.tmp','w').write(json.dumps(m))\nos.replace(p+'.tmp',p)",
            path.display(),
            executable.display()
        ))
        .status()
        .unwrap();
    drop(lock);
    assert!(status.success());
}

#[tokio::test]
async fn deletion_ends_within_the_bound_and_orphans_are_aborted() {
    let mut world = World::new("deletion").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("del-{}", suffix());
    gw.create_bucket().bucket(&bkt).send().await.unwrap();
    let folder = world.volume("exports").await;
    write_lines(&folder.join("big/big.sync"), 400_000);
    write_lines(&folder.join("orphan/big.sync"), 400_000);
    let slow = proxy::Proxy::start(&endpoint).await;
    slow.faults.rate.store(2 << 20, Ordering::SeqCst);
    keyed(&world, "acme", &bkt, &slow.url(), &key, &secret).await;

    // Pods of the image `outbound-orphan-hook` die between creating an upload and recording it.
    let hook = world.dir.path().join("orphan-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nOUTBOUND_TEST_EXIT_AFTER_CREATE=1 exec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_outbound")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let image = format!("outbound-orphan-hook-{}", suffix());
    map_image(&image, &hook);

    world.start_operator_with_env(&[("OUTBOUND_CLEANUP_TIMEOUT", "15s")]);
    world.wait_destination("acme", "True", "Validated").await;

    // 1. Mid-upload, the Secret goes; then the delivery is deleted: the uploads cannot be
    // aborted, yet the delivery is gone within the bound, and an event names what is left.
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "stuck",
            "acme",
            "big",
            "  keyPrefix: big/\n",
        ))
        .await
        .unwrap();
    let upload_id = wait_for(
        "an upload recorded",
        Duration::from_secs(120),
        || async {
            world
                .shards("stuck")
                .await
                .iter()
                .flat_map(|s| s.uploads.iter())
                .find(|u| !u.upload_id.is_empty())
                .map(|u| u.upload_id.clone())
        },
        || world.diagnose(),
    )
    .await;
    world
        .api::<Secret>()
        .delete("acme-keys", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    world
        .api::<OutboundDelivery>()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the delivery gone",
        Duration::from_secs(90),
        || async {
            world
                .api::<OutboundDelivery>()
                .get_opt("stuck")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert!(
        deleted.elapsed() < Duration::from_secs(60),
        "{:?}",
        deleted.elapsed()
    );
    let events = world
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let abandoned = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("AbortAbandoned"))
        .unwrap_or_else(|| panic!("no AbortAbandoned event: {:#?}", events.items));
    let note = abandoned.message.clone().unwrap_or_default();
    assert!(note.contains(&upload_id), "{note}");
    assert!(note.contains("big/big.sync"), "{note}");
    assert_eq!(abandoned.type_.as_deref(), Some("Warning"));
    // (Left open on purpose: the customer's lifecycle rule is the backstop.)
    let open = gw
        .list_multipart_uploads()
        .bucket(&bkt)
        .send()
        .await
        .unwrap();
    assert_eq!(open.uploads().len(), 1);
    assert_eq!(open.uploads()[0].upload_id(), Some(upload_id.as_str()));
    gw.abort_multipart_upload()
        .bucket(&bkt)
        .key("big/big.sync")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();

    // 2. An upload created but never recorded (the pod dies in between) is still aborted when
    // the delivery is deleted.
    keyed(&world, "acme", &bkt, &slow.url(), &key, &secret).await;
    world.wait_destination("acme", "True", "Validated").await;
    world.kill_operator();
    world.start_operator_with_env(&[
        ("OUTBOUND_CLEANUP_TIMEOUT", "15s"),
        ("OUTBOUND_UPLOADER_IMAGE", &image),
    ]);
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "orphan",
            "acme",
            "orphan",
            // The Job waits ~10 s before its next pod: the window in which the upload the first
            // pod created is known to nobody but its intent in the status.
            "  keyPrefix: orphan/\n",
        ))
        .await
        .unwrap();
    wait_for(
        "an upload the pod never recorded",
        Duration::from_secs(120),
        || async {
            let recorded = world
                .shards("orphan")
                .await
                .iter()
                .flat_map(|s| s.uploads.iter())
                .any(|u| !u.upload_id.is_empty());
            (!recorded && !open_uploads(&gw, &bkt).await.is_empty()).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world
        .api::<OutboundDelivery>()
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the orphan aborted and the delivery gone",
        Duration::from_secs(90),
        || async {
            let gone = world
                .api::<OutboundDelivery>()
                .get_opt("orphan")
                .await
                .unwrap()
                .is_none();
            (gone && open_uploads(&gw, &bkt).await.is_empty()).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world.cleanup().await;
}

#[tokio::test]
async fn status_writes_refused_for_a_minute_pause_the_delivery_and_abort_nothing() {
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy: slow,
    } = stage("apipause", "pause", 4 << 20).await;
    // Four multipart objects: new uploads keep starting while the API refuses the pod.
    for i in 0..4 {
        write_lines(&folder.join(format!("data/big{i}.sync")), 250_000);
    }
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("paused", "acme", "data", ""))
        .await
        .unwrap();
    wait_for(
        "an upload recorded",
        Duration::from_secs(120),
        || async {
            world
                .shards("paused")
                .await
                .iter()
                .any(|s| s.uploads.iter().any(|u| !u.upload_id.is_empty()))
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;

    // The API server refuses every write of this namespace's upload pods.
    let name = format!("deny-uploader-{}", world.ns);
    let user = format!("system:serviceaccount:{}:outbound-upload", world.ns);
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["outbound.dev"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["outboundshards", "outboundshards/status"]}]},
            "validations": [{"expression": format!("request.userInfo.username != '{user}'"),
                "message": "the API server is being upgraded"}],
        }
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    });
    let apply = |doc: serde_json::Value| {
        let out = std::process::Command::new("kubectl")
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(doc.to_string().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    apply(policy);
    apply(binding);
    let refused_from = std::time::Instant::now();
    // The API server loads a new policy within a second or two; from then on nothing lands.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = world.shards("paused").await;
    // For a minute, the pod's reports are refused: progress in the status stands still.
    while refused_from.elapsed() < Duration::from_secs(60) {
        let d = world.delivery("paused").await;
        let status = d.status.unwrap();
        assert!(
            status.phase.map(|p| p.as_str()) != Some("Failed"),
            "the delivery failed while the API refused its pod: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let during = world.shards("paused").await;
    assert_eq!(before, during, "no report got through the policy");
    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        let out = std::process::Command::new("kubectl")
            .args(["delete", kind, &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    slow.faults.rate.store(0, Ordering::SeqCst);
    world
        .wait_delivery("paused", "Succeeded", None, Duration::from_secs(240))
        .await;
    let requests = slow.faults.requests();
    assert!(
        !requests.iter().any(|r| is_abort_of_a_delivery(r)),
        "nothing aborted: {requests:#?}"
    );
    let job = job_of(&world, "paused").await.unwrap();
    assert_eq!(
        job.status.unwrap().failed.unwrap_or(0),
        0,
        "the pod paused, it did not fail"
    );
    for i in 0..4 {
        let key = format!("big{i}.sync");
        let got = gw
            .get_object()
            .bucket(&bkt)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(
            got.as_ref(),
            std::fs::read(folder.join(format!("data/{key}"))).unwrap(),
            "{key}"
        );
    }
    assert!(open_uploads(&gw, &bkt).await.is_empty());
    world.cleanup().await;
}

#[tokio::test]
async fn twenty_thousand_files_in_four_shards_keep_the_delivery_small_and_quiet() {
    use futures::StreamExt as _;
    let _turn = HEAVY.lock().await;
    let Stage {
        world,
        gw,
        bkt,
        folder,
        // Kept alive to the end (a `_` pattern would drop it, and the endpoint with it).
        proxy: _proxy,
    } = stage("many", "many", 0).await;
    let files = 20_000;
    let lines_each = 12;
    for i in 0..files {
        let dir = folder.join(format!("data/d{:02}", i % 50));
        if i < 50 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let body: String = (0..lines_each)
            .map(|l| format!("{i:06}-{l:02},segment,{}\n", i * 7 + l))
            .collect();
        std::fs::write(dir.join(format!("f{i:05}.sync")), body).unwrap();
    }

    // Every version of the delivery the API server stores, as a watch sees them.
    let api = world.api::<OutboundDelivery>();
    let watch = kube::runtime::watcher(
        api.clone(),
        kube::runtime::watcher::Config::default().fields("metadata.name=many"),
    );
    let sampler = tokio::spawn(async move {
        let mut versions = 0u64;
        let mut largest = 0usize;
        let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watch));
        while let Some(Ok(d)) = stream.next().await {
            versions += 1;
            largest = largest.max(serde_json::to_vec(&d).unwrap().len());
            let phase = d.status.as_ref().and_then(|s| s.phase);
            if phase.is_some_and(|p| matches!(p.as_str(), "Succeeded" | "Failed")) {
                break;
            }
        }
        (versions, largest)
    });
    let started = std::time::Instant::now();
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "many",
            "acme",
            "data",
            "  parallelism: 4\n",
        ))
        .await
        .unwrap();
    world
        .wait_delivery("many", "Succeeded", None, Duration::from_secs(900))
        .await;
    let elapsed = started.elapsed();
    let (versions, largest) = tokio::time::timeout(Duration::from_secs(30), sampler)
        .await
        .expect("the watch saw the end")
        .unwrap();
    let writes = audited_writes(&world.env, "outbounddeliveries", &world.ns, "many");
    let shards = world.shards("many").await;
    eprintln!(
        "20,000 files in {elapsed:?}: {versions} versions of the delivery, the largest {largest} bytes; {writes} writes to it in the audit log; {} shard objects",
        shards.len()
    );
    assert!(largest < 32 << 10, "the delivery grew to {largest} bytes");
    assert!(
        writes >= versions as usize - 1,
        "the audit log saw {writes} writes for {versions} versions"
    );
    assert!(
        writes as f64 <= elapsed.as_secs_f64().max(1.0),
        "{writes} writes in {elapsed:?}: more than one a second"
    );
    // The pods' journals are in four objects of their own, each finished.
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| s.finished && s.uploads.is_empty()));
    let manifest: serde_json::Value = serde_json::from_slice(
        &gw.get_object()
            .bucket(&bkt)
            .key("manifest.json")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes(),
    )
    .unwrap();
    assert_eq!(manifest["Totals"]["NumFiles"], files);
    assert_eq!(manifest["Totals"]["NumRecords"], files * lines_each);
    assert_eq!(manifest["Files"].as_array().unwrap().len(), files as usize);
    world.cleanup().await;
}

/// Kills a process of the ground by its pid file (the ground starts it again).
fn kill_ground_process(name: &str) {
    let state = std::env::var("GROUND_STATE").expect("GROUND_STATE from the ground's env");
    let pid = std::fs::read_to_string(format!("{state}/pids/{name}.pid")).unwrap();
    let out = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill {name}: {out:?}");
}

#[tokio::test]
async fn a_delivery_survives_chaos_byte_for_byte() {
    use k8s_openapi::api::core::v1::Pod;
    let _turn = HEAVY.lock().await;
    let Stage {
        mut world,
        gw,
        bkt,
        folder,
        proxy: slow,
    } = stage("chaos", "chaos", 3 << 20).await;
    // 2 GiB in 8 files of 256 MiB (2.7 million lines each).
    let files = 8;
    for i in 0..files {
        write_lines(&folder.join(format!("data/part{i}.sync")), 2_684_355);
    }
    let total: u64 = (0..files)
        .map(|i| {
            std::fs::metadata(folder.join(format!("data/part{i}.sync")))
                .unwrap()
                .len()
        })
        .sum();
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "chaos",
            "acme",
            "data",
            "  parallelism: 2\n  backoffLimit: 10\n",
        ))
        .await
        .unwrap();

    let pods_api = world.api::<Pod>();
    let delete_a_pod = async || {
        let pods = pods_api
            .list(&ListParams::default().labels("outbound.dev/delivery=chaos"))
            .await
            .unwrap()
            .items;
        let running: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        if running.is_empty() {
            return false;
        }
        let victim = running[rand::random_range(0..running.len())];
        pods_api
            .delete(
                &victim.metadata.name.clone().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .is_ok()
    };
    // Each disruption at a random point of its tenth of the delivery.
    let events = [
        "operator",
        "pod",
        "versitygw",
        "apiserver",
        "pod",
        "operator",
        "pod",
    ];
    let mut deleted_pods = 0;
    for (n, event) in events.iter().enumerate() {
        let at = total / 10 * (n as u64 + 1) + rand::random_range(0..total / 20);
        wait_for(
            &format!("{at} bytes sent before disrupting the {event}"),
            Duration::from_secs(300),
            || async { (slow.faults.bytes_up() >= at).then_some(()) },
            || world.diagnose(),
        )
        .await;
        eprintln!(
            "chaos: {event} at {} of {total} bytes",
            slow.faults.bytes_up()
        );
        match *event {
            "operator" => {
                world.kill_operator();
                world.start_operator();
            }
            "pod" => {
                // A pod may be between attempts: try again until one is running.
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !delete_a_pod().await {
                    assert!(std::time::Instant::now() < deadline, "no pod to delete");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                deleted_pods += 1;
            }
            "versitygw" => kill_ground_process("versitygw"),
            "apiserver" => kill_ground_process("kube-apiserver"),
            _ => unreachable!(),
        }
    }
    assert_eq!(deleted_pods, 3);
    world
        .wait_delivery("chaos", "Succeeded", None, Duration::from_secs(900))
        .await;
    let sent = slow.faults.bytes_up();
    eprintln!(
        "chaos: {total} bytes delivered, {sent} sent ({:.1}% re-sent)",
        (sent as f64 / total as f64 - 1.0) * 100.0
    );
    for i in 0..files {
        let key = format!("part{i}.sync");
        let got = gw
            .get_object()
            .bucket(&bkt)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let want = std::fs::read(folder.join(format!("data/{key}"))).unwrap();
        assert!(got.as_ref() == want.as_slice(), "{key} differs");
    }
    assert!(
        sent < total + total * 15 / 100,
        "re-sent {} of {total} bytes",
        sent.saturating_sub(total)
    );
    assert!(open_uploads(&gw, &bkt).await.is_empty());
    world.cleanup().await;
}

/// Bytes of the parts stored in every open upload of `bucket`.
async fn stored_in_open_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> (usize, u64) {
    let open = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let mut bytes = 0;
    for upload in open.uploads() {
        let parts = s3
            .list_parts()
            .bucket(bucket)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .send()
            .await
            .unwrap();
        bytes += parts
            .parts()
            .iter()
            .map(|p| p.size().unwrap_or(0) as u64)
            .sum::<u64>();
    }
    (open.uploads().len(), bytes)
}

#[tokio::test]
async fn a_storm_past_every_retry_fails_one_pod_and_the_next_resumes() {
    let _turn = HEAVY.lock().await;
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy,
    } = stage("storm", "storm", 4 << 20).await;
    // 1 GiB in two files, each split into 256 MiB objects.
    for i in 0..2 {
        write_lines(&folder.join(format!("data/segments{i}.sync")), 5_368_709);
    }
    let total: u64 = (0..2)
        .map(|i| {
            std::fs::metadata(folder.join(format!("data/segments{i}.sync")))
                .unwrap()
                .len()
        })
        .sum();
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "storm",
            "acme",
            "data",
            "  splitSize: 256Mi\n",
        ))
        .await
        .unwrap();
    wait_for(
        "half of the delivery sent",
        Duration::from_secs(300),
        || async { (proxy.faults.bytes_up() >= total / 2).then_some(()) },
        || world.diagnose(),
    )
    .await;
    // Every part is answered 503 SlowDown, for longer than the pod's retries last.
    proxy.faults.parts_always_fail.store(true, Ordering::SeqCst);
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let sent_before = proxy.faults.bytes_up();
    let job = wait_for(
        "the pod to give up and exit retryable",
        Duration::from_secs(300),
        || async {
            let job = job_of(&world, "storm").await?;
            (job.status.as_ref()?.failed.unwrap_or(0) >= 1).then_some(job)
        },
        || world.diagnose(),
    )
    .await;
    let pods = world
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(&ListParams::default().labels("outbound.dev/delivery=storm"))
        .await
        .unwrap()
        .items;
    let failed = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .expect("the failed pod");
    let terminated = failed
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(terminated.exit_code, 75, "{terminated:?}");
    let message = terminated.message.unwrap_or_default();
    assert!(message.contains("S3Unavailable"), "{message}");
    assert!(message.contains("SlowDown"), "{message}");
    assert!(job.status.unwrap().failed == Some(1));
    // The uploads stay open with their parts: nothing was aborted.
    let (open, stored) = stored_in_open_uploads(&gw, &bkt).await;
    assert!(open >= 1, "the uploads stay open");
    assert!(stored > 0);
    assert!(
        !proxy
            .faults
            .requests()
            .iter()
            .any(|r| is_abort_of_a_delivery(r)),
        "no abort"
    );
    // What the bucket holds when the storm ends: whole objects and the open uploads' parts.
    let complete: u64 = list_objects(&gw, &bkt)
        .await
        .iter()
        .map(|(_, size)| *size as u64)
        .sum();
    let kept = complete + stored;
    // The storm passes: the next pod resumes and the delivery completes. (What the failed pod
    // had handed to the kernel drains through the proxy first: count from when it settled.)
    let mut storm_end = proxy.faults.bytes_up();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = proxy.faults.bytes_up();
        if now == storm_end {
            break;
        }
        storm_end = now;
    }
    proxy
        .faults
        .parts_always_fail
        .store(false, Ordering::SeqCst);
    world
        .wait_delivery("storm", "Succeeded", None, Duration::from_secs(600))
        .await;
    let sent_after = proxy.faults.bytes_up() - storm_end;
    // Bytes sent after the storm beyond what was missing (request heads included).
    let resent = sent_after.saturating_sub(total - kept);
    eprintln!(
        "storm: {total} bytes; {sent_before} sent before the storm, {kept} kept through it; {sent_after} sent after it, {resent} of them again ({:.1}% of what was sent before)",
        resent as f64 * 100.0 / sent_before as f64
    );
    assert!(
        resent < sent_before / 10,
        "re-sent {resent} of the {sent_before} bytes sent before the storm"
    );
    assert!(open_uploads(&gw, &bkt).await.is_empty());
    world.cleanup().await;
}

#[tokio::test]
async fn a_deleted_pod_stops_within_seconds_and_the_next_resumes() {
    use k8s_openapi::api::core::v1::Pod;
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy,
    } = stage("drain", "drain", 2 << 20).await;
    write_lines(&folder.join("data/big.sync"), 2_000_000);
    let total = 200_000_000u64;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("drained", "acme", "data", ""))
        .await
        .unwrap();
    wait_for(
        "a third of the delivery sent",
        Duration::from_secs(300),
        || async { (proxy.faults.bytes_up() >= total / 3).then_some(()) },
        || world.diagnose(),
    )
    .await;
    let pods = world.api::<Pod>();
    let running = pods
        .list(&ListParams::default().labels("outbound.dev/delivery=drained"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .expect("a running upload pod");
    let name = running.metadata.name.clone().unwrap();
    // A drain: the pod is deleted with its 30 s grace period, its process gets SIGTERM.
    let asked = std::time::Instant::now();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let terminated = wait_for(
        "the deleted pod to stop",
        Duration::from_secs(30),
        || async {
            let p = pods.get_opt(&name).await.ok()??;
            p.status?.container_statuses?[0].state.clone()?.terminated
        },
        || world.diagnose(),
    )
    .await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    assert_eq!(terminated.exit_code, 75, "{terminated:?}");
    let (open, stored) = stored_in_open_uploads(&gw, &bkt).await;
    assert_eq!(open, 1, "the upload stays open");
    assert!(stored > 0);
    proxy.faults.rate.store(0, Ordering::SeqCst);
    world
        .wait_delivery("drained", "Succeeded", None, Duration::from_secs(300))
        .await;
    let sent = proxy.faults.bytes_up();
    assert!(
        sent < total + total / 5,
        "sent {sent} bytes for {total}: the next pod resumed"
    );
    assert!(
        !proxy
            .faults
            .requests()
            .iter()
            .any(|r| is_abort_of_a_delivery(r)),
        "no abort"
    );
    let got = gw
        .get_object()
        .bucket(&bkt)
        .key("big.sync")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(
        got.as_ref()
            == std::fs::read(folder.join("data/big.sync"))
                .unwrap()
                .as_slice()
    );
    world.cleanup().await;
}
