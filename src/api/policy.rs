//! The admission policy that lets the API server refuse a delivery whose split size is above its
//! destination's: CEL on the CRD cannot read another object, a ValidatingAdmissionPolicy can.

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
