//! The `target` of a job started over the API: where it runs when the
//! server lets each job choose (the desktop app does, through
//! [`AppState::set_target_backends`]).

use axum::http::StatusCode;

use super::AppState;
use super::error::ApiError;
use crate::backend::kubernetes::Target;
use crate::backend::targets::ConnectError;
use crate::orchestrator::{JobBackend, error_chain};

/// Returns the backend of the requested target: `None` (the engine's own
/// backend) when the request names none or names local processes.
///
/// # Errors
///
/// 422 for a malformed target, or for any target on a server that runs
/// every job on its own backend; 502 `target_unreachable` when the context
/// cannot be read or its cluster does not respond, with the context and the
/// cause in the message.
pub(crate) async fn job_backend(
    state: &AppState,
    target: Option<&str>,
) -> Result<Option<JobBackend>, ApiError> {
    let Some(text) = target.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let target: Target = text
        .parse()
        .map_err(|err: crate::backend::kubernetes::TargetError| {
            ApiError::unprocessable(err.to_string())
        })?;
    if state.engine.runs_on(&target.to_string()) {
        return Ok(None);
    }
    let Some(backends) = state.targets.get() else {
        return Err(ApiError::unprocessable(format!(
            "this server runs every job on the target it was started with (`danube serve --target`), so it cannot run one on `{target}`; leave out `target`"
        )));
    };

    backends.job_backend(&target).await.map_err(|err| {
        tracing::warn!(%target, error = %error_chain(&err), "failed to connect to a job's target");
        unreachable(&target, &err)
    })
}

fn unreachable(target: &Target, err: &ConnectError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "target_unreachable",
        format!(
            "cannot run on `{target}`: {}; choose another target, or try again once the cluster can be reached",
            error_chain(err)
        ),
    )
}
