//! The uploader in Kubernetes mode against the ground's API server and versitygw: upload IDs and
//! progress go to each shard's OutboundShard `<job>-<index>`, owned by the delivery (server-side
//! apply, one field manager per shard), a killed shard resumes from there, shard 0 writes the
//! manifest only after every shard reports `finished`, and the delivery itself is never written.

mod upload_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use outbound::api::OutboundShard;
use upload_support::proxy::Proxy;
use upload_support::*;

const MIB: usize = 1 << 20;

fn delivery_resource() -> ApiResource {
    ApiResource {
        group: "outbound.dev".into(),
        version: "v1alpha1".into(),
        api_version: "outbound.dev/v1alpha1".into(),
        kind: "OutboundDelivery".into(),
        plural: "outbounddeliveries".into(),
    }
}

async fn kube_client() -> kube::Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: this test needs the ground's API server. Run `make ground-up` \
             and `source tests/ground/.state/env` first (or `make test`)"
        );
    }
    let client = kube::Client::try_default()
        .await
        .expect("connect to the ground's API server");
    // The CRDs, as every suite applies them (server-side, idempotent), until they are served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in outbound::api::crds() {
        crds.patch(
            crd.metadata.name.as_deref().unwrap(),
            &PatchParams::apply("outbound-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply the CRDs");
    }
    let shards: Api<OutboundShard> = Api::all(client.clone());
    for _ in 0..100 {
        if shards.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
}

/// A namespace and a delivery no controller acts on (suspended, destination absent): the test
/// plays the upload pods itself.
async fn delivery(client: &kube::Client) -> (String, String, Api<DynamicObject>) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let namespace = format!("upload-{}-{}", std::process::id(), nanos % 1_000_000);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &delivery_resource());
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1",
        "kind": "OutboundDelivery",
        "metadata": {"name": "shards", "namespace": namespace},
        "spec": {
            "destinationRef": {"name": "not-there"},
            "source": {"volume": {"claimName": "not-there", "path": "x/"}},
            "parallelism": 2,
            "suspend": true,
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create delivery: {e}"));
    (namespace.clone(), format!("{namespace}/shards"), api)
}

/// Shard `index`'s object (its report is `status`), or null while it has none.
async fn shard_object(api: &Api<DynamicObject>, index: usize) -> Option<OutboundShard> {
    let delivery = api.get("shards").await.unwrap();
    let job = outbound::validate::child_name("shards", &delivery.uid().unwrap());
    Api::<OutboundShard>::namespaced(api.clone().into_client(), &delivery.namespace().unwrap())
        .get_opt(&format!("{job}-{index}"))
        .await
        .unwrap()
}

