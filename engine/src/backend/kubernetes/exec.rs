//! Running one step as an exec of `danube-supervisor run` and following it
//! to its end, across dropped exec connections.
//!
//! The step's request (command, workdir, environment) is the first line of
//! the exec's stdin, so no secret reaches the exec URL, which API servers
//! write to their audit log. Stdout and stderr arrive on their own channels
//! and the exit code on the status channel.
//!
//! A connection that closes without a status (an API server restart, a load
//! balancer timeout) is never read as success. The engine asks the
//! supervisor for the step's state with `status`, and when the step started
//! it reattaches with `attach`, resuming output from the byte offsets it had
//! received. It gives up after [`REATTACH_ATTEMPTS`] and fails the step with
//! the reason. Timeout and cancel send the supervisor a cancel byte, which
//! kills the step's whole process group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, SimplexStream, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::error::KubeError;
use super::lifecycle::{self, Observed};
use super::pod::SUPERVISOR_PATH;
use super::retry;
use crate::backend::local::step::format_duration;
use crate::backend::{OutputChunk, StepOutcome};
use crate::model::Stream;

/// The byte that makes the supervisor kill the step (ASCII CAN).
const CANCEL: u8 = 0x18;

/// Reattach attempts after a dropped connection before the step fails.
pub const REATTACH_ATTEMPTS: u32 = 6;

/// How long a stopped step may take to report its end: the supervisor's
/// two seconds between SIGTERM and SIGKILL, plus the round trip.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// How long a step killed by a signal waits for the pod watch to say
/// whether the container itself was killed (an OOM kill, an eviction), whose
/// Kubernetes reason is more useful than the bare exit code.
const POD_REPORT_GRACE: Duration = Duration::from_secs(2);

/// How long a step's connection may deliver nothing before the engine
/// queries the supervisor, over another exec, for output or an exit.
/// The wait doubles while the step is merely silent, up to
/// [`MAX_PROBE_INTERVAL`], so a long quiet step costs few requests.
const PROBE_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Maximum wait between two probes of a silent step.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// How long output or an exit that the supervisor recorded may take to
/// arrive before the connection counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(2);

/// How long the output pumps may take to finish after a connection closed
/// without a status. kube-rs leaves their streams open when the WebSocket
/// fails with an error, so waiting for their end could last forever.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Buffer of each exec stream; kube's default of 1 KiB makes large output slow.
const STREAM_BUFFER: usize = 64 * 1024;

/// The container a step runs in.
#[derive(Clone)]
pub struct ExecTarget {
    pub api: Api<Pod>,
    pub pod: String,
    pub container: String,
}

/// One step to run through the supervisor.
pub struct StepRun {
    pub target: ExecTarget,
    /// The step's name, for messages.
    pub step: String,
    /// The supervisor's step id, unique within the pod.
    pub id: String,
    /// The JSON request line, newline included. It holds the environment,
    /// secrets included, so it is wiped when dropped.
    pub request: Zeroizing<Vec<u8>>,
    pub timeout: Option<Duration>,
    pub pod_state: watch::Receiver<Observed>,
    /// Called once the exec has started and the request was sent.
    pub on_started: Box<dyn FnOnce() + Send + Sync>,
}

/// Why the engine asked the step to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopRequest {
    TimedOut,
    Cancelled,
}

/// How one exec connection ended.
enum Ending {
    Status(Box<Status>),
    /// The connection closed without a status.
    Dropped,
    /// The connection is open but delivers nothing, while the supervisor
    /// recorded output or an exit that never arrived.
    Stalled,
    /// The connection went quiet and the supervisor could not be asked why.
    Unreachable(String),
    PodFailed(String),
}

