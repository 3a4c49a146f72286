//! Listing and downloading a job's artifacts.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiPath, ErrorBody};
use crate::artifacts::ArtifactKind;
use crate::store::ArtifactRecord;

#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    pub name: String,
    /// `file`, or `directory` (downloaded as a `.tar.gz`).
    pub kind: String,
    /// Size of the stored bytes (the archive, for a directory).
    pub size_bytes: i64,
    pub sha256: String,
    /// The task that uploaded it.
    pub task: String,
    pub created_at: i64,
    /// Path of the download endpoint.
    pub download_url: String,
}

pub(super) fn artifact_body(record: ArtifactRecord) -> Artifact {
    let download_url = format!(
        "/api/v1/jobs/{}/artifacts/{}",
        record.job_id,
        utf8_percent_encode(&record.name, NON_ALPHANUMERIC)
    );
    Artifact {
        name: record.name,
        kind: record.kind,
        size_bytes: record.size_bytes,
        sha256: record.sha256,
        task: record.task,
        created_at: record.created_at,
        download_url,
    }
}

/// List a job's artifacts
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/artifacts",
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, body = Vec<Artifact>), (status = 404, body = ErrorBody))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<Artifact>>, ApiError> {
    let job = state.store.find_job(&id).await?;
    let records = state.store.list_artifacts(&job.id).await?;
    Ok(Json(records.into_iter().map(artifact_body).collect()))
}

/// Download an artifact
///
/// Streams the stored bytes with `Content-Length`; a directory comes as the
/// `.tar.gz` it was stored as.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/artifacts/{name}",
    params(
        ("id" = String, Path, description = "Job id or a unique prefix"),
        ("name" = String, Path, description = "Artifact name"),
    ),
    responses(
        (status = 200, description = "The artifact's bytes", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<Arc<AppState>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let job = state.store.find_job(&id).await?;
    let records = state.store.list_artifacts(&job.id).await?;
    let Some(record) = records.into_iter().find(|record| record.name == name) else {
        return Err(ApiError::not_found(format!(
            "job `{}` has no artifact `{name}`",
            job.id
        )));
    };
    let kind: ArtifactKind = record
        .kind
        .parse()
        .map_err(|err| ApiError::internal("read the artifact's kind", &err))?;

    let path = state.artifacts.path_of(&job.id, &record.name, kind);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(job_id = %job.id, artifact = %record.name, "artifact recorded but its file is gone");
            return Err(ApiError::not_found(format!(
                "the file of artifact `{name}` of job `{}` is gone (removed from the data directory)",
                job.id
            )));
        }
        Err(err) => return Err(ApiError::internal("open the artifact", &err)),
    };
    let length = file
        .metadata()
        .await
        .map_err(|err| ApiError::internal("read the artifact's size", &err))?
        .len();

    let (file_name, content_type) = match kind {
        ArtifactKind::File => (record.name.clone(), "application/octet-stream"),
        ArtifactKind::Directory => (format!("{}.tar.gz", record.name), "application/gzip"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CONTENT_DISPOSITION, content_disposition(&file_name)),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}

/// `attachment` with an ASCII fallback name (anything but letters, digits,
/// `.`, `-` and `_` becomes `_`) and the exact name in RFC 5987 `filename*`.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_') {
                ch
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_escapes_quotes_and_non_ascii() {
        let header = content_disposition("a\"b;c é.txt");

        assert_eq!(
            header,
            "attachment; filename=\"a_b_c__.txt\"; filename*=UTF-8''a%22b%3Bc%20%C3%A9%2Etxt"
        );
    }
}
