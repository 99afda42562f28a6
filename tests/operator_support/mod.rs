//! Support for the operator's end-to-end tests on the ground: environment, namespaces, the
//! operator process, S3 clients, volumes and waiting.
#![allow(dead_code)]

pub mod container;
pub mod monitoring;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use outbound::api::{OutboundDelivery, OutboundDestination};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What `make ground-up` exports in `tests/ground/.state/env`.
pub struct GroundEnv {
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_region: String,
    pub moto_endpoint: String,
    pub moto_access_key: String,
    pub moto_secret_key: String,
    /// The API server's audit log (JSON lines; see the ground's audit policy).
    pub audit_log: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the operator's end-to-end tests run on the ground; \
             run `make ground-up` and `source tests/ground/.state/env` first"
        )
    })
}

impl GroundEnv {
    pub fn load() -> Self {
        var("KUBECONFIG");
        GroundEnv {
            s3_endpoint: var("S3_ENDPOINT"),
            s3_access_key: var("S3_ACCESS_KEY"),
            s3_secret_key: var("S3_SECRET_KEY"),
            s3_region: std::env::var("S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            moto_endpoint: var("MOTO_ENDPOINT"),
            moto_access_key: var("MOTO_ACCESS_KEY"),
            moto_secret_key: var("MOTO_SECRET_KEY"),
            audit_log: var("GROUND_AUDIT_LOG").into(),
        }
    }
}

/// The writes (create, update, patch) to one object of `resource` (plural; its subresources
/// included) in `namespace`, as the ground's audit log recorded them, whoever made them.
pub fn audited_writes(env: &GroundEnv, resource: &str, namespace: &str, name: &str) -> usize {
    let log = std::fs::read_to_string(&env.audit_log).expect("the ground's audit log");
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            let o = &e["objectRef"];
            ["create", "update", "patch"].contains(&e["verb"].as_str().unwrap_or(""))
                && o["resource"] == resource
                && o["namespace"] == namespace
                && o["name"] == name
        })
        .count()
}

/// `text` without ANSI colour sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of the series `name{labels...}` in a metrics text (labels given as `k="v"`).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A random lowercase suffix.
pub fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// One test's world: a client, a fresh namespace and, once started, the operator.
pub struct World {
    pub env: GroundEnv,
    pub client: Client,
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub operator: Option<Child>,
    pub operator_log: PathBuf,
    operator_starts: u32,
}

