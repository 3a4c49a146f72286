//! Sending logs to one SSE client: the stored bytes from the client's
//! position on, then live chunks, until the logs are final.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use axum::response::sse::Event;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::LogTarget;
use super::position::{InvalidPosition, StreamPosition};
use crate::logs::{LogChunk, LogKey, read_log_range};
use crate::model::JobId;
use crate::orchestrator::{Engine, EngineEvent, JobEvent};
use crate::store::{StepRecord, Store};

/// Bytes read from disk per SSE event when catching up.
const DISK_PIECE: u64 = 64 << 10;

/// Events buffered per SSE client. When a client reads slower than the job
/// writes, the follower waits on this buffer without holding on to the live
/// channel, and catches up from disk later. So a slow client costs neither
/// the job nor memory beyond this buffer.
pub const SSE_BUFFER: usize = 16;

/// How often a follower rereads the disk and the logs' states without a
/// live notification: for jobs another process runs, and as a safety net.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The logs a follower sends, and the form of its events' ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One log. An event's id is the byte offset after its chunk, and the
    /// stream ends when the log's step (for the coordinator's log, the job)
    /// is final.
    One,
    /// Every log of the job, the coordinator's and each step's, including
    /// steps that start later. An event's id is the [`StreamPosition`] after
    /// its chunk, and the stream ends when the job is final.
    Job,
}

/// One log that a follower sends.
pub struct FollowedLog {
    pub target: LogTarget,
    /// Offset of the next byte to send.
    pub position: u64,
    /// Final and sent to its end.
    pub complete: bool,
}

impl FollowedLog {
    pub fn new(target: LogTarget) -> FollowedLog {
        FollowedLog {
            target,
            position: 0,
            complete: false,
        }
    }
}

/// The server's parts that a follower uses.
pub struct FollowerParts {
    pub store: Store,
    pub engine: Engine,
    pub dir: PathBuf,
    pub job: JobId,
    /// Cancelled once the jobs of a stopping server are final.
    pub shutdown: CancellationToken,
}

/// Sends logs to one SSE client.
pub struct Follower {
    parts: FollowerParts,
    scope: Scope,
    /// `None` when this engine does not run the job (it is over, or another
    /// process runs it); the follower then polls the disk.
    live: Option<broadcast::Receiver<LogChunk>>,
    events: Option<broadcast::Receiver<EngineEvent>>,
    /// Sorted by key: the coordinator's log, then steps by id.
    logs: Vec<FollowedLog>,
    index: HashMap<LogKey, usize>,
}

/// The client went away.
pub struct Disconnected;

/// The job's and its steps' states, read before the logs.
struct States {
    job_final: bool,
    steps: Vec<StepRecord>,
    final_steps: HashSet<i64>,
}

impl States {
    /// Returns whether nothing more is written to the log `key`. When the
    /// job is final every log is, even that of a step recorded as running
    /// by an engine that died.
    fn is_final(&self, key: LogKey) -> bool {
        match key {
            LogKey::Coordinator => self.job_final,
            LogKey::Step(id) => self.job_final || self.final_steps.contains(&id),
        }
    }
}

impl Follower {
    /// Subscribes to the job's live chunks and events. It does so before
    /// anything is read from disk: a chunk written after this point arrives
    /// live, and one written before it is on disk, so nothing is missed.
    pub fn new(parts: FollowerParts, scope: Scope, logs: Vec<FollowedLog>) -> Follower {
        let live = parts.engine.subscribe_logs(&parts.job);
        let events = Some(parts.engine.subscribe());
        let mut follower = Follower {
            parts,
            scope,
            live,
            events,
            logs,
            index: HashMap::new(),
        };
        follower.sort_logs();
        follower
    }

    /// Adds the logs of `steps` that are not followed yet (for
    /// [`Scope::Job`]).
    pub fn add_steps(&mut self, steps: &[StepRecord]) {
        let before = self.logs.len();
        for step in steps {
            let key = LogKey::Step(step.id);
            if !self.index.contains_key(&key) {
                self.index.insert(key, self.logs.len());
                self.logs.push(FollowedLog::new(LogTarget {
                    key,
                    task: Some(step.task.clone()),
                    step: Some(step.name.clone()),
                }));
            }
        }
        if self.logs.len() != before {
            self.sort_logs();
        }
    }

    /// Starts each log at the client's position in `position`.
    ///
    /// # Errors
    ///
    /// When `position` names a log that the job does not have (yet).
    pub fn resume(&mut self, position: &StreamPosition) -> Result<(), InvalidPosition> {
        for log in &mut self.logs {
            log.complete = position.is_complete(log.target.key);
        }
        for (key, offset) in &position.partial {
            let index = *self.index.get(key).ok_or(InvalidPosition)?;
            self.logs[index].position = *offset;
        }
        Ok(())
    }

