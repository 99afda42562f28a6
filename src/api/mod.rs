//! The CRD types (OutboundDestination, OutboundDelivery, the pods' OutboundShard and the admin's
//! OutboundTenancy), conditions and constants.

mod delivery;
mod destination;
mod policy;
mod quantity;
mod schedule;
mod tenancy;

pub use crate::shard::{JOB_LABEL, OutboundShard, SHARD_FINALIZER, ShardSpec, shard_name};
pub use delivery::*;
pub use destination::*;
pub use policy::{
    JOB_NAME_PREFIX, MAX_JOB_NAME, SPLIT_SIZE_POLICY, TENANCY_POLICY, UPLOAD_PODS_POLICY,
    UPLOAD_SERVICE_ACCOUNT, policies, split_size_policy, tenancy_policy, upload_pods_policy,
};
pub use quantity::SplitSize;
pub use schedule::*;
pub use tenancy::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of the resources.
pub const GROUP: &str = "outbound.dev";
/// The field manager of every write the controller makes (server-side apply).
pub const CONTROLLER_MANAGER: &str = "outbound-controller";
/// The finalizer that aborts a deleted delivery's open multipart uploads.
pub const DELIVERY_FINALIZER: &str = "outbound.dev/abort-uploads";
/// Label set on every object the controller creates for a delivery.
pub const DELIVERY_LABEL: &str = "outbound.dev/delivery";
/// The default secret key holding the access key id.
pub const DEFAULT_ACCESS_KEY_ID_KEY: &str = "AWS_ACCESS_KEY_ID";
/// The default secret key holding the secret access key.
pub const DEFAULT_SECRET_ACCESS_KEY_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// CEL rules shared by the key prefixes (`s3.prefix`, `keyPrefix`): a prefix starts every object
/// key in the customer's bucket, so it holds no control characters, no `.` or `..` segment (tools
/// that map keys to paths would climb out), no empty segment and at most 512 bytes (S3 keys are at
/// most 1024 bytes, and the file names need room too).
pub(crate) mod prefix_rule {
    pub const NO_CONTROL: &str = "!self.matches('[[:cntrl:]]')";
    pub const NO_CONTROL_MESSAGE: &str = "must not contain control characters";
    pub const NO_DOT_SEGMENT: &str = "!self.matches('(^|/)[.][.]?(/|$)')";
    pub const NO_DOT_SEGMENT_MESSAGE: &str = "must not contain . or .. segments";
    pub const NO_EMPTY_SEGMENT: &str = "!self.contains('//')";
    pub const NO_EMPTY_SEGMENT_MESSAGE: &str = "must not contain an empty segment (//)";
    /// `maxLength` counts characters; keys are limited in bytes.
    pub const MAX_BYTES: &str = "size(bytes(self)) <= 512";
    pub const MAX_BYTES_MESSAGE: &str = "must be at most 512 bytes";
}

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    pub const PROGRESSING: &str = "Progressing";
    /// kstatus' abnormal-true conditions: still working, and stuck.
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// The CustomResourceDefinitions, destination first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        OutboundDestination::crd(),
        OutboundDelivery::crd(),
        OutboundShard::crd(),
        OutboundSchedule::crd(),
        OutboundTenancy::crd(),
    ]
}

/// All CustomResourceDefinitions, then the admission policies that go with them, as one
/// multi-document YAML stream.
pub fn crds_yaml() -> String {
    let mut docs: Vec<String> = crds().iter().map(crd_yaml).collect();
    for (policy, binding) in policies() {
        docs.push(serde_yaml::to_string(&policy).expect("a policy always serializes"));
        docs.push(serde_yaml::to_string(&binding).expect("a binding always serializes"));
    }
    docs.join("---\n")
}

/// One CustomResourceDefinition as YAML (what `crds/<plural>.yaml` holds).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must hold exactly what `outbound crd` prints; regenerate with `make crds`.
    #[test]
    fn checked_in_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in crds() {
            let file = dir.join(format!("{}.yaml", crd.metadata.name.as_deref().unwrap()));
            let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                checked_in == crd_yaml(&crd),
                "{} is stale: run `make crds` (cargo run -- crd) and commit it",
                file.display()
            );
        }
    }

    #[test]
    fn every_schema_property_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let here = format!("{path}.{name}");
                    if sub.get("description").is_none()
                        && !["metadata", "apiVersion", "kind"].contains(&name.as_str())
                    {
                        missing.push(here.clone());
                    }
                    walk(&here, sub, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
            if let Some(add) = schema.get("additionalProperties") {
                walk(&format!("{path}{{}}"), add, missing);
            }
        }
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut missing = Vec::new();
            walk("", &schema["openAPIV3Schema"], &mut missing);
            // Conditions come from Kubernetes' own documented type.
            missing.retain(|p| !p.contains(".conditions[]"));
            assert!(
                missing.is_empty(),
                "{}: undocumented fields {missing:?}",
                crd.spec.names.kind
            );
        }
    }
}
