#!/usr/bin/env bash
# `make demo`: Palisade on a real 2-node cluster, installed with Helm, enforcing policies written
# with kubectl, measured with real connections between real pods. `demo.sh --check` (make
# demo-check) plays the same without pauses and fails unless every matrix is the expected one.
# `--hold` keeps the cluster up at the end (remove it with `make cluster-down`).
set -Eeuo pipefail
{
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
check=false hold=false assets=""
for arg in "$@"; do
  case $arg in
    --check) check=true ;;
    --hold) hold=true ;;
    *) echo "usage: $0 [--check] [--hold]" >&2; exit 2 ;;
  esac
done
export PALISADE_CLUSTER=${PALISADE_CLUSTER:-demo}
export PALISADE_CLUSTER_DIR=${PALISADE_CLUSTER_DIR:-/tmp/palisade-cluster/$PALISADE_CLUSTER}
export PALISADE_API_PORT=${PALISADE_API_PORT:-16444}
export KUBECONFIG=$PALISADE_CLUSTER_DIR/kubeconfig
port=5432

bold() { if [[ -t 1 ]]; then printf '\n\033[1m%s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
step() { # a headline, then (interactively) a pause so the reader can follow
  bold "$*"
  if ! $check && [[ -t 0 ]]; then read -r -p "   (enter to continue) " _ || true; fi
}
run() { printf '$ %s\n' "$*"; "$@"; }
fail() { echo "demo-check FAILED: $*" >&2; exit 1; }
# On any failure, what the cluster looked like, before it is removed.
trap 'echo "failed; the cluster as it was:" >&2; "$assets/kubectl" get pods -A -o wide >&2 || true; "$assets/kubectl" describe pods -n shop >&2 || true' ERR

cleanup() {
  if $hold; then
    echo "the cluster stays up: export KUBECONFIG=$KUBECONFIG; remove it with make cluster-down" >&2
  else
    "$here/cluster.sh" down
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold "1. Building the images and starting a real 2-node cluster (kubelets, containerd, kube-proxy)"
images=$("$here/images.sh" | tail -n 1)
PALISADE_IMAGES=$images "$here/cluster.sh" up
assets=$(cat "$PALISADE_CLUSTER_DIR/assets")
export assets
helm() { "$assets/helm" "$@"; }
kubectl() { "$assets/kubectl" "$@"; }

bold "2. helm install palisade"
started=$SECONDS
run helm install palisade "$repo/charts/palisade" --namespace palisade-system --create-namespace \
  --set image.pullPolicy=Never --set operator.clusterIP=198.18.96.10 --wait --timeout 180s >/dev/null
echo "installed and ready in $((SECONDS - started)) s"
run kubectl -n palisade-system get pods -o wide

bold "3. The shop: frontend and database in namespace shop, an intruder in namespace other"
mapfile -t nodes < <(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
pod() { # namespace name app node
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $2, namespace: $1, labels: {app: $3}}
spec:
  nodeName: $4
  terminationGracePeriodSeconds: 0
  containers:
    - name: probe
      image: palisade.dev/probe:dev
      imagePullPolicy: Never
      args: [serve, --name, $1/$2, --tcp, "$port", --tcp, "8080"]
---
EOF
}
{
  printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n'
  printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\n'
  pod shop frontend frontend "${nodes[0]}"
  pod shop database database "${nodes[1]}"
  pod other intruder intruder "${nodes[0]}"
  printf 'apiVersion: v1\nkind: Service\nmetadata: {name: database, namespace: shop}\nspec: {selector: {app: database}, ports: [{port: %s}]}\n' "$port"
} | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready pod --all -n shop --timeout=60s >/dev/null
kubectl wait --for=condition=Ready pod --all -n other --timeout=60s >/dev/null
run kubectl get pods -n shop -o wide
run kubectl get pods -n other -o wide

pods=(shop/frontend shop/database other/intruder)
address() { # ns/pod family(0|1): its IPv4 or IPv6 address
  kubectl get pod -n "${1%/*}" "${1#*/}" -o jsonpath="{.status.podIPs[$2].ip}"
}
connects() { # from ns/pod, to IP: exit 0 when a TCP connection to $port opens
  kubectl exec -n "${1%/*}" "${1#*/}" -- palisade-probe connect --to "$2" --tcp "$port" --timeout-ms 1000 >/dev/null 2>&1
}
# matrix FAMILY: the grid over real connections, one row per source; prints it and sets $grid
# (rows joined by '|', cells 'x' connected, '.' refused).
matrix() {
  local family=$1 from to row
  grid=""
  printf '%-16s' "from \\ to"
  for to in "${pods[@]}"; do printf '%-16s' "$to"; done
  printf '   (TCP %s, IPv%s)\n' "$port" "$([[ $family == 0 ]] && echo 4 || echo 6)"
  for from in "${pods[@]}"; do
    printf '%-16s' "$from"
    row=""
    for to in "${pods[@]}"; do
      if connects "$from" "$(address "$to" "$family")"; then row+=x; printf '%-16s' "  yes"; else row+=.; printf '%-16s' "  -"; fi
    done
    echo
    grid+="${grid:+|}$row"
  done
}
# expect FAMILY GRID: measures until the grid is the expected one (policies take effect within
# moments, not instantly), or fails in --check mode after 30 s.
expect() {
  local family=$1 want=$2 deadline=$((SECONDS + 30))
  while :; do
    matrix "$family" >"$PALISADE_CLUSTER_DIR/matrix.txt"
    [[ $grid == "$want" ]] && break
    if ((SECONDS >= deadline)); then
      cat "$PALISADE_CLUSTER_DIR/matrix.txt"
      $check && fail "IPv$((family ? 6 : 4)) matrix is $grid, expected $want"
      echo "(not the expected matrix: $want)"; return 0
    fi
    sleep 1
  done
  cat "$PALISADE_CLUSTER_DIR/matrix.txt"
}
families=(0)
[[ $(kubectl get pod -n shop database -o jsonpath='{.status.podIPs[1].ip}') ]] && families=(0 1)
through_service() { # from ns/pod: exit 0 when the database's ClusterIP answers
  connects "$1" "$(kubectl get svc -n shop database -o jsonpath='{.spec.clusterIP}')"
}

step "4. No policy yet: everything can talk to everything"
for family in "${families[@]}"; do expect "$family" "xxx|xxx|xxx"; done

step "5. A default deny for shop: nothing may reach its pods"
policy_default_deny='apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}'
echo "$policy_default_deny"
run kubectl apply -f - <<<"$policy_default_deny"
# A pod may always reach itself (upstream semantics); nothing else reaches shop's pods.
for family in "${families[@]}"; do expect "$family" "x.x|.xx|..x"; done

step "6. Only frontend may reach the database, on its port"
policy_allow='apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: database-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: database}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: frontend}}}]
      ports: [{protocol: TCP, port: 5432}]'
echo "$policy_allow"
run kubectl apply -f - <<<"$policy_allow"
for family in "${families[@]}"; do expect "$family" "xxx|.xx|..x"; done
echo "and through the database's Service (kube-proxy DNAT to the pod):"
if through_service shop/frontend; then echo "  shop/frontend -> service shop/database: yes"; else $check && fail "frontend cannot reach the database Service"; echo "  shop/frontend -> service: -"; fi
if through_service other/intruder; then $check && fail "the intruder reached the database Service"; echo "  other/intruder -> service: yes (unexpected)"; else echo "  other/intruder -> service shop/database: -"; fi

step "7. A contradiction is refused before it applies (the admission webhook)"
accept='apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: shop-open}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
    - {name: all-in, action: Accept, from: [{namespaces: {}}]}'
deny="${accept//shop-open/shop-closed}"
deny="${deny//all-in/none-in}"
deny="${deny//Accept/Deny}"
run kubectl apply -f - <<<"$accept"
echo "$deny"
if output=$(kubectl apply -f - <<<"$deny" 2>&1); then
  $check && fail "the contradictory ClusterNetworkPolicy was admitted"
  echo "$output"
else
  echo "$output"
fi
run kubectl delete clusternetworkpolicy shop-open

step "8. Realization status, per policy"
kubectl wait --for=condition=Ready policystatus --all -n shop --timeout=30s >/dev/null || { $check && fail "policies not Ready"; }
run kubectl get policystatuses -n shop

bold "Done: the cluster, Palisade and the shop are $($hold && echo "still up" || echo "removed now")."
exit
}
