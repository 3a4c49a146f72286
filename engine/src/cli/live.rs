//! The live view of `danube run`: step states and logs prefixed by task and
//! step, with spinners for running steps on a terminal and plain lines
//! otherwise.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::logs::{LogChunk, LogKey};
use crate::model::{JobId, JobState, RunState, Stream};
use crate::orchestrator::{JobEvent, JobHandle, JobOutcome};

use super::debug::DebugPrompt;
use super::format_duration;
use super::signals::Interrupts;

/// A partial line is shown once it has waited this long for its newline.
const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(300);

/// A line longer than this is shown in pieces rather than held in memory.
const MAX_HELD_LINE: usize = 64 * 1024;

struct PendingLine {
    text: Vec<u8>,
    since: Instant,
}

pub struct LiveView {
    pub job_id: JobId,
    interactive: bool,
    bars: MultiProgress,
    running: HashMap<i64, ProgressBar>,
    labels: HashMap<LogKey, String>,
    pending: HashMap<(LogKey, Stream), PendingLine>,
    /// Output of steps whose start event has not been handled yet, shown
    /// after their `▶` line.
    early: Vec<LogChunk>,
    started: Instant,
}

impl LiveView {
    pub fn new(job_id: JobId, interactive: bool) -> LiveView {
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let mut labels = HashMap::new();
        labels.insert(LogKey::Coordinator, "coordinator".to_owned());
        LiveView {
            job_id,
            interactive,
            bars: MultiProgress::with_draw_target(target),
            running: HashMap::new(),
            labels,
            pending: HashMap::new(),
            early: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Shows the job until it ends. With `interrupts`, the first Ctrl-C or
    /// SIGTERM cancels the job and the view then waits for the cancellation
    /// to finish; without, the caller handles signals. A pause for debugging
    /// hands the terminal to [`DebugPrompt`] until the user decides.
    pub async fn follow(
        &mut self,
        mut handle: JobHandle,
        mut interrupts: Option<&mut Interrupts>,
    ) -> JobOutcome {
        self.line(&format!("job {} started", self.job_id));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut cancelled = false;
        let mut prompt = DebugPrompt::new();

        loop {
            // Events go first so a step's name is known before its output.
            tokio::select! {
                biased;
                event = handle.events.recv() => match event {
                    Ok(JobEvent::JobState { state, .. }) if state.is_final() => break,
                    Ok(JobEvent::Paused { pause }) => {
                        // Output that arrived before the pause goes first.
                        self.drain_chunks(&mut handle.log_chunks);
                        self.flush_partial_lines(true);
                        self.hide_bars();
                        let debugger = handle.debugger();
                        prompt.handle(&debugger, &pause, &mut interrupts, &|text| self.line(text)).await;
                        self.show_bars();
                    }
                    Ok(event @ JobEvent::StepFinished { .. }) => {
                        // The step's output was published before its end,
                        // but may still wait behind it in its own channel.
                        self.drain_chunks(&mut handle.log_chunks);
                        self.on_event(event);
                    }
                    Ok(event) => self.on_event(event),
                    Err(RecvError::Lagged(count)) => {
                        self.line(&format!("({count} job events were not shown; `danube show {}` has them all)", self.job_id));
                    }
                    Err(RecvError::Closed) => break,
                },
                chunk = handle.log_chunks.recv() => match chunk {
                    Ok(chunk) => self.on_chunk(chunk),
                    Err(RecvError::Lagged(count)) => self.lagged_chunks(count),
                    Err(RecvError::Closed) => {}
                },
                name = next_signal(&mut interrupts), if !cancelled => {
                    cancelled = true;
                    self.line(&format!("received {name}: cancelling the job (stopping its processes)..."));
                    handle.cancel();
                }
                _ = tick.tick() => {
                    self.flush_partial_lines(false);
                    for bar in self.running.values() {
                        bar.tick();
                    }
                }
            }
        }

        // Output published before the final event is still queued.
        self.drain_chunks(&mut handle.log_chunks);
        for chunk in std::mem::take(&mut self.early) {
            self.show_chunk(chunk);
        }
        self.flush_partial_lines(true);
        for (_, bar) in self.running.drain() {
            bar.finish_and_clear();
        }
        handle.wait().await
    }

    fn on_event(&mut self, event: JobEvent) {
        match event {
            JobEvent::JobState { state, reason } => {
                if state == JobState::Running {
                    return;
                }
                if state == JobState::Scheduling {
                    self.line("preparing the workspace and loading danubefile.py");
                    return;
                }
                let text = match reason {
                    Some(reason) => format!("job {state}: {reason}"),
                    None => format!("job {state}"),
                };
                self.line(&text);
            }
            JobEvent::PlanDeclared { pipeline, tasks } => {
                let names: Vec<&str> = tasks.iter().map(|task| task.name.as_str()).collect();
                self.line(&format!(
                    "pipeline {pipeline}: {} task{} ({})",
                    tasks.len(),
                    if tasks.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ));
            }
            JobEvent::TaskState { task, state } => {
                if matches!(
                    state,
                    RunState::Pending | RunState::Running | RunState::Success
                ) {
                    return;
                }
                self.line(&format!("{} task {task} {state}", symbol(state)));
            }
            JobEvent::StepStarted {
                step_id,
                task,
                name,
            } => {
                let label = format!("{task} › {name}");
                let key = LogKey::Step(step_id);
                self.labels.insert(key, label.clone());
                self.line(&format!("▶ {label}"));
                let (held, others) = std::mem::take(&mut self.early)
                    .into_iter()
                    .partition(|chunk| chunk.key == key);
                self.early = others;
                for chunk in held {
                    self.show_chunk(chunk);
                }
                if self.interactive {
                    let bar = self.bars.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .expect("the spinner template is valid"),
                    );
                    bar.set_message(label);
                    self.running.insert(step_id, bar);
                }
            }
            JobEvent::StepFinished {
                step_id,
                state,
                exit_code,
                duration_ms,
                ..
            } => {
                let key = LogKey::Step(step_id);
                for stream in [Stream::Stdout, Stream::Stderr, Stream::Engine] {
                    self.flush_line(key, stream);
                }
                if let Some(bar) = self.running.remove(&step_id) {
                    bar.finish_and_clear();
                }
                let label = self.labels.get(&key).cloned().unwrap_or_default();
                let exit = exit_code
                    .map(|code| format!(" (exit {code})"))
                    .unwrap_or_default();
                self.line(&format!(
                    "{} {label} {state}{exit} in {}",
                    symbol(state),
                    format_duration(duration_ms)
                ));
            }
            JobEvent::ArtifactStored { name, size_bytes } => {
                self.line(&format!("artifact {name} stored ({size_bytes} bytes)"));
            }
            JobEvent::Notice { message } => self.line(&message),
            // `follow` hands pauses to the prompt, which shows the decision.
            JobEvent::Paused { .. } | JobEvent::Resumed { .. } => {}
        }
    }

    /// Takes the spinners off the terminal while a debug shell or question
    /// uses it.
    fn hide_bars(&self) {
        if self.interactive {
            let _ = self.bars.clear();
            self.bars.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    fn show_bars(&self) {
        if self.interactive {
            self.bars.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Shows the log chunks already queued, so that what comes next is
    /// printed after them.
    fn drain_chunks(&mut self, chunks: &mut broadcast::Receiver<LogChunk>) {
        loop {
            match chunks.try_recv() {
                Ok(chunk) => self.on_chunk(chunk),
                Err(broadcast::error::TryRecvError::Lagged(count)) => self.lagged_chunks(count),
                Err(_) => return,
            }
        }
    }

    fn lagged_chunks(&self, count: u64) {
        self.line(&format!(
            "({count} log chunks were not shown; `danube logs {}` has them all)",
            self.job_id
        ));
    }

    /// Shows `chunk`, or keeps it until its step's start event names the
    /// step: draining the channel can reach a step's output before that
    /// event.
    fn on_chunk(&mut self, chunk: LogChunk) {
        if matches!(chunk.key, LogKey::Step(_)) && !self.labels.contains_key(&chunk.key) {
            self.early.push(chunk);
        } else {
            self.show_chunk(chunk);
        }
    }

    /// Shows the complete lines of `chunk` and holds back its partial last
    /// line. The lines go out in one write: a step can print millions of
    /// lines, and a write (and a lock) per line would cost the engine more
    /// CPU than storing them.
    fn show_chunk(&mut self, chunk: LogChunk) {
        let slot = (chunk.key, chunk.stream);
        // Borrows only `labels`, so that `pending` can change below.
        let label = label_of(&self.labels, chunk.key);
        let mut block = Vec::new();
        let mut data: &[u8] = &chunk.data;

        if let Some(newline) = find_newline(data) {
            // Only the first line can complete a line held back earlier.
            match self.pending.remove(&slot) {
                Some(mut pending) => {
                    pending.text.extend_from_slice(&data[..newline]);
                    render_line(&mut block, label, chunk.stream, &pending.text);
                }
                None => render_line(&mut block, label, chunk.stream, &data[..newline]),
            }
            data = &data[newline + 1..];
            if let Some(last) = data.iter().rposition(|byte| *byte == b'\n') {
                render_lines(&mut block, label, chunk.stream, &data[..last]);
                data = &data[last + 1..];
            }
            self.write_block(&block);
        }

        if !data.is_empty() {
            let pending = self.pending.entry(slot).or_insert_with(|| PendingLine {
                text: Vec::new(),
                since: Instant::now(),
            });
            pending.text.extend_from_slice(data);
            if pending.text.len() > MAX_HELD_LINE {
                self.flush_line(chunk.key, chunk.stream);
            }
        }
    }

    fn flush_partial_lines(&mut self, all: bool) {
        let due: Vec<(LogKey, Stream)> = self
            .pending
            .iter()
            .filter(|(_, line)| all || line.since.elapsed() >= PARTIAL_LINE_DELAY)
            .map(|(slot, _)| *slot)
            .collect();
        for (key, stream) in due {
            self.flush_line(key, stream);
        }
    }

    fn flush_line(&mut self, key: LogKey, stream: Stream) {
        if let Some(pending) = self.pending.remove(&(key, stream)) {
            self.log_line(key, stream, &pending.text);
        }
    }

    fn log_line(&self, key: LogKey, stream: Stream, line: &[u8]) {
        let mut block = Vec::new();
        render_line(&mut block, label_of(&self.labels, key), stream, line);
        self.write_block(&block);
    }

    fn line(&self, text: &str) {
        if self.interactive {
            self.bars.suspend(|| {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            });
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    /// Writes lines that each end in a newline, in one write.
    fn write_block(&self, block: &[u8]) {
        let write = || {
            let _ = std::io::stdout().lock().write_all(block);
        };
        if self.interactive {
            self.bars.suspend(write);
        } else {
            write();
        }
    }

    pub fn print_result(&self, outcome: &JobOutcome) {
        let elapsed =
            format_duration(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX));
        if outcome.load_error {
            let _ = writeln!(
                std::io::stderr(),
                "error: the pipeline could not be loaded, so nothing ran:"
            );
            if let Some(reason) = &outcome.reason {
                let _ = writeln!(std::io::stderr(), "{reason}");
            }
            return;
        }
        let mut text = format!("job {} {} in {elapsed}", self.job_id, outcome.state);
        if let Some(reason) = outcome
            .reason
            .as_ref()
            .filter(|_| outcome.state != JobState::Success)
        {
            text.push_str(": ");
            text.push_str(reason);
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        if outcome.state != JobState::Success {
            let _ = writeln!(out, "logs: danube logs {}", self.job_id.short());
        }
    }
}

/// Waits for the next signal, or forever without `interrupts`.
pub(super) async fn next_signal(interrupts: &mut Option<&mut Interrupts>) -> &'static str {
    match interrupts {
        Some(interrupts) => interrupts.next().await,
        None => std::future::pending().await,
    }
}

fn label_of(labels: &HashMap<LogKey, String>, key: LogKey) -> &str {
    labels.get(&key).map(String::as_str).unwrap_or("?")
}

fn find_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|byte| *byte == b'\n')
}

/// Appends each line of `lines` (separated by `\n`, without a final one)
/// as [`render_line`] does.
fn render_lines(out: &mut Vec<u8>, label: &str, stream: Stream, lines: &[u8]) {
    match std::str::from_utf8(lines) {
        // The common case, checked once for the whole chunk instead of per line.
        Ok(text) if !text.contains('\r') => {
            let prefix_len = label.len() + marker(stream).len() + 2;
            out.reserve(lines.len() + lines.len() / 4 + prefix_len);
            for line in text.split('\n') {
                push_line(out, label, stream, line);
            }
        }
        _ => {
            for line in lines.split(|byte| *byte == b'\n') {
                render_line(out, label, stream, line);
            }
        }
    }
}

/// Appends `label marker text` and a newline to `out`. Invalid UTF-8 is
/// shown as U+FFFD, and of a line that a progress bar redrew with `\r` only
/// the last frame is shown, as a terminal would.
fn render_line(out: &mut Vec<u8>, label: &str, stream: Stream, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let text = text.rsplit('\r').next().unwrap_or(text);
    push_line(out, label, stream, text);
}

fn push_line(out: &mut Vec<u8>, label: &str, stream: Stream, text: &str) {
    out.extend_from_slice(label.as_bytes());
    out.push(b' ');
    out.extend_from_slice(marker(stream).as_bytes());
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'\n');
}

fn marker(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "│",
        Stream::Stderr => "┃",
        Stream::Engine => "»",
    }
}

fn symbol(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "·",
        RunState::Running => "▶",
        RunState::Success => "✓",
        RunState::Failure => "✗",
        RunState::Skipped => "↷",
        RunState::Timeout => "⏱",
        RunState::Cancelled => "⊘",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(lines: &[u8]) -> String {
        let mut out = Vec::new();
        render_lines(&mut out, "build › test", Stream::Stdout, lines);
        String::from_utf8(out).expect("rendered lines are UTF-8")
    }

    #[test]
    fn lines_get_label_and_marker() {
        assert_eq!(
            rendered(b"one\n\ntwo"),
            "build › test │ one\nbuild › test │\nbuild › test │ two\n"
        );
    }

    #[test]
    fn carriage_return_keeps_last_frame() {
        assert_eq!(
            rendered(b"plain\n10%\r50%\r100%\r\nafter"),
            "build › test │ plain\nbuild › test │ 100%\nbuild › test │ after\n"
        );
    }

    #[test]
    fn invalid_utf8_replaced_per_line() {
        assert_eq!(
            rendered(b"caf\xc3\xa9\nbad \xff byte\nok"),
            "build › test │ café\nbuild › test │ bad \u{fffd} byte\nbuild › test │ ok\n"
        );
    }
}
