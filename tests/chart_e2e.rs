//! The Helm chart on the ground: its templates pass a server-side dry run, `helm install` runs the
//! operator as a pod under the chart's own RBAC and a delivery succeeds, and `helm upgrade` with a
//! changed CRD applies the new CRD. Every example in `examples/` applies too.

#[path = "operator_support/mod.rs"]
mod operator_support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use operator_support::{World, list_objects, s3, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CRDS: [&str; 4] = [
    "outbounddestinations.outbound.dev",
    "outbounddeliveries.outbound.dev",
    "outboundtenancies.outbound.dev",
    "outboundshards.outbound.dev",
];

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/outbound")
}

/// Runs a command and returns its stdout, failing the test with its stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Cluster-wide objects the chart owns: the CRDs and the admission policies with their bindings.
const CLUSTER_OBJECTS: [(&str, &str); 10] = [
    ("crd", CRDS[0]),
    ("crd", CRDS[1]),
    ("crd", CRDS[2]),
    ("crd", CRDS[3]),
    (
        "validatingadmissionpolicy",
        "outbounddeliveries.outbound.dev-split-size",
    ),
    (
        "validatingadmissionpolicybinding",
        "outbounddeliveries.outbound.dev-split-size-binding",
    ),
    (
        "validatingadmissionpolicy",
        "outbounddeliveries.outbound.dev-upload-pods",
    ),
    (
        "validatingadmissionpolicybinding",
        "outbounddeliveries.outbound.dev-upload-pods-binding",
    ),
    (
        "validatingadmissionpolicy",
        "outbounddestinations.outbound.dev-tenancy",
    ),
    (
        "validatingadmissionpolicybinding",
        "outbounddestinations.outbound.dev-tenancy-binding",
    ),
];

/// Cluster-wide objects that another test applied by hand become this release's, as `helm`
/// adoption requires.
fn adopt_cluster_objects(release: &str, ns: &str) {
    for (kind, name) in CLUSTER_OBJECTS {
        run(Command::new("kubectl").args([
            "label",
            kind,
            name,
            "app.kubernetes.io/managed-by=Helm",
            "--overwrite",
        ]));
        run(Command::new("kubectl").args([
            "annotate",
            kind,
            name,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={ns}"),
            "--overwrite",
        ]));
    }
}

fn helm_install(cmd: &str, release: &str, ns: &str, chart: &Path, extra: &[&str]) {
    let port = free_port().to_string();
    let mut args = vec![
        cmd,
        release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--set",
        "replicaCount=1",
        "--set",
        "logFormat=text",
        // The ground's S3 servers are plain http on 127.0.0.1.
        "--set",
        "endpoints.allowHttp=true",
        "--set",
        "endpoints.allowPrivate=true",
        "--set",
    ];
    let watch = format!("watchNamespace={ns}");
    let metrics = format!("metrics.port={port}");
    args.push(&watch);
    args.extend(["--set", &metrics, "--wait", "--timeout", "120s"]);
    args.extend(extra);
    run(Command::new("helm").args(&args));
}