/// Runs the step and returns its outcome, sending its output to `output`.
///
/// # Errors
///
/// The exec could not be started, the pod failed while the step ran, or the
/// connection dropped and the step could not be reattached.
pub async fn run_step(
    mut run: StepRun,
    output: mpsc::Sender<OutputChunk>,
    cancel: CancellationToken,
) -> Result<StepOutcome, KubeError> {
    let offsets = Offsets::default();
    let deadline = run.timeout.map(|timeout| Instant::now() + timeout);
    let mut stop = None;

    let command = vec![SUPERVISOR_PATH.to_owned(), "run".to_owned()];
    let mut session = Session::start(&run, command, &offsets, &output)
        .await
        .map_err(|source| KubeError::StartStep {
            step: run.step.clone(),
            pod: run.target.pod.clone(),
            container: run.target.container.clone(),
            source: Box::new(source),
        })?;
    if session.send(&run.request).await.is_err() {
        tracing::debug!(step_id = %run.id, "the exec closed before the request was sent");
    }
    let on_started = std::mem::replace(&mut run.on_started, Box::new(|| {}));
    on_started();

    let mut attached = false;
    loop {
        let ending = session
            .follow(&run, &offsets, deadline, &cancel, &mut stop)
            .await;
        match ending {
            Ending::PodFailed(reason) => {
                let pod = run.target.pod.clone();
                let killed =
                    lifecycle::terminated_exit_code(&run.pod_state.borrow(), &run.target.container);
                return Err(match killed {
                    Some(exit_code) => KubeError::StepKilled {
                        pod,
                        reason,
                        exit_code,
                    },
                    None => KubeError::PodFailed { pod, reason },
                });
            }
            Ending::Status(status) => {
                let code = match exit_code(&status) {
                    Ok(code) => code,
                    Err(reason) if !attached => {
                        return Err(KubeError::StepStatus {
                            step: run.step.clone(),
                            pod: run.target.pod.clone(),
                            reason,
                        });
                    }
                    Err(_) => -1,
                };
                // An `attach` exits with the recorded code, but so does its
                // own failure (125); the supervisor's record decides.
                let code = if attached {
                    match recorded_exit(&run).await {
                        Some(code) => code,
                        None => {
                            session = reattach(&run, &offsets, &output, stop).await?;
                            continue;
                        }
                    }
                } else {
                    code
                };
                if stop.is_none() && code >= 128 {
                    let failure = lifecycle::failure(run.pod_state.clone());
                    if let Ok(reason) = tokio::time::timeout(POD_REPORT_GRACE, failure).await {
                        return Err(KubeError::StepKilled {
                            pod: run.target.pod.clone(),
                            reason,
                            exit_code: code,
                        });
                    }
                }
                // The same notes as the local backend's, so that logs match.
                return Ok(match stop {
                    Some(StopRequest::TimedOut) => {
                        let after =
                            format_duration(run.timeout.expect("a timeout fired, so one was set"));
                        let note = format!(
                            "danube: step timed out after {after}; killed its process group"
                        );
                        send_note(&output, &note).await;
                        StepOutcome::TimedOut
                    }
                    Some(StopRequest::Cancelled) => {
                        send_note(&output, "danube: step cancelled; killed its process group")
                            .await;
                        StepOutcome::Cancelled
                    }
                    None => StepOutcome::Exited(code),
                });
            }
            Ending::Unreachable(reason) => {
                return Err(KubeError::StepLost {
                    step: run.step.clone(),
                    pod: run.target.pod.clone(),
                    reason: format!(
                        "its connection went quiet and its supervisor could not be reached: {reason}"
                    ),
                });
            }
            Ending::Dropped | Ending::Stalled => {
                let how = if matches!(ending, Ending::Stalled) {
                    "stalled"
                } else {
                    "dropped"
                };
                tracing::info!(
                    step_id = %run.id,
                    pod = %run.target.pod,
                    stdout_offset = offsets.stdout.load(Ordering::SeqCst),
                    stderr_offset = offsets.stderr.load(Ordering::SeqCst),
                    connection = how,
                    "exec connection lost; reattaching"
                );
                let note = format!("danube: the connection to this step {how}; reattaching");
                send_note(&output, &note).await;
                session = reattach(&run, &offsets, &output, stop).await?;
                attached = true;
            }
        }
    }
}

/// Bytes of stdout and stderr received so far, where `attach` resumes.
#[derive(Clone, Default)]
struct Offsets {
    stdout: Arc<AtomicU64>,
    stderr: Arc<AtomicU64>,
}

