//! The data plane: `outbound upload` (split reader, multipart engine, resume, progress, manifest)
//! and `outbound plan`.
//!
//! Decisions worth knowing:
//! - Each byte is read once before the socket: a part is mapped from the page cache, checksummed
//!   (and its newlines counted when a manifest needs them) in 256 KiB chunks, and the mapping is
//!   the request body; the part digests combine into the object's checksum, the counts into its
//!   lines. Only an object already at its key is read before sending ([`engine::scan`], to
//!   compare it), and only the stored parts of a resumed upload are read without being sent (to
//!   check them against ListParts' checksums).
//! - Line counts reach the manifest from the run that counted them: shard 0's own, the other
//!   shards' from their OutboundShards' `status.lines`, the `outbound-lines` metadata of single PUTs,
//!   and failing all of those, a count of the source's bytes by the manifest's writer.
//! - CRC64NVME and CRC32C uploads ask for FULL_OBJECT checksums (computed locally by combining the
//!   part CRCs); SHA256 can only be COMPOSITE (`digest-of-digests-N`). versitygw 1.8 supports all
//!   three, returns them from CompleteMultipartUpload, HEAD and ListParts.
//! - The SDK retries each request (standard mode, backoff with jitter); on top of that every
//!   request that still fails with a retryable cause is retried a few more rounds (`retry`).
//! - A pod never aborts an upload on a failure. A transient one (network, 5xx, throttling, the
//!   API server away, SIGTERM) exits `EXIT_RETRYABLE` with every upload left open for the next
//!   pod; a permanent one exits `EXIT_PERMANENT`, which the Job's pod failure policy turns into a
//!   failed Job at once. The operator aborts the uploads of a delivery that ended or was deleted.

pub mod copy;
pub mod engine;
pub mod error;
pub mod headers;
pub mod manifest;
pub mod recut;
pub mod requests;
pub mod retry;
pub mod slots;
pub mod source;
pub mod state;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use clap::ArgAction;
use futures::StreamExt as _;

use crate::checksum::ChecksumAlgorithm;
use crate::credentials::{Access, Target};
use crate::plan::{self, Plan, PlanSettings, SplitOn};
use crate::units::{format_size, parse_size};
use engine::{Engine, ObjectSettings, Outcome};
use error::UploadError;
use headers::WriteHeaders;
use retry::RetryPolicy;
use source::S3Source;
use state::{Backend, Progress, State};

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

