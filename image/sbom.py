#!/usr/bin/env python3
"""Prints the image's SBOM (SPDX 2.3 JSON) from image/debian.lock and Cargo.lock (scripts/image.sh).

Every Debian package of the image (with the .deb's sha256 and a pkg:deb purl) and every package of
Cargo.lock (with the .crate's sha256 and a pkg:cargo purl, its dependencies as DEPENDS_ON). Cargo.lock
is a superset of what the binary links (it also holds dev-dependencies and other platforms' crates).
No clock and no random id: the same inputs give the same bytes.
"""

import argparse
import json
import re
import sys
import tomllib

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def spdx_id(kind, name, version):
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{kind}-{name}-{version}")


def purl_version(v):
    return v.replace("%", "%25").replace(":", "%3A")


def package(ident, name, version, purl, download="NOASSERTION", sha256=None, license="NOASSERTION", **extra):
    p = {
        "SPDXID": ident,
        "name": name,
        "versionInfo": version,
        "downloadLocation": download,
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": license,
        "copyrightText": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
    }
    if sha256:
        p["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    p.update(extra)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("lock", "cargo-lock", "digest", "version", "license", "revision", "created", "source", "repository"):
        ap.add_argument("--" + flag, required=True)
    a = ap.parse_args()

    image_id = "SPDXRef-Image"
    digest_hex = a.digest.removeprefix("sha256:")
    packages = [package(
        image_id, "outbound", a.version,
        f"pkg:oci/outbound@sha256%3A{digest_hex}?arch=amd64&repository_url={a.repository}",
        primaryPackagePurpose="CONTAINER",
        checksums=[{"algorithm": "SHA256", "checksumValue": digest_hex}],
    )]
    rels = [("SPDXRef-DOCUMENT", "DESCRIBES", image_id)]

    with open(a.lock) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, version, arch, sha = line.split()
            ident = spdx_id("deb", name, version)
            packages.append(package(
                ident, name, version, f"pkg:deb/debian/{name}@{purl_version(version)}?arch={arch}&distro=debian-12",
                sha256=sha, supplier="Organization: Debian", primaryPackagePurpose="OPERATING-SYSTEM",
            ))
            rels.append((image_id, "CONTAINS", ident))

    with open(a.cargo_lock, "rb") as f:
        crates = tomllib.load(f)["package"]
    versions = {}
    for c in crates:
        versions.setdefault(c["name"], []).append(c["version"])
    for c in crates:
        name, version = c["name"], c["version"]
        ident = spdx_id("crate", name, version)
        purl = f"pkg:cargo/{name}@{purl_version(version)}"
        if "source" not in c:  # this project's own crate: the binary
            packages.append(package(
                ident, name, version, purl, download=f"git+{a.source}@{a.revision}", license=a.license,
                primaryPackagePurpose="APPLICATION",
            ))
            rels.append((image_id, "CONTAINS", ident))
        elif c["source"] == CRATES_IO:
            packages.append(package(
                ident, name, version, purl, download=f"https://crates.io/api/v1/crates/{name}/{version}/download",
                sha256=c.get("checksum"), primaryPackagePurpose="LIBRARY",
            ))
        else:
            packages.append(package(ident, name, version, purl, sha256=c.get("checksum"), primaryPackagePurpose="LIBRARY"))
        # Cargo.lock names a dependency "name", or "name version [(source)]" when several versions exist.
        for dep in c.get("dependencies", []):
            parts = dep.split()
            dep_version = parts[1] if len(parts) > 1 else versions[parts[0]][0]
            rels.append((ident, "DEPENDS_ON", spdx_id("crate", parts[0], dep_version)))

    ids = [p["SPDXID"] for p in packages]
    if len(ids) != len(set(ids)):
        sys.exit("sbom: two packages map to one SPDX id")
    known = set(ids) | {"SPDXRef-DOCUMENT"}
    missing = {r[2] for r in rels} - known
    if missing:
        sys.exit(f"sbom: Cargo.lock names unknown dependencies: {sorted(missing)}")

    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"outbound-{a.version}-image",
        "documentNamespace": f"{a.source}/spdx/image/sha256-{digest_hex}",
        "creationInfo": {"created": a.created, "creators": ["Tool: outbound-image-sbom"]},
        "documentDescribes": [image_id],
        "packages": packages,
        "relationships": [
            {"spdxElementId": s, "relationshipType": t, "relatedSpdxElement": o} for s, t, o in sorted(set(rels))
        ],
    }
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