async fn shard(api: &Api<DynamicObject>, index: usize) -> serde_json::Value {
    shard_object(api, index)
        .await
        .and_then(|s| s.status)
        .map(|s| serde_json::to_value(s).unwrap())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_journal_in_their_own_objects_resume_from_them_and_manifest_waits_for_all() {
    let kube = kube_client().await;
    let server = versitygw();
    let s3 = server.client();
    let bucket = new_bucket(&s3, "shards").await;
    let (namespace, delivery_ref, api) = delivery(&kube).await;
    let dir = source_dir();
    // Plan order a, b, c, d: shard 0 gets a and c, shard 1 gets b and d.
    let a = write_lines(&dir.path().join("a.sync"), 1000, 1, true);
    let b = write_random(&dir.path().join("b.bin"), 30 * MIB, 2);
    let c = write_lines(&dir.path().join("c.sync"), 2000, 3, true);
    let d = write_lines(&dir.path().join("d.sync"), 3000, 4, true);
    let proxy = Proxy::start(&server.endpoint).await;
    let via = server.via(&proxy.url());
    let shard_args = |index: &'static str| {
        vec![
            "--delivery",
            &delivery_ref,
            "--shard-count",
            "2",
            "--shard-index",
            index,
            "--manifest",
            "--part-size",
            "5Mi",
            "--concurrency",
            "2",
        ]
    };
    let with_fast_progress = |mut cmd: tokio::process::Command| {
        cmd.env("OUTBOUND_PROGRESS_INTERVAL", "1");
        cmd
    };

    // Shard 0 delivers its objects, reports finished, and waits for shard 1 before the manifest.
    let mut shard0 = with_fast_progress(upload_command(
        &server,
        &bucket,
        dir.path(),
        &shard_args("0"),
    ))
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s0 = shard(&api, 0).await;
        if s0["finished"] == serde_json::json!(true) {
            assert_eq!(s0["objectsDone"], 2, "{s0}");
            assert_eq!(s0["bytesDone"], (a.len() + c.len()) as u64, "{s0}");
            break;
        }
        assert!(
            shard0.try_wait().unwrap().is_none(),
            "shard 0 ended before shard 1 ran"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "shard 0 never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        shard0.try_wait().unwrap().is_none(),
        "shard 0 waits for shard 1"
    );
    assert!(
        list(&s3, &bucket, "manifest").await.is_empty(),
        "no manifest before every shard is done"
    );

    // Shard 1, slowed down, is killed mid-object: its open upload is in its shard's report.
    proxy.faults.rate.store(3 << 20, Ordering::SeqCst);
    let mut shard1 =
        with_fast_progress(upload_command(&via, &bucket, dir.path(), &shard_args("1")))
            .spawn()
            .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let upload_id = loop {
        let s1 = shard(&api, 1).await;
        if let Some(id) = s1["uploads"][0]["uploadId"].as_str()
            && proxy.faults.bytes_up() > 12 * MIB as u64
        {
            assert_eq!(s1["uploads"][0]["key"], "b.bin");
            break id.to_string();
        }
        assert!(
            shard1.try_wait().unwrap().is_none(),
            "shard 1 ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "shard 1 recorded no upload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shard1.start_kill().unwrap();
    shard1.wait().await.unwrap();
    proxy.faults.rate.store(0, Ordering::SeqCst);
    assert_eq!(open_uploads(&s3, &bucket).await.len(), 1);

    let run = finished(
        with_fast_progress(upload_command(&via, &bucket, dir.path(), &shard_args("1")))
            .output()
            .await
            .unwrap(),
    );
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains("resuming upload"), "{run:?}");
    assert!(
        open_uploads(&s3, &bucket).await.is_empty(),
        "upload {upload_id} completed"
    );

    let shard0 = finished(
        tokio::time::timeout(Duration::from_secs(60), shard0.wait_with_output())
            .await
            .expect("shard 0 writes the manifest once shard 1 is done")
            .unwrap(),
    );
    assert!(shard0.success, "{shard0:?}");
    assert!(
        shard0.stdout.contains("manifest manifest.json"),
        "{shard0:?}"
    );

    for (key, data) in [
        ("a.sync", &a),
        ("b.bin", &b),
        ("c.sync", &c),
        ("d.sync", &d),
    ] {
        assert!(
            get(&s3, &bucket, key).await == *data,
            "{key} byte-identical"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&s3, &bucket, "manifest.json").await).unwrap();
    assert_eq!(manifest["Totals"]["NumFiles"], 4);
    assert_eq!(
        manifest["Totals"]["TotalSize"],
        (a.len() + b.len() + c.len() + d.len()) as u64
    );
    // Lines are counted while the bytes go out (b.bin: its stored parts while resuming, the rest
    // while sending) and shard 1 hands its counts to shard 0 through its shard object.
    for (key, data) in [
        ("a.sync", &a),
        ("b.bin", &b),
        ("c.sync", &c),
        ("d.sync", &d),
    ] {
        let entry = manifest["Files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["FileName"] == key)
            .expect("the manifest lists every object");
        assert_eq!(entry["NumRecords"], count_lines(data), "{key}: lines");
    }

    assert_eq!(
        shard(&api, 1).await["lines"],
        // b.bin went up in parts; d.sync in one PUT, whose count its metadata carries.
        serde_json::json!({"1": count_lines(&b)}),
        "shard 1 reports its multipart objects' lines by plan index"
    );
    let delivery = api.get("shards").await.unwrap();
    for index in [0, 1] {
        let s = shard(&api, index).await;
        assert_eq!(s["finished"], true, "{s}");
        assert_eq!(s["bytesDone"], s["bytesTotal"], "{s}");
        // No open upload left on record (an empty list is left out).
        assert!(s["uploads"].as_array().is_none_or(|u| u.is_empty()), "{s}");
        // Each shard object is written by its own pod's field manager, owned by the delivery
        // (so it goes with it) and held for the operator's aborts.
        let object = shard_object(&api, index).await.unwrap();
        let managers: std::collections::BTreeSet<String> = object
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert_eq!(
            managers,
            [format!("outbound-uploader-{index}")].into(),
            "shard {index}: the object and its status"
        );
        assert_eq!(object.spec.index, index as u32);
        assert_eq!(object.owner_references()[0].uid, delivery.uid().unwrap());
        assert_eq!(object.finalizers(), ["outbound.dev/journal".to_string()]);
    }
    // The delivery itself was never written by a shard: its size does not grow with them.
    assert!(
        delivery.data.get("status").is_none_or(|s| s.is_null()),
        "{:?}",
        delivery.data
    );

    // No operator here to let the shards go: do it, so the namespace can go.
    let shards: Api<OutboundShard> = Api::namespaced(kube.clone(), &namespace);
    for index in [0, 1] {
        let name = shard_object(&api, index).await.unwrap().name_any();
        let release = serde_json::json!({"metadata": {"finalizers": null}});
        let _ = shards
            .patch(&name, &PatchParams::default(), &Patch::Merge(&release))
            .await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(kube);
    let _ = namespaces.delete(&namespace, &Default::default()).await;
}
