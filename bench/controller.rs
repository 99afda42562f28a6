//! `make bench-controller`: the controller at scale on the ground. N suspended deliveries (1,000
//! by default) are created at once against one keyed destination; the benchmark measures the time
//! until every one has its Job and a status phase, the operator's peak RSS, the API requests the
//! operator made per delivery (from the API server's audit log, by verb and resource), and the
//! writes a forced resync (an operator restart) causes when nothing changed. Writes
//! docs/benchmarks-controller.md and prints one `CONTROLLER ...` summary line.
//!
//! The operator runs as a release-built process with its own ServiceAccount token, bound to the
//! chart's ClusterRole and leader-election Role (rendered by `helm template`), so the audit log
//! (the ground records every service account's requests) attributes its requests exactly.
//! Run through scripts/bench-controller.sh, which brings the ground up and builds the operator.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use outbound::api::{OutboundDelivery, OutboundDestination};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Prefix of the bench namespace, whose name is also the chart's release name: the operator's
/// ServiceAccount, ClusterRole and bindings are named after it, so two runs never share them.
const NS_PREFIX: &str = "outbound-bench";
const DESTINATION: &str = "acme";
const CLAIM: &str = "exports";
/// The floors of issue 6.
const FLOOR_TO_JOBS_S: f64 = 20.0;
const FLOOR_RSS_MIB: f64 = 128.0;
/// Hand-written notes below this line in the document survive a new run.
const NOTES_MARKER: &str =
    "<!-- Notes below this line are written by hand and kept by `make bench-controller`. -->";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run through `make bench-controller` (it sources the ground's env)"
        )
    })
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The audit log, read incrementally.

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    user: AuditUser,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize, Debug, Clone)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
struct ResponseStatus {
    #[serde(default)]
    code: i32,
}

/// One request of the operator, as the benchmark counts it.
#[derive(Clone, Debug)]
struct Request {
    verb: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    code: i32,
}

impl Request {
    fn is_lease(&self) -> bool {
        self.resource == "leases"
    }
}

/// Follows the audit log from where it was when opened (lumberjack rotation included: the rest
/// of a rotated file is read before the new one).
struct AuditTail {
    path: PathBuf,
    user: String,
    inode: u64,
    offset: u64,
    seen: HashSet<String>,
}

impl AuditTail {
    fn open(path: &Path, user: &str) -> AuditTail {
        let meta = std::fs::metadata(path).expect("the ground's audit log (GROUND_AUDIT_LOG)");
        AuditTail {
            path: path.to_path_buf(),
            user: user.to_string(),
            inode: meta.ino(),
            offset: meta.len(),
            seen: HashSet::new(),
        }
    }

    fn read_from(&mut self, file: &Path, offset: u64, out: &mut Vec<Request>) -> u64 {
        let Ok(mut f) = std::fs::File::open(file) else {
            return offset;
        };
        f.seek(std::io::SeekFrom::Start(offset)).unwrap();
        let mut reader = std::io::BufReader::new(f);
        let mut pos = offset;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).unwrap_or(0);
            // A line still being written is read again next time.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            pos += n as u64;
            let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
                continue;
            };
            if event.user.username != self.user || !self.seen.insert(event.audit_id.clone()) {
                continue;
            }
            let object = event.object_ref.unwrap_or_default();
            let resource = match object.subresource {
                Some(sub) => format!("{}/{sub}", object.resource),
                None => object.resource,
            };
            out.push(Request {
                verb: event.verb,
                resource,
                code: event.response_status.map(|s| s.code).unwrap_or(0),
            });
        }
        pos
    }

    /// Every new request of the operator since the last call.
    fn drain(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        let meta = std::fs::metadata(&self.path).ok();
        if meta.as_ref().map(|m| m.ino()) != Some(self.inode) {
            // Rotated: finish the old file (renamed next to it), then start the new one at 0.
            let dir = self.path.parent().unwrap().to_path_buf();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.metadata().map(|m| m.ino()).ok() == Some(self.inode) {
                        let _ = self.read_from(&entry.path(), self.offset, &mut out);
                    }
                }
            }
            self.inode = meta.as_ref().map(|m| m.ino()).unwrap_or(0);
            self.offset = 0;
        }
        let path = self.path.clone();
        self.offset = self.read_from(&path, self.offset, &mut out);
        out
    }
}

