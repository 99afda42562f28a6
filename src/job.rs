//! Pure: a `ValidatedDelivery` -> the upload Job; a namespace -> the upload pods' shared
//! ServiceAccount, Role and RoleBinding. No client here; the controller applies what these return.

use crate::api::{CONTROLLER_MANAGER, DELIVERY_LABEL, GROUP, OutboundShard};
use crate::upload::error::EXIT_PERMANENT;
use crate::validate::{JobCredentials, JobSource, ValidatedDelivery};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Where the source claim is mounted in the upload pods.
pub const SOURCE_MOUNT: &str = "/source";

/// The default uploader image: this very binary, same version.
pub fn default_image() -> String {
    format!(
        "ghcr.io/outbound-dev/outbound:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The owner reference that ties a child to its delivery (garbage-collected with it).
pub fn owner_reference(v: &ValidatedDelivery) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/v1alpha1"),
        kind: "OutboundDelivery".into(),
        name: v.name.clone(),
        uid: v.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn labels(v: &ValidatedDelivery) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DELIVERY_LABEL.to_string(), v.name.clone()),
        ("app.kubernetes.io/name".into(), "outbound".into()),
        ("app.kubernetes.io/component".into(), "uploader".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            CONTROLLER_MANAGER.into(),
        ),
    ])
}

fn meta(v: &ValidatedDelivery, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(v)),
        owner_references: Some(vec![owner_reference(v)]),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    optional_secret_env(name, secret, key, false)
}

fn optional_secret_env(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// What every upload Job of this operator shares, from `outbound run`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct JobSettings<'a> {
    pub image: &'a str,
    /// How long a finished Job is kept.
    pub ttl: std::time::Duration,
    /// The Secret whose AWS keys are the upload pods' own identity in the cross-account modes
    /// (`--workload-identity-secret`), where no IRSA, Pod Identity or instance profile gives one.
    pub workload_identity_secret: Option<&'a str>,
    /// The pods' `fsGroup` (`--upload-fs-group`).
    pub fs_group: Option<i64>,
    /// The container's resources (`--upload-resources`).
    pub resources: Option<&'a ResourceRequirements>,
}

