//! The job page's task graph: one button per task, placed by
//! [`crate::dag::layout`] over an SVG of the `needs` edges.
//!
//! The layout depends only on the task names and the edges, so state
//! changes recolour the nodes without moving them.

use std::collections::HashMap;
use std::time::Duration;

use leptos::ev::KeyboardEvent;
use leptos::html;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast as _;
use leptos::web_sys::{Element, HtmlElement};

use crate::api::{Edge, State, Task};
use crate::dag::{self, Direction, Layout, Params};
use crate::format;

/// The part of a [`Task`] that a node shows and that changes while the
/// job runs.
#[derive(Clone, Debug, PartialEq)]
struct Status {
    state: State,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
    steps: usize,
    needs: Vec<String>,
}

impl Status {
    fn of(task: &Task) -> Status {
        Status {
            state: task.state,
            started_at: task.started_at,
            finished_at: task.finished_at,
            duration_ms: task.duration_ms,
            steps: task.steps.len(),
            needs: task.needs.clone(),
        }
    }

    /// Returns the status of a task in the layout but not (yet) in the task list.
    fn unknown() -> Status {
        Status {
            state: State::Pending,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            steps: 0,
            needs: Vec::new(),
        }
    }

    /// Returns how long the task ran or, while it runs, how long it has
    /// been running at `now_ms`. `None` before it starts.
    fn elapsed_ms(&self, now_ms: impl FnOnce() -> i64) -> Option<i64> {
        if let Some(ms) = self.duration_ms {
            return Some(ms);
        }
        let started = self.started_at?;
        match self.finished_at {
            Some(finished) => Some(finished - started),
            None if self.state == State::Running => Some(now_ms() - started),
            None => None,
        }
    }
}

/// Draws the task graph. Clicking a task, or pressing Enter on it, calls
/// `on_select` with its name. Arrow keys move the focus between tasks; see
/// [`Layout::neighbor`]. The task named by `paused` shows as `paused`
/// (a step of it waits for a debugging user) instead of `running`.
#[component]
pub fn DagView(
    tasks: Signal<Vec<Task>>,
    edges: Signal<Vec<Edge>>,
    selected: Signal<Option<String>>,
    on_select: Callback<String>,
    #[prop(optional)] paused: Option<Signal<Option<String>>>,
) -> impl IntoView {
    let paused = paused.unwrap_or_else(|| Signal::derive(|| None));
    // Recomputed only when a name or an edge changes, so live state
    // updates never move a node.
    let shape = Memo::new(move |_| {
        let names: Vec<String> =
            tasks.with(|tasks| tasks.iter().map(|task| task.name.clone()).collect());
        (names, edges.get())
    });
    let layout = Memo::new(move |_| {
        shape.with(|(names, edges)| dag::layout(names, edges, &Params::default()))
    });

    // Statuses indexed like `Layout::nodes`.
    let statuses = Memo::new(move |_| {
        layout.with(|layout| {
            tasks.with(|tasks| {
                let by_name: HashMap<&str, &Task> = tasks
                    .iter()
                    .map(|task| (task.name.as_str(), task))
                    .collect();
                layout
                    .nodes
                    .iter()
                    .map(|node| {
                        by_name
                            .get(node.name.as_str())
                            .map_or_else(Status::unknown, |task| Status::of(task))
                    })
                    .collect::<Vec<Status>>()
            })
        })
    });

    let now = clock();
    let nodes_ref = NodeRef::<html::Div>::new();
    let frame_ref = NodeRef::<html::Div>::new();

    // Scrolls a selected node that is out of sight into the middle of the
    // frame, after it renders. Only the frame scrolls, never the page.
    Effect::new(move |_| {
        let Some(name) = selected.get() else {
            return;
        };
        let Some(frame) = frame_ref.get() else {
            return;
        };
        layout.with(|layout| {
            if let Some(index) = layout.node_index(&name) {
                reveal(&frame, &layout.nodes[index]);
            }
        });
    });

    let graph = move || {
        layout.with(|layout| {
            let edges = layout
                .edges
                .iter()
                .map(|route| edge_view(route, statuses))
                .collect_view();
            let nodes = layout
                .nodes
                .iter()
                .enumerate()
                .map(|(index, node)| {
                    node_view(NodeContext {
                        index,
                        node,
                        statuses,
                        layout,
                        selected,
                        paused,
                        on_select,
                        now,
                        nodes_ref,
                    })
                })
                .collect_view();
            let (width, height) = (layout.width, layout.height);

            view! {
                <div class="dag-canvas" style:width=format!("{width}px") style:height=format!("{height}px")>
                    <svg
                        data-testid="dag"
                        class="dag-edges"
                        width=width
                        height=height
                        viewBox=format!("0 0 {width} {height}")
                        aria-hidden="true"
                    >
                        <defs>
                            {arrow_marker("dag-arrow")}
                            {arrow_marker("dag-arrow-run")}
                            {arrow_marker("dag-arrow-bad")}
                        </defs>
                        {edges}
                    </svg>
                    <div class="dag-nodes" node_ref=nodes_ref>
                        {nodes}
                    </div>
                </div>
            }
        })
    };

    view! {
        <div class="dag-scroll" role="group" aria-label="Task graph" node_ref=frame_ref>
            {graph}
        </div>
    }
}

