//! Reading stored logs, and following one log live over Server-Sent Events.
//!
//! Log bytes are stored exactly as the process wrote them (after secret
//! scrubbing), which may be invalid UTF-8 or cut inside a character. A chunk
//! is therefore sent as `"encoding": "utf8"` with its text when its bytes are
//! valid UTF-8, and as `"encoding": "base64"` otherwise, so concatenating
//! decoded chunks always gives back the stored bytes.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::Stream;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::metrics::SseKind;
use crate::logs::{LogChunk, LogKey, read_log_range};
use crate::model::{JobId, Stream as OutputStream};
use crate::orchestrator::{Engine, EngineEvent, JobEvent};
use crate::store::{JobRecord, Store};

/// Bytes returned by one `GET .../logs` of a step when the request gives no
/// `limit`.
const DEFAULT_RANGE: u64 = 1 << 20;
/// The largest `limit` accepted by `GET .../logs`.
const MAX_RANGE: u64 = 16 << 20;

/// Bytes read from disk per SSE event when catching up.
const DISK_PIECE: u64 = 64 << 10;

/// Events buffered per SSE client. When a client reads slower than the job
/// writes, the follower waits on this buffer without holding on to the live
/// channel, and catches up from disk later, so a slow client costs neither
/// the job nor memory beyond this buffer.
const SSE_BUFFER: usize = 16;

/// How often a follower rereads the disk and the step's state without a
/// live notification: for jobs another process runs, and as a safety net.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Only this task's steps.
    pub task: Option<String>,
    /// Only this step of `task` (needs `task`).
    pub step: Option<String>,
    /// With `task` and `step`: first byte to return; default 0.
    pub offset: Option<u64>,
    /// With `task` and `step`: maximum bytes to return; default 1 MiB, at most 16 MiB.
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The step's task; without `task` and `step`, the coordinator's log.
    pub task: Option<String>,
    /// The step's name.
    pub step: Option<String>,
}

/// Chunks of stored logs in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub chunks: Vec<Chunk>,
    /// With `task` and `step`: the offset to ask for next.
    pub next_offset: Option<u64>,
    /// Without `step`: the read stopped at 16 MiB in all, so later bytes and
    /// logs are missing; read each step with `task`, `step` and `offset`.
    pub truncated: bool,
}

/// Reads the logs in `keys` in order, `budget` bytes at most in all.
/// Returns the chunks of each log read and whether anything was left out.
fn read_capped(
    dir: &std::path::Path,
    keys: &[LogKey],
    budget: u64,
) -> std::io::Result<(Vec<Vec<LogChunk>>, bool)> {
    let mut logs = Vec::with_capacity(keys.len());
    let mut remaining = budget;
    for key in keys {
        if remaining == 0 {
            // Something is left out only if a later log holds bytes.
            let more = !read_log_range(dir, *key, 0, 1)?.is_empty();
            return Ok((logs, more));
        }
        // One byte past the budget tells whether this log goes on.
        let mut chunks = read_log_range(dir, *key, 0, remaining + 1)?;
        let size: u64 = chunks.iter().map(|chunk| chunk.data.len() as u64).sum();
        if size > remaining {
            let last = chunks.last_mut().expect("a non-empty read has a chunk");
            let keep = last.data.len() - 1;
            last.data.truncate(keep);
            if last.data.is_empty() {
                chunks.pop();
            }
            logs.push(chunks);
            return Ok((logs, true));
        }
        remaining -= size;
        logs.push(chunks);
    }
    Ok((logs, false))
}

/// One chunk of output.
#[derive(Debug, Serialize, ToSchema)]
pub struct Chunk {
    /// `coordinator` (what the script printed) or `step`.
    pub log: &'static str,
    pub step_id: Option<i64>,
    pub task: Option<String>,
    pub step: Option<String>,
    /// `stdout`, `stderr` or `engine`.
    #[schema(value_type = String)]
    pub stream: OutputStream,
    /// Byte offset of this chunk in its log.
    pub offset: u64,
    pub timestamp: i64,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
    pub data: String,
}

/// Which stored log a request names.
struct LogTarget {
    key: LogKey,
    task: Option<String>,
    step: Option<String>,
}

