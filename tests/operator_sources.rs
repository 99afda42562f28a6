//! Deliveries from a bucket of the provider's own (`spec.source.s3`) through the operator, on the
//! ground's real API server, Job controller and versitygw (a second bucket plays the provider's
//! store): read with the provider's Secret, which the Job names by reference only; waiting with a
//! reason naming the Secret until it exists; read with the operator's identity only where the
//! admin's tenancy grants the source bucket, and then copied by the server.

mod operator_support;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination};
use std::time::Duration;

/// Lines of 100 bytes, numbered from `seed`.
fn lines(count: usize, seed: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| format!("{:010}{}\n", seed + i, "y".repeat(89)).into_bytes())
        .collect()
}

/// The provider's bucket with `objects` under `exports/`.
async fn provider_bucket(s3: &aws_sdk_s3::Client, objects: &[(&str, Vec<u8>)]) -> String {
    let bucket = format!("provider-{}", suffix());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (name, body) in objects {
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

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

/// The environment of a delivery's upload Job, by name: a value, or `secret/key` for a
/// reference.
async fn job_env(world: &World) -> Vec<(String, String)> {
    let jobs = world
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let job = jobs.items.first().expect("the upload Job");
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(
        pod.volumes.is_none(),
        "a bucket source mounts no volume: {pod:?}"
    );
    pod.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| {
            let value = match (e.value, e.value_from.and_then(|f| f.secret_key_ref)) {
                (Some(v), _) => v,
                (None, Some(r)) => format!("secret {}/{}", r.name, r.key),
                _ => String::new(),
            };
            (e.name, value)
        })
        .collect()
}

/// A delivery from the provider's bucket read with the provider's Secret, to a destination with
/// its own: it waits (`SourceSecretNotFound`, naming the Secret) until the Secret exists, then
/// delivers every object byte for byte, cut on lines, with the manifest; the bytes went through
/// the pod (two identities: no server-side copy), as the status says. The Job names both Secrets
/// by reference, under names of their own, and no secret value is anywhere.
#[tokio::test]
async fn a_bucket_source_is_read_with_the_providers_secret_and_delivered_exactly() {
    let mut world = World::new("s3src").await;
    let env = &world.env;
    let admin = world.ground_s3().await;
    let objects = [
        ("a.sync", lines(30_000, 0)),
        ("with space é.csv", lines(2_000, 1)),
        ("sub/b.sync", lines(10, 2)),
        ("empty.sync", Vec::new()),
    ];
    let provider = provider_bucket(&admin, &objects).await;
    let destination_bucket = format!("s3src-{}", suffix());
    admin
        .create_bucket()
        .bucket(&destination_bucket)
        .send()
        .await
        .unwrap();
    let (key, secret) = (env.s3_access_key.clone(), env.s3_secret_key.clone());
    let endpoint = env.s3_endpoint.clone();
    world.ground_keys_secret("keys").await;
    world
        .apply_yaml::<OutboundDestination>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: acme}}\nspec:\n  s3: {{bucket: {destination_bucket}, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {{secret: {{name: keys}}}}\n"
        ))
        .await
        .unwrap();
    world
        .apply_yaml::<OutboundDelivery>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: from-bucket}}\nspec:\n  destinationRef: {{name: acme}}\n  source:\n    s3: {{bucket: {provider}, prefix: exports/, endpoint: \"{endpoint}\", forcePathStyle: true, secret: {{name: provider, accessKeyIdKey: id, secretAccessKeyKey: key}}}}\n  splitSize: 1Mi\n  keyPrefix: out/\n"
        ))
        .await
        .unwrap();
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    let waiting = world
        .wait_delivery(
            "from-bucket",
            "Pending",
            Some("SourceSecretNotFound"),
            Duration::from_secs(60),
        )
        .await;
    let (_, message) = ready_of(&waiting.status.unwrap().conditions);
    assert!(
        message.contains("provider") && message.contains("spec.source.s3.secret"),
        "{message}"
    );
    world
        .secret("provider", &[("id", &key), ("key", &secret)])
        .await;
    let done = world
        .wait_delivery(
            "from-bucket",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    let progress = done.status.unwrap().progress.unwrap();
    assert_eq!(progress.bytes_done, total as u64);
    assert_eq!(progress.bytes_sent, total as u64, "{progress:?}");
    assert_eq!(progress.bytes_copied, 0, "two identities: nothing copied");

    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&admin, &destination_bucket, "out/manifest.json").await)
            .unwrap();
    for (name, body) in &objects {
        let pieces: Vec<&serde_json::Value> = manifest["Files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["SourceFile"] == *name)
            .collect();
        let mut joined = Vec::new();
        for piece in &pieces {
            let bytes = get(
                &admin,
                &destination_bucket,
                piece["FileName"].as_str().unwrap(),
            )
            .await;
            assert!(bytes.len() <= 1 << 20);
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"));
            assert_eq!(piece["NumRecords"], bytes.len() / 100);
            joined.extend(bytes);
        }
        assert!(joined == *body, "{name} arrived altered: {manifest:#}");
    }
    assert!(
        manifest["Files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["FileName"] == "out/a-003.sync"),
        "{manifest:#}"
    );

    let job = job_env(&world).await;
    let named = |name: &str| job.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(
        named("OUTBOUND_SOURCE_S3"),
        Some(format!("s3://{provider}/exports/").as_str())
    );
    assert_eq!(
        named("OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID"),
        Some("secret provider/id")
    );
    assert_eq!(
        named("OUTBOUND_SOURCE_AWS_SECRET_ACCESS_KEY"),
        Some("secret provider/key")
    );
    assert_eq!(
        named("AWS_ACCESS_KEY_ID"),
        Some("secret keys/AWS_ACCESS_KEY_ID")
    );
    assert_eq!(named("OUTBOUND_COPY"), None);
    assert_secret_nowhere(&world, &secret);
    world.cleanup().await;
}

/// The operator's own identity reads a provider's bucket only where the admin granted it: in a
/// governed namespace without `sourceBuckets`, the delivery waits with `NotGranted`, naming the
/// field and the bucket, and gets no Job; once granted it is delivered, and since one identity
/// reads the source and writes the destination on one server, the server copies every byte
/// (the status says so) and the objects are identical.
#[tokio::test]
async fn our_identity_reads_a_source_bucket_only_when_granted_and_the_server_copies() {
    let mut world = World::new("s3grant").await;
    let env = &world.env;
    let admin = world.ground_s3().await;
    let objects = [("big.sync", lines(120_000, 0)), ("small.sync", lines(3, 9))];
    let provider = provider_bucket(&admin, &objects).await;
    let destination_bucket = format!("s3grant-{}", suffix());
    admin
        .create_bucket()
        .bucket(&destination_bucket)
        .send()
        .await
        .unwrap();
    let (key, secret) = (env.s3_access_key.clone(), env.s3_secret_key.clone());
    let endpoint = env.s3_endpoint.clone();
    let ns = world.ns.clone();
    let tenancy = |source_buckets: &str| {
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundTenancy\nmetadata: {{name: default}}\nspec:\n  namespaces: [{ns}]\n  grants:\n    - namespaces: [{ns}]\n      buckets: [{destination_bucket}]\n      endpoints: [\"{endpoint}\"]\n      sourceBuckets: {source_buckets}\n"
        )
    };
    let _guard = TenancyGuard;
    apply_tenancy(&world, &tenancy("[]")).await;
    // Our identity, for the operator and (through the admin's Secret) the upload pods.
    world.ground_keys_secret("outbound-identity").await;
    world
        .apply_yaml::<OutboundDestination>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: ours}}\nspec:\n  s3: {{bucket: {destination_bucket}, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {{crossAccount: {{}}}}\n"
        ))
        .await
        .unwrap();
    world
        .apply_yaml::<OutboundDelivery>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: copied}}\nspec:\n  destinationRef: {{name: ours}}\n  source:\n    s3: {{bucket: {provider}, prefix: exports/, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  splitSize: 4Mi\n"
        ))
        .await
        .unwrap();
    world.start_operator_with_env(&[
        ("AWS_ACCESS_KEY_ID", &key),
        ("AWS_SECRET_ACCESS_KEY", &secret),
        ("AWS_REGION", "us-east-1"),
        ("OUTBOUND_WORKLOAD_IDENTITY_SECRET", "outbound-identity"),
    ]);
    world.wait_destination("ours", "True", "Validated").await;
    let refused = world
        .wait_delivery(
            "copied",
            "Pending",
            Some("NotGranted"),
            Duration::from_secs(60),
        )
        .await;
    let (_, message) = ready_of(&refused.status.unwrap().conditions);
    assert!(
        message.starts_with(&format!("spec.source.s3.bucket {provider} is not granted")),
        "{message}"
    );
    assert!(
        world
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Job for a source not granted"
    );

    apply_tenancy(&world, &tenancy(&format!("[{provider}]"))).await;
    let done = world
        .wait_delivery(
            "copied",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    let progress = done.status.unwrap().progress.unwrap();
    assert_eq!(progress.bytes_done, total as u64);
    assert_eq!(progress.bytes_copied, total as u64, "{progress:?}");
    assert_eq!(progress.bytes_sent, 0, "{progress:?}");
    let job = job_env(&world).await;
    assert!(
        job.iter()
            .any(|(n, v)| n == "OUTBOUND_COPY" && v == "server"),
        "{job:?}"
    );
    assert!(
        job.iter()
            .any(|(n, v)| n == "OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID"
                && v == "secret outbound-identity/AWS_ACCESS_KEY_ID"),
        "{job:?}"
    );
    let mut joined = Vec::new();
    for n in 1..=3 {
        joined.extend(get(&admin, &destination_bucket, &format!("big-{n:03}.sync")).await);
    }
    assert!(
        joined == objects[0].1,
        "the copied pieces are not the object"
    );
    assert!(get(&admin, &destination_bucket, "small.sync").await == objects[1].1);
    world.cleanup().await;
}