/// What to read and how to cut it (shared by `upload` and `plan`).
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Local folder to deliver (in a Job: the read-only claim mount plus `source.volume.path`).
    #[arg(
        long,
        env = "OUTBOUND_SOURCE",
        required_unless_present = "source_s3",
        conflicts_with = "source_s3"
    )]
    pub source: Option<PathBuf>,
    /// Or a bucket and folder of the provider's own: `s3://bucket/prefix/`, read with the keys in
    /// OUTBOUND_SOURCE_AWS_ACCESS_KEY_ID and OUTBOUND_SOURCE_AWS_SECRET_ACCESS_KEY (else the
    /// workload identity), never with the destination's.
    #[arg(long, env = "OUTBOUND_SOURCE_S3")]
    pub source_s3: Option<String>,
    /// The source bucket's region.
    #[arg(long, env = "OUTBOUND_SOURCE_REGION", default_value = "us-east-1")]
    pub source_region: String,
    /// The source's S3-compatible endpoint URL.
    #[arg(long, env = "OUTBOUND_SOURCE_ENDPOINT")]
    pub source_endpoint: Option<String>,
    /// PEM certificates of a private CA that signs the source endpoint's certificate, trusted
    /// besides the system's.
    #[arg(long, env = "OUTBOUND_SOURCE_CA_BUNDLE", hide_env_values = true)]
    pub source_ca_bundle: Option<String>,
    /// Path-style addressing for the source endpoint.
    #[arg(long, env = "OUTBOUND_SOURCE_FORCE_PATH_STYLE", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub source_force_path_style: bool,
    /// Comma-separated globs, relative to the source, of files to deliver (default: all).
    #[arg(long, env = "OUTBOUND_INCLUDE", value_delimiter = ',')]
    pub include: Vec<String>,
    /// Comma-separated globs, relative to the source, of files to leave out.
    #[arg(long, env = "OUTBOUND_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Only files created or changed (inode change time) at or after this instant (RFC 3339):
    /// an incremental run.
    #[arg(long, env = "OUTBOUND_CHANGED_AFTER")]
    pub changed_after: Option<jiff::Timestamp>,
    /// Only files last created or changed before this instant (RFC 3339): one still being
    /// written is left to the next run.
    #[arg(long, env = "OUTBOUND_CHANGED_BEFORE")]
    pub changed_before: Option<jiff::Timestamp>,
    /// Key prefix (destination prefix + delivery keyPrefix), prepended as is.
    #[arg(long, env = "OUTBOUND_PREFIX", default_value = "")]
    pub prefix: String,
    /// Largest object: bytes or a quantity (`8Mi`, `512Gi`), at most 1Ti.
    #[arg(long, env = "OUTBOUND_SPLIT_SIZE", default_value = "1Ti", value_parser = size_arg)]
    pub split_size: u64,
    /// Cut only after a newline (`lines`) or at exactly the split size (`bytes`).
    #[arg(long, env = "OUTBOUND_SPLIT_ON", value_enum, default_value_t = SplitOn::Lines)]
    pub split_on: SplitOn,
    /// Part size (5Mi..5Gi), raised when an object would need more than 10,000 parts. Default:
    /// 16Mi, grown for objects over 1Gi to about 64 parts of at most 64Mi.
    #[arg(long, env = "OUTBOUND_PART_SIZE", value_parser = size_arg)]
    pub part_size: Option<u64>,
    /// Objects up to this size go up in a single PUT (default: the part size).
    #[arg(long, env = "OUTBOUND_MULTIPART_THRESHOLD", value_parser = size_arg)]
    pub multipart_threshold: Option<u64>,
    /// Naming of the objects: `{stem}`, `{n}` (001, 002 ...), `{ext}`. Given, it names every
    /// object (an unsplit file as piece 001); by default (`{stem}-{n}{ext}`) only a split file's
    /// pieces, an unsplit file keeping its name.
    #[arg(long, env = "OUTBOUND_NAME_TEMPLATE")]
    pub name_template: Option<String>,
    /// Compress files on the way out (`gzip`), `.gz` appended to their names; files already
    /// compressed (or of a binary format, by their first bytes) go as they are. A file is cut
    /// into pieces, each a gzip stream of at most the split size (on lines in lines mode).
    #[arg(long, env = "OUTBOUND_COMPRESS", value_enum)]
    pub compress: Option<Compress>,
    /// The gzip level of `--compress`: 1 (fastest) to 9 (smallest).
    #[arg(long, env = "OUTBOUND_COMPRESS_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub compress_level: u32,
}

/// How files are compressed on the way out.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compress {
    Gzip,
}

impl SourceArgs {
    fn settings(&self) -> PlanSettings {
        let part_size = self.part_size.unwrap_or(plan::DEFAULT_PART_SIZE);
        PlanSettings {
            split_size: self.split_size,
            split_on: self.split_on,
            part_size,
            grow_parts: self.part_size.is_none(),
            multipart_threshold: self.multipart_threshold.unwrap_or(part_size),
            prefix: self.prefix.clone(),
            name_template: self
                .name_template
                .clone()
                .unwrap_or_else(|| plan::DEFAULT_NAME_TEMPLATE.to_string()),
            name_every_object: self.name_template.is_some(),
            compress: self.compress.map(|Compress::Gzip| self.compress_level),
        }
    }

    /// The provider's bucket, when the source is one.
    pub async fn s3(&self) -> Result<Option<Arc<S3Source>>, UploadError> {
        match &self.source_s3 {
            None => Ok(None),
            Some(url) => S3Source::connect(
                url,
                &self.source_region,
                self.source_endpoint.as_deref(),
                self.source_force_path_style,
                self.source_ca_bundle.as_deref(),
            )
            .await
            .map(Some),
        }
    }

