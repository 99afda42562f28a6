//! Aborts a delivery's open multipart uploads, so that no invisible, billable parts stay in the
//! customer's bucket: the ids the pods recorded, and those created but never recorded (a pod
//! killed in between). A pod records the key it is about to start (an upload with no id yet)
//! before it asks S3, so those are found by listing that exact key for uploads begun since the
//! delivery started: never by listing a prefix, which another delivery may share.
//! Needs a client (S3); the bucket is the one recorded when the Job started.

use crate::api::{DeliveryTarget, OutboundDelivery, ShardStatus};
use crate::credentials::{Access, Target, s3_client, sdk_config};
use crate::upload::error::cause;
use std::collections::BTreeSet;

/// Uploads begun this long before the delivery's recorded start still count as its own: the
/// recorded time comes from the API server's clock, the upload's from the S3 server's.
const CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(120);

/// What an abort pass left behind: `(key, upload id)` of every upload still open, and why.
#[derive(Debug, Default)]
pub struct Left {
    pub uploads: Vec<(String, String)>,
    pub why: Option<String>,
}

impl Left {
    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty() && self.why.is_none()
    }

    /// One line for an event: the ids left and the cause.
    pub fn describe(&self) -> String {
        let ids: Vec<String> = self
            .uploads
            .iter()
            .map(|(key, id)| format!("{key} (upload id {id})"))
            .collect();
        format!(
            "{} multipart uploads left open{}: {}",
            self.uploads.len(),
            self.why
                .as_ref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default(),
            if ids.is_empty() {
                "unknown (they could not be listed)".to_string()
            } else {
                ids.join(", ")
            }
        )
    }
}

/// The uploads the pods recorded in their shard reports, with their ids.
pub fn recorded(shards: &[ShardStatus]) -> Vec<(String, String)> {
    recorded_entries(shards)
        .filter(|(_, id)| !id.is_empty())
        .collect()
}

/// Keys a pod was about to start an upload for when it last reported (no id recorded yet).
fn intended(shards: &[ShardStatus]) -> Vec<String> {
    recorded_entries(shards)
        .filter(|(_, id)| id.is_empty())
        .map(|(key, _)| key)
        .collect()
}

fn recorded_entries(shards: &[ShardStatus]) -> impl Iterator<Item = (String, String)> + '_ {
    shards
        .iter()
        .flat_map(|shard| shard.uploads.iter())
        .map(|u| (u.key.clone(), u.upload_id.clone()))
}

/// Aborts every open upload of `delivery` in `target` with `access`: the ones its pods recorded
/// in `shards`, and those begun since it started under a key a pod recorded before asking S3.
/// Returns what is left.
pub async fn abort_all(
    delivery: &OutboundDelivery,
    shards: &[ShardStatus],
    target: &DeliveryTarget,
    access: &Access,
) -> Left {
    let sdk_target = Target {
        region: target.region.clone(),
        endpoint: target.endpoint.clone(),
        force_path_style: target.force_path_style,
        sts_endpoint: target.sts_endpoint.clone(),
        expected_bucket_owner: target.expected_bucket_owner.clone(),
        ca_bundle: target.ca_bundle.clone(),
    };
    let config = sdk_config(access, &sdk_target).await;
    let s3 = s3_client(&config, &sdk_target);
    let mut open: BTreeSet<(String, String)> = recorded(shards).into_iter().collect();
    let mut why = None;
    for key in intended(shards) {
        match list_since(&s3, &target.bucket, &key, started(delivery)).await {
            Ok(found) => open.extend(found),
            Err(e) => why = Some(format!("failed to list open uploads of {key}: {e}")),
        }
    }
    let mut left = Vec::new();
    for (key, id) in open {
        let result = s3
            .abort_multipart_upload()
            .bucket(&target.bucket)
            .key(&key)
            .upload_id(&id)
            .send()
            .await;
        match result {
            Ok(_) => tracing::info!(bucket = %target.bucket, %key, "aborted multipart upload"),
            Err(e) => {
                let c = cause(&e);
                // Already completed or aborted: nothing left to bill.
                if c.no_such_upload() || (c.not_found() && !c.is_code("NoSuchBucket")) {
                    continue;
                }
                tracing::warn!(bucket = %target.bucket, %key, cause = %c, "failed to abort multipart upload");
                why.get_or_insert_with(|| format!("failed to abort: {c}"));
                left.push((key, id));
            }
        }
    }
    Left { uploads: left, why }
}

fn started(delivery: &OutboundDelivery) -> Option<jiff::Timestamp> {
    let start = delivery.status.as_ref()?.start_time.as_ref()?.0;
    start.checked_sub(CLOCK_SLACK).ok()
}

/// Open uploads of exactly `key` initiated at or after `since` (all when unknown).
pub async fn list_since(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    since: Option<jiff::Timestamp>,
) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let out = s3
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .map_err(|e| cause(&e).to_string())?;
        for upload in out.uploads() {
            let (Some(at), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            if at != key {
                continue;
            }
            let initiated = upload
                .initiated()
                .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok());
            if since.is_none_or(|since| initiated.is_none_or(|at| at >= since)) {
                found.push((at.to_string(), id.to_string()));
            }
        }
        if out.is_truncated() == Some(true) && out.next_key_marker().is_some() {
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
        } else {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_left_is_named_upload_by_upload() {
        assert!(Left::default().is_empty());
        let left = Left {
            uploads: vec![("a/x-001.sync".into(), "id-1".into())],
            why: Some("failed to abort: AccessDenied (HTTP 403)".into()),
        };
        assert!(!left.is_empty());
        let text = left.describe();
        assert!(text.contains("a/x-001.sync (upload id id-1)"), "{text}");
        assert!(text.contains("AccessDenied"), "{text}");
    }
}
