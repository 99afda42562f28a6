#!/usr/bin/env bash
# Fails when crds/ or the chart's copy differs from what the Rust types generate.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r crds "$tmp/crds.before"
cp charts/outbound/files/crds.yaml "$tmp/chart.before" 2>/dev/null || touch "$tmp/chart.before"
scripts/gen-crds.sh 2>/dev/null
status=0
diff -ru "$tmp/crds.before" crds >/dev/null || { echo "crds: crds/ was stale; regenerated, commit it" >&2; status=1; }
diff -u "$tmp/chart.before" charts/outbound/files/crds.yaml >/dev/null || { echo "crds: the chart's copy was stale; regenerated, commit it" >&2; status=1; }
exit $status