/// The environment of the uploader (see docs/design/job-contract.md): plain values and
/// `secretKeyRef`s, never a secret value.
pub fn upload_env(v: &ValidatedDelivery, workload_secret: Option<&str>) -> Vec<EnvVar> {
    let mut envs = vec![
        env("OUTBOUND_BUCKET", &v.bucket),
        env("OUTBOUND_REGION", &v.region),
    ];
    if let Some(endpoint) = &v.endpoint {
        envs.push(env("OUTBOUND_ENDPOINT", endpoint));
    }
    if let Some(endpoint) = &v.sts_endpoint {
        envs.push(env("OUTBOUND_STS_ENDPOINT", endpoint));
    }
    if let Some(owner) = &v.expected_bucket_owner {
        envs.push(env("OUTBOUND_EXPECTED_BUCKET_OWNER", owner));
    }
    if let Some(bundle) = &v.ca_bundle {
        envs.push(env("OUTBOUND_CA_BUNDLE", bundle));
    }
    envs.push(env(
        "OUTBOUND_FORCE_PATH_STYLE",
        v.force_path_style.to_string(),
    ));
    envs.push(env("OUTBOUND_PREFIX", &v.prefix));
    source_env(&mut envs, &v.source, workload_secret);
    if !v.include.is_empty() {
        envs.push(env("OUTBOUND_INCLUDE", v.include.join(",")));
    }
    if !v.exclude.is_empty() {
        envs.push(env("OUTBOUND_EXCLUDE", v.exclude.join(",")));
    }
    envs.push(env("OUTBOUND_SPLIT_SIZE", v.split_size.to_string()));
    envs.push(env("OUTBOUND_SPLIT_ON", v.split_on.as_str()));
    if let Some(level) = v.compress_level {
        envs.push(env("OUTBOUND_COMPRESS", "gzip"));
        envs.push(env("OUTBOUND_COMPRESS_LEVEL", level.to_string()));
    }
    if let Some(class) = &v.storage_class {
        envs.push(env("OUTBOUND_STORAGE_CLASS", class));
    }
    if let Some(sse) = &v.sse {
        envs.push(env("OUTBOUND_SSE", sse));
    }
    if let Some(key) = &v.sse_kms_key_id {
        envs.push(env("OUTBOUND_SSE_KMS_KEY_ID", key));
    }
    envs.push(env(
        "OUTBOUND_CHECKSUM_ALGORITHM",
        v.checksum_algorithm.name(),
    ));
    if let Some(acl) = &v.acl {
        envs.push(env("OUTBOUND_ACL", acl));
    }
    envs.push(env("OUTBOUND_MANIFEST", v.manifest.to_string()));
    if v.manifest {
        envs.push(env("OUTBOUND_MANIFEST_NAME", &v.manifest_name));
    }
    if let Some(template) = &v.name_template {
        envs.push(env("OUTBOUND_NAME_TEMPLATE", template));
    }
    if let Some(after) = v.changed_after {
        envs.push(env("OUTBOUND_CHANGED_AFTER", after.to_string()));
    }
    if let Some(before) = v.changed_before {
        envs.push(env("OUTBOUND_CHANGED_BEFORE", before.to_string()));
    }
    envs.push(env(
        "OUTBOUND_DELIVERY",
        format!("{}/{}", v.namespace, v.name),
    ));
    envs.push(env("OUTBOUND_DELIVERY_UID", &v.uid));
    envs.push(env("OUTBOUND_SHARD_COUNT", v.parallelism.to_string()));
    envs.push(env("OUTBOUND_LOG_FORMAT", "json"));
    match &v.credentials {
        JobCredentials::Keys {
            secret_name,
            access_key_id_key,
            secret_access_key_key,
            session_token_key,
        } => {
            envs.push(env("OUTBOUND_CREDENTIALS", "keys"));
            envs.push(secret_env(
                "AWS_ACCESS_KEY_ID",
                secret_name,
                access_key_id_key,
            ));
            envs.push(secret_env(
                "AWS_SECRET_ACCESS_KEY",
                secret_name,
                secret_access_key_key,
            ));
            if let Some(key) = session_token_key {
                envs.push(secret_env("AWS_SESSION_TOKEN", secret_name, key));
            }
        }
        JobCredentials::Workload => envs.push(env("OUTBOUND_CREDENTIALS", "workload")),
        JobCredentials::AssumeRole {
            role_arn,
            external_id,
        } => {
            envs.push(env("OUTBOUND_CREDENTIALS", "assume-role"));
            envs.push(env("OUTBOUND_ROLE_ARN", role_arn));
            envs.push(env("OUTBOUND_EXTERNAL_ID", external_id));
        }
    }
    // Our own identity as keys, only where no workload identity mechanism gives pods one. Three
    // named keys, not `envFrom`: whoever writes that Secret sets nothing else in the pod.
    if let (Some(secret), JobCredentials::Workload | JobCredentials::AssumeRole { .. }) =
        (workload_secret, &v.credentials)
    {
        envs.push(secret_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"));
        envs.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            "AWS_SECRET_ACCESS_KEY",
        ));
        envs.push(optional_secret_env(
            "AWS_SESSION_TOKEN",
            secret,
            "AWS_SESSION_TOKEN",
            true,
        ));
    }
    envs
}

/// Where the uploader reads: the claim's mount (and the folder in it), or the provider's bucket
/// with the provider's keys under names of their own (`OUTBOUND_SOURCE_AWS_*`, which the
/// destination's never use). Without a Secret the operator's identity reads: the admin's
/// workload-identity Secret when one is configured, else the pod's workload identity.
fn source_env(envs: &mut Vec<EnvVar>, source: &JobSource, workload_secret: Option<&str>) {
    match source {
        JobSource::Volume { path, .. } if path.is_empty() => {
            envs.push(env("OUTBOUND_SOURCE", SOURCE_MOUNT));
        }
        JobSource::Volume { path, .. } => {
            envs.push(env("OUTBOUND_SOURCE", format!("{SOURCE_MOUNT}/{path}")));
        }
        JobSource::Bucket {
            bucket,
            prefix,
            region,
            endpoint,
            force_path_style,
            ca_bundle,
            keys,
            copy,
        } => {
            envs.push(env("OUTBOUND_SOURCE_S3", format!("s3://{bucket}/{prefix}")));
            envs.push(env("OUTBOUND_SOURCE_REGION", region));
            if let Some(endpoint) = endpoint {
                envs.push(env("OUTBOUND_SOURCE_ENDPOINT", endpoint));
            }
            envs.push(env(
                "OUTBOUND_SOURCE_FORCE_PATH_STYLE",
                force_path_style.to_string(),
            ));
            if let Some(bundle) = ca_bundle {
                envs.push(env("OUTBOUND_SOURCE_CA_BUNDLE", bundle));
            }
            let [access, secret_access, session] = crate::upload::source::SOURCE_KEY_ENV;
            match (keys, workload_secret) {
                (Some(keys), _) => {
                    envs.push(secret_env(access, &keys.name, &keys.access_key_id_key));
                    envs.push(secret_env(
                        secret_access,
                        &keys.name,
                        &keys.secret_access_key_key,
                    ));
                    if let Some(key) = &keys.session_token_key {
                        envs.push(secret_env(session, &keys.name, key));
                    }
                }
                (None, Some(secret)) => {
                    envs.push(secret_env(access, secret, "AWS_ACCESS_KEY_ID"));
                    envs.push(secret_env(secret_access, secret, "AWS_SECRET_ACCESS_KEY"));
                    envs.push(optional_secret_env(
                        session,
                        secret,
                        "AWS_SESSION_TOKEN",
                        true,
                    ));
                }
                (None, None) => {}
            }
            if *copy {
                envs.push(env("OUTBOUND_COPY", "server"));
            }
        }
    }
}