    /// Finds the files (in the folder, or in the provider's bucket `s3`) and plans them (blocking
    /// IO, run off the async threads).
    async fn plan(&self, s3: Option<Arc<S3Source>>) -> Result<Plan, UploadError> {
        self.plan_counted(s3, Arc::default()).await
    }

    /// [`Self::plan`], counting what it found and planned into `progress`.
    async fn plan_counted(
        &self,
        s3: Option<Arc<S3Source>>,
        progress: Arc<plan::PlanProgress>,
    ) -> Result<Plan, UploadError> {
        let args = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(s3) = &s3 {
                // Objects never change in place: when they were written is their change time.
                let window = (args.changed_after, args.changed_before);
                let files = s3.list(&args.include, &args.exclude, window, &progress)?;
                progress.walked.store(true, Ordering::Relaxed);
                return Ok(plan::plan_counted(
                    &files,
                    &args.settings(),
                    |f| Ok(source::ObjectReader::new(s3, f)),
                    &progress,
                )?);
            }
            let folder = args.source.as_deref().expect("a folder or a bucket (clap)");
            let mut files = walk::walk_counted(folder, &args.include, &args.exclude, &progress)?;
            if args.changed_after.is_some() || args.changed_before.is_some() {
                files = walk::changed_between(files, args.changed_after, args.changed_before)?;
                // The totals the bar counts towards are those of the files chosen.
                progress
                    .files_found
                    .store(files.len() as u64, Ordering::Relaxed);
                progress
                    .bytes_found
                    .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
            }
            progress.walked.store(true, Ordering::Relaxed);
            Ok(plan::plan_counted(
                &files,
                &args.settings(),
                |f| walk::open_source(&f.relative, &f.path).map_err(std::io::Error::other),
                &progress,
            )?)
        })
        .await
        .expect("planning does not panic")
    }
}

