#!/usr/bin/env bash
# Builds the two peer enforcers that `make bench` measures next to Palisade, each from its own Go module under
# tests/tools/, into a cache outside the checkout keyed by version (and, for KNP, by the patch's hash):
#   kube-router            github.com/cloudnativelabs/kube-router/v2, unmodified, run with the firewall only.
#                          It has known security flaws: a bench peer, never a dependency of anything.
#   kube-network-policies  sigs.k8s.io/kube-network-policies, with knp/*.patch applied to a copy of the module
#                          (a --kubeconfig flag, and the xtables NFQUEUE target through nft_compat because this
#                          kernel has no nft_queue; see the patch's header).
# Prints the directory holding `kube-router` and `kube-network-policies` on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
router_version=$(awk '$1=="require" && $2=="github.com/cloudnativelabs/kube-router/v2" {print $3}' "$here/kube-router/go.mod")
knp_version=$(awk '$1=="require" && $2=="sigs.k8s.io/kube-network-policies" {print $3}' "$here/knp/go.mod")
patches=("$here"/knp/*.patch)
patch_hash=$(cat "${patches[@]}" | sha256sum | cut -c1-12)

dest="$cache_root/peers-kube-router-$router_version-knp-$knp_version-$patch_hash"
mkdir -p "$dest"


if [[ ! -x "$dest/kube-router" ]]; then
  (cd "$here/kube-router" && timed "kube-router $router_version" go build -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$router_version" \
    -o "$dest/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router) \
    && mv "$dest/kube-router.tmp" "$dest/kube-router"
fi

if [[ ! -x "$dest/kube-network-policies" ]]; then
  module=$(cd "$here/knp" && go mod download -json "sigs.k8s.io/kube-network-policies@$knp_version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$module" ]] || { echo "go mod download gave no directory for kube-network-policies" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$module/." "$work/" && chmod -R u+w "$work"
  for p in "${patches[@]}"; do patch --quiet --forward -p1 -d "$work" < "$p"; done
  (cd "$work" && timed "kube-network-policies $knp_version (patched)" go build -trimpath -ldflags "-s -w" \
    -o "$dest/kube-network-policies.tmp" ./cmd) \
    && mv "$dest/kube-network-policies.tmp" "$dest/kube-network-policies"
fi

echo "$dest"
