//! Pure: a delivery and what it points at (destination, Secret, PVC) -> one `ValidatedDelivery`,
//! or the reason it cannot start yet. No client here.

use crate::api::{
    ChecksumAlgorithm, CopyMode, DELIVERY_LABEL, JOB_NAME_PREFIX, MAX_JOB_NAME, OutboundDelivery,
    OutboundDestination, SplitOn, UPLOAD_SERVICE_ACCOUNT, condition,
};
use crate::upload::headers::{BUCKET_OWNER_FULL_CONTROL, WriteHeaders};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

/// Everything the builders need, defaults applied and invariants checked, decided once.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedDelivery {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Name of the Job, from the delivery's name and uid (never from its status).
    pub job_name: String,
    /// The service account the upload pods run as.
    pub service_account: String,
    /// Whether the operator creates `service_account` (false when the destination names one).
    pub create_service_account: bool,
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub sts_endpoint: Option<String>,
    pub expected_bucket_owner: Option<String>,
    /// The destination endpoint's private CA (PEM).
    pub ca_bundle: Option<String>,
    /// Destination prefix + delivery keyPrefix, placeholders expanded.
    pub prefix: String,
    pub source: JobSource,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub split_size: u64,
    pub split_on: SplitOn,
    /// The gzip level files are compressed at on the way out, if they are.
    pub compress_level: Option<u32>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub checksum_algorithm: ChecksumAlgorithm,
    pub acl: Option<String>,
    pub manifest: bool,
    pub manifest_key: Option<String>,
    /// The manifest's name under the prefix, placeholders expanded.
    pub manifest_name: String,
    /// The pieces' name template, run placeholders expanded (`None`: the uploader's default).
    pub name_template: Option<String>,
    /// Only files changed in this window (ctime on a volume, LastModified in a bucket): an
    /// incremental run.
    pub changed_after: Option<jiff::Timestamp>,
    pub changed_before: Option<jiff::Timestamp>,
    pub parallelism: i32,
    pub backoff_limit: i32,
    pub active_deadline_seconds: Option<i64>,
    pub suspend: bool,
    pub credentials: JobCredentials,
}

impl ValidatedDelivery {
    /// Where the Job writes, as the status records it when the Job starts.
    pub fn target(&self) -> crate::api::DeliveryTarget {
        crate::api::DeliveryTarget {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            sts_endpoint: self.sts_endpoint.clone(),
            expected_bucket_owner: self.expected_bucket_owner.clone(),
            ca_bundle: self.ca_bundle.clone(),
            prefix: self.prefix.clone(),
            name_template: self.name_template.clone(),
        }
    }
}

/// Where a delivery writes, as its destination says now: for a delivery started before the
/// operator recorded `status.target` (an older version), so its uploads can still be aborted.
pub fn target_now(
    delivery: &OutboundDelivery,
    destination: &OutboundDestination,
) -> crate::api::DeliveryTarget {
    let s3 = &destination.spec.s3;
    crate::api::DeliveryTarget {
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        endpoint: s3.endpoint.clone(),
        force_path_style: s3.force_path_style.unwrap_or(false),
        sts_endpoint: s3.sts_endpoint.clone(),
        expected_bucket_owner: s3.expected_bucket_owner.clone(),
        ca_bundle: s3.ca_bundle.clone(),
        prefix: delivery_prefix(delivery, s3.prefix.as_deref()),
        name_template: None,
    }
}

/// Annotation of a schedule's run: the slot it runs for (RFC 3339), its `{run}` number and its
/// `{mode}`; label: the schedule.
pub const SCHEDULED_TIME_ANNOTATION: &str = "outbound.dev/scheduled-time";
pub const RUN_ANNOTATION: &str = "outbound.dev/run";
pub const MODE_ANNOTATION: &str = "outbound.dev/mode";
pub const SCHEDULE_LABEL: &str = "outbound.dev/schedule";