#[tokio::test]
async fn helm_template_passes_a_server_side_dry_run() {
    let world = World::new("chart-dry").await;
    let rendered = run(Command::new("helm").args([
        "template",
        "dry",
        chart().to_str().unwrap(),
        "--namespace",
        &world.ns,
        "--kube-version",
        "1.37.0",
        "--set",
        "metrics.service.enabled=true",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        // Grants render the OutboundTenancy (only where its CRD is known: Helm maps every
        // object before it installs any). Only the test's own namespace is governed, and the
        // dry run changes nothing.
        "--api-versions",
        "outbound.dev/v1alpha1/OutboundTenancy",
        "--set-json",
        &format!(
            r#"tenancy={{"namespaces":["{ns}"],"grants":[{{"namespaces":["{ns}"],"buckets":["acme-*"],"roleArns":["arn:aws:iam::111122223333:role/outbound"]}}]}}"#,
            ns = world.ns
        ),
    ]));
    let file = world.dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let out = run(Command::new("kubectl").args([
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "-n",
        &world.ns,
        "-f",
        file.to_str().unwrap(),
    ]));
    for kind in [
        "deployment.apps/dry-outbound",
        "clusterrole.rbac.authorization.k8s.io/dry-outbound",
        "customresourcedefinition.apiextensions.k8s.io/outbounddeliveries.outbound.dev",
        "poddisruptionbudget.policy/dry-outbound",
        "networkpolicy.networking.k8s.io/dry-outbound",
        "service/dry-outbound-metrics",
        "validatingadmissionpolicy.admissionregistration.k8s.io/outbounddeliveries.outbound.dev-upload-pods",
        "validatingadmissionpolicy.admissionregistration.k8s.io/outbounddestinations.outbound.dev-tenancy",
        "customresourcedefinition.apiextensions.k8s.io/outboundtenancies.outbound.dev",
        "outboundtenancy.outbound.dev/default",
    ] {
        assert!(
            out.contains(&format!("{kind} serverside-applied (server dry run)")),
            "{kind} missing from the dry run:\n{out}"
        );
    }
    world.cleanup().await;
}

#[tokio::test]
async fn chart_runs_the_operator_as_a_pod_and_upgrades_crds() {
    let world = World::new("chart").await;
    let ns = world.ns.clone();
    // The delivery below must be the chart's operator's work alone: no other operator may watch
    // every namespace (a `make demo` release watches only its own).
    let everywhere: Vec<String> = Api::<Pod>::all(world.client.clone())
        // Operators only: upload pods carry the name too.
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/name=outbound,app.kubernetes.io/component!=uploader"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| {
            !p.spec.iter().flat_map(|s| &s.containers).any(|c| {
                c.env
                    .iter()
                    .flatten()
                    .any(|e| e.name == "OUTBOUND_WATCH_NAMESPACE")
            })
        })
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .collect();
    assert!(
        everywhere.is_empty(),
        "another Outbound operator watches every namespace ({everywhere:?}): uninstall it first"
    );
    let release = ns.clone();
    adopt_cluster_objects(&release, &ns);
    helm_install("install", &release, &ns, &chart(), &[]);

    // The operator runs as the chart's pod, under the chart's service account.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &ns);
    let deployment: Api<Deployment> = Api::namespaced(world.client.clone(), &ns);
    let deploy = deployment
        .get(&format!("{release}-outbound"))
        .await
        .expect("the chart's Deployment");
    let sa = deploy
        .spec
        .template
        .spec
        .unwrap()
        .service_account_name
        .unwrap();
    assert_eq!(sa, format!("{release}-outbound"));
    let running = wait_for(
        "the operator pod running",
        Duration::from_secs(60),
        || async {
            let list = pods
                // Operators only: upload pods carry the name too.
                .list(&ListParams::default().labels(
                    "app.kubernetes.io/name=outbound,app.kubernetes.io/component!=uploader",
                ))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(running.spec.unwrap().service_account_name.unwrap(), sa);

    // A delivery through the chart's operator: nothing else watches this namespace.
    let env = &world.env;
    let client = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let bucket = format!("chart-{}", operator_support::suffix());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", &env.s3_access_key),
                ("AWS_SECRET_ACCESS_KEY", &env.s3_secret_key),
            ],
        )
        .await;
    let folder = world.volume("exports").await;
    std::fs::write(folder.join("a.sync"), "one\ntwo\n".repeat(100_000)).unwrap();
    std::fs::write(folder.join("b.sync"), "three\n").unwrap();
    world
        .apply_yaml::<outbound::api::OutboundDestination>(&format!(
            r#"
apiVersion: outbound.dev/v1alpha1
kind: OutboundDestination
metadata: {{name: dest}}
spec:
  s3: {{bucket: {bucket}, region: {region}, endpoint: "{endpoint}", forcePathStyle: true}}
  credentials: {{secret: {{name: keys}}}}
  upload: {{splitSize: 1Mi}}
"#,
            region = env.s3_region,
            endpoint = env.s3_endpoint
        ))
        .await
        .expect("destination applies");
    world.wait_destination("dest", "True", "Validated").await;
    world
        .apply_yaml::<outbound::api::OutboundDelivery>(
            r#"
apiVersion: outbound.dev/v1alpha1
kind: OutboundDelivery
metadata: {name: batch}
spec:
  destinationRef: {name: dest}
  source: {volume: {claimName: exports}}
  manifest: true
"#,
        )
        .await
        .expect("delivery applies");
    let done = world
        .wait_delivery("batch", "Succeeded", None, Duration::from_secs(120))
        .await;
    let keys: Vec<String> = list_objects(&client, &bucket)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // 800,000 bytes of a.sync fit in one 1 MiB object; b.sync is one more; then the manifest.
    assert_eq!(keys, vec!["a.sync", "b.sync", "manifest.json"], "{keys:?}");
    let progress = done.status.unwrap().progress.unwrap();
    assert_eq!(progress.objects_done, 2);

    // `helm upgrade` with a changed CRD field applies the new CRD.
    let changed = world.dir.path().join("chart");
    copy_dir(&chart(), &changed);
    let crds_file = changed.join("files/crds.yaml");
    let text = std::fs::read_to_string(&crds_file).unwrap();
    let marker = "Set by the upgrade test to prove that helm upgrade applies CRD changes.";
    let edited = add_marker_property(&text, marker);
    assert_ne!(edited, text, "the test could not change the CRD");
    std::fs::write(&crds_file, edited).unwrap();
    helm_install("upgrade", &release, &ns, &changed, &[]);
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    let served = serde_json::to_string(&crds.get(CRDS[0]).await.unwrap()).unwrap();
    assert!(
        served.contains(marker),
        "helm upgrade did not apply the changed CRD"
    );
    // And back to the real CRD.
    helm_install("upgrade", &release, &ns, &chart(), &[]);
    let served = serde_json::to_string(&crds.get(CRDS[0]).await.unwrap()).unwrap();
    assert!(
        !served.contains(marker),
        "helm upgrade did not restore the CRD"
    );

    run(Command::new("helm").args(["uninstall", &release, "--namespace", &ns, "--wait"]));
    // The CRDs are kept (and with them every delivery) after an uninstall.
    assert!(crds.get_opt(CRDS[1]).await.unwrap().is_some());
    world.cleanup().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Adds an optional, documented property to the destination spec's schema.
