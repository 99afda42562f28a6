//! The admission policies that ship with the CRDs: one lets the API server refuse a delivery whose
//! split size is above its destination's (CEL on the CRD cannot read another object, a policy
//! can); one keeps each upload pod to its own shard object, and everyone but the operator out of
//! delivery status; one refuses a cross-account destination that the admin's tenancy grants do
//! not allow to its namespace.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};

/// Name of the policy and, with `-binding`, of its binding.
pub const SPLIT_SIZE_POLICY: &str = "outbounddeliveries.outbound.dev-split-size";

// Every destination in the delivery's namespace is a param (selector {}); only the one the
// delivery names decides. Sizes are bytes or quantities: `string()` makes both quantities.
// Only creates and spec changes are checked, so a destination lowered later can never block a
// delivery's finalizer from being removed (the controller reports that case instead).
const RULE: &str = "params.metadata.name != object.spec.destinationRef.name \
|| !has(object.spec.splitSize) || object.spec.splitSize == null \
|| !has(params.spec.upload) || params.spec.upload == null \
|| !has(params.spec.upload.splitSize) || params.spec.upload.splitSize == null \
|| quantity(string(object.spec.splitSize)).compareTo(quantity(string(params.spec.upload.splitSize))) <= 0";

const MESSAGE: &str = "'spec.splitSize ' + string(object.spec.splitSize) + \
' is above the split size of destination ' + params.metadata.name + ' (' + \
string(params.spec.upload.splitSize) + ')'";

/// The policy and its binding.
pub fn split_size_policy() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let policy = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": SPLIT_SIZE_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundDestination"},
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["outbound.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["outbounddeliveries"],
            }]},
            "matchConditions": [{
                "name": "spec-set-or-changed",
                "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
            }],
            "validations": [{"expression": RULE, "messageExpression": MESSAGE, "reason": "Invalid"}],
        },
    }))
    .expect("the policy is a valid ValidatingAdmissionPolicy");
    let binding = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("{SPLIT_SIZE_POLICY}-binding")},
        "spec": {
            "policyName": SPLIT_SIZE_POLICY,
            "validationActions": ["Deny"],
            // No destination yet: the controller reports DestinationNotFound instead.
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        },
    }))
    .expect("the binding is a valid ValidatingAdmissionPolicyBinding");
    (policy, binding)
}

/// Every admission policy with its binding, as `crds_yaml` and the tests apply them.
pub fn policies() -> Vec<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    vec![split_size_policy(), upload_pods_policy(), tenancy_policy()]
}

/// The upload pods' ServiceAccount, one per namespace, unless the destination names its own.
pub const UPLOAD_SERVICE_ACCOUNT: &str = "outbound-upload";

/// Every upload Job's name starts so (and so every upload pod's).
pub const JOB_NAME_PREFIX: &str = "odel-";

/// The longest Job name: the Job controller names pods `<job>-<index>-<5 chars>` and cuts the
/// stem above 58 characters before the 5; with indexes below 1,000 (the parallelism limit) a name
/// of 53 is never cut, so the upload-pods policy can tell a shard's pod by its name.
pub const MAX_JOB_NAME: usize = 53;

