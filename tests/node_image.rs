//! Upload pods from the operator's image on the ground's node, which runs registry images with
//! runc under the pod's security context and limits: a source file only root may read fails the
//! delivery with a reason naming it, a group-readable one is read through `fsGroup`, an upload
//! pod limited to 128 MiB delivers a 2 GiB file, and a container that allocates past its limit
//! is OOM-killed. The operator runs on the host; its Jobs run the image the ground pushed to its
//! registry, by digest.

#[path = "operator_support/mod.rs"]
mod operator_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use operator_support::{World, s3, suffix, wait_for};
use outbound::api::{OutboundDelivery, OutboundDestination};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// The registry image, by digest, as the ground pushed it.
fn image() -> String {
    std::env::var("GROUND_IMAGE").expect("GROUND_IMAGE from the ground's env (make ground-up)")
}

/// The operator on the host, its Jobs on the image; `env` adds its settings.
fn start_operator(world: &mut World, env: &[(&str, &str)]) {
    let image = image();
    let mut all = vec![("OUTBOUND_UPLOADER_IMAGE", image.as_str())];
    all.extend_from_slice(env);
    world.start_operator_with_env(&all);
}

/// A versitygw bucket and the destination `dest` writing to it (objects up to 4 GiB unsplit).
async fn destination(world: &World) -> (aws_sdk_s3::Client, String) {
    let env = &world.env;
    let client = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let bucket = format!("img-{}", suffix());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", env.s3_access_key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", env.s3_secret_key.as_str()),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: dest}}\nspec:\n  s3: {{bucket: {bucket}, region: {region}, endpoint: \"{endpoint}\", forcePathStyle: true}}\n  credentials: {{secret: {{name: keys}}}}\n  upload: {{splitSize: 4Gi}}\n",
            region = env.s3_region,
            endpoint = env.s3_endpoint
        ))
        .await
        .unwrap();
    world.wait_destination("dest", "True", "Validated").await;
    (client, bucket)
}

async fn deliver(world: &World, name: &str, path: &str) {
    world
        .apply_yaml::<OutboundDelivery>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: {name}}}\nspec:\n  destinationRef: {{name: dest}}\n  source: {{volume: {{claimName: exports, path: {path}}}}}\n"
        ))
        .await
        .unwrap();
}

fn set(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The sha256 and length of an object, read as a stream.
async fn object_digest(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (String, u64) {
    let mut body = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body;
    let mut hash = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = body.try_next().await.unwrap() {
        hash.update(&chunk);
        len += chunk.len() as u64;
    }
    (format!("{:x}", hash.finalize()), len)
}

async fn failed_message(world: &World, name: &str) -> String {
    let d = world
        .wait_delivery(
            name,
            "Failed",
            Some("SourceUnreadable"),
            Duration::from_secs(120),
        )
        .await;
    let s = d.status.unwrap();
    s.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn root_only_files_fail_by_name_and_fs_group_reads_group_files() {
    let mut world = World::new("img-perms").await;
    let folder = world.volume("exports").await;
    // root-only: a file only root may read. group: a file and folder of group 4242, not others'.
    let root_only = folder.join("root-only/secret.sync");
    let group = folder.join("group/shared.sync");
    for (file, text) in [(&root_only, "private\n"), (&group, "shared\n")] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text.repeat(1000)).unwrap();
    }
    set(&root_only, 0, 0, 0o600);
    set(&group, 0, 4242, 0o640);
    set(group.parent().unwrap(), 0, 4242, 0o750);
    start_operator(&mut world, &[]);
    let (client, bucket) = destination(&world).await;

    // Without fsGroup the upload pods (65532:65532, no capabilities) read neither.
    deliver(&world, "root-only", "root-only").await;
    deliver(&world, "group-denied", "group").await;
    let message = failed_message(&world, "root-only").await;
    assert!(
        message.contains("secret.sync") && message.contains("Permission denied"),
        "{message}"
    );
    let message = failed_message(&world, "group-denied").await;
    assert!(message.contains("group"), "{message}");

    // With fsGroup 4242 the group's file is read; the root-only one still is not.
    world.kill_operator();
    start_operator(&mut world, &[("OUTBOUND_UPLOAD_FS_GROUP", "4242")]);
    deliver(&world, "group", "group").await;
    deliver(&world, "root-only-again", "root-only").await;
    world
        .wait_delivery("group", "Succeeded", None, Duration::from_secs(120))
        .await;
    let (digest, len) = object_digest(&client, &bucket, "shared.sync").await;
    let want = std::fs::read(&group).unwrap();
    assert_eq!(len, want.len() as u64);
    assert_eq!(digest, format!("{:x}", Sha256::digest(&want)));
    let message = failed_message(&world, "root-only-again").await;
    assert!(message.contains("secret.sync"), "{message}");
    world.cleanup().await;
}

#[tokio::test]
async fn an_upload_pod_limited_to_128mi_delivers_2gib() {
    let mut world = World::new("img-mem").await;
    let folder = world.volume("exports").await;
    let file = folder.join("big/big.sync");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // 2 GiB of 128-byte lines, hashed as written.
    let mut hash = Sha256::new();
    {
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file).unwrap());
        let mut line = [b'x'; 128];
        line[127] = b'\n';
        for i in 0u64..(2u64 << 30) / 128 {
            line[..16].copy_from_slice(format!("{i:016}").as_bytes());
            out.write_all(&line).unwrap();
            hash.update(line);
        }
        out.flush().unwrap();
    }
    let want = format!("{:x}", hash.finalize());
    start_operator(
        &mut world,
        &[(
            "OUTBOUND_UPLOAD_RESOURCES",
            r#"{"limits":{"memory":"128Mi"}}"#,
        )],
    );
    let (client, bucket) = destination(&world).await;
    deliver(&world, "big", "big").await;
    world
        .wait_delivery("big", "Succeeded", None, Duration::from_secs(600))
        .await;
    let (digest, len) = object_digest(&client, &bucket, "big.sync").await;
    assert_eq!(len, 2 << 30);
    assert_eq!(digest, want, "big.sync differs from the source");
    // The pod that did it had the limit.
    let pods = world
        .api::<Pod>()
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=uploader"))
        .await
        .unwrap()
        .items;
    assert!(!pods.is_empty());
    for pod in pods {
        let c = &pod.spec.unwrap().containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"].0, "128Mi");
    }
    std::fs::remove_file(&file).unwrap();
    world.cleanup().await;
}

