//! End-to-end tests of the operator against the ground's real API server, Job controller and
//! S3 servers (versitygw for the data path, moto for IAM semantics). Needs `make ground-up` and
//! `source tests/ground/.state/env`.

mod operator_support;
// The uploader tests' proxy: here it only slows uploads down, so "mid-delivery" lasts long enough
// to act in on any machine.
#[allow(dead_code)]
#[path = "upload_support/proxy.rs"]
mod proxy;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination, OutboundShard};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn destination_yaml(
    name: &str,
    bucket: &str,
    endpoint: &str,
    credentials: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: {bucket}, region: us-east-1, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {credentials}\n{extra}"
    )
}

fn delivery_yaml(name: &str, destination: &str, claim: &str, extra: &str) -> String {
    delivery_yaml_from(
        name,
        destination,
        &format!("{{volume: {{claimName: {claim}}}}}"),
        extra,
    )
}

fn delivery_yaml_from(name: &str, destination: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: {name}}}\nspec:\n  destinationRef: {{name: {destination}}}\n  source: {source}\n{extra}"
    )
}

/// The Secret `keys` and the destination `acme` that uses it (several tests start from these).
async fn keyed_destination(world: &World, bkt: &str, endpoint: &str, key: &str, secret: &str) {
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", key),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            "acme",
            bkt,
            endpoint,
            "{secret: {name: keys}}",
            "",
        ))
        .await
        .unwrap();
}

async fn bucket(s3: &aws_sdk_s3::Client, name: &str) {
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("failed to create the bucket");
}

