#!/usr/bin/env bash
# Builds the real control-plane binaries the tests and the demo run: kube-apiserver, etcd and helm,
# each from its own Go module under tests/tools/ (one module each, so Go's version selection never moves
# the dependencies of one under another).
#
# Envtest model: if KUBEBUILDER_ASSETS names a directory that already holds kube-apiserver and etcd, it is
# used as is and nothing is built. Otherwise the binaries go to a cache keyed by the pinned versions, outside
# the checkout, and later runs reuse them. Prints the asset directory on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kube_version=$(awk '$1=="k8s.io/kubernetes" {print $2}' "$here/kube/go.mod" | head -n1)
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2}' "$here/etcd/go.mod" | head -n1)
helm_version=$(awk '$1=="helm.sh/helm/v3" {print $2}' "$here/helm/go.mod" | head -n1)

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
  echo "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
  if [[ ! -x "$KUBEBUILDER_ASSETS/helm" ]]; then
    echo "note: no helm in KUBEBUILDER_ASSETS; chart tests will build one into the cache" >&2
  fi
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache_root=${PALISADE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/assets}
dest="$cache_root/kube-$kube_version-etcd-$etcd_version-helm-$helm_version"
mkdir -p "$dest"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

timed() { # name, then the command: prints how long each build took
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "built $name in $(( $(date +%s) - start ))s" >&2
}

if [[ ! -x "$dest/etcd" ]]; then
  (cd "$here/etcd" && timed etcd go build -trimpath \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version" \
    -o "$dest/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$dest/etcd.tmp" "$dest/etcd"
fi

if [[ ! -x "$dest/kube-apiserver" ]]; then
  minor=$(echo "$kube_version" | cut -d. -f2)
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X '$pkg.gitVersion=$kube_version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
    ld="$ld -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
  done
  (cd "$here/kube" && timed kube-apiserver go build -trimpath -tags selinux,notest,grpcnotrace \
    -ldflags "$ld" -o "$dest/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver) \
    && mv "$dest/kube-apiserver.tmp" "$dest/kube-apiserver"
fi

if [[ ! -x "$dest/helm" ]]; then
  minor=$(echo "$kube_version" | cut -d. -f2)
  (cd "$here/helm" && timed helm go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$dest/helm.tmp" helm.sh/helm/v3/cmd/helm) && mv "$dest/helm.tmp" "$dest/helm"
fi

echo "$dest"
