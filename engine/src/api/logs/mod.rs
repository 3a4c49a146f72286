//! Reading stored logs page by page, and following them live over
//! Server-Sent Events: one log, or every log of a job.
//!
//! Log bytes are stored exactly as the process wrote them (after secret
//! scrubbing), which may be invalid UTF-8 or cut inside a character. A chunk
//! is therefore sent as `"encoding": "utf8"` with its text when its bytes are
//! valid UTF-8, and as `"encoding": "base64"` otherwise, so concatenating
//! decoded chunks always gives back the stored bytes.
//!
//! A job's logs come in one order everywhere: the coordinator's log, then
//! each step's by step id, which is the order the steps were recorded in
//! when they started.

mod follow;
mod position;
pub mod raw;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::Stream;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use self::follow::{FollowedLog, Follower, FollowerParts, SSE_BUFFER, Scope};
use self::position::{InvalidPosition, PageCursor, StreamPosition};
use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::metrics::SseKind;
use crate::logs::{LogChunk, LogKey, read_log_range};
use crate::model::Stream as OutputStream;
use crate::store::{JobRecord, StepRecord, Store};

/// Bytes returned by one `GET .../logs` when the request gives no `limit`.
const DEFAULT_RANGE: u64 = 1 << 20;
/// The largest `limit` accepted by `GET .../logs`.
const MAX_RANGE: u64 = 16 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Only this task's steps; with `step`, the task of the step to read.
    pub task: Option<String>,
    /// With `task`: only this step's log. When the task ran several steps of
    /// this name, the first one started; `step_id` names the others.
    pub step: Option<String>,
    /// Only this step's log: a step `id` from the job detail. Replaces
    /// `task` and `step`.
    pub step_id: Option<i64>,
    /// For one step's log: the first byte to return; default 0.
    pub offset: Option<u64>,
    /// Maximum bytes to return, 1 to 16 MiB; default 1 MiB.
    pub limit: Option<u64>,
    /// For a whole job or task: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The step's task; without `task`, `step` and `step_id`, the
    /// coordinator's log.
    pub task: Option<String>,
    /// The step's name; the first step of that name in `task`.
    pub step: Option<String>,
    /// The step's `id` from the job detail. Replaces `task` and `step`.
    pub step_id: Option<i64>,
    /// Resume after this byte offset, the id of the last event received;
    /// default 0. For clients that cannot set `Last-Event-ID`, such as a
    /// browser's new `EventSource`. `Last-Event-ID` wins when both are
    /// given, because a browser sends it when it reconnects on its own to
    /// the address it first opened.
    pub offset: Option<u64>,
}

/// Chunks of stored logs in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub chunks: Vec<Chunk>,
    /// For one step's log: the `offset` to ask for next.
    pub next_offset: Option<u64>,
    /// For a whole job or task: the read stopped at `limit` bytes and later
    /// bytes follow; ask for them with `next_cursor`.
    pub truncated: bool,
    /// For a whole job or task, when `truncated`: pass as `cursor` to read
    /// the next page, which starts at the first byte this page left out.
    pub next_cursor: Option<String>,
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

/// A stored log that a request names, with its step's task and name.
pub struct LogTarget {
    key: LogKey,
    task: Option<String>,
    step: Option<String>,
}

impl LogTarget {
    fn coordinator() -> LogTarget {
        LogTarget {
            key: LogKey::Coordinator,
            task: None,
            step: None,
        }
    }