/// Creates a moto IAM user with keys and no policy at all (boto3 from the ground's venv).
fn moto_user_without_permissions(env: &GroundEnv, name: &str) -> (String, String) {
    let python = std::env::var("HOME").unwrap() + "/.cache/outbound/venv/bin/python";
    let script = format!(
        "import boto3,json\niam=boto3.client('iam',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{}',aws_secret_access_key='{}')\niam.create_user(UserName='{name}')\nk=iam.create_access_key(UserName='{name}')['AccessKey']\nprint(json.dumps([k['AccessKeyId'],k['SecretAccessKey']]))",
        env.moto_endpoint, env.moto_access_key, env.moto_secret_key
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
    let keys: (String, String) = serde_json::from_slice(&out.stdout).expect("keys json");
    keys
}

async fn jobs_in(world: &World) -> Vec<Job> {
    world
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Applies YAML as written, not through the Rust types (which would refuse, before the API
/// server could, a value such as an unknown ACL).
async fn apply_untyped<K>(world: &World, yaml: &str) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::ResourceExt;
    let obj: kube::api::DynamicObject = serde_yaml::from_str(yaml).expect("test YAML parses");
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(world.client.clone(), &world.ns, &resource);
    api.patch(
        &obj.name_any(),
        &PatchParams::apply("outbound-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn bad_specs_are_refused_by_the_api_server() {
    let world = World::new("refused").await;
    let cases = [
        (
            "split-2ti",
            "{secret: {name: k}}",
            "  upload: {splitSize: 2Ti}\n",
            "at most 1Ti",
        ),
        (
            "split-zero",
            "{secret: {name: k}}",
            "  upload: {splitSize: 0}\n",
            "positive",
        ),
        (
            "both",
            "{secret: {name: k}, crossAccount: {}}",
            "",
            "exactly one of",
        ),
        ("neither", "{}", "", "exactly one of"),
        // roleArn alone is the normal case (the operator generates the ExternalId).
        (
            "external-id-no-role",
            "{crossAccount: {externalId: agreed-id}}",
            "",
            "externalId needs roleArn",
        ),
    ];
    for (name, creds, extra, want) in cases {
        let yaml = destination_yaml(name, "bkt", "http://127.0.0.1:1", creds, extra);
        let err = world
            .apply_yaml::<OutboundDestination>(&yaml)
            .await
            .expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    // Key prefixes start every object key in the customer's bucket; ACLs and storage classes are
    // S3's own lists. (YAML double quotes spell the control character.)
    let long = format!("{}/", "\u{e9}".repeat(300));
    let prefixes = [
        (
            "prefix-dotdot",
            "in/../out/",
            "must not contain . or .. segments",
        ),
        ("prefix-dot", "./in/", "must not contain . or .. segments"),
        ("prefix-no-slash", "audience", "must end in /"),
        (
            "prefix-control",
            "in\\x01/",
            "must not contain control characters",
        ),
        ("prefix-double-slash", "in//out/", "empty segment (//)"),
        ("prefix-long", long.as_str(), "must be at most 512 bytes"),
    ];
    for (name, prefix, want) in prefixes {
        let yaml = format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: bkt, prefix: \"{prefix}\"}}\n  credentials: {{secret: {{name: k}}}}\n"
        );
        let err = apply_untyped::<OutboundDestination>(&world, &yaml)
            .await
            .expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let settings = [
        (
            "acl-unknown",
            "{acl: everyone}",
            "Unsupported value: \"everyone\"",
        ),
        (
            "class-unknown",
            "{storageClass: standard}",
            "Unsupported value: \"standard\"",
        ),
    ];
    for (name, upload, want) in settings {
        let extra = format!("  upload: {upload}\n");
        let yaml = destination_yaml(
            name,
            "bkt",
            "http://127.0.0.1:1",
            "{secret: {name: k}}",
            &extra,
        );
        let err = apply_untyped::<OutboundDestination>(&world, &yaml)
            .await
            .expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            "fine",
            "bkt",
            "http://127.0.0.1:1",
            "{secret: {name: k}}",
            "  upload: {acl: bucket-owner-full-control, storageClass: STANDARD_IA}\n",
        ))
        .await
        .expect("known ACL and storage class");
    let key_prefixes = [
        (
            "key-dotdot",
            "../escape/".to_string(),
            "must not contain . or .. segments",
        ),
        ("key-long", "a".repeat(600), "512"),
        (
            "key-control",
            "day\\t1/".to_string(),
            "must not contain control characters",
        ),
    ];
    for (name, key_prefix, want) in key_prefixes {
        let extra = format!("  keyPrefix: \"{key_prefix}\"\n");
        let err = apply_untyped::<OutboundDelivery>(&world, &delivery_yaml(name, "x", "c", &extra))
            .await
            .expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let compressions = [
        (
            "level-ten",
            "{format: gzip, level: 10}",
            "less than or equal to 9",
        ),
        (
            "format-zstd",
            "{format: zstd}",
            "Unsupported value: \"zstd\"",
        ),
    ];
    for (name, compression, want) in compressions {
        let extra = format!("  compression: {compression}\n");
        let err = apply_untyped::<OutboundDelivery>(&world, &delivery_yaml(name, "x", "c", &extra))
            .await
            .expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    // A started delivery keeps its spec, but may be suspended.
    let d = world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("d", "x", "c", "  splitSize: 8Mi\n"))
        .await
        .unwrap();
    let status = serde_json::json!({"apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDelivery",
        "status": {"startTime": "2026-11-27T12:00:00Z", "phase": "Uploading"}});
    world
        .api::<OutboundDelivery>()
        .patch_status(
            "d",
            &PatchParams::apply("outbound-test").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let err = world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("d", "x", "c", "  splitSize: 4Mi\n"))
        .await
        .expect_err("a started delivery's split size cannot change");
    assert!(err.to_string().contains("immutable"), "{err}");
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "d",
            "x",
            "c",
            "  splitSize: 8Mi\n  suspend: true\n",
        ))
        .await
        .expect("suspend stays mutable");
    drop(d);
    world.cleanup().await;
}

#[tokio::test]
async fn each_bad_input_gets_its_own_reason_and_no_job() {
    let mut world = World::new("reasons").await;
    let env = &world.env;
    let gw = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let bkt = format!("reasons-{}", suffix());
    bucket(&gw, &bkt).await;
    let moto_admin = s3(
        &env.moto_endpoint,
        "us-east-1",
        &env.moto_access_key,
        &env.moto_secret_key,
    )
    .await;
    let moto_bkt = format!("reasons-{}", suffix());
    bucket(&moto_admin, &moto_bkt).await;
    let (noperm_key, noperm_secret) =
        moto_user_without_permissions(env, &format!("noperm-{}", suffix()));
    let (gw_endpoint, gw_key, gw_secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let moto_endpoint = env.moto_endpoint.clone();

    world
        .secret(
            "good",
            &[
                ("AWS_ACCESS_KEY_ID", &gw_key),
                ("AWS_SECRET_ACCESS_KEY", &gw_secret),
            ],
        )
        .await;
    world
        .secret("no-key", &[("AWS_ACCESS_KEY_ID", &gw_key)])
        .await;
    world
        .secret(
            "wrong-key",
            &[
                ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000"),
                ("AWS_SECRET_ACCESS_KEY", &gw_secret),
            ],
        )
        .await;
    world
        .secret(
            "wrong-secret",
            &[
                ("AWS_ACCESS_KEY_ID", &gw_key),
                ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ],
        )
        .await;
    world
        .secret(
            "noperm",
            &[
                ("AWS_ACCESS_KEY_ID", &noperm_key),
                ("AWS_SECRET_ACCESS_KEY", &noperm_secret),
            ],
        )
        .await;
    let cases = [
        (
            "missing-secret",
            bkt.as_str(),
            gw_endpoint.as_str(),
            "{secret: {name: nowhere}}",
            "SecretNotFound",
        ),
        (
            "missing-key",
            &bkt,
            &gw_endpoint,
            "{secret: {name: no-key}}",
            "SecretKeyMissing",
        ),
        (
            "wrong-key",
            &bkt,
            &gw_endpoint,
            "{secret: {name: wrong-key}}",
            "InvalidAccessKeyId",
        ),
        (
            "wrong-secret",
            &bkt,
            &gw_endpoint,
            "{secret: {name: wrong-secret}}",
            "SignatureDoesNotMatch",
        ),
        (
            "missing-bucket",
            "no-such-bucket-here",
            &gw_endpoint,
            "{secret: {name: good}}",
            "NoSuchBucket",
        ),
        (
            "no-permission",
            &moto_bkt,
            &moto_endpoint,
            "{secret: {name: noperm}}",
            "AccessDenied",
        ),
        (
            "good",
            &bkt,
            &gw_endpoint,
            "{secret: {name: good}}",
            "Validated",
        ),
    ];
    for (name, b, endpoint, creds, _) in &cases {
        world
            .apply_yaml::<OutboundDestination>(&destination_yaml(
                name,
                b,
                endpoint,
                creds,
                "  upload: {splitSize: 1Mi}\n",
            ))
            .await
            .unwrap();
    }
    world.volume("exports").await;
    world.start_operator();
    for (name, _, _, _, reason) in &cases {
        let status = if *reason == "Validated" {
            "True"
        } else {
            "False"
        };
        let d = world.wait_destination(name, status, reason).await;
        let msg = &d.status.unwrap().conditions[0].message;
        assert!(
            !msg.is_empty() && !msg.contains(&gw_secret),
            "{name}: {msg}"
        );
    }
    let good = world.destination("good").await.status.unwrap();
    let identity = good.identity.expect("identity in status");
    // Without STS the access key id shows only masked, and only when it is shaped like one.
    assert_eq!(
        identity.access_key_id,
        outbound::probe::masked_access_key_id(&gw_key)
    );
    // moto serves STS: the identity there is the IAM user's ARN.
    let noperm = world
        .destination("no-permission")
        .await
        .status
        .unwrap()
        .identity
        .expect("identity");
    assert!(
        noperm
            .arn
            .as_deref()
            .unwrap_or_default()
            .contains(":user/noperm-"),
        "{noperm:?}"
    );
    assert_eq!(noperm.account.as_deref(), Some("123456789012"));

    // Deliveries that cannot start say why, and create nothing.
    let deliveries = [
        (
            "to-nowhere",
            "nowhere",
            "exports",
            "",
            "DestinationNotFound",
        ),
        (
            "no-pvc",
            "good",
            "no-such-claim",
            "",
            "PersistentVolumeClaimNotFound",
        ),
        // Its destination appears only after the delivery: the controller must catch what the
        // admission policy could not see at creation.
        (
            "too-big",
            "appears-later",
            "exports",
            "  splitSize: 2Mi\n",
            "SplitSizeAboveDestination",
        ),
        (
            "missing-secret",
            "missing-secret",
            "exports",
            "",
            "SecretNotFound",
        ),
        (
            "missing-key",
            "missing-key",
            "exports",
            "",
            "SecretKeyMissing",
        ),
        (
            "bucket-gone",
            "missing-bucket",
            "exports",
            "",
            "DestinationNotReady",
        ),
    ];
    // A delivery over its destination's split size is refused by the API server itself (the
    // admission policy that reads the destination); retried while the policy's view of the new
    // destinations catches up.
    let refusal = wait_for(
        "the API server to refuse a delivery over its destination's split size",
        Duration::from_secs(30),
        || async {
            match world
                .apply_yaml::<OutboundDelivery>(&delivery_yaml(
                    "refused",
                    "good",
                    "exports",
                    "  splitSize: 2Mi\n",
                ))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 422 => Some(e.message),
                Ok(_) => {
                    let _ = world
                        .api::<OutboundDelivery>()
                        .delete("refused", &Default::default())
                        .await;
                    None
                }
                Err(_) => None,
            }
        },
        || world.diagnose(),
    )
    .await;
    assert!(
        refusal.contains("spec.splitSize 2Mi is above the split size of destination good (1Mi)"),
        "{refusal}"
    );
    for (name, dest, claim, extra, _) in &deliveries {
        world
            .apply_yaml::<OutboundDelivery>(&delivery_yaml(name, dest, claim, extra))
            .await
            .unwrap();
    }
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            "appears-later",
            &bkt,
            &gw_endpoint,
            "{secret: {name: good}}",
            "  upload: {splitSize: 1Mi}\n",
        ))
        .await
        .unwrap();
    for (name, _, _, _, reason) in &deliveries {
        world
            .wait_delivery(name, "Pending", Some(reason), Duration::from_secs(60))
            .await;
    }
    assert!(
        jobs_in(&world).await.is_empty(),
        "no Job for a delivery that cannot start"
    );

    // Fixing the Secret makes the destination Ready without touching the destination; the
    // delivery waiting on it then starts.
    let generation = world
        .destination("missing-secret")
        .await
        .metadata
        .generation;
    world
        .secret(
            "nowhere",
            &[
                ("AWS_ACCESS_KEY_ID", &gw_key),
                ("AWS_SECRET_ACCESS_KEY", &gw_secret),
            ],
        )
        .await;
    let fixed = world
        .wait_destination("missing-secret", "True", "Validated")
        .await;
    assert_eq!(
        fixed.metadata.generation, generation,
        "the destination itself was not touched"
    );
    // Started: Uploading, or already Succeeded where the machine is quick.
    wait_for(
        "delivery missing-secret started",
        Duration::from_secs(60),
        || async {
            let phase = world.delivery("missing-secret").await.status?.phase?;
            matches!(phase.as_str(), "Uploading" | "Succeeded").then_some(())
        },
        || world.diagnose(),
    )
    .await;
    // The rotation case proper: a destination whose Secret's key is added later.
    world
        .secret(
            "no-key",
            &[
                ("AWS_ACCESS_KEY_ID", &gw_key),
                ("AWS_SECRET_ACCESS_KEY", &gw_secret),
            ],
        )
        .await;
    let d = world
        .wait_destination("missing-key", "True", "Validated")
        .await;
    assert_eq!(
        d.metadata.generation,
        world.destination("missing-key").await.metadata.generation
    );
    world.cleanup().await;
}

/// Fills `folder` with `lines` lines of 100 bytes each (99 characters and a newline).
fn write_lines(path: &std::path::Path, lines: usize) -> u64 {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..lines {
        writeln!(f, "{i:010}{}", "x".repeat(89)).unwrap();
    }
    f.flush().unwrap();
    (lines * 100) as u64
}

#[tokio::test]
async fn no_secret_value_is_shown_and_a_key_shaped_id_only_masked() {
    let mut world = World::new("nosecret").await;
    let env = &world.env;
    let gw = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let bkt = format!("nosecret-{}", suffix());
    bucket(&gw, &bkt).await;
    // A Secret key that holds something else than an access key id (a database password put in
    // the wrong key), one that does hold a key-shaped id, and one the server does not know.
    let sentinel = format!("sentinel-db-password-{}", suffix());
    let shaped = format!("AKIA{}{}", suffix().to_uppercase(), suffix().to_uppercase());
    let unknown = format!("sentinel-unknown-{}", suffix());
    let secret = format!("sentinel-secret-{}", suffix());
    versitygw_account(env, &sentinel, &secret);
    versitygw_account(env, &shaped, &secret);
    let endpoint = env.s3_endpoint.clone();
    for (name, key) in [
        ("db", &sentinel),
        ("shaped", &shaped),
        ("unknown", &unknown),
    ] {
        world
            .secret(
                name,
                &[
                    ("AWS_ACCESS_KEY_ID", key),
                    ("AWS_SECRET_ACCESS_KEY", &secret),
                ],
            )
            .await;
        world
            .apply_yaml::<OutboundDestination>(&destination_yaml(
                name,
                &bkt,
                &endpoint,
                &format!("{{secret: {{name: {name}}}}}"),
                "",
            ))
            .await
            .unwrap();
    }
    world.start_operator();
    // versitygw serves no STS: before, the Secret's value was the identity ("<value> can write").
    let db = world.wait_destination("db", "True", "Validated").await;
    let status = db.status.unwrap();
    let identity = status.identity.expect("identity");
    assert_eq!(identity.source, "Unverified");
    assert_eq!(identity.access_key_id, None, "not shaped like a key id");
    let masked = format!("{}\u{2026}{}", &shaped[..4], &shaped[shaped.len() - 4..]);
    let ok = world.wait_destination("shaped", "True", "Validated").await;
    let status = ok.status.unwrap();
    assert_eq!(
        status.identity.expect("identity").access_key_id,
        Some(masked.clone())
    );
    assert!(
        status.conditions[0].message.contains(&masked),
        "{}",
        status.conditions[0].message
    );
    world
        .wait_destination("unknown", "False", "InvalidAccessKeyId")
        .await;
    // The Events are published after the status: wait for one per destination before looking.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = world.api();
    wait_for(
        "an Event for each destination",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let mut named: Vec<String> = list
                .items
                .iter()
                .filter_map(|e| e.regarding.as_ref()?.name.clone())
                .collect();
            named.sort();
            named.dedup();
            (named.len() >= 3).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    // A delivery with the sentinel's keys: nothing of them in its Job, its pods' logs, its
    // shards, the objects delivered, their metadata or the manifest either.
    let folder = world.volume("exports").await;
    std::fs::write(folder.join("a.sync"), "one\ntwo\n".repeat(50_000)).unwrap();
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "with-db-keys",
            "db",
            "exports",
            "  manifest: true\n",
        ))
        .await
        .unwrap();
    world
        .wait_delivery("with-db-keys", "Succeeded", None, Duration::from_secs(120))
        .await;
    for value in [&sentinel, &shaped, &unknown, &secret] {
        assert_secret_nowhere(&world, value);
    }
    let pod_logs = std::path::Path::new(&std::env::var("GROUND_STATE").expect("GROUND_STATE"))
        .join("logs/pods");
    let mut read = 0;
    for entry in std::fs::read_dir(&pod_logs).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}_", world.ns)))
        {
            let log = std::fs::read_to_string(&path).unwrap();
            read += 1;
            for value in [&sentinel, &secret] {
                assert!(
                    !log.contains(value.as_str()),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }
    assert!(read > 0, "no upload pod log in {}", pod_logs.display());
    for (key, _) in list_objects(&gw, &bkt).await {
        let object = gw.get_object().bucket(&bkt).key(&key).send().await.unwrap();
        let metadata = format!("{:?}", object.metadata());
        let body = object.body.collect().await.unwrap().into_bytes();
        for value in [&sentinel, &secret] {
            assert!(
                !metadata.contains(value.as_str()),
                "{key}'s metadata holds a secret"
            );
            assert!(
                !String::from_utf8_lossy(&body).contains(value.as_str()),
                "{key} holds a secret"
            );
        }
    }
    world.cleanup().await;
}

#[tokio::test]
async fn endpoints_the_admin_did_not_allow_are_refused_and_deliveries_wait() {
    let mut world = World::new("endpoints").await;
    let creds = "{secret: {name: keys}}";
    let cases = [
        (
            "metadata",
            "http://169.254.169.254",
            "spec.s3.endpoint",
            "cloud metadata address",
        ),
        (
            "loopback",
            "https://127.0.0.1:9",
            "spec.s3.endpoint",
            "loopback address",
        ),
        (
            "link-local",
            "https://[fe80::1]:443",
            "spec.s3.endpoint",
            "link-local address",
        ),
        (
            "plain",
            "http://s3.example.com",
            "spec.s3.endpoint",
            "plain http",
        ),
    ];
    for (name, endpoint, _, _) in cases {
        world
            .apply_yaml::<OutboundDestination>(&destination_yaml(name, "bkt", endpoint, creds, ""))
            .await
            .unwrap();
    }
    world
        .apply_yaml::<OutboundDestination>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {name: sts}\nspec:\n  s3: {bucket: bkt, endpoint: \"https://s3.example.com\", stsEndpoint: \"https://[fd00:ec2::254]\"}\n  credentials: {secret: {name: keys}}\n",
        )
        .await
        .unwrap();
    // Everything else the delivery needs is there: only the destination holds it back.
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00"),
                ("AWS_SECRET_ACCESS_KEY", "not-used"),
            ],
        )
        .await;
    world.volume("exports").await;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("to-metadata", "metadata", "exports", ""))
        .await
        .unwrap();
    // The defaults, as a chart installs them: the test support allows both for the ground.
    world.start_operator_with_env(&[
        ("OUTBOUND_ALLOW_HTTP_ENDPOINTS", "false"),
        ("OUTBOUND_ALLOW_PRIVATE_ENDPOINTS", "false"),
    ]);
    let all =
        cases
            .iter()
            .copied()
            .chain([("sts", "", "spec.s3.stsEndpoint", "cloud metadata address")]);
    for (name, _, field, why) in all {
        let d = world
            .wait_destination(name, "False", "EndpointNotAllowed")
            .await;
        let message = &d.status.unwrap().conditions[0].message;
        assert!(
            message.contains(field) && message.contains(why),
            "{name}: {message}"
        );
    }
    world
        .wait_delivery(
            "to-metadata",
            "Pending",
            Some("DestinationNotReady"),
            Duration::from_secs(30),
        )
        .await;
    // The delivery may first have seen its destination before the probe: its message follows.
    wait_for(
        "the delivery to name the destination's reason",
        Duration::from_secs(30),
        || async {
            let ready = world.delivery("to-metadata").await.status?.conditions;
            ready
                .iter()
                .any(|c| c.message.contains("EndpointNotAllowed"))
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    // Still nothing a few seconds later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(jobs_in(&world).await.is_empty(), "a Job was created");
    world.cleanup().await;
}

#[tokio::test]
async fn a_secret_destination_delivers_split_files_exactly() {
    let mut world = World::new("deliver").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("deliver-{}", suffix());
    bucket(&gw, &bkt).await;
    let folder = world.volume("exports").await;
    let day = folder.join("2026-11-27");
    // 26,000 lines of 100 bytes = 2,600,000 bytes: three parts of at most 1 MiB on line
    // boundaries (10,485 + 10,485 + 5,030 lines); three small files stay whole.
    let mut total = write_lines(&day.join("segments.sync"), 26_000);
    total += write_lines(&day.join("a.sync"), 10);
    total += write_lines(&day.join("b.sync"), 20);
    total += write_lines(&day.join("sub/c.sync"), 30);
    write_lines(&day.join("skipped.tmp"), 5);

    world
        .secret(
            "acme-keys",
            &[
                ("AWS_ACCESS_KEY_ID", &key),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            "acme",
            &bkt,
            &endpoint,
            "{secret: {name: acme-keys}}",
            "  upload: {splitSize: 1Mi}\n",
        ))
        .await
        .unwrap();
    world.start_operator();
    let dest = world.wait_destination("acme", "True", "Validated").await;
    let identity = dest
        .status
        .unwrap()
        .identity
        .expect("the writing identity in status");
    assert_eq!(
        identity.access_key_id,
        outbound::probe::masked_access_key_id(&key)
    );

    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml_from(
            "segments",
            "acme",
            "{volume: {claimName: exports, path: 2026-11-27/, include: [\"*.sync\", \"**/*.sync\"]}}",
            "  keyPrefix: out/\n  manifest: true\n  parallelism: 2\n",
        ))
        .await
        .unwrap();
    let done = world
        .wait_delivery(
            "segments",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let status = done.status.unwrap();
    // The final progress reports may land just after the Job completes: wait for the totals.
    let progress = wait_for(
        "progress totals",
        Duration::from_secs(30),
        || async {
            let s = world.delivery("segments").await.status?;
            let p = s.progress?;
            (p.bytes_done == total && p.objects_done == p.objects_total).then_some(p)
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(progress.bytes_total, total);
    assert_eq!(progress.objects_total, 6, "{progress:?}");
    for c in ["Ready", "Complete"] {
        let cond = status.conditions.iter().find(|x| x.type_ == c).unwrap();
        assert_eq!(cond.status, "True", "{c}");
        assert_eq!(cond.observed_generation, done.metadata.generation);
    }
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(status.manifest_key.as_deref(), Some("out/manifest.json"));

    let keys: Vec<String> = list_objects(&gw, &bkt)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            "out/a.sync",
            "out/b.sync",
            "out/manifest.json",
            "out/segments-001.sync",
            "out/segments-002.sync",
            "out/segments-003.sync",
            "out/sub/c.sync",
        ]
    );
    for (k, size) in list_objects(&gw, &bkt).await {
        assert!(size <= 1 << 20, "{k} is {size} bytes, above the split size");
    }
    assert!(open_uploads(&gw, &bkt).await.is_empty());
    let jobs = jobs_in(&world).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].spec.as_ref().unwrap().completion_mode.as_deref(),
        Some("Indexed")
    );
    assert_secret_nowhere(&world, &secret);
    // No hot loop: once settled, reconciles that change nothing write nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (
        world.delivery("segments").await.metadata.resource_version,
        world.destination("acme").await.metadata.resource_version,
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = (
        world.delivery("segments").await.metadata.resource_version,
        world.destination("acme").await.metadata.resource_version,
    );
    assert_eq!(
        before, after,
        "a settled delivery and destination are not rewritten"
    );
    world.cleanup().await;
}

