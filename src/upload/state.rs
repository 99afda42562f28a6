//! Resume state and progress: open upload IDs and counters, kept in a state file (standalone) or
//! in this shard's OutboundShard, owned by the delivery (server-side apply, one field manager per
//! shard). Writes to the API server are retried with backoff and jitter; one that keeps failing
//! pauses the sending of new uploads, it never aborts anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::UploadError;
use super::retry::jitter;
pub use crate::shard::PieceRecord;
use crate::shard::{
    JOB_LABEL, OpenUpload, OutboundShard, SHARD_FINALIZER, ShardStatus, shard_name,
};

/// How long a status write that must land (an upload id, the end of a shard) is retried before
/// the pod gives up and exits retryable: long enough for an API server upgrade.
const STATUS_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// The field manager of one uploader shard, as the job contract names it.
pub fn field_manager(index: usize) -> String {
    format!("outbound-uploader-{index}")
}

/// At most this many per-object line counts go into a shard's report (about 20 bytes each; the
/// map is atomic, so one managed-fields entry in all). Only multipart objects are reported (a
/// single PUT carries its count in its metadata), each at least the part size; above the bound,
/// shard 0 counts those objects' lines from the source.
const MAX_REPORTED_LINES: usize = 5000;

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
    /// Bytes copied by the server (parts copied from the provider's bucket) by this run.
    pub bytes_copied: AtomicU64,
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
    /// The shard object `<job>-<index>` of a delivery.
    Shard(Box<ShardJournal>),
}

/// Where a Kubernetes shard reports: its OutboundShard, owned by the delivery.
pub struct ShardJournal {
    pub api: Api<OutboundShard>,
    /// The delivery's name and uid (the shard object's owner).
    pub delivery: String,
    pub uid: String,
    /// The upload Job's name, which the shard objects' names start with.
    pub job: String,
    pub index: usize,
}

impl ShardJournal {
    fn name(&self) -> String {
        shard_name(&self.job, self.index)
    }