    fn sort_logs(&mut self) {
        self.logs.sort_by_key(|log| log.target.key);
        self.index = self
            .logs
            .iter()
            .enumerate()
            .map(|(index, log)| (log.target.key, index))
            .collect();
    }

    pub async fn run(mut self, sender: mpsc::Sender<Event>) {
        let _ = self.follow(&sender).await;
    }

    async fn follow(&mut self, sender: &mpsc::Sender<Event>) -> Result<(), Disconnected> {
        let mut catch_up = true;
        loop {
            if catch_up && self.catch_up(sender).await? {
                return Ok(());
            }

            catch_up = tokio::select! {
                chunk = next_message(&mut self.live) => match chunk {
                    Ok(chunk) => !self.send_live(sender, chunk).await?,
                    // Fell behind or the job ended: the disk has every byte.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.live = None;
                        true
                    }
                },
                event = next_message(&mut self.events) => match event {
                    Ok(event) => event.job_id == self.parts.job && self.changes_logs(&event.event),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.events = None;
                        false
                    }
                },
                () = tokio::time::sleep(POLL_INTERVAL) => true,
                () = self.parts.shutdown.cancelled() => {
                    // A stopping server ends the streams once the jobs it ran
                    // are final: send what is left, and `end` if that
                    // completes the logs.
                    self.catch_up(sender).await?;
                    return Ok(());
                }
                () = sender.closed() => return Err(Disconnected),
            };
        }
    }

    /// Returns whether `event` may have made a log final or added one.
    fn changes_logs(&self, event: &JobEvent) -> bool {
        match (self.scope, event) {
            (_, JobEvent::JobState { state, .. }) => state.is_final(),
            (Scope::One, JobEvent::StepFinished { step_id, .. }) => {
                self.index.contains_key(&LogKey::Step(*step_id))
            }
            (Scope::Job, JobEvent::StepStarted { .. } | JobEvent::StepFinished { .. }) => true,
            _ => false,
        }
    }

    /// Sends the stored bytes past each log's position, marks the final logs
    /// complete, and sends `end` when the stream is over. Returns whether it
    /// is.
    async fn catch_up(&mut self, sender: &mpsc::Sender<Event>) -> Result<bool, Disconnected> {
        // The states are read before the disk: every byte of a log is stored
        // before its step or job is recorded final, so a log seen final here
        // is complete on disk below.
        let Some(states) = self.read_states().await else {
            return Ok(false);
        };
        if self.scope == Scope::Job {
            self.add_steps(&states.steps);
        }
        for index in 0..self.logs.len() {
            if self.logs[index].complete {
                continue;
            }
            let finished = states.is_final(self.logs[index].target.key);
            if self.send_from_disk(sender, index).await? && finished {
                self.logs[index].complete = true;
            }
        }

        let all_complete = self.logs.iter().all(|log| log.complete);
        let ended = match self.scope {
            Scope::One => all_complete,
            Scope::Job => states.job_final && all_complete,
        };
        if ended {
            let _ = sender.send(Event::default().event("end").data("{}")).await;
        }
        Ok(ended)
    }

    /// `None` when the store failed; the next catch-up tries again.
    async fn read_states(&self) -> Option<States> {
        let job = &self.parts.job;
        let read = async {
            let job_final = self
                .parts
                .store
                .find_job(job.as_str())
                .await?
                .state
                .is_final();
            let steps = self.parts.store.list_steps(job).await?;
            Ok::<_, crate::store::StoreError>((job_final, steps))
        };
        match read.await {
            Ok((job_final, steps)) => {
                let final_steps = steps
                    .iter()
                    .filter(|step| step.state.is_final())
                    .map(|step| step.id)
                    .collect();
                Some(States {
                    job_final,
                    steps,
                    final_steps,
                })
            }
            Err(err) => {
                tracing::warn!(job_id = %job, error = %err, "log stream failed to read the job's state; retrying");
                None
            }
        }
    }

    /// Sends a live chunk, or the part of it after the log's position.
    /// Returns `false` when the disk must be read first: the chunk starts
    /// past the position, or it belongs to a step not followed yet.
    async fn send_live(
        &mut self,
        sender: &mpsc::Sender<Event>,
        chunk: LogChunk,
    ) -> Result<bool, Disconnected> {
        let Some(&index) = self.index.get(&chunk.key) else {
            return Ok(self.scope == Scope::One);
        };
        let log = &self.logs[index];
        let end = chunk.offset + chunk.data.len() as u64;
        if log.complete || end <= log.position {
            return Ok(true);
        }
        if chunk.offset > log.position {
            return Ok(false);
        }
        let skip = usize::try_from(log.position - chunk.offset)
            .expect("a skipped prefix is shorter than the chunk, which is in memory");
        let tail = LogChunk {
            offset: log.position,
            data: chunk.data.slice(skip..),
            ..chunk
        };
        self.send(sender, index, &tail).await?;
        Ok(true)
    }

    /// Sends the stored bytes of log `index` from its position on. Returns
    /// `false` when a read failed, so the log may have more.
    async fn send_from_disk(
        &mut self,
        sender: &mpsc::Sender<Event>,
        index: usize,
    ) -> Result<bool, Disconnected> {
        loop {
            let dir = self.parts.dir.clone();
            let key = self.logs[index].target.key;
            let position = self.logs[index].position;
            let read = tokio::task::spawn_blocking(move || {
                read_log_range(&dir, key, position, DISK_PIECE)
            })
            .await;
            let chunks = match read {
                Ok(Ok(chunks)) => chunks,
                Ok(Err(err)) => {
                    tracing::warn!(job_id = %self.parts.job, error = %err, "log stream failed to read the stored log; retrying");
                    return Ok(false);
                }
                Err(err) => {
                    tracing::warn!(job_id = %self.parts.job, error = %err, "log stream's disk read did not finish; retrying");
                    return Ok(false);
                }
            };
            if chunks.is_empty() {
                return Ok(true);
            }
            for chunk in &chunks {
                self.send(sender, index, chunk).await?;
            }
        }
    }

    async fn send(
        &mut self,
        sender: &mpsc::Sender<Event>,
        index: usize,
        chunk: &LogChunk,
    ) -> Result<(), Disconnected> {
        if chunk.data.is_empty() {
            return Ok(());
        }
        // The position moves before the id is made, because the id is the
        // client's position after this chunk. If the send fails the
        // follower stops, so the moved position is never used.
        let end = chunk.offset + chunk.data.len() as u64;
        self.logs[index].position = end;
        let id = match self.scope {
            Scope::One => end.to_string(),
            Scope::Job => stream_position(&self.logs).encode(),
        };
        let body = serde_json::to_string(&self.logs[index].target.chunk(chunk))
            .expect("a chunk of strings and numbers serializes");
        let event = Event::default().event("chunk").id(id).data(body);

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
                    self.live = self.parts.engine.subscribe_logs(&self.parts.job);
                }
                permit
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Disconnected),
        };
        permit.send(event);
        Ok(())
    }
}

