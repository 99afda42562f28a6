//! Wiring of the controllers (`outbound run`): leader election, the destination and delivery
//! reconcilers, metrics and health. Needs a client.

mod delivery;
mod destination;
pub mod endpoint;
pub mod leader;
mod receipts;
mod schedule;
mod uploads;

use crate::api::{
    CONTROLLER_MANAGER, OutboundDelivery, OutboundDestination, OutboundSchedule, OutboundShard,
    OutboundTenancy, TENANCY_NAME,
};
use crate::metrics::Metrics;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceRequirements, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Options of `outbound run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Image of the upload Jobs (runs `outbound upload`).
    #[arg(long, env = "OUTBOUND_UPLOADER_IMAGE", default_value_t = crate::job::default_image())]
    pub uploader_image: String,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "OUTBOUND_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// How often a destination is probed again when nothing changed.
    #[arg(long, env = "OUTBOUND_REVALIDATE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub revalidate_interval: Duration,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "OUTBOUND_LEASE_NAME",
        default_value = "outbound-controller"
    )]
    pub lease_name: String,
    /// How long a Lease holds without renewal.
    #[arg(long, env = "OUTBOUND_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "OUTBOUND_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name or host name plus a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Deliveries reconciled at the same time. Each in-flight reconcile holds its own HTTP/1.1
    /// connection to the API server, so this bounds the operator's memory and the burst it sends
    /// (unbounded, 1,000 new deliveries opened about 1,000 connections; see
    /// docs/benchmarks-controller.md for how the value was chosen).
    #[arg(long, env = "OUTBOUND_DELIVERY_CONCURRENCY", default_value_t = 32)]
    pub delivery_concurrency: u16,
    /// How long a finished upload Job (and its pods' logs) is kept before Kubernetes deletes it.
    /// A delivery that ended stays ended whether or not its Job is still there.
    #[arg(long, env = "OUTBOUND_JOB_TTL", default_value = "24h", value_parser = parse_duration)]
    pub job_ttl: Duration,
    /// How long a deleted delivery's finalizer keeps trying to abort its open multipart uploads
    /// (credentials gone, access revoked) before it lets go with a Warning event listing them.
    #[arg(long, env = "OUTBOUND_CLEANUP_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub cleanup_timeout: Duration,
    /// Let destinations name plain `http://` S3 and STS endpoints (default: https only).
    #[arg(long, env = "OUTBOUND_ALLOW_HTTP_ENDPOINTS", action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_http_endpoints: bool,
    /// Let destinations name loopback, link-local and cloud metadata endpoints (169.254.169.254,
    /// fd00:ec2::254, metadata.google.internal); default: refused.
    #[arg(long, env = "OUTBOUND_ALLOW_PRIVATE_ENDPOINTS", action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_private_endpoints: bool,
    /// Accept a destination's own `crossAccount.externalId` instead of the one the operator
    /// generates (default: refused with `ExternalIdNotAllowed`, as AWS prescribes for third
    /// parties; allow it only to migrate roles whose trust policy already names an ExternalId).
    #[arg(long, env = "OUTBOUND_ALLOW_SPEC_EXTERNAL_ID", action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_spec_external_id: bool,
    /// A Secret, in each delivery's namespace, whose `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and optional `AWS_SESSION_TOKEN` the upload pods get as their own identity in the
    /// workload-identity and assume-role modes. Only for clusters where no IRSA, Pod Identity or
    /// instance profile gives pods an identity (and the test ground); default: none.
    #[arg(long, env = "OUTBOUND_WORKLOAD_IDENTITY_SECRET")]
    pub workload_identity_secret: Option<String>,
    /// The upload pods' `fsGroup`: a group they belong to, so that they read source files that
    /// are readable by that group (default: none; the pods run as 65532:65532).
    #[arg(long, env = "OUTBOUND_UPLOAD_FS_GROUP")]
    pub upload_fs_group: Option<i64>,
    /// The upload container's resources, as the JSON of a Kubernetes `ResourceRequirements`
    /// (`{"limits":{"memory":"128Mi"}}`); default: none.
    #[arg(long, env = "OUTBOUND_UPLOAD_RESOURCES", value_parser = parse_resources)]
    pub upload_resources: Option<ResourceRequirements>,
}

fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(text).map_err(|e| format!("{text:?} is not a ResourceRequirements: {e}"))
}

impl RunArgs {
    /// The endpoints destinations may name.
    pub fn endpoint_policy(&self) -> endpoint::EndpointPolicy {
        endpoint::EndpointPolicy {
            allow_http: self.allow_http_endpoints,
            allow_private: self.allow_private_endpoints,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 5m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration like 30s or 5m")),
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub args: RunArgs,
    /// What the delivery controller watches anyway, so that a reconcile reads it instead of
    /// asking the API server again (a resync of N deliveries would otherwise cost 4N GETs).
    pub stores: Stores,
    /// Consecutive failures per object, for the backoff of transient errors.
    failures: Mutex<HashMap<String, u32>>,
    /// When the upload pods' ServiceAccount, Role and RoleBinding were last applied, by
    /// (namespace, service account).
    upload_access: tokio::sync::Mutex<HashMap<(String, String), std::time::Instant>>,
    /// Jobs this process created that its Job watch may not have delivered yet, by
    /// (namespace, name): the status write that precedes a create triggers the next reconcile,
    /// which would otherwise ask the API server for a Job it was just handed.
    created_jobs: Mutex<HashMap<(String, String), (std::time::Instant, Job)>>,
    /// When each delivery's status was last written with progress alone, by (namespace, name):
    /// many shards' reports fold into at most one write a second.
    progress_writes: Mutex<HashMap<(String, String), std::time::Instant>>,
}

/// Caches filled by the delivery controller's watches. Each is updated before the event that
/// triggers a reconcile is delivered, so a reconcile never sees an older object than its trigger.
pub struct Stores {
    /// Upload Jobs, without their pod template and managed fields (not needed to fold status).
    pub jobs: Store<Job>,
    pub destinations: Store<OutboundDestination>,
    pub claims: Store<PartialObjectMeta<PersistentVolumeClaim>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// The upload pods' shard reports (progress, failures, open uploads), without managed fields.
    pub shards: Store<OutboundShard>,
    /// The admin's tenancy grants: the one `OutboundTenancy` named `default`, when it exists.
    pub tenancy: Store<OutboundTenancy>,
    /// Key names (never values) of Secrets, by namespace/name, at a resourceVersion: whether a
    /// Secret has the keys a destination names is read once per Secret version, not per delivery.
    secret_keys: Mutex<HashMap<(String, String), SecretKeyNames>>,
    /// Resolves once every store has its first full list; shared, so that every waiting reconcile
    /// is woken. (A store's own `wait_until_ready` wakes only the last of several concurrent
    /// waiters: its one-shot channel keeps one waker. With several deliveries at a start, the
    /// others waited forever.)
    ready: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
    /// Resolves once the tenancy store has its first list (what the destination reconciler
    /// waits for: a destination must not be probed before the grants are known).
    tenancy_ready: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
}

/// A Secret's resourceVersion and its key names.
type SecretKeyNames = (String, Vec<String>);

/// The writers of `Stores`, driven by the delivery controller's watch streams.
struct StoreWriters {
    jobs: reflector::store::Writer<Job>,
    destinations: reflector::store::Writer<OutboundDestination>,
    claims: reflector::store::Writer<PartialObjectMeta<PersistentVolumeClaim>>,
    secrets: reflector::store::Writer<PartialObjectMeta<Secret>>,
    shards: reflector::store::Writer<OutboundShard>,
}

impl Stores {
    /// The stores, the writers the delivery controller's watches drive, and the tenancy's writer
    /// (its watch triggers the destination controller).
    fn new() -> (
        Stores,
        StoreWriters,
        reflector::store::Writer<OutboundTenancy>,
    ) {
        let (jobs, jobs_w) = reflector::store();
        let (destinations, destinations_w) = reflector::store();
        let (claims, claims_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        let (shards, shards_w) = reflector::store();
        let (tenancy, tenancy_w) = reflector::store();
        use futures::FutureExt;
        let tenancy_ready = {
            let t = tenancy.clone();
            async move {
                let _ = t.wait_until_ready().await;
            }
            .boxed()
            .shared()
        };
        let ready = {
            let (j, d, c, s, sh, t) = (
                jobs.clone(),
                destinations.clone(),
                claims.clone(),
                secrets.clone(),
                shards.clone(),
                tenancy_ready.clone(),
            );
            async move {
                let _ = futures::join!(
                    j.wait_until_ready(),
                    d.wait_until_ready(),
                    c.wait_until_ready(),
                    s.wait_until_ready(),
                    sh.wait_until_ready(),
                    t,
                );
            }
            .boxed()
            .shared()
        };
        (
            Stores {
                jobs,
                destinations,
                claims,
                secrets,
                shards,
                tenancy,
                secret_keys: Mutex::default(),
                ready,
                tenancy_ready,
            },
            StoreWriters {
                jobs: jobs_w,
                destinations: destinations_w,
                claims: claims_w,
                secrets: secrets_w,
                shards: shards_w,
            },
            tenancy_w,
        )
    }

    /// Waits until every store has its first full list (a reconcile must not read an empty
    /// store as "does not exist" just after a start).
    pub async fn ready(&self) {
        self.ready.clone().await
    }

    /// The tenancy grants (`None`: no tenancy object, nothing restricted), once the store has
    /// its first list.
    pub async fn tenancy(&self) -> Option<Arc<OutboundTenancy>> {
        self.tenancy_ready.clone().await;
        self.tenancy.get(&ObjectRef::new(TENANCY_NAME))
    }

    /// The key names of Secret `ns/name` when it exists, read from the API server only when
    /// its resourceVersion is not the one last read.
    pub async fn secret_key_names(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, kube::Error> {
        let key = (ns.to_string(), name.to_string());
        let Some(meta) = self.secrets.get(&ObjectRef::new(name).within(ns)) else {
            self.secret_keys
                .lock()
                .expect("secret keys lock")
                .remove(&key);
            return Ok(None);
        };
        let version = meta.resource_version().unwrap_or_default();
        if let Some((seen, keys)) = self.secret_keys.lock().expect("secret keys lock").get(&key)
            && *seen == version
        {
            return Ok(Some(keys.clone()));
        }
        let Some(secret) = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
        else {
            return Ok(None);
        };
        let mut keys: Vec<String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(secret.string_data.iter().flatten().map(|(k, _)| k.clone()));
        self.secret_keys.lock().expect("secret keys lock").insert(
            key,
            (secret.resource_version().unwrap_or_default(), keys.clone()),
        );
        Ok(Some(keys))
    }
}

/// Drops what the status fold never reads from a cached Job: the pod template (most of its
/// size: env, volumes, security context) and the managed fields.
fn trim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

impl Context {
    /// Backoff for an object's transient failure: 2s, 4s, ... capped at 5 minutes.
    fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_insert(0);
        *n = (*n + 1).min(8);
        Duration::from_secs((1u64 << *n).min(300))
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

/// Runs the controllers until stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let server = tokio::spawn(crate::metrics::serve(args.metrics_addr, metrics.clone()));
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("failed to create the Kubernetes client: {e}"))?;
    metrics.set_ready(true);

    let identity = match &args.identity {
        Some(id) => id.clone(),
        None => format!(
            "{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "outbound".into()),
            rand::random::<u32>()
        ),
    };
    let lease = leader::LeaderLease::new(
        Api::namespaced(client.clone(), &args.lease_namespace),
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    lease.acquire().await;
    metrics.set_leader(true);

    let (stores, writers, tenancy) = Stores::new();
    let ctx = Arc::new(Context {
        stores,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_MANAGER.into(),
                instance: Some(identity.clone()),
            },
        ),
        client: client.clone(),
        metrics: metrics.clone(),
        args: args.clone(),
        failures: Mutex::default(),
        upload_access: Default::default(),
        created_jobs: Mutex::default(),
        progress_writes: Mutex::default(),
    });

    // The tenancy object fills its store (read by both reconcilers) and triggers every
    // destination: a grant added or removed decides whether each is probed at all.
    let tenancy = watcher(
        Api::<OutboundTenancy>::all(client.clone()),
        // The one object the policy reads, so that RBAC can name it (resourceNames).
        watcher::Config::default().fields(&format!("metadata.name={TENANCY_NAME}")),
    )
    .default_backoff()
    .reflect(tenancy)
    .touched_objects();
    // ... and the deliveries not started yet: a source bucket granted or not is theirs to see.
    let (tenancy_changed, tenancy_changes) = futures::channel::mpsc::unbounded();
    let tenancy = futures::StreamExt::inspect(tenancy, move |_| {
        let _ = tenancy_changed.unbounded_send(());
    });
    let destinations = destination_controller(ctx.clone(), tenancy);
    let deliveries = delivery_controller(ctx.clone(), writers, tenancy_changes);
    let schedules = schedule_controller(ctx.clone());
    tokio::select! {
        _ = destinations => anyhow::bail!("the destination controller stopped"),
        _ = deliveries => anyhow::bail!("the delivery controller stopped"),
        _ = schedules => anyhow::bail!("the schedule controller stopped"),
        _ = lease.hold() => {
            metrics.set_leader(false);
            anyhow::bail!("lost leadership; exiting so that a restart waits for the lease again")
        }
        res = server => anyhow::bail!("the metrics server stopped: {res:?}"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}

async fn destination_controller(
    ctx: Arc<Context>,
    tenancy: impl futures::Stream<Item = Result<OutboundTenancy, watcher::Error>> + Send + 'static,
) {
    use futures::StreamExt;
    let controller = Controller::new(
        scoped::<OutboundDestination>(&ctx),
        watcher::Config::default(),
    );
    let store = controller.store();
    let every = controller.store();
    // Secret metadata only: the controller never caches secret values; a changed
    // resourceVersion (key rotation) is enough to probe again.
    let secrets = scoped::<PartialObjectMeta<Secret>>(&ctx);
    controller
        .watches(secrets, watcher::Config::default(), move |secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|d| {
                    d.namespace() == ns
                        && d.spec
                            .credentials
                            .secret
                            .as_ref()
                            .is_some_and(|s| s.name == name)
                })
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches_stream(tenancy, move |_| {
            every
                .state()
                .into_iter()
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            destination::reconcile,
            destination::error_policy,
            ctx.clone(),
        )
        .for_each(|res| {
            if let Some((ns, name)) = gone(&res) {
                ctx.metrics.forget_destination(&ns, &name);
            }
            async {}
        })
        .await;
}

/// Schedules, and the runs they own (a run that ends triggers its schedule: receipts, history,
/// the incremental cut).
async fn schedule_controller(ctx: Arc<Context>) {
    use futures::StreamExt;
    Controller::new(scoped::<OutboundSchedule>(&ctx), watcher::Config::default())
        .owns(
            scoped::<OutboundDelivery>(&ctx),
            watcher::Config::default().labels(crate::validate::SCHEDULE_LABEL),
        )
        .shutdown_on_signal()
        .run(schedule::reconcile, schedule::error_policy, ctx.clone())
        .for_each(|res| {
            if let Some((ns, name)) = gone(&res) {
                ctx.metrics.forget_schedule(&ns, &name);
            }
            async {}
        })
        .await;
}

async fn delivery_controller(
    ctx: Arc<Context>,
    writers: StoreWriters,
    tenancy_changes: futures::channel::mpsc::UnboundedReceiver<()>,
) {
    use futures::StreamExt;
    let controller = Controller::new(scoped::<OutboundDelivery>(&ctx), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.args.delivery_concurrency));
    let by_destination = controller.store();
    let by_claim = controller.store();
    let by_secret = controller.store();
    let by_tenancy = controller.store();
    // Every related watch fills a store (reflect) before it triggers, so the reconcile reads
    // what triggered it from memory.
    let jobs = watcher(
        scoped::<Job>(&ctx),
        watcher::Config::default().labels(crate::api::DELIVERY_LABEL),
    )
    .default_backoff()
    .modify(trim_job)
    .reflect(writers.jobs)
    .touched_objects();
    let destinations = watcher(
        scoped::<OutboundDestination>(&ctx),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writers.destinations)
    .touched_objects();
    let claims = watcher(
        scoped::<PartialObjectMeta<PersistentVolumeClaim>>(&ctx),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writers.claims)
    .touched_objects();
    // Secret metadata only: the controller never caches secret values.
    let secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(&ctx),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writers.secrets)
    .touched_objects();
    // The pods' reports: each one triggers its delivery (owner reference), whose status folds
    // them (at most once a second).
    let shards = watcher(scoped::<OutboundShard>(&ctx), watcher::Config::default())
        .default_backoff()
        .modify(|shard| shard.metadata.managed_fields = None)
        .reflect(writers.shards)
        .touched_objects();
    controller
        .owns_stream(jobs)
        .owns_stream(shards)
        .watches_stream(destinations, move |dest| {
            let ns = dest.namespace();
            let name = dest.name_any();
            by_destination
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.destination_ref.name == name)
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches_stream(claims, move |claim| {
            let ns = claim.namespace();
            let name = claim.name_any();
            by_claim
                .state()
                .into_iter()
                .filter(|d| {
                    d.namespace() == ns
                        && d.spec
                            .source
                            .volume
                            .as_ref()
                            .is_some_and(|v| v.claim_name == name)
                })
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        // A Secret created or fixed: deliveries of that namespace that wait on one look again.
        .watches_stream(secrets, move |secret| {
            let ns = secret.namespace();
            by_secret
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && !started(d))
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .reconcile_on(tenancy_changes.flat_map(move |()| {
            futures::stream::iter(
                by_tenancy
                    .state()
                    .into_iter()
                    .filter(|d| d.spec.source.s3.is_some() && !started(d))
                    .map(|d| ObjectRef::from_obj(&*d))
                    .collect::<Vec<_>>(),
            )
        }))
        .shutdown_on_signal()
        .run(delivery::reconcile, delivery::error_policy, ctx.clone())
        .for_each(|res| {
            if let Some((ns, name)) = gone(&res) {
                ctx.metrics.forget_delivery(&ns, &name);
            }
            async {}
        })
        .await;
}

/// Whether a delivery's Job was started (what it read was decided then).
fn started(delivery: &OutboundDelivery) -> bool {
    delivery
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .is_some()
}

/// The namespace and name of an object a controller was triggered for after it was deleted
/// (kube-runtime reports it as not found): what its metric series are forgotten by.
fn gone<T, E1: std::error::Error + 'static, E2: std::error::Error + 'static>(
    res: &Result<T, controller::Error<E1, E2>>,
) -> Option<(String, String)> {
    match res {
        Err(controller::Error::ObjectNotFound(obj)) => {
            Some((obj.namespace.clone().unwrap_or_default(), obj.name.clone()))
        }
        _ => None,
    }
}

/// An Api over the watched namespace, or every namespace.
fn scoped<K>(ctx: &Context) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match &ctx.args.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Publishes an event on an object (its note cut to the API's size); a failure is logged only:
/// an event is a receipt, never a reason to fail a reconcile.
pub(crate) async fn publish_event(
    ctx: &Context,
    on: &k8s_openapi::api::core::v1::ObjectReference,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, on).await {
        tracing::warn!(error = %e, "failed to publish an event");
    }
}

/// Requeue after an error: the error decides.
fn requeue_for(ctx: &Context, key: String, transient: bool) -> Action {
    if transient {
        Action::requeue(ctx.backoff(key))
    } else {
        Action::await_change()
    }
}
