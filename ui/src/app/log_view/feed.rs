//! The step's log stream, and the queue that hands its chunks to the store
//! once per animation frame.
//!
//! The stream is the browser's `EventSource` on `.../logs/stream`. After a
//! dropped connection the browser reconnects by itself and sends the last
//! event id it saw, which is the byte offset after the last chunk, so the
//! server resumes there. Chunks are decoded into the store in animation
//! frames, at most [`FRAME_BUDGET`] bytes a frame (or one larger chunk), so
//! that catching up on a long log leaves the page responsive between frames.

use std::collections::VecDeque;

use leptos::logging::warn;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use super::{LogState, Phase};
use crate::api::Chunk;
use crate::app::client;
use crate::logtext::{Stream, chunk_bytes};

/// Raw bytes decoded into the store per animation frame at most.
const FRAME_BUDGET: usize = 2 << 20;

/// Chunks received and not yet in the store.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    /// Offset of the byte after the last one queued.
    next_offset: u64,
    frame_scheduled: bool,
    /// The `end` event came, so the log ends once the queue drains.
    ended: bool,
}

impl Queue {
    /// Queues the chunk that starts at byte `offset`, dropping any bytes
    /// already queued. Returns the number of bytes missing before it, which
    /// is 0 unless the server skipped some.
    fn push(&mut self, offset: u64, stream: Stream, mut bytes: Vec<u8>) -> u64 {
        let end = offset + bytes.len() as u64;
        if end <= self.next_offset {
            return 0;
        }
        let gap = offset.saturating_sub(self.next_offset);
        if offset < self.next_offset {
            let seen = usize::try_from(self.next_offset - offset)
                .expect("the seen prefix is shorter than the chunk, which is in memory");
            bytes.drain(..seen);
        }
        self.next_offset = end;
        self.chunks.push_back((stream, bytes));
        gap
    }

    /// Takes queued chunks up to [`FRAME_BUDGET`] bytes, at least one.
    fn take_batch(&mut self) -> Vec<(Stream, Vec<u8>)> {
        let mut batch = Vec::new();
        let mut size = 0;
        while let Some((_, bytes)) = self.chunks.front() {
            if size > 0 && size + bytes.len() > FRAME_BUDGET {
                break;
            }
            size += bytes.len();
            batch.extend(self.chunks.pop_front());
        }
        batch
    }
}