/// What a delivery's placeholders stand for: a schedule's run has its slot, run number and mode
/// in its annotations; any other delivery runs at its creation time, in mode `full`. Stable, so
/// every reconcile expands alike.
pub fn run_values(delivery: &OutboundDelivery) -> crate::template::RunValues {
    let annotations = delivery.annotations();
    let at = annotations
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| t.parse().ok())
        .or_else(|| delivery.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(jiff::Timestamp::now);
    crate::template::RunValues {
        at,
        schedule: delivery
            .labels()
            .get(SCHEDULE_LABEL)
            .cloned()
            .unwrap_or_default(),
        delivery: delivery.name_any(),
        mode: annotations
            .get(MODE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "full".into()),
        run: annotations
            .get(RUN_ANNOTATION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    }
}

/// Destination prefix + the delivery's keyPrefix, placeholders expanded.
fn delivery_prefix(delivery: &OutboundDelivery, destination_prefix: Option<&str>) -> String {
    let key_prefix = delivery
        .spec
        .key_prefix
        .as_deref()
        .map(|p| crate::template::expand(p, &run_values(delivery)));
    join_prefix(destination_prefix, key_prefix.as_deref())
}

/// The object-write settings of a destination, as text: what the Job's environment carries to the
/// uploads and what the destination probe sends. Both parse it with `WriteHeaders::parse`, so the
/// probe writes with exactly the headers of an upload to that destination.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSettings {
    pub acl: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub checksum_algorithm: ChecksumAlgorithm,
}

impl WriteSettings {
    /// The typed headers (as the uploader parses its environment).
    pub fn headers(&self) -> Result<WriteHeaders, String> {
        WriteHeaders::parse(
            self.acl.as_deref(),
            self.sse.as_deref(),
            self.sse_kms_key_id.as_deref(),
            self.storage_class.as_deref(),
            self.checksum_algorithm,
        )
    }
}

/// A destination's write settings, defaults applied: the cross-account modes send
/// `bucket-owner-full-control` unless the spec names an ACL (without it the customer would not
/// own the objects written into its bucket).
pub fn write_settings(destination: &OutboundDestination) -> WriteSettings {
    let spec = &destination.spec;
    let upload = spec.upload.clone().unwrap_or_default();
    let sse = upload.server_side_encryption.as_ref();
    WriteSettings {
        acl: upload.acl.map(|a| a.as_str().to_string()).or_else(|| {
            spec.credentials
                .cross_account
                .as_ref()
                .map(|_| BUCKET_OWNER_FULL_CONTROL.to_string())
        }),
        sse: sse.map(|s| s.algorithm.as_str().to_string()),
        sse_kms_key_id: sse.and_then(|s| s.kms_key_id.clone()),
        storage_class: upload.storage_class.map(|c| c.as_str().to_string()),
        checksum_algorithm: upload.checksum_algorithm.unwrap_or_default(),
    }
}

/// How the upload pods authenticate; never a secret value, only references.
#[derive(Clone, Debug, PartialEq)]
pub enum JobCredentials {
    Keys {
        secret_name: String,
        access_key_id_key: String,
        secret_access_key_key: String,
        session_token_key: Option<String>,
    },
    Workload,
    AssumeRole {
        role_arn: String,
        external_id: String,
    },
}

/// What the upload pods read: the claim (mounted read-only) and the folder in it, or the
/// provider's bucket and how to reach it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobSource {
    Volume {
        claim_name: String,
        /// Relative to the claim's root, without leading or trailing `/`.
        path: String,
    },
    Bucket {
        bucket: String,
        prefix: String,
        region: String,
        endpoint: Option<String>,
        force_path_style: bool,
        ca_bundle: Option<String>,
        /// The Secret of the provider's keys; `None`: the workload identity.
        keys: Option<crate::api::SecretKeys>,
        /// The server copies the parts (one identity reads the source and writes the
        /// destination, on the same endpoint, and the delivery allows it).
        copy: bool,
    },
}

/// Why a delivery cannot start; reported as `Ready=False` with this reason until something changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

