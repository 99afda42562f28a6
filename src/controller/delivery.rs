//! The delivery reconciler, a short driver: dereference (destination, Secret, PVC, Job, tenancy)
//! -> validate (pure) -> build (pure) -> create once -> fold status (pure) -> apply status.
//! The finalizer deletes the Job, waits for its pods, aborts the open multipart uploads its pods
//! journaled in their OutboundShards, then lets the shards go.

use super::destination::resolve_access;
use super::uploads::{self, Left};
use super::{Context, requeue_for};
use crate::api::{
    CONTROLLER_MANAGER, DELIVERY_FINALIZER, OutboundDelivery, OutboundDestination, Phase,
};
use crate::api::{
    DeliveryTarget, JOB_LABEL, OutboundDeliveryStatus, OutboundShard, SHARD_FINALIZER, ShardStatus,
    shard_name,
};
use crate::job;
use crate::metrics::DeliveryLabel;
use crate::status::{DeliveryObservation, delivery_patch, delivery_status};
use crate::tenancy;
use crate::validate::{self, Blocked, ValidatedDelivery, validate};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "delivery";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to fetch {0}: {1}")]
    Fetch(String, #[source] kube::Error),
    #[error("failed to apply {0}: {1}")]
    ApplyRbac(String, #[source] kube::Error),
    #[error("failed to create Job {0}: {1}")]
    CreateJob(String, #[source] kube::Error),
    #[error("failed to patch Job {0}: {1}")]
    PatchJob(String, #[source] kube::Error),
    #[error("failed to patch the status of OutboundDelivery {0}: {1}")]
    PatchStatus(String, #[source] kube::Error),
    #[error("failed to delete Job {0}: {1}")]
    DeleteJob(String, #[source] kube::Error),
    #[error("failed to update shard {0}: {1}")]
    PatchShard(String, #[source] kube::Error),
    #[error("waiting before removing the finalizer: {0}")]
    CleanupPending(String),
    #[error("failed to run the finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Fetch(..) => "Fetch",
            Error::ApplyRbac(..) => "ApplyRbac",
            Error::CreateJob(..) => "CreateJob",
            Error::PatchJob(..) => "PatchJob",
            Error::PatchStatus(..) => "PatchStatus",
            Error::DeleteJob(..) => "DeleteJob",
            Error::PatchShard(..) => "PatchShard",
            Error::CleanupPending(..) => "CleanupPending",
            Error::Finalizer(..) => "Finalizer",
        }
    }
}

pub async fn reconcile(
    delivery: Arc<OutboundDelivery>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconcile(CONTROLLER);
    let ns = delivery.namespace().unwrap_or_default();
    let api: Api<OutboundDelivery> = Api::namespaced(ctx.client.clone(), &ns);
    let key = format!("{CONTROLLER}/{ns}/{}", delivery.name_any());
    let result = finalizer(&api, DELIVERY_FINALIZER, delivery, |event| async {
        match event {
            Finalizer::Apply(d) => apply(d, ctx.clone()).await,
            Finalizer::Cleanup(d) => cleanup(d, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

pub fn error_policy(delivery: Arc<OutboundDelivery>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{CONTROLLER}/{}/{}",
        delivery.namespace().unwrap_or_default(),
        delivery.name_any()
    );
    if let Error::CleanupPending(why) = err {
        tracing::debug!(key, why, "cleanup in progress");
        return Action::requeue(Duration::from_secs(2));
    }
    tracing::warn!(key, error = %err, "delivery reconcile failed");
    ctx.metrics.error(CONTROLLER, err.kind());
    requeue_for(&ctx, key, true)
}

async fn get_opt<K>(api: &Api<K>, what: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| Error::Fetch(format!("{what} {name}"), e))
}

async fn apply(delivery: Arc<OutboundDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = delivery.namespace().unwrap_or_default();
    let name = delivery.name_any();
    let uid = delivery.uid().unwrap_or_default();

    // Terminal is terminal: whatever happens to its Job (deleted, expired) or its status
    // (a jobName written by someone else), an ended delivery never runs again. Its shards still
    // naming open uploads means the sweep at its end did not happen (the operator stopped in
    // between) or did not finish: once more, now.
    if delivery
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| matches!(p, Phase::Succeeded | Phase::Failed))
    {
        ctx.stores.ready().await;
        let job_name = validate::child_name(&name, &uid);
        if cached_shards(&ctx, &delivery, &job_name)
            .iter()
            .any(|s| !s.uploads.is_empty())
        {
            sweep_uploads(&ctx, &delivery).await;
        }
        // The receipt, if asked for and not sent yet: after the end, never before it.
        return Ok(super::receipts::send_receipt(&ctx, &delivery)
            .await
            .unwrap_or_else(Action::await_change));
    }

    // Dereference, from the stores the controller's watches fill.
    ctx.stores.ready().await;
    // Started: the status already named the Job (it may exist though the store has not seen it).
    let started = delivery
        .status
        .as_ref()
        .is_some_and(|s| s.start_time.is_some() || s.job_name.is_some());
    let job_name = validate::child_name(&name, &uid);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let created_key = (ns.clone(), job_name.clone());
    let mut job = match ctx.stores.jobs.get(&ObjectRef::new(&job_name).within(&ns)) {
        Some(cached) => {
            ctx.created_jobs.lock().unwrap().remove(&created_key);
            Some((*cached).clone())
        }
        // Recorded but not (yet) seen: created a moment ago (by us, or before a restart), or
        // deleted. What this process created it knows; else ask.
        None if started => {
            let created = ctx
                .created_jobs
                .lock()
                .unwrap()
                .get(&created_key)
                .filter(|(at, _)| at.elapsed() < CREATED_JOB_MEMORY)
                .map(|(_, j)| j.clone());
            match created {
                Some(j) => Some(j),
                None => get_opt(&jobs, "Job", &job_name).await?,
            }
        }
        // Never recorded: create it; a create that finds one already (409) reads that one.
        None => None,
    };
    // Only a Job this delivery controls is acted on: one of the same name owned by anything else
    // (another incarnation, a user) is reported, never observed or patched.
    if let Some(j) = &job
        && !controlled_by(j, &uid)
    {
        let message = format!(
            "Job {ns}/{job_name} exists but is not controlled by this delivery (uid {uid}); delete it or rename the delivery"
        );
        write_status(
            &ctx,
            &delivery,
            &DeliveryObservation::Blocked {
                reason: "JobNotOwned",
                message: &message,
            },
            &[],
            None,
            None,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let destination = ctx
        .stores
        .destinations
        .get(&ObjectRef::new(&delivery.spec.destination_ref.name).within(&ns));

    // A Job that exists already was decided earlier: it is observed, not rebuilt, so nothing
    // else needs reading. Else validate (pure) and create.
    let mut blocked = None;
    let mut manifest_key = None;
    let mut written = None;
    if job.is_some() {
        manifest_key = validate::manifest_key(&delivery, destination.as_deref());
    } else {
        let secret_keys = match destination
            .as_ref()
            .and_then(|d| d.spec.credentials.secret.as_ref())
        {
            Some(keys) => ctx
                .stores
                .secret_key_names(client, &ns, &keys.name)
                .await
                .map_err(|e| Error::Fetch(format!("Secret {ns}/{}", keys.name), e))?,
            None => None,
        };
        let source = &delivery.spec.source;
        let pvc = source.volume.as_ref().and_then(|volume| {
            ctx.stores
                .claims
                .get(&ObjectRef::new(&volume.claim_name).within(&ns))
                .map(|meta| PersistentVolumeClaim {
                    metadata: meta.metadata.clone(),
                    ..Default::default()
                })
        });
        let source_keys = match source.s3.as_ref().and_then(|s3| s3.secret.as_ref()) {
            Some(keys) => ctx
                .stores
                .secret_key_names(client, &ns, &keys.name)
                .await
                .map_err(|e| Error::Fetch(format!("Secret {ns}/{}", keys.name), e))?,
            None => None,
        };
        // The grants again, not only the destination's Ready: a grant removed a moment ago may
        // not have reached the destination's status yet.
        let tenancy = ctx.stores.tenancy().await;
        let tenancy = tenancy.as_ref().map(|t| &t.spec);
        let checked = match destination
            .as_deref()
            .map(|d| tenancy::check(tenancy, &ns, &d.spec))
        {
            Some(Err(message)) => Err(Blocked {
                reason: tenancy::NOT_GRANTED,
                message: format!(
                    "OutboundDestination {} is not granted: {message}",
                    delivery.spec.destination_ref.name
                ),
            }),
            _ => match source_allowed(&ctx, &ns, source, tenancy).await {
                Err(blocked) => Err(blocked),
                Ok(()) => validate(
                    &delivery,
                    destination.as_deref(),
                    secret_keys.as_deref(),
                    pvc.as_ref(),
                    source_keys.as_deref(),
                ),
            },
        };
        match checked {
            Err(b) => blocked = Some(b),
            Ok(v) => {
                manifest_key = v.manifest_key.clone();
                ensure_upload_access(&ctx, &v).await?;
                let desired = job::build_job(
                    &v,
                    &job::JobSettings {
                        image: &ctx.args.uploader_image,
                        ttl: ctx.args.job_ttl,
                        workload_identity_secret: ctx.args.workload_identity_secret.as_deref(),
                        fs_group: ctx.args.upload_fs_group,
                        resources: ctx.args.upload_resources.as_ref(),
                    },
                );
                if !started {
                    // The status names the Job before the Job exists: the chart's admission
                    // policy lets a pod write status only once it names the pod's Job, and a
                    // restart, whatever happens in between, finds the same name.
                    let observation = DeliveryObservation::Job { job: &desired };
                    written = write_status(
                        &ctx,
                        &delivery,
                        &observation,
                        &[],
                        manifest_key.as_deref(),
                        Some(v.target()),
                    )
                    .await?
                    .status;
                }
                let created = create_job(&ctx, &v, desired).await?;
                let mut memory = ctx.created_jobs.lock().unwrap();
                memory.retain(|_, (at, _)| at.elapsed() < CREATED_JOB_MEMORY);
                memory.insert(created_key, (std::time::Instant::now(), created.clone()));
                drop(memory);
                job = Some(created);
            }
        }
    }

    // Suspend is the one spec change a started delivery takes.
    if let Some(j) = &job {
        let job_suspended = j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        let terminal = delivery
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| matches!(p, Phase::Succeeded | Phase::Failed));
        if job_suspended != delivery.spec.suspend && !terminal {
            let patch = serde_json::json!({"spec": {"suspend": delivery.spec.suspend}});
            let patched = jobs
                .patch(&job_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::PatchJob(format!("{ns}/{job_name}"), e))?;
            job = Some(patched);
        }
    }

    let observation = match (&blocked, &job) {
        (Some(b), _) => DeliveryObservation::Blocked {
            reason: b.reason,
            message: &b.message,
        },
        (None, Some(j)) => DeliveryObservation::Job { job: j },
        (None, None) => unreachable!("either blocked or a Job exists"),
    };
    let delivery = match written {
        // Fold onto what was just written, not onto the status this reconcile started from.
        Some(status) => Arc::new(OutboundDelivery {
            status: Some(status),
            ..(*delivery).clone()
        }),
        None => delivery,
    };
    let previous = delivery.status.as_ref().and_then(|s| s.phase);
    let shards = cached_shards(&ctx, &delivery, &job_name);
    let Written {
        phase, deferred, ..
    } = write_status(
        &ctx,
        &delivery,
        &observation,
        &shards,
        manifest_key.as_deref(),
        None,
    )
    .await?;
    if phase != previous && matches!(phase, Some(Phase::Succeeded | Phase::Failed)) {
        // The delivery just ended: its pods are done, so whatever upload is still open (a
        // failed delivery's, or one a killed pod created and never recorded) is aborted now.
        sweep_uploads(&ctx, &delivery).await;
    }

    // Blocked: wait for a change of the delivery or of what it references (watched). Running:
    // the Job and the pods' reports trigger us; a slow resync guards against lost events.
    Ok(match (deferred, &blocked, phase) {
        // A write held back (at most one a second): this reconcile comes again to make it.
        (Some(after), _, _) => Action::requeue(after),
        (None, Some(_), _) => Action::await_change(),
        (None, None, Some(Phase::Succeeded | Phase::Failed)) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Folds an observation into the delivery's status (pure) and writes it only when something but
/// time changed; a new phase is logged and published as an event. Returns the phase and the
/// status written, if any.
async fn write_status(
    ctx: &Context,
    delivery: &OutboundDelivery,
    observation: &DeliveryObservation<'_>,
    shards: &[ShardStatus],
    manifest_key: Option<&str>,
    target: Option<DeliveryTarget>,
) -> Result<Written, Error> {
    let ns = delivery.namespace().unwrap_or_default();
    let name = delivery.name_any();
    let now = Time(jiff::Timestamp::now());
    let current = delivery.status.as_ref();
    let mut desired = delivery_status(
        current,
        delivery.meta().generation,
        observation,
        shards,
        manifest_key,
        &now,
    );
    // Recorded once, when the Job is decided: later aborts go where the uploads went.
    desired.target = desired.target.or(target);
    let previous_phase = current.and_then(|s| s.phase);
    let phase = desired.phase;
    let bytes = |s: Option<&OutboundDeliveryStatus>| {
        s.and_then(|s| s.progress.as_ref())
            .map_or(0, |p| p.bytes_done)
    };
    ctx.metrics.delivery_progress(
        &DeliveryLabel {
            namespace: ns.clone(),
            delivery: name.clone(),
            destination: delivery.spec.destination_ref.name.clone(),
        },
        phase,
        bytes(current),
        bytes(Some(&desired)),
        now.0.as_second(),
    );
    let Some(status) = delivery_patch(current, desired.clone()) else {
        return Ok(Written {
            phase,
            status: None,
            deferred: None,
        });
    };
    // Progress alone (the same phase, reason and generation) is written at most once a second,
    // however many shards report: the rest waits for the next fold.
    let key = (ns.clone(), name.clone());
    let progress_only = previous_phase == phase
        && current.is_some_and(|c| {
            c.observed_generation == desired.observed_generation
                && c.conditions.first().map(|c| &c.reason)
                    == desired.conditions.first().map(|c| &c.reason)
        });
    if progress_only
        && let Some(at) = ctx.progress_writes.lock().unwrap().get(&key)
        && at.elapsed() < PROGRESS_WRITE_INTERVAL
    {
        return Ok(Written {
            phase,
            status: None,
            deferred: Some(PROGRESS_WRITE_INTERVAL - at.elapsed()),
        });
    }
    let patch = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1",
        "kind": "OutboundDelivery",
        "status": status,
    });
    Api::<OutboundDelivery>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::PatchStatus(format!("{ns}/{name}"), e))?;
    {
        let mut writes = ctx.progress_writes.lock().unwrap();
        if matches!(phase, Some(Phase::Succeeded | Phase::Failed)) {
            writes.remove(&key);
        } else {
            writes.insert(key, std::time::Instant::now());
        }
    }
    if previous_phase != phase {
        let ready = desired.conditions.first();
        tracing::info!(namespace = %ns, name = %name, phase = ?phase, reason = ?ready.map(|c| &c.reason), "delivery phase");
        let destination = &delivery.spec.destination_ref.name;
        match phase {
            Some(Phase::Succeeded) => {
                let (bytes, objects) = desired
                    .progress
                    .as_ref()
                    .map(|p| (p.bytes_done, p.objects_done))
                    .unwrap_or_default();
                ctx.metrics.delivered(bytes);
                ctx.metrics
                    .delivered_to(&ns, destination, bytes, objects, now.0.as_second());
            }
            Some(Phase::Failed) => {
                let reason = desired
                    .conditions
                    .first()
                    .map(|c| c.reason.as_str())
                    .unwrap_or("Unknown");
                ctx.metrics.failed_to(&ns, destination, reason);
            }
            _ => {}
        }
        if let Some(c) = ready {
            let blocked = matches!(observation, DeliveryObservation::Blocked { .. });
            let type_ = if matches!(phase, Some(Phase::Failed)) || blocked {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let action = phase.map(|p| p.as_str()).unwrap_or("Reconcile");
            publish(ctx, delivery, type_, &c.reason, &c.message, action).await;
        }
    }
    Ok(Written {
        phase,
        status: Some(desired),
        deferred: None,
    })
}

/// What `write_status` did.
struct Written {
    phase: Option<Phase>,
    /// The status written, if it was.
    status: Option<OutboundDeliveryStatus>,
    /// A progress write held back, to be tried again after this long.
    deferred: Option<Duration>,
}

/// At most one progress-only status write per delivery in this interval.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// The shard reports of a delivery's Job, from the watch's store (indexes `0..parallelism`;
/// only objects owned by this delivery count).
fn cached_shards(ctx: &Context, delivery: &OutboundDelivery, job_name: &str) -> Vec<ShardStatus> {
    let ns = delivery.namespace().unwrap_or_default();
    let uid = delivery.uid().unwrap_or_default();
    (0..delivery.spec.parallelism.max(1) as usize)
        .filter_map(|i| {
            ctx.stores
                .shards
                .get(&ObjectRef::new(&shard_name(job_name, i)).within(&ns))
        })
        .filter(|s| owned_by(&s.metadata, &uid))
        .filter_map(|s| s.status.clone())
        .collect()
}

/// The shard objects of a delivery's Job, read from the API server (fresher than the store:
/// the pods may have recorded an upload since the event that triggered this).
async fn fresh_shards(
    ctx: &Context,
    delivery: &OutboundDelivery,
    job_name: &str,
) -> Result<Vec<OutboundShard>, Error> {
    let ns = delivery.namespace().unwrap_or_default();
    let uid = delivery.uid().unwrap_or_default();
    let list = Api::<OutboundShard>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job_name}")))
        .await
        .map_err(|e| Error::Fetch(format!("shards of Job {ns}/{job_name}"), e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|s| owned_by(&s.metadata, &uid))
        .collect())
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

fn reports(shards: &[OutboundShard]) -> Vec<ShardStatus> {
    shards.iter().filter_map(|s| s.status.clone()).collect()
}

/// Lets the shard objects go (their uploads are aborted, or given up on): the garbage
/// collector removes them with the delivery.
async fn release_shards(ctx: &Context, shards: &[OutboundShard]) -> Result<(), Error> {
    for shard in shards {
        let finalizers: Vec<&String> = shard
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != SHARD_FINALIZER)
            .collect();
        if finalizers.len() == shard.finalizers().len() {
            continue;
        }
        let ns = shard.namespace().unwrap_or_default();
        let name = shard.name_any();
        // The resourceVersion makes this a test-and-set: a finalizer added meanwhile stays.
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": shard.resource_version(),
        }});
        match Api::<OutboundShard>::namespaced(ctx.client.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(a)) if a.code == 404 => {}
            Err(e) => return Err(Error::PatchShard(format!("{ns}/{name}"), e)),
        }
    }
    Ok(())
}

/// How long a Job this process created stands in for the watch's copy: the watch delivers it in
/// milliseconds; a Job deleted within this time is found missing after it.
const CREATED_JOB_MEMORY: Duration = Duration::from_secs(10);

/// How long the operator trusts that a namespace's upload ServiceAccount, Role and RoleBinding,
/// applied by it, still exist; after that the next new Job there applies them again.
const UPLOAD_ACCESS_RECHECK: Duration = Duration::from_secs(600);

/// Makes sure the upload pods' ServiceAccount, Role and RoleBinding exist in the delivery's
/// namespace (server-side apply), once per namespace and account per `UPLOAD_ACCESS_RECHECK`, not
/// once per delivery: 1,000 deliveries in a namespace cost three writes, not 3,000.
async fn ensure_upload_access(ctx: &Context, v: &ValidatedDelivery) -> Result<(), Error> {
    let key = (v.namespace.clone(), v.service_account.clone());
    // Held across the writes, so that many new deliveries in one namespace apply them once.
    let mut applied = ctx.upload_access.lock().await;
    if applied
        .get(&key)
        .is_some_and(|at| at.elapsed() < UPLOAD_ACCESS_RECHECK)
    {
        return Ok(());
    }
    let client = &ctx.client;
    let ns = &v.namespace;
    let pp = PatchParams::apply(CONTROLLER_MANAGER).force();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa_error = |e| Error::ApplyRbac(format!("ServiceAccount {ns}/{}", v.service_account), e);
    if v.create_service_account {
        sas.patch(
            &v.service_account,
            &pp,
            &Patch::Apply(job::build_service_account(ns)),
        )
        .await
        .map_err(sa_error)?;
    } else {
        // A named workload-identity account that does not exist yet: created bare, so that the
        // pods can start (its IRSA annotation is the platform team's business); one that exists
        // is left as it is (409). A create, not a read first: the operator needs no `get`.
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(v.service_account.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        sas.create(&PostParams::default(), &sa)
            .await
            .map(|_| ())
            .or_else(|e| match e {
                kube::Error::Api(ref a) if a.code == 409 => Ok(()),
                e => Err(e),
            })
            .map_err(sa_error)?;
    }
    // The Role before its RoleBinding: the API server resolves the Role to check that we may
    // grant it (no `bind` verb), and refuses a binding to a Role that does not exist yet.
    Api::<Role>::namespaced(client.clone(), ns)
        .patch(job::UPLOAD_ROLE, &pp, &Patch::Apply(job::build_role(ns)))
        .await
        .map_err(|e| Error::ApplyRbac(format!("Role {ns}/{}", job::UPLOAD_ROLE), e))?;
    let binding = job::role_binding_name(&v.service_account);
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch(
            &binding,
            &pp,
            &Patch::Apply(job::build_role_binding(ns, &v.service_account)),
        )
        .await
        .map_err(|e| Error::ApplyRbac(format!("RoleBinding {ns}/{binding}"), e))?;
    applied.insert(key, std::time::Instant::now());
    Ok(())
}

/// Creates the Job, once: an existing Job is returned as it is, never updated.
async fn create_job(ctx: &Context, v: &ValidatedDelivery, desired: Job) -> Result<Job, Error> {
    let ns = &v.namespace;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match jobs
        .create(
            &PostParams {
                field_manager: Some(CONTROLLER_MANAGER.into()),
                ..Default::default()
            },
            &desired,
        )
        .await
    {
        Ok(created) => {
            tracing::info!(namespace = %ns, delivery = %v.name, job = %v.job_name, "created upload job");
            Ok(created)
        }
        Err(kube::Error::Api(a)) if a.code == 409 => jobs
            .get(&v.job_name)
            .await
            .map_err(|e| Error::Fetch(format!("Job {ns}/{}", v.job_name), e)),
        Err(e) => Err(Error::CreateJob(format!("{ns}/{}", v.job_name), e)),
    }
}

/// Whether `job` is controlled by the delivery with `uid` (its controller owner reference).
/// Whether a bucket source may be read as the spec says: its endpoint one the admin allows (the
/// upload pods send signed requests there, as to a destination's), and, read with the operator's
/// workload identity, its bucket granted to the namespace by the tenancy.
async fn source_allowed(
    ctx: &Context,
    ns: &str,
    source: &crate::api::DeliverySource,
    tenancy: Option<&crate::api::OutboundTenancySpec>,
) -> Result<(), Blocked> {
    let Some(s3) = &source.s3 else {
        return Ok(());
    };
    if let Some(bundle) = &s3.ca_bundle {
        crate::credentials::check_ca_bundle("spec.source.s3.caBundle", bundle).map_err(
            |message| Blocked {
                reason: crate::probe::reason::INVALID_CA_BUNDLE,
                message,
            },
        )?;
    }
    if let Some(url) = &s3.endpoint {
        let policy = ctx.args.endpoint_policy();
        super::endpoint::allowed("spec.source.s3.endpoint", url, policy)
            .await
            .map_err(|message| Blocked {
                reason: crate::probe::reason::ENDPOINT_NOT_ALLOWED,
                message,
            })?;
    }
    tenancy::check_source(tenancy, ns, s3).map_err(|message| Blocked {
        reason: tenancy::NOT_GRANTED,
        message,
    })
}

fn controlled_by(job: &Job, uid: &str) -> bool {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Aborts the open uploads of a delivery that has started, against the bucket recorded when it
/// started, with the destination's credentials as they are now. Returns what is left.
async fn abort_uploads(
    ctx: &Context,
    delivery: &OutboundDelivery,
    shards: &[ShardStatus],
) -> Result<Left, Error> {
    let Some(status) = delivery
        .status
        .as_ref()
        .filter(|s| s.target.is_some() || s.start_time.is_some() || s.job_name.is_some())
    else {
        // Never started (no Job was decided): nothing was ever sent.
        return Ok(Left::default());
    };
    let ns = delivery.namespace().unwrap_or_default();
    let unreachable = |why: String| Left {
        uploads: uploads::recorded(shards),
        why: Some(why),
    };
    let destinations = Api::<OutboundDestination>::namespaced(ctx.client.clone(), &ns);
    let name = &delivery.spec.destination_ref.name;
    let Some(dest) = get_opt(&destinations, "OutboundDestination", name).await? else {
        return Ok(unreachable(format!(
            "destination {ns}/{name} no longer exists"
        )));
    };
    // Started by an operator that did not record its target yet: the destination as it is now.
    let target = status
        .target
        .clone()
        .unwrap_or_else(|| validate::target_now(delivery, &dest));
    if let Err(report) = super::destination::may_abort_with(ctx, &dest).await {
        let why = report
            .failure
            .map(|(reason, message)| format!("{reason}: {message}"))
            .unwrap_or_default();
        return Ok(unreachable(format!("destination {ns}/{name}: {why}")));
    }
    let access = match resolve_access(&ctx.client, &dest).await {
        Ok(Ok(access)) => access,
        Ok(Err(report)) => {
            let why = report
                .failure
                .map(|(reason, message)| format!("{reason}: {message}"))
                .unwrap_or_else(|| "its credentials cannot be used".into());
            return Ok(unreachable(format!("destination {ns}/{name}: {why}")));
        }
        Err(super::destination::Error::FetchSecret(what, e))
        | Err(super::destination::Error::PatchStatus(what, e)) => {
            return Err(Error::Fetch(what, e));
        }
    };
    Ok(uploads::abort_all(delivery, shards, &target, &access).await)
}

/// After a delivery ended: abort whatever is still open, once; what cannot be aborted is
/// reported (the customer's lifecycle rule is the backstop), never retried in a loop.
async fn sweep_uploads(ctx: &Context, delivery: &OutboundDelivery) {
    let job_name = validate::child_name(&delivery.name_any(), &delivery.uid().unwrap_or_default());
    // The freshest reports: the pods' last ones may postdate what this reconcile folded.
    let shards = match fresh_shards(ctx, delivery, &job_name).await {
        Ok(shards) => shards,
        Err(e) => return warn_event(ctx, delivery, "AbortFailed", e.to_string()).await,
    };
    match abort_uploads(ctx, delivery, &reports(&shards)).await {
        // Done: the shards name no open upload any more, so no later pass aborts them again.
        Ok(left) if left.is_empty() => {
            if let Err(e) = forget_uploads(ctx, &shards).await {
                tracing::warn!(error = %e, "failed to clear the aborted uploads from the shards");
            }
        }
        Ok(left) => warn_event(ctx, delivery, "AbortFailed", left.describe()).await,
        Err(e) => warn_event(ctx, delivery, "AbortFailed", e.to_string()).await,
    }
}

/// Clears the open uploads from an ended delivery's shard reports once they are aborted (its
/// pods are gone: the operator takes the field over).
async fn forget_uploads(ctx: &Context, shards: &[OutboundShard]) -> Result<(), Error> {
    for shard in shards
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|r| !r.uploads.is_empty()))
    {
        let ns = shard.namespace().unwrap_or_default();
        let name = shard.name_any();
        let patch = serde_json::json!({
            "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundShard",
            "status": {"uploads": []},
        });
        Api::<OutboundShard>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(CONTROLLER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::PatchShard(format!("{ns}/{name}"), e))?;
    }
    Ok(())
}

async fn warn_event(ctx: &Context, delivery: &OutboundDelivery, reason: &str, message: String) {
    tracing::warn!(namespace = ?delivery.namespace(), name = %delivery.name_any(), reason, "{message}");
    publish(
        ctx,
        delivery,
        EventType::Warning,
        reason,
        &message,
        "AbortUploads",
    )
    .await;
}

/// Publishes an event on the delivery (its note cut to the API's size); a failure is logged only.
pub(super) async fn publish(
    ctx: &Context,
    delivery: &OutboundDelivery,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    super::publish_event(ctx, &delivery.object_ref(&()), type_, reason, note, action).await;
}

/// On delete: stop the Job (foreground), wait until its pods are gone (no pod may create a new
/// multipart upload behind our back), then abort every open upload. Bounded: past
/// `cleanup_timeout` after the deletion, what is left is named in a Warning event and the
/// finalizer lets go, so a delivery whose credentials are gone is still deleted.
async fn cleanup(delivery: Arc<OutboundDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = delivery.namespace().unwrap_or_default();
    let name = delivery.name_any();
    let uid = delivery.uid().unwrap_or_default();
    let deleted_for: Duration = delivery
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| jiff::Timestamp::now().duration_since(t.0).try_into().ok())
        .unwrap_or_default();
    let out_of_time = deleted_for >= ctx.args.cleanup_timeout;
    let job_name = validate::child_name(&name, &uid);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    if let Some(job) = get_opt(&jobs, "Job", &job_name).await?
        && controlled_by(&job, &uid)
        && !out_of_time
    {
        if job.metadata.deletion_timestamp.is_none() {
            jobs.delete(&job_name, &DeleteParams::foreground())
                .await
                .map_err(|e| Error::DeleteJob(format!("{ns}/{job_name}"), e))?;
        }
        return Err(Error::CleanupPending(format!(
            "Job {ns}/{job_name} is being deleted"
        )));
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await
        .map_err(|e| Error::Fetch(format!("pods of Job {ns}/{job_name}"), e))?;
    if !pods.items.is_empty() && !out_of_time {
        return Err(Error::CleanupPending(format!(
            "{} pods of Job {ns}/{job_name} remain",
            pods.items.len()
        )));
    }

    // The freshest reports: the pods may have recorded uploads after this event was queued.
    let shards = fresh_shards(&ctx, &delivery, &job_name).await?;
    let left = abort_uploads(&ctx, &delivery, &reports(&shards)).await?;
    if left.is_empty() {
        release_shards(&ctx, &shards).await?;
        return Ok(Action::await_change());
    }
    if out_of_time {
        let message = format!(
            "gave up aborting after {}s: {}; the bucket's AbortIncompleteMultipartUpload lifecycle rule will remove them",
            deleted_for.as_secs(),
            left.describe()
        );
        warn_event(&ctx, &delivery, "AbortAbandoned", message).await;
        release_shards(&ctx, &shards).await?;
        return Ok(Action::await_change());
    }
    Err(Error::CleanupPending(left.describe()))
}
