//! `pods/exec` over WebSocket, subprotocols `v4.channel.k8s.io` and
//! `v5.channel.k8s.io`.
//!
//! Every binary message starts with a channel byte: 0 stdin (client to
//! server), 1 stdout, 2 stderr, 3 the final `Status` as JSON, 4 terminal
//! resize. v5 adds channel 255, whose one-byte payload names a
//! stream the client has closed; `[255, 0]` ends the process's stdin. Under
//! v4 a client can only end stdin by closing the socket, after which no
//! output reaches it.
//!
//! With `tty=true` the process runs on a pseudo-terminal ([`terminal`]):
//! its output, stderr included, arrives on channel 1, and channel 4 sets
//! the terminal's window size.
//!
//! The server sends an empty message on channels 1 to 3 when the session
//! opens, then output as it is read. Once the process has exited and both
//! output pipes are at end of file, it sends the status and a close frame.
//!
//! Errors found before the upgrade (no such pod or container, a finished
//! pod, no command, no common subprotocol) are HTTP `Status` responses. A
//! command that cannot start is reported on channel 3 as `InternalError`,
//! as containerd reports it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tracing::{debug, info};

use super::pods::pick_container;
use super::query::Query;
use super::runtime::{self, Namespaces, Process, ProcessSpec, Streams};
use super::server::AppState;
use super::status::ApiError;
use super::terminal::{self, Terminal};
use super::{ExecFault, ExecProtocol, Shared, pod_state};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Upgrades an exec request to a WebSocket session.
pub(crate) async fn exec(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    shared
        .exec_uris
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request.uri().to_string());
    let query = Query::parse(raw.as_deref());
    start(shared, &namespace, &name, &query, request).unwrap_or_else(IntoResponse::into_response)
}

/// What a session needs once the socket is upgraded.
struct Session {
    shared: Arc<Shared>,
    process: std::io::Result<Process>,
    /// The emulator's side of the process's pseudo-terminal, for `tty=true`.
    terminal: Option<Terminal>,
    argv: Vec<String>,
    protocol: ExecProtocol,
    pod_drops: watch::Receiver<u64>,
    label: String,
}

fn start(
    shared: Arc<Shared>,
    namespace: &str,
    name: &str,
    query: &Query,
    mut request: Request,
) -> Result<Response, ApiError> {
    let pod = shared
        .store
        .pod(namespace, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let container = pick_container(&pod, query.get("container"))?;
    if pod_state::is_terminal(&pod) {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {}",
            pod_state::phase(&pod)
        )));
    }
    if shared.refuse_execs.load(Ordering::SeqCst) {
        return Err(ApiError::internal(format!(
            "error dialing backend: dial tcp {}:10250: connect: connection refused",
            super::NODE_NAME
        )));
    }
    if shared.node_lost() {
        return Err(ApiError::internal(format!(
            "error dialing backend: node {} is not reachable",
            super::NODE_NAME
        )));
    }
    let argv = query.all("command");
    if argv.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least 1 command".to_owned(),
        ));
    }
    let stdin = query.flag("stdin")?;
    if !stdin && !query.flag("stdout")? && !query.flag("stderr")? {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr".to_owned(),
        ));
    }

    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let runtime = shared.kubelet.pod(&uid);
    let running = runtime
        .as_ref()
        .and_then(|r| r.container(&container))
        .filter(|c| !c.has_exited());
    let (Some(runtime), Some(running)) = (runtime, running) else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        )));
    };

    let key = websocket_key(&request)?;
    let protocol = choose_protocol(&shared, &request)?;

    let namespaces = Namespaces::of(running.pid).map_err(|_| {
        ApiError::bad_request(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        ))
    })?;
    let spec = ProcessSpec {
        argv: argv.clone(),
        stdin,
        ..running.spec.clone()
    };
    let (process, terminal) = if query.flag("tty")? {
        match terminal::open() {
            Ok((terminal, process_side)) => (
                runtime::start_exec(&spec, &namespaces, Streams::Terminal(process_side)),
                Some(terminal),
            ),
            Err(error) => (Err(error), None),
        }
    } else {
        (
            runtime::start_exec(&spec, &namespaces, Streams::Pipes),
            None,
        )
    };
    let label = format!("{namespace}/{name}/{container}");
    info!(exec = %label, protocol = protocol.as_str(), started = process.is_ok(), "exec started");

    let on_upgrade = hyper::upgrade::on(&mut request);
    let session = Session {
        shared,
        process,
        terminal,
        argv,
        protocol,
        pod_drops: runtime.exec_drops.subscribe(),
        label,
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                run(session, socket).await;
            }
            Err(error) => debug!(%error, "exec upgrade failed"),
        }
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.as_str()),
    );
    Ok(response)
}

