//! `make image`'s script (scripts/image.sh): the operator's OCI image is built twice, the second
//! time from a clean output, and must come out the same; then its config, its layer and its SBOM
//! are checked. The test build's own binary stands in for the release one (the image is what is
//! under test, and CI has no release build), in an output folder of its own. The first run on a
//! machine downloads the pinned Debian packages through apt; later runs take seconds.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Build {
    digest: String,
    tarball_sha256: String,
    sbom: String,
}

struct Built {
    dir: PathBuf,
    first: Build,
    second: Build,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn build(dir: &Path) -> Build {
    run(Command::new(repo().join("scripts/image.sh"))
        .current_dir(repo())
        .env("OUTBOUND_BINARY", env!("CARGO_BIN_EXE_outbound"))
        .env("OUTBOUND_IMAGE_DIR", dir)
        // The commit decides the time and revision; a caller's overrides would not.
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("OUTBOUND_REVISION"));
    let tarball = std::fs::read(dir.join("outbound.tar")).unwrap();
    Build {
        digest: std::fs::read_to_string(dir.join("digest"))
            .unwrap()
            .trim()
            .to_string(),
        tarball_sha256: format!("{:x}", Sha256::digest(&tarball)),
        sbom: std::fs::read_to_string(dir.join("outbound.spdx.json")).unwrap(),
    }
}

/// Built once for every test of this file (they run in parallel and share the output).
fn image() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
        let first = build(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let second = build(&dir);
        Built { dir, first, second }
    })
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn blob(digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    image().dir.join("outbound-oci/blobs/sha256").join(hex)
}

fn manifest() -> Value {
    json(&blob(&image().second.digest))
}

fn layer() -> PathBuf {
    let m = manifest();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {m}");
    blob(layers[0]["digest"].as_str().unwrap())
}

/// `tar -tv` of the layer: (mode string, owner "uid/gid", size, path).
fn listing() -> Vec<(String, String, u64, String)> {
    let out = run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(layer()));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_end_matches('/').to_string();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                path,
            )
        })
        .collect()
}

#[test]
fn same_inputs_give_the_same_image() {
    let b = image();
    assert!(
        b.first.digest.starts_with("sha256:") && b.first.digest.len() == 71,
        "{}",
        b.first.digest
    );
    assert_eq!(
        b.first.digest, b.second.digest,
        "the digest changed between two builds"
    );
    assert_eq!(
        b.first.tarball_sha256, b.second.tarball_sha256,
        "outbound.tar changed between two builds"
    );
    assert_eq!(
        b.first.sbom, b.second.sbom,
        "the SBOM changed between two builds"
    );
    // The layout's index names the same manifest.
    let index = json(&b.dir.join("outbound-oci/index.json"));
    assert_eq!(index["manifests"][0]["digest"], b.second.digest.as_str());
}

#[test]
fn config_runs_the_binary_as_nonroot_with_the_commit_labels() {
    let config = json(&blob(manifest()["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/outbound"])
    );
    assert_eq!(c["WorkingDir"], "/");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env:?}"
    );
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");

    let git = |args: &[&str]| {
        run(Command::new("git").args(args).current_dir(repo()))
            .trim()
            .to_string()
    };
    let commit_time: i64 = git(&["log", "-1", "--format=%ct"]).parse().unwrap();
    let created = jiff::Timestamp::from_second(commit_time)
        .unwrap()
        .to_string();
    assert_eq!(
        config["created"],
        created.as_str(),
        "created is the commit's time"
    );
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.created"], created.as_str());
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        git(&["rev-parse", "HEAD"]).as_str()
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/outbound-dev/outbound"
    );
}

