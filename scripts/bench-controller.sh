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
tests/ground/scripts/up.sh
# shellcheck disable=SC1091
source tests/ground/.state/env
if [ ! -f "${GROUND_AUDIT_LOG:-}" ]; then
  echo "bench-controller: the running ground has no audit log (started by an older ground build); restart it: make ground-down ground-up" >&2
  exit 1
fi
OUTBOUND_BIN="$repo/target/release/outbound" exec target/release/examples/bench-controller
