//! `GET /api/v1/jobs/{id}/logs/raw`: one log's stored bytes as a file, for
//! reading in an editor or with `grep` when a browser view is not enough.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{LogTarget, find_step};
use crate::api::AppState;
use crate::api::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::logs::read_log_range;
use crate::model::JobId;

/// Bytes read from disk per piece of the response.
const PIECE: u64 = 1 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// The step's task; without `task`, `step` and `step_id`, the
    /// coordinator's log.
    pub task: Option<String>,
    /// The step's name; the first step of that name in `task`.
    pub step: Option<String>,
    /// The step's `id` from the job detail. Replaces `task` and `step`.
    pub step_id: Option<i64>,
}

/// Download one log
///
/// The stored bytes of one step's log (or, without `task`, `step` and
/// `step_id`, the coordinator's), as written by the process after secret
/// masking: stdout and stderr interleaved as they arrived, ANSI sequences
/// and invalid UTF-8 kept. A log still being written is sent up to where it
/// was when the response was read.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/raw",
    params(("id" = String, Path, description = "Job id or a unique prefix"), RawQuery),
    responses(
        (status = 200, description = "The log's bytes", content_type = "text/plain"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn raw(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RawQuery>,
) -> Result<Response, ApiError> {
    let job = state.store.find_job(&id).await?;
    let target = match (&query.task, &query.step, query.step_id) {
        (None, None, None) => LogTarget::coordinator(),
        _ => find_step(&state.store, &job, query.task, query.step, query.step_id).await?,
    };
    let file_name = file_name(&job.id, &target);
    let dir = state.data.job_logs_dir(&job.id);
    let key = target.key;

    // Read piece by piece on the blocking pool, so a large log costs one
    // piece of memory at a time.
    let pieces = futures::stream::unfold(Some(0_u64), move |next| {
        let dir = dir.clone();
        async move {
            let offset = next?;
            let read =
                tokio::task::spawn_blocking(move || read_log_range(&dir, key, offset, PIECE)).await;
            let chunks = match read {
                Ok(Ok(chunks)) => chunks,
                Ok(Err(err)) => return Some((Err(err), None)),
                Err(err) => return Some((Err(std::io::Error::other(err)), None)),
            };
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|chunk| chunk.data).collect();
            if bytes.is_empty() {
                return None;
            }
            let after = offset + bytes.len() as u64;
            Some((Ok(Bytes::from(bytes)), Some(after)))
        }
    });

    let disposition = format!("attachment; filename=\"{file_name}\"");
    let mut response = Body::from_stream(pieces).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("the file name is plain ASCII"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// `<job>-<task>-<step>.log`, or `<job>-script.log` for the coordinator,
/// with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn file_name(job: &JobId, target: &LogTarget) -> String {
    let name = match (&target.task, &target.step) {
        (Some(task), Some(step)) => format!("{}-{task}-{step}.log", job.short()),
        _ => format!("{}-script.log", job.short()),
    };
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogKey;

    #[test]
    fn file_names_keep_only_safe_characters() {
        let job = JobId("01a24355-a819-779f-8ca7-cd7543a5bcd3".to_owned());
        let target = LogTarget {
            key: LogKey::Step(3),
            task: Some("unit tests".to_owned()),
            step: Some("run \"all\"/ü".to_owned()),
        };
        assert_eq!(
            file_name(&job, &target),
            "01a24355-a819-779f-unit_tests-run__all___.log"
        );
        assert_eq!(
            file_name(&job, &LogTarget::coordinator()),
            "01a24355-a819-779f-script.log"
        );
    }
}
