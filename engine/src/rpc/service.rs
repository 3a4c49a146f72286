//! `JobService` handlers: authenticate, then hand the call to the job.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::artifacts::{ArtifactKind, IncomingArtifact};
use crate::model::RunState;
use crate::orchestrator::{JobEvent, JobRuntime};
use crate::proto::job_service_server::JobService;
use crate::proto::{
    self, DeclarePlanRequest, DeclarePlanResponse, GetSecretRequest, GetSecretResponse,
    ReportStatusRequest, ReportStatusResponse, RunStepEvent, RunStepRequest, ScheduleEvent,
    UploadArtifactRequest, UploadArtifactResponse, WatchScheduleRequest, report_status_request,
    upload_artifact_request,
};

use super::TokenRegistry;

pub struct JobServiceImpl {
    tokens: Arc<TokenRegistry>,
}

impl JobServiceImpl {
    pub fn new(tokens: Arc<TokenRegistry>) -> JobServiceImpl {
        JobServiceImpl { tokens }
    }

    fn job<T>(&self, request: &Request<T>) -> Result<Arc<JobRuntime>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let Some(token) = token else {
            tracing::warn!("gRPC call without a job token rejected");
            return Err(Status::permission_denied("missing job token"));
        };
        self.tokens.lookup(token).ok_or_else(|| {
            tracing::warn!("gRPC call with an unknown or expired job token rejected");
            Status::permission_denied("invalid or expired job token")
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobServiceImpl {
    async fn declare_plan(
        &self,
        request: Request<DeclarePlanRequest>,
    ) -> Result<Response<DeclarePlanResponse>, Status> {
        let job = self.job(&request)?;
        job.declare_plan(request.into_inner()).await?;
        Ok(Response::new(DeclarePlanResponse {}))
    }

    type WatchScheduleStream = BoxStream<ScheduleEvent>;

    async fn watch_schedule(
        &self,
        request: Request<WatchScheduleRequest>,
    ) -> Result<Response<Self::WatchScheduleStream>, Status> {
        let job = self.job(&request)?;
        let receiver = job.open_schedule().await?;
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            receiver,
        ))))
    }

    type RunStepStream = BoxStream<RunStepEvent>;

    async fn run_step(
        &self,
        request: Request<RunStepRequest>,
    ) -> Result<Response<Self::RunStepStream>, Status> {
        let job = self.job(&request)?;
        let receiver = crate::orchestrator::start_step(job, request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let job = self.job(&request)?;
        let value = job.read_secret(&request.into_inner().key).await?;
        Ok(Response::new(GetSecretResponse { value }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<UploadArtifactRequest>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        let job = self.job(&request)?;
        let mut parts = request.into_inner();

        let header = match parts.next().await {
            Some(Ok(UploadArtifactRequest {
                part: Some(upload_artifact_request::Part::Header(header)),
            })) => header,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "an upload must start with its header",
                ));
            }
        };
        let kind = match proto::artifact_header::Kind::try_from(header.kind) {
            Ok(proto::artifact_header::Kind::File) => ArtifactKind::File,
            Ok(proto::artifact_header::Kind::Directory) => ArtifactKind::Directory,
            _ => {
                return Err(Status::invalid_argument(
                    "artifact kind must be file or directory",
                ));
            }
        };
        job.require_running_task(&header.task).await?;
        if job.logs().scrubber().scrub_text(&header.name) != header.name {
            return Err(Status::invalid_argument(
                "the artifact name contains the value of a secret; pick a name without it",
            ));
        }

        let chunks = parts.map(|part| match part {
            Ok(UploadArtifactRequest {
                part: Some(upload_artifact_request::Part::Chunk(chunk)),
            }) => Ok(bytes::Bytes::from(chunk)),
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected a data chunk after the header",
            )),
            Err(status) => Err(std::io::Error::other(status.message().to_owned())),
        });
        let meta = IncomingArtifact {
            job_id: job.id().clone(),
            name: header.name.clone(),
            kind,
            source_path: header.source_path.clone(),
            task: header.task.clone(),
        };
        let record = job.context.artifacts.receive(meta, Box::pin(chunks)).await.map_err(|err| {
            tracing::info!(job_id = %job.id(), artifact = %header.name, error = %err, "artifact upload rejected");
            Status::invalid_argument(err.to_string())
        })?;
        job.context
            .store
            .insert_artifact(&record)
            .await
            .map_err(|err| {
                tracing::error!(job_id = %job.id(), error = %err, "failed to record an artifact");
                Status::internal("failed to record the artifact")
            })?;
        tracing::info!(job_id = %job.id(), artifact = %record.name, size = record.size_bytes, "artifact stored");
        job.emit(JobEvent::ArtifactStored {
            name: record.name.clone(),
            size_bytes: record.size_bytes,
        });
        Ok(Response::new(UploadArtifactResponse {
            size_bytes: u64::try_from(record.size_bytes).unwrap_or(0),
            sha256: record.sha256,
        }))
    }

    async fn report_status(
        &self,
        request: Request<ReportStatusRequest>,
    ) -> Result<Response<ReportStatusResponse>, Status> {
        let job = self.job(&request)?;
        match request.into_inner().status {
            Some(report_status_request::Status::TaskStarted(started)) => {
                job.require_running_task(&started.task).await?;
            }
            Some(report_status_request::Status::TaskFinished(finished)) => {
                job.finish_task(&finished.task, finished.success, &finished.error)
                    .await?;
            }
            Some(report_status_request::Status::LoadError(error)) => {
                job.record_load_error(error.message).await;
            }
            Some(report_status_request::Status::ScriptError(error)) => {
                job.record_script_error(error.message).await;
            }
            None => return Err(Status::invalid_argument("empty status report")),
        }
        Ok(Response::new(ReportStatusResponse {}))
    }
}

impl JobRuntime {
    pub(crate) async fn require_running_task(&self, task: &str) -> Result<(), Status> {
        let shared = self.shared.lock().await;
        match shared.plan.as_ref().and_then(|plan| plan.state(task)) {
            Some(RunState::Running) => Ok(()),
            Some(state) => Err(Status::failed_precondition(format!(
                "task `{task}` is {state}, not running"
            ))),
            None => Err(Status::not_found(format!("no task `{task}` in this job"))),
        }
    }
}