    /// The shard object, with no report: its metadata ties it to the delivery (owner, so it
    /// goes with it), to the Job (label) and to the operator's aborts (finalizer).
    fn object(&self) -> OutboundShard {
        let mut shard = OutboundShard::new(
            &self.name(),
            crate::shard::ShardSpec {
                delivery: self.delivery.clone(),
                index: self.index as u32,
            },
        );
        shard.metadata.labels = Some(
            [
                (
                    crate::api::DELIVERY_LABEL.to_string(),
                    self.delivery.clone(),
                ),
                (JOB_LABEL.to_string(), self.job.clone()),
            ]
            .into(),
        );
        shard.metadata.finalizers = Some(vec![SHARD_FINALIZER.to_string()]);
        shard.metadata.owner_references = Some(vec![OwnerReference {
            api_version: crate::api::OutboundDelivery::api_version(&()).into(),
            kind: crate::api::OutboundDelivery::kind(&()).into(),
            name: self.delivery.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        shard
    }

    /// Every shard object of this delivery's Job.
    async fn all(&self) -> Result<Vec<OutboundShard>, UploadError> {
        let list = self
            .api
            .list(&kube::api::ListParams::default().labels(&format!("{JOB_LABEL}={}", self.job)))
            .await
            .map_err(|e| {
                UploadError::State(format!("failed to list the shards of {}: {e}", self.job))
            })?;
        Ok(list
            .items
            .into_iter()
            .filter(|s| s.owner_references().iter().any(|r| r.uid == self.uid))
            .collect())
    }
}

/// The shard's state, shared by every object task.
pub struct State {
    backend: Backend,
    uploads: Mutex<BTreeMap<String, String>>,
    /// Bytes the shard's earlier pods sent and had copied (its status counts every attempt).
    earlier: (u64, u64),
    /// The source stamp each open upload was started from.
    sources: Mutex<BTreeMap<String, String>>,
    /// Line counts of this run's objects (sent or found), by plan index, for the manifest.
    lines: Mutex<BTreeMap<usize, u64>>,
    /// Plan indexes of the multipart objects among `lines`: the counts no metadata carries.
    multipart: Mutex<std::collections::BTreeSet<usize>>,
    /// The pieces of this run's gzip files cut on lines, by plan index, for the manifest.
    pieces: Mutex<BTreeMap<usize, Vec<PieceRecord>>>,
    pub progress: Progress,
    /// The last error: (reason, message, permanent).
    failure: Mutex<Option<(String, String, bool)>>,
    finished: AtomicBool,
    /// The shard object exists (found at the start, or created by the first write).
    created: AtomicBool,
    dirty: AtomicBool,
    // Serialises writes so an older snapshot never lands after a newer one.
    writing: tokio::sync::Mutex<()>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StateFile {
    /// Open multipart uploads: key -> upload ID.
    uploads: BTreeMap<String, String>,
    /// The source stamp each was started from: key -> stamp.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sources: BTreeMap<String, String>,
}

impl State {
    /// Opens the state, loading the upload IDs a previous run left open.
    pub async fn open(backend: Backend) -> Result<Arc<State>, UploadError> {
        let mut exists = false;
        let mut earlier = (0, 0);
        let mut sources = BTreeMap::new();
        let uploads = match &backend {
            Backend::None => BTreeMap::new(),
            Backend::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => {
                    let file = serde_json::from_slice::<StateFile>(&bytes).map_err(|e| {
                        UploadError::State(format!(
                            "state file {} is unreadable: {e}",
                            path.display()
                        ))
                    })?;
                    sources = file.sources;
                    file.uploads
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => {
                    return Err(UploadError::State(format!(
                        "failed to read state file {}: {e}",
                        path.display()
                    )));
                }
            },
            Backend::Shard(journal) => {
                let name = journal.name();
                let found =
                    journal.api.get_opt(&name).await.map_err(|e| {
                        UploadError::State(format!("failed to read shard {name}: {e}"))
                    })?;
                exists = found.is_some();
                let report = found.and_then(|shard| shard.status);
                earlier = report
                    .as_ref()
                    .map_or((0, 0), |r| (r.bytes_sent, r.bytes_copied));
                let open = report.map(|report| report.uploads).unwrap_or_default();
                for u in &open {
                    if let Some(source) = &u.source {
                        sources.insert(u.key.clone(), source.clone());
                    }
                }
                open.into_iter().map(|u| (u.key, u.upload_id)).collect()
            }
        };
        Ok(Arc::new(State {
            backend,
            earlier,
            uploads: Mutex::new(uploads),
            sources: Mutex::new(sources),
            lines: Mutex::new(BTreeMap::new()),
            multipart: Mutex::new(Default::default()),
            pieces: Mutex::new(BTreeMap::new()),
            progress: Progress::default(),
            failure: Mutex::new(None),
            finished: AtomicBool::new(false),
            created: AtomicBool::new(exists),
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
        if !matches!(self.backend, Backend::Shard(_)) {
            return Ok(());
        }
        self.uploads
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default();
        self.flush_patiently().await
    }

    /// Records a new upload ID (and the stamp of the source it is read from) and writes it at
    /// once: whoever cleans up must be able to find it. While the write fails (the API server
    /// away or refusing), this waits and tries again.
    pub async fn record(
        &self,
        key: &str,
        upload_id: &str,
        source: Option<&str>,
    ) -> Result<(), UploadError> {
        self.uploads
            .lock()
            .unwrap()
            .insert(key.to_string(), upload_id.to_string());
        if let Some(source) = source {
            self.sources
                .lock()
                .unwrap()
                .insert(key.to_string(), source.to_string());
        }
        self.flush_patiently().await
    }

    /// The stamp of the source the open upload of `key` was started from, if recorded.
    pub fn source_of(&self, key: &str) -> Option<String> {
        self.sources.lock().unwrap().get(key).cloned()
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
        self.sources.lock().unwrap().remove(key);
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
    pub fn record_lines(&self, object: &crate::plan::PlannedObject, lines: u64) {
        self.lines.lock().unwrap().insert(object.index, lines);
        if object.multipart {
            self.multipart.lock().unwrap().insert(object.index);
        }
    }

    /// The pieces a gzip file of the plan was cut into (sent or found).
    pub fn record_pieces(&self, unit: &crate::plan::PlannedObject, pieces: Vec<PieceRecord>) {
        self.pieces.lock().unwrap().insert(unit.index, pieces);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The pieces this run knows, by plan index.
    pub fn pieces(&self) -> BTreeMap<usize, Vec<PieceRecord>> {
        self.pieces.lock().unwrap().clone()
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
        let sources = self.sources.lock().unwrap().clone();
        match &self.backend {
            Backend::None => Ok(()),
            Backend::File(path) => {
                let body = serde_json::to_vec_pretty(&StateFile { uploads, sources })
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
            Backend::Shard(journal) => {
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
                    bytes_sent: self.earlier.0 + Progress::get(&p.bytes_sent),
                    bytes_copied: self.earlier.1 + Progress::get(&p.bytes_copied),
                    uploads: uploads
                        .iter()
                        .map(|(key, id)| OpenUpload {
                            key: key.clone(),
                            upload_id: id.clone(),
                            source: sources.get(key).cloned(),
                        })
                        .collect(),
                    finished,
                    // For shard 0's manifest; above the bound, shard 0 counts those lines itself.
                    lines: {
                        let multipart = self.multipart.lock().unwrap();
                        if finished && multipart.len() <= MAX_REPORTED_LINES {
                            lines
                                .iter()
                                .filter(|(i, _)| multipart.contains(i))
                                .map(|(i, n)| (i.to_string(), *n))
                                .collect()
                        } else {
                            BTreeMap::new()
                        }
                    },
                    pieces: if finished {
                        self.pieces()
                            .into_iter()
                            .map(|(i, p)| (i.to_string(), p))
                            .collect()
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
                let name = journal.name();
                let params = PatchParams::apply(&field_manager(journal.index)).force();
                let failed = |e: kube::Error| {
                    self.dirty.store(true, Ordering::Relaxed);
                    UploadError::State(format!("failed to write shard {name}: {e}"))
                };
                if !self.created.load(Ordering::Relaxed) {
                    journal
                        .api
                        .patch(&name, &params, &Patch::Apply(journal.object()))
                        .await
                        .map_err(failed)?;
                    self.created.store(true, Ordering::Relaxed);
                }
                let patch = json!({
                    "apiVersion": OutboundShard::api_version(&()),
                    "kind": OutboundShard::kind(&()),
                    "metadata": {"name": name},
                    "status": shard,
                });
                journal
                    .api
                    .patch_status(&name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
                    .map_err(failed)
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
                    if matches!(state.backend, Backend::Shard(_))
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
        let Backend::Shard(journal) = &self.backend else {
            return Ok(BTreeMap::new());
        };
        let mut lines = BTreeMap::new();
        for shard in journal.all().await? {
            for (index, n) in shard.status.map(|s| s.lines).unwrap_or_default() {
                if let Ok(index) = index.parse() {
                    lines.insert(index, n);
                }
            }
        }
        Ok(lines)
    }

    /// The pieces every shard of the delivery reported when it finished (Kubernetes only).
    pub async fn reported_pieces(&self) -> Result<BTreeMap<usize, Vec<PieceRecord>>, UploadError> {
        let Backend::Shard(journal) = &self.backend else {
            return Ok(BTreeMap::new());
        };
        let mut pieces = BTreeMap::new();
        for shard in journal.all().await? {
            for (index, p) in shard.status.map(|s| s.pieces).unwrap_or_default() {
                if let Ok(index) = index.parse() {
                    pieces.insert(index, p);
                }
            }
        }
        Ok(pieces)
    }

    /// Whether every shard of the delivery reports `finished` (Kubernetes only).
    pub async fn all_shards_finished(&self, count: usize) -> Result<Option<bool>, UploadError> {
        let Backend::Shard(journal) = &self.backend else {
            return Ok(None);
        };
        let finished: std::collections::BTreeSet<u32> = journal
            .all()
            .await?
            .into_iter()
            .filter(|s| s.status.as_ref().is_some_and(|r| r.finished))
            .map(|s| s.spec.index)
            .collect();
        Ok(Some((0..count as u32).all(|i| finished.contains(&i))))
    }
}