impl Blocked {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Blocked {
            reason,
            message: message.into(),
        }
    }
}

/// The name of the Job the controller creates for a delivery: deterministic (a restart finds the
/// same Job), unique per incarnation (uid), and at most `MAX_JOB_NAME` characters.
pub fn child_name(delivery_name: &str, uid: &str) -> String {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    let stem: String = delivery_name
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(MAX_JOB_NAME - JOB_NAME_PREFIX.len() - "-01234567".len())
        .collect();
    format!(
        "{JOB_NAME_PREFIX}{}-{:08x}",
        stem.trim_end_matches('-'),
        hash as u32
    )
}

fn join_prefix(destination: Option<&str>, delivery: Option<&str>) -> String {
    let mut prefix = destination.unwrap_or_default().to_string();
    if let Some(key_prefix) = delivery.filter(|p| !p.is_empty()) {
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(key_prefix.trim_start_matches('/'));
    }
    prefix
}

/// The name of a delivery's manifest, placeholders expanded (default `manifest.json`).
pub fn manifest_name(delivery: &OutboundDelivery) -> String {
    delivery
        .spec
        .manifest_name
        .as_deref()
        .map(|n| crate::template::expand(n, &run_values(delivery)))
        .unwrap_or_else(|| "manifest.json".into())
}

/// The key of a delivery's manifest (destination prefix + keyPrefix + manifest name), when it
/// writes one and its destination exists.
pub fn manifest_key(
    delivery: &OutboundDelivery,
    destination: Option<&OutboundDestination>,
) -> Option<String> {
    let prefix = delivery_prefix(delivery, destination?.spec.s3.prefix.as_deref());
    delivery
        .spec
        .manifest
        .then(|| format!("{prefix}{}", manifest_name(delivery)))
}

/// Why a Secret a spec names cannot be used yet: its reasons and how the messages name it.
struct SecretUse {
    not_found: &'static str,
    key_missing: &'static str,
    /// "named by …", for the message of a missing Secret.
    named_by: String,
    /// What follows the Secret's name in the message of a missing key.
    note: &'static str,
}

/// Checks the Secret `keys` names against its key names (`present`; `None`: no such Secret).
fn check_secret(
    namespace: &str,
    keys: &crate::api::SecretKeys,
    present: Option<&[String]>,
    how: SecretUse,
) -> Result<(), Blocked> {
    let Some(present) = present else {
        return Err(Blocked::new(
            how.not_found,
            format!(
                "Secret {namespace}/{} named by {} does not exist",
                keys.name, how.named_by
            ),
        ));
    };
    let mut wanted = vec![
        keys.access_key_id_key.as_str(),
        keys.secret_access_key_key.as_str(),
    ];
    wanted.extend(keys.session_token_key.as_deref());
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|k| !present.iter().any(|p| p == k))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Blocked::new(
        how.key_missing,
        format!(
            "Secret {namespace}/{}{} has no key {}",
            keys.name,
            how.note,
            missing.join(", ")
        ),
    ))
}

