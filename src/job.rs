//! Pure: a `ValidatedDelivery` -> the upload Job and the upload pods' ServiceAccount, Role and
//! RoleBinding. No client here; the controller applies what these return.

use crate::api::{CONTROLLER_MANAGER, DELIVERY_LABEL, GROUP, OutboundDelivery};
use crate::controller::validate::{JobCredentials, ValidatedDelivery};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
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
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The environment of the uploader (see docs/design/job-contract.md): plain values and
/// `secretKeyRef`s, never a secret value.
pub fn upload_env(v: &ValidatedDelivery) -> Vec<EnvVar> {
    let source = if v.source_path.is_empty() {
        SOURCE_MOUNT.to_string()
    } else {
        format!("{SOURCE_MOUNT}/{}", v.source_path)
    };
    let mut envs = vec![
        env("OUTBOUND_BUCKET", &v.bucket),
        env("OUTBOUND_REGION", &v.region),
    ];
    if let Some(endpoint) = &v.endpoint {
        envs.push(env("OUTBOUND_ENDPOINT", endpoint));
    }
    envs.push(env(
        "OUTBOUND_FORCE_PATH_STYLE",
        v.force_path_style.to_string(),
    ));
    envs.push(env("OUTBOUND_PREFIX", &v.prefix));
    envs.push(env("OUTBOUND_SOURCE", source));
    if !v.include.is_empty() {
        envs.push(env("OUTBOUND_INCLUDE", v.include.join(",")));
    }
    if !v.exclude.is_empty() {
        envs.push(env("OUTBOUND_EXCLUDE", v.exclude.join(",")));
    }
    envs.push(env("OUTBOUND_SPLIT_SIZE", v.split_size.to_string()));
    envs.push(env("OUTBOUND_SPLIT_ON", v.split_on.as_str()));
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
        v.checksum_algorithm.as_str(),
    ));
    if let Some(acl) = &v.acl {
        envs.push(env("OUTBOUND_ACL", acl));
    }
    envs.push(env("OUTBOUND_MANIFEST", v.manifest.to_string()));
    envs.push(env(
        "OUTBOUND_DELIVERY",
        format!("{}/{}", v.namespace, v.name),
    ));
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
    envs
}

/// The upload Job: one per delivery, Indexed when parallelism > 1.
pub fn build_job(v: &ValidatedDelivery, image: &str) -> Job {
    let indexed = v.parallelism > 1;
    let container = Container {
        name: "upload".into(),
        image: Some(image.to_string()),
        // No `command`: the image's entrypoint is the outbound binary itself.
        args: Some(vec!["upload".into()]),
        env: Some(upload_env(v)),
        volume_mounts: Some(vec![VolumeMount {
            name: "source".into(),
            mount_path: SOURCE_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
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
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(v.service_account.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "source".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    Job {
        metadata: meta(v, &v.job_name),
        spec: Some(JobSpec {
            parallelism: Some(v.parallelism),
            completions: Some(v.parallelism),
            completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
            backoff_limit: Some(v.backoff_limit),
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

/// The per-delivery ServiceAccount of the upload pods.
pub fn build_service_account(v: &ValidatedDelivery) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(v, &v.service_account),
        ..ServiceAccount::default()
    }
}

/// A Role that lets the upload pods read their own delivery and patch its status, nothing else.
pub fn build_role(v: &ValidatedDelivery) -> Role {
    let plural = <OutboundDelivery as kube::Resource>::plural(&()).to_string();
    Role {
        metadata: meta(v, &v.job_name),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![GROUP.into()]),
                resources: Some(vec![plural.clone()]),
                resource_names: Some(vec![v.name.clone()]),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec![GROUP.into()]),
                resources: Some(vec![format!("{plural}/status")]),
                resource_names: Some(vec![v.name.clone()]),
                verbs: vec!["get".into(), "patch".into()],
                ..PolicyRule::default()
            },
        ]),
    }
}

/// Binds the Role to the upload pods' service account.
pub fn build_role_binding(v: &ValidatedDelivery) -> RoleBinding {
    RoleBinding {
        metadata: meta(v, &v.job_name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: v.job_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: v.service_account.clone(),
            namespace: Some(v.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