/// Options of `outbound upload` (see docs/design/job-contract.md).
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Bucket name.
    #[arg(long, env = "OUTBOUND_BUCKET")]
    pub bucket: String,
    #[arg(long, env = "OUTBOUND_REGION", default_value = "us-east-1")]
    pub region: String,
    /// S3-compatible endpoint URL.
    #[arg(long, env = "OUTBOUND_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The account id that must own the bucket: sent with every request, which S3 refuses (403)
    /// when another account owns it.
    /// PEM certificates of a private CA that signs the endpoint's certificate, trusted besides the
    /// system's (an S3-compatible server with a private CA).
    #[arg(long, env = "OUTBOUND_CA_BUNDLE", hide_env_values = true)]
    pub ca_bundle: Option<String>,
    #[arg(long, env = "OUTBOUND_EXPECTED_BUCKET_OWNER")]
    pub expected_bucket_owner: Option<String>,
    /// STS endpoint URL for assuming the role (default: the endpoint, else AWS STS).
    #[arg(long, env = "OUTBOUND_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    #[arg(long, env = "OUTBOUND_FORCE_PATH_STYLE", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub force_path_style: bool,
    #[arg(long, env = "OUTBOUND_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    #[arg(long, env = "OUTBOUND_SSE")]
    pub sse: Option<String>,
    #[arg(long, env = "OUTBOUND_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    #[arg(long, env = "OUTBOUND_CHECKSUM_ALGORITHM", value_enum, default_value_t = ChecksumAlgorithm::Crc64Nvme)]
    pub checksum_algorithm: ChecksumAlgorithm,
    /// Canned ACL, e.g. `bucket-owner-full-control`.
    #[arg(long, env = "OUTBOUND_ACL")]
    pub acl: Option<String>,
    /// Write the manifest object, last.
    #[arg(long, env = "OUTBOUND_MANIFEST", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub manifest: bool,
    #[arg(long, env = "OUTBOUND_MANIFEST_NAME", default_value = "manifest.json")]
    pub manifest_name: String,
    /// Replace a different object already at a key.
    #[arg(long, env = "OUTBOUND_OVERWRITE", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub overwrite: bool,
    /// `server`: parts of objects cut from `--source-s3` are copied by the server (UploadPartCopy)
    /// with the destination's identity, which must be able to read the source; a refused copy
    /// turns the run to sending. `never`: the bytes are always read and sent from here.
    #[arg(long, env = "OUTBOUND_COPY", value_enum, default_value_t = CopyArg::Never)]
    pub copy: CopyArg,
    /// Parts in flight; memory is about concurrency x part size.
    #[arg(long, env = "OUTBOUND_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Threads driving the connections and TLS (default: one per available core). Checksums and
    /// file mapping run on their own pool; lower this to leave cores to the rest of the node.
    #[arg(long, env = "OUTBOUND_IO_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub io_threads: Option<u16>,
    /// `keys` (AWS_ACCESS_KEY_ID ...), `workload` (AWS default chain) or `assume-role`.
    #[arg(long, env = "OUTBOUND_CREDENTIALS", default_value = "keys")]
    pub credentials: String,
    #[arg(long, env = "OUTBOUND_ROLE_ARN")]
    pub role_arn: Option<String>,
    #[arg(long, env = "OUTBOUND_EXTERNAL_ID")]
    pub external_id: Option<String>,
    /// `namespace/name` of the OutboundDelivery whose shard this is: progress and resume state
    /// go to its OutboundShard `<job>-<index>`.
    #[arg(long, env = "OUTBOUND_DELIVERY")]
    pub delivery: Option<String>,
    /// The delivery's uid (the shard object's owner); read from the delivery when not given.
    #[arg(long, env = "OUTBOUND_DELIVERY_UID")]
    pub delivery_uid: Option<String>,
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub shard_index: usize,
    #[arg(long, env = "OUTBOUND_SHARD_COUNT", default_value_t = 1)]
    pub shard_count: usize,
    /// Standalone resume state (when not --delivery).
    #[arg(long, env = "OUTBOUND_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Where the final one-line report goes (default /dev/termination-log when it exists).
    #[arg(long, env = "OUTBOUND_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// Attempts per request by the SDK (timeouts, resets, 5xx, SlowDown).
    #[arg(long, env = "OUTBOUND_MAX_ATTEMPTS", default_value_t = 5, hide = true)]
    pub max_attempts: u32,
    /// Further rounds of retries of a part after the SDK gave up on a retryable error.
    #[arg(long, env = "OUTBOUND_PART_RETRIES", default_value_t = 3, hide = true)]
    pub part_retries: u32,
    /// Seconds one request may take before it is retried (default: scales with the part size).
    #[arg(long, env = "OUTBOUND_ATTEMPT_TIMEOUT", hide = true)]
    pub attempt_timeout: Option<u64>,
    /// Seconds between progress reports to this shard's OutboundShard (default: 3, or a tenth
    /// of the shard count, so a delivery's pods send the API server at most about 10 writes a
    /// second whatever its parallelism; the operator folds them into the delivery's status at
    /// most once a second).
    #[arg(long, env = "OUTBOUND_PROGRESS_INTERVAL", hide = true)]
    pub progress_interval: Option<u64>,
}

/// Whether the server copies the parts (`--copy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyArg {
    Server,
    Never,
}

/// Options of `outbound plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub output: String,
}