fn websocket_key(request: &Request) -> Result<String, ApiError> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    match (upgrade, key) {
        (true, Some(key)) => Ok(key.to_owned()),
        _ => Err(ApiError::bad_request(
            "Upgrade request required: exec is served over WebSocket only".to_owned(),
        )),
    }
}

fn choose_protocol(shared: &Shared, request: &Request) -> Result<ExecProtocol, ApiError> {
    let offered: Vec<String> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    shared
        .options
        .exec_protocols
        .iter()
        .copied()
        .find(|protocol| offered.iter().any(|p| p == protocol.as_str()))
        .ok_or_else(|| {
            let served: Vec<&str> = shared
                .options
                .exec_protocols
                .iter()
                .map(|p| p.as_str())
                .collect();
            ApiError::bad_request(format!(
                "unable to upgrade connection: none of the offered subprotocols [{}] is served; \
                 offer one of [{}]",
                offered.join(", "),
                served.join(", ")
            ))
        })
}

fn frame(channel: u8, bytes: &[u8]) -> Message {
    let mut data = Vec::with_capacity(bytes.len() + 1);
    data.push(channel);
    data.extend_from_slice(bytes);
    Message::binary(data)
}

/// Builds the status sent on channel 3 for an exit code.
fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn start_failure(argv: &[String], error: &std::io::Error) -> Value {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let cause = match error.kind() {
        std::io::ErrorKind::NotFound => {
            format!("exec: \"{program}\": executable file not found in $PATH")
        }
        std::io::ErrorKind::PermissionDenied => format!("exec: \"{program}\": permission denied"),
        _ => error.to_string(),
    };
    let message = format!(
        "error executing command in container: failed to exec in container: failed to start \
         exec: OCI runtime exec failed: exec failed: unable to start container process: \
         {cause}: unknown"
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// Counts an open session while alive.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.exec_open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn pump(mut reader: impl AsyncRead + Unpin, channel: u8, out: mpsc::Sender<(u8, Bytes)>) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if out
                    .send((channel, Bytes::copy_from_slice(&buffer[..read])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Returns a sender whose bytes are written to `pipe` in order.
fn feed(
    mut pipe: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
) -> mpsc::UnboundedSender<Bytes> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        while let Some(bytes) = receiver.recv().await {
            if pipe.write_all(&bytes).await.is_err() || pipe.flush().await.is_err() {
                return;
            }
        }
    });
    sender
}

async fn run<S>(mut session: Session, socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shared = session.shared.clone();
    shared.exec_open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(shared.clone());
    let (mut sink, mut source) = socket.split();

    let mut process = match session.process {
        Ok(process) => process,
        Err(error) => {
            info!(exec = %session.label, %error, "exec command failed to start");
            let status = start_failure(&session.argv, &error);
            let _ = sink
                .send(frame(STATUS, status.to_string().as_bytes()))
                .await;
            let _ = sink.send(Message::Close(Some(normal_close()))).await;
            return;
        }
    };
    for channel in [STDOUT, STDERR, STATUS] {
        if sink.send(frame(channel, &[])).await.is_err() {
            break;
        }
    }

    let (output, mut outputs) = mpsc::channel::<(u8, Bytes)>(8);
    if let Some(stdout) = process.child.stdout.take() {
        tokio::spawn(pump(stdout, STDOUT, output.clone()));
    }
    if let Some(stderr) = process.child.stderr.take() {
        tokio::spawn(pump(stderr, STDERR, output.clone()));
    }
    let mut stdin = process.child.stdin.take().map(feed);
    if let Some(terminal) = &session.terminal
        && let (Ok(reader), Ok(writer)) = (
            terminal.controller.try_clone(),
            terminal.controller.try_clone(),
        )
    {
        tokio::spawn(pump(
            tokio::fs::File::from_std(reader),
            STDOUT,
            output.clone(),
        ));
        stdin = Some(feed(tokio::fs::File::from_std(writer)));
    }
    drop(output);
    let mut exit = tokio::spawn(async move {
        match process.child.wait().await {
            Ok(status) => status.code().unwrap_or(137),
            Err(_) => 137,
        }
    });

    let mut drops = shared.exec_drops.subscribe();
    let mut outputs_open = true;
    let mut exit_code = None;
    let mut peer_open = true;
    let mut dropped = false;
    loop {
        if dropped || (!outputs_open && exit_code.is_some()) {
            break;
        }
        tokio::select! {
            _ = drops.changed() => dropped = true,
            _ = session.pod_drops.changed() => dropped = true,
            chunk = outputs.recv(), if outputs_open => match chunk {
                Some((channel, bytes)) => {
                    if peer_open && sink.send(frame(channel, &bytes)).await.is_err() {
                        peer_open = false;
                    }
                }
                None => outputs_open = false,
            },
            code = &mut exit, if exit_code.is_none() => {
                exit_code = Some(code.unwrap_or(137));
            }
            message = source.next(), if peer_open => match message {
                Some(Ok(Message::Binary(data))) => match (data.first(), session.protocol) {
                    (Some(&STDIN), _) => {
                        if let Some(stdin) = &stdin {
                            let _ = stdin.send(data.slice(1..));
                        }
                    }
                    (Some(&CLOSE), ExecProtocol::V5) if data.get(1) == Some(&STDIN) => {
                        stdin = None;
                    }
                    (Some(&RESIZE), _) => {
                        if let Some(terminal) = &session.terminal {
                            terminal.resize(&data[1..]);
                        }
                    }
                    (channel, _) => debug!(exec = %session.label, ?channel, "ignoring a message"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    debug!(exec = %session.label, "client closed the exec connection");
                    peer_open = false;
                    stdin = None;
                }
                Some(Ok(_)) => {}
            },
        }
    }

    if dropped {
        abandon(&session.label, outputs, exit);
        let fault = *shared.exec_fault.lock().unwrap_or_else(|p| p.into_inner());
        match fault {
            ExecFault::Reset => {}
            ExecFault::Close => {
                let close = CloseFrame {
                    code: CloseCode::Away,
                    reason: "the server is shutting down".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
            }
            ExecFault::Stall => {
                // Held, unread and unwritten, until the next fault bumps
                // the counter again or the emulator stops.
                let mut drops = shared.exec_drops.subscribe();
                tokio::spawn(async move {
                    let _ = drops.changed().await;
                    drop((sink, source));
                });
            }
        }
        return;
    }
    let code = exit_code.unwrap_or(137);
    info!(exec = %session.label, code, "exec finished");
    if peer_open {
        let status = exit_status(&session.argv, code);
        let _ = sink
            .send(frame(STATUS, status.to_string().as_bytes()))
            .await;
        let _ = sink.send(Message::Close(Some(normal_close()))).await;
    }
}

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

/// Drops the connection (the caller returns, dropping the socket without a
/// close frame) and lets the process run on with its output discarded.
fn abandon(
    label: &str,
    mut outputs: mpsc::Receiver<(u8, Bytes)>,
    exit: tokio::task::JoinHandle<i32>,
) {
    info!(exec = %label, "dropping the exec connection");
    tokio::spawn(async move {
        while outputs.recv().await.is_some() {}
        let _ = exit.await;
    });
}
