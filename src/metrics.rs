//! Prometheus metrics of the controller and the HTTP endpoints: `/metrics`, `/healthz`,
//! `/readyz`. Operator-wide series are labelled by controller, error kind, phase or reason; the
//! per-destination and per-schedule series by namespace and name (and a failure's reason), so
//! their number is bounded by the resources the operator has seen.

use crate::api::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
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

/// Every metric the controller exports.
pub struct Metrics {
    destination_last_success: Family<DestinationLabel, Gauge>,
    destination_bytes: Family<DestinationLabel, Counter>,
    destination_objects: Family<DestinationLabel, Counter>,
    destination_failures: Family<DestinationReasonLabel, Counter>,
    schedule_last_success: Family<ScheduleLabel, Gauge>,
    schedule_missed_runs: Family<ScheduleLabel, Gauge>,
    schedule_failures: Family<ScheduleLabel, Counter>,
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    deliveries: Family<PhaseLabel, Gauge>,
    bytes_delivered: Counter,
    probes: Family<ReasonLabel, Counter>,
    leader: Gauge,
    phases: Mutex<HashMap<String, Phase>>,
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
        let schedule_missed_runs = Family::<ScheduleLabel, Gauge>::default();
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
            "Runs of the schedule missed (its status.missedRuns)",
            schedule_missed_runs.clone(),
        );
        registry.register(
            "schedule_failures",
            "Runs of the schedule that failed",
            schedule_failures.clone(),
        );
        Metrics {
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
            phases: Mutex::default(),
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
        self.destination_bytes.get_or_create(&label).inc_by(bytes);
        self.destination_objects
            .get_or_create(&label)
            .inc_by(objects);
        let last = self.destination_last_success.get_or_create(&label);
        last.set(last.get().max(at));
    }

    /// A delivery to `namespace/destination` failed with `reason`.
    pub fn failed_to(&self, namespace: &str, destination: &str, reason: &str) {
        self.destination_failures
            .get_or_create(&DestinationReasonLabel {
                namespace: namespace.into(),
                destination: destination.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A schedule's status as last folded: its last success (Unix seconds) and missed runs.
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
        if let Some(at) = last_success {
            self.schedule_last_success.get_or_create(&label).set(at);
        }
        self.schedule_missed_runs
            .get_or_create(&label)
            .set(i64::try_from(missed).unwrap_or(i64::MAX));
    }

    /// A run of a schedule failed.
    pub fn schedule_failed(&self, namespace: &str, schedule: &str) {
        self.schedule_failures
            .get_or_create(&ScheduleLabel {
                namespace: namespace.into(),
                schedule: schedule.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records a delivery's phase (keyed by uid, which is not exported) and refreshes the gauges.
    pub fn delivery_phase(&self, uid: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().expect("metrics lock");
        match phase {
            Some(p) => phases.insert(uid.to_string(), p),
            None => phases.remove(uid),
        };
        for p in [
            Phase::Pending,
            Phase::Uploading,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            let n = phases.values().filter(|v| **v == p).count();
            self.deliveries
                .get_or_create(&PhaseLabel {
                    phase: p.as_str().into(),
                })
                .set(n as i64);
        }
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

    #[test]
    fn phases_are_counted_without_names() {
        let m = Metrics::new();
        m.delivery_phase("uid-1", Some(Phase::Uploading));
        m.delivery_phase("uid-2", Some(Phase::Uploading));
        m.delivery_phase("uid-2", Some(Phase::Succeeded));
        m.delivered(42);
        let text = m.encode();
        assert!(
            text.contains("outbound_deliveries{phase=\"Uploading\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outbound_deliveries{phase=\"Succeeded\"} 1"),
            "{text}"
        );
        assert!(text.contains("outbound_delivered_bytes_total 42"), "{text}");
        assert!(!text.contains("uid-1"));
    }
}
