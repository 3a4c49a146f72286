//! One job: its header and actions, the task DAG, the selected task's
//! steps, the selected step's log, and the artifacts.
//!
//! The selection lives in the address (`?task=&step=`), so a link opens the
//! same view. A failed job with no selection opens on its first failed
//! step, scrolled to the end of the log.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use serde::Serialize;

use super::client::{self, ApiFailure};
use super::dag_view::DagView;
use super::debug::DebugPanel;
use super::jobs::{PausedBadge, StateBadge};
use super::log_view::LogView;
use super::trigger::TriggerText;
use super::{Failure, changes, now_ms, running_time, set_title};
use crate::api::{Artifact, ChangeEvent, DebugPause, Edge, Job, JobDetail, State, Step, Task};
use crate::format;

/// How long live changes are gathered before the job is fetched again.
const REFRESH_DELAY_MS: u64 = 200;

/// How often a running job is fetched again without a change event.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq)]
enum Load {
    Loading,
    Loaded(JobDetail),
    Failed(ApiFailure),
}

/// The task and step the page shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub task: String,
    pub step: Option<String>,
    /// Open the log at its end (a failed step) rather than following it.
    pub at_end: bool,
}

impl Selection {
    /// Selects the output of `danubefile.py` itself, which the API names by
    /// leaving out task and step.
    fn script() -> Selection {
        Selection {
            task: String::new(),
            step: Some(String::new()),
            at_end: false,
        }
    }

    fn is_script(&self) -> bool {
        self.task.is_empty()
    }
}

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    let load = RwSignal::new(Load::Loading);
    let refresh_queued = StoredValue::new(false);

    let fetch = move || {
        let wanted = id.get_untracked();
        spawn_local(async move {
            let result =
                client::get::<JobDetail>(&format!("/api/v1/jobs/{}", client::query_value(&wanted)))
                    .await;
            if id.get_untracked() != wanted {
                return;
            }
            match result {
                Ok(detail) => load.set(Load::Loaded(detail)),
                Err(failure) => load.set(Load::Failed(failure)),
            }
        });
    };
    Effect::new(move |_| {
        id.track();
        load.set(Load::Loading);
        fetch();
    });

    // Live changes of this job are gathered for a moment and then fetched
    // in one request, so a burst of step events costs one refresh.
    let feed = changes();
    Effect::new(move |_| {
        let Some(event) = feed.last.get() else {
            return;
        };
        let ours = event.job_id().is_none_or(|job| job == id.get_untracked());
        if !ours || refresh_queued.get_value() {
            return;
        }
        refresh_queued.set_value(true);
        set_timeout(
            move || {
                refresh_queued.set_value(false);
                fetch();
            },
            std::time::Duration::from_millis(REFRESH_DELAY_MS),
        );
    });

    // A job that another process runs sends no events here: while it is
    // not final, it is fetched again now and then.
    let poll = set_interval_with_handle(
        move || {
            let running = matches!(&*load.read_untracked(), Load::Loaded(detail) if !detail.job.state.is_final());
            if running {
                fetch();
            }
        },
        POLL_INTERVAL,
    );
    on_cleanup(move || {
        if let Ok(handle) = poll {
            handle.clear();
        }
    });

    let selection = Memo::new(move |_| {
        let query = query.read();
        let chosen = if query.get("script").is_some() {
            Some(Selection::script())
        } else {
            query.get("task").map(|task| Selection {
                task,
                step: query.get("step"),
                at_end: false,
            })
        };
        chosen.or_else(|| match &*load.read() {
            Load::Loaded(detail) => first_failure(detail),
            _ => None,
        })
    });

    // The page is built again only when loading starts, fails or ends, not
    // on every refresh, so focus, scroll and open logs stay.
    let phase = Memo::new(move |_| match &*load.read() {
        Load::Loading => 0,
        Load::Failed(_) => 1,
        Load::Loaded(_) => 2,
    });
    view! {
        {move || match (phase.get(), load.get_untracked()) {
            (_, Load::Failed(failure)) => view! { <section class="page"><Failure failure /><p><A href="/">"Back to all jobs"</A></p></section> }.into_any(),
            (2, _) => view! { <JobView id=id.get_untracked() load selection on_action=fetch /> }.into_any(),
            _ => view! { <p class="loading page" aria-busy="true">"Loading the job…"</p> }.into_any(),
        }}
    }
}

