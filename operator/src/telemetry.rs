//! The operator's HTTP endpoints: `/healthz`, `/readyz` and Prometheus
//! `/metrics` (reconciles, errors by reason, reconcile duration, tenants by
//! Ready state).
//!
//! Metrics are process-wide, as Prometheus scrapes a process: one
//! [`METRICS`] value that every reconcile in the process updates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::controller::status;
use crate::crd::ChatTenant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    pub ready: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<ReasonLabel, Counter>,
    pub duration: Histogram,
    tenants: Family<ReadyLabel, Gauge>,
    store: Mutex<Option<Store<ChatTenant>>>,
    ready: AtomicBool,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("parley_operator");
        let reconciles = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        // 1 ms to about 16 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let tenants = Family::<ReadyLabel, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            "tenants",
            "ChatTenants by their Ready condition",
            tenants.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
            store: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Lets `/metrics` count tenants from the controller's cache.
    pub fn watch_tenants(&self, store: Store<ChatTenant>) {
        *self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
    }

    /// Marks the process ready: it reached the API server.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn refresh_tenants(&self) {
        let store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(store) = store else { return };
        let mut counts = [("True", 0i64), ("False", 0), ("Unknown", 0)];
        for tenant in store.state() {
            let conditions = tenant
                .status
                .as_ref()
                .map(|status| status.conditions.as_slice())
                .unwrap_or_default();
            let ready = status::condition_status(conditions, status::READY).unwrap_or("Unknown");
            if let Some(entry) = counts.iter_mut().find(|(state, _)| *state == ready) {
                entry.1 += 1;
            }
        }
        for (ready, count) in counts {
            self.tenants
                .get_or_create(&ReadyLabel {
                    ready: ready.to_owned(),
                })
                .set(count);
        }
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        self.refresh_tenants();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Routes for the operator's HTTP listener.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz() -> Response {
    if METRICS.ready.load(Ordering::Acquire) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics() -> Response {
    match METRICS.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
