#!/usr/bin/env python3
"""A/B of two `outbound` binaries on the bench's own versitygw (its store: BENCH_S3_DIR): before/after figures for
an uploader change. Usage: ab.py OLD_BIN NEW_BIN [runs] (env AB_SIZE_MIB, AB_FILES).

Runs alternate (old, new, old, new ...) so drift in the machine's load hits both alike; prints the
median MB/s, CPU s/GB and peak RSS of each. Reuses bench.py's server, data and timing pieces.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

MiB = 1 << 20


def main():
    old, new = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    size = int(os.environ.get("AB_SIZE_MIB", "2048")) * MiB
    nfiles = int(os.environ.get("AB_FILES", "1"))
    os.makedirs(bench.DATA, exist_ok=True)
    src = os.path.join(bench.DATA, "ab")
    os.makedirs(src, exist_ok=True)
    files = [f"f{i:03}.sync" for i in range(nfiles)]
    for i, f in enumerate(files):
        path = os.path.join(src, f)
        if not os.path.exists(path) or os.path.getsize(path) != size // nfiles:
            bench.gen_lines_file(path, size // nfiles, i)
    server = bench.Server()
    env = bench.tool_env(server.endpoint)
    results = {old: [], new: []}
    try:
        for r in range(runs):
            for binary in (old, new):
                server.clean()
                bench.warm(src, files)
                bench.OUTBOUND = binary
                cmd = bench.commands("outbound", server.endpoint, src, files)
                m = bench.measure(cmd, env, size, server)
                if m["rc"] != 0:
                    raise SystemExit(f"{binary} failed")
                results[binary].append(m)
                bench.log(f"run {r} {binary}: {m['mbps']:.0f} MB/s cpu {m['cpu_s_per_gb']:.2f} s/GB "
                          f"server cpu {m['server_cpu_s_per_gb']:.2f} s/GB rss {m['rss_mib']:.0f} MiB (load {bench.loadavg()})")
    finally:
        server.stop()
    for label, binary in (("before", old), ("after", new)):
        ms = results[binary]
        med = lambda k: statistics.median(m[k] for m in ms)  # noqa: E731
        print(f"{label}: {med('mbps'):.0f} MB/s cpu={med('cpu_s_per_gb'):.2f} s/GB "
              f"server_cpu={med('server_cpu_s_per_gb'):.2f} s/GB "
              f"rss={med('rss_mib'):.0f} MiB ({len(ms)} runs, {nfiles} x {size // nfiles // MiB} MiB)")


if __name__ == "__main__":
    main()
