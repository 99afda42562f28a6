//! Pure: whether the admin's tenancy grants let a namespace use a destination's bucket, role
//! and endpoints, and read a source bucket with the operator's identity. The operator's side of what the tenancy admission policy
//! (`api::tenancy_policy`) checks; both give the same refusal messages.

use crate::api::{BucketSource, Grant, OutboundDestinationSpec, OutboundTenancySpec};

/// The reason of a destination (and of its deliveries) refused by the grants.
pub const NOT_GRANTED: &str = "NotGranted";

/// Whether `pattern` (a name, or a prefix ending in `*`) matches `value`.
pub fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => value.starts_with(stem),
        None => pattern == value,
    }
}

fn any_match(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| matches(p, value))
}

/// Checks a destination of `namespace` against the tenancy (`None`: no tenancy object, nothing
/// restricted). Only the cross-account modes are restricted: with the team's own keys the
/// operator's identity is not involved. The error is the refusal message, which names the
/// namespace, the field and the value not granted.
pub fn check(
    tenancy: Option<&OutboundTenancySpec>,
    namespace: &str,
    spec: &OutboundDestinationSpec,
) -> Result<(), String> {
    let (Some(tenancy), Some(cross)) = (tenancy, spec.credentials.cross_account.as_ref()) else {
        return Ok(());
    };
    if !any_match(&tenancy.namespaces, namespace) {
        return Ok(());
    }
    let grants: Vec<&Grant> = tenancy
        .grants
        .iter()
        .filter(|g| any_match(&g.namespaces, namespace))
        .collect();
    if grants.is_empty() {
        return Err(format!(
            "namespace {namespace} has no grant for cross-account destinations \
             (OutboundTenancy default): ask the cluster admin to grant it the bucket, role and endpoint"
        ));
    }
    let bucket = &spec.s3.bucket;
    let with_bucket: Vec<&Grant> = grants
        .into_iter()
        .filter(|g| any_match(&g.buckets, bucket))
        .collect();
    if with_bucket.is_empty() {
        return Err(format!(
            "spec.s3.bucket {bucket} is not granted to namespace {namespace} (OutboundTenancy default)"
        ));
    }
    let with_role: Vec<&Grant> = match &cross.role_arn {
        Some(role) => with_bucket
            .into_iter()
            .filter(|g| any_match(&g.role_arns, role))
            .collect(),
        None => with_bucket,
    };
    if with_role.is_empty() {
        return Err(format!(
            "spec.credentials.crossAccount.roleArn {} is not granted to namespace {namespace} \
             with bucket {bucket} (OutboundTenancy default)",
            cross.role_arn.as_deref().unwrap_or_default()
        ));
    }
    let endpoints: Vec<(&str, &str)> = [
        ("spec.s3.endpoint", spec.s3.endpoint.as_deref()),
        ("spec.s3.stsEndpoint", spec.s3.sts_endpoint.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, url)| Some((field, url?)))
    .collect();
    if with_role.iter().any(|g| {
        endpoints
            .iter()
            .all(|(_, url)| any_match(&g.endpoints, url))
    }) {
        return Ok(());
    }
    // Name the first endpoint no remaining grant allows; else each is allowed, but not together.
    match endpoints
        .iter()
        .find(|(_, url)| !with_role.iter().any(|g| any_match(&g.endpoints, url)))
    {
        Some((field, url)) => Err(format!(
            "{field} {url} is not granted to namespace {namespace} with bucket {bucket} \
             (OutboundTenancy default)"
        )),
        None => Err(format!(
            "spec.s3.endpoint and spec.s3.stsEndpoint are not granted together to namespace \
             {namespace} with bucket {bucket} (OutboundTenancy default)"
        )),
    }
}

