//! Watch streams: one JSON event per line, `ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK` and `ERROR`, as the API server sends them on `?watch=true`.
//!
//! Where a watch starts, by its `resourceVersion`:
//! - unset or `0`: one synthetic `ADDED` per existing object, then changes;
//!   with `sendInitialEvents=true` a bookmark annotated
//!   `k8s.io/initial-events-end` follows the synthetic events;
//! - a version `N`: every change after `N`, or one `ERROR` event with a
//!   `410 Expired` status when the history no longer reaches back to `N`.
//!
//! With `allowWatchBookmarks=true` a bookmark carrying the current version
//! is sent every [`super::EmulatorOptions::bookmark_interval`] and before
//! the stream ends at `timeoutSeconds`. A watcher that falls more than the
//! broadcast buffer behind has its stream ended, and resumes from the last
//! version it saw.
//!
//! Not emulated: an object that stops matching the selectors is not sent
//! as `DELETED`, nor one that starts matching as `ADDED`; only events whose
//! object matches are sent.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::Shared;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, Kind};

/// A parsed watch request.
pub(crate) struct WatchRequest {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` for unset or `0`.
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
}

impl WatchRequest {
    fn matches(&self, kind: Kind, namespace: Option<&str>, object: &Value) -> bool {
        kind == self.kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|wanted| namespace == Some(wanted))
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("JSON values serialise");
    text.push(b'\n');
    Bytes::from(text)
}

fn bookmark(kind: Kind, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": kind.name(), "apiVersion": "v1", "metadata": metadata}),
    )
}

/// Starts the stream and returns the response that carries it.
pub(crate) fn respond(shared: Arc<Shared>, request: WatchRequest) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // The client going away closes the channel, which ends the task.
        let _ = stream(&shared, &request, &sender).await;
        debug!(kind = request.kind.plural(), "watch ended");
    });
    let body =
        Body::from_stream(ReceiverStream::new(receiver).map(Ok::<_, std::convert::Infallible>));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Sends events until the timeout, a lag, or the client leaving (`Err`).
async fn stream(
    shared: &Shared,
    request: &WatchRequest,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), mpsc::error::SendError<Bytes>> {
    let mut receiver = match request.since {
        None => {
            let (objects, revision, receiver) = shared.store.snapshot(request.kind);
            for object in &objects {
                let namespace = object["metadata"]["namespace"].as_str();
                if request.matches(request.kind, namespace, object) {
                    out.send(line("ADDED", object)).await?;
                }
            }
            if request.send_initial_events && request.bookmarks {
                out.send(bookmark(request.kind, revision, true)).await?;
            }
            receiver
        }
        Some(since) => match shared.store.subscribe(Some(since)) {
            Ok(subscription) => {
                for event in &subscription.backlog {
                    send_event(request, event, out).await?;
                }
                subscription.receiver
            }
            Err(error) => {
                debug!(since, "watch from an expired version");
                return out.send(line("ERROR", &error.to_status())).await;
            }
        },
    };

    let deadline = tokio::time::sleep(request.timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(shared.options.bookmark_interval);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => {
                if request.bookmarks {
                    send_bookmark(shared, request, &mut receiver, out).await?;
                }
                return Ok(());
            }
            _ = ticks.tick(), if request.bookmarks => {
                if !send_bookmark(shared, request, &mut receiver, out).await? {
                    return Ok(());
                }
            }
            received = receiver.recv() => match received {
                Ok(event) => send_event(request, &event, out).await?,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "watcher fell behind; ending its stream");
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

async fn send_event(
    request: &WatchRequest,
    event: &Event,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), mpsc::error::SendError<Bytes>> {
    if request.matches(event.kind, event.namespace.as_deref(), &event.object) {
        out.send(line(event.event_type.as_str(), &event.object))
            .await?;
    }
    Ok(())
}

/// Sends a bookmark at the current version. Events up to that version were
/// broadcast before the version was read (both happen under the store's
/// lock), so draining the receiver first keeps the bookmark from jumping
/// over an event this stream has not sent yet. Returns `false` when the
/// stream must end instead.
async fn send_bookmark(
    shared: &Shared,
    request: &WatchRequest,
    receiver: &mut broadcast::Receiver<Arc<Event>>,
    out: &mpsc::Sender<Bytes>,
) -> Result<bool, mpsc::error::SendError<Bytes>> {
    let revision = shared.store.revision();
    loop {
        match receiver.try_recv() {
            Ok(event) => send_event(request, &event, out).await?,
            Err(broadcast::error::TryRecvError::Empty) => break,
            // A lagged stream has lost events: it must end, so that the
            // client resumes from the last version it really saw.
            Err(_) => return Ok(false),
        }
    }
    out.send(bookmark(request.kind, revision, false)).await?;
    Ok(true)
}