    fn step(step: &StepRecord) -> LogTarget {
        LogTarget {
            key: LogKey::Step(step.id),
            task: Some(step.task.clone()),
            step: Some(step.name.clone()),
        }
    }

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
/// With `step_id`, or `task` and `step`: one step's bytes
/// `offset..offset + limit`. With `task` alone, that task's steps; with
/// neither, the whole job: the coordinator's log, then every step by id.
/// A read of a whole job or task returns at most `limit` bytes in all. When
/// it stops there, `truncated` is true and `next_cursor` reads on. Pages of a
/// finished job join up with no byte lost or repeated. While the job runs, a
/// log keeps growing after the pages have passed it; follow a running job
/// with `GET /api/v1/jobs/{id}/logs/stream/all` instead.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    params(("id" = String, Path, description = "Job id or a unique prefix"), ReadQuery),
    responses(
        (status = 200, body = LogPage),
        (status = 400, description = "Parameters that do not go together, a limit out of range, or a cursor this read did not send", body = ErrorBody),
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
    let limit = query.limit.unwrap_or(DEFAULT_RANGE);
    if limit == 0 || limit > MAX_RANGE {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; pass 1 to {MAX_RANGE} bytes"
        )));
    }

    if query.step.is_some() || query.step_id.is_some() {
        if query.cursor.is_some() {
            return Err(ApiError::bad_request(
                "cursor pages a whole job or task; page one step's log with `offset` and `next_offset`",
            ));
        }
        let target = find_step(&state.store, &job, query.task, query.step, query.step_id).await?;
        let offset = query.offset.unwrap_or(0);
        let key = target.key;
        let chunks = blocking_read(move || read_log_range(&dir, key, offset, limit)).await?;
        let next_offset = chunks
            .last()
            .map_or(offset, |chunk| chunk.offset + chunk.data.len() as u64);
        return Ok(Json(LogPage {
            chunks: chunks.iter().map(|chunk| target.chunk(chunk)).collect(),
            next_offset: Some(next_offset),
            truncated: false,
            next_cursor: None,
        }));
    }
    if query.offset.is_some() {
        return Err(ApiError::bad_request(
            "offset applies to one step's log; pass `step_id` (or `task` and `step`) too, or page a whole job or task with `cursor`",
        ));
    }

    let steps = sorted_steps(&state.store, &job).await?;
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
        targets.push(LogTarget::coordinator());
    }
    for step in &steps {
        if query.task.as_ref().is_none_or(|task| task == &step.task) {
            targets.push(LogTarget::step(step));
        }
    }

    let start = match query.cursor.as_deref() {
        None => PageCursor {
            key: targets
                .first()
                .map_or(LogKey::Coordinator, |first| first.key),
            offset: 0,
        },
        Some(text) => {
            let invalid = || {
                ApiError::bad_request(format!(
                    "invalid cursor `{text}`; pass the `next_cursor` of the previous page of the same read unchanged"
                ))
            };
            let cursor = PageCursor::decode(text).map_err(|InvalidPosition| invalid())?;
            if !targets.iter().any(|target| target.key == cursor.key) {
                return Err(invalid());
            }
            cursor
        }
    };

    // A whole job's logs can be far larger than memory allows for one
    // response, so a page stops after `limit` bytes in all.
    let keys: Vec<LogKey> = targets.iter().map(|target| target.key).collect();
    let page = blocking_read(move || read_page(&dir, &keys, start, limit)).await?;
    let chunks = page
        .logs
        .iter()
        .flat_map(|(index, chunks)| {
            let target = &targets[*index];
            chunks.iter().map(|chunk| target.chunk(chunk))
        })
        .collect();
    Ok(Json(LogPage {
        chunks,
        next_offset: None,
        truncated: page.next.is_some(),
        next_cursor: page.next.map(|next| next.encode()),
    }))
}

/// Chunks read for one page, with the index in the read's list of logs of
/// the log they belong to.
struct Page {
    logs: Vec<(usize, Vec<LogChunk>)>,
    /// Start of the next page; `None` when the page read to the end.
    next: Option<PageCursor>,
}

/// Reads the logs `keys` in order from `start` on, `budget` bytes at most
/// in all. A `start` that names none of `keys` reads nothing.
fn read_page(dir: &Path, keys: &[LogKey], start: PageCursor, budget: u64) -> std::io::Result<Page> {
    let first = keys
        .iter()
        .position(|key| *key == start.key)
        .unwrap_or(keys.len());
    let mut page = Page {
        logs: Vec::new(),
        next: None,
    };
    let mut remaining = budget;
    for (index, key) in keys.iter().enumerate().skip(first) {
        let from = if index == first { start.offset } else { 0 };
        if remaining == 0 {
            // The page is full, and it left something out only if a later
            // log contains bytes.
            if !read_log_range(dir, *key, from, 1)?.is_empty() {
                page.next = Some(PageCursor {
                    key: *key,
                    offset: from,
                });
                return Ok(page);
            }
            continue;
        }

        // One byte past the budget shows whether this log goes on.
        let mut chunks = read_log_range(dir, *key, from, remaining + 1)?;
        let size: u64 = chunks.iter().map(|chunk| chunk.data.len() as u64).sum();
        if size > remaining {
            let last = chunks.last_mut().expect("a non-empty read has a chunk");
            let keep = last.data.len() - 1;
            last.data.truncate(keep);
            if last.data.is_empty() {
                chunks.pop();
            }
            page.logs.push((index, chunks));
            page.next = Some(PageCursor {
                key: *key,
                offset: from + remaining,
            });
            return Ok(page);
        }
        remaining -= size;
        page.logs.push((index, chunks));
    }
    Ok(page)
}

