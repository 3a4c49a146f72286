//! `/metrics` in the Prometheus text format (OpenMetrics).
//!
//! Labels take only bounded values (job states, stream kinds), never ids.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::ApiError;
use crate::model::JobState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

/// Which kind of SSE stream a client follows.
#[derive(Clone, Copy, Debug)]
pub enum SseKind {
    Events,
    Logs,
}

impl SseKind {
    fn label(self) -> StreamLabel {
        let stream = match self {
            SseKind::Events => "events",
            SseKind::Logs => "logs",
        };
        StreamLabel {
            stream: stream.to_owned(),
        }
    }
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    active_jobs: Gauge,
    pub job_duration: Histogram,
    log_bytes: Counter<u64, AtomicU64>,
    sse_clients: Family<StreamLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("danube");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs in the database by state", jobs.clone());
        let active_jobs = Gauge::default();
        registry.register(
            "active_jobs",
            "Jobs this server runs now",
            active_jobs.clone(),
        );
        // 0.5 s to about 9 hours.
        let job_duration = Histogram::new(exponential_buckets(0.5, 2.0, 16));
        registry.register(
            "job_duration_seconds",
            "Wall time of the jobs this server started, from submission to final state",
            job_duration.clone(),
        );
        registry.register(
            "step_dispatch_latency_seconds",
            "Time from a step's RunStep request arriving to its process being spawned",
            crate::orchestrator::dispatch_latency().clone(),
        );
        let log_bytes = Counter::<u64, AtomicU64>::default();
        registry.register(
            "log_bytes",
            "Scrubbed log bytes stored by this process",
            log_bytes.clone(),
        );
        let sse_clients = Family::<StreamLabel, Gauge>::default();
        registry.register(
            "sse_clients",
            "Connected Server-Sent Events clients by stream kind",
            sse_clients.clone(),
        );
        Metrics {
            registry,
            jobs,
            active_jobs,
            job_duration,
            log_bytes,
            sse_clients,
        }
    }

    /// Counts an SSE client until the returned guard drops.
    pub fn sse_client(&self, kind: SseKind) -> SseClientGuard {
        let gauge = self.sse_clients.get_or_create(&kind.label()).clone();
        gauge.inc();
        SseClientGuard { gauge }
    }
}

/// Decrements the SSE client gauge when dropped.
pub struct SseClientGuard {
    gauge: Gauge,
}

impl Drop for SseClientGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text"))
)]
pub async fn render(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    let counts = state.store.count_jobs_by_state().await?;
    for job_state in JobState::ALL {
        let count = counts
            .iter()
            .find(|(counted, _)| counted == job_state)
            .map_or(0, |(_, count)| *count);
        metrics
            .jobs
            .get_or_create(&StateLabel {
                state: job_state.as_str().to_owned(),
            })
            .set(count);
    }
    metrics
        .active_jobs
        .set(i64::try_from(state.engine.active_jobs().len()).unwrap_or(i64::MAX));
    let written = crate::logs::bytes_written();
    metrics
        .log_bytes
        .inc_by(written.saturating_sub(metrics.log_bytes.get()));

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .map_err(|err| ApiError::internal("encode the metrics", &err))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
