//! The log viewer: one step's log, streamed over Server-Sent Events into a
//! [`LineStore`] and rendered with virtual scrolling.
//!
//! Only the rows in view, plus [`OVERSCAN`] on each side, exist in the DOM.
//! They sit in a window element moved over a spacer as tall as all rows.
//! Each row is keyed by its line number, so scrolling adds and removes a
//! few rows and a new chunk re-renders only the last line. Chunks are
//! queued as they arrive and decoded into the store once per animation
//! frame (see [`feed`]), which keeps a 100 MB log from stalling the page.

mod feed;
mod row;

use leptos::ev;
use leptos::html::{Div, Input};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast as _;

use super::client;
use crate::api::JobDetail;
use crate::format;
use crate::logtext::{LineStore, Query, Viewport, parse_line_anchor};

/// Height of one row in CSS pixels; `ui/style/log.css` sets the same.
pub const ROW_HEIGHT: f64 = 18.0;

/// Rows rendered beyond each edge of the view, so that fast scrolling
/// shows text instead of blank space for a frame.
const OVERSCAN: usize = 40;

/// The state of the log stream.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Opened, nothing received yet.
    Connecting,
    Streaming,
    /// The connection dropped; the browser reconnects by itself and resumes
    /// after the last byte received.
    Reconnecting,
    /// The `end` event came: the step is final and every byte is here.
    Ended,
    /// The server rejected the stream, for the reason in the message.
    Failed(String),
}

/// Search state. Matches are line indices (0-based), in order.
#[derive(Clone, Copy)]
struct Search {
    /// The search box's text.
    text: RwSignal<String>,
    /// The text the matches were computed for.
    searched: StoredValue<String>,
    query: StoredValue<Option<Query>>,
    matches: StoredValue<Vec<usize>>,
    count: RwSignal<usize>,
    /// Index into `matches` of the current match.
    current: RwSignal<Option<usize>>,
    /// Bumped whenever matches change, so rows re-render their marks.
    revision: RwSignal<u64>,
    /// Bumped per keystroke; a delayed search runs only if still current.
    typing: StoredValue<u64>,
}

/// Everything the viewer's parts share; all handles, so `Copy`.
#[derive(Clone, Copy)]
struct LogState {
    store: StoredValue<LineStore>,
    lines: RwSignal<usize>,
    /// Bumped per batch of chunks, to re-render the last line.
    tail_revision: RwSignal<u64>,
    bytes: RwSignal<u64>,
    dropped: RwSignal<u64>,
    phase: RwSignal<Phase>,
    follow: RwSignal<bool>,
    /// The user scrolled, pressed a key or toggled follow, so automatic
    /// choices (follow for running steps) no longer apply.
    touched: StoredValue<bool>,
    scroll_top: RwSignal<f64>,
    viewport: RwSignal<f64>,
    /// The line named by the URL's `#L123`, highlighted.
    anchored: RwSignal<Option<usize>>,
    /// A line to scroll to once it has arrived.
    pending_jump: StoredValue<Option<usize>>,
    search: Search,
    container: NodeRef<Div>,
    spacer: NodeRef<Div>,
}

impl LogState {
    fn geometry_untracked(&self) -> Viewport {
        Viewport {
            rows: self.lines.get_untracked(),
            row_height: ROW_HEIGHT,
            viewport: self.viewport.get_untracked(),
        }
    }

    /// Scrolls the container to `scroll_top` now, sizing the spacer first
    /// so that the browser does not clamp to the old height.
    fn scroll_to(&self, scroll_top: f64) {
        let Some(container) = self.container.get_untracked() else {
            return;
        };
        if let Some(spacer) = self.spacer.get_untracked() {
            let height = self.geometry_untracked().content_height();
            let style = web_sys::HtmlElement::style(&spacer);
            let _ = style.set_property("height", &format!("{height}px"));
        }
        container.set_scroll_top(scroll_top.round() as i32);
        self.scroll_top
            .set(f64::from(container.scroll_top()).max(0.0));
    }

    fn scroll_to_end(&self) {
        self.scroll_to(self.geometry_untracked().scroll_to_end());
    }

    fn scroll_to_line(&self, line: usize) {
        let geometry = self.geometry_untracked();
        if !geometry.shows_whole(line, self.scroll_top.get_untracked()) {
            self.scroll_to(geometry.scroll_to_center(line));
        }
    }

    fn set_follow(&self, on: bool) {
        self.follow.set(on);
        if on {
            self.scroll_to_end();
        }
    }

