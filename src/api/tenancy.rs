//! `OutboundTenancy`: the cluster admin's grants of buckets, roles and endpoints to namespaces
//! in the cross-account modes (one cluster-scoped object, named `default`).

// kube's printcolumn(...) repeats `type_ = ...` inside one attribute, which clippy misreads.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The one tenancy object the admission policy and the operator read. Another name is refused:
/// a policy can read one named param only (with several, every one would have to pass).
pub const TENANCY_NAME: &str = "default";

/// Which namespaces may point the operator's own identity at which buckets, roles and endpoints.
///
/// In a namespace these grants govern (`namespaces`), a destination in a cross-account mode
/// (`credentials.crossAccount`, with or without `roleArn`) is admitted only when one grant that
/// names the namespace allows its bucket, its role and every endpoint it names; the operator
/// checks the same before it probes or starts a Job. Without this object (or outside
/// `namespaces`) nothing is restricted: a single team's cluster. Destinations with the team's own
/// keys (`credentials.secret`) are not restricted by grants: those keys reach only what the
/// customer granted them, with or without the operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbound.dev",
    version = "v1alpha1",
    kind = "OutboundTenancy",
    plural = "outboundtenancies",
    shortname = "otenancy",
    category = "outbound",
    doc = "Grants of buckets, roles and endpoints to namespaces in the cross-account modes.",
    validation = Rule::new("self.metadata.name == 'default'").message("the OutboundTenancy must be named default: the admission policy and the operator read that one only"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTenancySpec {
    /// The namespaces these grants govern, by name; a trailing `*` matches any rest
    /// (`team-*`, or `*` for every namespace, the default). In a governed namespace a
    /// cross-account destination needs a grant; a namespace outside keeps the single-team
    /// behaviour (no restriction), e.g. the provider's own pipeline namespace.
    #[serde(default = "every_namespace")]
    pub namespaces: Vec<String>,
    /// The grants. A destination is admitted when one grant naming its namespace allows its
    /// bucket, its role (if any) and each endpoint it names. A governed namespace that no grant
    /// names may create no cross-account destination.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

fn every_namespace() -> Vec<String> {
    vec!["*".into()]
}

/// What a set of namespaces may use. Every entry is a name, or a prefix ending in `*`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// Namespaces this grant is for (`team-a`, `team-a-*`).
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// Buckets their destinations may write to (`acme-inbound`, `acme-*`).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Roles their destinations may assume (`arn:aws:iam::111122223333:role/outbound`,
    /// `arn:aws:iam::111122223333:role/*`). A destination with `roleArn` needs the role here as
    /// well as the bucket in `buckets`; empty: no role may be assumed (the allowlist mode only).
    #[serde(default)]
    pub role_arns: Vec<String>,
    /// Buckets of the provider's that their deliveries may read with the operator's workload
    /// identity (`source.s3` without a Secret; `exports`, `exports-*`). A delivery reading with
    /// its own keys needs no entry. Endpoints named by such a source need an entry in
    /// `endpoints`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_buckets: Vec<String>,
    /// S3-compatible servers and STS endpoints their destinations may name in `s3.endpoint` and
    /// `s3.stsEndpoint` (`https://minio.storage.svc:9000`), compared as written. A destination
    /// naming no endpoint uses AWS and needs no entry here.
    #[serde(default)]
    pub endpoints: Vec<String>,
}