/// The delivery's source as the Job reads it: the claim must exist; a bucket read with keys
/// needs its Secret and the key names. The server copies when one identity reads and writes
/// (the workload identity on both sides, or the same Secret and key names) on one endpoint.
fn job_source(
    delivery: &OutboundDelivery,
    destination_endpoint: Option<&str>,
    credentials: &JobCredentials,
    pvc: Option<&PersistentVolumeClaim>,
    source_keys: Option<&[String]>,
) -> Result<JobSource, Blocked> {
    let namespace = delivery.namespace().unwrap_or_default();
    match (&delivery.spec.source.volume, &delivery.spec.source.s3) {
        (Some(volume), _) => {
            let claim_name = &volume.claim_name;
            if pvc.is_none() {
                return Err(Blocked::new(
                    "PersistentVolumeClaimNotFound",
                    format!(
                        "PersistentVolumeClaim {namespace}/{claim_name} does not exist: create it or fix spec.source.volume.claimName"
                    ),
                ));
            }
            Ok(JobSource::Volume {
                claim_name: claim_name.clone(),
                path: volume.path.trim_matches('/').to_string(),
            })
        }
        (None, Some(s3)) => {
            if let Some(keys) = &s3.secret {
                let how = SecretUse {
                    not_found: "SourceSecretNotFound",
                    key_missing: "SourceSecretKeyMissing",
                    named_by: "spec.source.s3.secret".into(),
                    note: " (spec.source.s3.secret)",
                };
                check_secret(&namespace, keys, source_keys, how)?;
            }
            let one_identity = match (&s3.secret, credentials) {
                (None, JobCredentials::Workload) => true,
                (
                    Some(source),
                    JobCredentials::Keys {
                        secret_name,
                        access_key_id_key,
                        secret_access_key_key,
                        session_token_key,
                    },
                ) => {
                    &source.name == secret_name
                        && &source.access_key_id_key == access_key_id_key
                        && &source.secret_access_key_key == secret_access_key_key
                        && &source.session_token_key == session_token_key
                }
                _ => false,
            };
            // One server: the destination's endpoint is the source's (or both are AWS).
            let one_server = s3.endpoint.as_deref() == destination_endpoint;
            Ok(JobSource::Bucket {
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                force_path_style: s3.force_path_style.unwrap_or(false),
                ca_bundle: s3.ca_bundle.clone(),
                keys: s3.secret.clone(),
                copy: one_identity && one_server && s3.copy.unwrap_or_default() == CopyMode::Auto,
            })
        }
        (None, None) => Err(Blocked::new(
            "InvalidSource",
            "exactly one of spec.source.volume or spec.source.s3 must be set",
        )),
    }
}

