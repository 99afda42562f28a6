//! Prometheus metrics of the controller (labelled by controller, error kind and phase, never by
//! object name) and the HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

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

/// Every metric the controller exports.
pub struct Metrics {
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
        Metrics {
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