/// A busybox container that allocates (and touches) 96 MiB: past a 32 MiB limit it is killed by
/// the kernel and its status says OOMKilled; under 256 MiB the same command succeeds.
#[tokio::test]
async fn a_container_past_its_memory_limit_is_oom_killed() {
    let world = World::new("img-oom").await;
    let busybox = std::env::var("GROUND_BUSYBOX_IMAGE").expect("GROUND_BUSYBOX_IMAGE");
    let pods = world.api::<Pod>();
    let pod = |name: &str, limit: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "alloc",
                    "image": busybox,
                    // dd reads into a buffer of one block: 96 MiB allocated and written.
                    "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
                    "resources": {"limits": {"memory": limit}},
                }],
            }
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &pod("small", "32Mi"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("large", "256Mi"))
        .await
        .unwrap();
    let terminated = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let p = pods.get_opt(name).await.ok()??;
            let s = p.status?.container_statuses?.into_iter().next()?;
            s.state?.terminated
        }
    };
    let small = wait_for(
        "the small pod's container terminated",
        Duration::from_secs(60),
        || terminated("small"),
        || world.diagnose(),
    )
    .await;
    assert_eq!(small.reason.as_deref(), Some("OOMKilled"), "{small:?}");
    assert_eq!(small.exit_code, 137, "{small:?}");
    let large = wait_for(
        "the large pod's container terminated",
        Duration::from_secs(60),
        || terminated("large"),
        || world.diagnose(),
    )
    .await;
    assert_eq!(large.exit_code, 0, "{large:?}");
    assert_eq!(large.reason.as_deref(), Some("Completed"));
    world.cleanup().await;
}

/// `imagePullPolicy`: `Never` runs only an image the node already holds under that reference;
/// `IfNotPresent` pulls it; then `Never` runs it.
#[tokio::test]
async fn image_pull_policy_is_honoured() {
    let world = World::new("img-pull").await;
    let registry = std::env::var("GROUND_REGISTRY").expect("GROUND_REGISTRY");
    // A tag this test alone uses, so that no other pod pulled it before.
    let tag = format!("pull-{}", suffix());
    let busybox = std::env::var("GROUND_BUSYBOX_IMAGE").expect("GROUND_BUSYBOX_IMAGE");
    let out = std::process::Command::new("crane")
        .args(["tag", &busybox, &tag])
        .output()
        .expect("crane on PATH (the ground's env)");
    assert!(out.status.success(), "crane tag: {out:?}");
    let image = format!("{registry}/busybox:{tag}");
    let pods = world.api::<Pod>();
    let pod = |name: &str, policy: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": image, "imagePullPolicy": policy, "command": ["true"]}],
            }
        }))
        .unwrap()
    };
    // The reason the container's state gives, once it has one.
    let reason = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let p = pods.get_opt(name).await.ok()??;
            let s = p.status?.container_statuses?.into_iter().next()?;
            let state = s.state?;
            match (state.terminated, state.waiting) {
                (Some(t), _) => t.reason,
                (None, Some(w)) if w.reason.as_deref() != Some("ContainerCreating") => w.reason,
                _ => None,
            }
        }
    };
    for (name, policy, want) in [
        ("never-before", "Never", "ErrImageNeverPull"),
        ("if-not-present", "IfNotPresent", "Completed"),
        ("never-after", "Never", "Completed"),
    ] {
        pods.create(&PostParams::default(), &pod(name, policy))
            .await
            .unwrap();
        let got = wait_for(
            &format!("pod {name} ended"),
            Duration::from_secs(60),
            || reason(name),
            || world.diagnose(),
        )
        .await;
        assert_eq!(got, want, "pod {name} ({policy})");
    }
    world.cleanup().await;
}