/// A gzip file in lines mode through the operator, in the second of two shards: its pieces
/// (each a gzip stream of whole lines, at most the split size) are reported in that shard's
/// OutboundShard, and shard 0's manifest lists each with its sizes and lines. Then the same
/// folder with `compression: gzip`: the text file compressed, the gzip file not twice.
#[tokio::test]
async fn a_gzip_file_goes_in_pieces_and_another_shard_writes_their_manifest() {
    use std::io::{Read, Write};
    let mut world = World::new("gzip").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("gzip-{}", suffix());
    bucket(&gw, &bkt).await;
    let folder = world.volume("exports").await;
    // 8 MiB of lines of pseudo-random letters (gzip keeps three quarters of it).
    let mut text = Vec::with_capacity(9 << 20);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while text.len() < 8 << 20 {
        for _ in 0..(40 + x % 200) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push(b'a' + (x % 26) as u8);
        }
        text.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&text).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::create_dir_all(folder.join("day")).unwrap();
    // Plan order: a.sync (shard 0), then b.log.gz (shard 1).
    write_lines(&folder.join("day/a.sync"), 100);
    std::fs::write(folder.join("day/b.log.gz"), &gz).unwrap();

    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", &key),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&destination_yaml(
            "acme",
            &bkt,
            &endpoint,
            "{secret: {name: keys}}",
            "  upload: {splitSize: 1Mi}\n",
        ))
        .await
        .unwrap();
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml_from(
            "logs",
            "acme",
            "{volume: {claimName: exports, path: day}}",
            "  keyPrefix: out/\n  manifest: true\n  parallelism: 2\n",
        ))
        .await
        .unwrap();
    world
        .wait_delivery(
            "logs",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let shards = world.shards("logs").await;
    let reported: usize = shards
        .iter()
        .map(|s| s.pieces.values().map(Vec::len).sum::<usize>())
        .sum();

    let get = |k: String| {
        let gw = gw.clone();
        let bkt = bkt.clone();
        async move {
            let object = gw.get_object().bucket(&bkt).key(&k).send().await.unwrap();
            object.body.collect().await.unwrap().into_bytes().to_vec()
        }
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&get("out/manifest.json".into()).await).unwrap();
    let mut joined = Vec::new();
    let mut pieces = 0;
    for (key, size) in list_objects(&gw, &bkt).await {
        if !key.starts_with("out/b-") {
            continue;
        }
        pieces += 1;
        assert_eq!(key, format!("out/b-{pieces:03}.log.gz"));
        assert!(size <= 1 << 20, "{key} is {size} bytes");
        let bytes = get(key.clone()).await;
        let mut lines = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut lines)
            .unwrap_or_else(|e| panic!("{key} is not a gzip stream of its own: {e}"));
        assert_eq!(lines.last(), Some(&b'\n'), "{key} ends on a line");
        let entry = manifest["Files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["FileName"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} not in the manifest: {manifest:#}"));
        assert_eq!(entry["FileSize"], size);
        assert_eq!(entry["UncompressedSize"], lines.len() as u64);
        assert_eq!(
            entry["NumRecords"],
            lines.iter().filter(|&&b| b == b'\n').count() as u64
        );
        joined.extend(lines);
    }
    assert!(pieces >= 5, "{pieces} pieces");
    assert_eq!(reported, pieces, "shard 1 reported every piece: {shards:?}");
    assert!(joined == text, "the pieces' lines are the file's");
    assert_eq!(manifest["Files"].as_array().unwrap().len(), pieces + 1);
    assert!(open_uploads(&gw, &bkt).await.is_empty());

    // Compressed on the way out: the text file goes as a gzip stream named `.gz`, the gzip
    // file in pieces as before (never compressed twice).
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml_from(
            "packed",
            "acme",
            "{volume: {claimName: exports, path: day}}",
            "  keyPrefix: packed/\n  manifest: false\n  compression: {format: gzip, level: 1}\n",
        ))
        .await
        .unwrap();
    world
        .wait_delivery(
            "packed",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let job = jobs_in(&world)
        .await
        .into_iter()
        .find(|j| {
            j.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains("packed"))
        })
        .expect("the packed delivery's Job");
    let envs = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let value = |name: &str| {
        envs.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("OUTBOUND_COMPRESS").as_deref(), Some("gzip"));
    assert_eq!(value("OUTBOUND_COMPRESS_LEVEL").as_deref(), Some("1"));
    let packed = get("packed/a.sync.gz".into()).await;
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(packed.as_slice())
        .read_to_end(&mut unpacked)
        .expect("a.sync.gz is a gzip stream");
    assert!(unpacked == std::fs::read(folder.join("day/a.sync")).unwrap());
    let keys: Vec<String> = list_objects(&gw, &bkt)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("packed/"))
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.ends_with(".gz") && !k.ends_with(".gz.gz")),
        "{keys:?}"
    );
    assert_eq!(keys.len(), pieces + 1, "{keys:?}");
    world.cleanup().await;
}