impl LogTarget {
    fn chunk(&self, chunk: &LogChunk) -> Chunk {
        let (encoding, data) = match std::str::from_utf8(&chunk.data) {
            Ok(text) => ("utf8", text.to_owned()),
            Err(_) => ("base64", STANDARD.encode(&chunk.data)),
        };
        let (log, step_id) = match self.key {
            LogKey::Coordinator => ("coordinator", None),
            LogKey::Step(id) => ("step", Some(id)),
        };
        Chunk {
            log,
            step_id,
            task: self.task.clone(),
            step: self.step.clone(),
            stream: chunk.stream,
            offset: chunk.offset,
            timestamp: chunk.timestamp,
            encoding,
            data,
        }
    }
}

/// Read stored logs
///
/// With `task` and `step`, one step's bytes `offset..offset + limit`; with
/// `task` alone, that task's steps; with neither, the whole job (the
/// coordinator's log, then every step in the order they started).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    params(("id" = String, Path, description = "Job id or a unique prefix"), ReadQuery),
    responses(
        (status = 200, body = LogPage),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn read(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let job = state.store.find_job(&id).await?;
    let dir = state.data.job_logs_dir(&job.id);

    if query.step.is_some() {
        let target = step_target(&state.store, &job, query.task, query.step).await?;
        let offset = query.offset.unwrap_or(0);
        let limit = query.limit.unwrap_or(DEFAULT_RANGE);
        if limit == 0 || limit > MAX_RANGE {
            return Err(ApiError::bad_request(format!(
                "limit {limit} is out of range; pass 1 to {MAX_RANGE} bytes"
            )));
        }
        let key = target.key;
        let chunks = blocking_read(move || read_log_range(&dir, key, offset, limit)).await?;
        let next_offset = chunks
            .last()
            .map_or(offset, |chunk| chunk.offset + chunk.data.len() as u64);
        return Ok(Json(LogPage {
            chunks: chunks.iter().map(|chunk| target.chunk(chunk)).collect(),
            next_offset: Some(next_offset),
            truncated: false,
        }));
    }
    if query.offset.is_some() || query.limit.is_some() {
        return Err(ApiError::bad_request(
            "offset and limit apply to one step's log; pass `task` and `step` too",
        ));
    }

    let steps = state.store.list_steps(&job.id).await?;
    if let Some(task) = &query.task
        && !steps.iter().any(|step| &step.task == task)
        && !state
            .store
            .list_tasks(&job.id)
            .await?
            .iter()
            .any(|known| &known.name == task)
    {
        return Err(ApiError::not_found(format!(
            "job `{}` has no task `{task}`",
            job.id
        )));
    }
    let mut targets = Vec::new();
    if query.task.is_none() {
        targets.push(LogTarget {
            key: LogKey::Coordinator,
            task: None,
            step: None,
        });
    }
    for step in steps {
        if query.task.as_ref().is_none_or(|task| task == &step.task) {
            targets.push(LogTarget {
                key: LogKey::Step(step.id),
                task: Some(step.task),
                step: Some(step.name),
            });
        }
    }

    // A whole job's logs can be far larger than memory allows for one
    // response, so the read stops after MAX_RANGE bytes in all.
    let keys: Vec<LogKey> = targets.iter().map(|target| target.key).collect();
    let (logs, truncated) = blocking_read(move || read_capped(&dir, &keys, MAX_RANGE)).await?;
    let chunks = targets
        .iter()
        .zip(&logs)
        .flat_map(|(target, chunks)| chunks.iter().map(|chunk| target.chunk(chunk)))
        .collect();
    Ok(Json(LogPage {
        chunks,
        next_offset: None,
        truncated,
    }))
}

/// Follow one log live
///
/// Server-Sent Events: each `chunk` event carries a [`Chunk`] and has as id
/// the byte offset after it. A client that reconnects with `Last-Event-ID`
/// gets the bytes from that offset on, with nothing lost or repeated. The
/// stream ends with an `end` event once the step (or, for the coordinator's
/// log, the job) is final and every byte was sent.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/stream",
    params(
        ("id" = String, Path, description = "Job id or a unique prefix"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this byte offset"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = state.store.find_job(&id).await?;
    let target = match (&query.task, &query.step) {
        (None, None) => LogTarget {
            key: LogKey::Coordinator,
            task: None,
            step: None,
        },
        _ => step_target(&state.store, &job, query.task, query.step).await?,
    };
    let start = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be a byte offset sent by this stream")
            })?,
    };

    // Subscribed before anything is read from disk: a chunk written after
    // this point arrives live, and one written before it is on disk, so the
    // follower misses nothing.
    let follower = Follower {
        store: state.store.clone(),
        engine: state.engine.clone(),
        dir: state.data.job_logs_dir(&job.id),
        job: job.id.clone(),
        live: state.engine.subscribe_logs(&job.id),
        events: state.engine.subscribe(),
        target,
        position: start,
    };
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = follower.run(&sender) => {}
            () = shutdown.cancelled() => {}
        }
    });

    let guard = state.metrics.sse_client(SseKind::Logs);
    let events = ReceiverStream::new(receiver).map(move |event| {
        let _counted = &guard;
        Ok(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Finds the log of step `step` of task `task`; the first one started when
/// a task ran several steps of that name.
async fn step_target(
    store: &Store,
    job: &JobRecord,
    task: Option<String>,
    step: Option<String>,
) -> Result<LogTarget, ApiError> {
    let (Some(task), Some(step)) = (task, step) else {
        return Err(ApiError::bad_request(
            "name a step's log with both `task` and `step`",
        ));
    };
    let steps = store.list_steps(&job.id).await?;
    let Some(found) = steps
        .iter()
        .find(|candidate| candidate.task == task && candidate.name == step)
    else {
        return Err(ApiError::not_found(format!(
            "job `{}` has no step `{step}` in task `{task}` (yet)",
            job.id
        )));
    };
    Ok(LogTarget {
        key: LogKey::Step(found.id),
        task: Some(task),
        step: Some(step),
    })
}

async fn blocking_read<T: Send + 'static>(
    read: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ApiError::internal("read the stored log", &err)),
        Err(err) => Err(ApiError::internal("read the stored log", &err)),
    }
}

