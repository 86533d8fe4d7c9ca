#!/usr/bin/env bash
# `make conformance`: the two upstream suites, unmodified, against Palisade installed with Helm on a real
# 2-node dual-stack cluster (tests/cluster/cluster.sh: real kubelets, containerd, bridge CNI, kube-proxy).
#
#   Kubernetes e2e     e2e.test v1.34 (tests/tools/build-conformance.sh), focus on NetworkPolicy: every spec
#                      of test/e2e/network/netpol ("[sig-network] Netpol ..."), the [Feature:NetworkPolicy]
#                      specs and the NetworkPolicy API specs.
#   network-policy-api the v0.2.0 conformance suite (v1alpha2 ClusterNetworkPolicy), with the experimental
#                      features Palisade implements: named ports and node peers (its inline CIDR peers are
#                      standard in this release).
#
# This kernel has no SCTP module. Left out, each by name in the summary, are only the tests that open SCTP
# sockets: e2e's [Feature:SCTPConnectivity] specs, and the network-policy-api tests that probe over SCTP. The
# e2e specs that check an SCTP policy does not open TCP still run.
#
# `conformance.sh [--subset] [e2e|npa]...`: --subset runs the fixed, named subset CI runs (one or more
# tests of every area; see the two lists below); no suite named runs both. JUnit reports and the summary go
# to $CONFORMANCE_OUT (default target/conformance). Exits 1 when a test failed.
set -Eeuo pipefail
{
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
subset=false suites=()
for arg in "$@"; do
  case $arg in
    --subset) subset=true ;;
    e2e | npa) suites+=("$arg") ;;
    *) echo "usage: $0 [--subset] [e2e|npa]..." >&2; exit 2 ;;
  esac
