//! The server's change feed (`/api/v1/events`), opened once for the app.

use leptos::prelude::*;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::ChangeEvent;

/// Event names the server sends on `/api/v1/events`.
const EVENT_NAMES: [&str; 9] = [
    "job", "plan", "task", "step", "artifact", "notice", "paused", "resumed", "lagged",
];

/// The last change seen, and whether the feed is connected. Pages react to
/// `last`. A `lagged` event asks them to fetch what they show again, and is
/// also sent here after a reconnect, when changes may have been missed.
#[derive(Clone, Copy)]
pub struct Changes {
    pub last: ReadSignal<Option<ChangeEvent>>,
    pub connected: ReadSignal<bool>,
    /// The server refused the feed, so the browser stopped retrying.
    pub closed: ReadSignal<bool>,
}

/// Setters shared by the handlers of every connection.
#[derive(Clone, Copy)]
struct Setters {
    last: WriteSignal<Option<ChangeEvent>>,
    connected: WriteSignal<bool>,
    closed: WriteSignal<bool>,
}

/// An open feed with its handlers; dropping it closes the connection.
struct Feed {
    source: EventSource,
    _handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Opens the feed. The browser reconnects by itself after a drop.
///
/// Browsers open at most six HTTP/1.1 connections to one server, and the
/// feed holds one for as long as it is open. So a hidden tab closes its
/// feed, and reopens it when shown again.
///
/// NOTE: visible windows side by side keep theirs, two each on a page with
/// a running log, so a fourth such window waits for a free connection.
pub fn open() -> Changes {
    let (last, set_last) = signal(None::<ChangeEvent>);
    let (connected, set_connected) = signal(false);
    let (closed, set_closed) = signal(false);
    let setters = Setters {
        last: set_last,
        connected: set_connected,
        closed: set_closed,
    };

    let feed = StoredValue::new_local(connect(setters, false));
    let visibility = window_event_listener_untyped("visibilitychange", move |_| {
        if document().hidden() {
            feed.set_value(None);
            setters.connected.set(false);
        } else if feed.with_value(Option::is_none) {
            feed.set_value(connect(setters, true));
        }
    });
    on_cleanup(move || visibility.remove());

    Changes {
        last,
        connected,
        closed,
    }
}

/// Opens one connection. After the first, every open (the browser's own
/// reconnects too) sends `lagged`, since changes may have been missed.
fn connect(setters: Setters, reopened: bool) -> Option<Feed> {
    let Ok(source) = EventSource::new("/api/v1/events") else {
        setters.closed.set(true);
        return None;
    };
    let mut handlers = Vec::new();
    let mut listen = |name: &str, handler: Box<dyn FnMut(web_sys::Event)>| {
        let closure = Closure::wrap(handler);
        if source
            .add_event_listener_with_callback(name, closure.as_ref().unchecked_ref())
            .is_ok()
        {
            handlers.push(closure);
        }
    };

    let mut opened_before = reopened;
    listen(
        "open",
        Box::new(move |_| {
            setters.connected.set(true);
            setters.closed.set(false);
            if opened_before {
                setters.last.set(Some(ChangeEvent::Lagged { missed: 0 }));
            }
            opened_before = true;
        }),
    );

    // The browser retries by itself unless the server refused the stream
    // (a 401 for a page without the token): then the source is closed.
    let watched = source.clone();
    listen(
        "error",
        Box::new(move |_| {
            setters.connected.set(false);
            setters
                .closed
                .set(watched.ready_state() == EventSource::CLOSED);
        }),
    );

    for name in EVENT_NAMES {
        listen(
            name,
            Box::new(move |event| {
                let Some(text) = event.unchecked_ref::<MessageEvent>().data().as_string() else {
                    return;
                };
                if let Ok(change) = serde_json::from_str::<ChangeEvent>(&text) {
                    setters.last.set(Some(change));
                }
            }),
        );
    }

    Some(Feed {
        source,
        _handlers: handlers,
    })
}