/// Chooses what a job opens on when the address names nothing: the first failed
/// step (by start time) at its end, else the step a cancel cut off, else
/// the only task of a one-task job. A job that ended before its script
/// declared a pipeline opens on the script's output.
fn first_failure(detail: &JobDetail) -> Option<Selection> {
    let steps = || detail.tasks.iter().flat_map(|task| &task.steps);
    let earliest = |wanted: fn(State) -> bool| {
        steps()
            .filter(|step| wanted(step.state))
            .min_by_key(|step| (step.started_at, step.id))
            .map(|step| Selection {
                task: step.task.clone(),
                step: Some(step.name.clone()),
                at_end: true,
            })
    };

    if detail.tasks.is_empty() && detail.job.state.is_final() {
        // The script failed before it declared a pipeline, and its output explains why.
        return Some(Selection {
            at_end: true,
            ..Selection::script()
        });
    }
    let failed_task = || {
        detail
            .tasks
            .iter()
            .find(|task| task.state.is_bad())
            .map(|task| Selection {
                task: task.name.clone(),
                step: None,
                at_end: true,
            })
    };
    earliest(State::is_bad)
        .or_else(failed_task)
        .or_else(|| earliest(|state| state == State::Cancelled))
        .or_else(|| match detail.tasks.as_slice() {
            [only] => Some(Selection {
                task: only.name.clone(),
                step: None,
                at_end: false,
            }),
            _ => None,
        })
}

#[component]
fn JobView(
    id: String,
    load: RwSignal<Load>,
    selection: Memo<Option<Selection>>,
    on_action: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let detail = Memo::new(move |_| match load.get() {
        Load::Loaded(detail) => Some(detail),
        _ => None,
    });
    let job = Memo::new(move |_| detail.get().map(|detail| detail.job));
    let tasks = Signal::derive(move || detail.get().map(|detail| detail.tasks).unwrap_or_default());
    let edges = Signal::derive(move || detail.get().map(|detail| detail.edges).unwrap_or_default());
    let artifacts = Signal::derive(move || {
        detail
            .get()
            .map(|detail| detail.artifacts)
            .unwrap_or_default()
    });

    let pause = Signal::derive(move || {
        detail
            .get()
            .and_then(|detail| detail.pause.map(|pause| *pause))
    });
    let paused_task = Signal::derive(move || pause.get().map(|pause| pause.task));
    let notice = latest_notice(id.clone());
    let running = move || job.with(|job| job.as_ref().is_some_and(|job| !job.state.is_final()));

    view! {
        <section class="page job" data-testid="job-page">
            {move || job.get().map(|job| view! { <JobHeader job on_action /> })}
            <Show when=move || running() && notice.get().is_some()>
                <p class="notice" role="status" data-testid="notice">{move || notice.get()}</p>
            </Show>
            <DebugPanel job_id=id.clone() pause on_action />
            <div class="job-body">
                <div class="graph-pane">
                    <Show
                        when=move || !tasks.with(Vec::is_empty)
                        fallback=move || view! {
                            <p class="empty muted" data-testid="no-plan">
                                {move || if running() {
                                    "Loading danubefile.py: the graph appears once the script declares its pipeline."
                                } else {
                                    "This job has no task graph: it ended before the engine accepted a pipeline. The reason above and the script output say why."
                                }}
                            </p>
                        }
                    >
                        <TaskGraph tasks edges selection paused=paused_task />
                    </Show>
                </div>
                <div class="detail-pane">
                    <StepsPanel job_id=id tasks selection pause />
                </div>
            </div>
            <Artifacts artifacts />
        </section>
    }
}

/// Counts how long ago the job started, updated every ten seconds.
fn started_ago(started_at: Option<i64>) -> Signal<String> {
    let Some(started) = started_at else {
        return Signal::derive(|| "not started".to_owned());
    };
    let (now, set_now) = signal(now_ms());
    let ticker = set_interval_with_handle(
        move || set_now.set(now_ms()),
        std::time::Duration::from_secs(10),
    );
    on_cleanup(move || {
        if let Ok(handle) = ticker {
            handle.clear();
        }
    });
    Signal::derive(move || format::ago(started, now.get()))
}