#[tokio::test]
async fn a_restarted_operator_creates_no_second_job() {
    let mut world = World::new("restart").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("restart-{}", suffix());
    bucket(&gw, &bkt).await;
    let folder = world.volume("exports").await;
    let mut total = 0;
    for i in 0..8 {
        total += write_lines(&folder.join(format!("part{i}.sync")), 200_000);
    }
    // 1 MiB/s per connection: the 160 MB take about 20 s, several progress reports, instead of
    // the second a fast machine needs, which left no "mid-delivery" to restart the operator in.
    let slow = proxy::Proxy::start(&endpoint).await;
    slow.faults.rate.store(1 << 20, Ordering::SeqCst);
    keyed_destination(&world, &bkt, &slow.url(), &key, &secret).await;
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("big", "acme", "exports", ""))
        .await
        .unwrap();
    world
        .wait_delivery("big", "Uploading", None, Duration::from_secs(60))
        .await;
    // Mid-delivery: the pod has reported progress but is not finished.
    wait_for(
        "progress reported",
        Duration::from_secs(60),
        || async {
            let p = world.delivery("big").await.status?.progress?;
            (p.bytes_done > 0 && p.bytes_done < p.bytes_total).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world.kill_operator();
    let first = jobs_in(&world).await;
    assert_eq!(first.len(), 1);
    world.start_operator();
    let done = world
        .wait_delivery("big", "Succeeded", None, Duration::from_secs(300))
        .await;
    let jobs = jobs_in(&world).await;
    assert_eq!(jobs.len(), 1, "one Job across restarts");
    assert_eq!(jobs[0].metadata.uid, first[0].metadata.uid, "the same Job");
    assert_eq!(done.status.unwrap().job_name, jobs[0].metadata.name);
    let stored: i64 = list_objects(&gw, &bkt)
        .await
        .iter()
        .filter(|(k, _)| k.ends_with(".sync"))
        .map(|(_, s)| s)
        .sum();
    assert_eq!(stored as u64, total);
    assert!(world.operator_log().contains("became leader"));
    world.cleanup().await;
}

#[tokio::test]
async fn deleting_a_delivery_mid_upload_leaves_no_open_multipart_upload() {
    let mut world = World::new("abort").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("abort-{}", suffix());
    bucket(&gw, &bkt).await;
    let folder = world.volume("exports").await;
    for i in 0..4 {
        write_lines(&folder.join(format!("big{i}.sync")), 1_500_000);
    }
    // 4 MiB/s per connection: the upload is still open when the delivery is deleted, however
    // fast the machine.
    let slow = proxy::Proxy::start(&endpoint).await;
    slow.faults.rate.store(4 << 20, Ordering::SeqCst);
    keyed_destination(&world, &bkt, &slow.url(), &key, &secret).await;
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("big", "acme", "exports", ""))
        .await
        .unwrap();
    // Mid-upload: the pod has recorded an upload id and the bucket shows it open.
    wait_for(
        "an open multipart upload",
        Duration::from_secs(120),
        || async {
            let d = world.delivery("big").await;
            let recorded = d.status?.progress?.open_uploads > 0;
            (recorded && !open_uploads(&gw, &bkt).await.is_empty()).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world
        .api::<OutboundDelivery>()
        .delete("big", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the delivery gone",
        Duration::from_secs(120),
        || async {
            world
                .api::<OutboundDelivery>()
                .get_opt("big")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    let pods = world
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(pods.is_empty(), "the upload pods are gone");
    let open = open_uploads(&gw, &bkt).await;
    assert!(open.is_empty(), "open multipart uploads left: {open:?}");
    assert!(world.operator_log().contains("aborted multipart upload"));
    world.cleanup().await;
}

#[tokio::test]
async fn a_second_replica_waits_for_the_lease() {
    let mut world = World::new("leader").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("leader-{}", suffix());
    bucket(&gw, &bkt).await;
    world.start_operator();
    wait_for(
        "the first replica leads",
        Duration::from_secs(30),
        || async { world.operator_log().contains("became leader").then_some(()) },
        || world.diagnose(),
    )
    .await;
    let standby_log = world.dir.path().join("standby.log");
    let mut standby = world.spawn_operator("standby", &standby_log);
    let read = || std::fs::read_to_string(&standby_log).unwrap_or_default();
    wait_for(
        "the standby waits",
        Duration::from_secs(30),
        || async {
            read()
                .contains("another replica leads; waiting")
                .then_some(())
        },
        read,
    )
    .await;
    // The leader dies without releasing the Lease: the standby takes over once it expires.
    world.kill_operator();
    wait_for(
        "the standby leads",
        Duration::from_secs(30),
        || async { read().contains("became leader").then_some(()) },
        read,
    )
    .await;
    keyed_destination(&world, &bkt, &endpoint, &key, &secret).await;
    world.wait_destination("acme", "True", "Validated").await;
    let _ = standby.kill();
    let _ = standby.wait();
    world.cleanup().await;
}

/// Runs a boto3 snippet against moto as the ground's admin; `iam`, `s3` and `json` are in scope.
fn moto_admin_python(env: &GroundEnv, body: &str) -> String {
    let python = std::env::var("HOME").unwrap() + "/.cache/outbound/venv/bin/python";
    let script = format!(
        "import boto3,json\nkw=dict(endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{}',aws_secret_access_key='{}')\niam=boto3.client('iam',**kw)\nsts=boto3.client('sts',**kw)\n{body}",
        env.moto_endpoint, env.moto_access_key, env.moto_secret_key
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
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Creates a moto role trusting `principal` with `external_id`, allowed everything on S3.
fn moto_role(env: &GroundEnv, role: &str, principal: &str, external_id: &str) -> String {
    moto_admin_python(
        env,
        &format!(
            "trust={{'Version':'2012-10-17','Statement':[{{'Effect':'Allow','Principal':{{'AWS':'{principal}'}},'Action':'sts:AssumeRole','Condition':{{'StringEquals':{{'sts:ExternalId':'{external_id}'}}}}}}]}}\n\
r=iam.create_role(RoleName='{role}',AssumeRolePolicyDocument=json.dumps(trust))['Role']['Arn']\n\
iam.put_role_policy(RoleName='{role}',PolicyName='s3',PolicyDocument=json.dumps({{'Version':'2012-10-17','Statement':[{{'Effect':'Allow','Action':'s3:*','Resource':'*'}}]}}))\n\
print(r)"
        ),
    )
}

/// Waits until the destination shows a generated ExternalId and returns it with the status.
async fn wait_external_id(world: &World, name: &str) -> (String, OutboundDestination) {
    wait_for(
        &format!("destination {name} shows a generated ExternalId and a trust statement"),
        Duration::from_secs(60),
        || async {
            let d = world.destination(name).await;
            let s = d.status.as_ref()?;
            s.trust_policy_statement.as_ref()?;
            Some((s.external_id.clone()?, d))
        },
        || world.diagnose(),
    )
    .await
}

#[tokio::test]
async fn cross_account_modes_probe_with_our_identity_and_the_external_id() {
    let mut world = World::new("cross").await;
    let env = &world.env;
    let moto_admin = s3(
        &env.moto_endpoint,
        "us-east-1",
        &env.moto_access_key,
        &env.moto_secret_key,
    )
    .await;
    let bkt = format!("cross-{}", suffix());
    bucket(&moto_admin, &bkt).await;
    let role = format!("outbound-{}", suffix());
    let own_role = format!("outbound-own-{}", suffix());
    let admin_arn = moto_admin_python(env, "print(sts.get_caller_identity()['Arn'])");
    // The customer's role trusts us with an id not agreed yet (moto lets anyone assume a role
    // that does not exist, so the role is there from the start); it is fixed from what the
    // destination shows.
    let role_arn = moto_role(env, &role, &admin_arn, "not-agreed-yet");
    let own_role_arn = moto_role(env, &own_role, &admin_arn, "ext-own");
    let moto = env.moto_endpoint.clone();
    let (ak, sk) = (env.moto_access_key.clone(), env.moto_secret_key.clone());
    let cases = [
        (
            "generated",
            format!("{{crossAccount: {{roleArn: \"{role_arn}\"}}}}"),
        ),
        (
            "own-id",
            format!("{{crossAccount: {{roleArn: \"{own_role_arn}\", externalId: ext-own}}}}"),
        ),
        ("allowlist", "{crossAccount: {}}".to_string()),
    ];
    for (name, creds) in &cases {
        world
            .apply_yaml::<OutboundDestination>(&destination_yaml(name, &bkt, &moto, creds, ""))
            .await
            .unwrap();
    }
    // The operator's own workload identity: the AWS default chain, here environment keys.
    let identity = [
        ("AWS_ACCESS_KEY_ID", ak.as_str()),
        ("AWS_SECRET_ACCESS_KEY", sk.as_str()),
        ("AWS_REGION", "us-east-1"),
    ];
    world.start_operator_with_env(&identity);
    let (external_id, _) = wait_external_id(&world, "generated").await;
    assert!(
        external_id.len() == 32 && external_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{external_id}"
    );
    // No role yet: AssumeRole is refused, and the status says what the trust policy needs.
    let denied = world
        .wait_destination("generated", "False", "AssumeRoleDenied")
        .await
        .status
        .unwrap();
    let trust: serde_json::Value =
        serde_json::from_str(denied.trust_policy_statement.as_deref().unwrap()).unwrap();
    assert_eq!(trust["Principal"]["AWS"], admin_arn.as_str());
    assert_eq!(
        trust["Condition"]["StringEquals"]["sts:ExternalId"],
        external_id.as_str()
    );
    assert_eq!(denied.external_id.as_deref(), Some(external_id.as_str()));
    // The customer puts exactly that id into the trust policy; the next probe assumes the role.
    moto_admin_python(
        &world.env,
        &format!(
            "trust={{'Version':'2012-10-17','Statement':[{}]}}\niam.update_assume_role_policy(RoleName='{role}',PolicyDocument=json.dumps(trust))",
            denied.trust_policy_statement.as_deref().unwrap()
        ),
    );
    let right = world
        .wait_destination("generated", "True", "Validated")
        .await
        .status
        .unwrap();
    let arn = right.identity.unwrap().arn.unwrap_or_default();
    assert!(arn.contains(&format!("assumed-role/{role}/")), "{arn}");
    assert_eq!(right.external_id.as_deref(), Some(external_id.as_str()));
    assert_eq!(
        right.bucket_policy_statement, None,
        "no bucket policy needed with a role"
    );
    // An ExternalId the namespace's user chose is refused by default, before anything is asked.
    let refused = world
        .wait_destination("own-id", "False", "ExternalIdNotAllowed")
        .await
        .status
        .unwrap();
    assert!(
        refused.conditions[0].message.contains("status.externalId"),
        "{}",
        refused.conditions[0].message
    );
    let allow = world
        .wait_destination("allowlist", "True", "Validated")
        .await
        .status
        .unwrap();
    assert_eq!(allow.external_id, None, "no ExternalId without a role");
    let policy = allow
        .bucket_policy_statement
        .expect("the bucket-policy statement for the allowlist mode");
    assert!(
        policy.contains(&admin_arn) && policy.contains(&format!("arn:aws:s3:::{bkt}/*")),
        "{policy}"
    );
    // A restarted operator, now allowing spec ExternalIds: the generated id stays as it was, and
    // the destination's own id is used.
    world.kill_operator();
    let mut allowing = identity.to_vec();
    allowing.push(("OUTBOUND_ALLOW_SPEC_EXTERNAL_ID", "true"));
    world.start_operator_with_env(&allowing);
    let own = world
        .wait_destination("own-id", "True", "Validated")
        .await
        .status
        .unwrap();
    let arn = own.identity.unwrap().arn.unwrap_or_default();
    assert!(arn.contains(&format!("assumed-role/{own_role}/")), "{arn}");
    assert!(
        own.trust_policy_statement.unwrap().contains("ext-own"),
        "the statement names the id in use"
    );
    // A probe later (the interval is 20 s), the generated id is unchanged.
    let before = world.destination("generated").await.status.unwrap();
    wait_for(
        "the generated destination is probed again",
        Duration::from_secs(60),
        || async {
            let now = world.destination("generated").await.status.unwrap();
            (now.last_probe_time != before.last_probe_time).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    let after = world
        .wait_destination("generated", "True", "Validated")
        .await
        .status
        .unwrap();
    assert_eq!(after.external_id.as_deref(), Some(external_id.as_str()));
    assert!(!world.operator_log().contains(&sk));
    world.cleanup().await;
}

/// The crossAccount modes deliver end to end against moto: a delivery as the role assumed with the
/// generated ExternalId (through `stsEndpoint`, which the Job gets too), and one as our own
/// identity, which the upload pods get from the admin's workload-identity Secret (the ground's
/// pods inherit nothing from the host, and no IRSA exists there).
#[tokio::test]
async fn cross_account_deliveries_upload_as_the_assumed_role_and_as_our_identity() {
    let mut world = World::new("xdeliver").await;
    let env = &world.env;
    let moto_admin = s3(
        &env.moto_endpoint,
        "us-east-1",
        &env.moto_access_key,
        &env.moto_secret_key,
    )
    .await;
    let bkt = format!("xdeliver-{}", suffix());
    bucket(&moto_admin, &bkt).await;
    let admin_arn = moto_admin_python(env, "print(sts.get_caller_identity()['Arn'])");
    let role = format!("outbound-{}", suffix());
    let role_arn = moto_role(env, &role, &admin_arn, "not-agreed-yet");
    let moto = env.moto_endpoint.clone();
    let (ak, sk) = (env.moto_access_key.clone(), env.moto_secret_key.clone());
    world
        .secret(
            "outbound-identity",
            &[("AWS_ACCESS_KEY_ID", &ak), ("AWS_SECRET_ACCESS_KEY", &sk)],
        )
        .await;
    let folder = world.volume("exports").await;
    write_lines(&folder.join("a.sync"), 1000);
    write_lines(&folder.join("sub/b.sync"), 50);
    for (name, credentials) in [
        (
            "role",
            format!("{{crossAccount: {{roleArn: \"{role_arn}\"}}}}"),
        ),
        ("workload", "{crossAccount: {}}".to_string()),
    ] {
        world
            .apply_yaml::<OutboundDestination>(&format!(
                "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: {bkt}, region: us-east-1, endpoint: \"{moto}\", stsEndpoint: \"{moto}\", forcePathStyle: true}}\n  credentials: {credentials}\n  upload: {{checksumAlgorithm: CRC32C}}\n"
            ))
            .await
            .unwrap();
    }
    world.start_operator_with_env(&[
        ("AWS_ACCESS_KEY_ID", &ak),
        ("AWS_SECRET_ACCESS_KEY", &sk),
        ("AWS_REGION", "us-east-1"),
        ("OUTBOUND_WORKLOAD_IDENTITY_SECRET", "outbound-identity"),
    ]);
    let (external_id, shown) = wait_external_id(&world, "role").await;
    moto_admin_python(
        &world.env,
        &format!(
            "trust={{'Version':'2012-10-17','Statement':[{}]}}\niam.update_assume_role_policy(RoleName='{role}',PolicyDocument=json.dumps(trust))",
            shown.status.unwrap().trust_policy_statement.unwrap()
        ),
    );
    world.wait_destination("role", "True", "Validated").await;
    world
        .wait_destination("workload", "True", "Validated")
        .await;
    for (name, destination) in [("d-role", "role"), ("d-workload", "workload")] {
        world
            .apply_yaml::<OutboundDelivery>(&delivery_yaml(
                name,
                destination,
                "exports",
                &format!("  keyPrefix: {destination}/\n"),
            ))
            .await
            .unwrap();
    }
    for name in ["d-role", "d-workload"] {
        world
            .wait_delivery(
                name,
                "Succeeded",
                Some("Delivered"),
                Duration::from_secs(180),
            )
            .await;
    }
    let jobs = jobs_in(&world).await;
    let role_job = jobs
        .iter()
        .find(|j| j.metadata.name.as_deref().unwrap().contains("d-role"))
        .expect("the role delivery's Job");
    let envs = role_job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let value = |name: &str| {
        envs.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("OUTBOUND_STS_ENDPOINT").as_deref(),
        Some(moto.as_str())
    );
    assert_eq!(
        value("OUTBOUND_EXTERNAL_ID").as_deref(),
        Some(external_id.as_str())
    );
    let mut keys: Vec<String> = list_objects(&moto_admin, &bkt)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "role/a.sync",
            "role/manifest.json",
            "role/sub/b.sync",
            "workload/a.sync",
            "workload/manifest.json",
            "workload/sub/b.sync",
        ]
    );
    world.cleanup().await;
}

/// ExpectedBucketOwner on versitygw, which honours it (its owner is the owning account's access
/// key id: an account whose key is 12 digits stands for an AWS account; moto ignores the header).
#[tokio::test]
async fn the_expected_bucket_owner_goes_with_every_request() {
    let mut world = World::new("owner").await;
    let env = &world.env;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let account = format!("{:012}", nanos % 1_000_000_000_000);
    let secret = format!("owner-secret-{}", suffix());
    versitygw_account(env, &account, &secret);
    let own = s3(&env.s3_endpoint, &env.s3_region, &account, &secret).await;
    let bkt = format!("owner-{}", suffix());
    bucket(&own, &bkt).await;
    let endpoint = env.s3_endpoint.clone();
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", account.as_str()),
                ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ],
        )
        .await;
    for (name, owner) in [("right", account.as_str()), ("wrong", "999988887777")] {
        world
            .apply_yaml::<OutboundDestination>(&format!(
                "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: {bkt}, region: us-east-1, endpoint: \"{endpoint}\", forcePathStyle: true, expectedBucketOwner: \"{owner}\"}}\n  credentials: {{secret: {{name: keys}}}}\n"
            ))
            .await
            .unwrap();
    }
    let folder = world.volume("exports").await;
    write_lines(&folder.join("a.sync"), 100);
    world.start_operator();
    world.wait_destination("right", "True", "Validated").await;
    let wrong = world
        .wait_destination("wrong", "False", "BucketOwnerMismatch")
        .await
        .status
        .unwrap();
    assert!(
        wrong.conditions[0].message.contains("999988887777"),
        "{}",
        wrong.conditions[0].message
    );
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("d", "right", "exports", ""))
        .await
        .unwrap();
    world
        .wait_delivery(
            "d",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(120),
        )
        .await;
    let job = &jobs_in(&world).await[0];
    let envs = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        envs.iter()
            .any(|e| e.name == "OUTBOUND_EXPECTED_BUCKET_OWNER"
                && e.value.as_deref() == Some(account.as_str()))
    );
    // The uploader itself: another owner named, every request is refused and nothing is written.
    let run = |owner: &str, prefix: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(["upload", "--bucket", &bkt, "--endpoint", &endpoint])
            .args(["--force-path-style", "--source"])
            .arg(&folder)
            .args(["--prefix", prefix, "--expected-bucket-owner", owner])
            .env_remove("OUTBOUND_DELIVERY")
            .env("AWS_ACCESS_KEY_ID", &account)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .output()
            .expect("outbound upload")
    };
    let refused = run("999988887777", "refused/");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("AccessDenied") || stderr.contains("403"),
        "{stderr}"
    );
    let accepted = run(&account, "accepted/");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let keys: Vec<String> = list_objects(&own, &bkt)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.iter().any(|k| k == "accepted/a.sync"), "{keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with("refused/")), "{keys:?}");
    world.cleanup().await;
}