done
((${#suites[@]})) || suites=(e2e npa)
export PALISADE_CLUSTER=${PALISADE_CLUSTER:-conform}
export PALISADE_CLUSTER_DIR=${PALISADE_CLUSTER_DIR:-/tmp/palisade-cluster/$PALISADE_CLUSTER}
export PALISADE_API_PORT=${PALISADE_API_PORT:-16445}
export KUBECONFIG=$PALISADE_CLUSTER_DIR/kubeconfig
out=${CONFORMANCE_OUT:-$repo/target/conformance}
say() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }

# --- what runs -----------------------------------------------------------------------------------------
sctp_reason="opens SCTP sockets; this kernel has no SCTP module"
e2e_focus='\[sig-network\] Netpol '
e2e_skip='Feature:SCTPConnectivity'
# The CI subset: default deny, selectors, named ports, ipBlock with except, egress, policy and label
# updates, UDP, multiple policies, and SCTP policies not opening TCP.
e2e_subset=(
  "should support a 'default-deny-ingress' policy"
  "should support a 'default-deny-all' policy"
  'should enforce policy to allow traffic from pods within server namespace based on PodSelector'
  'should enforce policy based on NamespaceSelector with MatchExpressions'
  'should allow ingress access on one named port'
  'should enforce except clause while egress access to server in CIDR block'
  'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector'
  'should enforce updated policy'
  'should deny ingress access to updated pod'
  'should support allow-all policy'
  'should enforce multiple, stacked policies with overlapping podSelectors'
  'should allow egress access to server in CIDR block'
  'should enforce ingress policy allowing any port traffic to a server on a specific protocol'
  "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'"
  'should support creating NetworkPolicy API operations'
)
# network-policy-api: every test whose probes include SCTP (a skipped subtest would break the later
# subtests, which mutate the same policy in turn, so the whole test is left out).
npa_sctp=(
  CNPAdminTierIngressSCTP CNPAdminTierEgressSCTP CNPAdminTierGress CNPAdminTierEgressInlineCIDRPeers
  CNPAdminTierEgressNodePeers CNPBaselineTierIngressSCTP CNPBaselineTierEgressSCTP CNPBaselineTierGress
  CNPBaselineTierEgressInlineCIDRPeers CNPBaselineTierEgressNodePeers
)
npa_features=ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers
# The CI subset: both tiers, TCP and UDP, ingress and egress, priority, Pass into NetworkPolicy and
# Baseline, and named ports.
npa_subset=(
  CNPAdminTierIngressTCP CNPAdminTierEgressUDP CNPAdminTierPriorityField CNPAdminTierIntegration
  CNPAdminTierIngressNamedPort CNPBaselineTierIngressUDP CNPBaselineTierEgressTCP CNPBaselineTierEgressNamedPort
)

join() { local IFS=$1; shift; echo "$*"; }
regex_quote() { sed 's/[][\.*^$(){}+?|/]/\\&/g' <<<"$1"; }

# --- build, cluster, install ---------------------------------------------------------------------------
trap 'say "failed; the cluster as it was:"; "${assets:-/nonexistent}/kubectl" get pods -A -o wide >&2 || true' ERR
cleanup() {
  if [[ -n ${CONFORMANCE_HOLD:-} ]]; then
    say "the cluster stays up: export KUBECONFIG=$KUBECONFIG; remove it with PALISADE_CLUSTER=$PALISADE_CLUSTER make cluster-down"
  else
    "$here/cluster.sh" down
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=../tools/lib.sh
source "$repo/tests/tools/lib.sh"
kube_version=$(module_version "$repo/tests/tools/kube/go.mod" k8s.io/kubernetes)
npa_version=$(module_version "$repo/tests/tools/npa/go.mod" sigs.k8s.io/network-policy-api)
t=$SECONDS
built=$("$repo/tests/tools/build-conformance.sh" | tail -n 1)
images=$(AGNHOST=$built/agnhost "$here/images.sh" | tail -n 1)
say "suites and images built or reused ($((SECONDS - t)) s)"
PALISADE_IMAGES=$images "$here/cluster.sh" up
assets=$(cat "$PALISADE_CLUSTER_DIR/assets")
"$assets/helm" install palisade "$repo/charts/palisade" --namespace palisade-system --create-namespace \
  --set image.pullPolicy=Never --set operator.clusterIP=198.18.96.10 --wait --timeout 180s >/dev/null
say "palisade installed with helm"
rm -rf "$out" && mkdir -p "$out"
(cd "$repo/tests/tools/report" && go build -o "$out/.report" .)
report() { "$out/.report" "$@"; }
status=0

run_e2e() {
  local focus=$e2e_focus started=$SECONDS names=() name
  if $subset; then
    for name in "${e2e_subset[@]}"; do names+=("$(regex_quote "$name")"); done
    focus="$e2e_focus.*($(join '|' "${names[@]}"))"
  fi
  say "Kubernetes e2e: focus $focus, skip $e2e_skip"
  # The framework writes its JUnit report (junit_01.xml) to --report-dir.
  "$built/e2e.test" --kubeconfig "$KUBECONFIG" --provider=local --kubectl-path="$assets/kubectl" \
    --report-dir="$out/e2e" --ginkgo.focus="$focus" --ginkgo.skip="$e2e_skip" --ginkgo.no-color \
    --ginkgo.timeout=80m >"$out/e2e.log" 2>&1 || true
  # Ginkgo reports the specs --ginkgo.skip left out as skipped, without a reason: the summary gives it.
  report summary "Kubernetes e2e $kube_version ($((SECONDS - started)) s)" "$out/e2e/junit_01.xml" "$focus" \
    -because "$e2e_skip=$sctp_reason" >"$out/e2e.summary" 2>&1 || status=1
}

run_npa() {
  local run='^TestConformance$' started=$SECONDS left_out=() name
  $subset && run="^TestConformance\$/^($(join '|' "${npa_subset[@]}"))\$"
  for name in "${npa_sctp[@]}"; do
    if ! $subset || [[ " ${npa_subset[*]} " == *" $name "* ]]; then left_out+=("TestConformance/$name=$sctp_reason"); fi
  done
  say "network-policy-api conformance: -run $run, features $npa_features"
  "$built/npa-conformance.test" -test.run "$run" -test.skip "^TestConformance\$/^($(join '|' "${npa_sctp[@]}"))\$" \
    -test.v=test2json -test.timeout 60m -supported-features="$npa_features" >"$out/npa.log" 2>&1 || true
  mkdir -p "$out/npa"
  go tool test2json -t -p network-policy-api <"$out/npa.log" >"$out/npa.json"
  report junit network-policy-api <"$out/npa.json" >"$out/npa/junit.xml"
  report summary "network-policy-api $npa_version ($((SECONDS - started)) s)" "$out/npa/junit.xml" \
    '^TestConformance/' "${left_out[@]}" >"$out/npa.summary" 2>&1 || status=1
}

for suite in "${suites[@]}"; do "run_$suite"; done
echo
for suite in "${suites[@]}"; do cat "$out/$suite.summary"; echo; done
echo "JUnit reports and logs: $out"
exit "$status"
}