/// Sends one log to one SSE client: stored bytes from `position`, then live
/// chunks, until the log is final.
struct Follower {
    store: Store,
    /// To follow the live chunks again after a pause for a slow client.
    engine: Engine,
    dir: PathBuf,
    job: JobId,
    /// `None` when this engine does not run the job (it is over, or another
    /// process runs it); the follower then polls the disk.
    live: Option<broadcast::Receiver<LogChunk>>,
    events: broadcast::Receiver<EngineEvent>,
    target: LogTarget,
    /// Offset of the next byte to send.
    position: u64,
}

/// The client went away.
struct Disconnected;

impl Follower {
    async fn run(mut self, sender: &mpsc::Sender<Event>) {
        let _ = self.follow(sender).await;
    }

    async fn follow(&mut self, sender: &mpsc::Sender<Event>) -> Result<(), Disconnected> {
        let mut catch_up = true;
        loop {
            if catch_up {
                // The state is read before the disk: every byte of a log is
                // stored before its step is recorded final, so a log seen
                // final here is complete on disk below.
                let finished = self.is_finished().await;
                self.send_from_disk(sender).await?;
                if finished {
                    let _ = sender.send(Event::default().event("end").data("{}")).await;
                    return Ok(());
                }
                catch_up = false;
            }

            tokio::select! {
                chunk = next_live(&mut self.live) => match chunk {
                    Ok(chunk) if chunk.key == self.target.key => {
                        catch_up = !self.send_live(sender, chunk).await?;
                    }
                    Ok(_) => {}
                    // Fell behind or the job ended: the disk has every byte.
                    Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.live = None;
                        catch_up = true;
                    }
                },
                event = self.events.recv() => {
                    catch_up = match event {
                        Ok(event) => event.job_id == self.job && self.ends_log(&event.event),
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                }
                () = tokio::time::sleep(POLL_INTERVAL) => catch_up = true,
                () = sender.closed() => return Err(Disconnected),
            }
        }
    }

    fn ends_log(&self, event: &JobEvent) -> bool {
        match (self.target.key, event) {
            (LogKey::Step(id), JobEvent::StepFinished { step_id, .. }) => *step_id == id,
            (LogKey::Coordinator, JobEvent::JobState { state, .. }) => state.is_final(),
            _ => false,
        }
    }

    async fn is_finished(&self) -> bool {
        let result = match self.target.key {
            LogKey::Coordinator => self
                .store
                .find_job(self.job.as_str())
                .await
                .map(|job| job.state.is_final()),
            LogKey::Step(id) => self.store.list_steps(&self.job).await.map(|steps| {
                steps
                    .iter()
                    .any(|step| step.id == id && step.state.is_final())
            }),
        };
        result.unwrap_or_else(|err| {
            tracing::warn!(job_id = %self.job, error = %err, "log stream failed to read the step's state; retrying");
            false
        })
    }