/// Name of the upload-pods policy and, with `-binding`, of its binding.
pub const UPLOAD_PODS_POLICY: &str = "outbounddeliveries.outbound.dev-upload-pods";

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// The policy and its binding that keep each upload pod to its own shard, and everyone but the
/// operator out of delivery status. The pods share one ServiceAccount, Role and RoleBinding per
/// namespace (RBAC cannot name the one shard a pod works for without two objects per delivery,
/// whose writes cost the API server more than the rest of a delivery). So:
/// - an OutboundShard may be created or changed, by anyone who may not create Jobs in the
///   namespace (every principal but the operator's: the upload account, an account a
///   destination names, a namespace user with rights on `outbound.dev` only, whatever token
///   they hold), only with the token of the pod of that shard's Job index: a pod token carries
///   its pod's name, and the Job controller names an Indexed Job's pods
///   `<job>-<index>-<5 chars>`, the shard object being `<job>-<index>`;
/// - a delivery's status is written by the operator alone.
///
/// The garbage collector, which edits owner references, is let through.
pub fn upload_pods_policy() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let not_operator = "!authorizer.group('batch').resource('jobs').namespace(request.namespace).check('create').allowed() \
&& !(request.userInfo.username in ['system:serviceaccount:kube-system:generic-garbage-collector', 'system:kube-controller-manager'])";
    let pod = format!(
        "has(request.userInfo.extra) && '{POD_NAME}' in request.userInfo.extra \
? request.userInfo.extra['{POD_NAME}'][0] : ''"
    );
    let policy = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": UPLOAD_PODS_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["outbound.dev"],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["outboundshards", "outboundshards/status", "outbounddeliveries/status"],
            }]},
            "matchConditions": [{"name": "not-the-operator", "expression": not_operator}],
            "variables": [
                {"name": "pod", "expression": pod},
                {"name": "shard", "expression": "request.resource.resource == 'outboundshards'"},
            ],
            "validations": [
                {
                    "expression": "variables.shard",
                    "messageExpression": "'only the operator writes the status of delivery ' + request.name",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("!variables.shard || object.metadata.name.startsWith('{JOB_NAME_PREFIX}') \
&& variables.pod.matches('^' + object.metadata.name + '-[a-z0-9]{{5}}$')"),
                    "messageExpression": "variables.pod == '' \
? 'shard ' + object.metadata.name + ' may be written only with the token of its upload pod' \
: 'pod ' + variables.pod + ' may write only its own shard, not ' + object.metadata.name",
                    "reason": "Forbidden",
                },
            ],
        },
    }))
    .expect("the policy is a valid ValidatingAdmissionPolicy");
    let binding = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("{UPLOAD_PODS_POLICY}-binding")},
        "spec": {"policyName": UPLOAD_PODS_POLICY, "validationActions": ["Deny"]},
    }))
    .expect("the binding is a valid ValidatingAdmissionPolicyBinding");
    (policy, binding)
}

/// Name of the tenancy policy and, with `-binding`, of its binding.
pub const TENANCY_POLICY: &str = "outbounddestinations.outbound.dev-tenancy";

/// CEL: whether one of `list`'s patterns (a name, or a prefix ending in `*`) matches `value`;
/// what `tenancy::matches` does.
fn any_match(list: &str, value: &str) -> String {
    format!(
        "{list}.exists(p, p.endsWith('*') ? {value}.startsWith(p.substring(0, size(p) - 1)) : p == {value})"
    )
}

