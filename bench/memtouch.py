#!/usr/bin/env python3
"""How fast this machine hands out fresh memory: first touch (one byte per 4 KiB page) of 1, 2, 4
and 8 GiB of anonymous memory, 3 s apart. On a VM that gives freed memory back to its host at once
(free page reporting), every page is faulted in from the host again: the server's tmpfs writes pay
this on every byte (bench/analysis.md). Usage: memtouch.py [GIB ...]."""
import mmap
import sys
import time

for gib in [int(a) for a in sys.argv[1:]] or [1, 2, 4, 8]:
    n = gib << 30
    m = mmap.mmap(-1, n)
    t = time.monotonic()
    for off in range(0, n, 4096):
        m[off] = 1
    dt = time.monotonic() - t
    print(f"{gib} GiB first touch: {dt:.2f} s ({n / dt / 1e9:.2f} GB/s)", flush=True)
    m.close()
    time.sleep(3)