/// The bucket-policy statements of the ACL tests: `writer` may do what uploads do, `blind` may
/// write and delete but not read; `deny` is the statement about ACLs.
fn acl_policy(bkt: &str, writer: &str, blind: &str, deny: serde_json::Value) -> String {
    let objects = format!("arn:aws:s3:::{bkt}/*");
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [writer]}, "Resource": &objects,
         "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]},
        {"Effect": "Allow", "Principal": {"AWS": [blind]}, "Resource": &objects,
         "Action": ["s3:PutObject", "s3:DeleteObject"]},
        {"Effect": "Allow", "Principal": {"AWS": [writer, blind]}, "Resource": format!("arn:aws:s3:::{bkt}"),
         "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"]},
        {"Sid": "OwnerFullControl", "Effect": "Deny", "Principal": "*", "Resource": &objects,
         "Action": "s3:PutObject", "Condition": deny},
    ]})
    .to_string()
}

/// Bucket policies about the `x-amz-acl` header, on versitygw, which evaluates `s3:x-amz-acl` in
/// bucket-policy conditions (for every request authorized as s3:PutObject: PutObject,
/// CreateMultipartUpload, UploadPart) as AWS does; moto evaluates no bucket policy at all.
///
/// `strict`: AWS's documented pattern, every s3:PutObject without `x-amz-acl:
/// bucket-owner-full-control` denied. A write without that ACL or with another one: `AclRefused`
/// naming bucket, key and header. With it, single PUTs pass but no multipart upload can: its parts
/// carry no ACL (the uploader proves it: a small file goes, a large one fails on UploadPart), so
/// the probe does not call that destination Ready either, and says why.
///
/// `owner`: the variant that lets parts through (the ACL, when sent, must be
/// bucket-owner-full-control): Ready, a delivery (single PUT, multipart object, manifest) passes,
/// and the same destination switched to an ACL the bucket refuses flips to `AclRefused`. An
/// identity that may write but not read is not Ready: uploads read objects back.
#[tokio::test]
async fn bucket_policies_on_the_acl_are_met_or_named_by_the_probe_as_by_the_uploads() {
    let mut world = World::new("acl").await;
    let env = &world.env;
    let root = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let (writer, blind) = (format!("aclw{}", suffix()), format!("aclb{}", suffix()));
    let secret = format!("acl-secret-{}", suffix());
    versitygw_account_as(env, &writer, &secret, "user");
    versitygw_account_as(env, &blind, &secret, "user");
    let (strict, owner) = (
        format!("strict-{}", suffix()),
        format!("owner-{}", suffix()),
    );
    let not_owner =
        serde_json::json!({"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}});
    let sent_not_owner = serde_json::json!({
        "StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"},
        "Null": {"s3:x-amz-acl": "false"},
    });
    for (bkt, deny) in [(&strict, not_owner), (&owner, sent_not_owner)] {
        bucket(&root, bkt).await;
        root.put_bucket_policy()
            .bucket(bkt)
            .policy(acl_policy(bkt, &writer, &blind, deny))
            .send()
            .await
            .expect("versitygw takes the bucket policy");
    }
    for (name, key) in [("writer-keys", &writer), ("blind-keys", &blind)] {
        world
            .secret(
                name,
                &[
                    ("AWS_ACCESS_KEY_ID", key.as_str()),
                    ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
                ],
            )
            .await;
    }
    let endpoint = env.s3_endpoint.clone();
    let destination = |name: &str, bkt: &str, keys: &str, acl: Option<&str>| {
        let upload = match acl {
            Some(acl) => format!("  upload: {{acl: {acl}, checksumAlgorithm: CRC32C}}\n"),
            None => String::new(),
        };
        destination_yaml(
            name,
            bkt,
            &endpoint,
            &format!("{{secret: {{name: {keys}}}}}"),
            &upload,
        )
    };
    let full = Some("bucket-owner-full-control");
    for (name, bkt, keys, acl) in [
        ("strict-none", &strict, "writer-keys", None),
        ("strict-public", &strict, "writer-keys", Some("public-read")),
        ("strict-owner", &strict, "writer-keys", full),
        ("owner", &owner, "writer-keys", full),
        ("blind", &owner, "blind-keys", full),
    ] {
        world
            .apply_yaml::<OutboundDestination>(&destination(name, bkt, keys, acl))
            .await
            .unwrap();
    }
    let folder = world.volume("exports").await;
    write_lines(&folder.join("a.sync"), 1000);
    // Above the 16 MiB threshold: a multipart upload.
    write_lines(&folder.join("big/big.sync"), 180_000);
    world.start_operator();

    let message = |d: OutboundDestination| d.status.unwrap().conditions[0].message.clone();
    let assert_has = |text: &str, parts: &[&str]| {
        for part in parts {
            assert!(text.contains(part), "{part:?} not in: {text}");
        }
    };
    world.wait_destination("owner", "True", "Validated").await;
    let refused_at = format!("bucket {strict} refuses PutObject of .outbound-probe-");
    let none = message(
        world
            .wait_destination("strict-none", "False", "AclRefused")
            .await,
    );
    assert_has(
        &none,
        &[
            &refused_at,
            "without an x-amz-acl header",
            "accepts the same write with x-amz-acl: bucket-owner-full-control",
            "set spec.upload.acl to bucket-owner-full-control",
        ],
    );
    let public = message(
        world
            .wait_destination("strict-public", "False", "AclRefused")
            .await,
    );
    assert_has(&public, &[&refused_at, "with x-amz-acl: public-read"]);
    let parts = message(
        world
            .wait_destination("strict-owner", "False", "AccessDenied")
            .await,
    );
    assert_has(
        &parts,
        &[
            "UploadPart (s3:PutObject)",
            &format!("bucket {strict}"),
            "multipart probe object .outbound-probe-",
            "s3:x-amz-acl",
        ],
    );
    let blind_msg = message(
        world
            .wait_destination("blind", "False", "AccessDenied")
            .await,
    );
    assert_has(
        &blind_msg,
        &[
            "HeadObject (s3:GetObject)",
            &format!("bucket {owner}"),
            "probe object .outbound-probe-",
        ],
    );

    // The uploader agrees with the probe on the strict bucket: a single PUT with the ACL passes,
    // a multipart upload fails on its parts.
    let upload = |include: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(["upload", "--bucket", &strict, "--endpoint", &endpoint])
            .args(["--force-path-style", "--acl", "bucket-owner-full-control"])
            .arg("--source")
            .arg(&folder)
            .args(["--include", include])
            .env_remove("OUTBOUND_DELIVERY")
            .env("AWS_ACCESS_KEY_ID", &writer)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .output()
            .expect("outbound upload")
    };
    let small = upload("a.sync");
    assert!(
        small.status.success(),
        "{}",
        String::from_utf8_lossy(&small.stderr)
    );
    let large = upload("big/*");
    let stderr = String::from_utf8_lossy(&large.stderr);
    assert!(!large.status.success(), "{stderr}");
    assert!(
        stderr.contains("upload part") && stderr.contains("AccessDenied"),
        "{stderr}"
    );
    // The other destinations keep probing these buckets, so a probe object or upload may be in
    // flight at any moment: what must never happen is one that stays. The keys and open uploads
    // once none is there.
    let settled = |bkt: &str| {
        let (root, bkt, world) = (&root, bkt.to_string(), &world);
        async move {
            wait_for(
                &format!("no probe object or upload in bucket {bkt}"),
                Duration::from_secs(30),
                || async {
                    let mut keys: Vec<String> = list_objects(root, &bkt)
                        .await
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect();
                    keys.sort();
                    let uploads = open_uploads(root, &bkt).await;
                    let probe = |k: &String| k.contains(".outbound-probe-");
                    (!keys.iter().any(probe) && !uploads.iter().any(probe))
                        .then_some((keys, uploads))
                },
                || world.diagnose(),
            )
            .await
        }
    };
    assert_eq!(settled(&strict).await.0, ["a.sync"]);

    // The bucket that takes parts: a delivery with the ACL passes, every kind of write included.
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "d",
            "owner",
            "exports",
            "  keyPrefix: out/\n  manifest: true\n",
        ))
        .await
        .unwrap();
    world
        .wait_delivery(
            "d",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    let delivered = ["out/a.sync", "out/big/big.sync", "out/manifest.json"];
    assert_eq!(
        settled(&owner).await,
        (delivered.map(String::from).to_vec(), vec![])
    );
    // The same destination with an ACL the bucket refuses: Ready flips, the header named.
    world
        .apply_yaml::<OutboundDestination>(&destination(
            "owner",
            &owner,
            "writer-keys",
            Some("public-read"),
        ))
        .await
        .unwrap();
    let flipped = message(world.wait_destination("owner", "False", "AclRefused").await);
    assert_has(
        &flipped,
        &[
            &format!("bucket {owner} refuses PutObject of .outbound-probe-"),
            "with x-amz-acl: public-read",
        ],
    );
    assert_eq!(
        settled(&owner).await,
        (delivered.map(String::from).to_vec(), vec![])
    );
    // On the strict bucket only the uploader's refused upload stays open (pods leave uploads to
    // the operator); every multipart probe aborted its own.
    assert_eq!(settled(&strict).await.1, ["big/big.sync"]);
    world.cleanup().await;
}

