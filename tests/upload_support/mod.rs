//! Shared helpers of the uploader's integration tests: the ground's S3 servers, buckets, data
//! files, running the real `outbound` binary, and a fault-injecting TCP proxy.
#![allow(dead_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// One S3 server of the ground and a key that may do everything on it.
#[derive(Clone, Debug)]
pub struct Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

fn var(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: these tests need the ground's S3 servers. Run `make ground-up` \
             and `source tests/ground/.state/env` first (or `make test`, which does both)"
            )
        })
}

/// versitygw (the data path).
pub fn versitygw() -> Server {
    Server {
        endpoint: var("S3_ENDPOINT"),
        access_key: var("S3_ACCESS_KEY"),
        secret_key: var("S3_SECRET_KEY"),
        region: std::env::var("S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
    }
}

/// moto (IAM semantics), with its admin key.
pub fn moto() -> Server {
    Server {
        endpoint: var("MOTO_ENDPOINT"),
        access_key: var("MOTO_ACCESS_KEY"),
        secret_key: var("MOTO_SECRET_KEY"),
        region: "us-east-1".into(),
    }
}

impl Server {
    /// The same server reached through another address (a proxy).
    pub fn via(&self, endpoint: &str) -> Server {
        Server {
            endpoint: endpoint.to_string(),
            ..self.clone()
        }
    }

    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "tests",
            ))
            .build();
        Client::from_conf(conf)
    }
}

/// A fresh bucket with a unique name.
pub async fn new_bucket(client: &Client, what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("t-{what}-{}-{}", std::process::id(), nanos % 1_000_000_000);
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("failed to create bucket {name}: {e:?}"));
    name
}

/// A temporary source folder.
pub fn source_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A text file of about `size` bytes of numbered lines of varied length; ends with a newline
/// unless `trailing_newline` is false.
pub fn write_lines(path: &Path, size: usize, seed: u64, trailing_newline: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(size + 300);
    let mut n = 0u64;
    while data.len() < size {
        let len = (rng.next() % 300) as usize;
        data.extend_from_slice(format!("{seed}:{n}:").as_bytes());
        data.extend((0..len).map(|i| b'a' + ((i as u64 + n) % 26) as u8));
        data.push(b'\n');
        n += 1;
    }
    if !trailing_newline {
        data.pop();
    }
    write(path, &data);
    data
}

/// A file of exactly `size` pseudo-random bytes.
pub fn write_random(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(size);
    write(path, &data);
    data
}

/// Lines as the manifest counts them: newlines, plus a last line without one.
pub fn count_lines(data: &[u8]) -> u64 {
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(data.last().is_some_and(|&b| b != b'\n'))
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// `outbound upload` for `server`, `bucket` and `source`, plus `args`.
pub fn upload_command(
    server: &Server,
    bucket: &str,
    source: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = upload_to(server, bucket);
    cmd.arg("--source").arg(source).args(args);
    cmd
}

/// `outbound upload` to `server` and `bucket`, with the destination's keys; the source and the
/// rest to be added.
pub fn upload_to(server: &Server, bucket: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbound"));
    cmd.arg("upload")
        .arg("--bucket")
        .arg(bucket)
        .arg("--endpoint")
        .arg(&server.endpoint)
        .arg("--region")
        .arg(&server.region)
        .arg("--force-path-style")
        .env_remove("OUTBOUND_DELIVERY")
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env("OUTBOUND_LOG", "info,aws=warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The result of a finished run, with its output as text.
pub struct Run {
    pub success: bool,
    /// The exit code (75: stopped on a transient failure, 78: a permanent one).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Bytes the uploader says it sent (from its one-line report).
    pub fn bytes_sent(&self) -> u64 {
        let at = self.stdout.find("sent ").expect("report line") + 5;
        self.stdout[at..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("bytes sent")
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {} (exit code {:?})\n--- stdout\n{}\n--- stderr\n{}",
            self.success, self.code, self.stdout, self.stderr
        )
    }
}

pub fn finished(output: Output) -> Run {
    Run {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub async fn upload(server: &Server, bucket: &str, source: &Path, args: &[&str]) -> Run {
    let output = upload_command(server, bucket, source, args)
        .output()
        .await
        .expect("run outbound upload");
    finished(output)
}

/// Every object under `prefix`: key, size, last-modified.
pub async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Vec<(String, u64, aws_sdk_s3::primitives::DateTime)> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.expect("list objects");
        for o in page.contents() {
            out.push((
                o.key().unwrap().to_string(),
                o.size().unwrap() as u64,
                *o.last_modified().unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Open multipart uploads in the bucket.
pub async fn open_uploads(client: &Client, bucket: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads");
    out.uploads()
        .iter()
        .map(|u| format!("{} {}", u.key().unwrap_or(""), u.upload_id().unwrap_or("")))
        .collect()
}

pub fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The AWS CLI the ground installs (on PATH after sourcing the ground's env, or in the tool cache).
pub fn aws_cli() -> PathBuf {
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("aws"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let cache = std::env::var("OUTBOUND_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/outbound"));
    let aws = cache.join("bin/aws");
    assert!(
        aws.is_file(),
        "the aws CLI is missing: run `make ground-up` and `source tests/ground/.state/env` first"
    );
    aws
}

/// Runs the AWS CLI against `server` with its admin key; returns stdout as JSON.
pub fn aws(server: &Server, args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(aws_cli())
        .arg("--endpoint-url")
        .arg(&server.endpoint)
        .arg("--region")
        .arg(&server.region)
        .arg("--output")
        .arg("json")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run the aws CLI");
    assert!(
        output.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&output.stdout).expect("aws CLI JSON output")
    }
}