impl World {
    pub async fn new(name: &str) -> World {
        let env = GroundEnv::load();
        let client = Client::try_default()
            .await
            .expect("a client for the ground's KUBECONFIG");
        apply_crds(&client).await;
        let ns = format!("{name}-{}", suffix());
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("failed to create the test namespace");
        let dir = tempfile::tempdir().expect("a temp dir");
        let operator_log = dir.path().join("operator.log");
        World {
            env,
            client,
            ns,
            dir,
            operator: None,
            operator_log,
            operator_starts: 0,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Starts `outbound run` watching this namespace, its log appended to `operator_log`.
    pub fn start_operator(&mut self) {
        self.start_operator_with_env(&[]);
    }

    /// Starts the operator with extra environment (e.g. its own AWS identity for workload mode).
    pub fn start_operator_with_env(&mut self, env: &[(&str, &str)]) {
        self.operator_starts += 1;
        let identity = format!("test-{}", self.operator_starts);
        let log = self.operator_log.clone();
        let mut child = self.operator_command(&identity, &log);
        child.envs(env.iter().copied());
        self.operator = Some(child.spawn().expect("failed to start the operator"));
    }

    /// Spawns one more `outbound run` replica for this namespace (same Lease).
    pub fn spawn_operator(&self, identity: &str, log: &std::path::Path) -> Child {
        self.operator_command(identity, log)
            .spawn()
            .expect("failed to start the operator")
    }

    fn operator_command(&self, identity: &str, log: &std::path::Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbound"));
        command
            .args([
                "run",
                "--metrics-addr",
                "127.0.0.1:0",
                "--namespace",
                &self.ns,
                "--lease-namespace",
                &self.ns,
                "--revalidate-interval",
                "20s",
                "--lease-duration",
                "6s",
                "--identity",
                identity,
            ])
            // The ground's S3 servers are plain http on 127.0.0.1: allowed here, refused by
            // default (the test of that starts the operator with these set to false).
            .env("OUTBOUND_ALLOW_HTTP_ENDPOINTS", "true")
            .env("OUTBOUND_ALLOW_PRIVATE_ENDPOINTS", "true")
            .env("OUTBOUND_LOG", "info,outbound=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        command
    }

    /// A client of the ground's versitygw as its root user.
    pub async fn ground_s3(&self) -> aws_sdk_s3::Client {
        let env = &self.env;
        s3(
            &env.s3_endpoint,
            &env.s3_region,
            &env.s3_access_key,
            &env.s3_secret_key,
        )
        .await
    }

    /// The Secret `name` with the ground versitygw's root keys under the default key names.
    pub async fn ground_keys_secret(&self, name: &str) {
        let (key, secret) = (
            self.env.s3_access_key.clone(),
            self.env.s3_secret_key.clone(),
        );
        self.secret(
            name,
            &[
                ("AWS_ACCESS_KEY_ID", &key),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )
        .await;
    }

    /// Kills the operator abruptly (SIGKILL), as a node loss would.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running operator's metrics address, host:port (from its log: it listens on port 0).
    pub fn metrics_addr(&self) -> String {
        let log = strip_ansi(&self.operator_log());
        log.lines()
            .filter(|l| l.contains("serving metrics and health"))
            .filter_map(|l| l.split("addr=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .next_back()
            .expect("the operator logged its metrics address")
            .trim_matches('"')
            .to_string()
    }

    /// The running operator's `/metrics` text.
    pub async fn operator_metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr();
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(&self.operator_log).unwrap_or_default()
    }

    /// A Secret with an access key pair (and whatever extra keys).
    pub async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            string_data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.api::<Secret>()
            .patch(
                name,
                &PatchParams::apply("outbound-test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("failed to apply the Secret");
    }

    pub async fn apply_yaml<K>(&self, yaml: &str) -> Result<K, kube::Error>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let obj: K = serde_yaml::from_str(yaml).expect("test YAML parses");
        let name = obj.name_any();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply("outbound-test").force(),
                &Patch::Apply(&obj),
            )
            .await
    }

    /// A PersistentVolume on a local folder and a claim bound to it; returns the folder.
    pub async fn volume(&self, claim: &str) -> PathBuf {
        let folder = self.dir.path().join(format!("pv-{claim}"));
        std::fs::create_dir_all(&folder).unwrap();
        let pv_name = format!("{}-{claim}", self.ns);
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadOnlyMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": folder.to_str().unwrap()},
                "claimRef": {"namespace": self.ns, "name": claim},
            }
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .expect("failed to create the PersistentVolume");
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            }
        }))
        .unwrap();
        self.api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &pvc)
            .await
            .expect("failed to create the PersistentVolumeClaim");
        folder
    }

    pub async fn destination(&self, name: &str) -> OutboundDestination {
        self.api::<OutboundDestination>()
            .get(name)
            .await
            .expect("destination")
    }

    pub async fn delivery(&self, name: &str) -> OutboundDelivery {
        self.api::<OutboundDelivery>()
            .get(name)
            .await
            .expect("delivery")
    }

    /// Waits until the destination's Ready condition has `status` and `reason`.
    /// The reports of a delivery's upload pods (its OutboundShards), by index.
    pub async fn shards(&self, delivery: &str) -> Vec<outbound::api::ShardStatus> {
        let mut shards = self
            .api::<outbound::api::OutboundShard>()
            .list(&ListParams::default().labels(&format!("outbound.dev/delivery={delivery}")))
            .await
            .expect("list shards")
            .items;
        shards.sort_by_key(|s| s.spec.index);
        shards.into_iter().filter_map(|s| s.status).collect()
    }

    pub async fn wait_destination(
        &self,
        name: &str,
        status: &str,
        reason: &str,
    ) -> OutboundDestination {
        let what = format!("destination {name} Ready={status} reason {reason}");
        wait_for(
            &what,
            Duration::from_secs(60),
            || async {
                let d = self
                    .api::<OutboundDestination>()
                    .get_opt(name)
                    .await
                    .ok()??;
                let c = d
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")?
                    .clone();
                (c.status == status && c.reason == reason).then_some(d)
            },
            || self.diagnose(),
        )
        .await
    }

    /// Waits until the delivery's Ready condition has `reason` (and `phase`, when given).
    pub async fn wait_delivery(
        &self,
        name: &str,
        phase: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> OutboundDelivery {
        let what = format!("delivery {name} phase {phase} reason {reason:?}");
        wait_for(
            &what,
            timeout,
            || async {
                let d = self.api::<OutboundDelivery>().get_opt(name).await.ok()??;
                let s = d.status.as_ref()?;
                let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
                let phase_ok = s.phase.map(|p| p.as_str()) == Some(phase);
                (phase_ok && reason.is_none_or(|r| c.reason == r)).then_some(d)
            },
            || self.diagnose(),
        )
        .await
    }

    /// What a failing wait prints: the namespace's objects and the operator's log tail.
    pub fn diagnose(&self) -> String {
        let out = Command::new("kubectl")
            .args(["get", "odest,odel,jobs,pods", "-n", &self.ns, "-o", "yaml"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let log = self.operator_log();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("--- objects\n{out}\n--- operator log (tail)\n{tail}")
    }

    /// Stops the operator and deletes the namespace. The finalizers it left are removed (no
    /// operator runs to honour them), so that the namespace goes and no later cluster-wide
    /// operator inherits its objects.
    pub async fn cleanup(mut self) {
        self.kill_operator();
        let release = serde_json::json!({"metadata": {"finalizers": null}});
        let params = PatchParams::default();
        for d in self
            .api::<OutboundDelivery>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = self
                .api::<OutboundDelivery>()
                .patch(&d.name_any(), &params, &Patch::Merge(&release))
                .await;
        }
        for s in self
            .api::<outbound::api::OutboundShard>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = self
                .api::<outbound::api::OutboundShard>()
                .patch(&s.name_any(), &params, &Patch::Merge(&release))
                .await;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}

impl Drop for World {
    /// A test that failed half-way leaves nothing running and its namespace going (its
    /// destinations first of all: a later cluster-wide operator would probe them).
    fn drop(&mut self) {
        self.kill_operator();
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Applies the CRDs (server-side, idempotent) and waits until they are served.
pub async fn apply_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in outbound::api::crds() {
        api.patch(
            crd.metadata.name.as_deref().unwrap(),
            &PatchParams::apply("outbound-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("failed to apply the CRDs");
    }
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let params = PatchParams::apply("outbound-test").force();
    for (policy, binding) in outbound::api::policies() {
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(&policy.name_any(), &params, &Patch::Apply(&policy))
            .await
            .expect("failed to apply an admission policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(&binding.name_any(), &params, &Patch::Apply(&binding))
            .await
            .expect("failed to apply an admission policy binding");
    }
    wait_for(
        "CRDs established",
        Duration::from_secs(30),
        || async {
            let a: Api<OutboundDelivery> = Api::all(client.clone());
            let b: Api<OutboundDestination> = Api::all(client.clone());
            (a.list(&Default::default()).await.is_ok() && b.list(&Default::default()).await.is_ok())
                .then_some(())
        },
        String::new,
    )
    .await;
    // The admission policies' param informers sync a moment after their CRDs: until then every
    // write a policy governs is refused ("not yet synced"). Dry runs, until neither kind is.
    wait_for(
        "the admission policies' params synced",
        Duration::from_secs(30),
        || async {
            let dry = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let destination: OutboundDestination = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "sync-probe"},
                "spec": {"s3": {"bucket": "sync-probe"}, "credentials": {"secret": {"name": "x"}}},
            }))
            .unwrap();
            let delivery: OutboundDelivery = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "sync-probe"},
                "spec": {"destinationRef": {"name": "x"}, "source": {"volume": {"claimName": "x"}}},
            }))
            .unwrap();
            let unsynced = |e: kube::Error| e.to_string().contains("not yet synced");
            let a = Api::<OutboundDestination>::namespaced(client.clone(), "default")
                .create(&dry, &destination)
                .await
                .err()
                .is_some_and(unsynced);
            let b = Api::<OutboundDelivery>::namespaced(client.clone(), "default")
                .create(&dry, &delivery)
                .await
                .err()
                .is_some_and(unsynced);
            (!a && !b).then_some(())
        },
        String::new,
    )
    .await;
}

