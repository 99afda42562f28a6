#!/usr/bin/env bash
# Regenerates crds/ (and the chart's copy) from the Rust types: `outbound crd` is the source.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --bin outbound -- crd > crds/outbound.dev.yaml
if [ -d charts/outbound/crds ]; then cp crds/outbound.dev.yaml charts/outbound/crds/outbound.dev.yaml; fi
echo "crds: regenerated" >&2