    fn go_top(&self) {
        self.touched.set_value(true);
        self.follow.set(false);
        self.scroll_to(0.0);
    }

    fn go_bottom(&self) {
        self.touched.set_value(true);
        let streaming = !matches!(self.phase.get_untracked(), Phase::Ended | Phase::Failed(_));
        self.follow.set(streaming);
        self.scroll_to_end();
    }

    /// Reads the container's scroll position and size after the user or
    /// the browser moved it.
    fn sync_scroll(&self) {
        let Some(container) = self.container.get_untracked() else {
            return;
        };
        let top = f64::from(container.scroll_top());
        let height = f64::from(container.client_height());
        let bottom_gap = f64::from(container.scroll_height()) - top - height;
        if self.follow.get_untracked() && bottom_gap > 2.0 * ROW_HEIGHT {
            // Follow scrolls to the end within the frame that grows the
            // log, so a scroll event away from the end is the user's.
            self.follow.set(false);
            self.touched.set_value(true);
        }
        self.scroll_top.set(top);
        if height != self.viewport.get_untracked() {
            self.viewport.set(height);
        }
    }

    /// Updates everything that depends on the store after a batch of
    /// chunks went in; `old_lines` is the line count before it.
    fn after_append(&self, old_lines: usize) {
        let Some((lines, bytes, dropped)) = self.store.try_with_value(|store| {
            (
                store.line_count(),
                store.bytes_received(),
                store.bytes_dropped(),
            )
        }) else {
            return;
        };
        self.lines.set(lines);
        self.bytes.set(bytes);
        self.dropped.set(dropped);
        self.tail_revision.update(|revision| *revision += 1);
        if matches!(
            self.phase.get_untracked(),
            Phase::Connecting | Phase::Reconnecting
        ) {
            self.phase.set(Phase::Streaming);
        }

        self.extend_search(old_lines, lines);

        if let Some(line) = self.pending_jump.get_value()
            && line < lines
        {
            self.pending_jump.set_value(None);
            self.scroll_to_line(line);
        } else if self.follow.get_untracked() {
            self.scroll_to_end();
        }
    }

    /// Searches the lines that a batch added or changed: the old last line
    /// may have grown or been overwritten.
    fn extend_search(&self, old_lines: usize, lines: usize) {
        let search = self.search;
        let Some(Some(query)) = search.query.try_get_value() else {
            return;
        };
        let from = old_lines.saturating_sub(1);
        let found = self
            .store
            .with_value(|store| query.matching_lines(store, from..lines));
        let mut changed = false;
        search.matches.update_value(|matches| {
            let keep = matches.partition_point(|&line| line < from);
            changed = matches.len() != keep + found.len() || matches[keep..] != found[..];
            matches.truncate(keep);
            matches.extend(found);
        });
        if changed {
            let count = search.matches.with_value(Vec::len);
            search.count.set(count);
            if search
                .current
                .get_untracked()
                .is_none_or(|index| index >= count)
            {
                search.current.set((count > 0).then_some(0));
            }
            search.revision.update(|revision| *revision += 1);
        }
    }

    /// Runs the search box's query over the whole log and makes the first
    /// match at or below the top of the view current.
    fn run_search(&self) {
        let search = self.search;
        let text = search.text.get_untracked();
        let query = Query::new(&text);
        let matches = match &query {
            Some(query) => self
                .store
                .with_value(|store| query.matching_lines(store, 0..store.line_count())),
            None => Vec::new(),
        };
        let top = self
            .geometry_untracked()
            .visible(self.scroll_top.get_untracked(), 0)
            .start;
        let current = if matches.is_empty() {
            None
        } else {
            Some(matches.partition_point(|&line| line < top) % matches.len())
        };

        search.count.set(matches.len());
        search.matches.set_value(matches);
        search.query.set_value(query);
        search.searched.set_value(text);
        search.current.set(current);
        search.revision.update(|revision| *revision += 1);
        self.show_current_match();
    }

    /// Moves to the next match, or the previous one with `backwards`.
    fn step_match(&self, backwards: bool) {
        let search = self.search;
        if search.searched.get_value() != search.text.get_untracked() {
            self.run_search();
            return;
        }
        let count = search.count.get_untracked();
        if count == 0 {
            return;
        }
        let next = match search.current.get_untracked() {
            None => 0,
            Some(index) if backwards => (index + count - 1) % count,
            Some(index) => (index + 1) % count,
        };
        search.current.set(Some(next));
        self.show_current_match();
    }

