//! Pure: conditions, phase and progress from what the controller observed, and the decision
//! whether a status write is needed at all (never when only timestamps would change).

use crate::api::{
    Identity, OutboundDeliveryStatus, OutboundDestinationStatus, Phase, Progress, ShardStatus,
    condition,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition, keeping `lastTransitionTime` from `previous` when its status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Conditions equal but for their timestamps.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// Bytes and objects done of the total, and uploads open, summed over every shard's report.
pub fn fold_progress<'a>(shards: impl IntoIterator<Item = &'a ShardStatus>) -> Progress {
    let mut p = Progress::default();
    for shard in shards {
        p.bytes_done += shard.bytes_done;
        p.bytes_total += shard.bytes_total;
        p.objects_done += shard.objects_done;
        p.objects_total += shard.objects_total;
        p.bytes_sent += shard.bytes_sent;
        p.bytes_copied += shard.bytes_copied;
        p.open_uploads += shard.uploads.len() as u64;
    }
    p.summary = summary(&p);
    p
}

fn summary(p: &Progress) -> String {
    let percent = (p.bytes_done.min(p.bytes_total) * 100)
        .checked_div(p.bytes_total)
        .unwrap_or(0);
    format!("{}/{} objects, {percent}%", p.objects_done, p.objects_total)
}

/// What the controller saw of a delivery this reconcile.
#[derive(Clone, Debug)]
pub enum DeliveryObservation<'a> {
    /// It cannot start: a reference is missing or invalid (nothing created).
    Blocked { reason: &'a str, message: &'a str },
    /// The Job exists (or was just created: then `job` has no status yet).
    Job { job: &'a Job },
}

/// The Job's terminal condition, if any: (succeeded?, reason, message, time).
fn job_terminal(job: &Job) -> Option<(bool, String, String, Option<Time>)> {
    let status = job.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => {
                return Some((
                    true,
                    "Delivered".into(),
                    String::new(),
                    status
                        .completion_time
                        .clone()
                        .or(c.last_transition_time.clone()),
                ));
            }
            "Failed" => {
                return Some((
                    false,
                    c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
                    c.message.clone().unwrap_or_default(),
                    c.last_transition_time.clone(),
                ));
            }
            _ => {}
        }
    }
    None
}

fn job_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
        && job.status.as_ref().and_then(|s| s.active).unwrap_or(0) == 0
}