/// Follows the last message the engine sent about job `id` (setup progress,
/// warnings), from the change feed.
fn latest_notice(id: String) -> ReadSignal<Option<String>> {
    let (notice, set_notice) = signal(None::<String>);
    let feed = changes();
    Effect::new(move |_| {
        if let Some(ChangeEvent::Notice { job_id, message }) = feed.last.get()
            && job_id == id
        {
            set_notice.set(Some(message));
        }
    });
    notice
}

#[derive(Serialize)]
struct Empty {}

#[component]
fn JobHeader(job: Job, on_action: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<ApiFailure>);
    let navigate = use_navigate();
    let job_id = job.id.clone();
    let act = move |action: &'static str| {
        let id = job_id.clone();
        let navigate = navigate.clone();
        move |_| {
            let id = id.clone();
            let navigate = navigate.clone();
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                let path = format!("/api/v1/jobs/{}/{action}", client::query_value(&id));
                match client::post::<_, Job>(&path, &Empty {}).await {
                    Ok(new_job) if action == "rerun" => {
                        navigate(&format!("/jobs/{}", new_job.id), Default::default())
                    }
                    Ok(_) => on_action(),
                    Err(err) => failure.set(Some(err)),
                }
                busy.set(false);
            });
        }
    };
    let running = !job.state.is_final();
    let title = job.pipeline_label();
    set_title(&format!(
        "{} {} {title}",
        job.state.icon(),
        job.state.as_str()
    ));
    let started = started_ago(job.started_at);
    let duration = running_time(job.duration_ms, job.started_at);
    let project_filter = format!("/?project={}", client::query_value(&job.project));
    let trigger_job = job.clone();

    view! {
        <header class="job-head">
            <div class="job-title">
                <StateBadge state=job.state />
                <h1 data-testid="job-title">{title}</h1>
                <span class="mono muted" title=job.id.clone()>{format::short_id(&job.id).to_owned()}</span>
            </div>
            <dl class="job-facts">
                <dt>"Project"</dt><dd><A href=project_filter>{job.project.clone()}</A></dd>
                <dt>"Trigger"</dt><dd><TriggerText job=trigger_job /></dd>
                <dt>"Target"</dt>
                <dd class="mono" data-testid="job-target">
                    {job.target.clone().unwrap_or_else(|| "local".to_owned())}
                </dd>
                <dt>"Started"</dt><dd>{move || started.get()}</dd>
                <dt>"Duration"</dt><dd data-testid="job-duration">{move || duration.get()}</dd>
            </dl>
            {job.reason.clone().map(|reason| view! { <p class="reason" data-testid="job-reason">{reason}</p> })}
            <div class="actions">
                {if running {
                    view! { <button class="button danger" disabled=move || busy.get() on:click=act("cancel") data-testid="cancel">"Cancel"</button> }.into_any()
                } else {
                    view! { <button class="button" disabled=move || busy.get() on:click=act("rerun") data-testid="rerun">"Rerun"</button> }.into_any()
                }}
            </div>
            {move || failure.get().map(|failure| view! { <Failure failure /> })}
        </header>
    }
}

/// Draws the task DAG. Choosing a node selects its task in the address.
#[component]
fn TaskGraph(
    tasks: Signal<Vec<Task>>,
    edges: Signal<Vec<Edge>>,
    selection: Memo<Option<Selection>>,
    paused: Signal<Option<String>>,
) -> impl IntoView {
    let selected = Signal::derive(move || selection.get().map(|chosen| chosen.task));
    let navigate = use_navigate();
    let on_select = Callback::new(move |name: String| {
        navigate(
            &here(&format!("?task={}", client::query_value(&name))),
            Default::default(),
        );
    });
    view! { <DagView tasks edges selected on_select paused /> }
}

/// Scrolls the page so that the whole log view, and so the end of a failed
/// step's log, is on screen once it is drawn, unless a debug panel is shown.
fn reveal_log() {
    request_animation_frame(|| {
        let log = web_sys::window()
            .and_then(|window| window.document())
            .and_then(|document| {
                document
                    .query_selector(".detail-pane .log-panel")
                    .ok()
                    .flatten()
            });
        if let Some(log) = log {
            let options = web_sys::ScrollIntoViewOptions::new();
            options.set_block(web_sys::ScrollLogicalPosition::Nearest);
            log.scroll_into_view_with_scroll_into_view_options(&options);
        }
        // A paused job's debug panel, at the top, matters more than the log.
        super::debug::reveal_debug_panel();
    });
}

