#!/usr/bin/env bash
# The bench server's store: `up` mounts an XFS filesystem with reflink (an image file on the local
# disk, through a direct-I/O loop device) and prints the folder for versitygw's data; `down` takes
# it away. Why not tmpfs: versitygw completes a multipart upload by copying every part into the
# object, which on tmpfs is a real copy (22 s for one 4 GiB object on the bench VM) where XFS
# clones the parts' blocks (1.4 s), as S3 does not make a client wait for a copy either
# (bench/analysis.md, "The server's store"). Without root, loop devices or XFS, `up` prints the
# tmpfs folder instead and the report says which store was used.
set -euo pipefail
img="${BENCH_S3_IMAGE:-/var/tmp/outbound-bench-s3.img}"
mnt="${BENCH_S3_MOUNT:-/var/tmp/outbound-bench-s3-mnt}"
fallback=/dev/shm/outbound-bench-s3

down() {
  if mountpoint -q "$mnt"; then
    umount "$mnt"
  fi
  for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do
    losetup -d "$dev" || true
  done
  rm -f "$img"
  rmdir "$mnt" 2>/dev/null || true
}

up() {
  if [ "$(id -u)" != 0 ] || ! grep -qw xfs /proc/filesystems || [ ! -e /dev/loop-control ]; then
    echo "bench-store: no root, XFS or loop devices here; versitygw's data goes to tmpfs" >&2
    echo "$fallback"
    return
  fi
  if ! command -v mkfs.xfs >/dev/null; then
    echo "bench-store: installing xfsprogs (mkfs.xfs)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q xfsprogs >&2
  fi
  down
  # Sparse: only what the runs hold takes disk space (W2's 8 GiB and its parts share blocks).
  truncate -s 48G "$img"
  mkfs.xfs -q -m reflink=1 "$img"
  mkdir -p "$mnt"
  # Direct I/O on the loop device: the data is cached once (by XFS), not twice.
  dev=$(losetup --direct-io=on -f --show "$img")
  # discard: a deleted object's blocks are given back to the image file at once, or the image
  # would grow by everything the run ever wrote (XFS reuses space in its own order).
  mount -o discard "$dev" "$mnt"
  echo "$mnt/s3"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