#[test]
fn layer_has_no_shell_and_holds_the_binary_the_certificates_and_the_users() {
    let entries = listing();
    let find = |path: &str| entries.iter().find(|e| e.3 == path);
    for shell in [
        "sh", "bash", "dash", "ash", "zsh", "busybox", "dpkg", "apt", "apt-get",
    ] {
        let found: Vec<_> = entries
            .iter()
            // Programs, not folders (the dpkg records live in var/lib/dpkg).
            .filter(|e| !e.0.starts_with('d') && e.3.rsplit('/').next() == Some(shell))
            .collect();
        assert!(found.is_empty(), "{shell} is in the image: {found:?}");
    }
    for path in [
        "bin/sh",
        "bin/bash",
        "bin/dash",
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/dash",
    ] {
        assert!(find(path).is_none(), "{path} is in the image");
    }

    let binary = find("usr/local/bin/outbound").expect("the binary");
    assert_eq!(
        (binary.0.as_str(), binary.1.as_str()),
        ("-rwxr-xr-x", "0/0"),
        "{binary:?}"
    );
    assert!(binary.2 > 1_000_000, "{binary:?}");
    let tmp = find("tmp").expect("/tmp");
    assert_eq!(tmp.0, "drwxrwxrwt");
    assert_eq!(
        find("home/nonroot").expect("nonroot's home").1,
        "65532/65532"
    );
    let others: Vec<_> = entries
        .iter()
        .filter(|e| e.1 != "0/0" && e.3 != "home/nonroot")
        .collect();
    assert!(others.is_empty(), "entries not owned by root: {others:?}");

    let bundle = "etc/ssl/certs/ca-certificates.crt";
    assert!(find(bundle).expect("the CA bundle").2 > 0);
    let read = |path: &str| run(Command::new("tar").arg("-xOf").arg(layer()).arg(path));
    let certs = read(bundle).matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "only {certs} certificates in {bundle}");
    assert!(read("etc/passwd").contains("nonroot:x:65532:65532:"));
    assert!(read("etc/group").contains("nonroot:x:65532:"));
}

#[test]
fn binary_runs_in_the_image_root_as_nonroot() {
    let root = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(layer())
        .arg("-C")
        .arg(root.path()));
    let uid = run(Command::new("id").arg("-u"));
    let mut cmd = if uid.trim() == "0" {
        let mut c = Command::new("chroot");
        c.arg("--userspec=65532:65532").arg(root.path());
        c
    } else {
        // Without root: a user namespace of one's own, where one is root.
        let mut c = Command::new("unshare");
        c.arg("--map-root-user")
            .arg(format!("--root={}", root.path().display()));
        c
    };
    // Only the image's own loader and libraries can serve it there.
    let out = run(cmd.arg("/usr/local/bin/outbound").arg("--version"));
    assert_eq!(
        out.trim(),
        format!("outbound {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn sbom_lists_every_debian_package_and_every_crate() {
    let sbom: Value = serde_json::from_str(&image().second.sbom).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let hex = image().second.digest.trim_start_matches("sha256:");
    assert!(sbom["documentNamespace"].as_str().unwrap().ends_with(hex));
    let packages: Vec<(String, String, String)> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let purl = p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap_or_default();
            (
                p["name"].as_str().unwrap().into(),
                p["versionInfo"].as_str().unwrap().into(),
                purl.into(),
            )
        })
        .collect();
    let listed = |name: &str, version: &str, purl: &str| {
        packages
            .iter()
            .any(|(n, v, p)| n == name && v == version && p.starts_with(purl))
    };

    let lock = std::fs::read_to_string(repo().join("image/debian.lock")).unwrap();
    let debs: Vec<Vec<&str>> = lock
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(debs.iter().any(|d| d[0] == "libc6"), "{lock}");
    for d in &debs {
        let (name, version, arch) = (d[0], d[1], d[2]);
        let purl = format!(
            "pkg:deb/debian/{name}@{}?arch={arch}",
            version.replace(':', "%3A")
        );
        assert!(listed(name, version, &purl), "the SBOM lacks {purl}");
    }

    // Cargo.lock's [[package]] entries: their `name = ` and `version = ` lines.
    let cargo_lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let mut crates = Vec::new();
    let mut name = None;
    for line in cargo_lock.lines() {
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim_matches('"').to_string())
        };
        if line == "[[package]]" {
            name = None;
        } else if let Some(n) = value("name = ") {
            name = Some(n);
        } else if let (Some(v), Some(n)) = (value("version = "), name.take()) {
            crates.push((n, v));
        }
    }
    assert!(
        crates.len() > 100,
        "{} crates parsed from Cargo.lock",
        crates.len()
    );
    for (name, version) in &crates {
        let purl = format!("pkg:cargo/{name}@{version}");
        assert!(listed(name, version, &purl), "the SBOM lacks {purl}");
    }
}
