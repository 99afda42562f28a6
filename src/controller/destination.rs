//! The destination reconciler: check the admin's grants, resolve credentials, probe the bucket,
//! write `Ready`, identity and bucket-policy statement. Needs a client (Secret, status) and the
//! network (S3/STS).

use super::endpoint::{self, EndpointPolicy};
use super::{Context, requeue_for};
use crate::api::{CONTROLLER_MANAGER, OutboundDestination, OutboundTenancy, SecretKeys};
use crate::credentials::{Access, Target};
use crate::probe::{self, ProbeTarget, reason};
use crate::status::{ProbeReport, destination_patch, destination_status};
use crate::tenancy;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "destination";

/// Errors of the destination reconciler (all about talking to the API server: probe failures
/// are not errors, they are reported in status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to fetch Secret {0}: {1}")]
    FetchSecret(String, #[source] kube::Error),
    #[error("failed to patch the status of OutboundDestination {0}: {1}")]
    PatchStatus(String, #[source] kube::Error),
}

impl Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::FetchSecret(..) => "FetchSecret",
            Error::PatchStatus(..) => "PatchStatus",
        }
    }
}

/// Secret keys into an access, or the report saying what is wrong. Values never leave here
/// except into the SDK's credentials.
fn keys_from_secret(
    secret: Option<&Secret>,
    keys: &SecretKeys,
    ns: &str,
) -> Result<Access, Box<ProbeReport>> {
    let blocked = |reason: &str, message: String| Box::new(ProbeReport::refused(reason, message));
    let Some(secret) = secret else {
        return Err(blocked(
            reason::SECRET_NOT_FOUND,
            format!(
                "Secret {ns}/{} does not exist: create it with keys {} and {}",
                keys.name, keys.access_key_id_key, keys.secret_access_key_key
            ),
        ));
    };
    let get = |key: &str| -> Option<String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    };
    let mut missing = Vec::new();
    let access_key_id = get(&keys.access_key_id_key).filter(|v| !v.is_empty());
    let secret_access_key = get(&keys.secret_access_key_key).filter(|v| !v.is_empty());
    if access_key_id.is_none() {
        missing.push(keys.access_key_id_key.as_str());
    }
    if secret_access_key.is_none() {
        missing.push(keys.secret_access_key_key.as_str());
    }
    let session_token = match &keys.session_token_key {
        Some(k) => {
            let v = get(k);
            if v.is_none() {
                missing.push(k.as_str());
            }
            v
        }
        None => None,
    };
    match (access_key_id, secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) if missing.is_empty() => Ok(Access::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        }),
        _ => Err(blocked(
            reason::SECRET_KEY_MISSING,
            format!(
                "Secret {ns}/{} has no (or an empty) key {}: add it or set the key name in spec.credentials.secret",
                keys.name,
                missing.join(", ")
            ),
        )),
    }
}

/// A new ExternalId: 128 random bits as 32 hex characters (AWS allows 2 to 1,224 characters of
/// `[\w+=,.@:/-]`).
pub fn new_external_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether the destination assumes a role and has no generated ExternalId yet.
fn needs_external_id(dest: &OutboundDestination) -> bool {
    let role = dest
        .spec
        .credentials
        .cross_account
        .as_ref()
        .is_some_and(|c| c.role_arn.is_some());
    role && dest
        .status
        .as_ref()
        .and_then(|s| s.external_id.as_ref())
        .is_none()
}

/// The ExternalId a destination assumes its role with: its own `externalId` when set (which only
/// a Ready destination of an operator that allows it gets this far with), else the generated one
/// in status.
pub fn external_id_in_use(dest: &OutboundDestination) -> Option<String> {
    dest.spec
        .credentials
        .cross_account
        .as_ref()
        .and_then(|c| c.external_id.clone())
        .or_else(|| dest.status.as_ref().and_then(|s| s.external_id.clone()))
}

