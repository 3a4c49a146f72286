//! `/health` (the process answers) and `/health/ready` (it can do its work).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: &'static str,
}

/// Readiness: `ok` when every check passed, `unavailable` otherwise.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub checks: Vec<Check>,
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    /// `database` or `data_dir`.
    pub name: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Why the check failed; absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Liveness
#[utoipa::path(get, path = "/health", security(()), responses((status = 200, body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers `SELECT 1` and the data directory is
/// writable.
#[utoipa::path(
    get,
    path = "/health/ready",
    security(()),
    responses(
        (status = 200, description = "Every check passed", body = Readiness),
        (status = 503, description = "A check failed", body = Readiness),
    )
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let database = match state.store.ping().await {
        Ok(()) => passed("database"),
        Err(err) => {
            tracing::warn!(error = %crate::orchestrator::error_chain(&err), "readiness: database check failed");
            failed(
                "database",
                "the database did not answer; the server log has the details",
            )
        }
    };
    let root = state.data.root().to_owned();
    let data_dir = match tokio::task::spawn_blocking(move || probe_writable(&root)).await {
        Ok(Ok(())) => passed("data_dir"),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: data directory is not writable");
            failed("data_dir", "the data directory is not writable")
        }
        Err(err) => {
            tracing::warn!(error = %err, "readiness: data directory check did not finish");
            failed("data_dir", "the data directory check did not finish")
        }
    };

    let checks = vec![database, data_dir];
    let all_passed = checks.iter().all(|check| check.status == "ok");
    let (status, text) = if all_passed {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        Json(Readiness {
            status: text,
            checks,
        }),
    )
}

fn passed(name: &'static str) -> Check {
    Check {
        name,
        status: "ok",
        message: None,
    }
}

fn failed(name: &'static str, message: &str) -> Check {
    Check {
        name,
        status: "failed",
        message: Some(message.to_owned()),
    }
}

/// Creates and removes a file with a random name in `dir`.
fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(
        ".ready-probe-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
