#!/usr/bin/env bash
# Regenerates crds/ (one file per CRD) and the chart's copy from the Rust types (`outbound crd`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo run --quiet --bin outbound -- crd > "$out"
rm -f crds/*.yaml
python3 - "$out" <<'PY'
import re, sys
docs = open(sys.argv[1]).read().split("---\n")
for doc in docs:
    name = re.search(r"^  name: (\S+)$", doc, re.M).group(1)
    open(f"crds/{name}.yaml", "w").write(doc)
PY
cp "$out" charts/outbound/files/crds.yaml
echo "crds: regenerated crds/ and charts/outbound/files/crds.yaml" >&2
