//! The chart's alert rules and Grafana dashboard as the tests read them, and a real Prometheus
//! (built by `tests/ground/scripts/tools.sh prometheus`) that scrapes the operator and answers
//! PromQL over its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool the ground's scripts built into the cache (helm, promtool, prometheus).
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var("OUTBOUND_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/outbound"));
    let path = cache.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/ground/scripts/tools.sh all",
        path.display()
    );
    path
}

/// The chart's PrometheusRule spec (`groups:`), rendered by helm with the given `--set`s on top
/// of the defaults and the rules enabled.
pub fn rendered_rules(sets: &[&str]) -> serde_yaml::Value {
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", "outbound"])
        .arg(root().join("charts/outbound"))
        .args([
            "--kube-version",
            "1.35.0",
            "--set",
            "prometheusRule.enabled=true",
        ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.args(["--show-only", "templates/monitoring.yaml"]);
    let out = cmd.output().expect("helm template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rule = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|v: &serde_yaml::Value| v["kind"] == "PrometheusRule")
        .expect("the chart renders a PrometheusRule");
    rule["spec"].clone()
}

/// Each alert's name and expression, as the chart renders them by default.
pub fn alerts() -> Vec<(String, String)> {
    let spec = rendered_rules(&[]);
    spec["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().trim().to_string(),
            )
        })
        .collect()
}

/// The dashboard's JSON as the chart ships it.
pub fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("charts/outbound/files/grafana/outbound.json"))
        .unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel's title and query, with Grafana's variables replaced as Grafana would:
/// `$namespace` by the regex given, `$__rate_interval` by the interval given.
pub fn dashboard_queries(namespace: &str, rate_interval: &str) -> Vec<(String, String)> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or_default()
                        .replace("$__rate_interval", rate_interval)
                        .replace("$namespace", namespace);
                    (title.clone(), expr)
                })
        })
        .collect()
}

/// Every metric selector in a query (`name` or `name{...}`), for looking each up alone.
pub fn selectors(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("outbound_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if end < bytes.len() && bytes[end] == b'{' {
            end += expr[end..].find('}').expect("a closed selector") + 1;
        }
        let s = expr[start..end].to_string();
        if !found.contains(&s) {
            found.push(s);
        }
        i = end;
    }
    found
}

/// A Prometheus server on 127.0.0.1 with its own storage in a temporary folder.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) every second and evaluates `rules` (a rule file's text)
    /// every second.
    pub async fn start(targets: &[String], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yaml]\nscrape_configs:\n  - job_name: outbound\n    static_configs:\n      - targets: {}\n",
            serde_json::to_string(targets).unwrap()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg("--storage.tsdb.path=data")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("prometheus");
        let prom = Prometheus {
            child,
            url: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let log = prom._dir.path().join("prometheus.log");
        super::wait_for(
            "Prometheus ready",
            Duration::from_secs(60),
            || async {
                let (status, _) = prom.get("/-/ready").await.ok()?;
                (status == 200).then_some(())
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await;
        prom
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn request(&self, head: String, body: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.url).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request(
            format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.url),
            "",
        )
        .await
    }

    /// A range query over `[start, end]` (Unix seconds) at 1 s steps: the series it returns, or
    /// Prometheus' error (a query that does not parse, a bad function).
    pub async fn query_range(
        &self,
        expr: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<serde_json::Value>, String> {
        let body = format!("query={}&start={start}&end={end}&step=1", encode(expr));
        let (status, text) = self
            .request(
                format!(
                    "POST /api/v1/query_range HTTP/1.0\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                    self.url,
                    body.len()
                ),
                &body,
            )
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("HTTP {status}: {e}: {text}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The rules as Prometheus evaluated them last (`/api/v1/rules`): name, health, last error.
    pub async fn rules(&self) -> Vec<(String, String, String)> {
        let (_, text) = self.get("/api/v1/rules").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().iter())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["health"].as_str().unwrap_or_default().to_string(),
                    r["lastError"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a form field.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rendered rules as a Prometheus rule file.
pub fn rules_file(spec: &serde_yaml::Value) -> String {
    serde_yaml::to_string(spec).unwrap()
}

/// Runs promtool with `args` in `dir`; its output, or a panic with it.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tool("promtool"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}
