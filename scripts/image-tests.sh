#!/usr/bin/env bash
# The container images, run for real on this machine (podman, rootful, host network, no
# registry): builds them with scripts/build-images.sh (cached), then checks that
#   - both images run as the non-root user 65532 with a read-only root filesystem, all
#     capabilities dropped and no privilege escalation;
#   - the engine image serves the default GGUF mounted read-only and answers a chat
#     request, and stops cleanly (exit 0) on SIGTERM;
#   - the engine image serves an hf:// model from the local hub (engine/hub/tests/fake_hub.py)
#     into a mounted cache volume, as a pod does;
#   - the operator image starts and prints its version;
#   - the OCI archives `--save` writes are valid images.
# Sizes and build times are printed. Needs root; installs podman/skopeo from Debian.
#
#   scripts/image-tests.sh [--profile release|dev]   (default: $IMAGE_PROFILE or release)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${IMAGE_PROFILE:-release}"
[ "${1:-}" = "--profile" ] && PROFILE="$2"
for pkg in podman skopeo; do
  if ! command -v "$pkg" >/dev/null; then
    echo "image-tests: installing $pkg (Debian package)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; }
  fi
done

CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
MODEL="$(scripts/setup.sh --test-deps)"
HF_DIR="$(dirname "$MODEL")/SmolLM2-135M-Instruct-hf"
WORK="$(mktemp -d /tmp/candela-image-tests.XXXXXX)"
ENGINE=localhost/candela:dev
OPERATOR=localhost/candela-operator:dev
HUB_PID=""
cleanup() {
  podman rm -f --ignore -t 2 candela-it-engine candela-it-hf >/dev/null 2>&1 || true
  [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
podman rm -f --ignore candela-it-engine candela-it-hf >/dev/null 2>&1 || true
fail() { echo "image-tests: FAIL: $*" >&2; exit 1; }

t0=$(date +%s)
scripts/build-images.sh --profile "$PROFILE" --save "$WORK/oci"
echo "image-tests: images built in $(( $(date +%s) - t0 )) s (profile $PROFILE)"

# The sandbox's hard limits are below podman's defaults (nofile 1048576): ask for less.
RUN=(podman run --network host --read-only --cap-drop=ALL --security-opt no-new-privileges
     --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() { # PORT CONTAINER
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
    [ "$(podman inspect -f '{{.State.Running}}' "$2")" = true ] || { podman logs "$2" >&2; fail "$2 exited before /health answered"; }
    sleep 0.5
  done
  fail "$2: /health never answered"
}
chat() { # PORT -> prints the answer's content
  curl -sf "http://127.0.0.1:$1/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16,"temperature":0}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
}
check_user() { # CONTAINER
  pid="$(podman inspect -f '{{.State.Pid}}' "$1")"
  uid="$(awk '/^Uid:/{print $2}' "/proc/$pid/status")"
  [ "$uid" = 65532 ] || fail "$1 runs as uid $uid"
  [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$1")" = true ] || fail "$1 root filesystem is writable"
  # The root filesystem really refuses writes (a container without a shell: ask the kernel).
  grep -qE '^[^ ]+ / [^ ]+ ro[, ]' "/proc/$pid/mounts" || fail "$1: / is not mounted read-only"
  echo "image-tests: $1 runs as uid 65532 on a read-only root filesystem"
}

# Image metadata: non-root user, OCI labels.
for image in "$ENGINE" "$OPERATOR"; do
  [ "$(podman image inspect -f '{{.Config.User}}' "$image")" = 65532:65532 ] || fail "$image user"
  for label in title source licenses version revision created; do
    [ -n "$(podman image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$image")" ] \
      || fail "$image lacks org.opencontainers.image.$label"
  done
done

# The OCI archives are images skopeo can read.
for name in candela candela-operator; do
  skopeo inspect --raw "oci-archive:$WORK/oci/$name.oci.tar" | grep -q '"schemaVersion"' \
    || fail "$name.oci.tar is not an OCI image"
done
ls -l "$WORK/oci"

# Operator image: starts and prints its version, read-only, non-root.
version="$("${RUN[@]}" --rm "$OPERATOR" --version)"
[ "$version" = "candela-operator 0.1.0" ] || fail "operator --version printed '$version'"
echo "image-tests: $OPERATOR prints '$version'"

# Engine image, the default GGUF mounted read-only as a PVC would be.
port="$(free_port)"
"${RUN[@]}" -d --name candela-it-engine -v "$MODEL:/models/m.gguf:ro" "$ENGINE" \
  serve --model /models/m.gguf --port "$port" --grpc-port "$(free_port)" \
  --kv-cache-memory 256MiB --max-model-len 2048 >/dev/null
wait_health "$port" candela-it-engine
check_user candela-it-engine
answer="$(chat "$port")"
[ -n "$answer" ] || fail "empty chat answer"
echo "image-tests: $ENGINE answered: $answer"
podman stop -t 30 candela-it-engine >/dev/null
code="$(podman inspect -f '{{.State.ExitCode}}' candela-it-engine)"
[ "$code" = 0 ] || { podman logs candela-it-engine >&2; fail "engine exited $code on SIGTERM"; }
logs="$(podman logs candela-it-engine 2>&1)"
case "$logs" in *$'\e['*) fail "engine logs carry terminal colour codes" ;; esac
case "$logs" in *"serving the OpenAI API"*) ;; *) fail "engine log lacks its start line" ;; esac
podman rm candela-it-engine >/dev/null

