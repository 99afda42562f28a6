//! The schedule reconciler: on each slot of a schedule's cron, one OutboundDelivery, owned by the
//! schedule and named from the slot (so neither a restart nor a second replica ever creates a run
//! twice), with CronJob's concurrency policy, starting deadline, history limits and suspend.

use super::{Context, requeue_for};
use crate::api::{
    CONTROLLER_MANAGER, ConcurrencyPolicy, OutboundDelivery, OutboundSchedule,
    OutboundScheduleStatus, Phase, ScheduleMode, condition,
};
use crate::cron::{Cron, time_zone};
use crate::status::condition as make_condition;
use crate::validate::{MODE_ANNOTATION, RUN_ANNOTATION, SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "schedule";

/// Missed slots are looked for at most this far back (a schedule down for longer counts only
/// the slots of the last week in `missedRuns`).
const LOOK_BACK: SignedDuration = SignedDuration::from_hours(24 * 7);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read schedule {0} or its runs: {1}")]
    ListRuns(String, #[source] kube::Error),
    #[error("failed to create run {0}: {1}")]
    CreateRun(String, #[source] kube::Error),
    #[error("failed to delete run {0}: {1}")]
    DeleteRun(String, #[source] kube::Error),
    #[error("failed to update status of schedule {0}: {1}")]
    PatchStatus(String, #[source] kube::Error),
}

impl Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::ListRuns(..) => "ListRuns",
            Error::CreateRun(..) => "CreateRun",
            Error::DeleteRun(..) => "DeleteRun",
            Error::PatchStatus(..) => "PatchStatus",
        }
    }
}

pub fn error_policy(sched: Arc<OutboundSchedule>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{CONTROLLER}/{}/{}",
        sched.namespace().unwrap_or_default(),
        sched.name_any()
    );
    tracing::warn!(key, error = %err, "schedule reconcile failed");
    ctx.metrics.error(CONTROLLER, err.kind());
    requeue_for(&ctx, key, true)
}

/// The name of the run for `slot`: the schedule's name and the slot's Unix time.
pub fn run_name(schedule: &str, slot: Timestamp) -> String {
    let suffix = format!("-{}", slot.as_second());
    let stem: String = schedule.chars().take(253 - suffix.len()).collect();
    format!("{stem}{suffix}")
}