/// Checks a delivery's bucket source against the tenancy: read with the operator's workload
/// identity (no Secret), its bucket must be in a grant's `sourceBuckets` and its endpoint in the
/// same grant's `endpoints`; read with the team's own keys it is not restricted. The error names
/// the field and the value not granted.
pub fn check_source(
    tenancy: Option<&OutboundTenancySpec>,
    namespace: &str,
    source: &BucketSource,
) -> Result<(), String> {
    let Some(tenancy) = tenancy else {
        return Ok(());
    };
    if source.secret.is_some() || !any_match(&tenancy.namespaces, namespace) {
        return Ok(());
    }
    let bucket = &source.bucket;
    let with_bucket: Vec<&Grant> = tenancy
        .grants
        .iter()
        .filter(|g| any_match(&g.namespaces, namespace) && any_match(&g.source_buckets, bucket))
        .collect();
    if with_bucket.is_empty() {
        return Err(format!(
            "spec.source.s3.bucket {bucket} is not granted to namespace {namespace} as a source \
             read with the operator's identity (OutboundTenancy default, sourceBuckets): ask the \
             cluster admin, or read it with your own keys (spec.source.s3.secret)"
        ));
    }
    match &source.endpoint {
        Some(url) if !with_bucket.iter().any(|g| any_match(&g.endpoints, url)) => Err(format!(
            "spec.source.s3.endpoint {url} is not granted to namespace {namespace} with source \
             bucket {bucket} (OutboundTenancy default)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenancy(yaml: &str) -> OutboundTenancySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn dest(yaml: &str) -> OutboundDestinationSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TEAMS: &str = r#"
namespaces: [team-*]
grants:
  - namespaces: [team-a, team-a-*]
    buckets: [acme-inbound, acme-*]
    roleArns: ["arn:aws:iam::111122223333:role/*"]
    endpoints: ["https://minio.storage.svc:9000"]
  - namespaces: [team-b]
    buckets: [globex-inbound]
"#;

    #[test]
    fn a_trailing_star_matches_any_rest_and_nothing_else_is_special() {
        assert!(matches("acme-*", "acme-inbound"));
        assert!(matches("acme-*", "acme-"));
        assert!(matches("*", "anything"));
        assert!(matches("acme", "acme"));
        assert!(!matches("acme", "acme-inbound"));
        assert!(!matches("acme-*", "acm"));
        assert!(
            !matches("*-inbound", "acme-inbound"),
            "only a trailing star"
        );
        assert!(!matches("acme-?", "acme-1"));
    }

    #[test]
    fn no_tenancy_and_secret_keys_are_not_restricted() {
        let anywhere = dest(
            "{s3: {bucket: anything, endpoint: 'https://x'}, credentials: {crossAccount: {}}}",
        );
        assert_eq!(check(None, "team-b", &anywhere), Ok(()));
        let keys = dest("{s3: {bucket: anything}, credentials: {secret: {name: k}}}");
        assert_eq!(check(Some(&tenancy(TEAMS)), "team-b", &keys), Ok(()));
    }

    #[test]
    fn namespaces_outside_the_governed_ones_keep_the_single_team_behaviour() {
        let d = dest("{s3: {bucket: anything}, credentials: {crossAccount: {}}}");
        assert_eq!(check(Some(&tenancy(TEAMS)), "pipeline", &d), Ok(()));
        // By default every namespace is governed.
        let all = tenancy("{grants: []}");
        assert_eq!(all.namespaces, ["*"]);
        let err = check(Some(&all), "pipeline", &d).unwrap_err();
        assert!(
            err.contains("namespace pipeline has no grant for cross-account destinations"),
            "{err}"
        );
    }

    #[test]
    fn a_governed_namespace_without_a_grant_gets_nothing() {
        let d = dest("{s3: {bucket: acme-inbound}, credentials: {crossAccount: {}}}");
        let err = check(Some(&tenancy(TEAMS)), "team-c", &d).unwrap_err();
        assert!(err.starts_with("namespace team-c has no grant"), "{err}");
    }

    #[test]
    fn the_bucket_must_be_granted_to_the_namespace() {
        let t = tenancy(TEAMS);
        let acme = dest("{s3: {bucket: acme-archive}, credentials: {crossAccount: {}}}");
        assert_eq!(check(Some(&t), "team-a", &acme), Ok(()));
        assert_eq!(check(Some(&t), "team-a-staging", &acme), Ok(()));
        let err = check(Some(&t), "team-b", &acme).unwrap_err();
        assert_eq!(
            err,
            "spec.s3.bucket acme-archive is not granted to namespace team-b (OutboundTenancy default)"
        );
        let globex = dest("{s3: {bucket: globex-inbound}, credentials: {crossAccount: {}}}");
        assert_eq!(check(Some(&t), "team-b", &globex), Ok(()));
        assert!(check(Some(&t), "team-a", &globex).is_err());
    }

    #[test]
    fn a_role_needs_a_grant_that_allows_it_with_the_bucket() {
        let t = tenancy(TEAMS);
        let role = |arn: &str, bucket: &str| {
            dest(&format!(
                "{{s3: {{bucket: {bucket}}}, credentials: {{crossAccount: {{roleArn: '{arn}'}}}}}}"
            ))
        };
        let granted = role("arn:aws:iam::111122223333:role/outbound", "acme-inbound");
        assert_eq!(check(Some(&t), "team-a", &granted), Ok(()));
        let other_account = role("arn:aws:iam::444455556666:role/outbound", "acme-inbound");
        let err = check(Some(&t), "team-a", &other_account).unwrap_err();
        assert_eq!(
            err,
            "spec.credentials.crossAccount.roleArn arn:aws:iam::444455556666:role/outbound is not \
             granted to namespace team-a with bucket acme-inbound (OutboundTenancy default)"
        );
        // team-b's grant has its bucket but no role: only the allowlist mode.
        let b = role("arn:aws:iam::111122223333:role/outbound", "globex-inbound");
        let err = check(Some(&t), "team-b", &b).unwrap_err();
        assert!(
            err.starts_with("spec.credentials.crossAccount.roleArn"),
            "{err}"
        );
    }

    #[test]
    fn every_named_endpoint_must_be_granted_with_the_bucket() {
        let t = tenancy(TEAMS);
        let at = |endpoint: &str, sts: Option<&str>| {
            let sts = sts
                .map(|s| format!(", stsEndpoint: '{s}'"))
                .unwrap_or_default();
            dest(&format!(
                "{{s3: {{bucket: acme-inbound, endpoint: '{endpoint}'{sts}}}, credentials: {{crossAccount: {{}}}}}}"
            ))
        };
        assert_eq!(
            check(
                Some(&t),
                "team-a",
                &at("https://minio.storage.svc:9000", None)
            ),
            Ok(())
        );
        let err = check(Some(&t), "team-a", &at("http://169.254.169.254", None)).unwrap_err();
        assert_eq!(
            err,
            "spec.s3.endpoint http://169.254.169.254 is not granted to namespace team-a with \
             bucket acme-inbound (OutboundTenancy default)"
        );
        let err = check(
            Some(&t),
            "team-a",
            &at("https://minio.storage.svc:9000", Some("https://sts.evil")),
        )
        .unwrap_err();
        assert!(
            err.starts_with("spec.s3.stsEndpoint https://sts.evil"),
            "{err}"
        );
        // team-b may use AWS only.
        let globex = dest(
            "{s3: {bucket: globex-inbound, endpoint: 'https://minio.storage.svc:9000'}, credentials: {crossAccount: {}}}",
        );
        assert!(check(Some(&t), "team-b", &globex).is_err());
    }

    #[test]
    fn one_grant_must_allow_bucket_role_and_endpoints_together() {
        // Two grants, each allowing half: neither admits the whole destination.
        let t = tenancy(
            r#"
grants:
  - {namespaces: [a], buckets: [one], endpoints: ["https://s3.one"]}
  - {namespaces: [a], buckets: [one], endpoints: ["https://sts.two"]}
  - {namespaces: [a], buckets: [two], roleArns: ["arn:aws:iam::111122223333:role/r"]}
"#,
        );
        let split = dest(
            "{s3: {bucket: one, endpoint: 'https://s3.one', stsEndpoint: 'https://sts.two'}, credentials: {crossAccount: {}}}",
        );
        let err = check(Some(&t), "a", &split).unwrap_err();
        assert!(err.contains("are not granted together"), "{err}");
        let role_on_other_bucket = dest(
            "{s3: {bucket: one}, credentials: {crossAccount: {roleArn: 'arn:aws:iam::111122223333:role/r'}}}",
        );
        assert!(check(Some(&t), "a", &role_on_other_bucket).is_err());
    }

    #[test]
    fn a_source_read_with_our_identity_needs_its_bucket_and_endpoint_granted() {
        let t = tenancy(
            r#"
namespaces: [team-*]
grants:
  - {namespaces: [team-a], sourceBuckets: [exports-*], endpoints: ["https://s3.store"]}
  - {namespaces: [team-b], buckets: [globex-inbound]}
"#,
        );
        let source = |yaml: &str| -> BucketSource { serde_yaml::from_str(yaml).unwrap() };
        assert!(check_source(Some(&t), "team-a", &source("{bucket: exports-a}")).is_ok());
        assert!(
            check_source(
                Some(&t),
                "team-a",
                &source("{bucket: exports-a, endpoint: 'https://s3.store'}")
            )
            .is_ok()
        );
        let err = check_source(
            Some(&t),
            "team-a",
            &source("{bucket: exports-a, endpoint: 'https://s3.other'}"),
        )
        .unwrap_err();
        assert!(
            err.starts_with("spec.source.s3.endpoint https://s3.other"),
            "{err}"
        );
        // A destination grant is not a source grant.
        let err =
            check_source(Some(&t), "team-b", &source("{bucket: globex-inbound}")).unwrap_err();
        assert!(
            err.starts_with(
                "spec.source.s3.bucket globex-inbound is not granted to namespace team-b"
            ),
            "{err}"
        );
        // The team's own keys, an ungoverned namespace, or no tenancy: not restricted.
        let keyed = source("{bucket: anything, secret: {name: keys}}");
        assert!(check_source(Some(&t), "team-b", &keyed).is_ok());
        assert!(check_source(Some(&t), "pipeline", &source("{bucket: anything}")).is_ok());
        assert!(check_source(None, "team-b", &source("{bucket: anything}")).is_ok());
    }
}