/// Refuses a cross-account destination that the admin's tenancy grants do not allow to its
/// namespace (admitted before a grant was removed, or while the policy was not installed). Pure.
fn granted(
    dest: &OutboundDestination,
    tenancy: Option<&OutboundTenancy>,
) -> Result<(), Box<ProbeReport>> {
    let ns = dest.namespace().unwrap_or_default();
    tenancy::check(tenancy.map(|t| &t.spec), &ns, &dest.spec)
        .map_err(|message| Box::new(ProbeReport::refused(reason::NOT_GRANTED, message)))
}

/// Refuses a spec-supplied ExternalId unless the admin allows them. Pure.
fn spec_external_id_allowed(
    dest: &OutboundDestination,
    allow_spec: bool,
) -> Result<(), Box<ProbeReport>> {
    let own = dest
        .spec
        .credentials
        .cross_account
        .as_ref()
        .is_some_and(|c| c.external_id.is_some());
    if own && !allow_spec {
        return Err(Box::new(ProbeReport::refused(
            reason::EXTERNAL_ID_NOT_ALLOWED,
            "spec.credentials.crossAccount.externalId is set, but this operator generates the \
             ExternalId itself (AWS's rule for third parties: an id chosen by whoever writes the \
             destination protects no one from a confused deputy): remove it and put \
             status.externalId (see status.trustPolicyStatement) into the role's trust policy, or \
             ask the admin to allow spec ExternalIds (crossAccount.allowSpecExternalId)"
                .into(),
        )));
    }
    Ok(())
}

/// Writes a new ExternalId into status, alone and before any probe, so that the id the customer
/// is shown is decided once and survives a restart. The apply carries the rest of the status as
/// it is (a field left out would be removed) and the resourceVersion it was read at, so that a
/// reconcile reading an older copy fails (409) instead of writing a second id.
async fn record_external_id(
    ctx: &Context,
    dest: &OutboundDestination,
) -> Result<Result<OutboundDestination, Box<ProbeReport>>, Error> {
    let ns = dest.namespace().unwrap_or_default();
    let name = dest.name_any();
    let mut status = dest.status.clone().unwrap_or_default();
    let id = new_external_id();
    status.external_id = Some(id.clone());
    let patch = serde_json::json!({
        "apiVersion": "outbound.dev/v1alpha1",
        "kind": "OutboundDestination",
        "metadata": {"resourceVersion": dest.resource_version()},
        "status": status,
    });
    let written = Api::<OutboundDestination>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::PatchStatus(format!("{ns}/{name}"), e))?;
    // An old schema prunes the field: going on would show (and use) a new id at every reconcile.
    if written.status.as_ref().and_then(|s| s.external_id.as_ref()) != Some(&id) {
        return Ok(Err(Box::new(ProbeReport::refused(
            reason::CRD_OUTDATED,
            "the API server dropped status.externalId: the OutboundDestination CRD is older than \
             the operator; apply this version's CRDs"
                .into(),
        ))));
    }
    tracing::info!(namespace = %ns, name = %name, "generated the destination's ExternalId");
    Ok(Ok(written))
}

/// Resolves the access of a destination (reading its Secret when it uses keys).
pub async fn resolve_access(
    client: &kube::Client,
    dest: &OutboundDestination,
) -> Result<Result<Access, Box<ProbeReport>>, Error> {
    let ns = dest.namespace().unwrap_or_default();
    let creds = &dest.spec.credentials;
    if let Some(keys) = &creds.secret {
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&keys.name)
            .await
            .map_err(|e| Error::FetchSecret(format!("{ns}/{}", keys.name), e))?;
        return Ok(keys_from_secret(secret.as_ref(), keys, &ns));
    }
    let cross = creds.cross_account.clone().unwrap_or_default();
    Ok(Ok(match cross.role_arn {
        Some(role_arn) => Access::AssumeRole {
            role_arn,
            external_id: external_id_in_use(dest),
            session_name: "outbound".into(),
        },
        None => Access::WorkloadIdentity,
    }))
}

