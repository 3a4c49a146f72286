//! The pipelines of a project folder on the server's machine, listed
//! before a job starts.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::orchestrator::PIPELINE_FILE;
use crate::orchestrator::pipelines::{InspectError, PipelineSummary};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PipelinesQuery {
    /// Absolute path of the folder that contains `danubefile.py`.
    pub project: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectPipelines {
    pub project: String,
    /// In definition order. Several means a job must name one.
    pub pipelines: Vec<PipelineSummary>,
}

impl From<InspectError> for ApiError {
    fn from(err: InspectError) -> ApiError {
        match err {
            InspectError::Project(_) | InspectError::Load(_) | InspectError::Timeout { .. } => {
                ApiError::unprocessable(err.to_string())
            }
            err => ApiError::internal("read the project's pipelines", &err),
        }
    }
}

/// List a project's pipelines
#[utoipa::path(
    get,
    path = "/api/v1/projects/pipelines",
    params(PipelinesQuery),
    responses(
        (status = 200, description = "The pipelines the file defines", body = ProjectPipelines),
        (status = 400, description = "The project path is not absolute", body = ErrorBody),
        (status = 422, description = "No project there, or its file does not load; the message has the traceback", body = ErrorBody),
    )
)]
pub async fn pipelines(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PipelinesQuery>,
) -> Result<Json<ProjectPipelines>, ApiError> {
    let project = PathBuf::from(&query.project);
    if !project.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "project `{}` is not an absolute path; pass the absolute path of the folder that contains {PIPELINE_FILE}",
            query.project
        )));
    }
    let pipelines = state.engine.list_pipelines(&project).await?;
    Ok(Json(ProjectPipelines {
        project: query.project,
        pipelines,
    }))
}
