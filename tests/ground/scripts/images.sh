#!/usr/bin/env bash
# The images the ground's registry serves, as OCI layouts; prints their folders, one a line:
#   1. the operator's image, built by scripts/image.sh (`make image`) from the debug binary (the one
#      the tests build), rebuilt only when the binary, the commit or the image's sources change;
#   2. a busybox image (Debian's busybox-static, pinned below) for test containers that need a
#      shell, built once per version into the cache.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
BUSYBOX_VERSION=1:1.35.0-4+deb12u1+b1
BUSYBOX_SHA256=3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744

binary="${OUTBOUND_BINARY:-${CARGO_TARGET_DIR:-$repo/target}/debug/outbound}"
out="${CARGO_TARGET_DIR:-$repo/target}/ground-image"
[ -x "$binary" ] || { echo "images: no $binary (cargo build --bins first)" >&2; exit 1; }
stamp=$( (sha256sum "$binary" | cut -d' ' -f1; git -C "$repo" rev-parse HEAD;
  cd "$repo" && cat scripts/image.sh image/*) | sha256sum | cut -c1-16)
if [ "$(cat "$out/ground-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "images: building the operator's image from $binary" >&2
  (cd "$repo" && OUTBOUND_BINARY="$binary" OUTBOUND_IMAGE_DIR="$out" scripts/image.sh >&2)
  echo "$stamp" >"$out/ground-stamp"
fi
echo "$out/outbound-oci"

bb="$CACHE/images/busybox-${BUSYBOX_VERSION//:/%3a}"
if [ ! -f "$bb/index.json" ]; then
  echo "images: building busybox $BUSYBOX_VERSION (first time on this machine)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  deb="$CACHE/debs/busybox-static_${BUSYBOX_VERSION//:/%3a}_amd64.deb"
  mkdir -p "$CACHE/debs"
  if [ ! -f "$deb" ]; then
    (cd "$work" && apt-get download -q "busybox-static=$BUSYBOX_VERSION" >&2) || {
      apt-get update -qq >&2 && (cd "$work" && apt-get download -q "busybox-static=$BUSYBOX_VERSION" >&2); }
    mv "$work"/busybox-static_*.deb "$deb"
  fi
  [ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$BUSYBOX_SHA256" ] || { echo "images: $deb is not the pinned busybox-static" >&2; exit 1; }
  dpkg-deb -x "$deb" "$work/deb"
  mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/etc"
  chmod 1777 "$work/root/tmp"
  cp "$work/deb/bin/busybox" "$work/root/bin/busybox"
  "$work/root/bin/busybox" --list | while read -r applet; do
    [ "$applet" = busybox ] || ln -s busybox "$work/root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/root/etc/group"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/root" -cf "$work/layer.tar" .
  # The writer of `make image` (built by scripts/image.sh above, cached by its sources' hash).
  writer="$CACHE/bin/oci-image-$( (cd "$repo/image" && cat go.mod go.sum main.go) | sha256sum | cut -c1-16)"
  rm -rf "$bb.tmp"
  "$writer" -layer "$work/layer.tar" -created 0 -created-by "busybox-static $BUSYBOX_VERSION" -user 0:0 \
    -entrypoint /bin/sh -env PATH=/bin -tag "busybox:ground" -layout "$bb.tmp" -tarball "$work/busybox.tar" >/dev/null
  rm -rf "$bb" && mv "$bb.tmp" "$bb"
fi
echo "$bb"
