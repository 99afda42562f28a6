//! End-to-end tests of the operator against the ground's real API server, Job controller and
//! S3 servers (versitygw for the data path, moto for IAM semantics). Needs `make ground-up` and
//! `source tests/ground/.state/env`.

mod operator_support;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams};
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination};
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
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: {name}}}\nspec:\n  destinationRef: {{name: {destination}}}\n  source: {{volume: {{claimName: {claim}}}}}\n{extra}"
    )
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
        (
            "role-no-external-id",
            "{crossAccount: {roleArn: \"arn:aws:iam::111122223333:role/x\"}}",
            "",
            "go together",
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
    assert_eq!(identity.access_key_id.as_deref(), Some(gw_key.as_str()));
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
        (
            "too-big",
            "good",
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
    for (name, dest, claim, extra, _) in &deliveries {
        world
            .apply_yaml::<OutboundDelivery>(&delivery_yaml(name, dest, claim, extra))
            .await
            .unwrap();
    }
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
    world
        .wait_delivery("missing-secret", "Uploading", None, Duration::from_secs(60))
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