/// The API server refuses a source that is both a volume and a bucket, or neither, and a bucket
/// prefix that is not a folder, naming the rule.
#[tokio::test]
async fn a_source_is_exactly_one_of_a_volume_and_a_bucket() {
    let world = World::new("s3spec").await;
    let delivery = |source: &str| {
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: d}}\nspec:\n  destinationRef: {{name: acme}}\n  source: {source}\n"
        )
    };
    for (source, words) in [
        (
            "{volume: {claimName: exports}, s3: {bucket: provider}}",
            "exactly one of source.volume or source.s3",
        ),
        ("{}", "exactly one of source.volume or source.s3"),
        (
            "{s3: {bucket: provider, prefix: exports}}",
            "a non-empty prefix must end in /",
        ),
    ] {
        let refused = world
            .apply_yaml::<OutboundDelivery>(&delivery(source))
            .await
            .expect_err(source);
        assert!(refused.to_string().contains(words), "{source}: {refused}");
    }
    world
        .apply_yaml::<OutboundDelivery>(&delivery("{s3: {bucket: provider, prefix: exports/}}"))
        .await
        .expect("a bucket source alone is admitted");
    world.cleanup().await;
}

/// A source endpoint is held to the destinations' rules: with the defaults (no plain http, no
/// loopback), a delivery reading `http://127.0.0.1:…` waits with `EndpointNotAllowed`, naming
/// the field, and gets no Job.
#[tokio::test]
async fn a_source_endpoint_the_admin_did_not_allow_is_refused() {
    let mut world = World::new("s3endpoint").await;
    world
        .apply_yaml::<OutboundDelivery>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: inward}\nspec:\n  destinationRef: {name: acme}\n  source:\n    s3: {bucket: provider, endpoint: \"http://127.0.0.1:9\", secret: {name: provider}}\n",
        )
        .await
        .unwrap();
    world.start_operator_with_env(&[
        ("OUTBOUND_ALLOW_HTTP_ENDPOINTS", "false"),
        ("OUTBOUND_ALLOW_PRIVATE_ENDPOINTS", "false"),
    ]);
    let refused = world
        .wait_delivery(
            "inward",
            "Pending",
            Some("EndpointNotAllowed"),
            Duration::from_secs(60),
        )
        .await;
    let (_, message) = ready_of(&refused.status.unwrap().conditions);
    assert!(
        message.starts_with("spec.source.s3.endpoint http://127.0.0.1:9 is a loopback address"),
        "{message}"
    );
    assert!(
        world
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    world.cleanup().await;
}
