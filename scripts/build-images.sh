#!/usr/bin/env bash
# Builds Candela's container images without any registry:
#   localhost/candela:${TAG:-dev}            engine: `candela serve` / `candela sidecar`
#   localhost/candela-operator:${TAG:-dev}   operator: `candela-operator`, `crdgen`
# from engine/Containerfile and operator/Containerfile. The binaries are built on this
# machine with cargo (cached in target/) and passed in as the Containerfiles' `build`
# stage (`--build-context build=…`); the runtime base is made here from Debian packages
# (libc6, libgcc-s1, CA certificates, netbase, a non-root user 65532) and passed as BASE.
# Users with a registry build the same Containerfiles with their standard builder and
# distroless bases instead (see the Containerfiles' headers).
#
#   scripts/build-images.sh [--profile release|dev] [--tag TAG] [--save DIR] [--engine-image NAME] [--operator-image NAME]
#
#   --profile   cargo profile of the binaries (default release; dev is faster to build and
#               is what the tests use when they only need the images to run)
#   --tag       tag of both images (default dev, or $TAG)
#   --save DIR  also write DIR/candela.oci.tar and DIR/candela-operator.oci.tar (OCI archives,
#               for `ctr images import`, `podman load`, `skopeo copy oci-archive:…`)
#
# Needs root (rootful buildah), cargo, and buildah (installed from Debian when missing).
# The Debian packages of the base are cached in ~/.cache/candela/images/.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
SAVE=""
ENGINE_IMAGE="${ENGINE_IMAGE:-}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --save) SAVE="$2"; shift 2 ;;
    --engine-image) ENGINE_IMAGE="$2"; shift 2 ;;
    --operator-image) OPERATOR_IMAGE="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ENGINE_IMAGE="${ENGINE_IMAGE:-localhost/candela:${TAG:-dev}}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-localhost/candela-operator:${TAG:-dev}}"
case "$PROFILE" in
  release) CARGO_PROFILE_ARGS=(--release); PROFILE_DIR=release ;;
  dev) CARGO_PROFILE_ARGS=(); PROFILE_DIR=debug ;;
  *) echo "build-images.sh: --profile is release or dev, got $PROFILE" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "build-images.sh: needs root (rootful buildah)" >&2; exit 1; }
if ! command -v buildah >/dev/null; then
  echo "build-images.sh: installing buildah (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null; }
fi

CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}/images"
TARGET="${CARGO_TARGET_DIR:-target}"
STAGE="$TARGET/images"
mkdir -p "$CACHE/debs" "$STAGE"
t0=$(date +%s)

# 1. The binaries.
echo "== cargo build ($PROFILE): candela, candela-operator, crdgen" >&2
cargo build --locked "${CARGO_PROFILE_ARGS[@]}" -p candela -p candela-operator --bins >&2
rm -rf "$STAGE/engine" "$STAGE/operator"
mkdir -p "$STAGE/engine/out/usr/local/bin" "$STAGE/operator/out/usr/local/bin"
cp "$TARGET/$PROFILE_DIR/candela" "$STAGE/engine/out/usr/local/bin/"
cp "$TARGET/$PROFILE_DIR/candela-operator" "$TARGET/$PROFILE_DIR/crdgen" "$STAGE/operator/out/usr/local/bin/"
strip "$STAGE"/engine/out/usr/local/bin/* "$STAGE"/operator/out/usr/local/bin/*

# 2. The runtime base from Debian packages, named by the packages' versions.
PACKAGES=(libc6 libgcc-s1 ca-certificates netbase)
versions="$(apt-cache policy "${PACKAGES[@]}" | awk '/^[a-z]/{p=$1} /Candidate:/{print p $2}' | tr '\n' ' ')"
BASE="localhost/candela-base:bookworm-$(echo "$versions" | sha256sum | cut -c1-12)"
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "== runtime base $BASE from Debian packages: $versions" >&2
  (cd "$CACHE/debs" && { apt-get download "${PACKAGES[@]}" >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get download "${PACKAGES[@]}" >/dev/null; }; })
  rootfs="$STAGE/base-rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  for p in "${PACKAGES[@]}"; do
    deb="$(ls -t "$CACHE/debs/${p}_"*.deb | head -n1)"
    dpkg-deb -x "$deb" "$rootfs"
  done
  # The CA bundle update-ca-certificates would write, from the package's certificates.
  mkdir -p "$rootfs/etc/ssl/certs"
  find "$rootfs/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat > "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # What the packages' maintainer scripts and distroless add: users, dirs, name service.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
  printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
  mkdir -p "$rootfs/tmp" "$rootfs/home/nonroot" "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  chown 65532:65532 "$rootfs/home/nonroot"
  rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian" "$rootfs/usr/share/locale"
  c="$(buildah from --quiet scratch)"
  m="$(buildah mount "$c")"
  cp -a "$rootfs/." "$m/"
  buildah umount "$c" >/dev/null
  buildah config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/bin:/usr/bin:/bin --env HOME=/home/nonroot \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.description="Candela runtime base: Debian $versions" "$c"
  buildah commit --quiet --rm "$c" "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

# 3. The images: the Containerfiles with the host-built binaries as their build stage.
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
build() { # IMAGE CONTAINERFILE STAGEDIR
  echo "== $1" >&2
  old="$(buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true)"
  buildah build --quiet --pull=never --layers=false \
    --build-context "build=$3" --build-arg "BASE=$BASE" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED" \
    -f "$2" -t "$1" . >/dev/null
  # The image this tag named before is now untagged: remove it rather than pile them up.
  new="$(buildah inspect --type image --format '{{.FromImageID}}' "$1")"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    buildah rmi "$old" >/dev/null 2>&1 || true
  fi
}
build "$ENGINE_IMAGE" engine/Containerfile "$STAGE/engine"
build "$OPERATOR_IMAGE" operator/Containerfile "$STAGE/operator"

if [ -n "$SAVE" ]; then
  mkdir -p "$SAVE"
  for pair in "candela:$ENGINE_IMAGE" "candela-operator:$OPERATOR_IMAGE"; do
    file="$SAVE/${pair%%:*}.oci.tar"
    image="${pair#*:}"
    rm -f "$file"
    buildah push --quiet "$image" "oci-archive:$file:$image" >/dev/null
    echo "saved $image to $file" >&2
  done
fi

for image in "$ENGINE_IMAGE" "$OPERATOR_IMAGE"; do
  echo "$image: $(buildah images --format '{{.Size}}' "$image" | head -n1)" >&2
done
echo "built in $(( $(date +%s) - t0 )) s: $ENGINE_IMAGE $OPERATOR_IMAGE" >&2
