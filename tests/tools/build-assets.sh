#!/usr/bin/env bash
# Builds the real Kubernetes binaries the tests, the demo and `make cluster` run, each group from its own
# Go module under tests/tools/ (one module each, so Go's version selection never moves the dependencies of
# one under another):
#   control plane: kube-apiserver, etcd, helm (what `make test` needs);
#   with `cluster`: also kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl (from the
#   same k8s.io/kubernetes module as kube-apiserver), the CNI plugins, crictl and a pause binary.
#
# Envtest model: if KUBEBUILDER_ASSETS names a directory that already holds kube-apiserver and etcd, it is
# used as is and nothing is built. Otherwise the binaries go to a cache keyed by the pinned versions, outside
# the checkout, and later runs reuse them. Prints the asset directory on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
kube_version=$(module_version "$here/kube/go.mod" k8s.io/kubernetes)
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2}' "$here/etcd/go.mod" | head -n1)
helm_version=$(awk '$1=="helm.sh/helm/v3" {print $2}' "$here/helm/go.mod" | head -n1)

cni_version=v1.10.0    # github.com/containernetworking/plugins
crictl_version=v1.34.0 # sigs.k8s.io/cri-tools
want_cluster=false
[[ "${1:-}" == cluster ]] && want_cluster=true
cluster_binaries=(kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
cni_plugins=(main/bridge ipam/host-local main/loopback meta/portmap)
cni_plugins=("${cni_plugins[@]/#/github.com/containernetworking/plugins/plugins/}")

has_cluster() { # dir: does it hold everything `make cluster` runs?
  local b
  for b in "${cluster_binaries[@]}" crictl pause; do [[ -x "$1/$b" ]] || return 1; done
  for b in "${cni_plugins[@]}"; do [[ -x "$1/cni/${b##*/}" ]] || return 1; done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]] \
   && { ! $want_cluster || has_cluster "$KUBEBUILDER_ASSETS"; }; then
  echo "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
  if [[ ! -x "$KUBEBUILDER_ASSETS/helm" ]]; then
    echo "note: no helm in KUBEBUILDER_ASSETS; chart tests will build one into the cache" >&2
  fi
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

dest="$cache_root/kube-$kube_version-etcd-$etcd_version-helm-$helm_version"
# The cluster tools live beside the control plane, keyed by their own versions too.
tools="cni-$cni_version-crictl-$crictl_version"
mkdir -p "$dest"


if [[ ! -x "$dest/etcd" ]]; then
  (cd "$here/etcd" && timed etcd go build -trimpath \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version" \
    -o "$dest/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$dest/etcd.tmp" "$dest/etcd"
fi

# Every binary of k8s.io/kubernetes in one `go build`, so shared packages compile once.
kube_packages=()
[[ -x "$dest/kube-apiserver" ]] || kube_packages+=(kube-apiserver)
if $want_cluster; then
  for b in "${cluster_binaries[@]}"; do [[ -x "$dest/$b" ]] || kube_packages+=("$b"); done
fi
if ((${#kube_packages[@]})); then
  minor=$(echo "$kube_version" | cut -d. -f2)
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X '$pkg.gitVersion=$kube_version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
    ld="$ld -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
  done
  rm -rf "$dest/kube.tmp" && mkdir -p "$dest/kube.tmp"
  (cd "$here/kube" && timed "${kube_packages[*]}" go build -trimpath -tags selinux,notest,grpcnotrace \
    -ldflags "$ld" -o "$dest/kube.tmp/" "${kube_packages[@]/#/k8s.io/kubernetes/cmd/}")
  for b in "${kube_packages[@]}"; do mv "$dest/kube.tmp/$b" "$dest/$b"; done
  rmdir "$dest/kube.tmp"
fi

if $want_cluster; then
  # Keyed by their own versions: built into $dest/$tools, then linked as $dest/cni and $dest/crictl.
  if [[ ! -x "$dest/$tools/crictl" ]]; then
    rm -rf "$dest/$tools.tmp"
    GOBIN="$dest/$tools.tmp/cni" timed "CNI plugins $cni_version" go install -trimpath -ldflags "-s -w" \
      "${cni_plugins[@]/%/@$cni_version}"
    GOBIN="$dest/$tools.tmp" timed "crictl $crictl_version" go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
    rm -rf "$dest/$tools" && mv "$dest/$tools.tmp" "$dest/$tools"
  fi
  ln -sfn "$tools/cni" "$dest/cni"
  ln -sfn "$tools/crictl" "$dest/crictl"
  if [[ ! -x "$dest/pause" ]]; then
    (cd "$here/pause" && timed pause go build -trimpath -ldflags "-s -w" -o "$dest/pause.tmp" .) \
      && mv "$dest/pause.tmp" "$dest/pause"
  fi
fi

if [[ ! -x "$dest/helm" ]]; then
  minor=$(echo "$kube_version" | cut -d. -f2)
  (cd "$here/helm" && timed helm go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$dest/helm.tmp" helm.sh/helm/v3/cmd/helm) && mv "$dest/helm.tmp" "$dest/helm"
fi

echo "$dest"
