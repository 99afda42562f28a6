#!/usr/bin/env bash
# Fails when crds/ (or the chart's copy) differs from what the Rust types generate.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cargo run --quiet --bin outbound -- crd > "$tmp"
status=0
for f in crds/outbound.dev.yaml charts/outbound/crds/outbound.dev.yaml; do
  [ -e "$(dirname "$f")" ] || continue
  if ! diff -u "$f" "$tmp" >/dev/null 2>&1; then
    echo "crds: $f is stale; run 'make crds' and commit the result" >&2
    status=1
  fi
done
exit $status
