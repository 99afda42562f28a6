#!/usr/bin/env bash
# `make test`: builds, starts the ground, runs every test suite, then proves the ground stops clean.
set -euo pipefail
cd "$(dirname "$0")/.."
ground=tests/ground
stop() { [ "${KEEP_GROUND:-0}" = 1 ] || "$ground/scripts/down.sh"; }
trap stop EXIT

df -h . | tail -n 1 | awk '{print "disk: " $4 " free at the start"}'
cargo build --bins
"$ground/scripts/up.sh"
# shellcheck disable=SC1091
source "$ground/.state/env"
# The buckets the ground made at start; every other one is a test's (see below).
s3_data="${GROUND_S3_DATA:-$GROUND_STATE/s3}"
mapfile -t keep < <(ls -A "$s3_data")

echo "== ground tests (go test)"
(cd "$ground" && go test -count=1 -v ./internal/... ./e2e/... 2>&1 | tee "$GROUND_STATE/logs/go-test.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go')
echo "== rust tests (cargo test)"
cargo test --all-targets --no-run
cargo test --lib --bins --examples -- --test-threads=2
# One suite at a time, its buckets removed once it passes: together they held 7 GB, and a clean
# checkout's run ran out of disk. The buckets the ground made at start, and versitygw's own
# dot-folders, stay.
for suite in tests/*.rs; do
  cargo test --test "$(basename "$suite" .rs)" -- --test-threads=2
  for bucket in "$s3_data"/*; do
    [ -e "$bucket" ] || continue
    [[ " ${keep[*]} " == *" $(basename "$bucket") "* ]] || rm -rf "$bucket"
  done
done
df -h "$s3_data" | tail -n 1 | awk '{print "disk: " $4 " free after the suites"}'
if [ "${KEEP_GROUND:-0}" != 1 ]; then
  echo "== ground-down leaves nothing running"
  "$ground/scripts/check-down.sh"
fi
