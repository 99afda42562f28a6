//! `OutboundSchedule`: deliveries on a cron schedule, full or incremental, each run an
//! `OutboundDelivery` owned by the schedule and named from its slot.

// kube's printcolumn(...) repeats `type_ = ...` inside one attribute, which clippy misreads.
#![allow(clippy::duplicated_attributes)]

use super::OutboundDeliverySpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Five cron fields (minute hour day-of-month month day-of-week), six with a leading seconds
/// field, or a macro: what `crate::cron` parses, as a regular expression the API server checks.
pub fn cron_pattern() -> String {
    let n = |range: &str| format!("(?:{range})");
    let field = |num: &str, names: &str| {
        let v = if names.is_empty() {
            n(num)
        } else {
            format!("(?:{num}|{names})")
        };
        let item = format!("(?:\\*|\\?|{v}(?:-{v})?)(?:/[1-9][0-9]*)?");
        format!("{item}(?:,{item})*")
    };
    let sec = field("[0-5]?[0-9]", "");
    let min = sec.clone();
    let hour = field("1?[0-9]|2[0-3]", "");
    let dom = field("[1-9]|[12][0-9]|3[01]", "");
    let mon = field(
        "[1-9]|1[0-2]",
        "(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    );
    let dow = field("[0-7]", "(?i:sun|mon|tue|wed|thu|fri|sat)");
    format!(
        "^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|(?:{sec}\\s+)?{min}\\s+{hour}\\s+{dom}\\s+{mon}\\s+{dow})$"
    )
}

fn cron_rule() -> String {
    format!(
        "self.trim().matches('{}')",
        cron_pattern().replace('\\', "\\\\")
    )
}

/// Deliveries on a schedule: each run creates an OutboundDelivery from `template`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbound.dev",
    version = "v1alpha1",
    kind = "OutboundSchedule",
    namespaced,
    status = "OutboundScheduleStatus",
    shortname = "osched",
    category = "outbound",
    doc = "Deliveries on a schedule: each run is an OutboundDelivery created from the template.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OutboundScheduleSpec {
    /// Five cron fields (`0 6 * * *`), six with a leading seconds field (`*/20 * * * * *`), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[schemars(length(min = 1, max = 200))]
    #[x_kube(validation = Rule::new(cron_rule()).message("not a cron expression: five fields (minute hour day-of-month month day-of-week), six with a leading seconds field, or @hourly, @daily, @weekly, @monthly, @yearly; each a number in its range, *, a range a-b, a step /n or a list"))]
    pub schedule: String,
    /// IANA time zone of the schedule's wall clock (default UTC). A time skipped by a clock
    /// change runs when the clocks jump; a time repeated runs once.
    #[serde(default = "default_time_zone")]
    #[schemars(schema_with = "time_zone_schema")]
    pub time_zone: String,
    /// `full`: every file each run; `incremental`: files created or changed since the last
    /// successful run (the first run delivers everything).
    #[serde(default)]
    pub mode: ScheduleMode,
    /// Seconds a file must have been left unchanged before a run takes it, in incremental mode
    /// (a file still being written is left to the next run).
    #[serde(default = "default_settle_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub settle_seconds: i64,
    /// `Forbid`: a run due while another is active is skipped; `Allow`: both run; `Replace`: the
    /// active one is deleted (its uploads aborted) and the new one runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run not started within this many seconds of its time is skipped and counted in
    /// `status.missedRuns` (default: any delay is fine, but only the latest missed run starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Succeeded runs kept (older ones are deleted; their objects stay in the bucket).
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub successful_deliveries_history_limit: i32,
    /// Failed runs kept.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub failed_deliveries_history_limit: i32,
    /// No new runs while true (an active one goes on).
    #[serde(default)]
    pub suspend: bool,
    /// The spec of each run's OutboundDelivery; `keyPrefix`, `nameTemplate` and `manifestName`
    /// take the placeholders `{date}`, `{time}`, `{timestamp}`, `{schedule}`, `{delivery}`,
    /// `{mode}`, `{run}`, expanded with the run's time.
    pub template: OutboundDeliverySpec,
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_settle_seconds() -> i64 {
    30
}

fn default_successful_history() -> i32 {
    7
}

fn default_failed_history() -> i32 {
    3
}

/// The IANA names the built-in time zone database knows: the API server refuses any other.
fn time_zone_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "IANA time zone of the schedule's wall clock (default UTC). A time skipped by a clock change runs when the clocks jump; a time repeated runs once.",
        "enum": crate::cron::time_zone_names(),
    })
}

/// Full or incremental runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleMode {
    /// Every file, each run.
    #[default]
    Full,
    /// Files created or changed since the last successful run.
    Incremental,
}

impl ScheduleMode {
    /// The `{mode}` placeholder, as Audience Manager names its files.
    pub fn placeholder(self) -> &'static str {
        match self {
            ScheduleMode::Full => "full",
            ScheduleMode::Incremental => "iter",
        }
    }
}

/// What to do with a run due while another is active, as CronJob has it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// Skip the new run.
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Delete the active run (its uploads aborted), then run the new one.
    Replace,
}

/// What the controller reports about a schedule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundScheduleStatus {
    /// `Ready` (the schedule is valid and running, or suspended), with observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The slot of the latest run created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// When the latest successful run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the latest failed run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The latest successful run's cut: an incremental run takes files changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_cut: Option<Time>,
    /// Runs not yet ended, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Runs created so far (the `{run}` of the latest).
    #[serde(default)]
    pub runs: u64,
    /// Slots skipped: missed beyond the starting deadline, or forbidden by the concurrency
    /// policy.
    #[serde(default)]
    pub missed_runs: u64,
}
