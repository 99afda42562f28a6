//! Prometheus metrics of the controller and the HTTP endpoints: `/metrics`, `/healthz`,
//! `/readyz`. Operator-wide series are labelled by controller, error kind, phase or reason; the
//! per-destination, per-schedule and per-upload series by namespace and name (and a reason), and
//! each is removed when its resource goes, so their number is bounded by the resources that exist.
//! The chart's alert rules and dashboard (`charts/outbound/files/`) are written against these.

use crate::api::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub namespace: String,
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationReasonLabel {
    pub namespace: String,
    pub destination: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabel {
    pub namespace: String,
    pub schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationReadyLabel {
    pub namespace: String,
    pub destination: String,
    /// The Ready condition's reason (`Validated`, `AccessDenied` ...), for the alert's message.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub namespace: String,
    pub delivery: String,
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleDestinationLabel {
    pub namespace: String,
    pub schedule: String,
    pub destination: String,
}

/// A delivery seen Uploading: its series and the bytes last counted.
struct Uploading {
    label: DeliveryLabel,
    bytes: u64,
}

/// The label sets of the per-resource series, so that a resource's series can be removed when it
/// goes (a `Family` cannot be listed), and the per-delivery state behind the gauges.
#[derive(Default)]
struct Tracked {
    /// Deliveries' phases by namespace/name (names are not exported: only the counts are).
    phases: HashMap<(String, String), Phase>,
    uploading: HashMap<(String, String), Uploading>,
    ready: HashMap<DestinationLabel, DestinationReadyLabel>,
    failures: HashSet<DestinationReasonLabel>,
    destinations: HashSet<DestinationLabel>,
    schedules: HashSet<ScheduleLabel>,
    due: HashMap<ScheduleLabel, ScheduleDestinationLabel>,
}

/// Every metric the controller exports.
pub struct Metrics {
    destination_ready: Family<DestinationReadyLabel, Gauge>,
    destination_uploaded: Family<DestinationLabel, Counter>,
    delivery_last_progress: Family<DeliveryLabel, Gauge>,
    schedule_due: Family<ScheduleDestinationLabel, Gauge>,
    destination_last_success: Family<DestinationLabel, Gauge>,
    destination_bytes: Family<DestinationLabel, Counter>,
    destination_objects: Family<DestinationLabel, Counter>,
    destination_failures: Family<DestinationReasonLabel, Counter>,
    schedule_last_success: Family<ScheduleLabel, Gauge>,
    schedule_missed_runs: Family<ScheduleLabel, Counter>,
    schedule_failures: Family<ScheduleLabel, Counter>,
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    deliveries: Family<PhaseLabel, Gauge>,
    bytes_delivered: Counter,
    probes: Family<ReasonLabel, Counter>,
    leader: Gauge,
    tracked: Mutex<Tracked>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outbound");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let deliveries = Family::<PhaseLabel, Gauge>::default();
        let bytes_delivered = Counter::default();
        let probes = Family::<ReasonLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors, by controller and kind",
            errors.clone(),
        );
        registry.register(
            "deliveries",
            "Deliveries known to this replica, by phase",
            deliveries.clone(),
        );
        registry.register(
            "delivered_bytes",
            "Bytes of deliveries that succeeded",
            bytes_delivered.clone(),
        );
        registry.register(
            "destination_probes",
            "Destination probes, by outcome reason",
            probes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let destination_last_success = Family::<DestinationLabel, Gauge>::default();
        let destination_bytes = Family::<DestinationLabel, Counter>::default();
        let destination_objects = Family::<DestinationLabel, Counter>::default();
        let destination_failures = Family::<DestinationReasonLabel, Counter>::default();
        let schedule_last_success = Family::<ScheduleLabel, Gauge>::default();
        let schedule_missed_runs = Family::<ScheduleLabel, Counter>::default();
        let schedule_failures = Family::<ScheduleLabel, Counter>::default();
        registry.register(
            "destination_last_success_timestamp_seconds",
            "When a delivery to the destination last succeeded (Unix seconds)",
            destination_last_success.clone(),
        );
        registry.register(
            "destination_delivered_bytes",
            "Bytes of the deliveries to the destination that succeeded",
            destination_bytes.clone(),
        );
        registry.register(
            "destination_delivered_objects",
            "Objects of the deliveries to the destination that succeeded",
            destination_objects.clone(),
        );
        registry.register(
            "destination_failures",
            "Deliveries to the destination that failed, by reason",
            destination_failures.clone(),
        );
        registry.register(
            "schedule_last_success_timestamp_seconds",
            "When a run of the schedule last succeeded (Unix seconds)",
            schedule_last_success.clone(),
        );
        registry.register(
            "schedule_missed_runs",
            "Runs of the schedule missed (added to its status.missedRuns) while this process ran",
            schedule_missed_runs.clone(),
        );
        registry.register(
            "schedule_failures",
            "Runs of the schedule that failed",
            schedule_failures.clone(),
        );
        let destination_ready = Family::<DestinationReadyLabel, Gauge>::default();
        let destination_uploaded = Family::<DestinationLabel, Counter>::default();
        let delivery_last_progress = Family::<DeliveryLabel, Gauge>::default();
        let schedule_due = Family::<ScheduleDestinationLabel, Gauge>::default();
        registry.register(
            "destination_ready",
            "1 when the destination's last probe passed, else 0; labelled by the Ready reason",
            destination_ready.clone(),
        );
        registry.register(
            "destination_uploaded_bytes",
            "Bytes the upload pods reported stored in the destination, counted as they report",
            destination_uploaded.clone(),
        );
        registry.register(
            "delivery_last_progress_timestamp_seconds",
            "For each delivery Uploading: when its stored bytes last grew (or it was first seen \
             Uploading), Unix seconds",
            delivery_last_progress.clone(),
        );
        registry.register(
            "schedule_next_success_due_timestamp_seconds",
            "When the schedule's next successful run is due: its first slot after the last \
             success (or its creation), Unix seconds; absent while suspended",
            schedule_due.clone(),
        );
        Metrics {
            destination_ready,
            destination_uploaded,
            delivery_last_progress,
            schedule_due,
            destination_last_success,
            destination_bytes,
            destination_objects,
            destination_failures,
            schedule_last_success,
            schedule_missed_runs,
            schedule_failures,
            registry,
            reconciles,
            errors,
            deliveries,
            bytes_delivered,
            probes,
            leader,
            tracked: Mutex::default(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconcile(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
    }

    pub fn error(&self, controller: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                controller: controller.into(),
                kind: kind.into(),
            })
            .inc();
    }

    pub fn probe(&self, reason: &str) {
        self.probes
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn delivered(&self, bytes: u64) {
        self.bytes_delivered.inc_by(bytes);
    }

    /// A delivery to `namespace/destination` succeeded at `at` (Unix seconds).
    pub fn delivered_to(
        &self,
        namespace: &str,
        destination: &str,
        bytes: u64,
        objects: u64,
        at: i64,
    ) {
        let label = DestinationLabel {
            namespace: namespace.into(),
            destination: destination.into(),
        };
        self.tracked().destinations.insert(label.clone());
        self.destination_bytes.get_or_create(&label).inc_by(bytes);
        self.destination_objects
            .get_or_create(&label)
            .inc_by(objects);
        let last = self.destination_last_success.get_or_create(&label);
        last.set(last.get().max(at));
    }

    /// A delivery to `namespace/destination` failed with `reason`.
    pub fn failed_to(&self, namespace: &str, destination: &str, reason: &str) {
        let label = DestinationReasonLabel {
            namespace: namespace.into(),
            destination: destination.into(),
            reason: reason.into(),
        };
        self.destination_failures.get_or_create(&label).inc();
        self.tracked().failures.insert(label);
    }

    /// A destination's Ready condition as last probed: one series, whose reason label follows
    /// the condition.
    pub fn destination_ready(&self, namespace: &str, destination: &str, ready: bool, reason: &str) {
        let key = DestinationLabel {
            namespace: namespace.into(),
            destination: destination.into(),
        };
        let label = DestinationReadyLabel {
            namespace: namespace.into(),
            destination: destination.into(),
            reason: reason.into(),
        };
        let mut tracked = self.tracked();
        if let Some(old) = tracked.ready.insert(key, label.clone())
            && old != label
        {
            self.destination_ready.remove(&old);
        }
        self.destination_ready
            .get_or_create(&label)
            .set(i64::from(ready));
    }

    /// A delivery's phase and stored bytes as folded at `now` (Unix seconds): keeps the phase
    /// counts, counts the bytes stored since the last fold into the destination's counter, and
    /// while it is Uploading, when its bytes last grew. `known_bytes` is what its status said
    /// before this fold: bytes stored before this process saw the delivery are not counted again.
    pub fn delivery_progress(
        &self,
        delivery: &DeliveryLabel,
        phase: Option<Phase>,
        known_bytes: u64,
        bytes: u64,
        now: i64,
    ) {
        let key = (delivery.namespace.clone(), delivery.delivery.clone());
        let dest = DestinationLabel {
            namespace: delivery.namespace.clone(),
            destination: delivery.destination.clone(),
        };
        let mut tracked = self.tracked();
        match phase {
            Some(p) => tracked.phases.insert(key.clone(), p),
            None => tracked.phases.remove(&key),
        };
        self.count_phases(&tracked);
        let uploading = matches!(phase, Some(Phase::Uploading));
        let before = match tracked.uploading.get(&key) {
            Some(u) => u.bytes,
            None if uploading || matches!(phase, Some(Phase::Succeeded)) => known_bytes,
            None => bytes,
        };
        if bytes > before {
            tracked.destinations.insert(dest.clone());
            self.destination_uploaded
                .get_or_create(&dest)
                .inc_by(bytes - before);
        }
        if uploading {
            let first = !tracked.uploading.contains_key(&key);
            if first || bytes > before {
                self.delivery_last_progress.get_or_create(delivery).set(now);
            }
            // Created at the first sight, so that rate() sees the first bytes too.
            self.destination_uploaded.get_or_create(&dest).inc_by(0);
            tracked.destinations.insert(dest);
            tracked.uploading.insert(
                key,
                Uploading {
                    label: delivery.clone(),
                    bytes: bytes.max(before),
                },
            );
        } else if let Some(gone) = tracked.uploading.remove(&key) {
            self.delivery_last_progress.remove(&gone.label);
        }
    }

    /// A delivery is gone: its phase is no longer counted.
    pub fn forget_delivery(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut tracked = self.tracked();
        tracked.phases.remove(&key);
        if let Some(gone) = tracked.uploading.remove(&key) {
            self.delivery_last_progress.remove(&gone.label);
        }
        self.count_phases(&tracked);
    }

    /// A destination is gone: its series go with it (an alert on a deleted destination would
    /// never resolve).
    pub fn forget_destination(&self, namespace: &str, destination: &str) {
        let key = DestinationLabel {
            namespace: namespace.into(),
            destination: destination.into(),
        };
        let mut tracked = self.tracked();
        if let Some(old) = tracked.ready.remove(&key) {
            self.destination_ready.remove(&old);
        }
        if tracked.destinations.remove(&key) {
            self.destination_uploaded.remove(&key);
            self.destination_bytes.remove(&key);
            self.destination_objects.remove(&key);
            self.destination_last_success.remove(&key);
        }
        tracked.failures.retain(|f| {
            let keep = f.namespace != namespace || f.destination != destination;
            if !keep {
                self.destination_failures.remove(f);
            }
            keep
        });
    }

    /// A schedule is gone: its series go with it.
    pub fn forget_schedule(&self, namespace: &str, schedule: &str) {
        let key = ScheduleLabel {
            namespace: namespace.into(),
            schedule: schedule.into(),
        };
        let mut tracked = self.tracked();
        if let Some(due) = tracked.due.remove(&key) {
            self.schedule_due.remove(&due);
        }
        if tracked.schedules.remove(&key) {
            self.schedule_last_success.remove(&key);
            self.schedule_missed_runs.remove(&key);
            self.schedule_failures.remove(&key);
        }
    }

    /// When the schedule's next success is due (`None`: suspended, or it never fires again).
    pub fn schedule_due(
        &self,
        namespace: &str,
        schedule: &str,
        destination: &str,
        due: Option<i64>,
    ) {
        let key = ScheduleLabel {
            namespace: namespace.into(),
            schedule: schedule.into(),
        };
        let label = ScheduleDestinationLabel {
            namespace: namespace.into(),
            schedule: schedule.into(),
            destination: destination.into(),
        };
        let mut tracked = self.tracked();
        let old = match due {
            Some(at) => {
                self.schedule_due.get_or_create(&label).set(at);
                tracked.due.insert(key, label.clone())
            }
            None => tracked.due.remove(&key),
        };
        if let Some(old) = old
            && (due.is_none() || old != label)
        {
            self.schedule_due.remove(&old);
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracked.lock().expect("metrics lock")
    }

    fn count_phases(&self, tracked: &Tracked) {
        for p in [
            Phase::Pending,
            Phase::Uploading,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            let n = tracked.phases.values().filter(|v| **v == p).count();
            self.deliveries
                .get_or_create(&PhaseLabel {
                    phase: p.as_str().into(),
                })
                .set(n as i64);
        }
    }

    /// A schedule's status as last written: its last success (Unix seconds), and the runs it
    /// missed that this write added. Every schedule has a missed-runs series from its first
    /// sight, at 0, so that the first miss is an increase.
    pub fn schedule(
        &self,
        namespace: &str,
        schedule: &str,
        last_success: Option<i64>,
        missed: u64,
    ) {
        let label = ScheduleLabel {
            namespace: namespace.into(),
            schedule: schedule.into(),
        };
        self.tracked().schedules.insert(label.clone());
        if let Some(at) = last_success {
            self.schedule_last_success.get_or_create(&label).set(at);
        }
        self.schedule_missed_runs
            .get_or_create(&label)
            .inc_by(missed);
    }

    /// A run of a schedule failed.
    pub fn schedule_failed(&self, namespace: &str, schedule: &str) {
        let label = ScheduleLabel {
            namespace: namespace.into(),
            schedule: schedule.into(),
        };
        self.schedule_failures.get_or_create(&label).inc();
        self.tracked().schedules.insert(label);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (the controller has started:
/// a waiting standby replica is ready too, so rollouts proceed).
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> anyhow::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = m1.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = m2.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {addr}: {e}"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(name: &str) -> DeliveryLabel {
        DeliveryLabel {
            namespace: "team".into(),
            delivery: name.into(),
            destination: "acme".into(),
        }
    }

    #[test]
    fn phases_are_counted_and_bytes_counted_once() {
        let m = Metrics::new();
        m.delivery_progress(&upload("a"), Some(Phase::Uploading), 0, 10, 100);
        m.delivery_progress(&upload("b"), Some(Phase::Uploading), 0, 0, 100);
        // b's second fold: more bytes; then it ends with the last few.
        m.delivery_progress(&upload("b"), Some(Phase::Uploading), 0, 30, 160);
        m.delivery_progress(&upload("b"), Some(Phase::Succeeded), 30, 32, 170);
        m.delivered(42);
        let text = m.encode();
        for line in [
            "outbound_deliveries{phase=\"Uploading\"} 1",
            "outbound_deliveries{phase=\"Succeeded\"} 1",
            "outbound_delivered_bytes_total 42",
            "outbound_destination_uploaded_bytes_total{namespace=\"team\",destination=\"acme\"} 42",
            "outbound_delivery_last_progress_timestamp_seconds{namespace=\"team\",delivery=\"a\",destination=\"acme\"} 100",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Only Uploading deliveries have a series of their own.
        assert!(!text.contains("delivery=\"b\""), "{text}");
        // A fold without new bytes keeps the time of the last progress.
        m.delivery_progress(&upload("a"), Some(Phase::Uploading), 10, 10, 900);
        assert!(
            m.encode()
                .contains("delivery=\"a\",destination=\"acme\"} 100")
        );
    }

    #[test]
    fn bytes_stored_before_a_restart_are_not_counted_again() {
        let m = Metrics::new();
        // First seen by this process half-way: its status already said 500.
        m.delivery_progress(&upload("a"), Some(Phase::Uploading), 500, 600, 100);
        // First seen ended, with nothing new.
        m.delivery_progress(&upload("c"), Some(Phase::Succeeded), 700, 700, 100);
        assert!(m.encode().contains(
            "outbound_destination_uploaded_bytes_total{namespace=\"team\",destination=\"acme\"} 100"
        ));
    }

    #[test]
    fn a_resource_that_goes_takes_its_series_with_it() {
        let m = Metrics::new();
        m.destination_ready("team", "acme", false, "AccessDenied");
        m.destination_ready("team", "acme", true, "Validated");
        let text = m.encode();
        assert!(
            !text.contains("AccessDenied"),
            "one series per destination: {text}"
        );
        assert!(text.contains("reason=\"Validated\"} 1"), "{text}");
        m.failed_to("team", "acme", "SourceNotFound");
        m.delivered_to("team", "acme", 1, 1, 5);
        m.delivery_progress(&upload("a"), Some(Phase::Uploading), 0, 1, 5);
        m.schedule("team", "daily", Some(5), 1);
        m.schedule_due("team", "daily", "acme", Some(86_400));
        m.forget_delivery("team", "a");
        m.forget_destination("team", "acme");
        m.forget_schedule("team", "daily");
        let text = m.encode();
        for gone in ["acme", "daily", "delivery=\"a\""] {
            assert!(!text.contains(gone), "{gone} still in\n{text}");
        }
        assert!(
            text.contains("outbound_deliveries{phase=\"Uploading\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn a_suspended_schedule_has_no_due_time() {
        let m = Metrics::new();
        m.schedule_due("team", "daily", "acme", Some(86_400));
        m.schedule_due("team", "daily", "acme", None);
        assert!(!m.encode().contains("daily"));
    }
}
