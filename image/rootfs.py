#!/usr/bin/env python3
"""Writes the image's root filesystem as one deterministic, uncompressed tar layer (scripts/image.sh).

Contents: the files of the given Debian packages (docs, man pages and maintainer tools left out;
copyright files kept, for the licences), the CA bundle that ca-certificates' postinst would build,
/etc/passwd and /etc/group with root and nonroot (65532), /tmp, the packages' dpkg records (so
scanners find them) and the operator binary. Nothing is extracted to disk: entries are read from
`dpkg-deb --fsys-tarfile`, so modes come from the packages whatever the umask or the user running
this. Every entry is owned by root (nonroot's home by nonroot), dated SOURCE_DATE_EPOCH and written
in byte order of its path, so the same inputs give the same bytes.
"""

import argparse
import io
import posixpath
import re
import subprocess
import sys
import tarfile

NONROOT = 65532
BINARY = "usr/local/bin/outbound"
CA_DIR = "usr/share/ca-certificates/mozilla/"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
LIB_DIRS = ("lib/x86_64-linux-gnu/", "usr/lib/x86_64-linux-gnu/")

PASSWD = b"""root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
GROUP = b"""root:x:0:
nobody:x:65534:
nonroot:x:65532:
"""
# Without this file glibc asks DNS before /etc/hosts; the kubelet's /etc/hosts should win.
NSSWITCH = b"""passwd: files
group: files
hosts: files dns
"""
# Vulnerability scanners read the distribution here before matching the dpkg records.
OS_RELEASE = b"""PRETTY_NAME="Outbound (Debian GNU/Linux 12 packages)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://github.com/outbound-dev/outbound"
"""


def fail(msg):
    sys.exit(f"rootfs: {msg}")


def dropped(path):
    """Files a container never uses. update-ca-certificates is a shell script (and its hooks) for a
    shell and an openssl this image does not have; the bundle is built here instead."""
    top = ("usr/share/man", "usr/share/lintian", "usr/share/info", "etc/ca-certificates/update.d")
    if any(path == t or path.startswith(t + "/") for t in top):
        return True
    if path == "usr/sbin/update-ca-certificates":
        return True
    doc = re.fullmatch(r"usr/share/doc/[^/]+/(.+)", path)
    return bool(doc) and doc.group(1) != "copyright"


class Tree:
    def __init__(self):
        self.entries = {}  # path -> (type, mode, uid, linkname, data)

    def add(self, path, kind, mode, data=b"", link="", uid=0, origin="image"):
        self.parents(path)
        old = self.entries.get(path)
        if old is not None:
            if kind == tarfile.DIRTYPE and old[0] == tarfile.DIRTYPE:
                return  # directories shared by packages
            fail(f"{path} is provided twice (again by {origin})")
        self.entries[path] = (kind, mode, uid, link, data)

    def parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = (tarfile.DIRTYPE, 0o755, 0, "", b"")

    def write(self, out, mtime):
        with open(out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries, key=lambda p: p.encode()):
                kind, mode, uid, link, data = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.type, ti.mode, ti.uid, ti.gid = kind, mode, uid, uid
                ti.uname = ti.gname = ""
                ti.mtime, ti.linkname = mtime, link
                ti.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def control(deb):
    out = subprocess.run(["dpkg-deb", "-f", deb], check=True, capture_output=True).stdout
    fields = dict(re.findall(rb"^([A-Za-z-]+): (.*)$", out, re.M))
    return fields[b"Package"].decode(), out


def add_package(tree, deb):
    name, ctrl = control(deb)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            path = posixpath.normpath(m.name)
            if path == "." or dropped(path):
                continue
            if m.uid != 0 or m.gid != 0:
                fail(f"{name}: {path} is not owned by root; this writer only knows root-owned packages")
            mode = m.mode & 0o7777
            if m.isdir():
                tree.add(path, tarfile.DIRTYPE, mode, origin=name)
            elif m.isreg():
                tree.add(path, tarfile.REGTYPE, mode, tar.extractfile(m).read(), origin=name)
            elif m.issym():
                tree.add(path, tarfile.SYMTYPE, 0o777, link=m.linkname, origin=name)
            else:
                fail(f"{name}: {path} is neither a file, a directory nor a symlink")
    if proc.wait() != 0:
        fail(f"dpkg-deb could not read {deb}")
    # The dpkg record as distroless images carry it: scanners list the packages from these.
    tree.add(f"var/lib/dpkg/status.d/{name}", tarfile.REGTYPE, 0o644, ctrl)


def ca_bundle(tree):
    """What update-ca-certificates writes: every certificate of the package, in byte order of its
    name, each ending in a newline (checked against Debian's own bundle of the same certificates)."""
    certs = sorted((p for p in tree.entries if p.startswith(CA_DIR) and p.endswith(".crt")), key=str.encode)
    if not certs:
        fail(f"no certificate under /{CA_DIR}: is ca-certificates in image/debian.lock?")
    out = b""
    for p in certs:
        data = tree.entries[p][4]
        out += data if data.endswith(b"\n") else data + b"\n"
    return out


def check_libraries(tree, binary):
    """Fails when the binary needs a shared library or a loader that no package provides."""
    dyn = subprocess.run(["readelf", "-d", binary], check=True, capture_output=True, text=True).stdout
    hdr = subprocess.run(["readelf", "-l", binary], check=True, capture_output=True, text=True).stdout
    missing = [lib for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
               if not any(d + lib in tree.entries for d in LIB_DIRS)]
    missing += [i for i in re.findall(r"Requesting program interpreter: /(.+?)\]", hdr) if i not in tree.entries]
    if missing:
        fail(f"the binary needs {', '.join(missing)}, which no package of image/debian.lock provides")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="the operator binary, at /" + BINARY)
    ap.add_argument("--mtime", type=int, required=True, help="SOURCE_DATE_EPOCH")
    ap.add_argument("--out", required=True, help="the layer tar to write")
    ap.add_argument("debs", nargs="+", help="the .deb files")
    args = ap.parse_args()

    tree = Tree()
    for deb in args.debs:
        add_package(tree, deb)
    tree.add(CA_BUNDLE, tarfile.REGTYPE, 0o644, ca_bundle(tree))
    tree.add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD)
    tree.add("etc/group", tarfile.REGTYPE, 0o644, GROUP)
    tree.add("etc/nsswitch.conf", tarfile.REGTYPE, 0o644, NSSWITCH)
    tree.add("etc/os-release", tarfile.REGTYPE, 0o644, OS_RELEASE)
    tree.add("tmp", tarfile.DIRTYPE, 0o1777)
    tree.add("root", tarfile.DIRTYPE, 0o700)
    tree.add("home/nonroot", tarfile.DIRTYPE, 0o700, uid=NONROOT)
    with open(args.binary, "rb") as f:
        tree.add(BINARY, tarfile.REGTYPE, 0o755, f.read())
    check_libraries(tree, args.binary)
    tree.write(args.out, args.mtime)


if __name__ == "__main__":
    main()
