#!/usr/bin/env bash
# Proves `make ground-down` leaves nothing running: records every process of the ground (its
# supervisor, control plane, S3 servers, pod processes, and anything naming its state folder),
# stops the ground, then fails if any of them is still alive.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${GROUND_STATE:-$here/.state}"
pids=()
for f in "$STATE"/ground.pid "$STATE"/pids/*.pid; do
  [ -f "$f" ] && pids+=("$(cat "$f")")
done
for p in /proc/[0-9]*; do
  if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "$STATE"; then pids+=("${p#/proc/}"); fi
done
[ "${#pids[@]}" -gt 1 ] || { echo "check-down: the ground is not running (found ${#pids[@]} process)" >&2; exit 1; }
"$here/scripts/down.sh"
sleep 0.5
left=()
for pid in "${pids[@]}"; do
  [ "$pid" = "$$" ] && continue
  if [ -d "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; then left+=("$pid"); fi
done
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "$STATE/"; then left+=("${p#/proc/}"); fi
done
if [ "${#left[@]}" -gt 0 ]; then
  echo "check-down: ${#left[@]} process(es) of the ground still running after ground-down: ${left[*]}" >&2
  ps -o pid,args -p "$(IFS=,; echo "${left[*]}")" >&2
  echo "ground-down: 0 passed, 1 failed"
  exit 1
fi
echo "check-down: ${#pids[@]} processes of the ground were running; none is left after ground-down"
echo "ground-down: 1 passed, 0 failed"