/// A run's slot (its annotation), else its creation time.
fn slot_of(run: &OutboundDelivery) -> Timestamp {
    run.annotations()
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| t.parse().ok())
        .or_else(|| run.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Where a run cut its files: what the next incremental run takes files changed since.
fn cut_of(run: &OutboundDelivery) -> Timestamp {
    run.spec
        .source
        .window()
        .1
        .map(|t| t.0)
        .unwrap_or_else(|| slot_of(run))
}

fn phase(run: &OutboundDelivery) -> Option<Phase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn ended(run: &OutboundDelivery) -> bool {
    matches!(phase(run), Some(Phase::Succeeded | Phase::Failed))
}

pub async fn reconcile(sched: Arc<OutboundSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile(CONTROLLER);
    let ns = sched.namespace().unwrap_or_default();
    let name = sched.name_any();
    // Read afresh: a run's creation triggers the next reconcile before the watch has delivered
    // the status written with it, and a status folded from a stale copy would count a run twice
    // or lose one.
    let sched = match Api::<OutboundSchedule>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::ListRuns(format!("{ns}/{name}"), e))?
    {
        Some(fresh) => Arc::new(fresh),
        None => {
            ctx.metrics.forget_schedule(&ns, &name);
            return Ok(Action::await_change());
        }
    };
    let uid = sched.uid().unwrap_or_default();
    let key = format!("{CONTROLLER}/{ns}/{name}");
    let current = sched.status.clone().unwrap_or_default();
    let mut status = current.clone();
    status.observed_generation = sched.meta().generation;
    let now = Timestamp::now();
    let time = Time(now);
    let previous_conditions = current.conditions.clone();
    // Ready, and kstatus' Stalled (abnormal-true) when the schedule cannot run.
    let ready = |ok: bool, reason: &str, message: String| {
        let stalled = make_condition(
            &previous_conditions,
            condition::STALLED,
            !ok,
            reason,
            if ok { String::new() } else { message.clone() },
            sched.meta().generation,
            &time,
        );
        vec![
            make_condition(
                &previous_conditions,
                condition::READY,
                ok,
                reason,
                message,
                sched.meta().generation,
                &time,
            ),
            stalled,
        ]
    };

    // The API server checks both; an older CRD might not have.
    let parsed = Cron::parse(&sched.spec.schedule)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            time_zone(&sched.spec.time_zone)
                .map(|tz| (c, tz))
                .map_err(|e| e.to_string())
        });
    let (cron, tz) = match parsed {
        Ok(parsed) => parsed,
        Err(why) => {
            status.conditions = ready(false, "InvalidSchedule", why);
            status.next_schedule_time = None;
            ctx.metrics.schedule_due(&ns, &name, "", None);
            write_status(&ctx, &sched, &current, status).await?;
            return Ok(Action::await_change());
        }
    };

    let deliveries: Api<OutboundDelivery> = Api::namespaced(ctx.client.clone(), &ns);
    let mut runs: Vec<OutboundDelivery> = deliveries
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(|e| Error::ListRuns(format!("{ns}/{name}"), e))?
        .items
        .into_iter()
        .filter(|d| d.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    runs.sort_by_key(slot_of);
    // The run numbers already used (a run created by a reconcile whose status write was lost).
    let highest = runs
        .iter()
        .filter_map(|r| r.annotations().get(RUN_ANNOTATION)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    status.runs = status.runs.max(highest);

    // Runs that ended since the last look: a receipt each, and the incremental cut.
    for run in runs.iter().filter(|r| ended(r)) {
        let done = run
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .map(|t| t.0)
            .unwrap_or(now);
        let run_name = run.name_any();
        match phase(run) {
            Some(Phase::Succeeded) => {
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done)
                {
                    status.last_successful_time = Some(Time(done));
                    status.last_successful_cut = Some(Time(cut_of(run)));
                    let objects = run
                        .status
                        .as_ref()
                        .and_then(|s| s.progress.as_ref())
                        .map(|p| format!("{} objects, {} bytes", p.objects_done, p.bytes_done))
                        .unwrap_or_default();
                    publish(
                        &ctx,
                        &sched,
                        EventType::Normal,
                        "RunSucceeded",
                        &format!("run {run_name} delivered {objects}"),
                    )
                    .await;
                }
            }
            _ => {
                if status.last_failure_time.as_ref().is_none_or(|t| t.0 < done) {
                    status.last_failure_time = Some(Time(done));
                    ctx.metrics.schedule_failed(&ns, &name);
                    let why = run
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.first())
                        .map(|c| format!("{}: {}", c.reason, c.message))
                        .unwrap_or_default();
                    publish(
                        &ctx,
                        &sched,
                        EventType::Warning,
                        "RunFailed",
                        &format!("run {run_name} failed: {why}"),
                    )
                    .await;
                }
            }
        }
    }

    // History: the newest runs of each outcome are kept; older ones go (their objects stay).
    for (outcome, limit) in [
        (
            Phase::Succeeded,
            sched.spec.successful_deliveries_history_limit,
        ),
        (Phase::Failed, sched.spec.failed_deliveries_history_limit),
    ] {
        let of: Vec<&OutboundDelivery> = runs
            .iter()
            .filter(|r| phase(r) == Some(outcome) && r.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = of.len().saturating_sub(limit.max(0) as usize);
        for run in &of[..excess] {
            delete_run(&deliveries, &ns, &run.name_any()).await?;
        }
    }
    let active: Vec<&OutboundDelivery> = runs
        .iter()
        .filter(|r| !ended(r) && r.metadata.deletion_timestamp.is_none())
        .collect();
    status.active = active.iter().map(|r| r.name_any()).collect();

    // The slot due now, if any: the latest one since the last run, once; older ones are missed.
    let since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| sched.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now)
        .max(now.checked_sub(LOOK_BACK).unwrap_or(now));
    if !sched.spec.suspend {
        let (slots, older) = cron.between(since, now, &tz, 1);
        if let Some(&slot) = slots.last() {
            status.last_schedule_time = Some(Time(slot));
            if older > 0 {
                status.missed_runs += older;
                publish(
                    &ctx,
                    &sched,
                    EventType::Warning,
                    "RunsMissed",
                    &format!("{older} runs before {slot} were missed (the operator was down or the schedule suspended); only the latest runs"),
                )
                .await;
            }
            let late = now.duration_since(slot);
            let deadline = sched
                .spec
                .starting_deadline_seconds
                .map(SignedDuration::from_secs);
            if deadline.is_some_and(|d| late > d) {
                status.missed_runs += 1;
                publish(
                    &ctx,
                    &sched,
                    EventType::Warning,
                    "RunMissed",
                    &format!(
                        "the run of {slot} was not started within startingDeadlineSeconds ({}s late)",
                        late.as_secs()
                    ),
                )
                .await;
            } else if !active.is_empty()
                && sched.spec.concurrency_policy == ConcurrencyPolicy::Forbid
            {
                status.missed_runs += 1;
                publish(
                    &ctx,
                    &sched,
                    EventType::Warning,
                    "RunSkipped",
                    &format!(
                        "the run of {slot} was skipped: {} is still running (concurrencyPolicy Forbid)",
                        status.active.join(", ")
                    ),
                )
                .await;
            } else {
                if sched.spec.concurrency_policy == ConcurrencyPolicy::Replace {
                    for run in &active {
                        delete_run(&deliveries, &ns, &run.name_any()).await?;
                        publish(
                            &ctx,
                            &sched,
                            EventType::Normal,
                            "RunReplaced",
                            &format!(
                                "run {} deleted (its uploads aborted) for the run of {slot}",
                                run.name_any()
                            ),
                        )
                        .await;
                    }
                    status.active.clear();
                }
                let run = new_run(
                    &sched,
                    slot,
                    status.runs + 1,
                    status.last_successful_cut.as_ref(),
                );
                let run_name = run.name_any();
                match deliveries
                    .create(
                        &PostParams {
                            field_manager: Some(CONTROLLER_MANAGER.into()),
                            ..Default::default()
                        },
                        &run,
                    )
                    .await
                {
                    Ok(_) => {
                        status.runs += 1;
                        tracing::info!(namespace = %ns, schedule = %name, run = %run_name, "created run");
                        publish(
                            &ctx,
                            &sched,
                            EventType::Normal,
                            "RunStarted",
                            &format!("run {run_name} for {slot}"),
                        )
                        .await;
                    }
                    // Created already (by this operator before a restart, or another replica).
                    Err(kube::Error::Api(a)) if a.code == 409 => {}
                    Err(e) => return Err(Error::CreateRun(format!("{ns}/{run_name}"), e)),
                }
                status.active.push(run_name);
            }
        }
    }
    let next = cron.next_after(now.max(since), &tz);
    status.next_schedule_time = next.map(Time);
    status.conditions = if sched.spec.suspend {
        ready(
            true,
            "Suspended",
            "spec.suspend is true: no new runs".into(),
        )
    } else {
        ready(
            true,
            "Scheduled",
            match next {
                Some(t) => format!("next run at {t}"),
                None => "the schedule never fires again".into(),
            },
        )
    };
    // The run that should bring the next success is the first slot after the last one (or
    // after the schedule's creation): the alert on overdue deliveries compares with it.
    let due = (!sched.spec.suspend)
        .then(|| {
            let after = status
                .last_successful_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| sched.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
            cron.next_after(after, &tz)
        })
        .flatten();
    ctx.metrics.schedule_due(
        &ns,
        &name,
        &sched.spec.template.destination_ref.name,
        due.map(|t| t.as_second()),
    );
    let (last_success, missed) = (
        status
            .last_successful_time
            .as_ref()
            .map(|t| t.0.as_second()),
        status.missed_runs.saturating_sub(current.missed_runs),
    );
    write_status(&ctx, &sched, &current, status).await?;
    // After the write: a write that failed is folded again from the old status, and its misses
    // would count twice.
    ctx.metrics.schedule(&ns, &name, last_success, missed);
    ctx.succeeded(&key);
    Ok(match next {
        // A little after the slot, so that it is due when the reconcile runs.
        Some(t) if !sched.spec.suspend => {
            let wait = Timestamp::now().duration_until(t);
            Action::requeue(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(50),
            )
        }
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// The run of `slot`: the template's spec, incremental runs cut to the files changed since the
/// last successful run's cut and settled before this one's.
pub fn new_run(
    sched: &OutboundSchedule,
    slot: Timestamp,
    run: u64,
    last_cut: Option<&Time>,
) -> OutboundDelivery {
    let mut spec = sched.spec.template.clone();
    if sched.spec.mode == ScheduleMode::Incremental {
        spec.source.set_window(
            last_cut.cloned(),
            slot.checked_sub(SignedDuration::from_secs(sched.spec.settle_seconds.max(0)))
                .ok()
                .map(Time),
        );
    }
    let mut delivery = OutboundDelivery::new(&run_name(&sched.name_any(), slot), spec);
    delivery.metadata.namespace = sched.namespace();
    delivery.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), sched.name_any())].into());
    delivery.metadata.annotations = Some(
        [
            (SCHEDULED_TIME_ANNOTATION.to_string(), slot.to_string()),
            (RUN_ANNOTATION.to_string(), run.to_string()),
            (
                MODE_ANNOTATION.to_string(),
                sched.spec.mode.placeholder().to_string(),
            ),
        ]
        .into(),
    );
    delivery.metadata.owner_references = Some(vec![OwnerReference {
        api_version: OutboundSchedule::api_version(&()).into(),
        kind: OutboundSchedule::kind(&()).into(),
        name: sched.name_any(),
        uid: sched.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    delivery
}

async fn delete_run(api: &Api<OutboundDelivery>, ns: &str, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(a)) if a.code == 404 => Ok(()),
        Err(e) => Err(Error::DeleteRun(format!("{ns}/{name}"), e)),
    }
}

