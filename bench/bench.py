#!/usr/bin/env python3
"""`make bench`: Outbound's uploader against s5cmd, rclone and boto3's CRT transfer client.

Run by scripts/bench.sh (which builds what is needed). Knobs (environment):
  BENCH_SCALE      data size factor (1 = the issue's sizes: W1 4 GiB, W2 8 GiB, W3 64 x 64 MiB)
  BENCH_RUNS       runs per configuration (median reported), default 5
  BENCH_DEFAULT_RUNS  runs of the peers at their own defaults, default BENCH_RUNS
  BENCH_WORKLOADS  comma list out of ceiling,W1,W2,W3,W4,W5,W6 (default all)
  BENCH_MERGE      =1: keep the other workloads' figures of bench/results.json (a run of some only)
  BENCH_CONTROLLER =0: scripts/bench.sh skips the controller benchmark
  BENCH_DATA_DIR   where source files are generated (disk), default /var/tmp/outbound-bench
  BENCH_KEEPALIVE  0: versitygw closes connections after each response (its default); 1 (default): kept open
  BENCH_SERVER_ARGS  versitygw posix options, default --data-integrity-etag ("" for MD5 ETags)
  BENCH_S3_DIR     versitygw's data folder; scripts/bench.sh sets it to an XFS mount with reflink
                   (scripts/bench-store.sh); default /dev/shm/outbound-bench-s3 (tmpfs)
  BENCH_OUT        the report, default docs/benchmarks.md
  BENCH_RESULTS    the raw figures (JSON), default bench/results.json
  BENCH_RENDER     =1: only re-render the report from bench/results.json
"""
import base64
import functools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import charts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("OUTBOUND_CACHE", os.path.expanduser("~/.cache/outbound"))
TOOLS = os.path.join(CACHE, "bin")
PY = os.path.join(CACHE, "venv", "bin", "python")
OUTBOUND = os.environ.get("OUTBOUND_BIN", os.path.join(REPO, "target", "release", "outbound"))
BENCHTOOL = os.environ.get("BENCHTOOL_BIN", os.path.join(REPO, "target", "bench", "benchtool"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# Runs of the peers at their own defaults (the @equal pairs are the floor's comparison).
DEFAULT_RUNS = int(os.environ.get("BENCH_DEFAULT_RUNS", str(RUNS)))
WORKLOADS = os.environ.get("BENCH_WORKLOADS", "ceiling,W1,W2,W3,W4,W5,W6").split(",")
# W6 (a gzip file cut on lines into gzip pieces) is CPU-bound for every tool: fewer runs.
W6_RUNS = int(os.environ.get("BENCH_W6_RUNS", "2"))
DATA = os.environ.get("BENCH_DATA_DIR", "/var/tmp/outbound-bench")
S3DIR = os.environ.get("BENCH_S3_DIR", "/dev/shm/outbound-bench-s3")
# versitygw posix options for every run. By default its part and object ETags are derived from the
# CRC-64/NVME it computes anyway instead of an MD5 of every byte: the MD5 was half of the server's
# CPU, on the two cores the clients share (bench/analysis.md, "The server's ETag"). Every part's
# checksum is still verified. BENCH_SERVER_ARGS="" gives versitygw's MD5 ETags.
SERVER_ARGS = os.environ.get("BENCH_SERVER_ARGS", "--data-integrity-etag").split()
# versitygw closes every connection after one response unless told otherwise; S3 keeps them open,
# and so does the bench's server (BENCH_KEEPALIVE=0 for versitygw's default).
KEEPALIVE = ["--keep-alive"] if os.environ.get("BENCH_KEEPALIVE", "1") == "1" else []
OUT = os.environ.get("BENCH_OUT", os.path.join(REPO, "docs", "benchmarks.md"))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(REPO, "bench", "results.json"))
NOTES = os.path.join(REPO, "bench", "analysis.md")
BUCKET = "bench"
KEY, SECRET = "benchroot", "benchsecret-" + "%016x" % random.getrandbits(64)
MiB, GiB = 1 << 20, 1 << 30

# Outbound's defaults (src/upload/mod.rs): 16 MiB parts, 8 parts in flight, CRC64NVME.
PART = 16 * MiB
CONC = 8


def outbound_part(size):
    """Outbound's default part size for an object of `size` bytes (src/plan.rs, part_size_for):
    16 MiB, grown for objects over 1 GiB to about 64 parts of at most 64 MiB, and to whole MiB
    enough for 10,000 parts. The peers' `@equal` runs use the same size."""
    whole_mib = lambda n: -(-n // MiB) * MiB  # noqa: E731
    return max(PART, min(whole_mib(-(-size // 64)), 64 * MiB), whole_mib(-(-size // 10000)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def loadavg():
    return open("/proc/loadavg").read().split()[0]


# ---------------------------------------------------------------- data


def gen_lines_file(path, size, seed):
    """Line-oriented text (base64 lines of 77 bytes) from a few random 16 MiB blocks, big writes."""
    rnd = random.Random(seed)
    blocks = []
    for _ in range(4):
        raw = rnd.randbytes(12 * MiB)
        blocks.append(base64.encodebytes(raw))  # 76 chars + '\n' per line
    with open(path, "wb", buffering=0) as f:
        left, i = size, 0
        while left > 0:
            b = blocks[i % len(blocks)]
            if left < len(b):
                b = b[:left - 1] + b"\n" if left > 1 else b"\n"
            f.write(b)
            left -= len(b)
            i += 1


# ---------------------------------------------------------------- server


class Server:
    def __init__(self, posix_args=None):
        shutil.rmtree(S3DIR, ignore_errors=True)
        os.makedirs(os.path.join(S3DIR, "data", BUCKET))
        os.makedirs(os.path.join(S3DIR, "iam"))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, ROOT_ACCESS_KEY_ID=KEY, ROOT_SECRET_ACCESS_KEY=SECRET)
        self.log = open(os.path.join(DATA, "versitygw.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(TOOLS, "versitygw"), "--port", f"127.0.0.1:{self.port}",
             "--iam-dir", os.path.join(S3DIR, "iam"), "--quiet", *KEEPALIVE, "posix",
             *(SERVER_ARGS if posix_args is None else posix_args), os.path.join(S3DIR, "data")],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("versitygw did not start")

    def bucket_dir(self):
        return os.path.join(S3DIR, "data", BUCKET)

    def objects(self):
        """key -> size of the bucket's objects (read on the server's folder)."""
        out, root = {}, self.bucket_dir()
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if not x.startswith(".sgw")]
            for f in files:
                p = os.path.join(d, f)
                out[os.path.relpath(p, root)] = os.path.getsize(p)
        return out

    def clean(self):
        root = self.bucket_dir()
        for e in os.listdir(root):
            p = os.path.join(root, e)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        settle()

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(S3DIR, ignore_errors=True)


def settle():
    """Lets the deletes of a clean finish before the next timed run. On the XFS store (mounted with
    `discard`) the blocks a delete frees stay busy until their discard completes, and the next
    run's allocations wait for them (`xfs_extent_busy_flush`, seen in `perf` as idle cores inside
    a timed run): commit the log, then trim, so that no run pays for the one before it."""
    mount = xfs_store_mount()
    if mount:
        subprocess.run(["sync", "-f", S3DIR], check=True)
        subprocess.run(["fstrim", mount], check=True)


@functools.cache
def xfs_store_mount():
    """The mount point of the server's store if it is XFS (scripts/bench-store.sh), else None;
    the store does not move during a run, so it is looked up once."""
    mount = sh(f"findmnt -n -o TARGET,FSTYPE -T {S3DIR}").split()
    return mount[0] if len(mount) == 2 and mount[1] == "xfs" else None


class Proxy:
    def __init__(self, upstream_port, dump=None):
        self.count = os.path.join(DATA, "proxy.count")
        portf = os.path.join(DATA, "proxy.port")
        for f in (self.count, portf):
            if os.path.exists(f):
                os.unlink(f)
        cmd = [BENCHTOOL, "proxy", "-upstream", f"127.0.0.1:{upstream_port}", "-port-file", portf,
               "-count-file", self.count]
        if dump:
            cmd += ["-dump-headers", dump]
        self.proc = subprocess.Popen(cmd, start_new_session=True)
        for _ in range(200):
            if os.path.exists(portf) and open(portf).read():
                break
            time.sleep(0.05)
        self.port = int(open(portf).read())
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def up(self):
        try:
            return int(open(self.count).read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return self.up()


# ---------------------------------------------------------------- tools


def tool_env(server_endpoint):
    return dict(
        os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        RCLONE_CONFIG="/dev/null", RCLONE_S3_PROVIDER="Other", RCLONE_S3_ENDPOINT=server_endpoint,
        RCLONE_S3_ACCESS_KEY_ID=KEY, RCLONE_S3_SECRET_ACCESS_KEY=SECRET, RCLONE_S3_REGION="us-east-1",
        RCLONE_S3_FORCE_PATH_STYLE="true")


def spread(nfiles):
    """Equal settings for several files: files side by side x parts per file = CONC in flight."""
    files = max(1, min(CONC, nfiles))
    return files, max(1, CONC // files)


def commands(cfg, ep, src_dir, files, extra=None, part=PART):
    """The command (a list, or a shell string) for one configuration uploading `files` (relative
    to src_dir) to keys of the same names. `extra` holds Outbound's split settings (W2); `part` is
    the part size of the `@equal` peers (Outbound's own for the workload's objects)."""
    nf = len(files)
    fpar, per = spread(nf)
    abspaths = [os.path.join(src_dir, f) for f in files]
    if cfg == "outbound":
        cmd = [OUTBOUND, "upload", "--bucket", BUCKET, "--endpoint", ep, "--force-path-style",
               "--source", src_dir, "--credentials", "keys", "--termination-log", "/dev/null"]
        return cmd + (extra or [])
    if cfg.startswith("s5cmd"):
        base = [os.path.join(TOOLS, "s5cmd"), "--endpoint-url", ep, "--log", "error"]
        if cfg == "s5cmd@equal":
            base += ["--numworkers", str(fpar)]
            opts = ["-p", str(part // MiB), "-c", str(per)]
        else:
            opts = []
        target = f"s3://{BUCKET}/"
        if nf == 1:
            return base + ["cp"] + opts + [abspaths[0], target + files[0]]
        return base + ["cp"] + opts + [src_dir.rstrip("/") + "/*", target]
    if cfg.startswith("rclone"):
        base = [os.path.join(TOOLS, "rclone"), "--config", "/dev/null", "-q", "--s3-no-check-bucket"]
        if cfg == "rclone@equal":
            base += ["--s3-chunk-size", f"{part // MiB}M", "--s3-upload-cutoff", f"{part // MiB}M",
                     "--s3-upload-concurrency", str(per), "--transfers", str(fpar)]
        if nf == 1:
            return base + ["copyto", abspaths[0], f":s3:{BUCKET}/{files[0]}"]
        return base + ["copy", src_dir, f":s3:{BUCKET}/"]
    if cfg.startswith("crt"):
        cmd = [PY, os.path.join(REPO, "bench", "crt_upload.py"), "--endpoint", ep, "--bucket", BUCKET]
        if cfg == "crt@equal":
            cmd += ["--part-size", str(part), "--concurrency", str(CONC), "--checksum", "CRC64NVME"]
        return cmd + [f"{p}={f}" for p, f in zip(abspaths, files)]
    raise ValueError(cfg)


CONFIGS = ["outbound", "s5cmd@equal", "rclone@equal", "crt@equal", "s5cmd@default", "rclone@default",
           "crt@default"]
INTEGRITY = {
    "outbound": "CRC64NVME of every part in x-amz-checksum-crc64nvme (computed from the mapped "
                "part just before it is sent), the full-object CRC64NVME (combined from the "
                "parts) checked by the server at completion and compared after; "
                "UNSIGNED-PAYLOAD (no SigV4 body hash)",
    "s5cmd@equal": "no option: aws-sdk-go v1 sends Content-MD5 per part and signs the body "
                   "(SHA-256): two digests of every byte",
    "s5cmd@default": "as s5cmd@equal",
    "rclone@equal": "provider Other: MD5 of the whole file read before the upload (metadata), "
                    "Content-MD5 per part, SigV4 body SHA-256 on parts",
    "rclone@default": "as rclone@equal (a single PUT below 200 MiB is UNSIGNED-PAYLOAD + Content-MD5)",
    "crt@equal": "CRC64NVME trailer checksum per part (ChecksumAlgorithm=CRC64NVME), "
                 "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "crt@default": "CRC32 trailer checksum per part (the CRT transfer manager's default)",
}


def run_timed(cmd, env, kill_at=None, proxy=None):
    """Runs cmd; returns (seconds, exit status, rusage). kill_at: SIGKILL once the proxy counted
    that many bytes upstream."""
    # /usr/bin/time measures: ru_maxrss of a process forked from this (large) Python process
    # would count the fork's pre-exec pages; `time` is small, and it waits for the whole tree.
    if isinstance(cmd, str):
        cmd = ["/bin/bash", "-c", cmd]
    tfile = os.path.join(DATA, "time.out")
    cmd = ["/usr/bin/time", "-o", tfile, "-f", "%e %U %S %M %F %R %w %c"] + cmd
    out = open(os.path.join(DATA, "last-run.log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    killed = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG if kill_at else 0)
        if pid:
            break
        if kill_at and proxy.up() >= kill_at and not killed:
            os.killpg(p.pid, signal.SIGKILL)  # the uploader, not only `time`
            killed = True
        time.sleep(0.01)
    secs = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    out.close()
    if p.returncode != 0 and not killed:
        log(open(os.path.join(DATA, "last-run.log")).read()[-3000:])
    try:
        fields = open(tfile).read().strip().splitlines()[-1].split()
        user, system = float(fields[1]), float(fields[2])
        rss, major, minor, waits, preempted = (int(x) for x in fields[3:8])
    except (OSError, IndexError, ValueError):  # killed: `time` itself got the SIGKILL
        user, system, rss, major = ru.ru_utime, ru.ru_stime, ru.ru_maxrss, ru.ru_majflt
        minor, waits, preempted = ru.ru_minflt, ru.ru_nvcsw, ru.ru_nivcsw
    # The split shows where a client's CPU goes when it moves between runs: user (checksums,
    # HTTP) or system (socket copies, page faults), and how often it waited or was preempted.
    usage = {"cpu_s": user + system, "user_s": user, "system_s": system, "rss_kib": rss,
             "major_faults": major, "minor_faults": minor, "waits": waits, "preempted": preempted}
    return secs, p.returncode, usage


def proc_cpu_s(pid):
    """User + system CPU seconds of a running process (from /proc)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd, env, nbytes, server):
    # The server's CPU too: client and server share the 2 cores, so a client's throughput is
    # bounded by 2 / (client + server CPU per GB) and the split shows who spends the cores.
    s0 = proc_cpu_s(server.proc.pid)
    secs, rc, ru = run_timed(cmd, env)
    srv = proc_cpu_s(server.proc.pid) - s0
    cpu = ru["cpu_s"]
    return {"secs": secs, "rc": rc, "mbps": nbytes / secs / 1e6, "rss_mib": ru["rss_kib"] / 1024,
            "cpu_s": cpu, "cpu_s_per_gb": cpu / (nbytes / 1e9), "server_cpu_s_per_gb": srv / (nbytes / 1e9),
            # Major faults: pages the client had to read from disk (its source left the page cache).
            **{k: ru[k] for k in ("user_s", "system_s", "major_faults", "minor_faults", "waits", "preempted")}}


def printable(cmd):
    s = cmd if isinstance(cmd, str) else " ".join(cmd)
    return (s.replace(REPO + "/", "").replace(TOOLS + "/", "").replace(PY, "python")
            .replace(DATA, "$DATA"))


# ---------------------------------------------------------------- workloads


def check(server, want):
    got = server.objects()
    if got != want:
        raise SystemExit(f"wrong objects on the server:\n got  {sorted(got.items())[:8]}\n want {sorted(want.items())[:8]}")


def warm(src_dir, files):
    """Reads the files once, so that they are in the page cache."""
    for f in files:
        with open(os.path.join(src_dir, f), "rb", buffering=0) as fh:
            while fh.read(8 * MiB):
                pass


def throughput_workload(name, server, src_dir, files, extra, want, nbytes, peer_prep=None,
                        split_size=None):
    """Every configuration RUNS times, in a rotated order per run; the bucket is emptied before each."""
    env = tool_env(server.endpoint)
    res = {c: [] for c in CONFIGS}
    cmds = {}
    part = outbound_part(max(want.values()))
    # The peers' part size mirrors Outbound's rule: check it against Outbound's own plan.
    planned = json.loads(subprocess.run([OUTBOUND, "plan", "--source", src_dir, "--output", "json", *(extra or [])],
                                        capture_output=True, text=True, check=True).stdout)
    sizes = sorted(o["partSize"] for o in planned["objects"] if o["multipart"])
    if sizes != sorted(outbound_part(size) for size in want.values() if size > PART):
        raise SystemExit(f"{name}: Outbound plans parts of {sizes}, bench.outbound_part() says {part} for the largest")
    for r in range(RUNS):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
        for cfg in order:
            if cfg.endswith("@default") and r >= DEFAULT_RUNS:
                continue
            server.clean()
            # Every tool starts with its source in the page cache (untimed): otherwise what the
            # previous tool left there decides (W2's source, split's pieces and the server's
            # objects do not all fit in memory), and the figure measures the order, not the tool.
            warm(src_dir, files)
            if split_size and cfg != "outbound":
                # What a user does without Outbound: GNU split -C, then the upload, timed together.
                pieces = os.path.join(DATA, "pieces")
                shutil.rmtree(pieces, ignore_errors=True)
                os.makedirs(pieces)
                stem, ext = files[0].split(".", 1)
                npieces = len(want)
                pfiles = [f"{stem}-{i:03d}.{ext}" for i in range(1, npieces + 1)]
                up = commands(cfg, server.endpoint, pieces, pfiles, part=part)
                up_s = up if isinstance(up, str) else " ".join(f"'{x}'" for x in up)
                cmd = (f"set -e; split -C {split_size} -d -a 3 --numeric-suffixes=1 "
                       f"--additional-suffix=.{ext} '{os.path.join(src_dir, files[0])}' '{pieces}/{stem}-' && {up_s}")
            else:
                cmd = commands(cfg, server.endpoint, src_dir, files, extra, part=part)
            cmds[cfg] = printable(cmd)
            m = measure(cmd, env, nbytes, server)
            if m["rc"] != 0:
                raise SystemExit(f"{name} {cfg} failed (exit {m['rc']})")
            check(server, want)
            m["load"] = loadavg()
            res[cfg].append(m)
            log(f"{name} run {r + 1}/{RUNS} {cfg:15s} {m['mbps']:8.1f} MB/s  rss {m['rss_mib']:6.1f} MiB  "
                f"cpu {m['cpu_s_per_gb']:.2f} s/GB (user {m['user_s']:.1f} s, sys {m['system_s']:.1f} s)  server cpu {m['server_cpu_s_per_gb']:.2f} s/GB  major faults {m['major_faults']}  load {m['load']}")
            if split_size:
                shutil.rmtree(os.path.join(DATA, "pieces"), ignore_errors=True)
    server.clean()
    # BENCH_DEFAULT_RUNS=0 leaves the @default configurations without runs: not in the report.
    return {"bytes": nbytes, "runs": {c: v for c, v in res.items() if v}, "commands": cmds,
            "part_size": part}


W6_CONFIGS = ["outbound", "gzip+crt@equal", "gzip+s5cmd@equal", "pigz+crt@equal", "pigz+s5cmd@equal"]


def gzip_workload(server, src_dir, fname, nbytes, split):
    """W6: one gzip file cut on lines into gzip pieces of at most `split` bytes. Outbound does it
    in one command; the peers' way is `zcat | split -C | gzip` (or pigz), then an upload of the
    pieces, timed together. split -C cuts the decompressed lines, so it is given the split size
    scaled by the file's own ratio, less 3% (level 6 pieces come out smaller than the level 1
    source): a guess, where Outbound's pieces are held to the split size exactly."""
    env = tool_env(server.endpoint)
    src = os.path.join(src_dir, fname)
    usize = int(sh(f"zcat '{src}' | wc -c"))
    ucut = int(split * usize / nbytes * 0.97)
    stem, ext = fname.split(".", 1)
    pigz = shutil.which("pigz")
    configs = [c for c in W6_CONFIGS if pigz or not c.startswith("pigz")]
    res, cmds = {c: [] for c in configs}, {}
    for r in range(W6_RUNS):
        for cfg in configs[r % len(configs):] + configs[:r % len(configs)]:
            server.clean()
            warm(src_dir, [fname])
            if cfg == "outbound":
                cmd = commands("outbound", server.endpoint, src_dir, [fname],
                               ["--split-size", str(split), "--split-on", "lines"])
            else:
                pieces = os.path.join(DATA, "pieces")
                shutil.rmtree(pieces, ignore_errors=True)
                os.makedirs(pieces)
                gz, peer = cfg.split("+", 1)
                filt = "gzip -6" if gz == "gzip" else "pigz -6 -p 2"
                # Settings as for any upload of that many pieces (split's count, give or take one).
                names = [f"{stem}-{i:03d}.{ext}" for i in range(1, -(-usize // ucut) + 1)]
                up = commands(peer, server.endpoint, pieces, names, part=outbound_part(split))
                if peer.startswith("crt"):
                    # The pieces split really made, whatever their number.
                    up = up[:up.index(f"{os.path.join(pieces, names[0])}={names[0]}")]
                    up_s = " ".join(f"'{x}'" for x in up) + f" $(cd '{pieces}' && for f in *; do echo \"$PWD/$f=$f\"; done)"
                else:
                    up_s = " ".join(f"'{x}'" for x in up)
                cmd = (f"set -e; zcat '{src}' | split -C {ucut} -d -a 3 --numeric-suffixes=1 "
                       f"--additional-suffix=.{ext} --filter='{filt} > $FILE' - '{pieces}/{stem}-'; {up_s}")
            cmds[cfg] = printable(cmd)
            m = measure(cmd, env, nbytes, server)
            if m["rc"] != 0:
                raise SystemExit(f"W6 {cfg} failed (exit {m['rc']})")
            got = server.objects()
            m["objects"] = len(got)
            m["largest"] = max(got.values()) if got else 0
            m["over_split"] = sum(1 for v in got.values() if v > split)
            if not got or (cfg == "outbound" and m["over_split"]):
                raise SystemExit(f"W6 {cfg}: wrong objects on the server: {sorted(got.items())[:8]}")
            m["load"] = loadavg()
            res[cfg].append(m)
            log(f"W6 run {r + 1}/{W6_RUNS} {cfg:18s} {m['mbps']:8.1f} MB/s  rss {m['rss_mib']:6.1f} MiB  "
                f"cpu {m['cpu_s_per_gb']:.2f} s/GB  objects {m['objects']} (largest {m['largest']}, "
                f"{m['over_split']} over the split size)  load {m['load']}")
            shutil.rmtree(os.path.join(DATA, "pieces"), ignore_errors=True)
    server.clean()
    return {"bytes": nbytes, "uncompressed": usize, "split": split, "runs": res, "commands": cmds}


W5_CONFIGS = ["outbound", "s5cmd", "rclone"]


def copy_workload(server, src_dir, fname, nbytes):
    """W5: one object from the provider's bucket (`src`) to the customer's (`bench`) on the same
    server. Outbound with `--source-s3` and `--copy server` (UploadPartCopy of each part's range);
    s5cmd's and rclone's own bucket-to-bucket copies (CopyObject at this size). Every client goes
    through the counting proxy: the bytes it sent, against the object's."""
    env = tool_env(server.endpoint)
    s5 = os.path.join(TOOLS, "s5cmd")
    subprocess.run([s5, "--endpoint-url", server.endpoint, "mb", "s3://src"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([s5, "--endpoint-url", server.endpoint, "cp", os.path.join(src_dir, fname),
                    f"s3://src/{fname}"], env=env, check=True, stdout=subprocess.DEVNULL)
    res, cmds = {c: [] for c in W5_CONFIGS}, {}
    for r in range(RUNS):
        for cfg in W5_CONFIGS[r % len(W5_CONFIGS):] + W5_CONFIGS[:r % len(W5_CONFIGS)]:
            server.clean()
            proxy = Proxy(server.port)
            ep = proxy.endpoint
            run_env = dict(env, RCLONE_S3_ENDPOINT=ep, OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID=KEY,
                           OUTBOUND_SOURCE_AWS_SECRET_ACCESS_KEY=SECRET)
            if cfg == "outbound":
                cmd = [OUTBOUND, "upload", "--bucket", BUCKET, "--endpoint", ep, "--force-path-style",
                       "--source-s3", "s3://src/", "--source-endpoint", ep, "--source-force-path-style",
                       "--copy", "server", "--credentials", "keys", "--termination-log", "/dev/null"]
            elif cfg == "s5cmd":
                cmd = [s5, "--endpoint-url", ep, "--log", "error", "cp", f"s3://src/{fname}",
                       f"s3://{BUCKET}/{fname}"]
            else:
                cmd = [os.path.join(TOOLS, "rclone"), "--config", "/dev/null", "-q", "--s3-no-check-bucket",
                       "copyto", f":s3:src/{fname}", f":s3:{BUCKET}/{fname}"]
            cmds[cfg] = printable(cmd).replace(ep, "$PROXY")
            m = measure(cmd, run_env, nbytes, server)
            m["sent"] = proxy.stop()
            if m["rc"] != 0:
                raise SystemExit(f"W5 {cfg} failed (exit {m['rc']})")
            check(server, {fname: nbytes})
            m["load"] = loadavg()
            res[cfg].append(m)
            log(f"W5 run {r + 1}/{RUNS} {cfg:8s} {m['mbps']:8.1f} MB/s  sent {m['sent'] / 1e3:.0f} kB "
                f"({m['sent'] / nbytes:.4%})  rss {m['rss_mib']:6.1f} MiB  server cpu "
                f"{m['server_cpu_s_per_gb']:.2f} s/GB  load {m['load']}")
    server.clean()
    return {"bytes": nbytes, "runs": res, "commands": cmds}


def restarted(server):
    """A fresh versitygw for every workload, the ceiling included: one process that has taken
    tens of GB runs W1 about 15% slower than a new one (bench/analysis.md), and the ceiling,
    measured first, would otherwise be measured on a younger server than the workloads."""
    server.stop()
    return Server()


def ceiling(server):
    size = max(int(4 * GiB * SCALE), 64 * MiB)
    env = tool_env(server.endpoint)
    res = {}
    cmds = {}
    # One object caps at the server's per-object completion work; 16 objects (as W3 has many)
    # show what it takes when completions overlap other objects' parts.
    for conc, part, nobj in ((CONC, PART, 1), (2 * CONC, PART, 1), (2 * CONC, 4 * PART, 1),
                             (2 * CONC, PART, 16)):
        name = f"ceiling@part={part // MiB}MiB,conc={conc}" + (f",objects={nobj}" if nobj > 1 else "")
        cmd = [BENCHTOOL, "ceiling", "-endpoint", server.endpoint, "-bucket", BUCKET,
               "-objects", str(nobj), "-object-size", str(size // nobj), "-part-size", str(part),
               "-concurrency", str(conc)]
        cmds[name] = printable(cmd)
        res[name] = []
        for r in range(RUNS):
            server.clean()
            m = measure(cmd, env, size, server)
            if m["rc"] != 0:
                raise SystemExit("ceiling probe failed")
            m["load"] = loadavg()
            res[name].append(m)
            log(f"ceiling {name} {m['mbps']:.1f} MB/s  server cpu {m['server_cpu_s_per_gb']:.2f} s/GB")
    server.clean()
    return {"bytes": size, "runs": res, "commands": cmds}


def resume(server, src_dir, fname, size):
    """W4: SIGKILL once half the file went through the counting proxy, restart, total bytes sent."""
    env = tool_env(server.endpoint)
    out = {}
    for cfg in ["outbound", "s5cmd@equal", "rclone@equal", "crt@equal"]:
        server.clean()
        proxy = Proxy(server.port)
        state = os.path.join(DATA, "w4.state")
        if os.path.exists(state):
            os.unlink(state)
        cmd = commands(cfg, proxy.endpoint, src_dir, [fname], part=outbound_part(size))
        if cfg == "outbound":
            cmd += ["--state-file", state]
        if cfg.startswith("rclone"):
            env = dict(env, RCLONE_S3_ENDPOINT=proxy.endpoint)
        t1, rc1, _ = run_timed(cmd, env, kill_at=size // 2, proxy=proxy)
        time.sleep(0.2)
        before = proxy.up()
        t2, rc2, _ = run_timed(cmd, env)
        total = proxy.stop()
        ok = rc2 == 0 and server.objects().get(fname) == size
        after = total - before
        resent = max(0, total - size)
        out[cfg] = {"before_kill": before, "after_restart": after, "total": total, "size": size,
                    "resent": resent, "resent_frac_of_before": resent / before if before else None,
                    "first_rc": rc1, "ok": ok, "secs_after_restart": t2, "command": printable(cmd)}
        log(f"W4 {cfg}: before kill {before / MiB:.0f} MiB, after restart {after / MiB:.0f} MiB, "
            f"re-sent {resent / MiB:.0f} MiB ({out[cfg]['resent_frac_of_before'] or 0:.1%} of the first leg), ok={ok}")
        env = tool_env(server.endpoint)
    server.clean()
    return out


def header_census(server, src_dir, fname):
    """One small upload per tool through the proxy, recording which integrity headers it sends."""
    out = {}
    env = tool_env(server.endpoint)
    for cfg in CONFIGS:
        server.clean()
        dump = os.path.join(DATA, "headers.txt")
        if os.path.exists(dump):
            os.unlink(dump)
        proxy = Proxy(server.port, dump=dump)
        e = dict(env, RCLONE_S3_ENDPOINT=proxy.endpoint) if cfg.startswith("rclone") else env
        run_timed(commands(cfg, proxy.endpoint, src_dir, [fname]), e)
        proxy.stop()
        seen = {}
        for block in open(dump).read().split("\n\n"):
            lines = block.strip().splitlines()
            if not lines or not lines[0].startswith("PUT") or f"/{BUCKET}/" not in lines[0]:
                continue  # PutObject and UploadPart
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k.startswith("x-amz-checksum") or k in ("content-md5", "x-amz-content-sha256",
                                                            "x-amz-trailer", "x-amz-sdk-checksum-algorithm",
                                                            "content-encoding", "transfer-encoding"):
                    v = v.strip()
                    if k in ("content-md5",) or k.startswith("x-amz-checksum"):
                        v = "(value)"
                    if k == "x-amz-content-sha256" and len(v) == 64:
                        v = "(SHA-256 of the body)"
                    seen.setdefault(k, set()).add(v)
        out[cfg] = {k: sorted(v) for k, v in sorted(seen.items())}
        log(f"headers {cfg}: {out[cfg]}")
    server.clean()
    return out


# ---------------------------------------------------------------- report


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(w):
    runs = w["runs"]
    peers = [c for c in runs if c != "outbound"]
    medm = {c: med([m["mbps"] for m in runs[c]]) for c in runs}
    best = max(peers, key=lambda c: medm[c])
    best_eq = max([c for c in peers if c.endswith("@equal")], key=lambda c: medm[c])

    def ratio(peer):
        return med([o["mbps"] / p["mbps"] for o, p in zip(runs["outbound"], runs[peer])])

    return medm, best, ratio(best), best_eq, ratio(best_eq)


def copy_summary_line(w):
    """W5's line: throughput against the faster peer, and what each client sent."""
    runs = w["runs"]
    medm = {c: med([m["mbps"] for m in runs[c]]) for c in runs}
    best = max([c for c in runs if c != "outbound"], key=lambda c: medm[c])
    r = med([o["mbps"] / p["mbps"] for o, p in zip(runs["outbound"], runs[best])])
    sent = med([m["sent"] for m in runs["outbound"]])
    return (f"W5 outbound={medm['outbound']:.0f} MB/s best_peer={best} {medm[best]:.0f} MB/s ratio={r:.2f} "
            f"outbound_sent={sent / 1e3:.0f} kB ({sent / w['bytes']:.3%} of the object)")


def summary_line(name, w):
    if name == "W5":
        return copy_summary_line(w)
    medm, best, r, _, _ = summarize(w)
    o = w["runs"]["outbound"]
    return (f"{name} outbound={medm['outbound']:.0f} MB/s best_peer={best} {medm[best]:.0f} MB/s "
            f"ratio={r:.2f} rss={med([m['rss_mib'] for m in o]):.0f} MiB "
            f"cpu={med([m['cpu_s_per_gb'] for m in o]):.2f} s/GB")


def server_column(runs_by_cfg):
    """The "server CPU s/GB" column (header, separator, cell per runs) when every run recorded
    it (runs before 2026-11-28 16:36 did not), else empty strings."""
    if not all("server_cpu_s_per_gb" in x for v in runs_by_cfg.values() for x in v):
        return "", "", lambda runs: ""
    return (" server CPU s/GB |", "---:|",
            lambda runs: f" {med([x['server_cpu_s_per_gb'] for x in runs]):.2f} |")


def render(R):
    L = []
    a = L.append
    a("# Benchmarks")
    a("")
    a("Generated by `make bench` (`scripts/bench.sh` -> `bench/bench.py`); the analysis at the end is")
    a("`bench/analysis.md`. Do not edit this file by hand: re-run, or `BENCH_RENDER=1 scripts/bench.sh`.")
    a("")
    m = R["machine"]
    a(f"Run: {R['started']} to {R['finished']}; `BENCH_SCALE={R['scale']}`, `BENCH_RUNS={R['runs']}`, "
      f"`BENCH_DEFAULT_RUNS={R.get('default_runs', R['runs'])}`"
      + (" (a SMOKE run with small data: the figures are not the measurement)" if R["scale"] < 0.1 else
         " (REDUCED sizes: see the analysis)" if R["scale"] < 1 else ""))
    if R.get("measured"):
        a("")
        a("Measured in separate runs (`BENCH_MERGE=1`): " + "; ".join(f"{w} {t}" for w, t in sorted(R["measured"].items())) + ".")
    a("")
    a("## Machine")
    a("")
    for k, v in m.items():
        a(f"- {k}: {v}")
    a("")
    a("## Tools")
    a("")
    for k, v in R["versions"].items():
        a(f"- {k}: {v}")
    a("")
    a("## Method")
    a("")
    store = R["machine"].get("server store", R["machine"].get("tmpfs", ""))
    a(f"""- Server: versitygw (the ground's binary and version) started by the bench itself on 127.0.0.1,
  so the other engineers' ground is not disturbed, with its data folder at `{R['machine'].get('server folder', S3DIR)}` ({store}).
  `make bench` puts it on XFS with reflink where it can (scripts/bench-store.sh), where completing
  a multipart upload clones the parts instead of copying them (bench/analysis.md, "The server's
  store", has the measurements). {"It keeps connections open (`--keep-alive`), as S3 does" if R["machine"].get("versitygw keep-alive") == "on" else "**In this run it closed every connection after one response** (versitygw's default; `--keep-alive` since 2026-11-28 23:00)"};
  without it versitygw closes every connection after one response, so every request of every
  client paid a new TCP connection (runs before 2026-11-28 23:00). The bucket is emptied (on the server's folder) before
  every upload; every upload is checked afterwards (object keys and sizes on the server). Since
  2026-11-29 01:00 every workload (and the ceiling) starts on a freshly started versitygw: a
  process that has taken tens of GB ran W1 about 15% slower (bench/analysis.md). Since
  2026-11-29 06:45 the deletes of a clean settle before the next upload (`sync -f` and `fstrim`
  on the XFS store), so that no run waits for blocks the previous run freed, and versitygw's
  posix options are `{R['machine'].get('versitygw posix options', '(none)')}` (this run). `--data-integrity-etag` makes its ETags from the
  CRC-64/NVME it computes anyway instead of an MD5 of every byte, which was half of its CPU on
  the two cores the clients share (bench/analysis.md, "The server's ETag"); it still verifies
  every checksum a client sends. Runs before then used MD5 ETags.
- Sources: generated line-oriented text (base64 lines of 77 bytes from four random 12 MiB blocks
  repeated with large writes) in `{DATA}` on the local disk (page-cached after the first run).
- Every configuration runs {R['runs']} times (the peers at their own defaults
  {R.get('default_runs', R['runs'])} times); within a run the configurations go in a rotated
  order so that drift in the machine's load falls on all of them. Throughput is bytes of source /
  wall time from process start to exit (the upload completed) in MB/s (10^6 bytes); peak RSS
  (`%M`, the largest process of the tree) and CPU (`%U + %S`, user+system of the whole tree) come
  from GNU `/usr/bin/time` wrapped around the command, so for W2 peers they include GNU `split`. Medians over the runs. Ratios are computed run by run
  (Outbound's run i against the peer's run i, the same round) and the median ratio is reported.
  Runs since 2026-11-28 16:36 also record the server's CPU (versitygw's user+system from `/proc`
  before and after each upload; the "server CPU" column, where present).
- Configurations: `outbound` at its defaults ({PART // MiB} MiB parts, grown for objects over
  1 GiB to about 64 parts of at most 64 MiB: W1 64 MiB, W2 32 MiB, W3 16 MiB; {CONC} parts in
  flight; CRC64NVME). `@equal`: the peer at Outbound's part size for that workload and {CONC} parts in flight in total (for
  several files: min(8, files) files side by side x 8/that parts per file; the CRT client takes
  every file at once and is capped at {CONC} connections in all by its client-wide
  `max_active_connections_override`; boto3's `max_concurrency` caps each file only). `@default`: the peer's own defaults.
- Ceiling: warp (AGPL) is not available on the build machines, so `benchtool ceiling`
  (`tests/ground/cmd/benchtool`, aws-sdk-go-v2) does parallel multipart PUTs of one in-memory
  buffer with no checksums and UNSIGNED-PAYLOAD (the cheapest client possible) against the same
  server; the best configuration's median is the ceiling. Client and server share the 2 cores,
  so this is the ceiling *of this machine* for this server, not of versitygw alone.
- W4: the upload runs through `benchtool proxy` (a TCP proxy counting bytes client->server);
  the client is SIGKILLed once half the file's bytes went through, then the same command runs
  again. Outbound resumes from `--state-file`; the peers have no resume for a single upload and
  start over. One run per tool.
""")
    a("## Summary")
    a("")
    a("```")
    for s in R["summary"]:
        a(s)
    a("```")
    a("")
    a("![Throughput per tool and workload](bench/throughput.svg)")
    a("")
    a("![Client CPU per GB per tool and workload](bench/cpu.svg)")
    a("")
    if "ceiling" in R["results"]:
        c = R["results"]["ceiling"]
        a("## Server ceiling")
        a("")
        head, sep, cell = server_column(c["runs"])
        a("| probe | MB/s (median) | client CPU s/GB |" + head)
        a("|---|---:|---:|" + sep)
        for k, v in c["runs"].items():
            a(f"| `{k}` | {med([x['mbps'] for x in v]):.0f} | {med([x['cpu_s_per_gb'] for x in v]):.2f} |" + cell(v))
        a("")
        best = max(c["runs"], key=lambda k: med([x["mbps"] for x in c["runs"][k]]))
        a(f"Ceiling: **{R['ceiling_mbps']:.0f} MB/s** ({best}). Command: `{c['commands'][best]}`.")
        a("")
    names = {"W1": "one 4 GiB file as one object", "W2": "one 8 GiB line-oriented file as four objects of at most 2 GiB (peers: `split -C` + upload)",
             "W3": "64 files of 64 MiB"}
    for wname in ("W1", "W2", "W3"):
        if wname not in R["results"]:
            continue
        w = R["results"][wname]
        medm, best, r, best_eq, r_eq = summarize(w)
        a(f"## {wname}: {names[wname]} ({w['bytes'] / GiB:.3g} GiB at this scale)")
        a("")
        head, sep, cell = server_column(w["runs"])
        a("| config | MB/s (median) | min-max | % of ceiling | Outbound / this (median of per-run ratios) | peak RSS MiB | CPU s/GB |"
          + head)
        a("|---|---:|---:|---:|---:|---:|---:|" + sep)
        for cfg, runs in w["runs"].items():
            mb = [x["mbps"] for x in runs]
            rr = "" if cfg == "outbound" else f"{med([o['mbps'] / p['mbps'] for o, p in zip(w['runs']['outbound'], runs)]):.2f}"
            pc = f"{100 * med(mb) / R['ceiling_mbps']:.0f}%" if R.get("ceiling_mbps") else "n/a"
            a(f"| {cfg} | {med(mb):.0f} | {min(mb):.0f}-{max(mb):.0f} | {pc} | {rr} | "
              f"{med([x['rss_mib'] for x in runs]):.0f} | {med([x['cpu_s_per_gb'] for x in runs]):.2f} |"
              + cell(runs))
        a("")
        a(f"Best peer: {best} (ratio {r:.2f}); best peer at equal part size: {best_eq} (ratio {r_eq:.2f}). "
          f"Load average during the runs: {min(float(x['load']) for v in w['runs'].values() for x in v):.2f}-"
          f"{max(float(x['load']) for v in w['runs'].values() for x in v):.2f}.")
        a("")
        a("Commands (`$DATA` is the source folder; keys in the environment):")
        a("")
        for cfg, cmd in w["commands"].items():
            a(f"- {cfg}: `{cmd}`")
        a("")
    if "W4" in R["results"]:
        w = R["results"]["W4"]
        a(f"## W4: resume (SIGKILL at half, restart) of one {next(iter(w.values()))['size'] / GiB:.3g} GiB file")
        a("")
        a("| tool | sent before kill MiB | sent after restart MiB | total MiB | re-sent MiB | re-sent / first leg | object complete |")
        a("|---|---:|---:|---:|---:|---:|---|")
        for cfg, v in w.items():
            a(f"| {cfg} | {v['before_kill'] / MiB:.0f} | {v['after_restart'] / MiB:.0f} | {v['total'] / MiB:.0f} | "
              f"{v['resent'] / MiB:.0f} | {(v['resent_frac_of_before'] or 0):.1%} | {v['ok']} |")
        a("")
        a("Re-sent = total bytes through the proxy (HTTP heads included) minus the file's size.")
        a("")
        for cfg, v in w.items():
            a(f"- {cfg}: `{v['command']}`")
        a("")
    if "W5" in R["results"]:
        w = R["results"]["W5"]
        a(f"## W5: a {w['bytes'] / GiB:.3g} GiB object copied from the provider's bucket to the customer's, on one server")
        a("")
        a("Outbound reads the provider's bucket (`--source-s3`) and, as one identity reads and writes on one "
          "endpoint, has the server copy each 64 MiB part (`--copy server`: UploadPartCopy of the part's "
          "range, pinned to the planned ETag; 8 in flight). s5cmd and rclone copy bucket to bucket their "
          "own way (CopyObject, one request, at this size). Every client reaches the server through the "
          "counting proxy; \"sent\" is what it sent (request heads and bodies). The server does the copying, "
          "so its CPU column is where the work is.")
        a("")
        a("| config | MB/s (median) | min-max | Outbound / this | sent by the client | peak RSS MiB | server CPU s/GB |")
        a("|---|---:|---:|---:|---:|---:|---:|")
        for cfg, runs in w["runs"].items():
            mb = [x["mbps"] for x in runs]
            rr = "" if cfg == "outbound" else f"{med([o['mbps'] / p['mbps'] for o, p in zip(w['runs']['outbound'], runs)]):.2f}"
            sent = med([x["sent"] for x in runs])
            a(f"| {cfg} | {med(mb):.0f} | {min(mb):.0f}-{max(mb):.0f} | {rr} | {sent / 1e3:.0f} kB ({sent / w['bytes']:.3%}) | "
              f"{med([x['rss_mib'] for x in runs]):.0f} | {med([x['server_cpu_s_per_gb'] for x in runs]):.2f} |")
        a("")
        for cfg, cmd in w["commands"].items():
            a(f"- {cfg}: `{cmd}`")
        a("")
    if "W6" in R["results"]:
        w = R["results"]["W6"]
        medm, best, r, _, _ = summarize(w)
        a(f"## W6: a {w['bytes'] / GiB:.3g} GiB gzip file ({w['uncompressed'] / GiB:.3g} GiB of lines) cut on lines into gzip pieces of at most {w['split'] / MiB:.0f} MiB")
        a("")
        a("Outbound decompresses, cuts on lines and compresses the pieces (level 6, in 1 MiB blocks on both "
          "cores) while it uploads them. The peers' way: `zcat | split -C | gzip -6` (or `pigz -6`), then "
          "the upload of the pieces, timed together; `split -C` cuts the decompressed lines, so it is given "
          "the split size times the file's own ratio less 3%, a guess (the last column counts the pieces it "
          "made above the split size). Throughput is bytes of the gzip file per second.")
        a("")
        a("| config | MB/s (median) | min-max | Outbound / this | peak RSS MiB | CPU s/GB | pieces | largest MiB | over the split size |")
        a("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cfg, runs in w["runs"].items():
            mb = [x["mbps"] for x in runs]
            rr = "" if cfg == "outbound" else f"{med([o['mbps'] / p['mbps'] for o, p in zip(w['runs']['outbound'], runs)]):.2f}"
            a(f"| {cfg} | {med(mb):.0f} | {min(mb):.0f}-{max(mb):.0f} | {rr} | {med([x['rss_mib'] for x in runs]):.0f} | "
              f"{med([x['cpu_s_per_gb'] for x in runs]):.2f} | {runs[-1]['objects']} | {runs[-1]['largest'] / MiB:.1f} | {runs[-1]['over_split']} |")
        a("")
        a(f"Best peer: {best} (ratio {r:.2f}).")
        a("")
        for cfg, cmd in w["commands"].items():
            a(f"- {cfg}: `{cmd}`")
        a("")
    a("## Integrity settings")
    a("")
    a("| config | what it uses | headers seen on PutObject/UploadPart (a 40 MiB file through the proxy) |")
    a("|---|---|---|")
    hc = R.get("headers", {})
    for cfg in CONFIGS:
        h = hc.get(cfg, {})
        hs = "; ".join(f"`{k}: {', '.join(v)}`" for k, v in h.items()) or "(none of the integrity headers)"
        a(f"| {cfg} | {INTEGRITY[cfg]} | {hs} |")
    a("")
    a("## Floors (issue 6)")
    a("")
    for f in R["floors"]:
        a(f"- {f}")
    a("")
    if os.path.exists(NOTES):
        a(open(NOTES).read().rstrip())
        a("")
    return "\n".join(L)


def write_report(R):
    """The report and its charts (docs/bench/*.svg beside docs/benchmarks.md)."""
    charts.write_charts(R, os.path.join(os.path.dirname(OUT), "bench"))
    open(OUT, "w").write(render(R) + "\n")


def floors(R):
    F = []
    ceil = R.get("ceiling_mbps")
    for wname in ("W1", "W2", "W3"):
        w = R["results"].get(wname)
        if not w:
            continue
        medm, best, r, best_eq, r_eq = summarize(w)
        o = w["runs"]["outbound"]
        rss = med([m["rss_mib"] for m in o])
        cpu = med([m["cpu_s_per_gb"] for m in o])
        part = w.get("part_size", PART)
        budget = 64 + CONC * part / MiB
        F.append(f"{wname}: ratio at equal part size {r_eq:.2f} (floor 1.1): {'met' if r_eq >= 1.1 else 'NOT met'}")
        if ceil:
            frac = medm["outbound"] / ceil
            F.append(f"{wname}: {frac:.0%} of the ceiling (floor 85%): {'met' if frac >= 0.85 else 'NOT met'}")
        F.append(f"{wname}: peak RSS {rss:.0f} MiB (floor 64 + {CONC}x{part // MiB} MiB in flight = {budget:.0f} MiB): "
                 f"{'met' if rss <= budget else 'NOT met'}; CPU {cpu:.3f} s/GB (floor 0.5): {'met' if cpu <= 0.5 else 'NOT met'}")
    w4 = R["results"].get("W4", {}).get("outbound")
    if w4:
        fr = w4["resent_frac_of_before"] or 0
        F.append(f"W4: Outbound re-sent {fr:.1%} of what it sent before the kill (floor < 25%): {'met' if fr < 0.25 and w4['ok'] else 'NOT met'}")
    return F


def describe():
    cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    return {
        "nproc": sh("nproc"), "CPU": cpu, "memory": mem, "kernel": sh("uname -r"),
        "server store": store(),
        "server folder": S3DIR,
        "load average at start": open("/proc/loadavg").read().strip(),
        "free page reporting": page_reporting(),
        "versitygw posix options": " ".join(SERVER_ARGS) or "(none)",
        "versitygw keep-alive": "on" if KEEPALIVE else "off",
    }


def store():
    """What versitygw's data folder is on: the filesystem, and for a loop device its backing file
    and whether it does direct I/O (scripts/bench-store.sh)."""
    d = os.path.dirname(S3DIR)
    fs = sh(f"findmnt -n -o FSTYPE,SOURCE,OPTIONS -T {d}")
    text = f"{d}: {fs}"
    dev = fs.split()[1] if len(fs.split()) > 1 else ""
    if dev.startswith("/dev/loop"):
        name = os.path.basename(dev)
        back = sh(f"cat /sys/block/{name}/loop/backing_file")
        dio = sh(f"cat /sys/block/{name}/loop/dio")
        text += f"; loop device on {back} ({sh(f'df --output=fstype {back} | tail -1')}), direct I/O {dio}"
    if fs.startswith("xfs"):
        text += "; " + sh(f"xfs_info {d} | grep -o 'reflink=[01]'")
    return text


def page_reporting():
    """How the VM hands freed memory back to its host: where it does so at once, every page the
    server writes after a delete is faulted in from the host again (bench/analysis.md)."""
    d = "/sys/module/page_reporting/parameters"
    if not os.path.isdir(d):
        return "not reported (no page_reporting module)"
    vals = {}
    for name in ("page_reporting_order", "min_free_ms", "max_waiting_mib"):
        try:
            vals[name] = open(os.path.join(d, name)).read().strip()
        except OSError:
            pass
    return ", ".join(f"{k}={v}" for k, v in vals.items()) or "on"


def pinned(tool):
    """The version a cached tool was built at (its folder is NAME-VERSION)."""
    target = os.path.realpath(os.path.join(TOOLS, tool))
    return os.path.basename(os.path.dirname(target)).removeprefix(tool + "-")


def versions():
    return {
        "outbound": sh(f"{OUTBOUND} --version") + f" (release build of the work tree at git "
                    f"{sh(f'git -C {REPO} rev-parse --short HEAD')}; uncommitted changes in src/ then: "
                    f"{sh(f'git -C {REPO} status --porcelain src | wc -l')} files)",
        "versitygw": pinned("versitygw") + " (built from the module by tests/ground/scripts/tools.sh)",
        "s5cmd": pinned("s5cmd") + " (idem)",
        "rclone": pinned("rclone") + " (idem)",
        "boto3 / botocore / s3transfer / awscrt": sh(
            f"{PY} -c 'import boto3,botocore,s3transfer,awscrt;print(boto3.__version__,botocore.__version__,s3transfer.__version__,awscrt.__version__)'"),
        "GNU split": sh("split --version | head -1"),
        "benchtool (ceiling probe, proxy)": sh("cd tests/ground && go list -m github.com/aws/aws-sdk-go-v2") + ", " + sh("go version"),
    }


def main():
    if os.environ.get("BENCH_RENDER") == "1":
        R = json.load(open(RESULTS))
        R["floors"] = floors(R)
        write_report(R)
        print("\n".join(R["summary"]))
        return
    os.makedirs(DATA, exist_ok=True)
    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "scale": SCALE, "runs": RUNS, "default_runs": DEFAULT_RUNS,
         "machine": describe(), "versions": versions(), "results": {}}
    server = Server()
    try:
        w1size = max(int(4 * GiB * SCALE), 32 * MiB)
        d1 = os.path.join(DATA, "w1")
        os.makedirs(d1, exist_ok=True)
        # Integrity header census on a small file (3 parts at 16 MiB).
        dh = os.path.join(DATA, "hdr")
        os.makedirs(dh, exist_ok=True)
        gen_lines_file(os.path.join(dh, "h.sync"), 40 * MiB, 9)
        R["headers"] = header_census(server, dh, "h.sync")
        shutil.rmtree(dh)
        if "ceiling" in WORKLOADS:
            server = restarted(server)
            R["results"]["ceiling"] = ceiling(server)
            R["ceiling_mbps"] = max(med([x["mbps"] for x in v]) for v in R["results"]["ceiling"]["runs"].values())
        if "W1" in WORKLOADS or "W4" in WORKLOADS:
            log(f"generating W1: {w1size / MiB:.0f} MiB")
            gen_lines_file(os.path.join(d1, "w1.sync"), w1size, 1)
        if "W1" in WORKLOADS:
            server = restarted(server)
            R["results"]["W1"] = throughput_workload("W1", server, d1, ["w1.sync"], [], {"w1.sync": w1size}, w1size)
        if "W4" in WORKLOADS:
            server = restarted(server)
            R["results"]["W4"] = resume(server, d1, "w1.sync", w1size)
        shutil.rmtree(d1, ignore_errors=True)
        if "W2" in WORKLOADS:
            # Four objects of at most 2 GiB: a line-cut piece is a few bytes under the split size,
            # so the file is 1 MiB under 4 x 2 GiB (an exact 8 GiB would leave a fifth sliver).
            split = max(int(2 * GiB * SCALE), 16 * MiB)
            size = 4 * split - MiB
            d2 = os.path.join(DATA, "w2")
            os.makedirs(d2, exist_ok=True)
            log(f"generating W2: {size / MiB:.0f} MiB")
            gen_lines_file(os.path.join(d2, "w2.sync"), size, 2)
            # The four objects' sizes, as `split -C` (and Outbound's lines mode) cut them.
            sizes, left = [], size
            with open(os.path.join(d2, "w2.sync"), "rb") as f:
                pos = 0
                while left > 0:
                    if left <= split:
                        sizes.append(left)
                        break
                    f.seek(pos + split - 200)
                    chunk = f.read(200)
                    cut = chunk.rindex(b"\n") + 1 + split - 200
                    sizes.append(cut)
                    pos += cut
                    left -= cut
            want = {f"w2-{i + 1:03d}.sync": s for i, s in enumerate(sizes)}
            server = restarted(server)
            R["results"]["W2"] = throughput_workload(
                "W2", server, d2, ["w2.sync"], ["--split-size", str(split), "--split-on", "lines"], want, size,
                split_size=split)
            shutil.rmtree(d2, ignore_errors=True)
        if "W3" in WORKLOADS:
            fsz = max(int(64 * MiB * SCALE), 1 * MiB)
            d3 = os.path.join(DATA, "w3")
            os.makedirs(d3, exist_ok=True)
            log(f"generating W3: 64 x {fsz / MiB:.1f} MiB")
            files = [f"f{i:02d}.sync" for i in range(64)]
            for i, f in enumerate(files):
                gen_lines_file(os.path.join(d3, f), fsz, 100 + i)
            server = restarted(server)
            R["results"]["W3"] = throughput_workload("W3", server, d3, files, [], {f: fsz for f in files}, fsz * 64)
            shutil.rmtree(d3, ignore_errors=True)
        if "W5" in WORKLOADS:
            w5size = max(int(4 * GiB * SCALE), 32 * MiB)
            d5 = os.path.join(DATA, "w5")
            os.makedirs(d5, exist_ok=True)
            log(f"generating W5: {w5size / MiB:.0f} MiB")
            gen_lines_file(os.path.join(d5, "w5.sync"), w5size, 5)
            server = restarted(server)
            R["results"]["W5"] = copy_workload(server, d5, "w5.sync", w5size)
            shutil.rmtree(d5, ignore_errors=True)
        if "W6" in WORKLOADS:
            # About 2 GiB of gzip: the generated lines keep about three quarters at level 1.
            usize = max(int(2.7 * GiB * SCALE), 48 * MiB)
            split = max(int(256 * MiB * SCALE), 16 * MiB)
            d6 = os.path.join(DATA, "w6")
            os.makedirs(d6, exist_ok=True)
            log(f"generating W6: {usize / MiB:.0f} MiB of lines, gzip -1")
            gen_lines_file(os.path.join(d6, "w6.log"), usize, 6)
            gz = "pigz -1 -p 2" if shutil.which("pigz") else "gzip -1"
            subprocess.run(f"{gz} < '{d6}/w6.log' > '{d6}/w6.log.gz' && rm '{d6}/w6.log'", shell=True, check=True)
            size = os.path.getsize(os.path.join(d6, "w6.log.gz"))
            server = restarted(server)
            R["results"]["W6"] = gzip_workload(server, d6, "w6.log.gz", size, split)
            shutil.rmtree(d6, ignore_errors=True)
    finally:
        server.stop()
        # What was measured survives a failed run (a full disk, a kill), to be looked at by hand.
        json.dump(R, open(RESULTS + ".partial", "w"), indent=1, default=str)
    R["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if os.environ.get("BENCH_MERGE") == "1" and os.path.exists(RESULTS):
        # A run of some workloads only: the others keep their figures, and the report says when
        # each was measured.
        old = json.load(open(RESULTS))
        measured = old.get("measured", {w: f"{old['started']} to {old['finished']}" for w in old["results"]})
        for w, v in old["results"].items():
            R["results"].setdefault(w, v)
        for k in ("ceiling_mbps", "headers"):
            if k in old and k not in R:
                R[k] = old[k]
        measured.update({w: f"{R['started']} to {R['finished']}" for w in WORKLOADS if w in R["results"]})
        R["measured"] = measured
    R["machine"]["load average at end"] = open("/proc/loadavg").read().strip()
    R["summary"] = [summary_line(w, R["results"][w]) for w in ("W1", "W2", "W3") if w in R["results"]]
    for w in ("W5", "W6"):
        if w in R["results"]:
            R["summary"].append(summary_line(w, R["results"][w]))
    w4 = R["results"].get("W4", {}).get("outbound")
    if w4:
        peers = {k: v for k, v in R["results"]["W4"].items() if k != "outbound"}
        bp = min(peers, key=lambda k: peers[k]["total"]) if peers else None
        R["summary"].append(
            f"W4 outbound_total={w4['total'] / MiB:.0f} MiB resent={w4['resent'] / MiB:.0f} MiB "
            f"({(w4['resent_frac_of_before'] or 0):.1%} of the {w4['before_kill'] / MiB:.0f} MiB sent before the kill)"
            + (f" best_peer={bp} total={peers[bp]['total'] / MiB:.0f} MiB" if bp else ""))
    R["floors"] = floors(R)
    json.dump(R, open(RESULTS, "w"), indent=1, default=str)
    os.unlink(RESULTS + ".partial")
    write_report(R)
    print("\n".join(R["summary"]))


if __name__ == "__main__":
    main()
