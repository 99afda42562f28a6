#!/usr/bin/env bash
# `make test`: builds, starts the ground, runs every test suite, then proves the ground stops clean.
set -euo pipefail
cd "$(dirname "$0")/.."
ground=tests/ground
stop() { [ "${KEEP_GROUND:-0}" = 1 ] || "$ground/scripts/down.sh"; }
trap stop EXIT

cargo build --bins
"$ground/scripts/up.sh"
# shellcheck disable=SC1091
source "$ground/.state/env"

echo "== ground tests (go test)"
(cd "$ground" && go test -count=1 -v ./internal/... ./e2e/... 2>&1 | tee "$GROUND_STATE/logs/go-test.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go')
echo "== rust tests (cargo test)"
cargo test --all-targets -- --test-threads=2
if [ "${KEEP_GROUND:-0}" != 1 ]; then
  echo "== ground-down leaves nothing running"
  "$ground/scripts/check-down.sh"
fi
