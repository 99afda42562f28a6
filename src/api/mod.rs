//! The CRD types (OutboundDestination, OutboundDelivery), conditions and constants.

/// All CustomResourceDefinitions as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    String::new()
}