/// A delivery's status from what was observed: its Job (or why it cannot start) and its pods'
/// shard reports (by index; empty when none reported yet).
pub fn delivery_status(
    current: Option<&OutboundDeliveryStatus>,
    generation: Option<i64>,
    observation: &DeliveryObservation<'_>,
    shards: &[ShardStatus],
    manifest_key: Option<&str>,
    now: &Time,
) -> OutboundDeliveryStatus {
    let empty = OutboundDeliveryStatus::default();
    let current = current.unwrap_or(&empty);
    let prev = &current.conditions[..];
    let cond = |t: &str, s: bool, r: &str, m: &str| condition(prev, t, s, r, m, generation, now);
    // No report (none yet, or the shards are gone): the totals last written stand.
    let progress = if shards.is_empty() {
        current.progress.clone()
    } else {
        Some(fold_progress(shards))
    };
    let summary = progress
        .as_ref()
        .map(|p| p.summary.clone())
        .unwrap_or_else(|| summary(&Progress::default()));
    let mut status = OutboundDeliveryStatus {
        observed_generation: generation,
        job_name: current.job_name.clone(),
        start_time: current.start_time.clone(),
        completion_time: current.completion_time.clone(),
        manifest_key: current.manifest_key.clone(),
        attempts: current.attempts,
        target: current.target.clone(),
        notification: current.notification.clone(),
        progress: progress.clone(),
        ..OutboundDeliveryStatus::default()
    };
    let (phase, conditions) = match observation {
        DeliveryObservation::Blocked { reason, message } => (
            Phase::Pending,
            vec![
                cond(condition::READY, false, reason, message),
                cond(condition::COMPLETE, false, reason, "not started"),
                cond(condition::FAILED, false, reason, ""),
                cond(condition::PROGRESSING, false, reason, message),
            ],
        ),
        DeliveryObservation::Job { job } => {
            // The Job observed is the one the controller found by its own name and owner check:
            // a name written into the status by anyone else never sticks.
            status.job_name = job.metadata.name.clone().or(status.job_name);
            status.start_time = status
                .start_time
                .or_else(|| job.metadata.creation_timestamp.clone())
                .or_else(|| Some(now.clone()));
            status.manifest_key = status.manifest_key.or(manifest_key.map(str::to_string));
            // A Job without status (the one about to be created) has started no pod: the same
            // as the empty status the API server returns, so that the two fold alike.
            let started = job.status.as_ref().map_or(0, |js| {
                js.failed.unwrap_or(0) + js.succeeded.unwrap_or(0) + js.active.unwrap_or(0)
            });
            status.attempts = Some(started.max(status.attempts.unwrap_or(0)));
            let last_error = shards
                .iter()
                .filter_map(|s| s.message.as_deref())
                .next_back()
                .unwrap_or("");
            match job_terminal(job) {
                Some((true, reason, _, time)) => {
                    status.completion_time = status
                        .completion_time
                        .or(time)
                        .or_else(|| Some(now.clone()));
                    let msg = format!("delivered {summary}");
                    (
                        Phase::Succeeded,
                        vec![
                            cond(condition::READY, true, &reason, &msg),
                            cond(condition::COMPLETE, true, &reason, &msg),
                            cond(condition::FAILED, false, &reason, ""),
                            cond(condition::PROGRESSING, false, &reason, &msg),
                        ],
                    )
                }
                Some((false, job_reason, job_message, time)) => {
                    status.completion_time = status
                        .completion_time
                        .or(time)
                        .or_else(|| Some(now.clone()));
                    // A pod that stopped the Job on a permanent error said why, naming the file,
                    // key or part: that is the delivery's reason, not the Job's "PodFailurePolicy".
                    let permanent = shards.iter().find(|s| s.permanent);
                    let (reason, msg) = match permanent.and_then(|s| s.reason.clone()) {
                        Some(reason) => (
                            reason,
                            permanent
                                .and_then(|s| s.message.clone())
                                .unwrap_or_default(),
                        ),
                        None if last_error.is_empty() => (job_reason, job_message),
                        None => (
                            job_reason,
                            format!("{job_message}; last error: {last_error}"),
                        ),
                    };
                    (
                        Phase::Failed,
                        vec![
                            cond(condition::READY, false, &reason, &msg),
                            cond(condition::COMPLETE, false, &reason, &msg),
                            cond(condition::FAILED, true, &reason, &msg),
                            cond(condition::PROGRESSING, false, &reason, &msg),
                        ],
                    )
                }
                None if job_suspended(job) => (
                    Phase::Pending,
                    vec![
                        cond(condition::READY, false, "Suspended", "spec.suspend is true"),
                        cond(
                            condition::COMPLETE,
                            false,
                            "Suspended",
                            "spec.suspend is true",
                        ),
                        cond(condition::FAILED, false, "Suspended", ""),
                        cond(
                            condition::PROGRESSING,
                            false,
                            "Suspended",
                            "spec.suspend is true",
                        ),
                    ],
                ),
                None => {
                    let msg = format!("uploading: {summary}");
                    (
                        Phase::Uploading,
                        vec![
                            cond(condition::READY, false, "Uploading", &msg),
                            cond(condition::COMPLETE, false, "Uploading", &msg),
                            cond(condition::FAILED, false, "Uploading", last_error),
                            cond(condition::PROGRESSING, true, "Uploading", &msg),
                        ],
                    )
                }
            }
        }
    };
    // kstatus' abnormal-true pair (what Flux reads): Reconciling while it waits or uploads,
    // Stalled when it failed; neither once it succeeded (or while suspended).
    let mut conditions = conditions;
    let (reason, message) = (conditions[0].reason.clone(), conditions[0].message.clone());
    let reconciling = matches!(phase, Phase::Pending | Phase::Uploading) && reason != "Suspended";
    let stalled = phase == Phase::Failed;
    conditions.push(cond(
        condition::RECONCILING,
        reconciling,
        &reason,
        if reconciling { &message } else { "" },
    ));
    conditions.push(cond(
        condition::STALLED,
        stalled,
        &reason,
        if stalled { &message } else { "" },
    ));
    status.phase = Some(phase);
    status.conditions = conditions;
    status
}

/// The delivery status to write, or `None` when the controller-owned fields already say it.
pub fn delivery_patch(
    current: Option<&OutboundDeliveryStatus>,
    desired: OutboundDeliveryStatus,
) -> Option<OutboundDeliveryStatus> {
    let Some(current) = current else {
        return Some(desired);
    };
    let unchanged = current.phase == desired.phase
        && same_conditions(&current.conditions, &desired.conditions)
        && current.observed_generation == desired.observed_generation
        && current.progress == desired.progress
        && current.job_name == desired.job_name
        && current.manifest_key == desired.manifest_key
        && current.start_time == desired.start_time
        && current.completion_time == desired.completion_time
        && current.attempts == desired.attempts
        && current.target == desired.target;
    (!unchanged).then_some(desired)
}

