//! The Helm chart on the ground: its templates pass a server-side dry run, `helm install` runs the
//! operator as a pod under the chart's own RBAC (a Role with `watchNamespace`, a ClusterRole
//! without) and deliveries succeed, every rule of that RBAC is used and no request of the operator
//! is denied (the API server's audit log says), and `helm upgrade` with a changed CRD applies the
//! new CRD. Every example in `examples/` applies too.

#[path = "operator_support/mod.rs"]
mod operator_support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use operator_support::{World, list_objects, s3, wait_for};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CRDS: [&str; 2] = [
    "outbounddestinations.outbound.dev",
    "outbounddeliveries.outbound.dev",
];

/// One chart operator at a time, and none while the examples are applied: an operator that
/// watches every namespace would act on the other tests' objects (and probe the examples'
/// endpoints).
static OPERATORS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
fn cluster_objects() -> Vec<(&'static str, String)> {
    use kube::ResourceExt;
    let mut objects: Vec<(&str, String)> = outbound::api::crds()
        .iter()
        .map(|crd| ("crd", crd.name_any()))
        .collect();
    for (policy, binding) in outbound::api::policies() {
        objects.push(("validatingadmissionpolicy", policy.name_any()));
        objects.push(("validatingadmissionpolicybinding", binding.name_any()));
    }
    objects
}

/// Cluster-wide objects that another test applied by hand become this release's, as `helm`
/// adoption requires.
fn adopt_cluster_objects(release: &str, ns: &str) {
    for (kind, name) in cluster_objects() {
        run(Command::new("kubectl").args([
            "label",
            kind,
            &name,
            "app.kubernetes.io/managed-by=Helm",
            "--overwrite",
        ]));
        run(Command::new("kubectl").args([
            "annotate",
            kind,
            &name,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={ns}"),
            "--overwrite",
        ]));
    }
}

/// Installs (or upgrades) the chart; `watch`: the namespace the operator watches, or every one.
fn helm_install(
    cmd: &str,
    release: &str,
    ns: &str,
    chart: &Path,
    watch: Option<&str>,
    extra: &[&str],
) {
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
    let watch = format!("watchNamespace={}", watch.unwrap_or(""));
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
        // The dashboard's ConfigMap (the PrometheusRule needs the Prometheus Operator's CRD,
        // which the ground has not: tests/monitoring.rs checks it with promtool instead).
        "--set",
        "grafanaDashboard.enabled=true",
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
        "customresourcedefinition.apiextensions.k8s.io/outboundshards.outbound.dev",
        "customresourcedefinition.apiextensions.k8s.io/outbounddeliveries.outbound.dev",
        "poddisruptionbudget.policy/dry-outbound",
        "networkpolicy.networking.k8s.io/dry-outbound",
        "service/dry-outbound-metrics",
        "configmap/dry-outbound-dashboard",
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

/// A release uninstalled when the test ends, however it ends: a failed test must not leave an
/// operator behind (one watching every namespace would act on every later test's objects).
struct Release(String);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new("helm")
            .args(["uninstall", &self.0, "--namespace", &self.0, "--wait"])
            .output();
    }
}

/// Installs the chart as release `ns` in `world`'s namespace, watching `watch`, and waits for its
/// operator pod. Returns the release (uninstalled when dropped) and the operator's user name
/// (its service account).
async fn install_operator(world: &World, watch: Option<&str>) -> (Release, String) {
    let ns = world.ns.clone();
    let release = ns.clone();
    adopt_cluster_objects(&release, &ns);
    helm_install("install", &release, &ns, &chart(), watch, &[]);
    let release_guard = Release(release.clone());

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
    (release_guard, format!("system:serviceaccount:{ns}:{sa}"))
}