/// Polls `check` until it returns Some, or panics after `timeout` with `diagnose()`.
pub async fn wait_for<T, F, Fut, D>(what: &str, timeout: Duration, mut check: F, diagnose: D) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    D: Fn() -> String,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                diagnose()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An S3 client with keys.
pub async fn s3(endpoint: &str, region: &str, key: &str, secret: &str) -> aws_sdk_s3::Client {
    let access = outbound::credentials::Access::Keys {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        session_token: None,
    };
    let target = outbound::credentials::Target {
        region: region.into(),
        endpoint: Some(endpoint.into()),
        force_path_style: true,
        sts_endpoint: None,
        expected_bucket_owner: None,
        ca_bundle: None,
    };
    let config = outbound::credentials::sdk_config(&access, &target).await;
    outbound::credentials::s3_client(&config, &target)
}

/// Every key in the bucket with its size.
pub async fn list_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("failed to list objects");
        for o in page.contents() {
            out.push((
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or(0),
            ));
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out.sort();
    out
}

/// Keys of the bucket's open multipart uploads.
pub async fn open_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("failed to list multipart uploads");
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}

/// Every place a secret must never appear: the operator's log, the namespace's Events, the
/// deliveries' and destinations' status, the Jobs' and pods' specs.
pub fn assert_secret_nowhere(world: &World, secret: &str) {
    let log = world.operator_log();
    assert!(!log.contains(secret), "the operator's log holds the secret");
    for kind in [
        "events",
        "outbounddeliveries",
        "outbounddestinations",
        "outboundshards",
        "jobs",
        "pods",
    ] {
        let out = std::process::Command::new("kubectl")
            .args(["get", kind, "-n", &world.ns, "-o", "json"])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl get {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.len() > 50,
            "kubectl get {kind} returned nothing useful"
        );
        assert!(!text.contains(secret), "{kind} hold the secret value");
    }
}

