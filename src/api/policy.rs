//! The admission policies that ship with the CRDs: one lets the API server refuse a delivery whose
//! split size is above its destination's (CEL on the CRD cannot read another object, a policy
//! can); the other keeps each upload pod to its own shard object, and everyone but the operator
//! out of delivery status.

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
    vec![split_size_policy(), upload_pods_policy()]
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