/// What a user does through the chart's operator in `world`'s namespace, touching everything the
/// operator's RBAC is for: a destination probed (and probed again when its Secret goes and comes
/// back: the same event twice is a series), a delivery with a manifest, a suspended delivery
/// resumed, and a finished delivery deleted (its Job and pods gone, its shards let go).
async fn deliver_through_the_chart(world: &World) {
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
    let keys = [
        ("AWS_ACCESS_KEY_ID", env.s3_access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", env.s3_secret_key.as_str()),
    ];
    world.secret("keys", &keys).await;
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
    let delivery = |name: &str, extra: &str| {
        format!(
            r#"
apiVersion: outbound.dev/v1alpha1
kind: OutboundDelivery
metadata: {{name: {name}}}
spec:
  destinationRef: {{name: dest}}
  source: {{volume: {{claimName: exports}}}}
{extra}"#
        )
    };
    world
        .apply_yaml::<outbound::api::OutboundDelivery>(&delivery("batch", "  manifest: true\n"))
        .await
        .expect("delivery applies");
    let done = world
        .wait_delivery("batch", "Succeeded", None, Duration::from_secs(120))
        .await;
    let keys_in_bucket: Vec<String> = list_objects(&client, &bucket)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // 800,000 bytes of a.sync fit in one 1 MiB object; b.sync is one more; then the manifest.
    assert_eq!(
        keys_in_bucket,
        vec!["a.sync", "b.sync", "manifest.json"],
        "{keys_in_bucket:?}"
    );
    let progress = done.status.unwrap().progress.unwrap();
    assert_eq!(progress.objects_done, 2);

    // Suspended, then resumed: the Job is patched.
    world
        .apply_yaml::<outbound::api::OutboundDelivery>(&delivery(
            "held",
            "  keyPrefix: held/\n  suspend: true\n",
        ))
        .await
        .expect("delivery applies");
    world
        .wait_delivery(
            "held",
            "Pending",
            Some("Suspended"),
            Duration::from_secs(60),
        )
        .await;
    world
        .api::<outbound::api::OutboundDelivery>()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    world
        .wait_delivery("held", "Succeeded", None, Duration::from_secs(120))
        .await;

    // The Secret goes and comes back: probed again, Validated again.
    world
        .api::<Secret>()
        .delete("keys", &Default::default())
        .await
        .unwrap();
    world
        .wait_destination("dest", "False", "SecretNotFound")
        .await;
    world.secret("keys", &keys).await;
    world.wait_destination("dest", "True", "Validated").await;

    // A schedule every few seconds whose runs are kept for none: a run created, delivered and
    // deleted by the operator.
    world
        .apply_yaml::<outbound::api::OutboundSchedule>(
            r#"
apiVersion: outbound.dev/v1alpha1
kind: OutboundSchedule
metadata: {name: often}
spec:
  schedule: "*/3 * * * * *"
  successfulDeliveriesHistoryLimit: 0
  template:
    destinationRef: {name: dest}
    source: {volume: {claimName: exports}}
    keyPrefix: "often/{run}/"
"#,
        )
        .await
        .expect("schedule applies");
    wait_for(
        "a run of the schedule delivered and pruned",
        Duration::from_secs(120),
        || async {
            let s = world
                .api::<outbound::api::OutboundSchedule>()
                .get("often")
                .await
                .ok()?
                .status?;
            let pruned = world
                .api::<outbound::api::OutboundDelivery>()
                .list(&ListParams::default().labels("outbound.dev/schedule=often"))
                .await
                .ok()?
                .items
                .iter()
                .all(|d| {
                    d.status.as_ref().and_then(|s| s.phase) != Some(outbound::api::Phase::Succeeded)
                });
            (s.last_successful_time.is_some() && pruned).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world
        .api::<outbound::api::OutboundSchedule>()
        .delete("often", &Default::default())
        .await
        .unwrap();

    // A finished delivery deleted: its Job and pods go first, then its shards.
    world
        .api::<outbound::api::OutboundDelivery>()
        .delete("batch", &Default::default())
        .await
        .unwrap();
    wait_for(
        "the deleted delivery gone",
        Duration::from_secs(120),
        || async {
            world
                .api::<outbound::api::OutboundDelivery>()
                .get_opt("batch")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
}

/// (API group, resource[/subresource], verb).
type Permission = (String, String, String);

/// Every permission the operator's own rules in the rendered chart hold (its Role or ClusterRole
/// and its leader-election Role).
fn chart_permissions(release: &str, ns: &str, watch: Option<&str>) -> BTreeSet<Permission> {
    let rendered = run(Command::new("helm").args([
        "template",
        release,
        chart().to_str().unwrap(),
        "--namespace",
        ns,
        "--kube-version",
        "1.37.0",
        "--set",
        &format!("watchNamespace={}", watch.unwrap_or("")),
    ]));
    let mut held = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&rendered) {
        let Ok(value) = serde_yaml::Value::deserialize(doc) else {
            continue;
        };
        let kind = value["kind"].as_str().unwrap_or("");
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let rules: Vec<PolicyRule> = serde_yaml::from_value(value["rules"].clone()).expect("rules");
        held.extend(expand(&rules));
    }
    held
}

fn expand(rules: &[PolicyRule]) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

/// What `user` asked the API server for, by the ground's audit log: the permissions it used
/// (a server-side apply that created its object used `create` too) and its denied requests.
fn audited(env: &operator_support::GroundEnv, user: &str) -> (BTreeSet<Permission>, Vec<String>) {
    let log = std::fs::read_to_string(&env.audit_log).expect("the ground's audit log");
    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for line in log.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if e["user"]["username"] != user || e["objectRef"].is_null() {
            continue;
        }
        let o = &e["objectRef"];
        let mut resource = o["resource"].as_str().unwrap_or("").to_string();
        if let Some(sub) = o["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let group = o["apiGroup"].as_str().unwrap_or("").to_string();
        let verb = e["verb"].as_str().unwrap_or("").to_string();
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        let message = e["responseStatus"]["message"].as_str().unwrap_or("");
        // A namespace being deleted (another test's, going) refuses new objects with 403 too:
        // the namespace lifecycle's refusal, not RBAC's.
        if code == 403 && !message.contains("because it is being terminated") {
            denied.push(format!(
                "{verb} {group}/{resource} {}/{}: {}",
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
                message
            ));
        }
        if verb == "patch" && code == 201 {
            used.insert((group.clone(), resource.clone(), "create".to_string()));
        }
        used.insert((group, resource, verb));
    }
    (used, denied)
}

/// Every rule of the chart's RBAC was used by the operator and none of its requests was denied.
/// Two kinds of permission are held without being requested, and are named here: what the
/// operator grants the upload pods in their Role (the API server lets it grant only what it
/// holds), and `update` on deliveries' and schedules' finalizers (checked where the
/// OwnerReferencesPermissionEnforcement admission plugin is on, when a Job's or a run's owner
/// reference blocks its owner's deletion).
fn assert_rbac_used_and_nothing_denied(world: &World, user: &str, watch: Option<&str>) {
    let held = chart_permissions(&world.ns, &world.ns, watch);
    assert!(!held.is_empty(), "no rules rendered");
    let mut granted_only = expand(&outbound::job::build_role(&world.ns).rules.unwrap());
    for owner in ["outbounddeliveries", "outboundschedules"] {
        granted_only.insert((
            "outbound.dev".into(),
            format!("{owner}/finalizers"),
            "update".into(),
        ));
    }
    // Some uses come with time (the leader Lease is renewed every few seconds): wait a little
    // for them, not for ever.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (used, unused) = loop {
        let (used, denied) = audited(&world.env, user);
        assert!(
            denied.is_empty(),
            "the operator was denied:\n{}",
            denied.join("\n")
        );
        let unused: Vec<Permission> = held
            .iter()
            .filter(|p| !used.contains(*p) && !granted_only.contains(*p))
            .cloned()
            .collect();
        if unused.is_empty() || std::time::Instant::now() > deadline {
            break (used, unused);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        unused.is_empty(),
        "rules the operator never used (watch {watch:?}): {unused:?}\nused: {used:?}"
    );
    // And nothing was used that the chart does not hold (else it would have been denied).
    let outside: Vec<&Permission> = used.iter().filter(|p| !held.contains(*p)).collect();
    assert!(outside.is_empty(), "used without a rule: {outside:?}");
}

#[tokio::test]
async fn chart_runs_the_operator_as_a_pod_and_upgrades_crds() {
    let _turn = OPERATORS.lock().await;
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
    let (_installed, user) = install_operator(&world, Some(&ns)).await;
    // Watching one namespace: nothing cluster-wide.
    let rendered =
        run(Command::new("helm").args(["get", "manifest", &release, "--namespace", &ns]));
    // Watching one namespace, the one cluster-wide rule reads the tenancy grants by name.
    let cluster_roles: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| doc.lines().any(|l| l == "kind: ClusterRole"))
        .collect();
    assert_eq!(cluster_roles.len(), 1, "{cluster_roles:?}");
    assert!(
        cluster_roles[0].contains(&format!("name: {release}-outbound-tenancy"))
            && cluster_roles[0].contains("resourceNames:"),
        "{}",
        cluster_roles[0]
    );
    deliver_through_the_chart(&world).await;
    assert_rbac_used_and_nothing_denied(&world, &user, Some(&ns));

    // `helm upgrade` with a changed CRD field applies the new CRD.
    let changed = world.dir.path().join("chart");
    copy_dir(&chart(), &changed);
    let crds_file = changed.join("files/crds.yaml");
    let text = std::fs::read_to_string(&crds_file).unwrap();
    let marker = "Set by the upgrade test to prove that helm upgrade applies CRD changes.";
    let edited = add_marker_property(&text, marker);
    assert_ne!(edited, text, "the test could not change the CRD");
    std::fs::write(&crds_file, edited).unwrap();
    helm_install("upgrade", &release, &ns, &changed, Some(&ns), &[]);
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    let served = serde_json::to_string(&crds.get(CRDS[0]).await.unwrap()).unwrap();
    assert!(
        served.contains(marker),
        "helm upgrade did not apply the changed CRD"
    );
    // And back to the real CRD.
    helm_install("upgrade", &release, &ns, &chart(), Some(&ns), &[]);
    let served = serde_json::to_string(&crds.get(CRDS[0]).await.unwrap()).unwrap();
    assert!(
        !served.contains(marker),
        "helm upgrade did not restore the CRD"
    );

    uninstall(&world).await;
    // The CRDs are kept (and with them every delivery) after an uninstall.
    assert!(crds.get_opt(CRDS[1]).await.unwrap().is_some());
    world.cleanup().await;
}

/// Without `watchNamespace` the operator watches every namespace under a ClusterRole, and that
/// ClusterRole too holds only what it uses.
#[tokio::test]
async fn chart_rbac_without_watch_namespace_is_all_used() {
    let _turn = OPERATORS.lock().await;
    let world = World::new("chart-wide").await;
    // A cluster-wide operator acts on every namespace's destinations: there must be none but
    // this test's (their endpoints would be probed). The examples' namespace may still be going.
    let all = Api::<outbound::api::OutboundDestination>::all(world.client.clone());
    let others = || async {
        all.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = others().await;
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "destinations of other tests would be probed by a cluster-wide operator: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_installed, user) = install_operator(&world, None).await;
    let rendered =
        run(Command::new("helm").args(["get", "manifest", &world.ns, "--namespace", &world.ns]));
    assert!(rendered.contains("kind: ClusterRole\n"), "{rendered}");
    deliver_through_the_chart(&world).await;
    assert_rbac_used_and_nothing_denied(&world, &user, None);
    uninstall(&world).await;
    world.cleanup().await;
}

/// Deletes what is left of the test's deliveries while the operator still runs (their
/// finalizers need it), then uninstalls the release.
async fn uninstall(world: &World) {
    let deliveries = world.api::<outbound::api::OutboundDelivery>();
    let _ = deliveries
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    wait_for(
        "the deliveries gone",
        Duration::from_secs(120),
        || async {
            deliveries
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    run(Command::new("helm").args(["uninstall", &world.ns, "--namespace", &world.ns, "--wait"]));
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
    let _turn = OPERATORS.lock().await;
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
        "outbounddelivery.outbound.dev/segments-from-bucket-2026-12-07",
        "secret/acme-keys",
    ] {
        assert!(
            applied.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} was not applied: {applied:?}"
        );
    }
    let got =
        run(Command::new("kubectl").args(["get", "odest,odel", "-n", &world.ns, "-o", "name"]));
    assert_eq!(got.lines().count(), 5, "{got}");
    world.cleanup().await;
}

/// The chart with its defaults (two replicas, leader election), pointed at the ground's registry
/// by digest: both operators run the image's binary as 65532 on a read-only root, without
/// capabilities, under seccomp, one leads; the Jobs get the same image by digest, and a delivery
/// succeeds byte for byte from a source file only 65532 may read.
#[tokio::test]
async fn chart_defaults_run_the_registry_image_as_nonroot_on_a_read_only_root() {
    let _turn = OPERATORS.lock().await;
    let world = World::new("chart-image").await;
    let ns = world.ns.clone();
    let repository = std::env::var("GROUND_IMAGE_REPOSITORY").expect("GROUND_IMAGE_REPOSITORY");
    let digest = std::env::var("GROUND_IMAGE_DIGEST").expect("GROUND_IMAGE_DIGEST");
    let image = format!("{repository}@{digest}");
    adopt_cluster_objects(&ns, &ns);
    // Only what the ground needs: its S3 server is plain http on loopback; the operator watches
    // this test's namespace alone.
    run(Command::new("helm").args([
        "install",
        &ns,
        chart().to_str().unwrap(),
        "--namespace",
        &ns,
        "--set",
        &format!("image.repository={repository}"),
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        &format!("watchNamespace={ns}"),
        "--set",
        "endpoints.allowHttp=true",
        "--set",
        "endpoints.allowPrivate=true",
        "--wait",
        "--timeout",
        "120s",
    ]));
    let _installed = Release(ns.clone());

    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &ns);
    let operators = wait_for(
        "two operator pods running",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels(
                    "app.kubernetes.io/name=outbound,app.kubernetes.io/component!=uploader",
                ))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            (running.len() == 2).then_some(running)
        },
        || world.diagnose(),
    )
    .await;
    for pod in &operators {
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some(image.as_str()));
        assert!(
            c.args
                .iter()
                .flatten()
                .any(|a| a == &format!("--uploader-image={image}")),
            "{:?}",
            c.args
        );
        let p = operator_support::container::container_process(pod);
        assert_eq!(
            p.image_id, digest,
            "the node ran the image it pulled by digest"
        );
        assert_eq!(p.uids, vec![65532; 4], "{p:?}");
        assert_eq!(p.gids, vec![65532; 4], "{p:?}");
        assert!(
            p.root_options.split(',').any(|o| o == "ro"),
            "root not read-only: {p:?}"
        );
        assert_eq!(p.cap_eff, "0000000000000000", "{p:?}");
        assert!(p.no_new_privs && p.seccomp == 2, "{p:?}");
    }
    // Both listen on the chart's metrics port, each in its own network namespace; one leads.
    let names: Vec<String> = operators
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let holder = wait_for(
        "a leader among the two",
        Duration::from_secs(60),
        || async {
            let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
                world.client.clone(),
                &ns,
            )
            .get_opt("outbound-controller")
            .await
            .ok()??;
            lease.spec?.holder_identity
        },
        || world.diagnose(),
    )
    .await;
    assert!(
        names.contains(&holder),
        "{holder} leads, not one of {names:?}"
    );

    // A delivery from a file that only 65532 may read, in a folder only 65532 may enter.
    let env = &world.env;
    let client = s3(
        &env.s3_endpoint,
        &env.s3_region,
        &env.s3_access_key,
        &env.s3_secret_key,
    )
    .await;
    let bucket = format!("chart-img-{}", operator_support::suffix());
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
    let folder = world.volume("exports").await;
    let body: String = (0..200_000).map(|i| format!("{i:08} line\n")).collect();
    let file = folder.join("own/a.sync");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &body).unwrap();
    let own = |path: &Path, mode: u32| {
        std::os::unix::fs::chown(path, Some(65532), Some(65532)).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    own(&file, 0o400);
    own(file.parent().unwrap(), 0o500);
    // The ground's versitygw over HTTPS, its certificate from the ground's own CA: the image's
    // trust store plus that CA as the destination's caBundle; the same endpoint without the
    // bundle is refused for its certificate (nothing is turned off).
    let tls_endpoint = std::env::var("S3_TLS_ENDPOINT").expect("S3_TLS_ENDPOINT from the ground");
    let ca =
        std::fs::read_to_string(std::env::var("GROUND_CA_FILE").expect("GROUND_CA_FILE")).unwrap();
    for (name, bundle) in [
        (
            "dest",
            format!("caBundle: {}, ", serde_json::to_string(&ca).unwrap()),
        ),
        ("no-bundle", String::new()),
    ] {
        world
            .apply_yaml::<outbound::api::OutboundDestination>(&format!(
                r#"
apiVersion: outbound.dev/v1alpha1
kind: OutboundDestination
metadata: {{name: {name}}}
spec:
  s3: {{bucket: {bucket}, region: {region}, endpoint: "{tls_endpoint}", {bundle}forcePathStyle: true}}
  credentials: {{secret: {{name: keys}}}}
"#,
                region = env.s3_region,
            ))
            .await
            .expect("destination applies");
    }
    world.wait_destination("dest", "True", "Validated").await;
    let untrusted = wait_for(
        "the destination without the CA bundle to be refused",
        Duration::from_secs(60),
        || async {
            let d = world.destination("no-bundle").await;
            let (reason, message) = operator_support::ready_of(&d.status?.conditions);
            (reason == "Unreachable").then_some(message)
        },
        || world.diagnose(),
    )
    .await;
    assert!(
        untrusted.contains("TLS certificate is not trusted"),
        "{untrusted}"
    );
    world
        .apply_yaml::<outbound::api::OutboundDelivery>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: own}\nspec:\n  destinationRef: {name: dest}\n  source: {volume: {claimName: exports, path: own}}\n",
        )
        .await
        .expect("delivery applies");
    world
        .wait_delivery("own", "Succeeded", None, Duration::from_secs(120))
        .await;
    let got = client
        .get_object()
        .bucket(&bucket)
        .key("a.sync")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(got == body.as_bytes(), "a.sync differs from the source");
    let uploaders = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=uploader"))
        .await
        .unwrap()
        .items;
    assert!(!uploaders.is_empty(), "no upload pod left to look at");
    for pod in &uploaders {
        let status = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(status.image, image);
        assert_eq!(status.image_id, digest);
        assert!(
            status
                .container_id
                .as_deref()
                .unwrap_or("")
                .starts_with("runc://"),
            "{status:?}"
        );
    }
    uninstall(&world).await;
    world.cleanup().await;
}