#[tokio::test]
async fn a_suspended_delivery_waits_and_resumes() {
    let mut world = World::new("suspend").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("suspend-{}", suffix());
    bucket(&gw, &bkt).await;
    let folder = world.volume("exports").await;
    write_lines(&folder.join("a.sync"), 100);
    keyed_destination(&world, &bkt, &endpoint, &key, &secret).await;
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml("d", "acme", "exports", "  suspend: true\n"))
        .await
        .unwrap();
    world.start_operator();
    world
        .wait_delivery("d", "Pending", Some("Suspended"), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = jobs_in(&world).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].spec.as_ref().unwrap().suspend, Some(true));
    assert!(
        world
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(list_objects(&gw, &bkt).await.is_empty());
    world
        .apply_yaml::<OutboundDelivery>(&delivery_yaml(
            "d",
            "acme",
            "exports",
            "  suspend: false\n",
        ))
        .await
        .expect("suspend may change on a started delivery");
    world
        .wait_delivery(
            "d",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(
        list_objects(&gw, &bkt).await.len(),
        2,
        "a.sync and the manifest"
    );
    world.cleanup().await;
}

/// A client that authenticates with `token` instead of the ground's admin certificate.
async fn client_with_token(token: String) -> kube::Client {
    let mut config = kube::Config::infer()
        .await
        .expect("the ground's KUBECONFIG");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    kube::Client::try_from(config).expect("a client with a token")
}

/// A token of the upload pods' ServiceAccount, bound to `pod` (as the kubelet gives a pod), or
/// bound to nothing.
async fn upload_token(world: &World, pod: Option<&Pod>) -> String {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            bound_object_ref: pod.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    world
        .api::<ServiceAccount>()
        .create_token_request(
            outbound::api::UPLOAD_SERVICE_ACCOUNT,
            &Default::default(),
            &request,
        )
        .await
        .expect("a token request for the upload account")
        .status
        .expect("a token")
        .token
        .expect("a token")
}

/// A pod named as the Job controller names the pods of `job`, under the upload account, that no
/// scheduler takes (it only has to exist for a token to be bound to it).
async fn stand_in_pod(world: &World, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "serviceAccountName": outbound::api::UPLOAD_SERVICE_ACCOUNT,
            "schedulerName": "nobody",
            "containers": [{"name": "c", "image": "never-runs"}],
        },
    }))
    .unwrap();
    world
        .api::<Pod>()
        .create(&Default::default(), &pod)
        .await
        .expect("the stand-in pod")
}

