//! The server's change feed (`/api/v1/events`) shared by every page.

use futures::StreamExt as _;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::ChangeEvent;

/// Event names the server sends on `/api/v1/events`.
const EVENT_NAMES: [&str; 7] = ["job", "plan", "task", "step", "artifact", "notice", "lagged"];

/// The last change seen, and whether the feed is connected. Pages react to
/// `last` and refetch on `lagged` or after a reconnect.
#[derive(Clone, Copy)]
pub struct Changes {
    pub last: ReadSignal<Option<ChangeEvent>>,
    pub connected: ReadSignal<bool>,
}

/// Opens the feed for the lifetime of the app. The browser's EventSource
/// reconnects by itself after a drop.
pub fn open() -> Changes {
    let (last, set_last) = signal(None::<ChangeEvent>);
    let (connected, set_connected) = signal(false);

    let Ok(mut source) = EventSource::new("/api/v1/events") else {
        return Changes { last, connected };
    };
    let mut streams = Vec::new();
    for name in EVENT_NAMES {
        if let Ok(stream) = source.subscribe(name) {
            streams.push(stream);
        }
    }
    let mut merged = futures::stream::select_all(streams);
    spawn_local(async move {
        // The source closes when dropped, so it lives as long as the loop.
        let _keep = &mut source;
        while let Some(item) = merged.next().await {
            match item {
                Ok((_, message)) => {
                    set_connected.set(true);
                    let Some(text) = message.data().as_string() else {
                        continue;
                    };
                    if let Ok(event) = serde_json::from_str::<ChangeEvent>(&text) {
                        set_last.set(Some(event));
                    }
                }
                Err(_) => set_connected.set(false),
            }
        }
    });
    Changes { last, connected }
}
