//! Resume state and progress: open upload IDs and counters, kept in a state file (standalone) or
//! in the delivery's `status.shards.<index>` (server-side apply, one field manager per shard).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::error::UploadError;

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
    message: Mutex<Option<String>>,
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
                let mut uploads = BTreeMap::new();
                if let Some(list) =
                    delivery.data["status"]["shards"][index.to_string()]["uploads"].as_array()
                {
                    for entry in list {
                        if let (Some(key), Some(id)) =
                            (entry["key"].as_str(), entry["uploadId"].as_str())
                        {
                            uploads.insert(key.to_string(), id.to_string());
                        }
                    }
                }
                uploads
            }
        };
        Ok(Arc::new(State {
            backend,
            uploads: Mutex::new(uploads),
            lines: Mutex::new(BTreeMap::new()),
            progress: Progress::default(),
            message: Mutex::new(None),
            finished: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            writing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The upload ID a previous run opened for `key`.
    pub fn upload_for(&self, key: &str) -> Option<String> {
        self.uploads.lock().unwrap().get(key).cloned()
    }

    /// Records a new upload ID and writes it at once: whoever cleans up must be able to find it.
    pub async fn record(&self, key: &str, upload_id: &str) -> Result<(), UploadError> {
        self.uploads
            .lock()
            .unwrap()
            .insert(key.to_string(), upload_id.to_string());
        self.flush().await
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

    pub fn set_message(&self, message: Option<String>) {
        *self.message.lock().unwrap() = message;
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
                let mut shard = json!({
                    // An object restarted afresh counts its parts twice; never report above 100%.
                    "bytesDone": Progress::get(&p.bytes_done).min(bytes_total),
                    "bytesTotal": bytes_total,
                    "objectsDone": Progress::get(&p.objects_done),
                    "objectsTotal": Progress::get(&p.objects_total),
                    "uploads": uploads
                        .iter()
                        .map(|(key, id)| json!({"key": key, "uploadId": id}))
                        .collect::<Vec<_>>(),
                    "finished": self.finished.load(Ordering::Relaxed),
                    "updatedAt": jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()).to_string(),
                });
                if let Some(message) = self.message.lock().unwrap().clone() {
                    shard["message"] = json!(message);
                }
                let lines = self.lines();
                if self.finished.load(Ordering::Relaxed) && lines.len() <= MAX_REPORTED_LINES {
                    // For shard 0's manifest; above the bound, shard 0 counts those lines itself.
                    shard["lines"] = json!(
                        lines
                            .iter()
                            .map(|(index, n)| (index.to_string(), *n))
                            .collect::<BTreeMap<_, _>>()
                    );
                }
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
        if let Some(shards) = delivery.data["status"]["shards"].as_object() {
            for shard in shards.values() {
                if let Some(reported) = shard["lines"].as_object() {
                    for (index, n) in reported {
                        if let (Ok(index), Some(n)) = (index.parse(), n.as_u64()) {
                            lines.insert(index, n);
                        }
                    }
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
        let shards = &delivery.data["status"]["shards"];
        Ok(Some((0..count).all(|i| {
            shards[i.to_string()]["finished"].as_bool() == Some(true)
        })))
    }
}