/// Returns a signal of the current time in milliseconds since the epoch,
/// updated every second while the view is mounted. Only running tasks
/// read it.
fn clock() -> ReadSignal<i64> {
    let (now, set_now) = signal(js_sys::Date::now() as i64);
    if let Ok(handle) = set_interval_with_handle(
        move || set_now.set(js_sys::Date::now() as i64),
        Duration::from_secs(1),
    ) {
        on_cleanup(move || handle.clear());
    }
    now
}

fn arrow_marker(id: &'static str) -> impl IntoView {
    view! {
        <marker
            id=id
            class="dag-arrow"
            viewBox="0 0 10 10"
            refX="10"
            refY="5"
            markerWidth="9"
            markerHeight="9"
            markerUnits="userSpaceOnUse"
            orient="auto"
        >
            <path d="M0 0 L10 5 L0 10 z"></path>
        </marker>
    }
}

fn edge_view(route: &dag::Route, statuses: Memo<Vec<Status>>) -> impl IntoView + use<> {
    let to = route.to;
    let target = Memo::new(move |_| statuses.with(|all| all.get(to).map(|status| status.state)));
    let class = move || match target.get() {
        Some(state) if state.is_bad() => "dag-edge dag-edge-bad",
        Some(State::Running) => "dag-edge dag-edge-run",
        _ => "dag-edge",
    };
    let marker = move || match target.get() {
        Some(state) if state.is_bad() => "url(#dag-arrow-bad)",
        Some(State::Running) => "url(#dag-arrow-run)",
        _ => "url(#dag-arrow)",
    };
    view! { <path class=class d=route.path.clone() marker-end=marker></path> }
}

/// The parts of a [`DagView`] that one node uses.
struct NodeContext<'a> {
    /// Index of `node` in [`Layout::nodes`].
    index: usize,
    node: &'a dag::Node,
    statuses: Memo<Vec<Status>>,
    layout: &'a Layout,
    selected: Signal<Option<String>>,
    paused: Signal<Option<String>>,
    on_select: Callback<String>,
    now: ReadSignal<i64>,
    nodes_ref: NodeRef<html::Div>,
}