/// The open stream; dropping it closes the connection.
struct Feed {
    source: EventSource,
    _listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Opens the stream of step `step` of task `task` in job `job_id`, or of
/// the script's own output when both are empty, feeding `state` until the
/// viewer goes away.
///
/// Browsers open at most six HTTP/1.1 connections to one server, and each
/// open stream holds one. So a tab that is hidden closes its stream and, when
/// shown again, reopens it from the first byte it has not received.
pub(super) fn open(state: LogState, job_id: &str, task: &str, step: &str) {
    let query = if task.is_empty() && step.is_empty() {
        String::new()
    } else {
        format!(
            "task={}&step={}&",
            client::query_value(task),
            client::query_value(step)
        )
    };
    let job = client::query_value(job_id);
    let urls = Urls {
        stream: format!("/api/v1/jobs/{job}/logs/stream?{query}"),
        // Asked when the stream fails: a plain request returns the reason.
        read: format!("/api/v1/jobs/{job}/logs?{query}limit=1"),
    };
    let queue = StoredValue::new(Queue::default());
    let feed = StoredValue::new_local(connect(state, queue, &urls, 0));

    // The event bubbles from the document to the window.
    let visibility = window_event_listener_untyped("visibilitychange", move |_| {
        let hidden = document().hidden();
        let ended = queue.try_with_value(|queue| queue.ended).unwrap_or(true);
        if ended
            || matches!(
                state.phase.try_get_untracked(),
                Some(Phase::Failed(_)) | None
            )
        {
            return;
        }
        if hidden {
            feed.try_update_value(|feed| *feed = None);
            return;
        }
        let open = feed.try_with_value(Option::is_some).unwrap_or(true);
        if !open {
            let offset = queue.with_value(|queue| queue.next_offset);
            let reopened = connect(state, queue, &urls, offset);
            feed.try_update_value(|feed| *feed = reopened);
        }
    });
    on_cleanup(move || {
        visibility.remove();
        feed.try_update_value(|feed| *feed = None);
    });
}

/// Where one log is streamed from and read.
struct Urls {
    /// Ends in `?` or `&`, ready for more parameters.
    stream: String,
    read: String,
}

/// Opens the stream from byte `offset` and wires its events to `queue`.
fn connect(state: LogState, queue: StoredValue<Queue>, urls: &Urls, offset: u64) -> Option<Feed> {
    let source = match EventSource::new(&format!("{}offset={offset}", urls.stream)) {
        Ok(source) => source,
        Err(_) => {
            state.phase.set(Phase::Failed(
                "This browser cannot open the log stream (EventSource failed).".to_owned(),
            ));
            return None;
        }
    };
    let mut listeners = Vec::new();

    listen(&source, "chunk", &mut listeners, move |event| {
        receive_chunk(state, queue, event.unchecked_ref::<MessageEvent>());
    });
    let closer = source.clone();
    listen(&source, "end", &mut listeners, move |_| {
        // Closed at once: left open, the browser would reconnect after the
        // server ends the response.
        closer.close();
        queue.update_value(|queue| queue.ended = true);
        schedule_frame(state, queue);
    });
    let watched = source.clone();
    let read_url = urls.read.clone();
    listen(&source, "error", &mut listeners, move |_| {
        if watched.ready_state() == EventSource::CLOSED {
            report_failure(state, read_url.clone());
        } else if state.phase.get_untracked() != Phase::Ended {
            state.phase.set(Phase::Reconnecting);
        }
    });
    listen(&source, "open", &mut listeners, move |_| {
        if state.phase.get_untracked() == Phase::Reconnecting {
            state.phase.set(Phase::Streaming);
        }
    });

    Some(Feed {
        source,
        _listeners: listeners,
    })
}

fn listen(
    source: &EventSource,
    name: &str,
    listeners: &mut Vec<Closure<dyn FnMut(web_sys::Event)>>,
    handler: impl FnMut(web_sys::Event) + 'static,
) {
    let closure = Closure::<dyn FnMut(web_sys::Event)>::new(handler);
    if source
        .add_event_listener_with_callback(name, closure.as_ref().unchecked_ref())
        .is_ok()
    {
        listeners.push(closure);
    }
}

fn receive_chunk(state: LogState, queue: StoredValue<Queue>, message: &MessageEvent) {
    let Some(text) = message.data().as_string() else {
        return;
    };
    let chunk = match serde_json::from_str::<Chunk>(&text) {
        Ok(chunk) => chunk,
        Err(err) => {
            warn!("log view skipped a chunk it cannot read: {err}");
            return;
        }
    };
    let (stream, bytes) = match chunk_bytes(&chunk) {
        Ok(decoded) => decoded,
        Err(err) => {
            warn!("log view skipped a chunk: {err}");
            return;
        }
    };
    let Some(gap) = queue.try_update_value(|queue| queue.push(chunk.offset, stream, bytes)) else {
        return;
    };
    if gap > 0 {
        warn!(
            "log view is missing {gap} bytes before offset {}",
            chunk.offset
        );
    }
    schedule_frame(state, queue);
}

fn schedule_frame(state: LogState, queue: StoredValue<Queue>) {
    let first = queue
        .try_update_value(|queue| !std::mem::replace(&mut queue.frame_scheduled, true))
        .unwrap_or(false);
    if first {
        request_animation_frame(move || flush(state, queue));
    }
}

/// Moves one frame's worth of queued chunks into the store.
fn flush(state: LogState, queue: StoredValue<Queue>) {
    let Some(batch) = queue.try_update_value(|queue| {
        queue.frame_scheduled = false;
        queue.take_batch()
    }) else {
        return;
    };
    let old_lines = state.lines.get_untracked();
    state.store.update_value(|store| {
        for (stream, bytes) in &batch {
            store.push(*stream, bytes);
        }
    });
    state.after_append(old_lines);

    let (more, ended) = queue.with_value(|queue| (!queue.chunks.is_empty(), queue.ended));
    if more {
        schedule_frame(state, queue);
    } else if ended {
        state.phase.set(Phase::Ended);
    }
}

/// Shows why the stream failed, as the API words it.
fn report_failure(state: LogState, read_url: String) {
    spawn_local(async move {
        let message = match client::get::<serde_json::Value>(&read_url).await {
            Err(failure) => failure.message,
            Ok(_) => "The log stream closed unexpectedly. Reload the page to try again.".to_owned(),
        };
        state.phase.try_set(Phase::Failed(message));
    });
}
