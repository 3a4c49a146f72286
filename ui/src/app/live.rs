//! The server's change feed (`/api/v1/events`), opened once for the app.

use leptos::prelude::*;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::ChangeEvent;

/// Event names the server sends on `/api/v1/events`.
const EVENT_NAMES: [&str; 7] = [
    "job", "plan", "task", "step", "artifact", "notice", "lagged",
];

/// The last change seen, and whether the feed is connected. Pages react to
/// `last`; a `lagged` event (also sent here after a reconnect, when changes
/// may have been missed) asks them to fetch what they show again.
#[derive(Clone, Copy)]
pub struct Changes {
    pub last: ReadSignal<Option<ChangeEvent>>,
    pub connected: ReadSignal<bool>,
    /// The server refused the feed, so the browser stopped retrying.
    pub closed: ReadSignal<bool>,
}

/// Opens the feed. The browser reconnects by itself after a drop; the
/// handlers live as long as the page.
pub fn open() -> Changes {
    let (last, set_last) = signal(None::<ChangeEvent>);
    let (connected, set_connected) = signal(false);
    let (closed, set_closed) = signal(false);
    let Ok(source) = EventSource::new("/api/v1/events") else {
        set_closed.set(true);
        return Changes {
            last,
            connected,
            closed,
        };
    };

    let opened_before = StoredValue::new(false);
    let on_open = Closure::<dyn FnMut()>::new(move || {
        set_connected.set(true);
        set_closed.set(false);
        if opened_before.get_value() {
            set_last.set(Some(ChangeEvent::Lagged { missed: 0 }));
        }
        opened_before.set_value(true);
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    on_open.forget();

    // The browser retries by itself unless the server refused the stream
    // (a 401 for a page without the token): then the source is closed.
    let watched = source.clone();
    let on_error = Closure::<dyn FnMut()>::new(move || {
        set_connected.set(false);
        set_closed.set(watched.ready_state() == EventSource::CLOSED);
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();

    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
        let Some(text) = message.data().as_string() else {
            return;
        };
        if let Ok(event) = serde_json::from_str::<ChangeEvent>(&text) {
            set_last.set(Some(event));
        }
    });
    for name in EVENT_NAMES {
        let _ = source.add_event_listener_with_callback(name, on_message.as_ref().unchecked_ref());
    }
    on_message.forget();
    Changes {
        last,
        connected,
        closed,
    }
}
