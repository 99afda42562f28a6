#!/usr/bin/env bash
# Builds cmd/health (Argo CD's Lua health checks and Flux's kstatus, run on an object) once per
# source version into the cache and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
hash=$( (cat go.mod go.sum; find cmd/health -name '*.go' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
out="$CACHE/bin/health-$hash"
if [ ! -x "$out" ]; then
  GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$out.tmp" ./cmd/health
  mv "$out.tmp" "$out"
fi
echo "$out"