/// This page's path with `query`: the router does not resolve a bare
/// query string against the current page.
fn here(query: &str) -> String {
    let path = web_sys::window()
        .and_then(|window| window.location().pathname().ok())
        .unwrap_or_default();
    format!("{path}{query}")
}

#[component]
fn StepsPanel(
    job_id: String,
    tasks: Signal<Vec<Task>>,
    selection: Memo<Option<Selection>>,
    pause: Signal<Option<DebugPause>>,
) -> impl IntoView {
    let task = Memo::new(move |_| {
        let chosen = selection.get()?;
        tasks
            .get()
            .into_iter()
            .find(|task| task.name == chosen.task)
    });
    let script = move || selection.get().is_some_and(|chosen| chosen.is_script());
    // Keyed on the selected log alone, so a refresh of the job does not
    // restart the log's stream.
    let log = Memo::new(move |_| {
        let chosen = selection.get()?;
        if chosen.is_script() {
            return Some((String::new(), String::new(), chosen.at_end));
        }
        // Only a step the job has: a stream of one it lacks would wait for
        // nothing. A step of a running job appears here once it starts.
        let step = task.with(|task| {
            let task = task.as_ref()?;
            match &chosen.step {
                Some(name) => task
                    .steps
                    .iter()
                    .any(|step| &step.name == name)
                    .then(|| name.clone()),
                None => step_to_show(task),
            }
        })?;
        Some((chosen.task.clone(), step, chosen.at_end))
    });
    let missing = move || {
        let chosen = selection.get().filter(|chosen| !chosen.is_script())?;
        if tasks.with(Vec::is_empty) {
            return None;
        }
        match (task.get(), &chosen.step) {
            (None, _) => Some(format!(
                "This job has no task `{}`. Select one in the graph.",
                chosen.task
            )),
            (Some(task), Some(step)) if !task.steps.iter().any(|known| &known.name == step) => {
                Some(if task.state.is_final() {
                    format!("Task `{}` ran no step `{step}`.", task.name)
                } else {
                    format!("Task `{}` has not started a step `{step}` yet.", task.name)
                })
            }
            _ => None,
        }
    };
    view! {
        <nav class="log-tabs">
            <a href=here("?script=1") class="button" aria-current=move || script().then_some("page")>"Script output"</a>
        </nav>
        {move || missing().map(|message| view! { <p class="reason" data-testid="missing">{message}</p> })}
        {move || match task.get() {
            None if script() => view! { <h2>"Output of danubefile.py"</h2> }.into_any(),
            None => view! { <p class="empty muted">"Select a task in the graph to see its steps and logs."</p> }.into_any(),
            Some(task) => {
                // A paused step is still `running` in the API.
                let paused = pause.get().filter(|pause| pause.task == task.name);
                view! { <TaskSteps task selection paused /> }.into_any()
            }
        }}
        {move || log.get().map(|(task, step, at_end)| {
            if at_end {
                reveal_log();
            }
            view! { <LogView job_id=job_id.clone() task step start_at_end=at_end /> }
        })}
    }
}

/// Picks the step whose log a task shows when no step is chosen: the first that
/// failed, else the one that started last.
fn step_to_show(task: &Task) -> Option<String> {
    let failed = task.steps.iter().find(|step| step.state.is_bad());
    failed
        .or_else(|| {
            task.steps
                .iter()
                .max_by_key(|step| (step.started_at, step.id))
        })
        .map(|step| step.name.clone())
}

#[component]
fn TaskSteps(
    task: Task,
    selection: Memo<Option<Selection>>,
    /// The job's pause, when it is in this task.
    paused: Option<DebugPause>,
) -> impl IntoView {
    let task_name = task.name.clone();
    let steps = task.steps.clone();
    let error = task.error.clone();
    let paused_step = paused.as_ref().map(|pause| pause.step_id);
    let badge = match &paused {
        Some(_) => view! { <PausedBadge /> }.into_any(),
        None => view! { <StateBadge state=task.state /> }.into_any(),
    };
    let where_paused = paused.map(|pause| {
        view! { <p class="muted" data-testid="task-paused">{pause.summary()}</p> }
    });
    view! {
        <section class="task-detail" data-testid="task-detail">
            <h2 data-testid="task-heading">{badge}" "{task.name.clone()}</h2>
            {where_paused}
            {error.map(|error| view! { <p class="reason">{error}</p> })}
            {if steps.is_empty() {
                let note = if task.state.is_final() { "This task ran no step." } else { "No step has started yet." };
                view! { <p class="muted">{note}</p> }.into_any()
            } else {
                let shown = step_to_show(&task);
                view! { <StepList steps task=task_name.clone() shown selection paused_step /> }.into_any()
            }}
        </section>
    }
}

