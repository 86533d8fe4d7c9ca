#!/usr/bin/env bash
# Builds what `make conformance` runs, into a cache outside the checkout keyed by version (and by the
# agnhost patch's hash):
#   e2e.test              Kubernetes' own end-to-end suite, `go test -c k8s.io/kubernetes/test/e2e`, from the
#                         same tests/tools/kube module (same version and tags) as the cluster's binaries.
#   agnhost               the e2e test image's binary, k8s.io/kubernetes/test/images/agnhost from that module,
#                         with agnhost/*.patch applied to a vendored copy (see the patch's header: a
#                         kernel without SCTP must not crash the network-policy-api suite's pods).
#   npa-conformance.test  the network-policy-api conformance suite, `go test -c
#                         sigs.k8s.io/network-policy-api/conformance`, unmodified, from tests/tools/npa (the
#                         release whose suite speaks v1alpha2 ClusterNetworkPolicy, as Palisade's CRD).
# Prints the directory holding the three on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
kube_version=$(module_version "$here/kube/go.mod" k8s.io/kubernetes)
npa_version=$(module_version "$here/npa/go.mod" sigs.k8s.io/network-policy-api)
patches=("$here"/agnhost/*.patch)
patch_hash=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
tags=selinux,notest,grpcnotrace

dest="$cache_root/conformance-kube-$kube_version-npa-$npa_version-agnhost-$patch_hash"
mkdir -p "$dest"

if [[ ! -x "$dest/e2e.test" ]]; then
  (cd "$here/kube" && timed "e2e.test $kube_version" go test -c -trimpath -tags "$tags" -ldflags "-s -w" \
    -o "$dest/e2e.test.tmp" k8s.io/kubernetes/test/e2e) && mv "$dest/e2e.test.tmp" "$dest/e2e.test"
fi

if [[ ! -x "$dest/agnhost" ]]; then
  # Go takes no overlay of a file in the module cache, so agnhost builds from a vendored copy: a
  # throwaway module with the kube module's requirements (and go.sum) that imports agnhost, vendored,
  # patched there, built with -mod=vendor.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp "$here/kube/go.mod" "$here/kube/go.sum" "$work/"
  sed -i 's|^module .*|module palisade.invalid/tests/tools/agnhost|' "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/test/images/agnhost"\n' >"$work/tools.go"
  (cd "$work" && go mod tidy && go mod vendor)
  for p in "${patches[@]}"; do patch --quiet --forward -p1 -d "$work/vendor/k8s.io/kubernetes" <"$p"; done
  (cd "$work" && timed "agnhost $kube_version (patched)" go build -mod=vendor -trimpath -ldflags "-s -w" \
    -o "$dest/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost) && mv "$dest/agnhost.tmp" "$dest/agnhost"
fi

if [[ ! -x "$dest/npa-conformance.test" ]]; then
  (cd "$here/npa" && timed "network-policy-api conformance $npa_version" go test -c -trimpath -ldflags "-s -w" \
    -o "$dest/npa-conformance.test.tmp" sigs.k8s.io/network-policy-api/conformance) \
    && mv "$dest/npa-conformance.test.tmp" "$dest/npa-conformance.test"
fi

echo "$dest"
