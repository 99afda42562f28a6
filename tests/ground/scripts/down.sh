#!/usr/bin/env bash
# `make ground-down`: stops everything the ground started, by PID, and checks nothing is left.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${GROUND_STATE:-$here/.state}"
[ -d "$STATE" ] || exit 0
alive() { kill -0 "$1" 2>/dev/null; }
if [ -f "$STATE/ground.pid" ]; then
  pid=$(cat "$STATE/ground.pid")
  if alive "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.2; done
  fi
fi
# Whatever the supervisor could not stop (it was killed, say) is stopped here, group by group.
left=0
for f in "$STATE"/ground.pid "$STATE"/pids/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
    left=$((left + 1))
  fi
  rm -f "$f"
done
# Containers whose runc went with the supervisor (killed, say): stopped and deleted through runc's
# state, their root filesystems unmounted.
runc="${OUTBOUND_CACHE:-$HOME/.cache/outbound}/bin/runc"
if [ -d "$STATE/runc" ] && [ -x "$runc" ]; then
  for id in $("$runc" --root "$STATE/runc" list -q 2>/dev/null); do
    "$runc" --root "$STATE/runc" kill "$id" KILL 2>/dev/null
    "$runc" --root "$STATE/runc" delete --force "$id" 2>/dev/null
    left=$((left + 1))
  done
fi
awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
rm -f "$STATE/ready"
[ "$left" -eq 0 ] || echo "ground: killed $left process(es) that outlived the supervisor" >&2
echo "ground: stopped" >&2