    fn show_current_match(&self) {
        let search = self.search;
        let Some(index) = search.current.get_untracked() else {
            return;
        };
        let Some(line) = search
            .matches
            .with_value(|matches| matches.get(index).copied())
        else {
            return;
        };
        self.touched.set_value(true);
        self.follow.set(false);
        self.scroll_to_line(line);
    }

    /// Line index of the current match.
    fn current_match_line(&self) -> Option<usize> {
        let index = self.search.current.get()?;
        self.search.revision.track();
        self.search
            .matches
            .with_value(|matches| matches.get(index).copied())
    }

    /// Highlights line `line` (0-based) and puts `#L<line + 1>` in the URL.
    fn anchor_line(&self, line: usize) {
        self.anchored.set(Some(line));
        self.touched.set_value(true);
        self.follow.set(false);
        if let Ok(history) = window().history() {
            let _ = history.replace_state_with_url(
                &wasm_bindgen::JsValue::NULL,
                "",
                Some(&format!("#L{}", line + 1)),
            );
        }
    }

    /// Acts on the URL's hash: `#L123` highlights line 123 and scrolls to
    /// it, now or once it has arrived.
    fn follow_hash(&self) {
        let hash = window().location().hash().unwrap_or_default();
        let Some(number) = parse_line_anchor(&hash) else {
            return;
        };
        let line = number - 1;
        self.anchored.set(Some(line));
        self.touched.set_value(true);
        self.follow.set(false);
        if line < self.lines.get_untracked() {
            self.scroll_to_line(line);
        } else {
            self.pending_jump.set_value(Some(line));
        }
    }
}

