//! Resume state and progress: open upload IDs and counters, kept in a state file (standalone) or
//! in the delivery's `status.shards.<index>` (server-side apply, one field manager per shard).
//! Writes to the API server are retried with backoff and jitter; one that keeps failing pauses
//! the sending of new uploads, it never aborts anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::error::UploadError;
use super::retry::jitter;
use crate::shard::{OpenUpload, ShardStatus};

/// How long a status write that must land (an upload id, the end of a shard) is retried before
/// the pod gives up and exits retryable: long enough for an API server upgrade.
const STATUS_PATIENCE: Duration = Duration::from_secs(15 * 60);

pub const GROUP: &str = "outbound.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "OutboundDelivery";
pub const PLURAL: &str = "outbounddeliveries";

/// The field manager of one uploader shard, as the job contract names it.
pub fn field_manager(index: usize) -> String {
    format!("outbound-uploader-{index}")
}

/// The OutboundDelivery resource, untyped: the uploader does not depend on the operator's types.
pub fn delivery_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// At most this many per-object line counts go into a shard's status (etcd objects are small).
const MAX_REPORTED_LINES: usize = 10_000;

/// Counters of this shard's work.
#[derive(Default, Debug)]
pub struct Progress {
    pub bytes_total: AtomicU64,
    pub objects_total: AtomicU64,
    /// Bytes of objects (or parts) that are stored, whether sent now or found already there.
    pub bytes_done: AtomicU64,
    pub objects_done: AtomicU64,
    /// Bytes actually sent by this run.
    pub bytes_sent: AtomicU64,
    pub parts_sent: AtomicU64,
    /// Objects found already delivered.
    pub objects_skipped: AtomicU64,
    /// Bytes read from the source (to send, to compare, to count lines).
    pub bytes_read: AtomicU64,
}

