//! kubernetes-sigs/network-policy-api `conformance/` (ClusterNetworkPolicy v1alpha2).

use crate::case::Suite;

pub fn suite() -> Suite {
    Suite { name: "ClusterNetworkPolicy".to_owned(), model: crate::netpol::model(), cases: Vec::new() }
}