/// Shows one step's log, live. With `start_at_end` it opens scrolled to the
/// last lines and following (for failed steps). Otherwise it follows only
/// while the step runs.
#[component]
pub fn LogView(
    job_id: String,
    task: String,
    step: String,
    #[prop(optional)] start_at_end: bool,
) -> impl IntoView {
    let search = Search {
        text: RwSignal::new(String::new()),
        searched: StoredValue::new(String::new()),
        query: StoredValue::new(None),
        matches: StoredValue::new(Vec::new()),
        count: RwSignal::new(0),
        current: RwSignal::new(None),
        revision: RwSignal::new(0),
        typing: StoredValue::new(0),
    };
    let state = LogState {
        store: StoredValue::new(LineStore::new()),
        lines: RwSignal::new(0),
        tail_revision: RwSignal::new(0),
        bytes: RwSignal::new(0),
        dropped: RwSignal::new(0),
        phase: RwSignal::new(Phase::Connecting),
        follow: RwSignal::new(start_at_end),
        touched: StoredValue::new(false),
        scroll_top: RwSignal::new(0.0),
        viewport: RwSignal::new(600.0),
        anchored: RwSignal::new(None),
        pending_jump: StoredValue::new(None),
        search,
        container: NodeRef::new(),
        spacer: NodeRef::new(),
    };
    let search_input: NodeRef<Input> = NodeRef::new();

    state.follow_hash();
    let raw_url = if task.is_empty() && step.is_empty() {
        format!("/api/v1/jobs/{}/logs/raw", client::query_value(&job_id))
    } else {
        format!(
            "/api/v1/jobs/{}/logs/raw?task={}&step={}",
            client::query_value(&job_id),
            client::query_value(&task),
            client::query_value(&step)
        )
    };
    feed::open(state, &job_id, &task, &step);
    follow_if_running(state, job_id, task, step);
    bind_window_events(state, search_input);

    // Measure the container once it is in the document.
    Effect::new(move |_| {
        if let Some(container) = state.container.get() {
            state.viewport.set(f64::from(container.client_height()));
        }
    });

    let geometry = Memo::new(move |_| Viewport {
        rows: state.lines.get(),
        row_height: ROW_HEIGHT,
        viewport: state.viewport.get(),
    });
    let visible = Memo::new(move |_| geometry.get().visible(state.scroll_top.get(), OVERSCAN));
    let rows = move || {
        let range = visible.get();
        let last = state.lines.get().checked_sub(1);
        let tail = state.tail_revision.get();
        let search_revision = state.search.revision.get();
        let current = state.current_match_line();
        let anchored = state.anchored.get();
        range
            .map(|line| row::RowKey {
                line,
                tail: if Some(line) == last { tail } else { 0 },
                search: search_revision,
                current: current == Some(line),
                anchored: anchored == Some(line),
            })
            .collect::<Vec<_>>()
    };
    // The window sits at its first row; the number column fits the
    // largest line number.
    let window_style = move || {
        let first = visible.get().start;
        let offset = geometry.get().row_offset(first, state.scroll_top.get());
        let digits = state.lines.get().max(1).ilog10() + 1;
        format!("transform:translateY({offset}px);--log-number-width:{digits}ch")
    };

    view! {
        <section class="log-panel">
            <div class="log-toolbar">
                <input
                    type="search"
                    class="log-search"
                    placeholder="Search the log (/)"
                    aria-label="Search the log"
                    data-testid="log-search"
                    node_ref=search_input
                    prop:value=move || search.text.get()
                    on:input=move |event| on_search_input(state, event_target_value(&event))
                    on:keydown=move |event: ev::KeyboardEvent| on_search_key(state, &event)
                />
                <span class="log-matches" data-testid="log-matches" aria-live="polite">
                    {move || match_label(&search.text.get(), search.count.get(), search.current.get())}
                </span>
                <button
                    type="button"
                    class="log-button"
                    title="Previous match (Shift+Enter)"
                    aria-label="Previous match"
                    on:click=move |_| state.step_match(true)
                >
                    "↑"
                </button>
                <button
                    type="button"
                    class="log-button"
                    title="Next match (Enter)"
                    aria-label="Next match"
                    on:click=move |_| state.step_match(false)
                >
                    "↓"
                </button>
                <span class="log-toolbar-gap"></span>
                <a
                    class="log-button"
                    href=raw_url.clone()
                    download=""
                    data-testid="log-raw"
                    title="Download this log as a file"
                >
                    "Raw"
                </a>
                <button
                    type="button"
                    class="log-button log-follow"
                    class:on=move || state.follow.get()
                    data-testid="log-follow"
                    aria-pressed=move || state.follow.get().to_string()
                    title="Keep the end of the log in view (f)"
                    on:click=move |_| {
                        state.touched.set_value(true);
                        state.set_follow(!state.follow.get_untracked());
                    }
                >
                    {move || match (state.follow.get(), state.phase.get() == Phase::Ended) {
                        (true, false) => "● Following",
                        (true, true) => "● At the end",
                        (false, _) => "○ Follow",
                    }}
                </button>
            </div>
            {move || notice(state)}
            <div
                class="log-scroll"
                data-testid="log-view"
                tabindex="0"
                node_ref=state.container
                on:scroll=move |_| state.sync_scroll()
                on:wheel=move |event: ev::WheelEvent| {
                    if event.delta_y() < 0.0 && state.follow.get_untracked() {
                        state.touched.set_value(true);
                        state.follow.set(false);
                    }
                }
            >
                <div
                    class="log-spacer"
                    node_ref=state.spacer
                    style:height=move || format!("{}px", geometry.get().content_height())
                >
                    <div class="log-window" style=window_style>
                        <For
                            each=rows
                            key=|key| key.clone()
                            children=move |key| row::render(state, key)
                        />
                    </div>
                </div>
            </div>
            <div class="log-status" data-testid="log-status">
                {move || status_label(state)}
            </div>
        </section>
    }
}

/// Turns follow on when the step is still running, unless the user has
/// already moved or the log has ended meanwhile.
fn follow_if_running(state: LogState, job_id: String, task: String, step: String) {
    spawn_local(async move {
        let path = format!("/api/v1/jobs/{}", client::query_value(&job_id));
        let Ok(detail) = client::get::<JobDetail>(&path).await else {
            // The stream reports its own errors; without the step's state
            // the view just does not follow on its own.
            return;
        };
        // Empty names mean the script's own output, which lasts as long
        // as the job.
        let running = if task.is_empty() && step.is_empty() {
            !detail.job.state.is_final()
        } else {
            detail
                .tasks
                .iter()
                .flat_map(|candidate| &candidate.steps)
                .find(|candidate| candidate.task == task && candidate.name == step)
                .is_some_and(|found| !found.state.is_final())
        };
        let untouched = state.touched.try_get_value() == Some(false);
        let ended = state.phase.try_get_untracked() == Some(Phase::Ended);
        if running && untouched && !ended && state.pending_jump.get_value().is_none() {
            state.set_follow(true);
        }
    });
}