# Engine image with an hf:// model from the local hub, into a cache volume (the pod's emptyDir).
cat > "$WORK/hub.json" <<JSON
{"repos": {"HuggingFaceTB/SmolLM2-135M-Instruct": {"revisions": {"main": "$HF_DIR"}}}}
JSON
python3 engine/hub/tests/fake_hub.py "$WORK/hub.json" > "$WORK/hub.port" &
HUB_PID=$!
for _ in $(seq 1 100); do grep -q PORT "$WORK/hub.port" 2>/dev/null && break; sleep 0.1; done
hub="http://127.0.0.1:$(awk '{print $2}' "$WORK/hub.port")"
mkdir -p "$WORK/cache"
chown 65532:65532 "$WORK/cache"
port="$(free_port)"
"${RUN[@]}" -d --name candela-it-hf -v "$WORK/cache:/var/cache/candela" \
  -e HF_HOME=/var/cache/candela/hf -e HF_ENDPOINT="$hub" "$ENGINE" \
  serve --model hf://HuggingFaceTB/SmolLM2-135M-Instruct --port "$port" --grpc-port "$(free_port)" \
  --kv-cache-memory 256MiB --max-model-len 2048 >/dev/null
wait_health "$port" candela-it-hf
check_user candela-it-hf
answer="$(chat "$port")"
[ -n "$answer" ] || fail "empty chat answer (hf://)"
logs="$(podman logs candela-it-hf 2>&1)"
case "$logs" in
  *"downloaded hf://HuggingFaceTB/SmolLM2-135M-Instruct/model-00001-of-00002.safetensors"*"size and sha256 verified"*) ;;
  *) echo "$logs" >&2; fail "no verified download line in the engine's log" ;;
esac
[ -e "$WORK/cache/hf/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/refs/main" ] || fail "nothing in the cache volume"
echo "image-tests: $ENGINE served hf://HuggingFaceTB/SmolLM2-135M-Instruct from the local hub: $answer"
podman stop -t 30 candela-it-hf >/dev/null

echo "image-tests: sizes: $(podman image inspect -f '{{.Size}}' "$ENGINE") bytes ($ENGINE), $(podman image inspect -f '{{.Size}}' "$OPERATOR") bytes ($OPERATOR)"
echo "image-tests: all passed in $(( $(date +%s) - t0 )) s"