/// Validates a delivery against what it references. `destination`, `secret_keys` (the key names
/// of the destination's Secret; values are never needed), `pvc` and `source_keys` (the key
/// names of the source bucket's Secret) are `None` when they do not exist.
pub fn validate(
    delivery: &OutboundDelivery,
    destination: Option<&OutboundDestination>,
    secret_keys: Option<&[String]>,
    pvc: Option<&PersistentVolumeClaim>,
    source_keys: Option<&[String]>,
) -> Result<ValidatedDelivery, Blocked> {
    let namespace = delivery.namespace().unwrap_or_default();
    let spec = &delivery.spec;
    let dest_name = &spec.destination_ref.name;
    let Some(destination) = destination else {
        return Err(Blocked::new(
            "DestinationNotFound",
            format!(
                "OutboundDestination {namespace}/{dest_name} does not exist: create it or fix spec.destinationRef.name"
            ),
        ));
    };
    let dspec = &destination.spec;
    let upload = dspec.upload.clone().unwrap_or_default();

    let dest_split = match &upload.split_size {
        Some(size) => size
            .bytes()
            .map_err(|e| Blocked::new("InvalidSplitSize", format!("destination splitSize: {e}")))?,
        None => crate::units::MAX_SPLIT_SIZE,
    };
    let split_size = match &spec.split_size {
        Some(size) => {
            let bytes = size
                .bytes()
                .map_err(|e| Blocked::new("InvalidSplitSize", format!("spec.splitSize: {e}")))?;
            if bytes > dest_split {
                return Err(Blocked::new(
                    "SplitSizeAboveDestination",
                    format!(
                        "spec.splitSize {size} ({bytes} bytes) is above the destination's split size ({dest_split} bytes): lower it"
                    ),
                ));
            }
            bytes
        }
        None => dest_split,
    };
    if split_size == 0 || split_size > crate::units::MAX_SPLIT_SIZE {
        return Err(Blocked::new(
            "InvalidSplitSize",
            format!("split size {split_size} must be between 1 byte and 1Ti"),
        ));
    }

    // Never the name in the status: anyone who may write the status could point it at a Job.
    let job_name = child_name(&delivery.name_any(), &delivery.uid().unwrap_or_default());
    let cross = dspec.credentials.cross_account.as_ref();
    let credentials = match (&dspec.credentials.secret, cross) {
        (Some(keys), None) => {
            let how = SecretUse {
                not_found: "SecretNotFound",
                key_missing: "SecretKeyMissing",
                named_by: format!("OutboundDestination {dest_name}"),
                note: "",
            };
            check_secret(&namespace, keys, secret_keys, how)?;
            JobCredentials::Keys {
                secret_name: keys.name.clone(),
                access_key_id_key: keys.access_key_id_key.clone(),
                secret_access_key_key: keys.secret_access_key_key.clone(),
                session_token_key: keys.session_token_key.clone(),
            }
        }
        (None, Some(cross)) => match &cross.role_arn {
            // The destination's own ExternalId only when it has one (a Ready destination has it
            // only when the operator allows it), else the one the operator generated.
            Some(role_arn) => match cross.external_id.clone().or_else(|| {
                destination
                    .status
                    .as_ref()
                    .and_then(|s| s.external_id.clone())
            }) {
                Some(external_id) => JobCredentials::AssumeRole {
                    role_arn: role_arn.clone(),
                    external_id,
                },
                None => {
                    return Err(Blocked::new(
                        "DestinationNotReady",
                        format!(
                            "OutboundDestination {dest_name} has no ExternalId yet (status.externalId)"
                        ),
                    ));
                }
            },
            None => JobCredentials::Workload,
        },
        _ => {
            return Err(Blocked::new(
                "InvalidCredentials",
                "the destination must set exactly one of credentials.secret or credentials.crossAccount",
            ));
        }
    };

    let source = job_source(
        delivery,
        dspec.s3.endpoint.as_deref(),
        &credentials,
        pvc,
        source_keys,
    )?;

    let dest_ready = destination
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY));
    // A Ready from before the destination's last change says nothing about its new spec (a new
    // endpoint may be one the operator refuses): wait for the probe of this generation.
    let stale = |c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition| matches!((c.observed_generation, destination.metadata.generation), (Some(seen), Some(now)) if seen != now);
    match dest_ready {
        Some(c) if c.status == "True" && stale(c) => {
            return Err(Blocked::new(
                "DestinationNotReady",
                format!(
                    "OutboundDestination {dest_name} changed and has not been validated again yet"
                ),
            ));
        }
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return Err(Blocked::new(
                "DestinationNotReady",
                format!(
                    "OutboundDestination {dest_name} is not ready ({}): {}",
                    c.reason, c.message
                ),
            ));
        }
        None => {
            return Err(Blocked::new(
                "DestinationNotReady",
                format!("OutboundDestination {dest_name} has not been validated yet"),
            ));
        }
    }
    let (service_account, create_service_account) =
        match cross.and_then(|c| c.service_account_name.clone()) {
            Some(sa) => (sa, false),
            None => (UPLOAD_SERVICE_ACCOUNT.to_string(), true),
        };
    let write = write_settings(destination);
    let prefix = delivery_prefix(delivery, dspec.s3.prefix.as_deref());
    let _ = DELIVERY_LABEL;
    Ok(ValidatedDelivery {
        namespace,
        name: delivery.name_any(),
        uid: delivery.uid().unwrap_or_default(),
        job_name,
        service_account,
        create_service_account,
        bucket: dspec.s3.bucket.clone(),
        region: dspec.s3.region.clone(),
        endpoint: dspec.s3.endpoint.clone(),
        force_path_style: dspec.s3.force_path_style.unwrap_or(false),
        sts_endpoint: dspec.s3.sts_endpoint.clone(),
        expected_bucket_owner: dspec.s3.expected_bucket_owner.clone(),
        ca_bundle: dspec.s3.ca_bundle.clone(),
        manifest_key: manifest_key(delivery, Some(destination)),
        manifest_name: manifest_name(delivery),
        name_template: spec
            .name_template
            .as_deref()
            .map(|t| crate::template::expand(t, &run_values(delivery))),
        changed_after: spec.source.window().0.map(|t| t.0),
        changed_before: spec.source.window().1.map(|t| t.0),
        prefix,
        source,
        include: spec.source.include().to_vec(),
        exclude: spec.source.exclude().to_vec(),
        split_size,
        split_on: spec.split_on.or(upload.split_on).unwrap_or_default(),
        compress_level: spec.compression.as_ref().map(|c| c.level),
        storage_class: write.storage_class,
        sse: write.sse,
        sse_kms_key_id: write.sse_kms_key_id,
        checksum_algorithm: write.checksum_algorithm,
        acl: write.acl,
        manifest: spec.manifest,
        parallelism: spec.parallelism.max(1),
        backoff_limit: spec.backoff_limit.max(0),
        active_deadline_seconds: spec.active_deadline_seconds,
        suspend: spec.suspend,
        credentials,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    pub fn destination(ready: bool) -> OutboundDestination {
        let mut d = OutboundDestination::new(
            "acme",
            OutboundDestinationSpec {
                s3: S3Location {
                    bucket: "acme-inbound".into(),
                    region: "us-east-1".into(),
                    prefix: Some("audience/".into()),
                    ..Default::default()
                },
                credentials: CredentialsSource {
                    secret: Some(SecretKeys {
                        name: "acme-keys".into(),
                        access_key_id_key: DEFAULT_ACCESS_KEY_ID_KEY.into(),
                        secret_access_key_key: DEFAULT_SECRET_ACCESS_KEY_KEY.into(),
                        session_token_key: None,
                    }),
                    cross_account: None,
                },
                upload: Some(UploadSettings {
                    split_size: Some(SplitSize::Quantity("1Gi".into())),
                    ..Default::default()
                }),
            },
        );
        d.metadata.namespace = Some("deliveries".into());
        d.status = Some(OutboundDestinationStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: if ready { "Validated" } else { "NoSuchBucket" }.into(),
                message: "m".into(),
                observed_generation: Some(1),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        d
    }

    pub fn delivery() -> OutboundDelivery {
        let mut d = OutboundDelivery::new(
            "segments-2026-11-27",
            OutboundDeliverySpec {
                destination_ref: LocalRef {
                    name: "acme".into(),
                },
                source: DeliverySource {
                    volume: Some(VolumeSource {
                        claim_name: "exports".into(),
                        path: "2026-11-27/".into(),
                        include: vec!["*.sync".into(), "*.sync.gz".into()],
                        exclude: vec![],
                        changed_after: None,
                        changed_before: None,
                    }),
                    s3: None,
                },
                key_prefix: Some("2026-11-27/".into()),
                name_template: None,
                manifest_name: None,
                split_size: Some(SplitSize::Quantity("512Mi".into())),
                split_on: None,
                compression: None,
                parallelism: 1,
                manifest: true,
                backoff_limit: 3,
                active_deadline_seconds: None,
                suspend: false,
                notify: None,
            },
        );
        d.metadata.namespace = Some("deliveries".into());
        d.metadata.uid = Some("0f3c-uid".into());
        d
    }

    /// The key names of a Secret.
    pub fn secret(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    pub fn pvc() -> PersistentVolumeClaim {
        PersistentVolumeClaim::default()
    }

    fn all_keys() -> Vec<String> {
        secret(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    }

    #[test]
    fn a_complete_delivery_validates_with_defaults_applied() {
        let v = validate(
            &delivery(),
            Some(&destination(true)),
            Some(&all_keys()[..]),
            Some(&pvc()),
            None,
        )
        .unwrap();
        assert_eq!(v.prefix, "audience/2026-11-27/");
        assert_eq!(
            v.manifest_key.as_deref(),
            Some("audience/2026-11-27/manifest.json")
        );
        assert_eq!(v.split_size, 512 << 20);
        assert_eq!(v.split_on, SplitOn::Lines);
        assert_eq!(v.checksum_algorithm, ChecksumAlgorithm::Crc64Nvme);
        assert_eq!(
            v.source,
            JobSource::Volume {
                claim_name: "exports".into(),
                path: "2026-11-27".into()
            }
        );
        assert_eq!(v.acl, None, "no ACL by default with keys");
        assert!(v.create_service_account);
        assert_eq!(v.service_account, UPLOAD_SERVICE_ACCOUNT);
    }

    #[test]
    fn each_missing_reference_has_its_reason() {
        let d = delivery();
        let dest = destination(true);
        let reason = |r: Result<ValidatedDelivery, Blocked>| r.unwrap_err().reason;
        assert_eq!(
            reason(validate(
                &d,
                None,
                Some(&all_keys()[..]),
                Some(&pvc()),
                None
            )),
            "DestinationNotFound"
        );
        assert_eq!(
            reason(validate(&d, Some(&dest), None, Some(&pvc()), None)),
            "SecretNotFound"
        );
        assert_eq!(
            reason(validate(
                &d,
                Some(&dest),
                Some(&secret(&["AWS_ACCESS_KEY_ID"])[..]),
                Some(&pvc()),
                None
            )),
            "SecretKeyMissing"
        );
        assert_eq!(
            reason(validate(&d, Some(&dest), Some(&all_keys()[..]), None, None)),
            "PersistentVolumeClaimNotFound"
        );
        assert_eq!(
            reason(validate(
                &d,
                Some(&destination(false)),
                Some(&all_keys()[..]),
                Some(&pvc()),
                None
            )),
            "DestinationNotReady"
        );
    }

    #[test]
    fn a_ready_from_an_older_generation_of_the_destination_does_not_count() {
        let d = delivery();
        let mut dest = destination(true);
        dest.metadata.generation = Some(1);
        assert!(validate(&d, Some(&dest), Some(&all_keys()[..]), Some(&pvc()), None).is_ok());
        // The spec changed (say, to an endpoint the operator refuses) and was not probed yet.
        dest.metadata.generation = Some(2);
        let b = validate(&d, Some(&dest), Some(&all_keys()[..]), Some(&pvc()), None).unwrap_err();
        assert_eq!(b.reason, "DestinationNotReady");
        assert!(b.message.contains("validated again"), "{}", b.message);
    }

    #[test]
    fn a_split_size_above_the_destination_is_refused() {
        let mut d = delivery();
        d.spec.split_size = Some(SplitSize::Quantity("2Gi".into()));
        let b = validate(
            &d,
            Some(&destination(true)),
            Some(&all_keys()[..]),
            Some(&pvc()),
            None,
        )
        .unwrap_err();
        assert_eq!(b.reason, "SplitSizeAboveDestination");
        assert!(b.message.contains("2Gi"), "{}", b.message);
        // Without its own size, a delivery takes the destination's.
        d.spec.split_size = None;
        let v = validate(
            &d,
            Some(&destination(true)),
            Some(&all_keys()[..]),
            Some(&pvc()),
            None,
        )
        .unwrap();
        assert_eq!(v.split_size, 1 << 30);
    }

    #[test]
    fn cross_account_modes_default_the_acl_and_may_name_a_service_account() {
        let mut dest = destination(true);
        dest.spec.credentials = CredentialsSource {
            secret: None,
            cross_account: Some(CrossAccount {
                role_arn: Some("arn:aws:iam::111122223333:role/outbound".into()),
                external_id: Some("ext-1".into()),
                service_account_name: Some("outbound-irsa".into()),
            }),
        };
        let v = validate(&delivery(), Some(&dest), None, Some(&pvc()), None).unwrap();
        assert_eq!(v.acl.as_deref(), Some("bucket-owner-full-control"));
        assert_eq!(v.service_account, "outbound-irsa");
        assert!(!v.create_service_account);
        assert!(matches!(v.credentials, JobCredentials::AssumeRole { .. }));
    }

    #[test]
    fn a_role_destination_hands_the_jobs_its_generated_external_id() {
        let mut dest = destination(true);
        dest.spec.credentials = CredentialsSource {
            secret: None,
            cross_account: Some(CrossAccount {
                role_arn: Some("arn:aws:iam::111122223333:role/outbound".into()),
                ..Default::default()
            }),
        };
        // Not generated yet: no Job (it could only assume the role without an id).
        let b = validate(&delivery(), Some(&dest), None, Some(&pvc()), None).unwrap_err();
        assert_eq!(b.reason, "DestinationNotReady");
        assert!(b.message.contains("ExternalId"), "{}", b.message);
        dest.status.as_mut().unwrap().external_id = Some("0123456789abcdef".into());
        let v = validate(&delivery(), Some(&dest), None, Some(&pvc()), None).unwrap();
        assert_eq!(
            v.credentials,
            JobCredentials::AssumeRole {
                role_arn: "arn:aws:iam::111122223333:role/outbound".into(),
                external_id: "0123456789abcdef".into(),
            }
        );
    }

    #[test]
    fn an_unrecorded_target_is_read_from_the_destination() {
        let mut d = delivery();
        d.spec.key_prefix = Some("2026-11-27/".into());
        let dest = destination(true);
        let keys = all_keys();
        let v = validate(&d, Some(&dest), Some(&keys[..]), Some(&pvc()), None).unwrap();
        assert_eq!(target_now(&d, &dest), v.target());
    }

    #[test]
    fn a_job_name_written_into_the_status_is_not_trusted() {
        let mut d = delivery();
        let keys = all_keys();
        let fresh = validate(
            &d,
            Some(&destination(true)),
            Some(&keys[..]),
            Some(&pvc()),
            None,
        )
        .unwrap();
        assert_eq!(fresh.job_name, child_name(&d.name_any(), &d.uid().unwrap()));
        d.status = Some(crate::api::OutboundDeliveryStatus {
            job_name: Some("odel-named-by-an-older-version-0123abcd".into()),
            ..Default::default()
        });
        let v = validate(
            &d,
            Some(&destination(true)),
            Some(&keys[..]),
            Some(&pvc()),
            None,
        )
        .unwrap();
        assert_eq!(v.job_name, fresh.job_name);
    }

    #[test]
    fn child_names_are_deterministic_short_and_per_incarnation() {
        let a = child_name("segments-2026-11-27", "uid-1");
        assert_eq!(a, child_name("segments-2026-11-27", "uid-1"));
        assert_ne!(a, child_name("segments-2026-11-27", "uid-2"));
        let long = child_name(&"x".repeat(253), "uid");
        assert_eq!(long.len(), MAX_JOB_NAME, "{long}");
        assert!(!child_name("a.b", "u").contains('.'));
    }

    #[test]
    fn placeholders_are_expanded_once_from_the_run() {
        let mut d = delivery();
        d.spec.key_prefix = Some("{date}/{mode}/".into());
        d.spec.name_template = Some("{stem}_{mode}_{timestamp}-{n}{ext}".into());
        d.spec.manifest_name = Some("{schedule}_{date}.info".into());
        d.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), "acme-daily".to_string())].into());
        d.metadata.annotations = Some(
            [
                (
                    SCHEDULED_TIME_ANNOTATION.to_string(),
                    "2026-12-07T05:00:00Z".to_string(),
                ),
                (MODE_ANNOTATION.to_string(), "iter".to_string()),
                (RUN_ANNOTATION.to_string(), "4".to_string()),
            ]
            .into(),
        );
        let v = validate(
            &d,
            Some(&destination(true)),
            Some(&secret(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])),
            Some(&pvc()),
            None,
        )
        .unwrap();
        assert!(v.prefix.ends_with("2026-12-07/iter/"), "{}", v.prefix);
        assert_eq!(
            v.name_template.as_deref(),
            Some("{stem}_iter_1796619600-{n}{ext}")
        );
        assert_eq!(v.manifest_name, "acme-daily_2026-12-07.info");
        assert_eq!(
            v.manifest_key.as_deref(),
            Some(format!("{}acme-daily_2026-12-07.info", v.prefix).as_str())
        );
        assert_eq!(v.target().name_template, v.name_template);
    }
}