/// The outcome of a destination probe, as status wants it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ProbeReport {
    /// `None` when the destination can be written; else (reason, message).
    pub failure: Option<(String, String)>,
    pub identity: Option<Identity>,
    pub bucket_policy_statement: Option<String>,
    pub trust_policy_statement: Option<String>,
}

impl ProbeReport {
    /// A report of a destination refused before anything was contacted.
    pub fn refused(reason: &str, message: String) -> Self {
        ProbeReport {
            failure: Some((reason.into(), message)),
            ..Default::default()
        }
    }
}

/// The destination status for a probe outcome.
pub fn destination_status(
    current: Option<&OutboundDestinationStatus>,
    generation: Option<i64>,
    report: &ProbeReport,
    now: &Time,
) -> OutboundDestinationStatus {
    let prev = current.map(|c| &c.conditions[..]).unwrap_or(&[]);
    let ready = match &report.failure {
        None => {
            // The identity holds only what STS said and a masked access key id, never a value
            // read from the Secret as it is.
            let who = report
                .identity
                .as_ref()
                .and_then(|i| {
                    i.arn
                        .clone()
                        .or(i.access_key_id.as_ref().map(|k| format!("access key {k}")))
                })
                .unwrap_or_else(|| "the configured credentials".into());
            condition(
                prev,
                condition::READY,
                true,
                "Validated",
                format!("{who} can write to the bucket"),
                generation,
                now,
            )
        }
        Some((reason, message)) => condition(
            prev,
            condition::READY,
            false,
            reason,
            message,
            generation,
            now,
        ),
    };
    // kstatus reads Stalled (abnormal-true): a destination that cannot be written is Failed.
    let stalled = condition(
        prev,
        condition::STALLED,
        ready.status == "False",
        &ready.reason,
        if ready.status == "False" {
            ready.message.clone()
        } else {
            String::new()
        },
        generation,
        now,
    );
    OutboundDestinationStatus {
        conditions: vec![ready, stalled],
        observed_generation: generation,
        identity: report.identity.clone(),
        bucket_policy_statement: report.bucket_policy_statement.clone(),
        // Decided once, before any probe, and never changed: every write carries it on, since a
        // field left out of a server-side apply is removed.
        external_id: current.and_then(|c| c.external_id.clone()),
        trust_policy_statement: report.trust_policy_statement.clone(),
        last_probe_time: Some(now.clone()),
    }
}