/// Listens for the viewer's keys and for hash and size changes, for as
/// long as the viewer is shown.
fn bind_window_events(state: LogState, search_input: NodeRef<Input>) {
    let keys = window_event_listener(ev::keydown, move |event| {
        if typing_in_field(&event) {
            return;
        }
        match event.key().as_str() {
            "/" => {
                if let Some(input) = search_input.get_untracked() {
                    let _ = input.focus();
                    input.select();
                }
            }
            "f" => {
                state.touched.set_value(true);
                state.set_follow(!state.follow.get_untracked());
            }
            "g" => state.go_top(),
            "G" => state.go_bottom(),
            _ => return,
        }
        event.prevent_default();
    });
    let hash = window_event_listener(ev::hashchange, move |_| state.follow_hash());
    let resize = window_event_listener(ev::resize, move |_| state.sync_scroll());
    on_cleanup(move || {
        keys.remove();
        hash.remove();
        resize.remove();
    });
}

/// Returns whether a key press is meant for a text field or carries a
/// modifier, so it is not a viewer shortcut.
fn typing_in_field(event: &web_sys::KeyboardEvent) -> bool {
    if event.ctrl_key() || event.meta_key() || event.alt_key() {
        return true;
    }
    event
        .target()
        .and_then(|target| target.dyn_into::<web_sys::HtmlElement>().ok())
        .is_some_and(|element| {
            matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                || element.is_content_editable()
        })
}

/// Milliseconds of typing pause before the search runs on its own; Enter
/// runs it at once.
const SEARCH_DELAY_MS: u64 = 200;

fn on_search_input(state: LogState, text: String) {
    let search = state.search;
    search.text.set(text);
    let generation = search.typing.get_value() + 1;
    search.typing.set_value(generation);
    set_timeout(
        move || {
            if search.typing.try_get_value() == Some(generation)
                && search.searched.get_value() != search.text.get_untracked()
            {
                state.run_search();
            }
        },
        std::time::Duration::from_millis(SEARCH_DELAY_MS),
    );
}

fn on_search_key(state: LogState, event: &ev::KeyboardEvent) {
    match event.key().as_str() {
        "Enter" => {
            event.prevent_default();
            state.step_match(event.shift_key());
        }
        "Escape" => {
            event.prevent_default();
            if let Some(container) = state.container.get_untracked() {
                let _ = container.focus();
            }
        }
        _ => {}
    }
}

/// `3 of 17`, `no matches`, or nothing without a query.
fn match_label(text: &str, count: usize, current: Option<usize>) -> String {
    if text.is_empty() {
        return String::new();
    }
    match (count, current) {
        (0, _) => "no matches".to_owned(),
        (count, Some(index)) => format!("{} of {count}", index + 1),
        (count, None) => format!("{count} matches"),
    }
}

fn status_label(state: LogState) -> String {
    let bytes = state.bytes.get();
    let lines = state.lines.get();
    let phase = match state.phase.get() {
        Phase::Connecting => "connecting".to_owned(),
        Phase::Streaming => "streaming".to_owned(),
        Phase::Reconnecting => "reconnecting".to_owned(),
        Phase::Ended => "ended".to_owned(),
        Phase::Failed(_) => "failed".to_owned(),
    };
    let line_word = if lines == 1 { "line" } else { "lines" };
    let mut label = format!(
        "{} · {lines} {line_word} · {phase}",
        format::size(i64::try_from(bytes).unwrap_or(i64::MAX))
    );
    let dropped = state.dropped.get();
    if dropped > 0 {
        label.push_str(&format!(
            " · the last {} are not shown: the viewer keeps at most {}",
            format::size(i64::try_from(dropped).unwrap_or(i64::MAX)),
            format::size(crate::logtext::MAX_TEXT_BYTES as i64),
        ));
    }
    label
}

/// Renders the loading, empty and error states above the rows.
fn notice(state: LogState) -> Option<AnyView> {
    let empty = state.lines.get() == 0;
    let (class, text) = match state.phase.get() {
        Phase::Failed(message) => ("log-notice error", message),
        Phase::Connecting if empty => ("log-notice", "Loading the log…".to_owned()),
        Phase::Reconnecting => (
            "log-notice",
            "Lost the connection to the server; reconnecting…".to_owned(),
        ),
        Phase::Streaming if empty => ("log-notice", "Waiting for output…".to_owned()),
        Phase::Ended if empty => ("log-notice", "This step printed nothing.".to_owned()),
        _ => return None,
    };
    let role = if class.ends_with("error") {
        "alert"
    } else {
        "status"
    };
    Some(view! { <p class=class role=role data-testid="log-notice">{text}</p> }.into_any())
}