/// Returns the position in `logs` (sorted by key) of a client that received
/// the chunks sent so far.
fn stream_position(logs: &[FollowedLog]) -> StreamPosition {
    let mut position = StreamPosition::default();
    // A run of complete steps, in key order, becomes one range.
    let mut run: Option<(i64, i64)> = None;
    for log in logs {
        match (log.target.key, log.complete) {
            (LogKey::Coordinator, true) => position.coordinator_complete = true,
            (LogKey::Step(id), true) => {
                run = Some(run.map_or((id, id), |(first, _)| (first, id)));
                continue;
            }
            (key, false) if log.position > 0 => position.partial.push((key, log.position)),
            _ => {}
        }
        if let Some((first, last)) = run.take() {
            position.complete_steps.push(first..=last);
        }
    }
    if let Some((first, last)) = run {
        position.complete_steps.push(first..=last);
    }
    position
}

/// Receives the next message of a channel; never resolves without one.
async fn next_message<T: Clone>(
    receiver: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(key: LogKey, position: u64, complete: bool) -> FollowedLog {
        FollowedLog {
            target: LogTarget {
                key,
                task: None,
                step: None,
            },
            position,
            complete,
        }
    }

    #[test]
    fn stream_position_joins_complete_steps_into_ranges() {
        let logs = [
            log(LogKey::Coordinator, 30, false),
            log(LogKey::Step(3), 10, true),
            log(LogKey::Step(5), 0, true),
            log(LogKey::Step(9), 4, true),
            log(LogKey::Step(10), 0, false),
            log(LogKey::Step(11), 7, false),
            log(LogKey::Step(12), 1, true),
        ];

        let position = stream_position(&logs);

        assert_eq!(position.encode(), "3-9,12/c:30,11:7");
        assert!(!position.is_complete(LogKey::Step(10)));
    }

    #[test]
    fn stream_position_of_nothing_sent_is_empty() {
        let logs = [
            log(LogKey::Coordinator, 0, false),
            log(LogKey::Step(1), 0, false),
        ];

        assert_eq!(stream_position(&logs).encode(), "/");
    }
}