impl Progress {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Where the state lives.
pub enum Backend {
    /// Nowhere: a killed run starts over (objects already complete are still not sent again).
    None,
    File(PathBuf),
    Delivery {
        api: Box<Api<DynamicObject>>,
        name: String,
        index: usize,
    },
}

/// The shard's state, shared by every object task.
pub struct State {
    backend: Backend,
    uploads: Mutex<BTreeMap<String, String>>,
    /// Line counts of this run's objects (sent or found), by plan index, for the manifest.
    lines: Mutex<BTreeMap<usize, u64>>,
    pub progress: Progress,
    /// The last error: (reason, message, permanent).
    failure: Mutex<Option<(String, String, bool)>>,
    finished: AtomicBool,
    dirty: AtomicBool,
    // Serialises writes so an older snapshot never lands after a newer one.
    writing: tokio::sync::Mutex<()>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StateFile {
    /// Open multipart uploads: key -> upload ID.
    uploads: BTreeMap<String, String>,
}

impl State {
    /// Opens the state, loading the upload IDs a previous run left open.
    pub async fn open(backend: Backend) -> Result<Arc<State>, UploadError> {
        let uploads = match &backend {
            Backend::None => BTreeMap::new(),
            Backend::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => {
                    serde_json::from_slice::<StateFile>(&bytes)
                        .map_err(|e| {
                            UploadError::State(format!(
                                "state file {} is unreadable: {e}",
                                path.display()
                            ))
                        })?
                        .uploads
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => {
                    return Err(UploadError::State(format!(
                        "failed to read state file {}: {e}",
                        path.display()
                    )));
                }
            },
            Backend::Delivery { api, name, index } => {
                let delivery = api.get(name).await.map_err(|e| {
                    UploadError::State(format!("failed to read delivery {name}: {e}"))
                })?;
                shards(&delivery)
                    .remove(&index.to_string())
                    .map(|shard| {
                        shard
                            .uploads
                            .into_iter()
                            .map(|u| (u.key, u.upload_id))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        Ok(Arc::new(State {
            backend,
            uploads: Mutex::new(uploads),
            lines: Mutex::new(BTreeMap::new()),
            progress: Progress::default(),
            failure: Mutex::new(None),
            finished: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            writing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The upload ID a previous run opened for `key`.
    pub fn upload_for(&self, key: &str) -> Option<String> {
        self.uploads
            .lock()
            .unwrap()
            .get(key)
            .filter(|id| !id.is_empty())
            .cloned()
    }

    /// Whether a previous run was about to start an upload for `key` and never recorded its id.
    pub fn intended(&self, key: &str) -> bool {
        self.uploads
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|id| id.is_empty())
    }

    /// Records that an upload for `key` is about to start (an entry without id), before S3 is
    /// asked: a pod killed between the two leaves a key the operator can look up, exactly.
    pub async fn intend(&self, key: &str) -> Result<(), UploadError> {
        if !matches!(self.backend, Backend::Delivery { .. }) {
            return Ok(());
        }
        self.uploads
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default();
        self.flush_patiently().await
    }

    /// Records a new upload ID and writes it at once: whoever cleans up must be able to find it.
    /// While the write fails (the API server away or refusing), this waits and tries again.
    pub async fn record(&self, key: &str, upload_id: &str) -> Result<(), UploadError> {
        self.uploads
            .lock()
            .unwrap()
            .insert(key.to_string(), upload_id.to_string());
        self.flush_patiently().await
    }

    /// Writes the state, retrying with backoff and jitter for up to `STATUS_PATIENCE`.
    pub async fn flush_patiently(&self) -> Result<(), UploadError> {
        let started = std::time::Instant::now();
        let mut round = 0u32;
        loop {
            match self.flush().await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() >= STATUS_PATIENCE => return Err(e),
                Err(e) => {
                    round += 1;
                    tracing::warn!(error = %e, round, "pausing: the state could not be recorded; trying again");
                    let cap =
                        Duration::from_millis(500u64 << round.min(5)).min(Duration::from_secs(15));
                    tokio::time::sleep(jitter(cap)).await;
                }
            }
        }
    }

    /// Forgets a completed or aborted upload; written with the next progress report.
    pub async fn forget(&self, key: &str) {
        if self.uploads.lock().unwrap().remove(key).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
            if matches!(self.backend, Backend::File(_)) {
                // A state file is cheap to write; keep it exact.
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "failed to update the state file");
                }
            }
        }
    }

    /// Remembers an object's line count (counted while it was sent or compared).
    pub fn record_lines(&self, index: usize, lines: u64) {
        self.lines.lock().unwrap().insert(index, lines);
    }

    /// The line counts this run knows, by plan index.
    pub fn lines(&self) -> BTreeMap<usize, u64> {
        self.lines.lock().unwrap().clone()
    }

    pub fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Records the error that stopped this shard (or clears it).
    pub fn set_failure(&self, failure: Option<&UploadError>) {
        *self.failure.lock().unwrap() =
            failure.map(|e| (e.reason().to_string(), e.to_string(), !e.is_transient()));
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub fn set_finished(&self) {
        self.finished.store(true, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the current state now.
    pub async fn flush(&self) -> Result<(), UploadError> {
        let _guard = self.writing.lock().await;
        self.dirty.store(false, Ordering::Relaxed);
        let uploads = self.uploads.lock().unwrap().clone();
        match &self.backend {
            Backend::None => Ok(()),
            Backend::File(path) => {
                let body = serde_json::to_vec_pretty(&StateFile { uploads })
                    .map_err(|e| UploadError::State(e.to_string()))?;
                let tmp = path.with_extension("tmp");
                let write = async {
                    tokio::fs::write(&tmp, &body).await?;
                    tokio::fs::File::open(&tmp).await?.sync_all().await?;
                    tokio::fs::rename(&tmp, path).await
                };
                write.await.map_err(|e| {
                    UploadError::State(format!(
                        "failed to write state file {}: {e}",
                        path.display()
                    ))
                })
            }
            Backend::Delivery { api, name, index } => {
                let p = &self.progress;
                let bytes_total = Progress::get(&p.bytes_total);
                let finished = self.finished.load(Ordering::Relaxed);
                let lines = self.lines();
                let failure = self.failure.lock().unwrap().clone();
                let shard = ShardStatus {
                    // An object restarted afresh counts its parts twice; never report above 100%.
                    bytes_done: Progress::get(&p.bytes_done).min(bytes_total),
                    bytes_total,
                    objects_done: Progress::get(&p.objects_done),
                    objects_total: Progress::get(&p.objects_total),
                    uploads: uploads
                        .iter()
                        .map(|(key, id)| OpenUpload {
                            key: key.clone(),
                            upload_id: id.clone(),
                        })
                        .collect(),
                    finished,
                    // For shard 0's manifest; above the bound, shard 0 counts those lines itself.
                    lines: if finished && lines.len() <= MAX_REPORTED_LINES {
                        lines.iter().map(|(i, n)| (i.to_string(), *n)).collect()
                    } else {
                        BTreeMap::new()
                    },
                    permanent: failure.as_ref().is_some_and(|f| f.2),
                    reason: failure.as_ref().map(|f| f.0.clone()),
                    message: failure.map(|f| f.1),
                    updated_at: Some(
                        jiff::Timestamp::now()
                            .round(jiff::Unit::Second)
                            .unwrap_or_else(|_| jiff::Timestamp::now())
                            .to_string(),
                    ),
                };
                let patch = json!({
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "kind": KIND,
                    "metadata": {"name": name},
                    "status": {"shards": {index.to_string(): shard}},
                });
                let params = PatchParams::apply(&field_manager(*index)).force();
                api.patch_status(name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        self.dirty.store(true, Ordering::Relaxed);
                        UploadError::State(format!(
                            "failed to update status of delivery {name}: {e}"
                        ))
                    })
            }
        }
    }

    /// Writes progress every `every` while something changed; stops when the handle is aborted.
    pub fn spawn_reporter(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = (u64::MAX, u64::MAX);
            loop {
                tokio::time::sleep(every).await;
                let now = (
                    Progress::get(&state.progress.bytes_done),
                    Progress::get(&state.progress.objects_done),
                );
                if now != last || state.dirty.load(Ordering::Relaxed) {
                    last = now;
                    if matches!(state.backend, Backend::Delivery { .. })
                        && let Err(e) = state.flush().await
                    {
                        tracing::warn!(error = %e, "failed to report progress");
                    }
                }
            }
        })
    }

    /// The line counts every shard of the delivery reported when it finished (Kubernetes only).
    pub async fn reported_lines(&self) -> Result<BTreeMap<usize, u64>, UploadError> {
        let Backend::Delivery { api, name, .. } = &self.backend else {
            return Ok(BTreeMap::new());
        };
        let delivery = api
            .get(name)
            .await
            .map_err(|e| UploadError::State(format!("failed to read delivery {name}: {e}")))?;
        let mut lines = BTreeMap::new();
        for shard in shards(&delivery).into_values() {
            for (index, n) in shard.lines {
                if let Ok(index) = index.parse() {
                    lines.insert(index, n);
                }
            }
        }
        Ok(lines)
    }

    /// Whether every shard of the delivery reports `finished` (Kubernetes only).
    pub async fn all_shards_finished(&self, count: usize) -> Result<Option<bool>, UploadError> {
        let Backend::Delivery { api, name, .. } = &self.backend else {
            return Ok(None);
        };
        let delivery = api
            .get(name)
            .await
            .map_err(|e| UploadError::State(format!("failed to read delivery {name}: {e}")))?;
        let shards = shards(&delivery);
        Ok(Some((0..count).all(|i| {
            shards.get(&i.to_string()).is_some_and(|s| s.finished)
        })))
    }
}

/// The shard reports in a delivery's status (an unreadable one counts as absent).
fn shards(delivery: &DynamicObject) -> BTreeMap<String, ShardStatus> {
    serde_json::from_value(delivery.data["status"]["shards"].clone()).unwrap_or_default()
}