async fn write_status(
    ctx: &Context,
    sched: &OutboundSchedule,
    current: &OutboundScheduleStatus,
    desired: OutboundScheduleStatus,
) -> Result<(), Error> {
    let same_conditions = crate::status::same_conditions(&current.conditions, &desired.conditions);
    let unchanged = same_conditions
        && OutboundScheduleStatus {
            conditions: vec![],
            ..current.clone()
        } == OutboundScheduleStatus {
            conditions: vec![],
            ..desired.clone()
        };
    if unchanged {
        return Ok(());
    }
    let ns = sched.namespace().unwrap_or_default();
    let name = sched.name_any();
    let patch = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1",
        "kind": "OutboundSchedule",
        "status": desired,
    });
    Api::<OutboundSchedule>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::PatchStatus(format!("{ns}/{name}"), e))?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    sched: &OutboundSchedule,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    super::publish_event(ctx, &sched.object_ref(&()), type_, reason, note, "Schedule").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(mode: ScheduleMode) -> OutboundSchedule {
        let mut s: OutboundSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundSchedule",
            "metadata": {"name": "acme-daily", "namespace": "team", "uid": "u-1"},
            "spec": {
                "schedule": "0 6 * * *",
                "template": {
                    "destinationRef": {"name": "acme"},
                    "source": {"volume": {"claimName": "exports", "path": "segments/"}},
                    "keyPrefix": "{date}/",
                },
            },
        }))
        .unwrap();
        s.spec.mode = mode;
        s
    }

    #[test]
    fn a_run_is_named_from_its_slot_and_owned_by_its_schedule() {
        let slot: Timestamp = "2026-12-07T05:00:00Z".parse().unwrap();
        let run = new_run(&schedule(ScheduleMode::Full), slot, 3, None);
        assert_eq!(run.name_any(), format!("acme-daily-{}", slot.as_second()));
        assert_eq!(run.labels()[SCHEDULE_LABEL], "acme-daily");
        assert_eq!(run.annotations()[RUN_ANNOTATION], "3");
        assert_eq!(run.annotations()[MODE_ANNOTATION], "full");
        let owner = &run.owner_references()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
        assert!(run.spec.source.window().0.is_none());
        assert!(run.spec.source.window().1.is_none());
        assert_eq!(run_name(&"x".repeat(300), slot).len(), 253);
    }

    #[test]
    fn an_incremental_run_takes_what_changed_since_the_last_cut_and_has_settled() {
        let slot: Timestamp = "2026-12-07T05:00:00Z".parse().unwrap();
        let first = new_run(&schedule(ScheduleMode::Incremental), slot, 1, None);
        let v = first.spec.source.volume.as_ref().unwrap();
        assert!(v.changed_after.is_none(), "the first run takes everything");
        assert_eq!(
            v.changed_before.as_ref().unwrap().0,
            "2026-12-07T04:59:30Z".parse::<Timestamp>().unwrap(),
            "files changed in the last 30 s wait for the next run"
        );
        assert_eq!(first.annotations()[MODE_ANNOTATION], "iter");
        let cut = cut_of(&first);
        let next = new_run(
            &schedule(ScheduleMode::Incremental),
            "2026-12-08T05:00:00Z".parse().unwrap(),
            2,
            Some(&Time(cut)),
        );
        assert_eq!(next.spec.source.window().0, Some(&Time(cut)));
    }

    #[test]
    fn an_incremental_run_of_a_bucket_source_windows_its_objects_last_modified() {
        let mut sched = schedule(ScheduleMode::Incremental);
        sched.spec.template.source = serde_json::from_value(serde_json::json!(
            {"s3": {"bucket": "exports", "prefix": "segments/"}}
        ))
        .unwrap();
        let slot: Timestamp = "2026-12-07T05:00:00Z".parse().unwrap();
        let first = new_run(&sched, slot, 1, None);
        let s3 = first.spec.source.s3.as_ref().unwrap();
        assert!(first.spec.source.volume.is_none());
        assert!(s3.changed_after.is_none());
        assert_eq!(
            s3.changed_before.as_ref().unwrap().0,
            "2026-12-07T04:59:30Z".parse::<Timestamp>().unwrap()
        );
        let cut = cut_of(&first);
        let next = new_run(
            &sched,
            "2026-12-08T05:00:00Z".parse().unwrap(),
            2,
            Some(&Time(cut)),
        );
        assert_eq!(
            next.spec.source.s3.as_ref().unwrap().changed_after,
            Some(Time(cut))
        );
    }
}
