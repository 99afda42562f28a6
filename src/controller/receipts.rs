//! A delivery's receipt by webhook, once it ended: built from its status, checked against the
//! admin's endpoint rules, signed with the Secret key it names, posted, and the outcome recorded
//! in `status.notification`; retried with backoff, given up after `notify::MAX_ATTEMPTS`. The
//! delivery's own phase never waits on it.

use super::Context;
use super::endpoint;
use crate::api::{CONTROLLER_MANAGER, NotificationStatus, OutboundDelivery};
use crate::notify::{self, Receipt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::time::Duration;

/// Sends the receipt of an ended delivery if it asks for one and it is due; returns when to
/// come back (`None`: nothing more to do).
pub async fn send_receipt(ctx: &Context, delivery: &OutboundDelivery) -> Option<Action> {
    let webhook = delivery.spec.notify.as_ref()?.webhook.as_ref()?;
    let status = delivery.status.as_ref()?;
    let mut record = status.notification.clone().unwrap_or_default();
    if record.sent_time.is_some() || record.gave_up {
        return None;
    }
    // Not before the backoff of the last attempt is over (other events may wake us earlier).
    if let Some(last) = &record.last_attempt_time {
        let due = last.0 + notify::backoff(record.attempts);
        let now = jiff::Timestamp::now();
        if now < due {
            let wait = now.duration_until(due);
            return Some(Action::requeue(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(50),
            ));
        }
    }
    let ns = delivery.namespace().unwrap_or_default();
    let name = delivery.name_any();
    let field = "spec.notify.webhook.url";
    let policy = ctx.args.endpoint_policy();
    let allowed = endpoint::allowed(field, &webhook.url, policy).await;
    if let Err(why) = allowed {
        record.gave_up = true;
        record.last_error = Some(why.clone());
        super::delivery::publish(
            ctx,
            delivery,
            EventType::Warning,
            "NotificationRefused",
            &why,
            "Notify",
        )
        .await;
        write(ctx, delivery, &record).await;
        return None;
    }
    let key = match &webhook.secret_ref {
        None => Ok(None),
        Some(r) => match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await
        {
            Ok(Some(secret)) => secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|v| Some(v.0.clone()))
                .ok_or_else(|| format!("Secret {ns}/{} has no key {}", r.name, r.key)),
            Ok(None) => Err(format!("Secret {ns}/{} does not exist", r.name)),
            Err(e) => Err(format!("failed to read Secret {ns}/{}: {e}", r.name)),
        },
    };
    let outcome = match key {
        Ok(key) => {
            let event = notify::cloud_event(&receipt(delivery));
            notify::send(&webhook.url, &event, key.as_deref()).await
        }
        Err(why) => Err(why),
    };
    record.attempts += 1;
    record.last_attempt_time = Some(Time(jiff::Timestamp::now()));
    let next = match outcome {
        Ok(()) => {
            record.sent_time = record.last_attempt_time.clone();
            record.last_error = None;
            tracing::info!(namespace = %ns, name = %name, attempts = record.attempts, "receipt sent");
            None
        }
        Err(why) if record.attempts >= notify::MAX_ATTEMPTS => {
            record.gave_up = true;
            record.last_error = Some(why.clone());
            super::delivery::publish(
                ctx,
                delivery,
                EventType::Warning,
                "NotificationFailed",
                &format!(
                    "gave up sending the receipt after {} attempts: {why}",
                    record.attempts
                ),
                "Notify",
            )
            .await;
            None
        }
        Err(why) => {
            tracing::warn!(namespace = %ns, name = %name, attempts = record.attempts, error = %why, "receipt not sent; trying again");
            record.last_error = Some(why);
            Some(Action::requeue(notify::backoff(record.attempts)))
        }
    };
    write(ctx, delivery, &record).await;
    next
}

/// The receipt of an ended delivery, from its status.
fn receipt(delivery: &OutboundDelivery) -> Receipt {
    let status = delivery.status.clone().unwrap_or_default();
    let ready = status.conditions.first();
    let progress = status.progress.clone().unwrap_or_default();
    Receipt {
        namespace: delivery.namespace().unwrap_or_default(),
        delivery: delivery.name_any(),
        uid: delivery.uid().unwrap_or_default(),
        schedule: delivery
            .labels()
            .get(crate::validate::SCHEDULE_LABEL)
            .cloned(),
        destination: delivery.spec.destination_ref.name.clone(),
        phase: status.phase.map(|p| p.as_str()).unwrap_or("").to_string(),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        bucket: status.target.as_ref().map(|t| t.bucket.clone()),
        prefix: status.target.as_ref().map(|t| t.prefix.clone()),
        manifest_key: status.manifest_key.clone(),
        objects: progress.objects_done,
        bytes: progress.bytes_done,
        time: status
            .completion_time
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    }
}

/// Records the receipt's outcome (a merge of `status.notification` alone: the rest of the status
/// of an ended delivery stays as it is).
async fn write(ctx: &Context, delivery: &OutboundDelivery, record: &NotificationStatus) {
    let patch = serde_json::json!({"status": {"notification": record}});
    let params = PatchParams {
        field_manager: Some(CONTROLLER_MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = Api::<OutboundDelivery>::namespaced(
        ctx.client.clone(),
        &delivery.namespace().unwrap_or_default(),
    )
    .patch_status(&delivery.name_any(), &params, &Patch::Merge(&patch))
    .await
    {
        tracing::warn!(error = %e, "failed to record the receipt's outcome");
    }
}