/// What an upload pod writes: its shard object (created by the first apply), then its report,
/// server-side applied under its own manager.
async fn report_as(
    client: &kube::Client,
    ns: &str,
    shard: &str,
    delivery: &OutboundDelivery,
    bytes_done: u64,
) -> Result<(), kube::Error> {
    let api = kube::Api::<OutboundShard>::namespaced(client.clone(), ns);
    let params = PatchParams::apply("outbound-uploader-0").force();
    let object = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundShard",
        "metadata": {"name": shard, "ownerReferences": [{
            "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDelivery",
            "name": delivery.name_any(), "uid": delivery.uid().unwrap(), "controller": true,
        }]},
        "spec": {"delivery": delivery.name_any(), "index": 0},
    });
    api.patch(shard, &params, &Patch::Apply(&object)).await?;
    let report = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundShard",
        "metadata": {"name": shard},
        "status": {
            "bytesDone": bytes_done, "bytesTotal": 100, "objectsDone": 0, "objectsTotal": 1,
            "finished": false, "updatedAt": "2026-11-28T10:00:00Z",
        },
    });
    api.patch_status(shard, &params, &Patch::Apply(&report))
        .await
        .map(|_| ())
}

/// A write of a delivery's status (what a pod did before shards had objects of their own).
async fn write_delivery_status(
    client: &kube::Client,
    ns: &str,
    delivery: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDelivery",
        "metadata": {"name": delivery},
        "status": status,
    });
    kube::Api::<OutboundDelivery>::namespaced(client.clone(), ns)
        .patch_status(
            delivery,
            &PatchParams::apply("outbound-uploader-0").force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

fn assert_refused(result: Result<(), kube::Error>, words: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains(words), "{}", status.message);
        }
        other => panic!("expected a refusal saying {words:?}, got {other:?}"),
    }
}

/// The names of the test namespace's objects of one kind.
async fn names_in<K>(world: &World) -> Vec<String>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    world
        .api::<K>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

/// The upload pods of a namespace share one ServiceAccount, Role and RoleBinding, whatever the
/// number of deliveries; the upload-pods admission policy keeps each pod to its own shard object:
/// the pod of A's Job index 0 may report on A's shard 0, not on B's; no token but the operator's
/// writes a delivery's status (so none can re-point its jobName); a token of the upload account
/// not bound to the shard's pod, an account a destination names, and a namespace user with
/// rights on every `outbound.dev` resource may report on nothing.
#[tokio::test]
async fn an_upload_pod_may_report_on_its_own_shard_only() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let mut world = World::new("isolation").await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("isolation-{}", suffix());
    bucket(&gw, &bkt).await;
    world.volume("exports").await;
    keyed_destination(&world, &bkt, &endpoint, &key, &secret).await;
    for name in ["a", "b", "c"] {
        world
            .apply_yaml::<OutboundDelivery>(&delivery_yaml(
                name,
                "acme",
                "exports",
                "  suspend: true\n",
            ))
            .await
            .unwrap();
    }
    world.start_operator();
    let mut job = std::collections::BTreeMap::new();
    for name in ["a", "b", "c"] {
        let d = world
            .wait_delivery(name, "Pending", Some("Suspended"), Duration::from_secs(60))
            .await;
        job.insert(name, d.status.unwrap().job_name.expect("a recorded Job"));
    }
    assert_eq!(jobs_in(&world).await.len(), 3);
    assert_eq!(
        names_in::<Role>(&world).await,
        ["outbound-upload"],
        "one Role for the namespace"
    );
    assert_eq!(
        names_in::<RoleBinding>(&world).await,
        ["outbound-upload"],
        "one RoleBinding"
    );
    assert!(
        world
            .api::<ServiceAccount>()
            .get_opt(outbound::api::UPLOAD_SERVICE_ACCOUNT)
            .await
            .unwrap()
            .is_some()
    );
    let (a, b) = (world.delivery("a").await, world.delivery("b").await);
    let shard_a = outbound::api::shard_name(&job["a"], 0);
    let shard_b = outbound::api::shard_name(&job["b"], 0);

    let pod = stand_in_pod(&world, &format!("{shard_a}-x7k2q")).await;
    let as_pod_of_a = client_with_token(upload_token(&world, Some(&pod)).await).await;
    let ns = world.ns.clone();
    // The policy may take a moment to be enforced after it was first applied on this ground.
    wait_for(
        "the upload-pods policy to refuse a report on another shard",
        Duration::from_secs(30),
        || async {
            report_as(&as_pod_of_a, &ns, &shard_b, &b, 7)
                .await
                .is_err()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert_refused(
        report_as(&as_pod_of_a, &ns, &shard_b, &b, 7).await,
        &format!("may write only its own shard, not {shard_b}"),
    );
    report_as(&as_pod_of_a, &ns, &shard_a, &a, 42)
        .await
        .expect("the pod of A's index 0 reports on A's shard 0");
    // The operator folds the report into A's status; B has none.
    wait_for(
        "A's progress folded from its shard",
        Duration::from_secs(30),
        || async {
            let p = world.delivery("a").await.status?.progress?;
            (p.bytes_done == 42).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert!(world.delivery("b").await.status.unwrap().progress.is_none());
    // No pod writes a delivery's status, its own or another's (its Role has no such rule): a
    // jobName cannot be re-pointed.
    for target in ["a", "b"] {
        assert_refused(
            write_delivery_status(
                &as_pod_of_a,
                &ns,
                target,
                serde_json::json!({"jobName": job["c"]}),
            )
            .await,
            "cannot patch resource \"outbounddeliveries/status\"",
        );
    }
    assert_eq!(
        world
            .delivery("a")
            .await
            .status
            .unwrap()
            .job_name
            .as_deref(),
        Some(job["a"].as_str())
    );

    // A pod named like the shard's pod but one character off is not it.
    let near = stand_in_pod(&world, &format!("{shard_a}-x7k2qq")).await;
    let as_near = client_with_token(upload_token(&world, Some(&near)).await).await;
    assert_refused(
        report_as(&as_near, &ns, &shard_a, &a, 44).await,
        &format!("may write only its own shard, not {shard_a}"),
    );
    // The account's token without a pod: nothing.
    let unbound = client_with_token(upload_token(&world, None).await).await;
    assert_refused(
        report_as(&unbound, &ns, &shard_a, &a, 45).await,
        "may be written only with the token of its upload pod",
    );
    // An account a destination names for its pods (bound to the upload Role as the operator
    // binds it), with a token made by `kubectl create token`, bound to no pod: nothing either.
    let named = "workload-writer";
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": named}})).unwrap();
    world
        .api::<ServiceAccount>()
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    world
        .api::<RoleBinding>()
        .create(
            &Default::default(),
            &outbound::job::build_role_binding(&ns, named),
        )
        .await
        .unwrap();
    let token_of = |account: &str| {
        let out = std::process::Command::new("kubectl")
            .args(["create", "token", account, "-n", &ns])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let as_named = client_with_token(token_of(named)).await;
    assert_refused(
        report_as(&as_named, &ns, &shard_a, &a, 46).await,
        "may be written only with the token of its upload pod",
    );
    // A namespace user with every right on `outbound.dev` resources (and none on Jobs): may
    // create deliveries, may not write any status or shard.
    let teammate = "teammate";
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": teammate}})).unwrap();
    world
        .api::<ServiceAccount>()
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": teammate},
        "rules": [{"apiGroups": ["outbound.dev"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .unwrap();
    world
        .api::<Role>()
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": teammate},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": teammate},
        "subjects": [{"kind": "ServiceAccount", "name": teammate, "namespace": ns}],
    }))
    .unwrap();
    world
        .api::<RoleBinding>()
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let as_teammate = client_with_token(token_of(teammate)).await;
    assert_refused(
        report_as(&as_teammate, &ns, &shard_a, &a, 47).await,
        "may be written only with the token of its upload pod",
    );
    assert_refused(
        write_delivery_status(
            &as_teammate,
            &ns,
            "a",
            serde_json::json!({"phase": "Succeeded"}),
        )
        .await,
        "only the operator writes the status of delivery a",
    );
    let shard = world
        .api::<OutboundShard>()
        .get(&shard_a)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(shard.bytes_done, 42, "no refused report changed anything");
    assert_eq!(
        world.delivery("a").await.status.unwrap().phase,
        Some(outbound::api::Phase::Pending)
    );
    world.cleanup().await;
}

/// Server-side applies `yaml` into `ns` with `client` (a team's user, or the admin).
async fn apply_as<K>(client: &kube::Client, ns: &str, yaml: &str) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    use kube::ResourceExt;
    let obj: K = serde_yaml::from_str(yaml).expect("test YAML parses");
    kube::Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &obj.name_any(),
            &PatchParams::apply("team-b").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map(|_| ())
}

/// A user of the test namespace who may do anything with `outbound.dev` resources there and
/// nothing else (no Secrets, no Jobs, nothing cluster-wide): a ServiceAccount's token.
async fn outbound_only_user(world: &World, name: &str) -> kube::Client {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    world
        .api::<ServiceAccount>()
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["outbound.dev"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .unwrap();
    world
        .api::<Role>()
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": world.ns}],
    }))
    .unwrap();
    world
        .api::<RoleBinding>()
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = world
        .api::<ServiceAccount>()
        .create_token_request(name, &Default::default(), &request)
        .await
        .expect("a token for the team's user")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    client_with_token(token).await
}