impl Offsets {
    fn get(&self) -> (u64, u64) {
        (
            self.stdout.load(Ordering::SeqCst),
            self.stderr.load(Ordering::SeqCst),
        )
    }
}

/// When the next liveness probe of a quiet connection is due.
struct Liveness {
    received: (u64, u64),
    next_probe: Instant,
    interval: Duration,
    /// Set when the last probe found output or an exit not yet received;
    /// a second such probe ends the connection as stalled.
    suspect: bool,
    failures: u32,
}

impl Liveness {
    fn new(offsets: &Offsets) -> Liveness {
        Liveness {
            received: offsets.get(),
            next_probe: Instant::now() + PROBE_AFTER_IDLE,
            interval: PROBE_AFTER_IDLE,
            suspect: false,
            failures: 0,
        }
    }

    /// Probes the supervisor unless output arrived since the last check,
    /// and returns how the connection ended when it is stalled or the
    /// supervisor cannot be reached.
    async fn check(&mut self, run: &StepRun, offsets: &Offsets) -> Option<Ending> {
        let received = offsets.get();
        if received != self.received {
            self.received = received;
            self.reset();
            return None;
        }

        match query_status(run).await {
            Ok(report) => {
                self.failures = 0;
                let behind = report
                    .output
                    .is_some_and(|(stdout, stderr)| stdout > received.0 || stderr > received.1);
                let ended = !matches!(report.status, SupervisorStatus::Running);
                if !(behind || ended) {
                    self.suspect = false;
                    self.interval = (self.interval * 2).min(MAX_PROBE_INTERVAL);
                    self.next_probe = Instant::now() + self.interval;
                    return None;
                }
                if self.suspect {
                    tracing::info!(step_id = %run.id, status = ?report.status, ?received, recorded = ?report.output, "exec connection stalled");
                    return Some(Ending::Stalled);
                }
                self.suspect = true;
                self.next_probe = Instant::now() + STALL_GRACE;
                None
            }
            Err(reason) => {
                tracing::debug!(step_id = %run.id, attempt = self.failures, error = %reason, "liveness probe failed; retrying");
                self.failures += 1;
                if self.failures >= REATTACH_ATTEMPTS {
                    return Some(Ending::Unreachable(reason));
                }
                self.next_probe = Instant::now() + retry::delay(self.failures);
                None
            }
        }
    }

    fn reset(&mut self) {
        self.suspect = false;
        self.failures = 0;
        self.interval = PROBE_AFTER_IDLE;
        self.next_probe = Instant::now() + PROBE_AFTER_IDLE;
    }
}

/// One exec connection: its stdin and the tasks that pump its output.
struct Session {
    process: AttachedProcess,
    stdin: Option<WriteHalf<SimplexStream>>,
    pumps: Vec<JoinHandle<()>>,
}