/// The destination status to write, or `None` when only the probe time moved and the last
/// recorded probe is younger than `refresh` (so `lastProbeTime` stays roughly current without a
/// write per reconcile).
pub fn destination_patch(
    current: Option<&OutboundDestinationStatus>,
    desired: OutboundDestinationStatus,
    refresh: std::time::Duration,
) -> Option<OutboundDestinationStatus> {
    let Some(current) = current else {
        return Some(desired);
    };
    let unchanged = same_conditions(&current.conditions, &desired.conditions)
        && current.observed_generation == desired.observed_generation
        && current.identity == desired.identity
        && current.bucket_policy_statement == desired.bucket_policy_statement
        && current.external_id == desired.external_id
        && current.trust_policy_statement == desired.trust_policy_statement;
    let fresh = match (&current.last_probe_time, &desired.last_probe_time) {
        (Some(last), Some(now)) => {
            let age = now.0.duration_since(last.0);
            age.unsigned_abs() < refresh
        }
        _ => false,
    };
    (!(unchanged && fresh)).then_some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OpenUpload;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn job(active: i32, cond: Option<(&str, &str)>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("odel-x-1".into()),
                creation_timestamp: Some(t("2026-11-27T12:00:00Z")),
                ..Default::default()
            },
            spec: Some(JobSpec::default()),
            status: Some(JobStatus {
                active: Some(active),
                failed: Some(i32::from(cond.is_some_and(|c| c.0 == "Failed"))),
                conditions: cond.map(|(type_, reason)| {
                    vec![JobCondition {
                        type_: type_.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some("Job has reached the specified backoff limit".into()),
                        last_transition_time: Some(t("2026-11-27T13:00:00Z")),
                        ..Default::default()
                    }]
                }),
                completion_time: cond
                    .filter(|c| c.0 == "Complete")
                    .map(|_| t("2026-11-27T13:00:00Z")),
                ..Default::default()
            }),
        }
    }

    fn shard(done: u64, total: u64, objects: (u64, u64)) -> ShardStatus {
        ShardStatus {
            bytes_done: done,
            bytes_total: total,
            objects_done: objects.0,
            objects_total: objects.1,
            uploads: vec![OpenUpload {
                key: "k".into(),
                upload_id: "u".into(),
                source: None,
            }],
            ..Default::default()
        }
    }

    fn get<'a>(s: &'a OutboundDeliveryStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn progress_sums_every_shard() {
        let shards = [shard(50, 100, (1, 2)), shard(100, 100, (3, 3))];
        let p = fold_progress(&shards);
        assert_eq!(
            (p.bytes_done, p.bytes_total, p.objects_done, p.objects_total),
            (150, 200, 4, 5)
        );
        assert_eq!(p.open_uploads, 2);
        assert_eq!(p.summary, "4/5 objects, 75%");
    }

    #[test]
    fn a_running_job_is_uploading_and_progressing() {
        let now = t("2026-11-27T12:00:05Z");
        let current = OutboundDeliveryStatus::default();
        let j = job(1, None);
        let s = delivery_status(
            Some(&current),
            Some(1),
            &DeliveryObservation::Job { job: &j },
            &[shard(10, 100, (0, 2))],
            Some("p/manifest.json"),
            &now,
        );
        assert_eq!(s.phase, Some(Phase::Uploading));
        assert_eq!(get(&s, "Progressing").status, "True");
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Complete").status, "False");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
        assert_eq!(s.job_name.as_deref(), Some("odel-x-1"));
        assert_eq!(s.start_time, Some(t("2026-11-27T12:00:00Z")));
        assert_eq!(s.progress.as_ref().unwrap().bytes_done, 10);
        // Without reports (the shards gone), the totals last written stand.
        let again = delivery_status(
            Some(&s),
            Some(1),
            &DeliveryObservation::Job { job: &j },
            &[],
            Some("p/manifest.json"),
            &now,
        );
        assert_eq!(again.progress, s.progress);
    }

    #[test]
    fn a_complete_job_is_succeeded_with_times() {
        let now = t("2026-11-27T13:00:05Z");
        let j = job(0, Some(("Complete", "CompletionsReached")));
        let s = delivery_status(
            None,
            Some(1),
            &DeliveryObservation::Job { job: &j },
            &[],
            None,
            &now,
        );
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(get(&s, "Complete").status, "True");
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Failed").status, "False");
        assert_eq!(get(&s, "Progressing").status, "False");
        assert_eq!(s.completion_time, Some(t("2026-11-27T13:00:00Z")));
    }

    #[test]
    fn a_failed_job_says_why_with_the_last_shard_error() {
        let now = t("2026-11-27T13:00:05Z");
        let current = OutboundDeliveryStatus::default();
        let mut sh = shard(0, 10, (0, 1));
        sh.message = Some("failed to upload part 3 of a.sync: AccessDenied".into());
        let j = job(0, Some(("Failed", "BackoffLimitExceeded")));
        let s = delivery_status(
            Some(&current),
            Some(2),
            &DeliveryObservation::Job { job: &j },
            &[sh],
            None,
            &now,
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        let failed = get(&s, "Failed");
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "BackoffLimitExceeded")
        );
        assert!(
            failed.message.contains("AccessDenied"),
            "{}",
            failed.message
        );
    }

    #[test]
    fn blocked_deliveries_are_pending_with_the_reason() {
        let now = t("2026-11-27T13:00:05Z");
        let obs = DeliveryObservation::Blocked {
            reason: "SecretNotFound",
            message: "Secret x does not exist",
        };
        let s = delivery_status(None, Some(1), &obs, &[], None, &now);
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(get(&s, "Ready").reason, "SecretNotFound");
        assert_eq!(s.job_name, None);
        assert_eq!(s.start_time, None);
    }

    #[test]
    fn nothing_but_time_changed_means_no_write() {
        let obs = DeliveryObservation::Blocked {
            reason: "SecretNotFound",
            message: "m",
        };
        let first = delivery_status(None, Some(1), &obs, &[], None, &t("2026-11-27T13:00:00Z"));
        assert!(delivery_patch(None, first.clone()).is_some());
        let again = delivery_status(
            Some(&first),
            Some(1),
            &obs,
            &[],
            None,
            &t("2026-11-27T14:00:00Z"),
        );
        assert_eq!(
            again.conditions[0].last_transition_time,
            t("2026-11-27T13:00:00Z"),
            "transition time kept"
        );
        assert_eq!(delivery_patch(Some(&first), again), None);
        // A new generation is a change.
        let newer = delivery_status(
            Some(&first),
            Some(2),
            &obs,
            &[],
            None,
            &t("2026-11-27T14:00:00Z"),
        );
        assert!(delivery_patch(Some(&first), newer).is_some());
        // So is a different reason, with a new transition time only where the status flipped.
        let other = DeliveryObservation::Blocked {
            reason: "DestinationNotFound",
            message: "m",
        };
        let changed = delivery_status(
            Some(&first),
            Some(1),
            &other,
            &[],
            None,
            &t("2026-11-27T14:00:00Z"),
        );
        assert_eq!(
            changed.conditions[0].last_transition_time,
            t("2026-11-27T13:00:00Z")
        );
        assert!(delivery_patch(Some(&first), changed).is_some());
    }

    #[test]
    fn the_job_about_to_be_created_and_the_created_job_fold_alike() {
        // The controller writes the status from the Job it is about to create (no status, no
        // creation time), then folds the created one (empty status): no second write.
        let mut created = job(0, None);
        created.status = Some(JobStatus::default());
        let mut desired = created.clone();
        desired.status = None;
        desired.metadata.creation_timestamp = None;
        let now = t("2026-11-27T12:00:01Z");
        let before = DeliveryObservation::Job { job: &desired };
        let first = delivery_status(None, Some(1), &before, &[], Some("m.json"), &now);
        assert_eq!(
            (first.phase, first.attempts),
            (Some(Phase::Uploading), Some(0))
        );
        assert_eq!(first.job_name.as_deref(), Some("odel-x-1"));
        let after = DeliveryObservation::Job { job: &created };
        let later = t("2026-11-27T12:00:02Z");
        let second = delivery_status(Some(&first), Some(1), &after, &[], Some("m.json"), &later);
        assert_eq!(delivery_patch(Some(&first), second), None);
    }

    #[test]
    fn destination_probe_time_alone_writes_only_when_stale() {
        let ok = ProbeReport {
            failure: None,
            identity: Some(Identity {
                arn: Some("arn:aws:iam::1:user/u".into()),
                source: "STS".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let refresh = std::time::Duration::from_secs(300);
        let first = destination_status(None, Some(1), &ok, &t("2026-11-27T12:00:00Z"));
        assert_eq!(first.conditions[0].status, "True");
        let soon = destination_status(Some(&first), Some(1), &ok, &t("2026-11-27T12:01:00Z"));
        assert_eq!(destination_patch(Some(&first), soon, refresh), None);
        let later = destination_status(Some(&first), Some(1), &ok, &t("2026-11-27T12:06:00Z"));
        assert!(destination_patch(Some(&first), later, refresh).is_some());
        let bad = ProbeReport {
            failure: Some(("AccessDenied".into(), "denied".into())),
            ..ok.clone()
        };
        let failed = destination_status(Some(&first), Some(1), &bad, &t("2026-11-27T12:01:00Z"));
        assert_eq!(
            failed.conditions[0].last_transition_time,
            t("2026-11-27T12:01:00Z")
        );
        assert!(destination_patch(Some(&first), failed, refresh).is_some());
    }

    #[test]
    fn the_external_id_survives_every_destination_status_write() {
        let recorded = OutboundDestinationStatus {
            external_id: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        };
        let report = ProbeReport {
            failure: Some(("AssumeRoleDenied".into(), "denied".into())),
            trust_policy_statement: Some("{}".into()),
            ..Default::default()
        };
        let now = t("2026-11-27T12:00:00Z");
        let first = destination_status(Some(&recorded), Some(1), &report, &now);
        assert_eq!(first.external_id, recorded.external_id);
        assert_eq!(first.trust_policy_statement.as_deref(), Some("{}"));
        let ok = destination_status(Some(&first), Some(2), &ProbeReport::default(), &now);
        assert_eq!(ok.external_id, recorded.external_id);
        assert_eq!(ok.trust_policy_statement, None);
        // A status that lost the id is rewritten, even when nothing else changed.
        let lost = OutboundDestinationStatus {
            external_id: None,
            ..ok.clone()
        };
        let refresh = std::time::Duration::from_secs(300);
        assert_eq!(destination_patch(Some(&ok), ok.clone(), refresh), None);
        assert!(destination_patch(Some(&lost), ok, refresh).is_some());
    }
}