/// Lists the steps of a task. When some step failed, the passing ones fold
/// into one line, so the failure is what the eye lands on.
#[component]
fn StepList(
    steps: Vec<Step>,
    task: String,
    /// The step whose log shows while the address names none.
    shown: Option<String>,
    selection: Memo<Option<Selection>>,
    /// The id of the step paused in the debugger, if it is in this task.
    paused_step: Option<i64>,
) -> impl IntoView {
    let failed = steps.iter().any(|step| step.state.is_bad());
    let (passing, rest): (Vec<Step>, Vec<Step>) = steps
        .into_iter()
        .partition(|step| failed && step.state == State::Success);
    let row = {
        let task = task.clone();
        move |step: Step| {
            let shown = shown.clone();
            let paused = paused_step == Some(step.id);
            view! { <StepRow step task=task.clone() shown selection paused /> }
        }
    };
    let folded = (!passing.is_empty()).then(|| {
        let count = passing.len();
        let label = if count == 1 {
            "1 passing step".to_owned()
        } else {
            format!("{count} passing steps")
        };
        let rows = passing.into_iter().map(row.clone()).collect_view();
        view! {
            <li>
                <details class="passing-steps" data-testid="passing-steps">
                    <summary class="passing">{label}</summary>
                    <ul class="steps nested">{rows}</ul>
                </details>
            </li>
        }
    });
    view! {
        <ul class="steps">
            {folded}
            {rest.into_iter().map(row).collect_view()}
        </ul>
    }
}

#[component]
fn StepRow(
    step: Step,
    task: String,
    shown: Option<String>,
    selection: Memo<Option<Selection>>,
    paused: bool,
) -> impl IntoView {
    let name = step.name.clone();
    let label = step.name.clone();
    let is_open = move || {
        let open = selection
            .get()
            .and_then(|chosen| chosen.step)
            .or_else(|| shown.clone());
        open.as_deref() == Some(name.as_str())
    };
    let href = here(&format!(
        "?task={}&step={}",
        client::query_value(&task),
        client::query_value(&step.name)
    ));
    let exit = step
        .exit_code
        .map(|code| format!("exit {code}"))
        .unwrap_or_default();
    let duration = format::step_duration(step.duration_ms, step.paused_ms);
    let command = step.command.clone();
    let shown_state = if paused {
        "paused"
    } else {
        step.state.as_str()
    };
    let badge = if paused {
        view! { <PausedBadge /> }.into_any()
    } else {
        view! { <StateBadge state=step.state /> }.into_any()
    };
    view! {
        <li class="step" class:open=is_open.clone() data-testid="step" data-step=label data-state=shown_state>
            <A href=href attr:class="step-head">
                {badge}
                <span class="step-name">{step.name.clone()}</span>
                <span class="muted">{exit}</span>
                <span class="num muted" data-testid="step-duration">{duration}</span>
            </A>
            <Show when=is_open.clone()>
                <code class="command">{command.clone()}</code>
            </Show>
        </li>
    }
}

#[component]
fn Artifacts(artifacts: Signal<Vec<Artifact>>) -> impl IntoView {
    view! {
        <Show when=move || !artifacts.with(Vec::is_empty)>
            <section class="artifacts" data-testid="artifacts">
                <h2>"Artifacts"</h2>
                <table>
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Task"</th><th scope="col">"Kind"</th><th scope="col">"Size"</th></tr></thead>
                    <tbody>
                        <For
                            each=move || artifacts.get()
                            key=|artifact| artifact.name.clone()
                            children=|artifact| view! {
                                <tr data-testid="artifact">
                                    <td><a href=artifact.download_url.clone() download=artifact.name.clone()>{artifact.name.clone()}</a></td>
                                    <td>{artifact.task.clone()}</td>
                                    <td>{artifact.kind.clone()}</td>
                                    <td class="num">{format::size(artifact.size_bytes)}</td>
                                </tr>
                            }
                        />
                    </tbody>
                </table>
            </section>
        </Show>
    }
}
