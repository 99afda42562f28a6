#!/usr/bin/env bash
# `make ground-up`: builds what is missing, starts the ground in the background (or reuses a
# running one), waits until it is ready and leaves tests/ground/.state/env behind.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
STATE="${GROUND_STATE:-$here/.state}"

"$here/scripts/tools.sh" all >&2
ground=$("$here/scripts/build.sh")
# The registry's images: the operator's (from the debug binary) and busybox, as OCI layouts.
{ read -r operator_layout; read -r busybox_layout; } < <("$here/scripts/images.sh")
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$operator_layout/index.json")

if [ -f "$STATE/ground.pid" ] && kill -0 "$(cat "$STATE/ground.pid")" 2>/dev/null && [ -f "$STATE/ready" ] \
   && [ "$(readlink "$STATE/ground-binary" 2>/dev/null)" = "$ground" ] \
   && grep -q "GROUND_IMAGE_DIGEST='$digest'" "$STATE/env"; then
  echo "ground: already running (pid $(cat "$STATE/ground.pid")); env in $STATE/env" >&2
  exit 0
fi
"$here/scripts/down.sh" >/dev/null 2>&1 || true
rm -rf "$STATE"
mkdir -p "$STATE/logs"
ln -sfn "$ground" "$STATE/ground-binary"
# Images the node runs as host processes (the tests' own operator binary, the host's shell); every
# other image is pulled from its registry and run with runc.
cat > "$STATE/images.json" <<JSON
{
  "ghcr.io/outbound-dev/outbound": "${OUTBOUND_BINARY:-${CARGO_TARGET_DIR:-$repo/target}/debug/outbound}",
  "busybox": "/bin/sh"
}
JSON
started=$(date +%s)
setsid "$ground" up --state "$STATE" --tools-bin "$CACHE/bin" --python "$CACHE/venv/bin/python" \
  --moto-bootstrap "$here/scripts/moto_bootstrap.py" ${GROUND_S3_DATA:+--s3-data "$GROUND_S3_DATA"} \
  --runc "$(readlink -f "$CACHE/bin/runc")" --image-layout "$operator_layout" --busybox-layout "$busybox_layout" \
  </dev/null >"$STATE/logs/ground.log" 2>&1 &
echo $! > "$STATE/ground.pid"
for _ in $(seq 1 600); do
  if [ -f "$STATE/ready" ]; then
    echo "ground: ready in $(( $(date +%s) - started ))s; run: source $STATE/env" >&2
    exit 0
  fi
  if ! kill -0 "$(cat "$STATE/ground.pid")" 2>/dev/null; then
    echo "ground: failed to start; last lines of $STATE/logs/ground.log:" >&2
    tail -n 30 "$STATE/logs/ground.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "ground: not ready after 300s; see $STATE/logs/" >&2
exit 1