/// Requests by (verb, resource), lease requests apart.
#[derive(Default, Clone)]
struct Tally {
    by_kind: BTreeMap<(String, String), u64>,
    /// Failed requests by (HTTP status, verb, resource).
    errors: BTreeMap<(i32, String, String), u64>,
}

impl Tally {
    fn add(&mut self, requests: &[Request]) {
        for r in requests {
            *self
                .by_kind
                .entry((r.verb.clone(), r.resource.clone()))
                .or_default() += 1;
            if r.code >= 400 {
                *self
                    .errors
                    .entry((r.code, r.verb.clone(), r.resource.clone()))
                    .or_default() += 1;
            }
        }
    }
    fn count(&self, keep: impl Fn(&str, &str) -> bool) -> u64 {
        self.by_kind
            .iter()
            .filter(|((v, r), _)| keep(v, r))
            .map(|(_, n)| n)
            .sum()
    }
    fn non_lease(&self) -> u64 {
        self.count(|_, r| r != "leases")
    }
    fn writes(&self) -> u64 {
        self.count(|v, r| {
            r != "leases"
                && matches!(
                    v,
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
        })
    }
    fn lease(&self) -> u64 {
        self.count(|_, r| r == "leases")
    }
    fn lease_writes(&self) -> u64 {
        self.count(|v, r| r == "leases" && matches!(v, "create" | "update" | "patch"))
    }
    /// "404 get jobs: 1000, 409 create jobs: 3", or "none".
    fn failures(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|((code, verb, resource), n)| format!("{code} {verb} {resource}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn table(&self, per: Option<usize>) -> String {
        let mut out = String::from(if per.is_some() {
            "| verb | resource | requests | per delivery |\n|---|---|---:|---:|\n"
        } else {
            "| verb | resource | requests |\n|---|---|---:|\n"
        });
        for ((verb, resource), n) in &self.by_kind {
            match per {
                Some(d) => out.push_str(&format!(
                    "| {verb} | {resource} | {n} | {:.2} |\n",
                    *n as f64 / d as f64
                )),
                None => out.push_str(&format!("| {verb} | {resource} | {n} |\n")),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The operator process.

struct Operator {
    child: Child,
    metrics_port: u16,
}

impl Operator {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmHWM, VmRSS) in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(0.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// A counter of the operator's /metrics, summed over its label sets that contain `labels`.
    async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        let mut total = None;
        for line in body.lines() {
            if line.starts_with(name) && line.contains(labels) {
                let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                *total.get_or_insert(0.0) += v;
            }
        }
        total
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User + system CPU seconds of a process so far (0 when it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/PID/stat, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The ground's processes whose CPU the deliveries cost: the API server, the controller
/// manager, and the supervisor (embedded etcd and the node).
fn ground_processes() -> Vec<(&'static str, u32)> {
    let state = PathBuf::from(var("GROUND_STATE"));
    let pid = |file: &str| {
        std::fs::read_to_string(state.join(file))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    };
    [
        ("kube-apiserver", "pids/kube-apiserver.pid"),
        ("etcd and node", "ground.pid"),
        (
            "kube-controller-manager",
            "pids/kube-controller-manager.pid",
        ),
    ]
    .into_iter()
    .filter_map(|(name, file)| pid(file).map(|p| (name, p)))
    .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// What the admin sees: deliveries and Jobs, watched.

#[derive(Default)]
struct Observed {
    /// delivery name -> Job name, once the status has a phase and a jobName.
    status: HashMap<String, String>,
    jobs: HashSet<String>,
    /// delivery name -> when it first had both.
    done_at: HashMap<String, Instant>,
}

impl Observed {
    fn update(&mut self, name: &str) {
        if self.done_at.contains_key(name) {
            return;
        }
        if let Some(job) = self.status.get(name)
            && self.jobs.contains(job)
        {
            self.done_at.insert(name.to_string(), Instant::now());
        }
    }
}

fn spawn_watchers(client: &Client, ns: &str, observed: Arc<Mutex<Observed>>) {
    let deliveries: Api<OutboundDelivery> = Api::namespaced(client.clone(), ns);
    let o = observed.clone();
    tokio::spawn(async move {
        let stream = watcher(deliveries, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(d)) = stream.try_next().await {
            let status = d.status.as_ref();
            if let (Some(_), Some(job)) = (
                status.and_then(|s| s.phase),
                status.and_then(|s| s.job_name.clone()),
            ) {
                let mut o = o.lock().unwrap();
                let name = d.name_any();
                o.status.insert(name.clone(), job);
                o.update(&name);
            }
        }
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let stream = watcher(jobs, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(j)) = stream.try_next().await {
            let owner = j
                .owner_references()
                .iter()
                .find(|r| r.kind == "OutboundDelivery")
                .map(|r| r.name.clone());
            let mut o = observed.lock().unwrap();
            o.jobs.insert(j.name_any());
            if let Some(owner) = owner {
                o.update(&owner);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Setup.

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The chart's ServiceAccount, ClusterRole(Binding) and leader-election Role(Binding), for `ns`.
fn apply_chart_rbac(ns: &str) {
    let rendered = run(
        Command::new("helm").args([
            "template",
            ns,
            "charts/outbound",
            "--kube-version",
            "1.37.0",
            "--namespace",
            ns,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ]),
        "helm template",
    );
    let mut apply = Command::new("kubectl")
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(rendered.as_bytes())
        .unwrap();
    assert!(
        apply.wait().unwrap().success(),
        "kubectl apply of the chart's RBAC failed"
    );
}

/// A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest token).
async fn operator_kubeconfig(client: &Client, ns: &str, dir: &Path) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let token = sas
        .create_token_request(
            ns,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: None,
                    expiration_seconds: Some(4 * 3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest's status");
    let admin = kube::config::Kubeconfig::read().expect("the admin kubeconfig");
    let ca = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority.clone())
        .expect("the ground's CA file in the kubeconfig");
    let path = dir.join("operator.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: ground, cluster: {{server: \"{}\", certificate-authority: \"{ca}\"}}}}]\nusers: [{{name: operator, user: {{token: \"{token}\"}}}}]\ncontexts: [{{name: ground, context: {{cluster: ground, user: operator, namespace: {ns}}}}}]\ncurrent-context: ground\n",
        var("GROUND_API_SERVER")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start_operator(bin: &str, ns: &str, kubeconfig: &Path, log: &Path) -> Operator {
    let metrics_port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(bin)
        .args([
            "run",
            "--namespace",
            ns,
            "--lease-namespace",
            ns,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            // The same identity every start: a restart takes its own Lease back at once.
            "--identity",
            "bench",
            // The ground's S3 servers are plain http on 127.0.0.1.
            "--allow-http-endpoints",
            "--allow-private-endpoints",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env(
            "OUTBOUND_LOG",
            std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("failed to start the operator");
    Operator {
        child,
        metrics_port,
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the audit log until the operator made no request but Lease renewals and watches for
/// `quiet`; gives up after `max`. Returns the requests read and when the last one was seen.
async fn until_quiet(
    audit: &mut AuditTail,
    quiet: Duration,
    max: Duration,
) -> (Vec<Request>, Instant) {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut all = Vec::new();
    while start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let new = audit.drain();
        if new.iter().any(|r| !r.is_lease() && r.verb != "watch") {
            last = Instant::now();
        }
        all.extend(new);
        if last.elapsed() >= quiet {
            break;
        }
    }
    (all, last)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {kernel}")
}

fn tool_version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn lock_version(krate: &str) -> String {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let needle = format!("name = \"{krate}\"\nversion = \"");
    lock.find(&needle)
        .map(|i| {
            let rest = &lock[i + needle.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_default()
}

fn meets(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

// ---------------------------------------------------------------------------------------------

struct Results {
    n: usize,
    create_s: f64,
    to_jobs_s: f64,
    p50_s: f64,
    p90_s: f64,
    settle_s: f64,
    rss_peak_mib: f64,
    rss_after_mib: f64,
    cpu_s: f64,
    /// CPU seconds from the first create until every delivery had its Job: the ground's
    /// processes, then the operator.
    ground_cpu: Vec<(String, f64)>,
    operator_cpu_to_jobs: f64,
    bench_cpu_to_jobs: f64,
    create_tally: Tally,
    reconciles: f64,
    resync_rss_peak_mib: f64,
    resync_catch_up_s: f64,
    resync_reconciles: f64,
    resync_tally: Tally,
    window_tally: Tally,
    window_s: f64,
    setup_tally: Tally,
    load: String,
}

#[tokio::main]
async fn main() {
    let n: usize = knob("BENCH_DELIVERIES", 1000);
    let concurrency: usize = knob("BENCH_CREATE_CONCURRENCY", 64);
    let window = Duration::from_secs(knob("BENCH_RESYNC_WINDOW", 20));
    let bin = std::env::var("OUTBOUND_BIN").unwrap_or_else(|_| "target/release/outbound".into());
    let doc = PathBuf::from(
        std::env::var("BENCH_CONTROLLER_DOC")
            .unwrap_or_else(|_| "docs/benchmarks-controller.md".into()),
    );
    let audit_path = PathBuf::from(var("GROUND_AUDIT_LOG"));
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("bench-controller: load average {load} (figures mean most on a quiet machine)");

    let client = Client::try_default()
        .await
        .expect("a client for the ground");
    apply_crds(&client).await;
    let ns = format!("{NS_PREFIX}-{:06x}", rand::random::<u32>() & 0xffffff);
    let user = format!("system:serviceaccount:{ns}:{ns}");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("the bench namespace");
    let work = PathBuf::from("target/bench-controller");
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join(format!("{ns}.log"));
    eprintln!(
        "bench-controller: namespace {ns}; operator log {}",
        log.display()
    );

    let result = bench(
        &client,
        &ns,
        &user,
        &bin,
        &audit_path,
        &work,
        &log,
        n,
        concurrency,
        window,
        load,
    )
    .await;
    cleanup(&client, &ns, concurrency).await;
    let r = match result {
        Ok(r) => r,
        Err(e) => panic!("bench-controller failed: {e}"),
    };
    report(&r, &doc);
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    client: &Client,
    ns: &str,
    user: &str,
    bin: &str,
    audit_path: &Path,
    work: &Path,
    log: &Path,
    n: usize,
    concurrency: usize,
    window: Duration,
    load: String,
) -> Result<Results, String> {
    apply_chart_rbac(ns);
    let kubeconfig = operator_kubeconfig(client, ns, work).await;

    // The keyed destination, its bucket and the claim the deliveries name.
    let bucket = ns.to_string();
    let s3 = {
        let access = outbound::credentials::Access::Keys {
            access_key_id: var("S3_ACCESS_KEY"),
            secret_access_key: var("S3_SECRET_KEY"),
            session_token: None,
        };
        let target = outbound::credentials::Target {
            region: std::env::var("S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            endpoint: Some(var("S3_ENDPOINT")),
            force_path_style: true,
            sts_endpoint: None,
            expected_bucket_owner: None,
            ca_bundle: None,
        };
        let config = outbound::credentials::sdk_config(&access, &target).await;
        outbound::credentials::s3_client(&config, &target)
    };
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| format!("failed to create the bucket: {e:?}"))?;
    let pp = PatchParams::apply("outbound-bench").force();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": var("S3_ACCESS_KEY"), "AWS_SECRET_ACCESS_KEY": var("S3_SECRET_KEY")},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch("keys", &pp, &Patch::Apply(&secret))
        .await
        .map_err(|e| format!("secret: {e}"))?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .patch(CLAIM, &pp, &Patch::Apply(&pvc))
        .await
        .map_err(|e| format!("claim: {e}"))?;
    let dest: OutboundDestination = serde_json::from_value(serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDestination",
        "metadata": {"name": DESTINATION},
        "spec": {
            "s3": {"bucket": bucket, "region": "us-east-1", "endpoint": var("S3_ENDPOINT"), "forcePathStyle": true},
            "credentials": {"secret": {"name": "keys"}},
        },
    }))
    .unwrap();
    let dests: Api<OutboundDestination> = Api::namespaced(client.clone(), ns);
    dests
        .patch(DESTINATION, &pp, &Patch::Apply(&dest))
        .await
        .map_err(|e| format!("destination: {e}"))?;

    // Operator up, destination Ready: setup requests are counted apart.
    let mut audit = AuditTail::open(audit_path, user);
    let mut operator = start_operator(bin, ns, &kubeconfig, log);
    wait_until(
        "the destination to be Ready",
        Duration::from_secs(60),
        || async {
            dests
                .get_opt(DESTINATION)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| {
                    d.status.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
        },
    )
    .await;
    let mut setup_tally = Tally::default();
    setup_tally.add(
        &until_quiet(&mut audit, Duration::from_secs(2), Duration::from_secs(20))
            .await
            .0,
    );
    eprintln!(
        "bench-controller: operator up (pid {}), destination Ready",
        operator.pid()
    );

    // N suspended deliveries at once.
    let observed = Arc::new(Mutex::new(Observed::default()));
    spawn_watchers(client, ns, observed.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries: Api<OutboundDelivery> = Api::namespaced(client.clone(), ns);
    let cpu_before = operator.cpu_seconds();
    let bench_before = cpu_seconds(std::process::id());
    let ground = ground_processes();
    let ground_before: Vec<f64> = ground.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let start = Instant::now();
    let created = futures::stream::iter(0..n)
        .map(|i| {
            let deliveries = deliveries.clone();
            async move {
                let d: OutboundDelivery = serde_json::from_value(serde_json::json!({
                    "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDelivery",
                    "metadata": {"name": format!("d-{i:05}")},
                    "spec": {
                        "destinationRef": {"name": DESTINATION},
                        "source": {"volume": {"claimName": CLAIM, "path": format!("batch-{i}/")}},
                        "suspend": true,
                    },
                }))
                .unwrap();
                deliveries.create(&PostParams::default(), &d).await
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("failed to create a delivery: {e}"))?;
    let create_s = start.elapsed().as_secs_f64();
    eprintln!(
        "bench-controller: {} deliveries created in {create_s:.2} s",
        created.len()
    );
    let mut create_requests = Vec::new();
    let to_jobs = loop {
        create_requests.extend(audit.drain());
        let (done, each) = {
            let o = observed.lock().unwrap();
            let mut each: Vec<f64> = o
                .done_at
                .values()
                .map(|t| t.duration_since(start).as_secs_f64())
                .collect();
            each.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (o.done_at.len(), each)
        };
        if done >= n {
            break (each.last().copied().unwrap_or(0.0), each);
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "only {done} of {n} deliveries had a Job and a status after 600 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (to_jobs_s, each) = to_jobs;
    let ground_cpu: Vec<(String, f64)> = ground
        .iter()
        .zip(&ground_before)
        .map(|((name, pid), before)| (name.to_string(), cpu_seconds(*pid) - before))
        .collect();
    let operator_cpu_to_jobs = operator.cpu_seconds() - cpu_before;
    let bench_cpu_to_jobs = cpu_seconds(std::process::id()) - bench_before;
    eprintln!("bench-controller: every delivery has its Job and status after {to_jobs_s:.2} s");
    // The Job controller's own status updates come back as events: count until quiet.
    let (rest, last) =
        until_quiet(&mut audit, Duration::from_secs(5), Duration::from_secs(120)).await;
    create_requests.extend(rest);
    let settle_s = last.duration_since(start).as_secs_f64();
    let (rss_peak_mib, rss_after_mib) = operator.rss_mib();
    let cpu_s = operator.cpu_seconds() - cpu_before;
    let reconciles = operator
        .metric("outbound_reconciles_total", "controller=\"delivery\"")
        .await
        .unwrap_or(0.0);
    let mut create_tally = Tally::default();
    create_tally.add(&create_requests);
    eprintln!(
        "bench-controller: settled after {settle_s:.1} s; {} requests ({} writes) for {n} deliveries; peak RSS {rss_peak_mib:.1} MiB",
        create_tally.non_lease(),
        create_tally.writes()
    );

    // Forced resync: a restarted operator lists and reconciles everything again.
    operator.stop();
    audit.drain();
    let restart = Instant::now();
    let mut operator = start_operator(bin, ns, &kubeconfig, log);
    let mut resync_requests = Vec::new();
    loop {
        resync_requests.extend(audit.drain());
        let done = operator
            .metric("outbound_reconciles_total", "controller=\"delivery\"")
            .await
            .unwrap_or(0.0);
        if done >= n as f64 {
            break;
        }
        if restart.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the restarted operator reconciled only {done} of {n} deliveries in 300 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rest, last) =
        until_quiet(&mut audit, Duration::from_secs(3), Duration::from_secs(120)).await;
    resync_requests.extend(rest);
    let resync_catch_up_s = last.duration_since(restart).as_secs_f64();
    let mut resync_tally = Tally::default();
    resync_tally.add(&resync_requests);
    eprintln!(
        "bench-controller: resync caught up after {resync_catch_up_s:.1} s; watching {} s more",
        window.as_secs()
    );
    let window_start = Instant::now();
    let mut window_requests = Vec::new();
    while window_start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        window_requests.extend(audit.drain());
    }
    let mut window_tally = Tally::default();
    window_tally.add(&window_requests);
    let resync_reconciles = operator
        .metric("outbound_reconciles_total", "controller=\"delivery\"")
        .await
        .unwrap_or(0.0);
    let (resync_rss_peak_mib, _) = operator.rss_mib();
    operator.stop();
    let _ = s3.delete_bucket().bucket(&bucket).send().await;

    Ok(Results {
        n,
        create_s,
        to_jobs_s,
        p50_s: percentile(&each, 0.5),
        p90_s: percentile(&each, 0.9),
        settle_s,
        rss_peak_mib,
        rss_after_mib,
        cpu_s,
        ground_cpu,
        operator_cpu_to_jobs,
        bench_cpu_to_jobs,
        create_tally,
        reconciles,
        resync_rss_peak_mib,
        resync_catch_up_s,
        resync_reconciles,
        resync_tally,
        window_tally,
        window_s: window.as_secs_f64(),
        setup_tally,
        load,
    })
}

/// Deliveries lose their finalizer (the operator is stopped; their Jobs never ran), then the
/// namespace goes, and the chart's cluster-wide RBAC with it.
async fn cleanup(client: &Client, ns: &str, concurrency: usize) {
    let deliveries: Api<OutboundDelivery> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = deliveries.list_metadata(&ListParams::default()).await {
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        futures::stream::iter(list.items)
            .map(|d| {
                let deliveries = deliveries.clone();
                let patch = patch.clone();
                async move {
                    let _ = deliveries
                        .patch(
                            &d.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    // Wait until it is gone: a run that follows at once would otherwise be measured against the
    // namespace controller deleting thousands of objects.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300)
        && namespaces.get_opt(ns).await.ok().flatten().is_some()
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

/// The CRDs and their admission policies, server-side applied, then served.
async fn apply_crds(client: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let pp = PatchParams::apply("outbound-bench").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in outbound::api::crds() {
        crds.patch(&crd.name_any(), &pp, &Patch::Apply(&crd))
            .await
            .expect("failed to apply the CRDs");
    }
    for (policy, binding) in outbound::api::policies() {
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(&policy.name_any(), &pp, &Patch::Apply(&policy))
            .await
            .expect("failed to apply an admission policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(&binding.name_any(), &pp, &Patch::Apply(&binding))
            .await
            .expect("failed to apply an admission policy binding");
    }
    let all: Api<OutboundDelivery> = Api::all(client.clone());
    wait_until("the CRDs to be served", Duration::from_secs(30), || async {
        all.list(&ListParams::default().limit(1)).await.is_ok()
    })
    .await;
}

fn report(r: &Results, doc: &Path) {
    let per = r.create_tally.non_lease() as f64 / r.n as f64;
    let resync_writes = r.resync_tally.writes() + r.window_tally.writes();
    let to_jobs_ok = r.to_jobs_s < FLOOR_TO_JOBS_S;
    let rss_peak = r.rss_peak_mib.max(r.resync_rss_peak_mib);
    let rss_ok = rss_peak < FLOOR_RSS_MIB;
    let writes_ok = resync_writes == 0;
    let summary = format!(
        "CONTROLLER deliveries={} to_jobs={:.1} s rss={:.0} MiB api_requests_per_delivery={:.1} resync_writes={}",
        r.n, r.to_jobs_s, rss_peak, per, resync_writes
    );

    let k8s = std::fs::read_to_string("tests/ground/KUBERNETES_VERSION")
        .unwrap_or_default()
        .trim()
        .to_string();
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let mut md = String::new();
    md.push_str("# Controller benchmark\n\n");
    md.push_str(
        "Written by `make bench-controller` (also the last step of `make bench`); the source is \
         `bench/controller.rs`. The operator (release build) runs as a process on the ground with \
         its own ServiceAccount token bound to the chart's ClusterRole and leader-election Role; \
         the ground's API server audits every service account's requests (Metadata level), so \
         every request below is the operator's own, counted once per audit ID.\n\n",
    );
    md.push_str(&format!(
        "- Run: {date}; load average at start {}\n- Machine: {}\n- Versions: {}; {}; Kubernetes {k8s} (the ground's kube-apiserver, embedded etcd); kube-rs {}, k8s-openapi {}\n- Command: `make bench-controller` (`BENCH_DELIVERIES={}`)\n\n",
        r.load,
        machine(),
        tool_version("rustc", &["--version"]),
        tool_version(
            std::env::var("OUTBOUND_BIN").as_deref().unwrap_or("target/release/outbound"),
            &["--version"],
        ),
        lock_version("kube"),
        lock_version("k8s-openapi"),
        r.n,
    ));
    md.push_str("## Result\n\n```\n");
    md.push_str(&summary);
    md.push_str("\n```\n\n| measure | value | floor | |\n|---|---:|---:|---|\n");
    md.push_str(&format!(
        "| every delivery has its Job and a status phase (from the first create) | {:.2} s | < {FLOOR_TO_JOBS_S} s | {} |\n",
        r.to_jobs_s,
        meets(to_jobs_ok)
    ));
    md.push_str(&format!(
        "| operator peak RSS (VmHWM; first run / after the restart) | {:.1} / {:.1} MiB | < {FLOOR_RSS_MIB} MiB | {} |\n",
        r.rss_peak_mib,
        r.resync_rss_peak_mib,
        meets(rss_ok)
    ));
    md.push_str(&format!(
        "| API writes of a forced resync (restart, catch-up and {:.0} s after), Lease excluded | {resync_writes} | 0 | {} |\n",
        r.window_s,
        meets(writes_ok)
    ));
    md.push_str(&format!(
        "| API requests per delivery (until the operator is quiet) | {per:.2} | | |\n\n"
    ));
    md.push_str(&format!(
        "Details: the {} creates (admin, {} at a time) took {:.2} s; a delivery had its Job and status after {:.2} s at the median and {:.2} s at the 90th percentile; the operator was quiet (no request for 5 s) {:.1} s after the first create, having run {:.0} delivery reconciles and used {:.1} s of CPU; its RSS then was {:.1} MiB. Requests answered with an error status (404 of a Job not created yet is expected; 409 and 422 are conflicts): {}.\n\n",
        r.n, knob("BENCH_CREATE_CONCURRENCY", 64), r.create_s, r.p50_s, r.p90_s, r.settle_s, r.reconciles, r.cpu_s, r.rss_after_mib, r.create_tally.failures()
    ));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut cpu_line: Vec<String> = r
        .ground_cpu
        .iter()
        .map(|(name, s)| {
            format!(
                "{name} {s:.1} s ({:.1} ms per delivery)",
                s * 1000.0 / r.n as f64
            )
        })
        .collect();
    cpu_line.push(format!(
        "the operator {:.1} s and this benchmark {:.1} s",
        r.operator_cpu_to_jobs, r.bench_cpu_to_jobs
    ));
    let total: f64 = r.ground_cpu.iter().map(|(_, s)| s).sum::<f64>()
        + r.operator_cpu_to_jobs
        + r.bench_cpu_to_jobs;
    md.push_str(&format!(
        "Where the time went: from the first create until every delivery had its Job, the machine's {cores} cores had {:.1} CPU-seconds. CPU used in that time: {}, {}; {:.1} CPU-seconds together (the rest: the kernel, idle moments and whatever else ran).\n\n",
        r.to_jobs_s * cores as f64,
        cpu_line[..cpu_line.len() - 1].join(", "),
        cpu_line[cpu_line.len() - 1],
        total,
    ));
    md.push_str(&format!(
        "### The operator's API requests for {} deliveries, by verb and resource\n\nLease requests (leader election: one renewal every 5 s) are in the table; the per-delivery figure leaves them out ({} here).\n\n",
        r.n,
        r.create_tally.lease()
    ));
    md.push_str(&r.create_tally.table(Some(r.n)));
    md.push_str(&format!(
        "\n### Forced resync\n\nThe operator was killed and started again (same identity, so it takes its Lease back at once). It listed everything again and ran {:.0} delivery reconciles; it was caught up (every delivery reconciled, then no request for 3 s) {:.1} s after the restart. Writes during that time and the {:.0} s after, Lease excluded: **{resync_writes}**; Lease writes (its acquisition and renewals): {}.\n\nDuring the catch-up:\n\n",
        r.resync_reconciles,
        r.resync_catch_up_s,
        r.window_s,
        r.resync_tally.lease_writes() + r.window_tally.lease_writes(),
    ));
    md.push_str(&r.resync_tally.table(None));
    md.push_str(&format!("\nIn the {:.0} s after:\n\n", r.window_s));
    if r.window_tally.by_kind.is_empty() {
        md.push_str("(no request)\n");
    } else {
        md.push_str(&r.window_tally.table(None));
    }
    md.push_str(&format!(
        "\nBefore the deliveries (start, Lease, destination probe): {} requests.\n\n",
        r.setup_tally.non_lease() + r.setup_tally.lease()
    ));
    md.push_str(NOTES_MARKER);
    md.push('\n');
    let notes = std::fs::read_to_string(doc)
        .ok()
        .and_then(|old| {
            old.split_once(NOTES_MARKER)
                .map(|(_, n)| n.trim_start_matches('\n').to_string())
        })
        .unwrap_or_default();
    md.push_str(&notes);
    std::fs::write(doc, md).expect("failed to write the benchmark document");
    eprintln!(
        "bench-controller: floors: to_jobs {} ; rss {} ; resync writes {} ; wrote {}",
        meets(to_jobs_ok),
        meets(rss_ok),
        meets(writes_ok),
        doc.display()
    );
    println!("{summary}");
}