/// The policy and its binding that refuse a cross-account destination (allowlist or role) whose
/// bucket, role or endpoints no grant of the `OutboundTenancy` named `default` allows to its
/// namespace; the refusal names the namespace, the field and the value. The binding's param is
/// that one object, so no tenancy object means no restriction (`parameterNotFoundAction: Allow`),
/// which is the single-team default. `tenancy::check` is the same rule in Rust, for the operator
/// (a destination admitted before a grant was removed) and for unit tests; the messages agree.
pub fn tenancy_policy() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let cross = "object.spec.credentials.crossAccount";
    let variables = [
        ("ns", "request.namespace".to_string()),
        (
            "governed",
            format!(
                "!has(params.spec.namespaces) || {}",
                any_match("params.spec.namespaces", "variables.ns")
            ),
        ),
        (
            "grants",
            format!(
                "has(params.spec.grants) ? params.spec.grants.filter(g, {}) : []",
                any_match("g.namespaces", "variables.ns")
            ),
        ),
        ("bucket", "object.spec.s3.bucket".to_string()),
        (
            "withBucket",
            format!(
                "variables.grants.filter(g, has(g.buckets) && {})",
                any_match("g.buckets", "variables.bucket")
            ),
        ),
        (
            "role",
            format!("has({cross}.roleArn) ? {cross}.roleArn : ''"),
        ),
        (
            "withRole",
            format!(
                "variables.role == '' ? variables.withBucket : variables.withBucket.filter(g, has(g.roleArns) && {})",
                any_match("g.roleArns", "variables.role")
            ),
        ),
        (
            "endpoints",
            "(has(object.spec.s3.endpoint) ? [{'field': 'spec.s3.endpoint', 'url': string(object.spec.s3.endpoint)}] : []) \
+ (has(object.spec.s3.stsEndpoint) ? [{'field': 'spec.s3.stsEndpoint', 'url': string(object.spec.s3.stsEndpoint)}] : [])"
                .to_string(),
        ),
        (
            "ungranted",
            format!(
                "variables.endpoints.filter(e, !variables.withRole.exists(g, has(g.endpoints) && {}))",
                any_match("g.endpoints", "e.url")
            ),
        ),
    ];
    let variables: Vec<serde_json::Value> = variables
        .iter()
        .map(|(name, expression)| serde_json::json!({"name": name, "expression": expression}))
        .collect();
    let tail = "' (OutboundTenancy default)'";
    // Each rule fails only when the ones before it pass, so that the refusal names one thing.
    let validations = serde_json::json!([
        {
            "expression": "!variables.governed || size(variables.grants) > 0",
            "messageExpression": "'namespace ' + variables.ns + ' has no grant for cross-account destinations \
    (OutboundTenancy default): ask the cluster admin to grant it the bucket, role and endpoint'",
            "reason": "Forbidden",
        },
        {
            "expression": "!variables.governed || size(variables.grants) == 0 || size(variables.withBucket) > 0",
            "messageExpression": format!("'spec.s3.bucket ' + variables.bucket + ' is not granted to namespace ' + variables.ns + {tail}"),
            "reason": "Forbidden",
        },
        {
            "expression": "!variables.governed || size(variables.withBucket) == 0 || size(variables.withRole) > 0",
            "messageExpression": format!("'spec.credentials.crossAccount.roleArn ' + variables.role + ' is not granted to namespace ' \
    + variables.ns + ' with bucket ' + variables.bucket + {tail}"),
            "reason": "Forbidden",
        },
        {
            "expression": format!("!variables.governed || size(variables.withRole) == 0 || variables.withRole.exists(g, \
    variables.endpoints.all(e, has(g.endpoints) && {}))", any_match("g.endpoints", "e.url")),
            "messageExpression": format!("size(variables.ungranted) > 0 \
    ? variables.ungranted[0].field + ' ' + variables.ungranted[0].url + ' is not granted to namespace ' + variables.ns \
    + ' with bucket ' + variables.bucket + {tail} \
    : 'spec.s3.endpoint and spec.s3.stsEndpoint are not granted together to namespace ' + variables.ns \
    + ' with bucket ' + variables.bucket + {tail}"),
            "reason": "Forbidden",
        },
    ]);
    let policy = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": TENANCY_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "outbound.dev/v1alpha1", "kind": "OutboundTenancy"},
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["outbound.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["outbounddestinations"],
            }]},
            // Secret keys are the team's own and not restricted. Updates that leave the spec as
            // it is (labels, finalizers) pass, so a removed grant never blocks a deletion; the
            // operator reports such a destination as NotGranted instead.
            "matchConditions": [
                {"name": "cross-account", "expression": format!("has({cross})")},
                {
                    "name": "spec-set-or-changed",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
                },
            ],
            "variables": variables,
            "validations": validations,
        },
    }))
    .expect("the policy is a valid ValidatingAdmissionPolicy");
    let binding = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("{TENANCY_POLICY}-binding")},
        "spec": {
            "policyName": TENANCY_POLICY,
            "validationActions": ["Deny"],
            // One named object: with a selector every matching param would have to pass.
            "paramRef": {"name": super::TENANCY_NAME, "parameterNotFoundAction": "Allow"},
        },
    }))
    .expect("the binding is a valid ValidatingAdmissionPolicyBinding");
    (policy, binding)
}