impl Session {
    async fn start(
        run: &StepRun,
        command: Vec<String>,
        offsets: &Offsets,
        output: &mpsc::Sender<OutputChunk>,
    ) -> Result<Session, kube::Error> {
        let params = AttachParams {
            container: Some(run.target.container.clone()),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(STREAM_BUFFER),
            max_stdout_buf_size: Some(STREAM_BUFFER),
            max_stderr_buf_size: Some(STREAM_BUFFER),
        };
        let mut process = retry::with_backoff("exec", || {
            run.target
                .api
                .exec(&run.target.pod, command.clone(), &params)
        })
        .await?;

        let mut pumps = Vec::new();
        if let Some(stdout) = process.stdout() {
            pumps.push(pump(
                stdout,
                Stream::Stdout,
                offsets.stdout.clone(),
                output.clone(),
            ));
        }
        if let Some(stderr) = process.stderr() {
            pumps.push(pump(
                stderr,
                Stream::Stderr,
                offsets.stderr.clone(),
                output.clone(),
            ));
        }
        let stdin = process.stdin();
        Ok(Session {
            process,
            stdin,
            pumps,
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => {
                stdin.write_all(bytes).await?;
                stdin.flush().await
            }
            None => Ok(()),
        }
    }

    /// Follows the connection until it ends, asking the step to stop once
    /// its deadline passes or `cancel` fires, and probing the supervisor
    /// when the connection stays quiet ([`Liveness`]).
    async fn follow(
        &mut self,
        run: &StepRun,
        offsets: &Offsets,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        stop: &mut Option<StopRequest>,
    ) -> Ending {
        let Some(status) = self.process.take_status() else {
            return Ending::Dropped;
        };
        let mut status = std::pin::pin!(status.fuse());
        let mut pod_failed = std::pin::pin!(lifecycle::failure(run.pod_state.clone()).fuse());
        let mut liveness = Liveness::new(offsets);
        let mut stop_deadline = stop.map(|_| Instant::now() + STOP_LIMIT);
        if stop.is_some() {
            // A reattached session of a step that was already asked to stop.
            let _ = self.send(&[CANCEL]).await;
        }

        loop {
            tokio::select! {
                status = &mut status => {
                    // The output that arrived before the status belongs to
                    // the step; wait until it is all passed on. Without a
                    // status the streams may never end, so the wait is short,
                    // and `attach` resends what the pumps did not count.
                    let grace = if status.is_some() { STOP_LIMIT } else { DRAIN_GRACE };
                    // A pump left running would keep the output channel,
                    // and with it the step, open.
                    for mut pump in self.pumps.drain(..) {
                        if tokio::time::timeout(grace, &mut pump).await.is_err() {
                            tracing::debug!(step_id = %run.id, "an output stream did not end after the exec closed");
                            pump.abort();
                        }
                    }
                    return match status {
                        Some(status) => Ending::Status(Box::new(status)),
                        None => Ending::Dropped,
                    };
                }
                () = tokio::time::sleep_until(liveness.next_probe) => {
                    if let Some(ending) = liveness.check(run, offsets).await {
                        self.process.abort();
                        return ending;
                    }
                }
                reason = &mut pod_failed => return Ending::PodFailed(reason),
                () = sleep_until(deadline), if stop.is_none() && deadline.is_some() => {
                    *stop = Some(StopRequest::TimedOut);
                    stop_deadline = Some(Instant::now() + STOP_LIMIT);
                    let _ = self.send(&[CANCEL]).await;
                }
                () = cancel.cancelled(), if stop.is_none() => {
                    *stop = Some(StopRequest::Cancelled);
                    stop_deadline = Some(Instant::now() + STOP_LIMIT);
                    let _ = self.send(&[CANCEL]).await;
                }
                () = sleep_until(stop_deadline), if stop_deadline.is_some() => {
                    tracing::warn!("a stopped step did not report its end in time");
                    self.process.abort();
                    return Ending::Status(Box::new(Status {
                        status: Some("Failure".into()),
                        message: Some("the step did not report its end after being stopped".into()),
                        reason: Some("StopTimedOut".into()),
                        ..Status::default()
                    }));
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for pump in &self.pumps {
            pump.abort();
        }
    }
}

/// Passes one output stream on, counting its bytes. Output that nobody
/// receives any more is read and dropped, so the step never blocks on it.
fn pump(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    offset: Arc<AtomicU64>,
    output: mpsc::Sender<OutputChunk>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0; STREAM_BUFFER];
        let mut receiver_open = true;
        loop {
            let read = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            offset.fetch_add(read as u64, Ordering::SeqCst);
            if receiver_open {
                let chunk = OutputChunk {
                    stream,
                    data: Bytes::copy_from_slice(&buffer[..read]),
                };
                receiver_open = output.send(chunk).await.is_ok();
            }
        }
    })
}

/// Returns true when the exec status channel reports success.
pub fn is_success(status: &Status) -> bool {
    status.status.as_deref() == Some("Success")
}

/// Returns the exit code in a status from the exec status channel; `Err` with the
/// reason when the command did not run at all.
pub(super) fn exit_code(status: &Status) -> Result<i32, String> {
    if is_success(status) {
        return Ok(0);
    }
    let reason = status.reason.as_deref().unwrap_or_default();
    if reason == "NonZeroExitCode" {
        let code = status
            .details
            .iter()
            .flat_map(|details| details.causes.iter().flatten())
            .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
            .and_then(|cause| cause.message.as_deref()?.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(format!(
        "{} ({})",
        status.message.as_deref().unwrap_or_default().trim(),
        if reason.is_empty() {
            "no reason given"
        } else {
            reason
        }
    ))
}

/// What `danube-supervisor status` reports.
#[derive(Debug, PartialEq, Eq)]
enum SupervisorStatus {
    Missing,
    Running,
    Exited(i32),
    Lost,
}

/// The output of the supervisor's `status`: the state, and the bytes its
/// output files contain once the step started.
#[derive(Debug, PartialEq, Eq)]
struct StatusReport {
    status: SupervisorStatus,
    output: Option<(u64, u64)>,
}

fn parse_report(text: &str) -> Option<StatusReport> {
    let mut lines = text.lines();
    let status = parse_status(lines.next()?)?;
    let output = lines.next().and_then(|line| {
        let mut sizes = line.strip_prefix("output ")?.split(' ');
        let stdout = sizes.next()?.parse().ok()?;
        let stderr = sizes.next()?.parse().ok()?;
        Some((stdout, stderr))
    });
    Some(StatusReport { status, output })
}

fn parse_status(text: &str) -> Option<SupervisorStatus> {
    match text.trim() {
        "missing" => Some(SupervisorStatus::Missing),
        "running" => Some(SupervisorStatus::Running),
        "lost" => Some(SupervisorStatus::Lost),
        other => other
            .strip_prefix("exited ")
            .and_then(|code| code.parse().ok())
            .map(SupervisorStatus::Exited),
    }
}

/// Asks the supervisor in the container for the step's state.
async fn query_status(run: &StepRun) -> Result<StatusReport, String> {
    let params = AttachParams {
        container: Some(run.target.container.clone()),
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
        ..AttachParams::default()
    };
    let command = vec![
        SUPERVISOR_PATH.to_owned(),
        "status".to_owned(),
        run.id.clone(),
    ];
    let mut process = run
        .target
        .api
        .exec(&run.target.pod, command, &params)
        .await
        .map_err(|err| format!("failed to ask for the step's state: {err}"))?;
    let mut text = String::new();
    if let Some(mut stdout) = process.stdout() {
        stdout
            .read_to_string(&mut text)
            .await
            .map_err(|err| format!("failed to read the step's state: {err}"))?;
    }
    let status = match process.take_status() {
        Some(status) => status.await,
        None => None,
    };
    match status {
        Some(status) if is_success(&status) => parse_report(&text)
            .ok_or_else(|| format!("the supervisor reported an unknown state `{}`", text.trim())),
        Some(status) => Err(format!(
            "asking for the step's state failed: {}",
            exit_code(&status).err().unwrap_or_default()
        )),
        None => Err("the connection dropped while asking for the step's state".into()),
    }
}

/// Returns the exit code the supervisor recorded, when the step has ended.
async fn recorded_exit(run: &StepRun) -> Option<i32> {
    match query_status(run).await {
        Ok(StatusReport {
            status: SupervisorStatus::Exited(code),
            ..
        }) => Some(code),
        _ => None,
    }
}

/// Reattaches to a step whose connection dropped, retrying with backoff.
async fn reattach(
    run: &StepRun,
    offsets: &Offsets,
    output: &mpsc::Sender<OutputChunk>,
    stop: Option<StopRequest>,
) -> Result<Session, KubeError> {
    let lost = |reason: String| KubeError::StepLost {
        step: run.step.clone(),
        pod: run.target.pod.clone(),
        reason,
    };
    let mut last_error = String::new();
    for attempt in 0..REATTACH_ATTEMPTS {
        tokio::time::sleep(retry::delay(attempt)).await;
        if let lifecycle::PodState::Failed { reason } = &run.pod_state.borrow().state {
            return Err(KubeError::PodFailed {
                pod: run.target.pod.clone(),
                reason: reason.clone(),
            });
        }

        match query_status(run).await.map(|report| report.status) {
            Ok(SupervisorStatus::Missing) => {
                return Err(lost(
                    "the step never started (the connection dropped before the supervisor read its request)"
                        .into(),
                ));
            }
            Ok(SupervisorStatus::Lost) => {
                return Err(lost(
                    "its supervisor stopped without recording an exit code".into(),
                ));
            }
            Ok(SupervisorStatus::Running | SupervisorStatus::Exited(_)) => {}
            Err(reason) => {
                tracing::debug!(step_id = %run.id, attempt, error = %reason, "reattach failed; retrying");
                last_error = reason;
                continue;
            }
        }

        let command = vec![
            SUPERVISOR_PATH.to_owned(),
            "attach".to_owned(),
            run.id.clone(),
            format!("--stdout-offset={}", offsets.stdout.load(Ordering::SeqCst)),
            format!("--stderr-offset={}", offsets.stderr.load(Ordering::SeqCst)),
        ];
        match Session::start(run, command, offsets, output).await {
            Ok(mut session) => {
                if stop.is_some() {
                    let _ = session.send(&[CANCEL]).await;
                }
                tracing::info!(step_id = %run.id, attempt, "reattached to the step");
                return Ok(session);
            }
            Err(err) => {
                tracing::debug!(step_id = %run.id, attempt, error = %err, "reattach failed; retrying");
                last_error = err.to_string();
            }
        }
    }
    Err(lost(format!(
        "gave up after {REATTACH_ATTEMPTS} attempts, the last failed with: {last_error}"
    )))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn send_note(output: &mpsc::Sender<OutputChunk>, text: &str) {
    let chunk = OutputChunk {
        stream: Stream::Engine,
        data: Bytes::from(format!("{text}\n")),
    };
    output.send(chunk).await.ok();
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    fn failure(message: &str, reason: &str) -> Status {
        Status {
            status: Some("Failure".into()),
            message: Some(message.into()),
            reason: Some(reason.into()),
            ..Status::default()
        }
    }

    fn non_zero(code: &str) -> Status {
        Status {
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some(code.into()),
                    field: None,
                }]),
                ..StatusDetails::default()
            }),
            ..failure(
                "command terminated with non-zero exit code",
                "NonZeroExitCode",
            )
        }
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        let success = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(&success), Ok(0));
        assert_eq!(exit_code(&non_zero("3")), Ok(3));
        assert_eq!(exit_code(&non_zero("137")), Ok(137));
    }

    #[test]
    fn other_failures_are_not_exit_codes() {
        let error = exit_code(&failure(
            "container not found (\"image-1\")",
            "InternalError",
        ))
        .unwrap_err();
        assert_eq!(error, "container not found (\"image-1\") (InternalError)");
        assert!(exit_code(&non_zero("not a number")).is_err());
        assert!(exit_code(&Status::default()).is_err());
    }

    #[test]
    fn status_reports_parse_with_output_sizes() {
        assert_eq!(
            parse_report("running\noutput 12 0\n"),
            Some(StatusReport {
                status: SupervisorStatus::Running,
                output: Some((12, 0)),
            })
        );
        assert_eq!(
            parse_report("missing\n"),
            Some(StatusReport {
                status: SupervisorStatus::Missing,
                output: None,
            })
        );
        assert_eq!(parse_report("running\noutput x\n").unwrap().output, None);
        assert_eq!(parse_report(""), None);
    }

    #[test]
    fn supervisor_states_parse() {
        assert_eq!(parse_status("missing\n"), Some(SupervisorStatus::Missing));
        assert_eq!(parse_status("running\n"), Some(SupervisorStatus::Running));
        assert_eq!(
            parse_status("exited 4\n"),
            Some(SupervisorStatus::Exited(4))
        );
        assert_eq!(parse_status("lost"), Some(SupervisorStatus::Lost));
        assert_eq!(parse_status("exited x"), None);
        assert_eq!(parse_status(""), None);
    }
}
