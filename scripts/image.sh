#!/usr/bin/env bash
# `make image`: the operator/uploader OCI image (linux/amd64) from the release binary and the Debian
# packages pinned in image/debian.lock, with no Docker engine and no registry. Writes target/image/:
# outbound-oci/ (OCI image layout: `crane push` it), outbound.tar (`docker load`), digest (the
# manifest's) and outbound.spdx.json (SBOM). The same inputs give the same digest.
#   scripts/image.sh                build; OUTBOUND_BINARY and OUTBOUND_IMAGE_DIR change the binary
#                                   and the output folder, SOURCE_DATE_EPOCH the commit's time
#   scripts/image.sh --update-lock  pin the archive's current packages in image/debian.lock
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
DEBS="$CACHE/debs"
LOCK=image/debian.lock
BINARY="${OUTBOUND_BINARY:-target/release/outbound}"
OUT="${OUTBOUND_IMAGE_DIR:-target/image}"
REPOSITORY=ghcr.io/outbound-dev/outbound
SOURCE_URL=https://github.com/outbound-dev/outbound

die() { echo "image: $*" >&2; exit 1; }

# The packages come from this host's apt sources, which must be Debian 12's for amd64.
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "needs a Debian amd64 host (dpkg, apt-get)"
mkdir -p "$DEBS"

deb_path() { echo "$DEBS/${1}_${2//:/%3a}_$3.deb"; }

# apt_download NAME VERSION DEST: one package into the cache, atomically (another build may be
# reading it). apt's lists are refreshed once, as root, when they do not know the version.
updated=0
apt_download() {
  local name=$1 version=$2 dest=$3 tmp
  tmp=$(mktemp -d "$DEBS/.download.XXXXXX")
  until (cd "$tmp" && apt-get download -q "$name=$version") >"$tmp/log" 2>&1; do
    if [ "$updated" = 0 ] && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >&2
      updated=1
      continue
    fi
    cat "$tmp/log" >&2
    rm -rf "$tmp"
    die "apt-get could not download $name $version (gone from the archive? \`make image-lock\` pins what it has now)"
  done
  mv "$tmp"/*.deb "$dest"
  rm -rf "$tmp"
}

lock_names() { awk '!/^#/ && NF {print $1}' "$LOCK"; }

update_lock() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; updated=1; fi
  local new name version arch deb
  new=$(mktemp)
  grep '^#' "$LOCK" >"$new"
  for name in $(lock_names); do
    version=$(apt-cache policy "$name" | awk '$1 == "Candidate:" {print $2}')
    case "$version" in "" | "(none)") die "apt knows no package $name" ;; esac
    arch=$(apt-cache show "$name=$version" | awk '$1 == "Architecture:" {print $2; exit}')
    deb=$(deb_path "$name" "$version" "$arch")
    # Always fresh from apt (which checks the archive's signed hashes), never a cached copy.
    apt_download "$name" "$version" "$deb"
    echo "$name $version $arch $(sha256sum "$deb" | cut -d' ' -f1)" >>"$new"
  done
  cat "$new" >"$LOCK"  # keeps the lock's mode, unlike mv of a private temp file
  rm -f "$new"
  echo "image: pinned in $LOCK:"
  grep -v '^#' "$LOCK"
}

if [ "${1:-}" = --update-lock ]; then
  update_lock
  exit 0
fi
[ $# = 0 ] || die "usage: $0 [--update-lock]"

[ -x "$BINARY" ] || die "no $BINARY (\`make image\` builds it first)"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
revision=${OUTBOUND_REVISION:-$(git rev-parse HEAD)}
read -r version license < <(python3 -c '
import tomllib
p = tomllib.load(open("Cargo.toml", "rb"))["package"]
print(p["version"], p["license"])')
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# The pinned packages, from the cache or apt, each checked against its pinned sha256.
debs=()
while read -r name pinned arch sha; do
  [ -n "${sha:-}" ] || die "$LOCK: $name has no pinned version (run \`make image-lock\`)"
  deb=$(deb_path "$name" "$pinned" "$arch")
  [ -f "$deb" ] || apt_download "$name" "$pinned" "$deb"
  actual=$(sha256sum "$deb" | cut -d' ' -f1)
  [ "$actual" = "$sha" ] || die "$deb has sha256 $actual but $LOCK pins $sha for $name $pinned:
  the archive's package changed or the cached file is damaged. Delete it to download it again,
  or run \`make image-lock\` to pin what the archive has now."
  debs+=("$deb")
done < <(grep -v -e '^#' -e '^[[:space:]]*$' "$LOCK")

# crane checks the result; oci-image (image/main.go, crane's library) writes it, built once per
# version of its source like the ground.
tests/ground/scripts/tools.sh image
writer_hash=$( (cd image && cat go.mod go.sum main.go) | sha256sum | cut -c1-16)
writer="$CACHE/bin/oci-image-$writer_hash"
if [ ! -x "$writer" ]; then
  echo "image: building oci-image ($writer_hash)" >&2
  (cd image && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$writer.tmp" .)
  mv "$writer.tmp" "$writer"
fi

work="$OUT.work"
rm -rf "$work" "$OUT.tmp"
trap 'rm -rf "$work" "$OUT.tmp"' EXIT
mkdir -p "$work" "$OUT.tmp"
# Debug info out, symbols kept (backtraces still name functions): a quarter of the size.
strip --strip-debug -o "$work/outbound" "$BINARY"
python3 image/rootfs.py --binary "$work/outbound" --mtime "$SOURCE_DATE_EPOCH" --out "$work/layer.tar" "${debs[@]}"

label=org.opencontainers.image
"$writer" -layer "$work/layer.tar" -created "$SOURCE_DATE_EPOCH" \
  -created-by "scripts/image.sh: $(lock_names | tr '\n' ' ')+ outbound $version" \
  -user 65532:65532 -entrypoint /usr/local/bin/outbound -workdir / \
  -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  -env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  -label "$label.source=$SOURCE_URL" -label "$label.revision=$revision" \
  -label "$label.version=$version" -label "$label.licenses=$license" -label "$label.created=$created" \
  -tag "$REPOSITORY:$version" -layout "$OUT.tmp/outbound-oci" -tarball "$OUT.tmp/outbound.tar" \
  >"$OUT.tmp/digest"
find "$OUT.tmp" -type f -exec chmod 644 {} +  # the layout's files are written executable
"$CACHE/bin/crane" validate --tarball "$OUT.tmp/outbound.tar" >/dev/null
python3 image/sbom.py --lock "$LOCK" --cargo-lock Cargo.lock --digest "$(cat "$OUT.tmp/digest")" \
  --version "$version" --license "$license" --revision "$revision" --created "$created" \
  --source "$SOURCE_URL" --repository "$REPOSITORY" >"$OUT.tmp/outbound.spdx.json"

rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "image: $REPOSITORY:$version $(cat "$OUT/digest") in $OUT ($(du -h "$OUT/outbound.tar" | cut -f1))"