/// Creates a versitygw account with these keys (role admin: it may write every bucket), through
/// versitygw's admin API as the ground's root user.
pub fn versitygw_account(env: &GroundEnv, access: &str, secret: &str) {
    versitygw_account_as(env, access, secret, "admin");
}

/// Creates a versitygw account of `role`: `user` accounts are held to bucket policies (root and
/// `admin` accounts pass them by).
pub fn versitygw_account_as(env: &GroundEnv, access: &str, secret: &str, role: &str) {
    let admin = std::env::var("S3_ADMIN_ENDPOINT").expect("S3_ADMIN_ENDPOINT from the ground");
    let out = std::process::Command::new("versitygw")
        .args(["admin", "--access", &env.s3_access_key, "--secret"])
        .arg(&env.s3_secret_key)
        .args(["--endpoint-url", &admin, "create-user", "--access", access])
        .args(["--secret", secret, "--role", role])
        .output()
        .expect("versitygw (on the ground's PATH)");
    assert!(
        out.status.success(),
        "versitygw admin create-user: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the cluster's OutboundTenancy when dropped, so that a failing test leaves no grants
/// behind (they are cluster-wide; this test's name only its own namespaces).
pub struct TenancyGuard;

impl Drop for TenancyGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "outboundtenancy", "default", "--ignore-not-found"])
            .output();
    }
}

/// Applies the OutboundTenancy `default` as the cluster admin.
pub async fn apply_tenancy(world: &World, yaml: &str) {
    let tenancy: outbound::api::OutboundTenancy = serde_yaml::from_str(yaml).unwrap();
    kube::Api::<outbound::api::OutboundTenancy>::all(world.client.clone())
        .patch(
            "default",
            &PatchParams::apply("outbound-test").force(),
            &Patch::Apply(&tenancy),
        )
        .await
        .expect("the admin applies the tenancy");
}

/// The reason and message of the `Ready` condition among `conditions` (empty when there is none).
pub fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}
