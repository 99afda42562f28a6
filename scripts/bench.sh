#!/usr/bin/env bash
# `make bench`: Outbound's uploader against s5cmd, rclone and boto3's CRT transfer client on a
# versitygw of its own (data on XFS with reflink, see scripts/bench-store.sh), then
# docs/benchmarks.md. Knobs: see bench/bench.py
# (BENCH_SCALE=0.02 BENCH_RUNS=1 for a smoke run of about a minute; the default is the full run).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"

if [ "${BENCH_RENDER:-}" = 1 ]; then
  exec "$CACHE/venv/bin/python" bench/bench.py
fi

tests/ground/scripts/tools.sh all >&2
# W6's peers compress with pigz too where Debian's package can be installed (else gzip only).
command -v pigz >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q pigz >&2 \
  || echo "bench: no pigz; W6 runs its peers with gzip only" >&2
# Release build of the uploader (the Job's binary is the same code).
if [ -z "${OUTBOUND_BIN:-}" ]; then
  cargo build --release --bin outbound >&2
fi
mkdir -p target/bench
(cd tests/ground && go build -o "$repo/target/bench/benchtool" ./cmd/benchtool)

load=$(cut -d' ' -f1 /proc/loadavg)
echo "bench: load average $load (the figures are only meaningful on a quiet machine)" >&2

data="${BENCH_DATA_DIR:-/var/tmp/outbound-bench}"
rm -rf "$data"
if [ -n "${BENCH_S3_DIR:-}" ]; then
  cleanup() { rm -rf "$data" "$BENCH_S3_DIR"; }
else
  BENCH_S3_DIR=$(scripts/bench-store.sh up)
  export BENCH_S3_DIR
  cleanup() { rm -rf "$data" "$BENCH_S3_DIR"; scripts/bench-store.sh down; }
fi
trap cleanup EXIT
"$CACHE/venv/bin/python" bench/bench.py
# Then the controller at scale: 1,000 deliveries on the ground (docs/benchmarks-controller.md),
# unless BENCH_CONTROLLER=0 (a run of some upload workloads only).
if [ "${BENCH_CONTROLLER:-1}" = 1 ]; then
  scripts/bench-controller.sh
fi
