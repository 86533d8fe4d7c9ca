#!/usr/bin/env bash
# A real Kubernetes cluster on one machine, without Docker: `cluster.sh up|down|status`.
#
#   up      builds (or reuses) the binaries, then starts etcd, kube-apiserver, kube-controller-manager and
#           kube-scheduler in a "fabric" network namespace, and N nodes, each a network namespace with its
#           own mount and UTS namespace running containerd, a kubelet and kube-proxy. Pods get real
#           addresses from the node's pod CIDR on a bridge (cni0), routed between nodes host-gw style.
#           Images (pause, probe, palisade) are imported into every node; pods use imagePullPolicy Never.
#   down    stops everything `up` started: pods through the CRI, then processes, shims (by PID),
#           cgroups, namespaces and files. Safe to run twice.
#   load    imports image tarballs (docker-archive) into every node of a running cluster.
#   status  prints how to reach a running cluster.
#
# Environment (all optional):
#   PALISADE_CLUSTER        name, also the prefix of every namespace and cgroup (default: palisade)
#   PALISADE_CLUSTER_DIR    state directory (default: /tmp/palisade-cluster/$PALISADE_CLUSTER)
#   PALISADE_CLUSTER_NODES  number of nodes (default: 2)
#   PALISADE_IP_FAMILY      dual (IPv4 and IPv6, the default) or ipv4
#   PALISADE_API_PORT       loopback port of the API server forwarder in the root namespace (default 16443)
#   PALISADE_IMAGES         image tarballs (docker-archive) to import on every node, space-separated
#   KUBEBUILDER_ASSETS      a directory with every binary already built (see tests/tools/build-assets.sh)
#
# Nothing is added to the root network namespace (the API server is reached there through a loopback
# forwarder) and no host-wide sysctl changes: the kubelet's kernel tunables are answered by files
# bind-mounted over /proc/sys inside each node's private mount namespace. Addresses come only from
# 198.18.0.0/15 and fd00:198::/32.
set -Eeuo pipefail
{ # bash reads a script while it runs it; one block keeps edits made during a run out of that run.

here=$(cd "$(dirname "$0")" && pwd)
name=${PALISADE_CLUSTER:-palisade}
dir=${PALISADE_CLUSTER_DIR:-/tmp/palisade-cluster/$name}
nodes=${PALISADE_CLUSTER_NODES:-2}
family=${PALISADE_IP_FAMILY:-dual}
api_port=${PALISADE_API_PORT:-16443}
fabric=$name-fabric

# The address plan: the fabric bridge, node K at .1K, pod CIDRs allocated by the controller manager.
fabric_ip4=198.18.0.1 fabric_ip6=fd00:198::1
cluster_cidr4=198.18.128.0/17 cluster_cidr6=fd00:198:8000::/48
service_cidr4=198.18.96.0/24 service_cidr6=fd00:198:96::/112
kubernetes_service_ip=198.18.96.1

[[ $name =~ ^[a-z][a-z0-9]{0,9}$ ]] || { echo "PALISADE_CLUSTER must be 1-10 lowercase letters or digits" >&2; exit 2; }
[[ $nodes =~ ^[1-9]$ ]] || { echo "PALISADE_CLUSTER_NODES must be 1-9" >&2; exit 2; }
[[ $family == dual || $family == ipv4 ]] || { echo "PALISADE_IP_FAMILY must be dual or ipv4" >&2; exit 2; }

say() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
node_name() { echo "$name-n$1"; }
node_ip4() { echo "198.18.0.1$1"; }
node_ip6() { echo "fd00:198::1$1"; }
fabric_ns=(nsenter "--net=/run/netns/$fabric") # a command prefix, as spawn needs
in_fabric() { "${fabric_ns[@]}" "$@"; }
kubectl_() { in_fabric "$assets/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }

# ---------------------------------------------------------------------------------------------- down
down() {
  [[ -d $dir ]] || { say "no cluster $name"; return 0; }
  say "stopping cluster $name"
  local k node sock pid
  for ((k = nodes; k >= 1; k--)); do
    node=$(node_name "$k") sock="$dir/$node/containerd.sock"
    if [[ -S $sock ]] && [[ -x ${assets:-}/crictl ]]; then
      # Pods first, through the CRI, so containerd tears down their networks and cgroups itself.
      timeout 30 "$assets/crictl" --runtime-endpoint "unix://$sock" --timeout 10s rmp -fa >/dev/null 2>&1 || true
    fi
  done
  # Everything this cluster started records its PID; shims are found by the socket they serve.
  for pid in $(cat "$dir"/pids/* 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  for ((k = 1; k <= nodes; k++)); do
    sock="$dir/$(node_name "$k")/containerd.sock"
    pkill -f -- "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    local alive=0
    for pid in $(cat "$dir"/pids/* 2>/dev/null); do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in $(cat "$dir"/pids/* 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  for ((k = 1; k <= nodes; k++)); do
    node=$(node_name "$k")
    pkill -9 -f -- "containerd-shim-runc-v2 .*-address $dir/$node/containerd.sock" 2>/dev/null || true
    # Whatever is left in the node's cgroups (containers of a shim that died first), then the cgroups,
    # deepest first, in every hierarchy.
    # A shim killed while runc froze a container to signal it leaves the cgroup FROZEN, and a frozen
    # process ignores SIGKILL: thaw first.
    local hierarchy state attempt
    if [[ -d /sys/fs/cgroup/freezer/$node ]]; then
      while IFS= read -r state; do echo THAWED >"$state" 2>/dev/null || true; done \
        < <(find "/sys/fs/cgroup/freezer/$node" -name freezer.state)
    fi
    for hierarchy in /sys/fs/cgroup/*/; do
      [[ -d $hierarchy$node ]] || continue
      find "$hierarchy$node" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      for hierarchy in /sys/fs/cgroup/*/; do
        [[ -d $hierarchy$node ]] || continue
        find "$hierarchy$node" -depth -type d -exec rmdir {} + 2>/dev/null || true
      done
      compgen -G "/sys/fs/cgroup/*/$node" >/dev/null || break
      sleep 0.3
    done
    compgen -G "/sys/fs/cgroup/*/$node" >/dev/null && say "cgroups of $node could not be removed: $(compgen -G "/sys/fs/cgroup/*/$node" | tr '\n' ' ')"
    ip netns delete "$node" 2>/dev/null || true
  done
  ip netns delete "$fabric" 2>/dev/null || true
  rm -rf "$dir"
  say "cluster $name is gone"
}

# ------------------------------------------------------------------------------------------------ pki
pki() {
  local p=$dir/pki
  mkdir -p "$p"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=palisade-cluster-ca" -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # cert NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA.
  cert() {
    local ext=$p/$1.ext
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
    [[ -n ${3:-} ]] && echo "subjectAltName=$3" >>"$ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
      -keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
      -extfile "$ext" -out "$p/$1.crt" 2>/dev/null
    rm -f "$p/$1.csr" "$ext"
  }
  local sans="IP:$fabric_ip4,IP:$fabric_ip6,IP:127.0.0.1,IP:$kubernetes_service_ip,IP:fd00:198:96::1"
  sans="$sans,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost"
  cert apiserver "/CN=kube-apiserver" "$sans"
  cert admin "/O=system:masters/CN=palisade-cluster-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  local k
  for ((k = 1; k <= nodes; k++)); do cert "kubelet-$(node_name "$k")" "/O=system:nodes/CN=system:node:$(node_name "$k")"; done
  # kubeconfig FILE USER SERVER
  kubeconfig() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster: {certificate-authority: $p/ca.crt, server: "$3"}
users:
- name: $2
  user: {client-certificate: $p/$2.crt, client-key: $p/$2.key}
contexts:
- name: $name
  context: {cluster: $name, user: $2}
current-context: $name
EOF
  }
  local inside="https://$fabric_ip4:6443"
  kubeconfig "$dir/admin.kubeconfig" admin "$inside"
  kubeconfig "$dir/kubeconfig" admin "https://127.0.0.1:$api_port"
  kubeconfig "$dir/controller-manager.kubeconfig" controller-manager "$inside"
  kubeconfig "$dir/scheduler.kubeconfig" scheduler "$inside"
  kubeconfig "$dir/kube-proxy.kubeconfig" kube-proxy "$inside"
  for ((k = 1; k <= nodes; k++)); do
    kubeconfig "$dir/$(node_name "$k")/kubelet.kubeconfig" "kubelet-$(node_name "$k")" "$inside"
  done
}

# --------------------------------------------------------------------------------------------- network
network() {
  ip netns add "$fabric"
  in_fabric ip link set lo up
  in_fabric ip link add br0 type bridge
  in_fabric ip addr add "$fabric_ip4/24" dev br0
  [[ $family == dual ]] && in_fabric ip addr add "$fabric_ip6/64" dev br0 nodad
  in_fabric ip link set br0 up
  # The fabric routes between nodes' pod CIDRs, so the API server reaches pods (webhooks).
  in_fabric sysctl -qw net.ipv4.ip_forward=1
  [[ $family == dual ]] && in_fabric sysctl -qw net.ipv6.conf.all.forwarding=1
  local k node
  for ((k = 1; k <= nodes; k++)); do
    node=$(node_name "$k")
    ip netns add "$node"
    ip link add "v$name$k" netns "$fabric" type veth peer name eth0 netns "$node"
    in_fabric ip link set "v$name$k" master br0 up
    ip -n "$node" link set lo up
    ip -n "$node" addr add "$(node_ip4 "$k")/24" dev eth0
    [[ $family == dual ]] && ip -n "$node" addr add "$(node_ip6 "$k")/64" dev eth0 nodad
    ip -n "$node" link set eth0 up
    ip -n "$node" route add default via "$fabric_ip4"
    [[ $family == dual ]] && ip -n "$node" -6 route add default via "$fabric_ip6"
    # Bridged pod traffic goes through iptables, as on a real node with br_netfilter.
    nsenter --net="/run/netns/$node" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
    nsenter --net="/run/netns/$node" sysctl -qw net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null || true
  done
}

# A process in the background whose PID is recorded for `down`; output to logs/NAME.log.
spawn() {
  local label=$1; shift
  setsid "$@" >"$dir/logs/$label.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$label"
}

wait_for() { # description, seconds, command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { say "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

# ------------------------------------------------------------------------------------------ control plane
control_plane() {
  local p=$dir/pki services=$service_cidr4 clusters=$cluster_cidr4
  [[ $family == dual ]] && services="$service_cidr4,$service_cidr6" clusters="$cluster_cidr4,$cluster_cidr6"
  spawn etcd "${fabric_ns[@]}" "$assets/etcd" --data-dir "$dir/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --unsafe-no-fsync --log-level warn
  spawn kube-apiserver "${fabric_ns[@]}" "$assets/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$fabric_ip4" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged \
    --client-ca-file "$p/ca.crt" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --service-cluster-ip-range "$services" \
    --enable-aggregator-routing
  # The root namespace reaches the API server only through this loopback forwarder.
  spawn forwarder socat "TCP-LISTEN:$api_port,bind=127.0.0.1,reuseaddr,fork" \
    "EXEC:nsenter --net=/run/netns/$fabric socat STDIO TCP\:$fabric_ip4\:6443"
  wait_for "the API server" 60 kubectl_ get --raw /readyz
  local mask6=()
  [[ $family == dual ]] && mask6=(--node-cidr-mask-size-ipv6 64)
  spawn kube-controller-manager "${fabric_ns[@]}" "$assets/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" --bind-address 127.0.0.1 --leader-elect=false \
    --use-service-account-credentials --service-account-private-key-file "$p/sa.key" \
    --root-ca-file "$p/ca.crt" --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --allocate-node-cidrs --cluster-cidr "$clusters" --node-cidr-mask-size-ipv4 24 "${mask6[@]}" \
    --service-cluster-ip-range "$services"
  spawn kube-scheduler "${fabric_ns[@]}" "$assets/kube-scheduler" --kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
}

# ---------------------------------------------------------------------------------------------- nodes
start_node() {
  local k=$1 node; node=$(node_name "$k")
  local n=$dir/$node ip=$(node_ip4 "$k")
  [[ $family == dual ]] && ip="$ip,$(node_ip6 "$k")"
  mkdir -p "$n"/{cni,log,varlib-upper,varlib-work,containerd,kubelet-certs,sysctl}
  local clusters=$cluster_cidr4
  [[ $family == dual ]] && clusters="$cluster_cidr4,$cluster_cidr6"
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$n/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # The machine's root lacks CAP_SYS_RESOURCE: runc must not raise oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$assets/cni"
    conf_dir = "$n/cni"
EOF
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$node
cgroupsPerQOS: true
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
readOnlyPort: 0
serializeImagePulls: false
containerRuntimeEndpoint: unix://$n/containerd.sock
EOF
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $node
mode: iptables
clusterCIDR: "$clusters"
# Zeros leave the kernel's conntrack settings alone: nf_conntrack_max is global.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  # The kubelet's kernel tunables: it writes them when they differ, and they are host-wide. Files with the
  # values it wants, bind-mounted over /proc/sys in the node's mount namespace, answer it instead.
  local tunable value
  for tunable in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    value=${tunable#*=} tunable=${tunable%=*}
    echo "$value" >"$n/sysctl/${tunable//\//.}"
  done
  cat >"$n/node.sh" <<EOF
#!/usr/bin/env bash
# Runs inside the node's network namespace, in a private mount and UTS namespace.
set -euo pipefail
{
hostname $node
for f in $n/sysctl/*; do t=\${f##*/}; mount --bind "\$f" "/proc/sys/\${t//.//}"; done
# Paths the kubelet, containerd and the CNI plugins hard-code, private to this node.
mount -t overlay overlay -o lowerdir=/var/lib,upperdir=$n/varlib-upper,workdir=$n/varlib-work /var/lib
mount --bind $n/log /var/log
mount -t tmpfs tmpfs /run/containerd 2>/dev/null || { mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd; }
mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
containerd --config $n/containerd.toml >$dir/logs/$node-containerd.log 2>&1 &
echo \$! >$dir/pids/$node-containerd
until [[ -S $n/containerd.sock ]]; do sleep 0.1; done
$assets/kubelet --config $n/kubelet.yaml --kubeconfig $n/kubelet.kubeconfig --cert-dir $n/kubelet-certs \\
  --hostname-override $node --node-ip $ip >$dir/logs/$node-kubelet.log 2>&1 &
echo \$! >$dir/pids/$node-kubelet
$assets/kube-proxy --config $n/kube-proxy.yaml >$dir/logs/$node-kube-proxy.log 2>&1 &
echo \$! >$dir/pids/$node-kube-proxy
wait
exit
}
EOF
  chmod +x "$n/node.sh"
  # The kubelet's cgroup root, at the top of every hierarchy (outside this session's own cgroups).
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    mkdir -p "$hierarchy$node"
    if [[ -f ${hierarchy}cpuset.cpus ]]; then
      cat "${hierarchy}cpuset.cpus" >"$hierarchy$node/cpuset.cpus"
      cat "${hierarchy}cpuset.mems" >"$hierarchy$node/cpuset.mems"
    fi
  done
  spawn "$node" nsenter --net="/run/netns/$node" unshare -m -u --propagation private "$n/node.sh"
}

# Once the controller manager gave the node its pod CIDRs: the CNI configuration, and routes to them
# from the fabric and every other node.
wire_node() {
  local k=$1 node; node=$(node_name "$k")
  wait_for "node $node to register with pod CIDRs" 90 \
    bash -c "[[ -n \$(nsenter --net=/run/netns/$fabric $assets/kubectl --kubeconfig $dir/admin.kubeconfig get node $node -o jsonpath='{.spec.podCIDRs}') ]]"
  local cidrs; cidrs=$(kubectl_ get node "$node" -o jsonpath='{range .spec.podCIDRs[*]}{@} {end}')
  local ranges="" cidr
  for cidr in $cidrs; do ranges="$ranges${ranges:+,}[{\"subnet\": \"$cidr\"}]"; done
  cat >"$dir/$node/cni/10-bridge.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "$name", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [$ranges], "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  local other via
  for cidr in $cidrs; do
    if [[ $cidr == *:* ]]; then via=$(node_ip6 "$k"); else via=$(node_ip4 "$k"); fi
    in_fabric ip route replace "$cidr" via "$via"
    for ((other = 1; other <= nodes; other++)); do
      ((other == k)) || ip -n "$(node_name "$other")" route replace "$cidr" via "$via"
    done
  done
}

import_images() {
  local k image
  for image in ${PALISADE_IMAGES:-}; do
    for ((k = 1; k <= nodes; k++)); do
      ctr --address "$dir/$(node_name "$k")/containerd.sock" -n k8s.io images import --no-unpack=false "$image" >/dev/null
    done
  done
}

status() {
  [[ -f $dir/kubeconfig ]] || { echo "no cluster $name (start one with: make cluster)" >&2; return 1; }
  cat <<EOF
cluster $name: $nodes nodes ($family), state in $dir
  kubeconfig (root namespace, through a loopback forwarder):   export KUBECONFIG=$dir/kubeconfig
  kubeconfig (inside the fabric namespace):   nsenter --net=/run/netns/$fabric kubectl --kubeconfig $dir/admin.kubeconfig ...
  nodes: $(for ((k = 1; k <= nodes; k++)); do printf '%s ' "$(node_name "$k")"; done)(network namespaces; nsenter --net=/run/netns/NODE)
  logs: $dir/logs/
  stop: make cluster-down
EOF
}

up() {
  if [[ -d $dir ]]; then
    say "a cluster $name exists in $dir: stopping it first"
    down
  fi
  local started=$SECONDS
  say "building (or reusing) the Kubernetes binaries"
  assets=$("$here/../tools/build-assets.sh" cluster | tail -n 1)
  mkdir -p "$dir/logs" "$dir/pids"
  for ((k = 1; k <= nodes; k++)); do mkdir -p "$dir/$(node_name "$k")"; done
  echo "$assets" >"$dir/assets"
  echo "$nodes" >"$dir/nodes"
  trap 'say "bring-up failed: removing the partial cluster (logs were in $dir/logs)"; cp -r "$dir/logs" "/tmp/palisade-cluster-$name-failed-logs" 2>/dev/null; down' ERR
  # Interrupted while coming up: nothing half-built stays behind.
  trap 'say "interrupted: removing the partial cluster"; down; exit 130' INT TERM
  local t=$SECONDS
  pki; say "pki ready ($((SECONDS - t)) s)"
  network
  t=$SECONDS; control_plane; say "control plane ready ($((SECONDS - t)) s)"
  t=$SECONDS
  for ((k = 1; k <= nodes; k++)); do start_node "$k"; done
  for ((k = 1; k <= nodes; k++)); do wire_node "$k"; done
  say "nodes registered and wired ($((SECONDS - t)) s)"
  t=$SECONDS; import_images; say "images imported ($((SECONDS - t)) s)"
  wait_for "every node Ready" 90 kubectl_ wait --for=condition=Ready node --all --timeout=1s
  trap - ERR INT TERM
  say "cluster $name up in $((SECONDS - started)) s"
  status
}

case ${1:-} in
  up) up ;;
  down)
    assets=$(cat "$dir/assets" 2>/dev/null || true)
    nodes=$(cat "$dir/nodes" 2>/dev/null || echo "$nodes")
    down
    ;;
  load)
    shift
    nodes=$(cat "$dir/nodes")
    PALISADE_IMAGES="$*" import_images
    ;;
  status) status ;;
  *) echo "usage: $0 up|down|load IMAGE.tar...|status" >&2; exit 2 ;;
esac
exit
}