    /// Sends a live chunk, or the part of it after `position`. Returns
    /// `false` when the chunk starts past `position`, so bytes in between
    /// must come from disk first.
    async fn send_live(
        &mut self,
        sender: &mpsc::Sender<Event>,
        chunk: LogChunk,
    ) -> Result<bool, Disconnected> {
        let end = chunk.offset + chunk.data.len() as u64;
        if end <= self.position {
            return Ok(true);
        }
        if chunk.offset > self.position {
            return Ok(false);
        }
        let skip = usize::try_from(self.position - chunk.offset)
            .expect("a skipped prefix is shorter than the chunk, which is in memory");
        let tail = LogChunk {
            offset: self.position,
            data: chunk.data.slice(skip..),
            ..chunk
        };
        self.send(sender, &tail).await?;
        Ok(true)
    }

    async fn send_from_disk(&mut self, sender: &mpsc::Sender<Event>) -> Result<(), Disconnected> {
        loop {
            let dir = self.dir.clone();
            let key = self.target.key;
            let position = self.position;
            let read = tokio::task::spawn_blocking(move || {
                read_log_range(&dir, key, position, DISK_PIECE)
            })
            .await;
            let chunks = match read {
                Ok(Ok(chunks)) => chunks,
                Ok(Err(err)) => {
                    tracing::warn!(job_id = %self.job, error = %err, "log stream failed to read the stored log; retrying");
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(job_id = %self.job, error = %err, "log stream's disk read did not finish; retrying");
                    return Ok(());
                }
            };
            if chunks.is_empty() {
                return Ok(());
            }
            for chunk in &chunks {
                self.send(sender, chunk).await?;
            }
        }
    }

    async fn send(
        &mut self,
        sender: &mpsc::Sender<Event>,
        chunk: &LogChunk,
    ) -> Result<(), Disconnected> {
        if chunk.data.is_empty() {
            return Ok(());
        }
        let end = chunk.offset + chunk.data.len() as u64;
        let body = serde_json::to_string(&self.target.chunk(chunk))
            .expect("a chunk of strings and numbers serializes");
        let event = Event::default()
            .event("chunk")
            .id(end.to_string())
            .data(body);
        let permit = match sender.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                // The client reads slower than the job writes. A live
                // receiver that falls behind pins up to the live channel's
                // capacity of chunks in memory, so the follower drops it
                // while it waits. Bytes written meanwhile come from disk.
                let paused = self.live.take().is_some();
                let permit = sender.reserve().await.map_err(|_| Disconnected)?;
                if paused {
                    self.live = self.engine.subscribe_logs(&self.job);
                }
                permit
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Disconnected),
        };
        permit.send(event);
        self.position = end;
        Ok(())
    }
}

/// The next live chunk; never resolves without a live channel.
async fn next_live(
    live: &mut Option<broadcast::Receiver<LogChunk>>,
) -> Result<LogChunk, broadcast::error::RecvError> {
    match live {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod capped_read_tests {
    use super::*;
    use crate::logs::JobLogs;
    use crate::model::Stream;

    fn write_logs(dir: &std::path::Path, sizes: &[(LogKey, usize)]) {
        let logs = JobLogs::create(dir.to_owned()).unwrap();
        for (key, size) in sizes {
            let mut writer = logs.writer(*key).unwrap();
            writer.write(Stream::Stdout, &vec![b'x'; *size]).unwrap();
            writer.finish().unwrap();
        }
    }

    fn total(logs: &[Vec<LogChunk>]) -> usize {
        logs.iter().flatten().map(|chunk| chunk.data.len()).sum()
    }

    #[test]
    fn capped_read_stops_at_budget() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [LogKey::Coordinator, LogKey::Step(1), LogKey::Step(2)];
        write_logs(dir.path(), &[(keys[0], 10), (keys[1], 50), (keys[2], 10)]);

        let (logs, truncated) = read_capped(dir.path(), &keys, 40).unwrap();
        assert!(truncated);
        assert_eq!(total(&logs), 40);
        assert_eq!(logs.len(), 2);
    }

    #[test]
    fn capped_read_within_budget_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [LogKey::Coordinator, LogKey::Step(1)];
        write_logs(dir.path(), &[(keys[0], 10), (keys[1], 30)]);

        let (logs, truncated) = read_capped(dir.path(), &keys, 40).unwrap();
        assert!(!truncated);
        assert_eq!(total(&logs), 40);

        // A budget used up exactly is not truncation unless more follows.
        let (_, truncated) = read_capped(dir.path(), &keys[..1], 10).unwrap();
        assert!(!truncated);
        let (_, truncated) = read_capped(dir.path(), &keys, 10).unwrap();
        assert!(truncated);
    }
}