/// The pod failure policy: an uploader that exits `EXIT_PERMANENT` (access denied, a line too
/// long, a conflicting object ...) fails the Job at once instead of burning its retries on an
/// error that cannot heal; a pod disrupted by a drain or an eviction costs no retry either.
fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some("upload".into()),
                    operator: "In".into(),
                    values: vec![i32::from(EXIT_PERMANENT)],
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
            },
        ],
    }
}

/// The upload Job: one per delivery, Indexed (one pod per shard, named `<job>-<index>-<5 chars>`,
/// which is how the upload-pods policy tells which OutboundShard a pod may write), even with a
/// single shard. Finished Jobs go after `ttl`.
pub fn build_job(v: &ValidatedDelivery, settings: &JobSettings) -> Job {
    let claim = match &v.source {
        JobSource::Volume { claim_name, .. } => Some(claim_name.as_str()),
        JobSource::Bucket { .. } => None,
    };
    let container = Container {
        name: "upload".into(),
        image: Some(settings.image.to_string()),
        // No `command`: the image's entrypoint is the outbound binary itself.
        args: Some(vec!["upload".into()]),
        env: Some(upload_env(v, settings.workload_identity_secret)),
        volume_mounts: claim.map(|_| {
            vec![VolumeMount {
                name: "source".into(),
                mount_path: SOURCE_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: settings.resources.cloned(),
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(v.service_account.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: settings.fs_group,
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: claim.map(|claim_name| {
            vec![Volume {
                name: "source".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name.to_string(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }]
        }),
        ..PodSpec::default()
    };
    Job {
        metadata: meta(v, &v.job_name),
        spec: Some(JobSpec {
            parallelism: Some(v.parallelism),
            completions: Some(v.parallelism),
            completion_mode: Some("Indexed".into()),
            backoff_limit: Some(v.backoff_limit),
            pod_failure_policy: Some(pod_failure_policy()),
            // A replacement starts only once its predecessor is gone: one index never uploads
            // from two pods at once.
            pod_replacement_policy: Some("Failed".into()),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.ttl.as_secs()).unwrap_or(i32::MAX),
            ),
            active_deadline_seconds: v.active_deadline_seconds,
            suspend: Some(v.suspend),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(v)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Name of the upload pods' Role, and of the RoleBinding for the default ServiceAccount.
pub const UPLOAD_ROLE: &str = "outbound-upload";

/// Labels of the per-namespace objects the upload pods share (no delivery, no owner: they outlive
/// any one delivery).
fn shared_meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".into(), "outbound".into()),
            ("app.kubernetes.io/component".into(), "uploader".into()),
            (
                "app.kubernetes.io/managed-by".into(),
                CONTROLLER_MANAGER.into(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// The upload pods' ServiceAccount in a namespace (`UPLOAD_SERVICE_ACCOUNT`).
pub fn build_service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: shared_meta(namespace, crate::api::UPLOAD_SERVICE_ACCOUNT),
        ..ServiceAccount::default()
    }
}

/// The upload pods' Role in a namespace: read, create and report on OutboundShards, nothing
/// else (no delivery, no Secret). RBAC cannot say "only your own shard" without a Role per
/// delivery (two writes each, whose escalation checks grow with the namespace's RoleBindings);
/// the upload-pods admission policy (`crate::api::upload_pods_policy`) lets a pod write only
/// the shard object of its own Job index.
pub fn build_role(namespace: &str) -> Role {
    let plural = <OutboundShard as kube::Resource>::plural(&()).to_string();
    Role {
        metadata: shared_meta(namespace, UPLOAD_ROLE),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![GROUP.into()]),
                resources: Some(vec![plural.clone()]),
                // get: resume; list: shard 0 waits for the others and reads their line counts;
                // create and patch: the first report creates the object (server-side apply, which
                // the API server authorizes as a create too).
                verbs: vec!["get".into(), "list".into(), "create".into(), "patch".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec![GROUP.into()]),
                resources: Some(vec![format!("{plural}/status")]),
                verbs: vec!["patch".into()],
                ..PolicyRule::default()
            },
        ]),
    }
}

/// The RoleBinding that gives `service_account` the upload Role: `outbound-upload` for the
/// default account, `outbound-upload-<account>` for one a destination names.
pub fn role_binding_name(service_account: &str) -> String {
    if service_account == crate::api::UPLOAD_SERVICE_ACCOUNT {
        UPLOAD_ROLE.to_string()
    } else {
        // Object names may have 253 characters, account names too: cut, the account stays in
        // the subject.
        format!("{UPLOAD_ROLE}-{service_account}")
            .chars()
            .take(253)
            .collect()
    }
}

/// Binds the upload Role to one service account of the namespace.
pub fn build_role_binding(namespace: &str, service_account: &str) -> RoleBinding {
    RoleBinding {
        metadata: shared_meta(namespace, &role_binding_name(service_account)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: UPLOAD_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.to_string(),
            namespace: Some(namespace.to_string()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::{delivery, destination, pvc, secret};
    use crate::validate::validate;

    fn validated(parallelism: i32) -> ValidatedDelivery {
        let mut d = delivery();
        d.spec.parallelism = parallelism;
        let keys = secret(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        validate(
            &d,
            Some(&destination(true)),
            Some(&keys[..]),
            Some(&pvc()),
            None,
        )
        .unwrap()
    }

    fn env_of(job: &Job) -> Vec<EnvVar> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn job_follows_the_contract() {
        let v = validated(1);
        let job = build_job(&v, &settings("ghcr.io/outbound-dev/outbound:0.1.0"));
        assert_eq!(job.metadata.name.as_deref(), Some(v.job_name.as_str()));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("OutboundDelivery", "0f3c-uid", Some(true))
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(spec.backoff_limit, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(crate::api::UPLOAD_SERVICE_ACCOUNT)
        );
        let c = &pod.containers[0];
        assert_eq!(c.command, None, "the image's entrypoint runs");
        assert_eq!(c.args.as_deref(), Some(&["upload".to_string()][..]));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(
            vol.persistent_volume_claim.as_ref().unwrap().read_only,
            Some(true)
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        let env = env_of(&job);
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get("OUTBOUND_BUCKET").as_deref(), Some("acme-inbound"));
        assert_eq!(
            get("OUTBOUND_PREFIX").as_deref(),
            Some("audience/2026-11-27/")
        );
        assert_eq!(
            get("OUTBOUND_SOURCE").as_deref(),
            Some("/source/2026-11-27")
        );
        assert_eq!(get("OUTBOUND_INCLUDE").as_deref(), Some("*.sync,*.sync.gz"));
        assert_eq!(get("OUTBOUND_SPLIT_SIZE").as_deref(), Some("536870912"));
        assert_eq!(
            get("OUTBOUND_DELIVERY").as_deref(),
            Some("deliveries/segments-2026-11-27")
        );
        assert_eq!(get("OUTBOUND_SHARD_COUNT").as_deref(), Some("1"));
        assert_eq!(get("OUTBOUND_CREDENTIALS").as_deref(), Some("keys"));
    }

    fn settings(image: &str) -> JobSettings<'_> {
        JobSettings {
            image,
            ttl: std::time::Duration::from_secs(3600),
            workload_identity_secret: None,
            fs_group: None,
            resources: None,
        }
    }

    #[test]
    fn the_upload_pod_settings_reach_the_pod() {
        let resources: ResourceRequirements =
            serde_json::from_str(r#"{"limits":{"memory":"128Mi"}}"#).unwrap();
        let job = build_job(
            &validated(1),
            &JobSettings {
                fs_group: Some(4242),
                resources: Some(&resources),
                ..settings("img")
            },
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().fs_group, Some(4242));
        assert_eq!(pod.containers[0].resources.as_ref(), Some(&resources));
        // None by default: the pods keep the namespace's defaults.
        let pod = build_job(&validated(1), &settings("img"))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.security_context.unwrap().fs_group, None);
        assert_eq!(pod.containers[0].resources, None);
    }

    #[test]
    fn permanent_exits_fail_the_job_at_once_and_one_index_runs_in_one_pod() {
        let job = build_job(&validated(2), &settings("img"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let rules = spec.pod_failure_policy.unwrap().rules;
        let fail = &rules[0];
        assert_eq!(fail.action, "FailJob");
        let codes = fail.on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.container_name.as_deref(), Some("upload"));
        assert_eq!(codes.values, vec![i32::from(EXIT_PERMANENT)]);
        assert!(
            !codes
                .values
                .contains(&i32::from(crate::upload::error::EXIT_RETRYABLE))
        );
        assert_eq!(rules[1].action, "Ignore");
        let container = &spec.template.spec.unwrap().containers[0];
        assert_eq!(container.name, "upload", "the rule names this container");
    }

    #[test]
    fn keys_reach_the_pod_only_by_reference() {
        let job = build_job(&validated(1), &settings("img"));
        for e in env_of(&job).iter().filter(|e| e.name.starts_with("AWS_")) {
            assert_eq!(e.value, None, "{} must not carry a value", e.name);
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(r.name, "acme-keys");
        }
        let names: Vec<_> = env_of(&job).into_iter().map(|e| e.name).collect();
        assert!(
            names.contains(&"AWS_ACCESS_KEY_ID".to_string())
                && names.contains(&"AWS_SECRET_ACCESS_KEY".to_string())
        );
    }

    #[test]
    fn parallel_deliveries_are_indexed_jobs() {
        let job = build_job(&validated(4), &settings("img"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((spec.parallelism, spec.completions), (Some(4), Some(4)));
    }

    #[test]
    fn the_job_is_a_pure_function_of_the_delivery() {
        assert_eq!(
            build_job(&validated(2), &settings("img")),
            build_job(&validated(2), &settings("img"))
        );
        assert!(default_image().starts_with("ghcr.io/outbound-dev/outbound:"));
    }

    #[test]
    fn the_shared_role_touches_shards_only_and_never_deletes() {
        let role = build_role("team");
        for rule in role.rules.unwrap() {
            assert_eq!(rule.api_groups.as_deref(), Some(&[GROUP.to_string()][..]));
            assert!(
                rule.resources
                    .iter()
                    .flatten()
                    .all(|r| r == "outboundshards" || r == "outboundshards/status"),
                "{:?}",
                rule.resources
            );
            assert!(
                rule.verbs
                    .iter()
                    .all(|verb| ["get", "list", "create", "patch"].contains(&verb.as_str())),
                "{:?}",
                rule.verbs
            );
        }
        assert!(
            role.metadata.owner_references.is_none(),
            "shared: no one delivery owns it"
        );
        let binding = build_role_binding("team", "outbound-upload");
        assert_eq!(binding.metadata.name.as_deref(), Some("outbound-upload"));
        assert_eq!(binding.role_ref.name, UPLOAD_ROLE);
        let named = build_role_binding("team", "irsa");
        assert_eq!(named.metadata.name.as_deref(), Some("outbound-upload-irsa"));
        let subject = &named.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("irsa", Some("team"))
        );
        assert_eq!(role_binding_name(&"a".repeat(253)).len(), 253);
    }

    #[test]
    fn role_jobs_carry_the_sts_endpoint_and_the_admins_identity_secret() {
        let mut v = validated(1);
        v.sts_endpoint = Some("https://sts.internal:8443".into());
        v.expected_bucket_owner = Some("111122223333".into());
        v.credentials = JobCredentials::AssumeRole {
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            external_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let envs = upload_env(&v, Some("outbound-identity"));
        let value = |name: &str| {
            envs.iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .clone()
        };
        assert_eq!(
            value("OUTBOUND_STS_ENDPOINT").value.as_deref(),
            Some("https://sts.internal:8443")
        );
        assert_eq!(
            value("OUTBOUND_EXPECTED_BUCKET_OWNER").value.as_deref(),
            Some("111122223333")
        );
        assert_eq!(
            value("OUTBOUND_EXTERNAL_ID").value.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        for (name, optional) in [
            ("AWS_ACCESS_KEY_ID", false),
            ("AWS_SECRET_ACCESS_KEY", false),
            ("AWS_SESSION_TOKEN", true),
        ] {
            let var = value(name);
            assert_eq!(var.value, None, "never a value");
            let r = var.value_from.unwrap().secret_key_ref.unwrap();
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                ("outbound-identity", name)
            );
            assert_eq!(r.optional, Some(optional));
        }
        // Keys mode: the customer's Secret only, never the admin's identity.
        let keyed = upload_env(&validated(1), Some("outbound-identity"));
        assert!(!keyed.iter().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == "outbound-identity")
        }));
        assert!(!keyed.iter().any(|e| e.name == "OUTBOUND_STS_ENDPOINT"));
        // No Secret configured: the pods' own chain (IRSA, Pod Identity, instance profile).
        v.credentials = JobCredentials::Workload;
        assert!(
            !upload_env(&v, None)
                .iter()
                .any(|e| e.name.starts_with("AWS_"))
        );
    }
}