/// Follow one log live
///
/// Server-Sent Events: each `chunk` event carries a [`Chunk`] and has as id
/// the byte offset after it. A client that reconnects with that id in
/// `Last-Event-ID`, or in `offset`, gets the bytes from that offset on, with
/// nothing lost or repeated. The stream ends with an `end` event once the
/// step (or, for the coordinator's log, the job) is final and every byte was
/// sent.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/stream",
    params(
        ("id" = String, Path, description = "Job id or a unique prefix"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this byte offset, in place of `offset`"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody),
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
    let target = match (&query.task, &query.step, query.step_id) {
        (None, None, None) => LogTarget::coordinator(),
        _ => find_step(&state.store, &job, query.task, query.step, query.step_id).await?,
    };
    let start = match last_event_id(&headers) {
        None => query.offset.unwrap_or(0),
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-ID `{text}` is not a byte offset; send the id of the last event this stream sent"
            ))
        })?,
    };

    let mut log = FollowedLog::new(target);
    log.position = start;
    let follower = Follower::new(follower_parts(&state, &job), Scope::One, vec![log]);
    Ok(spawn_stream(&state, follower))
}

/// Follow every log of a job live
///
/// Server-Sent Events: each `chunk` event carries a [`Chunk`] of the
/// coordinator's log or of a step's log (`log`, `step_id`, `task` and `step`
/// name it), from the first byte of each, as they are written. Steps that
/// start later join the stream. Chunks of different logs interleave, and
/// the chunks of one log come in order. The stream ends with an `end` event
/// once the job is final and every byte of every log was sent.
///
/// An event's id records how far the stream got in every log, and a client
/// that reconnects with the last id in `Last-Event-ID` gets the rest of
/// every log, with nothing lost or repeated. Treat the id as opaque; its
/// length grows with the number of logs partly sent.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/stream/all",
    params(
        ("id" = String, Path, description = "Job id or a unique prefix"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event: the id of the last event received"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 400, description = "A Last-Event-ID this stream did not send", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn stream_all(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = state.store.find_job(&id).await?;
    let invalid = |text: &str| {
        ApiError::bad_request(format!(
            "Last-Event-ID `{text}` was not sent by this job's stream; send the id of the last event received unchanged"
        ))
    };
    let resume = match last_event_id(&headers) {
        None => None,
        Some(text) => {
            let position = StreamPosition::decode(text).map_err(|InvalidPosition| invalid(text))?;
            Some((text, position))
        }
    };

    // The follower subscribes to live chunks before the steps are listed, so
    // a step that starts in between is listed by its first catch-up.
    let mut follower = Follower::new(
        follower_parts(&state, &job),
        Scope::Job,
        vec![FollowedLog::new(LogTarget::coordinator())],
    );
    follower.add_steps(&state.store.list_steps(&job.id).await?);
    if let Some((text, position)) = resume {
        follower
            .resume(&position)
            .map_err(|InvalidPosition| invalid(text))?;
    }
    Ok(spawn_stream(&state, follower))
}

fn follower_parts(state: &AppState, job: &JobRecord) -> FollowerParts {
    FollowerParts {
        store: state.store.clone(),
        engine: state.engine.clone(),
        dir: state.data.job_logs_dir(&job.id),
        job: job.id.clone(),
        shutdown: state.shutdown.clone(),
    }
}

fn spawn_stream(
    state: &AppState,
    follower: Follower,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    tokio::spawn(follower.run(sender));

    let guard = state.metrics.sse_client(SseKind::Logs);
    let events = ReceiverStream::new(receiver).map(move |event| {
        let _counted = &guard;
        Ok(event)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    // A value that is not visible ASCII reads as an empty id, which no
    // stream sends, so it is rejected as invalid.
    headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("").trim())
}

/// Lists the job's steps by id, the order of its logs after the
/// coordinator's.
async fn sorted_steps(store: &Store, job: &JobRecord) -> Result<Vec<StepRecord>, ApiError> {
    let mut steps = store.list_steps(&job.id).await?;
    steps.sort_by_key(|step| step.id);
    Ok(steps)
}

/// Finds the log of the step `step_id`, or else of the first step started
/// named `step` in `task`.
async fn find_step(
    store: &Store,
    job: &JobRecord,
    task: Option<String>,
    step: Option<String>,
    step_id: Option<i64>,
) -> Result<LogTarget, ApiError> {
    let steps = sorted_steps(store, job).await?;
    if let Some(id) = step_id {
        if task.is_some() || step.is_some() {
            return Err(ApiError::bad_request(
                "pass either `step_id` or `task` and `step`, not both",
            ));
        }
        return match steps.iter().find(|candidate| candidate.id == id) {
            Some(found) => Ok(LogTarget::step(found)),
            None => Err(ApiError::not_found(format!(
                "job `{}` has no step with id {id} (yet); the job detail lists its steps' ids",
                job.id
            ))),
        };
    }

    let (Some(task), Some(step)) = (task, step) else {
        return Err(ApiError::bad_request(
            "name a step's log with `step_id`, or with both `task` and `step`",
        ));
    };
    // Ids grow in the order steps were recorded as they started.
    match steps
        .iter()
        .find(|candidate| candidate.task == task && candidate.name == step)
    {
        Some(found) => Ok(LogTarget::step(found)),
        None => Err(ApiError::not_found(format!(
            "job `{}` has no step `{step}` in task `{task}` (yet)",
            job.id
        ))),
    }
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

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::logs::JobLogs;
    use crate::model::Stream;

    const KEYS: [LogKey; 3] = [LogKey::Coordinator, LogKey::Step(1), LogKey::Step(2)];

    /// Writes each log in `KEYS` with `sizes` bytes, each byte telling its
    /// log and offset apart from the others, and returns their bytes.
    fn write_logs(dir: &Path, sizes: [usize; 3]) -> Vec<Vec<u8>> {
        let logs = JobLogs::create(dir.to_owned()).unwrap();
        let mut written = Vec::new();
        for (number, (key, size)) in KEYS.iter().zip(sizes).enumerate() {
            let bytes: Vec<u8> = (0..size)
                .map(|offset| b'a' + u8::try_from(number * 7 + offset % 7).unwrap())
                .collect();
            let mut writer = logs.writer(*key).unwrap();
            // Several chunks, so that pages also stop inside one.
            for piece in bytes.chunks(6) {
                writer.write(Stream::Stdout, piece).unwrap();
            }
            writer.finish().unwrap();
            written.push(bytes);
        }
        written
    }

    fn page_bytes(page: &Page) -> Vec<(LogKey, Vec<u8>)> {
        page.logs
            .iter()
            .flat_map(|(index, chunks)| {
                chunks
                    .iter()
                    .map(move |chunk| (KEYS[*index], chunk.data.to_vec()))
            })
            .collect()
    }

    fn first() -> PageCursor {
        PageCursor {
            key: LogKey::Coordinator,
            offset: 0,
        }
    }

    #[test]
    fn page_stops_at_budget_inside_a_log() {
        let dir = tempfile::tempdir().unwrap();
        write_logs(dir.path(), [10, 50, 10]);

        let page = read_page(dir.path(), &KEYS, first(), 40).unwrap();

        let total: usize = page_bytes(&page).iter().map(|(_, bytes)| bytes.len()).sum();
        assert_eq!(total, 40);
        assert_eq!(page.logs.len(), 2);
        assert_eq!(
            page.next,
            Some(PageCursor {
                key: LogKey::Step(1),
                offset: 30
            })
        );
    }

    #[test]
    fn page_within_budget_reads_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        write_logs(dir.path(), [10, 30, 0]);

        let page = read_page(dir.path(), &KEYS, first(), 40).unwrap();
        assert_eq!(page.next, None);

        // A budget used up exactly leaves something out only if more follows.
        let page = read_page(dir.path(), &KEYS[..1], first(), 10).unwrap();
        assert_eq!(page.next, None);
        let page = read_page(dir.path(), &KEYS, first(), 10).unwrap();
        assert_eq!(
            page.next,
            Some(PageCursor {
                key: LogKey::Step(1),
                offset: 0
            })
        );
    }

    #[test]
    fn page_of_no_logs_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        let page = read_page(dir.path(), &[], first(), 40).unwrap();

        assert!(page.logs.is_empty());
        assert_eq!(page.next, None);
    }

    #[test]
    fn pages_join_up_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_logs(dir.path(), [13, 0, 29]);

        for budget in [1, 5, 6, 13, 14, 41, 42, 100] {
            let mut received: Vec<Vec<u8>> = vec![Vec::new(); 3];
            let mut cursor = first();
            let mut pages = 0;
            loop {
                let page = read_page(dir.path(), &KEYS, cursor, budget).unwrap();
                for (key, bytes) in page_bytes(&page) {
                    let index = KEYS.iter().position(|known| *known == key).unwrap();
                    received[index].extend(bytes);
                }
                pages += 1;
                match page.next {
                    Some(next) => cursor = PageCursor::decode(&next.encode()).unwrap(),
                    None => break,
                }
            }
            assert_eq!(received, written, "budget {budget}");
            assert_eq!(pages, 42_usize.div_ceil(budget as usize), "budget {budget}");
        }
    }
}
