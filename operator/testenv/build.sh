#!/usr/bin/env bash
# Builds the real Kubernetes parts Candela's tests run: etcd, kube-apiserver and
# kube-controller-manager (the operator's integration tests), kube-scheduler, kubelet and
# kube-proxy (the one-node cluster of deploy/local/cluster.sh), and prometheus-adapter (the
# custom metrics API server the hpa autoscaling backend reads), from the wrapper Go modules
# next to this script. Binaries are cached outside the repository under
# ~/.cache/candela/k8s/<key>/bin, keyed by the wrapper go.mod/go.sum files (the
# adapter under adapter-<its own key>/, linked into bin/), so a warm run costs nothing.
# A cold build takes 10-20 minutes on 2 cores (the adapter alone: 2-3 minutes).
#
# Usage: build.sh [component...]
#   (default: etcd kube-apiserver kube-controller-manager prometheus-adapter;
#    also: kube-scheduler kubelet kube-proxy, prometheus-operator and
#    prometheus-config-reloader from ./prometheus-operator, prometheus from ./prometheus,
#    coredns from ./coredns)
# Prints the bin directory on the last line of stdout.
#
# Honors NICE (default 19) and GOFLAGS (e.g. -p=1) to stay polite on shared machines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="v1.33.13"
key="$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" \
  "$here/etcd/main.go" | sha256sum | cut -c1-16)"
root="${CANDELA_K8S_CACHE:-$HOME/.cache/candela/k8s}"
cache="$root/$key"
bin="$cache/bin"
mkdir -p "$bin"
adapter_key="$(cat "$here/adapter/go.mod" "$here/adapter/go.sum" "$here/adapter/tools.go" | sha256sum | cut -c1-16)"
adapter="$root/adapter-$adapter_key/prometheus-adapter"
promop_key="$(cat "$here/prometheus-operator/go.mod" "$here/prometheus-operator/go.sum" | sha256sum | cut -c1-16)"
promop="$root/prometheus-operator-$promop_key"
coredns_key="$(cat "$here/coredns/go.mod" "$here/coredns/go.sum" | sha256sum | cut -c1-16)"
coredns="$root/coredns-$coredns_key/coredns"
prom_key="$(cat "$here/prometheus/go.mod" "$here/prometheus/go.sum" | sha256sum | cut -c1-16)"
prom="$root/prometheus-$prom_key/prometheus"

components=("$@")
if [ ${#components[@]} -eq 0 ]; then
  components=(etcd kube-apiserver kube-controller-manager prometheus-adapter)
fi

nice_cmd=(nice -n "${NICE:-19}")
export CGO_ENABLED=0
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=33 \
-X k8s.io/component-base/version.gitTreeState=clean"

for c in "${components[@]}"; do
  if [ "$c" = prometheus-adapter ]; then
    if [ ! -x "$adapter" ]; then
      echo "building prometheus-adapter (cold builds take minutes)..." >&2
      mkdir -p "$(dirname "$adapter")"
      (cd "$here/adapter" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w" \
        -o "$adapter.tmp" sigs.k8s.io/prometheus-adapter/cmd/adapter)
      mv "$adapter.tmp" "$adapter"
    else
      echo "cached: $adapter" >&2
    fi
    ln -sfn "$adapter" "$bin/prometheus-adapter"
    continue
  fi
  if [ "$c" = coredns ]; then
    if [ ! -x "$coredns" ]; then
      echo "building coredns (cold builds take minutes)..." >&2
      mkdir -p "$(dirname "$coredns")"
      (cd "$here/coredns" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w" \
        -o "$coredns.tmp" github.com/coredns/coredns)
      mv "$coredns.tmp" "$coredns"
    else
      echo "cached: $coredns" >&2
    fi
    ln -sfn "$coredns" "$bin/coredns"
    continue
  fi
  if [ "$c" = prometheus ]; then
    if [ ! -x "$prom" ]; then
      echo "building prometheus (cold builds take minutes)..." >&2
      mkdir -p "$(dirname "$prom")"
      (cd "$here/prometheus" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=2.55.1" \
        -o "$prom.tmp" github.com/prometheus/prometheus/cmd/prometheus)
      mv "$prom.tmp" "$prom"
    else
      echo "cached: $prom" >&2
    fi
    ln -sfn "$prom" "$bin/prometheus"
    continue
  fi
  if [ "$c" = prometheus-operator ] || [ "$c" = prometheus-config-reloader ]; then
    pkg=operator
    [ "$c" = prometheus-config-reloader ] && pkg=prometheus-config-reloader
    if [ ! -x "$promop/$c" ]; then
      echo "building $c (cold builds take minutes)..." >&2
      mkdir -p "$promop"
      (cd "$here/prometheus-operator" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w" \
        -o "$promop/.$c.tmp" "github.com/prometheus-operator/prometheus-operator/cmd/$pkg")
      mv "$promop/.$c.tmp" "$promop/$c"
    else
      echo "cached: $promop/$c" >&2
    fi
    ln -sfn "$promop/$c" "$bin/$c"
    continue
  fi
  if [ -x "$bin/$c" ]; then
    echo "cached: $bin/$c" >&2
    continue
  fi
  echo "building $c (cold builds take minutes)..." >&2
  case "$c" in
    etcd)
      (cd "$here/etcd" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin/.$c.tmp" .)
      ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy)
      (cd "$here/kube" && "${nice_cmd[@]}" go build -trimpath -buildvcs=false -ldflags "$ldflags" \
        -o "$bin/.$c.tmp" "k8s.io/kubernetes/cmd/$c")
      ;;
    *)
      echo "unknown component: $c" >&2
      exit 2
      ;;
  esac
  mv "$bin/.$c.tmp" "$bin/$c"
done

echo "$bin"