/// Where a destination's bucket is, for the probe and the uploads' abort.
pub fn probe_target(dest: &OutboundDestination) -> ProbeTarget {
    let s3 = &dest.spec.s3;
    ProbeTarget {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone().unwrap_or_default(),
        target: Target {
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            force_path_style: s3.force_path_style.unwrap_or(false),
            sts_endpoint: s3.sts_endpoint.clone(),
            expected_bucket_owner: s3.expected_bucket_owner.clone(),
            ca_bundle: s3.ca_bundle.clone(),
        },
        // The same settings, defaults included, that the Jobs of its deliveries get.
        write: crate::validate::write_settings(dest),
        allowlist: dest
            .spec
            .credentials
            .cross_account
            .as_ref()
            .is_some_and(|c| c.role_arn.is_none()),
    }
}

/// Whether the destination's endpoints are ones the admin allows (https; no loopback, link-local
/// or metadata address), or the report that says which field is refused and why.
async fn endpoints_allowed(
    dest: &OutboundDestination,
    policy: EndpointPolicy,
) -> Result<(), Box<ProbeReport>> {
    let s3 = &dest.spec.s3;
    if let Some(bundle) = &s3.ca_bundle {
        crate::credentials::check_ca_bundle("spec.s3.caBundle", bundle).map_err(|message| {
            Box::new(ProbeReport::refused(reason::INVALID_CA_BUNDLE, message))
        })?;
    }
    let fields = [
        ("spec.s3.endpoint", &s3.endpoint),
        ("spec.s3.stsEndpoint", &s3.sts_endpoint),
    ];
    for (field, url) in fields {
        let Some(url) = url else { continue };
        if let Err(message) = endpoint::allowed(field, url, policy).await {
            return Err(Box::new(ProbeReport::refused(
                reason::ENDPOINT_NOT_ALLOWED,
                message,
            )));
        }
    }
    Ok(())
}

/// Whether the operator may use a destination's credentials to abort uploads it recorded: the
/// gates the probe passes first (the admin's grants and ExternalId rule) hold for aborts too, or
/// a destination edited after its delivery started (a role and an ExternalId of someone else's)
/// would have the operator assume that role. Endpoints are not judged again: aborts go to the
/// endpoint recorded when the uploads began.
pub async fn may_abort_with(
    ctx: &Context,
    dest: &OutboundDestination,
) -> Result<(), Box<ProbeReport>> {
    let tenancy = ctx.stores.tenancy().await;
    granted(dest, tenancy.as_deref())?;
    spec_external_id_allowed(dest, ctx.args.allow_spec_external_id)
}

