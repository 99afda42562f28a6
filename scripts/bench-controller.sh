#!/usr/bin/env bash
# `make bench-controller`: the controller at scale. 1,000 suspended deliveries created at once on
# the ground against the release operator; writes docs/benchmarks-controller.md and prints one
# `CONTROLLER ...` line. Knobs: BENCH_DELIVERIES (1000), BENCH_CREATE_CONCURRENCY (64),
# BENCH_RESYNC_WINDOW (seconds watched after the resync catches up, 20). See bench/controller.rs.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# The operator under test and the driver, both release builds (one cargo call: one lib build).
cargo build --release --bin outbound --example bench-controller >&2
# A ground this run starts is stopped at the end (KEEP_GROUND=1 keeps it); a running one is reused.
state=tests/ground/.state
if ! { [ -f "$state/ready" ] && kill -0 "$(cat "$state/ground.pid" 2>/dev/null)" 2>/dev/null; }; then
  [ "${KEEP_GROUND:-0}" = 1 ] || trap 'tests/ground/scripts/down.sh' EXIT
fi
tests/ground/scripts/up.sh
# shellcheck disable=SC1091
source tests/ground/.state/env
if [ ! -f "${GROUND_AUDIT_LOG:-}" ]; then
  echo "bench-controller: the running ground has no audit log (started by an older ground build); restart it: make ground-down ground-up" >&2
  exit 1
fi
OUTBOUND_BIN="$repo/target/release/outbound" target/release/examples/bench-controller
