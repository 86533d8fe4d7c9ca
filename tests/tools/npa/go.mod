module palisade.invalid/tests/tools/npa

go 1.25.0

// The network-policy-api conformance suite, built unmodified as a test binary by
// tests/tools/build-conformance.sh. v0.2.0 is the release whose suite speaks
// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy, the version Palisade's CRD serves.
require sigs.k8s.io/network-policy-api v0.2.0 // indirect