pub async fn reconcile(dest: Arc<OutboundDestination>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile(CONTROLLER);
    let ns = dest.namespace().unwrap_or_default();
    let name = dest.name_any();
    // A destination the grants do not allow gets nothing from the operator: no ExternalId, no
    // probe. A refused endpoint is never contacted either, not even to read the Secret for it.
    let tenancy = ctx.stores.tenancy().await;
    let grant = granted(&dest, tenancy.as_deref());
    let (dest, recorded) = if grant.is_ok() && needs_external_id(&dest) {
        match record_external_id(&ctx, &dest).await? {
            Ok(written) => (Arc::new(written), Ok(())),
            Err(report) => (dest, Err(report)),
        }
    } else {
        (dest, grant)
    };
    let allowed = match recorded
        .and_then(|()| spec_external_id_allowed(&dest, ctx.args.allow_spec_external_id))
    {
        Ok(()) => endpoints_allowed(&dest, ctx.args.endpoint_policy()).await,
        refused => refused,
    };
    let report = match allowed {
        Err(report) => *report,
        Ok(()) => match resolve_access(&ctx.client, &dest).await? {
            Ok(access) => probe::probe(&probe_target(&dest), &access).await,
            Err(report) => *report,
        },
    };
    let reason = report
        .failure
        .as_ref()
        .map(|(r, _)| r.as_str())
        .unwrap_or("Validated");
    ctx.metrics.probe(reason);
    let now = Time(jiff::Timestamp::now());
    let current = dest.status.as_ref();
    let desired = destination_status(current, dest.meta().generation, &report, &now);
    let was_ready = current
        .and_then(|s| s.conditions.first())
        .map(|c| (c.status.clone(), c.reason.clone()));
    let refresh = ctx.args.revalidate_interval;
    let ready = &desired.conditions[0];
    ctx.metrics
        .destination_ready(&ns, &name, ready.status == "True", &ready.reason);
    if let Some(status) = destination_patch(current, desired.clone(), refresh) {
        let patch = serde_json::json!({
            "apiVersion": "outbound.dev/v1alpha1",
            "kind": "OutboundDestination",
            "status": status,
        });
        Api::<OutboundDestination>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(CONTROLLER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::PatchStatus(format!("{ns}/{name}"), e))?;
        if was_ready != Some((ready.status.clone(), ready.reason.clone())) {
            tracing::info!(namespace = %ns, name = %name, ready = %ready.status, reason = %ready.reason, "destination probed");
            let event = Event {
                type_: if ready.status == "True" {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: ready.reason.clone(),
                note: Some(ready.message.chars().take(1000).collect()),
                action: "Probe".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &dest.object_ref(&())).await {
                tracing::warn!(error = %e, "failed to publish an event");
            }
        }
    }
    ctx.succeeded(&format!("{CONTROLLER}/{ns}/{name}"));
    // A failure the network may fix is tried again soon; the rest waits for a change (spec,
    // Secret) or for the periodic revalidation (the customer may fix the bucket side).
    let transient = matches!(reason, reason::UNREACHABLE | reason::PROBE_FAILED);
    Ok(Action::requeue(if transient {
        Duration::from_secs(30).min(refresh)
    } else {
        refresh
    }))
}

pub fn error_policy(dest: Arc<OutboundDestination>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = ?dest.namespace(), name = %dest.name_any(), error = %err, "destination reconcile failed");
    ctx.metrics.error(CONTROLLER, err.kind());
    let key = format!(
        "{CONTROLLER}/{}/{}",
        dest.namespace().unwrap_or_default(),
        dest.name_any()
    );
    requeue_for(&ctx, key, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn keys() -> SecretKeys {
        SecretKeys {
            name: "acme".into(),
            access_key_id_key: "id".into(),
            secret_access_key_key: "key".into(),
            session_token_key: None,
        }
    }

    #[test]
    fn secret_problems_have_their_own_reasons() {
        let err = keys_from_secret(None, &keys(), "ns").unwrap_err();
        assert_eq!(err.failure.unwrap().0, reason::SECRET_NOT_FOUND);
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "id".to_string(),
                ByteString(b"AKIA".to_vec()),
            )])),
            ..Secret::default()
        };
        let (r, msg) = keys_from_secret(Some(&secret), &keys(), "ns")
            .unwrap_err()
            .failure
            .unwrap();
        assert_eq!(r, reason::SECRET_KEY_MISSING);
        assert!(msg.contains("key") && !msg.contains("AKIA"), "{msg}");
        let full = Secret {
            data: Some(BTreeMap::from([
                ("id".to_string(), ByteString(b"AKIA".to_vec())),
                ("key".to_string(), ByteString(b"s3cr3t".to_vec())),
            ])),
            ..Secret::default()
        };
        match keys_from_secret(Some(&full), &keys(), "ns").unwrap() {
            Access::Keys {
                secret_access_key, ..
            } => assert_eq!(secret_access_key, "s3cr3t"),
            other => panic!("{other:?}"),
        }
    }

    fn role_destination(own_id: Option<&str>, generated: Option<&str>) -> OutboundDestination {
        let mut dest = OutboundDestination::new(
            "acme",
            serde_yaml::from_str(
                "{s3: {bucket: bkt}, credentials: {crossAccount: {roleArn: 'arn:aws:iam::111122223333:role/r'}}}",
            )
            .unwrap(),
        );
        dest.spec
            .credentials
            .cross_account
            .as_mut()
            .unwrap()
            .external_id = own_id.map(str::to_string);
        dest.status = Some(crate::api::OutboundDestinationStatus {
            external_id: generated.map(str::to_string),
            ..Default::default()
        });
        dest
    }

    #[test]
    fn external_ids_are_random_hex_of_32_characters() {
        let (a, b) = (new_external_id(), new_external_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn only_role_destinations_without_an_id_get_one() {
        assert!(needs_external_id(&role_destination(None, None)));
        assert!(!needs_external_id(&role_destination(None, Some("gen"))));
        let mut allowlist = role_destination(None, None);
        allowlist
            .spec
            .credentials
            .cross_account
            .as_mut()
            .unwrap()
            .role_arn = None;
        assert!(!needs_external_id(&allowlist));
        let mut no_status = role_destination(None, None);
        no_status.status = None;
        assert!(needs_external_id(&no_status));
    }

    #[test]
    fn a_spec_external_id_needs_the_admins_consent() {
        let own = role_destination(Some("chosen-by-the-team"), Some("gen"));
        let refused = spec_external_id_allowed(&own, false).unwrap_err();
        let (reason, message) = refused.failure.unwrap();
        assert_eq!(reason, reason::EXTERNAL_ID_NOT_ALLOWED);
        assert!(message.contains("status.externalId"), "{message}");
        assert!(spec_external_id_allowed(&own, true).is_ok());
        assert_eq!(
            external_id_in_use(&own).as_deref(),
            Some("chosen-by-the-team")
        );
        let generated = role_destination(None, Some("gen"));
        assert!(spec_external_id_allowed(&generated, false).is_ok());
        assert_eq!(external_id_in_use(&generated).as_deref(), Some("gen"));
    }

    /// The probe parses the settings the Job's environment carries to the uploads, defaults
    /// included: what it tests is what the uploads send.
    #[test]
    fn the_probe_writes_with_the_headers_the_job_gives_the_uploads() {
        use crate::api::{CrossAccount, ServerSideEncryption, SseAlgorithm, StorageClass};
        use crate::checksum::ChecksumAlgorithm;
        use crate::upload::headers::WriteHeaders;
        use crate::validate::tests::{delivery, destination, pvc, secret};
        for cross in [false, true] {
            let mut dest = destination(true);
            let upload = dest.spec.upload.as_mut().unwrap();
            upload.storage_class = Some(StorageClass::StandardIa);
            upload.server_side_encryption = Some(ServerSideEncryption {
                algorithm: SseAlgorithm::AwsKms,
                kms_key_id: Some("alias/acme".into()),
            });
            upload.checksum_algorithm = Some(ChecksumAlgorithm::Crc32C);
            if cross {
                dest.spec.credentials.secret = None;
                dest.spec.credentials.cross_account = Some(CrossAccount::default());
            }
            let keys = secret(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
            let v = crate::validate::validate(
                &delivery(),
                Some(&dest),
                Some(&keys[..]),
                Some(&pvc()),
                None,
            )
            .unwrap();
            let env = crate::job::upload_env(&v, None);
            let var = |name: &str| {
                env.iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.value.as_deref())
            };
            let checksum = <ChecksumAlgorithm as clap::ValueEnum>::from_str(
                var("OUTBOUND_CHECKSUM_ALGORITHM").unwrap(),
                true,
            )
            .unwrap();
            let job = WriteHeaders::parse(
                var("OUTBOUND_ACL"),
                var("OUTBOUND_SSE"),
                var("OUTBOUND_SSE_KMS_KEY_ID"),
                var("OUTBOUND_STORAGE_CLASS"),
                checksum,
            )
            .unwrap();
            let probe = probe_target(&dest).write.headers().unwrap();
            assert_eq!(probe, job, "cross-account: {cross}");
            assert_eq!(
                probe.acl.as_ref().map(|a| a.as_str()),
                cross.then_some("bucket-owner-full-control"),
                "the owner's ACL by default in cross-account modes only"
            );
            assert_eq!(probe.checksum, ChecksumAlgorithm::Crc32C);
        }
    }
}