fn node_view(context: NodeContext<'_>) -> impl IntoView + use<> {
    let NodeContext {
        index,
        node,
        statuses,
        layout,
        selected,
        paused,
        on_select,
        now,
        nodes_ref,
    } = context;
    let name = node.name.clone();
    let params = Params::default();
    let style = format!(
        "left:{}px;top:{}px;width:{}px;height:{}px",
        node.x, node.y, params.node_width, params.node_height
    );
    // Arrow keys need the neighbours, which stay put as long as this node
    // exists: a new layout renders new nodes.
    let neighbours = [
        Direction::Left,
        Direction::Right,
        Direction::Up,
        Direction::Down,
    ]
    .map(|direction| (direction, layout.neighbor(index, direction)));

    let status = Memo::new(move |_| {
        statuses.with(|all| all.get(index).cloned().unwrap_or_else(Status::unknown))
    });
    let state = move || status.with(|status| status.state);
    let is_paused = {
        let name = name.clone();
        Memo::new(move |_| paused.with(|paused| paused.as_deref() == Some(name.as_str())))
    };
    // The word and glyph shown: a paused task is still `running` in the API.
    let shown_state = move || {
        if is_paused.get() {
            ("paused", "‖")
        } else {
            (state().as_str(), state().icon())
        }
    };
    // Reads the clock only while the task runs, so idle nodes never re-render.
    let duration =
        move || status.with(|status| status.elapsed_ms(|| now.get()).map(format::duration));
    let steps = move || match status.with(|status| status.steps) {
        0 => "no steps".to_owned(),
        1 => "1 step".to_owned(),
        count => format!("{count} steps"),
    };
    let meta = move || {
        let meta = match duration() {
            Some(duration) => format!("{duration} · {}", steps()),
            None => steps(),
        };
        if is_paused.get() {
            format!("paused · {meta}")
        } else {
            meta
        }
    };
    let label = {
        let name = name.clone();
        move || {
            let needs = status.with(|status| status.needs.join(", "));
            let mut label = format!("{name}: {}, {}", shown_state().0, meta());
            if !needs.is_empty() {
                label.push_str(&format!(", needs {needs}"));
            }
            label
        }
    };
    let is_selected = {
        let name = name.clone();
        move || selected.with(|selected| selected.as_deref() == Some(name.as_str()))
    };
    // One Tab stop for the whole graph (the selected node, else the first),
    // so that Tab moves past a large graph at once; arrows move inside it.
    let tab_index = {
        let is_selected = is_selected.clone();
        move || {
            let first_without_selection = index == 0 && selected.with(Option::is_none);
            if is_selected() || first_without_selection {
                "0"
            } else {
                "-1"
            }
        }
    };
    let class = {
        let is_selected = is_selected.clone();
        move || {
            if is_selected() {
                "dag-node dag-node-selected"
            } else {
                "dag-node"
            }
        }
    };

    let on_click = {
        let name = name.clone();
        move |_| on_select.run(name.clone())
    };
    let on_keydown = move |event: KeyboardEvent| {
        let direction = match event.key().as_str() {
            "ArrowLeft" => Direction::Left,
            "ArrowRight" => Direction::Right,
            "ArrowUp" => Direction::Up,
            "ArrowDown" => Direction::Down,
            _ => return,
        };
        // Keep the arrow from scrolling the graph; focusing scrolls instead.
        event.prevent_default();
        let target = neighbours
            .iter()
            .find(|(candidate, _)| *candidate == direction)
            .and_then(|(_, target)| *target);
        if let Some(target) = target {
            focus_node(nodes_ref, target);
        }
    };

    let (task_attribute, title) = (name.clone(), name.clone());
    let icon_state = shown_state;
    view! {
        <button
            type="button"
            class=class
            style=style
            data-testid="dag-node"
            data-task=task_attribute
            data-index=index
            data-state=move || shown_state().0
            aria-label=label
            aria-pressed=move || if is_selected() { "true" } else { "false" }
            tabindex=tab_index
            title=title
            on:click=on_click
            on:keydown=on_keydown
        >
            <span class="dag-node-head">
                <span class="dag-node-icon" aria-hidden="true">{move || icon_state().1}</span>
                <span class="dag-node-name">{name}</span>
            </span>
            <span class="dag-node-meta" aria-hidden="true">{meta}</span>
        </button>
    }
}

/// Scrolls `frame` so that `node` is in the middle of it, unless all of
/// `node` is already in sight.
fn reveal(frame: &Element, node: &dag::Node) {
    let params = Params::default();
    let (left, top) = (
        f64::from(frame.scroll_left()),
        f64::from(frame.scroll_top()),
    );
    let (width, height) = (
        f64::from(frame.client_width()),
        f64::from(frame.client_height()),
    );
    if node.x < left || node.x + params.node_width > left + width {
        frame.set_scroll_left((node.x + (params.node_width - width) / 2.0).max(0.0) as i32);
    }
    if node.y < top || node.y + params.node_height > top + height {
        frame.set_scroll_top((node.y + (params.node_height - height) / 2.0).max(0.0) as i32);
    }
}

/// Moves the keyboard focus to the node at `index` in [`Layout::nodes`],
/// which makes the browser scroll it into view.
fn focus_node(nodes_ref: NodeRef<html::Div>, index: usize) {
    let Some(nodes) = nodes_ref.get_untracked() else {
        return;
    };
    let selector = format!("[data-index=\"{index}\"]");
    if let Ok(Some(element)) = nodes.query_selector(&selector)
        && let Ok(element) = element.dyn_into::<HtmlElement>()
    {
        let _ = element.focus();
    }
}