/// With tenancy grants configured, a user with rights only on `outbound.dev` resources in
/// namespace b cannot make the operator or its Jobs write to a bucket, assume a role or reach an
/// endpoint not granted to b: the API server refuses the destination and says which field; what
/// is granted is admitted, becomes Ready and delivers. A grant removed after admission: the
/// destination turns Ready=False, NotGranted, and a delivery to it gets no Job until the grant is
/// back. The grants govern only this test's namespaces (b, and c that no grant names), so tests
/// running beside it keep the single-team behaviour, as does namespace d here.
#[tokio::test]
async fn a_namespace_may_use_only_the_buckets_roles_and_endpoints_granted_to_it() {
    use k8s_openapi::api::core::v1::Namespace;
    use outbound::api::OutboundTenancy;
    let mut world = World::new("grants").await;
    let b = world.ns.clone();
    let (c, d) = (format!("{b}-c"), format!("{b}-d"));
    for ns in [&c, &d] {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        kube::Api::<Namespace>::all(world.client.clone())
            .create(&Default::default(), &namespace)
            .await
            .unwrap();
    }
    let env = &world.env;
    let moto = env.moto_endpoint.clone();
    let (ak, sk) = (env.moto_access_key.clone(), env.moto_secret_key.clone());
    let moto_admin = s3(&moto, "us-east-1", &ak, &sk).await;
    let granted = format!("granted-{}", suffix());
    let other = format!("other-{}", suffix());
    bucket(&moto_admin, &granted).await;
    bucket(&moto_admin, &other).await;
    let role_prefix = "arn:aws:iam::123456789012:role/granted-";
    let grants = |buckets: &str| {
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundTenancy\nmetadata: {{name: default}}\nspec:\n  namespaces: [{b}, {c}]\n  grants:\n    - namespaces: [{b}]\n      buckets: {buckets}\n      roleArns: [\"{role_prefix}*\"]\n      endpoints: [\"{moto}\"]\n"
        )
    };
    let _guard = TenancyGuard;
    apply_tenancy(&world, &grants(&format!("[{granted}, {b}-spare-*]"))).await;

    let team_b = outbound_only_user(&world, "team-b").await;
    let dest = |name: &str, bucket: &str, endpoint: &str, credentials: &str| {
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3: {{bucket: {bucket}, region: us-east-1, endpoint: \"{endpoint}\", stsEndpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {credentials}\n"
        )
    };
    let allowlist = "{crossAccount: {}}";
    // The policy's param informer may take a moment to see a tenancy object just created. Asked
    // with a dry run: an object admitted before would pass every later unchanged apply.
    wait_for(
        "the tenancy policy to refuse a bucket not granted",
        Duration::from_secs(30),
        || async {
            let obj: OutboundDestination =
                serde_yaml::from_str(&dest("other", &other, &moto, allowlist)).unwrap();
            kube::Api::<OutboundDestination>::namespaced(team_b.clone(), &b)
                .patch(
                    "other",
                    &PatchParams::apply("team-b").force().dry_run(),
                    &Patch::Apply(&obj),
                )
                .await
                .is_err()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert_refused(
        apply_as::<OutboundDestination>(&team_b, &b, &dest("other", &other, &moto, allowlist))
            .await,
        &format!(
            "spec.s3.bucket {other} is not granted to namespace {b} (OutboundTenancy default)"
        ),
    );
    let foreign_role = "arn:aws:iam::123456789012:role/someone-else";
    assert_refused(
        apply_as::<OutboundDestination>(
            &team_b,
            &b,
            &dest(
                "foreign-role",
                &granted,
                &moto,
                &format!("{{crossAccount: {{roleArn: \"{foreign_role}\"}}}}"),
            ),
        )
        .await,
        &format!(
            "spec.credentials.crossAccount.roleArn {foreign_role} is not granted to namespace {b} with bucket {granted}"
        ),
    );
    let gw = world.env.s3_endpoint.clone();
    assert_refused(
        apply_as::<OutboundDestination>(&team_b, &b, &dest("gw", &granted, &gw, allowlist)).await,
        &format!("spec.s3.endpoint {gw} is not granted to namespace {b} with bucket {granted}"),
    );
    // The grants themselves are the admin's: b's user can neither read nor change them.
    let tenancies = kube::Api::<OutboundTenancy>::all(team_b.clone());
    match tenancies.get("default").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("b's user read the tenancy: {other:?}"),
    }
    let widen: OutboundTenancy = serde_yaml::from_str(&grants("[\"*\"]")).unwrap();
    match tenancies
        .patch(
            "default",
            &PatchParams::apply("team-b").force(),
            &Patch::Apply(&widen),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("b's user changed the tenancy: {other:?}"),
    }
    // A governed namespace that no grant names gets no cross-account destination, even from the
    // admin; a namespace the grants do not govern keeps the single-team behaviour.
    assert_refused(
        apply_as::<OutboundDestination>(
            &world.client,
            &c,
            &dest("other", &other, &moto, allowlist),
        )
        .await,
        &format!("namespace {c} has no grant for cross-account destinations"),
    );
    apply_as::<OutboundDestination>(&world.client, &d, &dest("other", &other, &moto, allowlist))
        .await
        .expect("a namespace outside the governed ones is not restricted");
    // The team's own keys are not restricted by grants.
    apply_as::<OutboundDestination>(
        &team_b,
        &b,
        &dest("own-keys", &other, &moto, "{secret: {name: customer-keys}}"),
    )
    .await
    .expect("a secret-keys destination is admitted whatever its bucket");
    // What is granted is admitted: the bucket with our identity, and a granted role with it.
    apply_as::<OutboundDestination>(&team_b, &b, &dest("granted", &granted, &moto, allowlist))
        .await
        .expect("the granted bucket is admitted");
    apply_as::<OutboundDestination>(
        &team_b,
        &b,
        &dest(
            "granted-role",
            &granted,
            &moto,
            &format!("{{crossAccount: {{roleArn: \"{role_prefix}writer\"}}}}"),
        ),
    )
    .await
    .expect("the granted role with the granted bucket is admitted");
    // ... and an update to a bucket not granted is refused like a create.
    assert_refused(
        apply_as::<OutboundDestination>(&team_b, &b, &dest("granted", &other, &moto, allowlist))
            .await,
        &format!("spec.s3.bucket {other} is not granted to namespace {b}"),
    );

    // The operator, with the admin's identity for itself and (through the workload-identity
    // Secret) for the upload pods.
    world
        .secret(
            "outbound-identity",
            &[("AWS_ACCESS_KEY_ID", &ak), ("AWS_SECRET_ACCESS_KEY", &sk)],
        )
        .await;
    let operator_env = [
        ("AWS_ACCESS_KEY_ID", ak.as_str()),
        ("AWS_SECRET_ACCESS_KEY", sk.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("OUTBOUND_WORKLOAD_IDENTITY_SECRET", "outbound-identity"),
    ];
    let folder = world.volume("exports").await;
    write_lines(&folder.join("a.sync"), 100);
    world.start_operator_with_env(&operator_env);
    world.wait_destination("granted", "True", "Validated").await;
    let delivery = |name: &str| {
        delivery_yaml(
            name,
            "granted",
            "exports",
            &format!("  keyPrefix: {name}/\n"),
        )
    };
    apply_as::<OutboundDelivery>(&team_b, &b, &delivery("first"))
        .await
        .unwrap();
    world
        .wait_delivery(
            "first",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;

    // The grant of the bucket is removed while the operator is away: the destination still says
    // Ready (nobody probed it since), and b's user asks for another delivery to it.
    world.kill_operator();
    apply_tenancy(&world, &grants(&format!("[{b}-spare-*]"))).await;
    apply_as::<OutboundDelivery>(&team_b, &b, &delivery("second"))
        .await
        .unwrap();
    world.start_operator_with_env(&operator_env);
    let refused = world
        .wait_destination("granted", "False", "NotGranted")
        .await;
    let message = &refused.status.unwrap().conditions[0].message;
    assert_eq!(
        message,
        &format!(
            "spec.s3.bucket {granted} is not granted to namespace {b} (OutboundTenancy default)"
        )
    );
    let waiting = world
        .wait_delivery(
            "second",
            "Pending",
            Some("NotGranted"),
            Duration::from_secs(60),
        )
        .await;
    let ready = &waiting.status.unwrap().conditions[0];
    assert!(
        ready.message.contains("is not granted"),
        "{}",
        ready.message
    );
    // A while later still: one Job (the first delivery's), nothing new in the bucket.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = jobs_in(&world).await;
    assert_eq!(
        jobs.len(),
        1,
        "no Job for a delivery to a destination not granted"
    );
    assert!(
        jobs[0].metadata.name.as_deref().unwrap().contains("first"),
        "{:?}",
        jobs[0].metadata.name
    );
    let keys = |objects: Vec<(String, i64)>| -> Vec<String> {
        objects.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        keys(list_objects(&moto_admin, &granted).await),
        ["first/a.sync", "first/manifest.json"]
    );
    // The grant back: the destination is probed again and the waiting delivery goes.
    apply_tenancy(&world, &grants(&format!("[{granted}]"))).await;
    world.wait_destination("granted", "True", "Validated").await;
    world
        .wait_delivery(
            "second",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(180),
        )
        .await;
    // No tenancy object at all: today's single-team behaviour, whatever the bucket.
    kube::Api::<OutboundTenancy>::all(world.client.clone())
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the tenancy policy to let any bucket through once the grants are gone",
        Duration::from_secs(30),
        || async {
            apply_as::<OutboundDestination>(&team_b, &b, &dest("other", &other, &moto, allowlist))
                .await
                .is_ok()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    assert!(list_objects(&moto_admin, &other).await.is_empty());
    for ns in [&c, &d] {
        let _ = kube::Api::<Namespace>::all(world.client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    world.cleanup().await;
}