fn add_marker_property(text: &str, marker: &str) -> String {
    let anchor = "            properties:\n              credentials:";
    text.replacen(
        anchor,
        &format!(
            "            properties:\n              upgradeMarker:\n                description: {marker}\n                type: string\n              credentials:"
        ),
        1,
    )
}

/// Every file in `examples/` applies for real on the ground (schema, CEL rules and the admission
/// policy included), in a fresh namespace instead of `deliveries`.
#[tokio::test]
async fn every_example_applies() {
    let world = World::new("examples").await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples: {files:?}");
    let mut applied = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.contains("namespace: deliveries"),
            "{} should live in the deliveries namespace of the README",
            file.display()
        );
        let local = world.dir.path().join(file.file_name().unwrap());
        std::fs::write(
            &local,
            text.replace("namespace: deliveries", &format!("namespace: {}", world.ns)),
        )
        .unwrap();
        let out = run(Command::new("kubectl").args(["apply", "-f", local.to_str().unwrap()]));
        applied.extend(out.lines().map(str::to_owned));
    }
    for name in [
        "outbounddestination.outbound.dev/acme",
        "outbounddestination.outbound.dev/globex",
        "outbounddestination.outbound.dev/initech",
        "outbounddelivery.outbound.dev/segments-2026-11-27",
        "secret/acme-keys",
    ] {
        assert!(
            applied.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} was not applied: {applied:?}"
        );
    }
    let got =
        run(Command::new("kubectl").args(["get", "odest,odel", "-n", &world.ns, "-o", "name"]));
    assert_eq!(got.lines().count(), 4, "{got}");
    world.cleanup().await;
}