/// Runs `outbound plan`.
pub async fn run_plan(args: PlanArgs) -> anyhow::Result<()> {
    let progress = Arc::new(plan::PlanProgress::default());
    let bar = terminal_bar().map(|bar| {
        let (shown, watched) = (bar.clone(), Arc::clone(&progress));
        let task = tokio::spawn(async move {
            loop {
                draw_plan(&shown, &watched);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        (bar, Reporter(task))
    });
    let s3 = args.source.s3().await?;
    let plan = args.source.plan_counted(s3, Arc::clone(&progress)).await;
    if let Some((bar, reporter)) = bar {
        drop(reporter);
        draw_plan(&bar, &progress);
        bar.finish();
    }
    let plan = plan?;
    match args.output.as_str() {
        "table" => print!("{}", plan::render_table(&plan)),
        "json" => println!("{}", serde_json::to_string_pretty(&plan)?),
        other => anyhow::bail!("unknown output {other:?}: use table or json"),
    }
    Ok(())
}

/// Runs `outbound upload`: exit 0 when this shard's objects (and the manifest, for shard 0) are
/// delivered; otherwise the error (its `exit_code` tells the Job whether to retry), also written
/// as one line, `failed: <Reason>: <message>`, to the termination log.
/// SIGTERM (a drain, a deletion) stops at once: no new part starts, nothing is aborted, and what
/// was recorded (every open upload id) lets the next pod resume.
pub async fn run_upload(args: UploadArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let termination_log = args.termination_log.clone().or_else(|| {
        let default = PathBuf::from("/dev/termination-log");
        default.exists().then_some(default)
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = upload(&args, Arc::clone(&stop));
    tokio::pin!(run);
    let result = tokio::select! {
        result = &mut run => result,
        _ = terminate.recv() => {
            // No new part starts; the parts on the wire get a few seconds to land (each one
            // that does is not sent again), then the pod goes, well inside its grace period.
            tracing::warn!("SIGTERM: stopping; open uploads stay open for the next pod");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            match tokio::time::timeout(SIGTERM_DRAIN, &mut run).await {
                Ok(Ok(report)) => Ok(report),
                _ => Err(UploadError::Interrupted),
            }
        }
    };
    let line = match &result {
        Ok(report) => report.line(&args, started.elapsed()),
        Err(err) => format!("failed: {}: {err}", err.reason()),
    };
    // The termination message is one line, whatever the server put in its error text.
    let line = line.replace(['\r', '\n'], " ");
    if let Some(path) = termination_log
        && let Err(e) = std::fs::write(&path, format!("{line}\n"))
    {
        tracing::warn!(path = %path.display(), error = %e, "failed to write the termination log");
    }
    match result {
        Ok(_) => {
            println!("{line}");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// What a successful run did.
struct Report {
    objects: u64,
    bytes: u64,
    sent: u64,
    copied: u64,
    parts_sent: u64,
    read: u64,
    skipped: u64,
    manifest: Option<String>,
}

impl Report {
    fn line(&self, args: &UploadArgs, elapsed: Duration) -> String {
        let mut line = format!(
            "delivered {} objects ({}) to s3://{}/{}: sent {} bytes, copied {} bytes by the server, in {} requests, read {} bytes from the source, {} objects already present, {:.1}s",
            self.objects,
            format_size(self.bytes),
            args.bucket,
            args.source.prefix,
            self.sent,
            self.copied,
            self.parts_sent,
            self.read,
            self.skipped,
            elapsed.as_secs_f64()
        );
        if let Some(key) = &self.manifest {
            line.push_str(&format!(", manifest {key}"));
        }
        line
    }
}

/// How long the parts in flight may take to land after SIGTERM.
const SIGTERM_DRAIN: Duration = Duration::from_secs(6);

async fn upload(
    args: &UploadArgs,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Report, UploadError> {
    if args.shard_count == 0 || args.shard_index >= args.shard_count {
        return Err(UploadError::Settings(format!(
            "shard index {} is not below shard count {}",
            args.shard_index, args.shard_count
        )));
    }
    let state = open_state(args).await?;
    let bar = TerminalProgress::start(&state);
    let result = deliver(args, &state, stop).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    if let Err(err) = &result {
        // Every error, planning's included, reaches the delivery with its reason. Best effort,
        // briefly: the termination message carries the same line.
        state.set_failure(Some(err));
        if tokio::time::timeout(Duration::from_secs(20), state.flush_patiently())
            .await
            .is_err()
        {
            tracing::warn!("failed to report the error to the shard's journal");
        }
    }
    result
}

/// The resume state of this shard: in its OutboundShard, a state file, or nowhere.
async fn open_state(args: &UploadArgs) -> Result<Arc<State>, UploadError> {
    let backend = match (&args.delivery, &args.state_file) {
        (Some(delivery), _) => {
            let (namespace, name) = delivery.split_once('/').ok_or_else(|| {
                UploadError::Settings(format!("--delivery {delivery:?} is not namespace/name"))
            })?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| UploadError::State(format!("failed to connect to Kubernetes: {e}")))?;
            // The Job passes the delivery's uid; run by hand, ask for it.
            let uid = match &args.delivery_uid {
                Some(uid) => uid.clone(),
                None => {
                    kube::Api::<crate::api::OutboundDelivery>::namespaced(client.clone(), namespace)
                        .get(name)
                        .await
                        .map_err(|e| {
                            UploadError::State(format!("failed to read delivery {delivery}: {e}"))
                        })?
                        .metadata
                        .uid
                        .unwrap_or_default()
                }
            };
            Backend::Shard(Box::new(state::ShardJournal {
                api: kube::Api::namespaced(client, namespace),
                delivery: name.to_string(),
                job: crate::validate::child_name(name, &uid),
                uid,
                index: args.shard_index,
            }))
        }
        (None, Some(path)) => Backend::File(path.clone()),
        (None, None) => Backend::None,
    };
    State::open(backend).await
}

/// A progress bar on stderr (bytes, what the message says, rate, time left) when stderr is a
/// terminal; a pipe, a file or a pod's log gets none (the log lines say what happened).
fn terminal_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} left {eta}",
        )
        .ok()?,
    );
    Some(bar)
}

/// The plan's bar: files found while walking, then the files' bytes planned.
fn draw_plan(bar: &indicatif::ProgressBar, p: &plan::PlanProgress) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let total = get(&p.bytes_found);
    bar.set_length(total);
    if p.walked.load(Ordering::Relaxed) {
        bar.set_position(get(&p.bytes_planned).min(total));
        bar.set_message(format!(
            "{}/{} files planned, {} objects",
            get(&p.files_planned),
            get(&p.files_found),
            get(&p.objects_planned)
        ));
    } else {
        bar.set_message(format!("walking: {} files found", get(&p.files_found)));
    }
}

/// The upload's live progress bar (bytes, objects, rate, time left), on a terminal only.
struct TerminalProgress {
    bar: indicatif::ProgressBar,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl TerminalProgress {
    fn start(state: &Arc<State>) -> Option<TerminalProgress> {
        let bar = terminal_bar()?;
        let (shown, watched) = (bar.clone(), Arc::clone(state));
        let task = tokio::spawn(async move {
            loop {
                Self::draw(&shown, &watched);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Some(TerminalProgress {
            bar,
            state: Arc::clone(state),
            task,
        })
    }

    fn draw(bar: &indicatif::ProgressBar, state: &State) {
        let p = &state.progress;
        let total = Progress::get(&p.bytes_total);
        bar.set_length(total);
        bar.set_position(Progress::get(&p.bytes_done).min(total));
        bar.set_message(format!(
            "{}/{} objects",
            Progress::get(&p.objects_done),
            Progress::get(&p.objects_total)
        ));
    }

    /// The final figures, and the bar left on screen.
    fn finish(self) {
        self.task.abort();
        Self::draw(&self.bar, &self.state);
        self.bar.finish();
    }
}

/// Aborts the progress reporter when dropped, whichever way the run ends.
struct Reporter(tokio::task::JoinHandle<()>);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn deliver(
    args: &UploadArgs,
    state: &Arc<State>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Report, UploadError> {
    let settings = object_settings(args)?;
    let access = access(args)?;
    let source = args.source.s3().await?;
    let plan = args.source.plan(source.clone()).await?;

    let manifest_at = format!("{}{}", args.source.prefix, args.manifest_name);
    if args.manifest && plan.objects.iter().any(|o| o.key == manifest_at) {
        return Err(UploadError::Settings(format!(
            "a source file would be written at the manifest's key {manifest_at}: rename it or set another manifest name"
        )));
    }
    let mine: Vec<_> = plan
        .shard(args.shard_index, args.shard_count)
        .cloned()
        .collect();
    Progress::add(&state.progress.objects_total, mine.len() as u64);
    Progress::add(
        &state.progress.bytes_total,
        mine.iter().map(|o| o.size).sum(),
    );
    let interval = args
        .progress_interval
        .unwrap_or((args.shard_count as u64 / 10).max(3));
    let _reporter = Reporter(state.spawn_reporter(Duration::from_secs(interval.max(1))));

    let target = Target {
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        force_path_style: args.force_path_style,
        sts_endpoint: args.sts_endpoint.clone(),
        expected_bucket_owner: args.expected_bucket_owner.clone(),
        ca_bundle: args.ca_bundle.clone(),
    };
    if let Access::AssumeRole {
        role_arn,
        external_id,
        session_name,
    } = &access
    {
        // Fail early and clearly: the SDK's credential provider would hide STS's answer.
        let base = crate::credentials::sdk_config(&Access::WorkloadIdentity, &target).await;
        crate::credentials::sts_client(&base, &target)
            .assume_role()
            .role_arn(role_arn)
            .set_external_id(external_id.clone())
            .role_session_name(session_name)
            .send()
            .await
            .map_err(|e| UploadError::AssumeRole {
                role: role_arn.clone(),
                cause: error::cause(&e),
            })?;
    }
    let s3 = s3_client(args, &access, &target, &plan).await;
    let mut engine = Engine::new(
        s3.clone(),
        args.bucket.clone(),
        settings.clone(),
        Arc::clone(state),
        args.concurrency,
        RetryPolicy {
            rounds: args.part_retries,
            stop,
        },
    );
    engine.split_size = args.source.split_size;
    engine.split_on = args.source.split_on;
    engine.source = source.clone();
    engine.copy = args.copy == CopyArg::Server && source.is_some();

    // Objects run side by side so small ones keep the pipe full; parts share one memory budget,
    // served in plan order (`slots`), so objects finish one after another.
    // An object between requests (HEAD, create, completion) holds no part slot, so twice as many
    // objects as slots keep every slot busy; memory stays bounded by the slots.
    let results: Vec<Result<Outcome, UploadError>> = futures::stream::iter(mine.iter())
        .map(|object| engine.deliver(object))
        .buffer_unordered((2 * args.concurrency).clamp(2, 32))
        .collect()
        .await;
    // The first real error; objects only cancelled (a stop asked from outside) still mean the
    // shard is not finished.
    let mut errors: Vec<UploadError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(at) = errors
        .iter()
        .position(|e| !matches!(e, UploadError::Cancelled))
    {
        return Err(errors.swap_remove(at));
    }
    if !errors.is_empty() {
        return Err(UploadError::Interrupted);
    }
    state.set_finished();
    state.set_failure(None);
    // Shard 0 writes the manifest only once every shard said so: this must land.
    state.flush_patiently().await?;

    let mut manifest_key = None;
    if args.manifest && args.shard_index == 0 {
        let key = manifest_at;
        let waited = wait_for_shards(state, args.shard_count).await?;
        let mut lines = state.reported_lines().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "failed to read the shards' line counts; counting here");
            Default::default()
        });
        lines.extend(state.lines());
        let mut pieces = state.reported_pieces().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "failed to read the shards' gzip pieces");
            Default::default()
        });
        pieces.extend(state.pieces());
        let manifest = loop {
            match manifest::build(
                &s3,
                &args.bucket,
                &plan,
                settings.headers.checksum,
                &lines,
                &pieces,
                &engine.retry,
                &state.progress.bytes_read,
                source.as_ref(),
            )
            .await
            {
                // Standalone shards have no status to wait on: the objects' presence is the signal.
                Err(UploadError::Head { cause, .. }) if !waited && cause.not_found() => {
                    tracing::info!("waiting for the other shards' objects");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                other => break other?,
            }
        };
        let written =
            manifest::write(&s3, &args.bucket, &key, &manifest, &settings, &engine.retry).await?;
        tracing::info!(key = %key, written, "manifest delivered");
        manifest_key = Some(key);
    }
    let p = &state.progress;
    Ok(Report {
        objects: Progress::get(&p.objects_done),
        bytes: Progress::get(&p.bytes_total),
        sent: Progress::get(&p.bytes_sent),
        copied: Progress::get(&p.bytes_copied),
        parts_sent: Progress::get(&p.parts_sent),
        read: Progress::get(&p.bytes_read),
        skipped: Progress::get(&p.objects_skipped),
        manifest: manifest_key,
    })
}

/// Shard 0 writes the manifest only once every shard reports `finished` (Kubernetes). Returns
/// false when there is nothing to wait on (one shard, or standalone).
async fn wait_for_shards(state: &State, count: usize) -> Result<bool, UploadError> {
    if count <= 1 {
        return Ok(true);
    }
    loop {
        match state.all_shards_finished(count).await {
            Ok(Some(true)) => return Ok(true),
            Ok(None) => return Ok(false),
            Ok(Some(false)) => tracing::info!("waiting for the other shards to finish"),
            Err(e) => tracing::warn!(error = %e, "failed to read shard status"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn object_settings(args: &UploadArgs) -> Result<ObjectSettings, UploadError> {
    let headers = WriteHeaders::parse(
        args.acl.as_deref(),
        args.sse.as_deref(),
        args.sse_kms_key_id.as_deref(),
        args.storage_class.as_deref(),
        args.checksum_algorithm,
    )
    .map_err(UploadError::Settings)?;
    Ok(ObjectSettings {
        headers,
        overwrite: args.overwrite,
        // Copied parts pass through no pod: the manifest's writer counts their lines (one read).
        count_lines: args.manifest
            && !(args.copy == CopyArg::Server && args.source.source_s3.is_some()),
    })
}

fn access(args: &UploadArgs) -> Result<Access, UploadError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match args.credentials.as_str() {
        "keys" => Ok(Access::Keys {
            access_key_id: env("AWS_ACCESS_KEY_ID").ok_or_else(|| {
                UploadError::Settings("credentials mode keys needs AWS_ACCESS_KEY_ID".into())
            })?,
            secret_access_key: env("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
                UploadError::Settings("credentials mode keys needs AWS_SECRET_ACCESS_KEY".into())
            })?,
            session_token: env("AWS_SESSION_TOKEN"),
        }),
        "workload" => Ok(Access::WorkloadIdentity),
        "assume-role" => Ok(Access::AssumeRole {
            role_arn: args
                .role_arn
                .clone()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    UploadError::Settings("credentials mode assume-role needs --role-arn".into())
                })?,
            external_id: args.external_id.clone().filter(|e| !e.is_empty()),
            session_name: match &args.delivery {
                Some(d) => format!("outbound-{}", d.replace('/', "-"))
                    .chars()
                    .take(64)
                    .collect(),
                None => "outbound-upload".to_string(),
            },
        }),
        other => Err(UploadError::Settings(format!(
            "unknown credentials mode {other:?}: use keys, workload or assume-role"
        ))),
    }
}

/// The S3 client with our retry and timeout policy: the SDK retries each request (backoff with
/// jitter on throttling, 5xx, timeouts, resets); attempts time out so a stalled connection heals.
async fn s3_client(
    args: &UploadArgs,
    access: &Access,
    target: &Target,
    plan: &Plan,
) -> aws_sdk_s3::Client {
    let config = crate::credentials::sdk_config(access, target).await;
    let largest_request = plan
        .objects
        .iter()
        .map(|o| if o.multipart { o.part_size } else { o.size })
        .max()
        .unwrap_or(0);
    // At least 1 MiB/s per request in flight, never under a minute.
    let attempt = args
        .attempt_timeout
        .map(Duration::from_secs)
        .unwrap_or_else(|| Duration::from_secs(60 + largest_request / (1 << 20)));
    let conf = crate::credentials::s3_config(&config, target)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(args.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(attempt)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
