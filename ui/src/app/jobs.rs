//! The jobs list: newest first, filtered by state, pipeline or project,
//! updated live from the change feed.

use std::collections::HashMap;

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::client::{self, ApiFailure};
use super::keys::typing_in_field;
use super::trigger::TriggerText;
use super::{Failure, changes, now_ms, running_time};
use crate::api::{ChangeEvent, Job, JobDetail, JobPage, State};
use crate::format;

/// Jobs per page.
const PAGE_SIZE: usize = 50;

/// How often the first page is fetched again without a change event.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// What the list shows: one fetch per distinct filter.
#[derive(Clone, Debug, Default, PartialEq)]
struct Filter {
    state: String,
    pipeline: String,
    project: String,
}

impl Filter {
    fn query(&self, cursor: Option<&str>) -> String {
        let mut query = format!("/api/v1/jobs?limit={PAGE_SIZE}");
        for (name, value) in [
            ("state", &self.state),
            ("pipeline", &self.pipeline),
            ("project", &self.project),
        ] {
            if !value.is_empty() {
                query.push_str(&format!("&{name}={}", client::query_value(value)));
            }
        }
        if let Some(cursor) = cursor {
            query.push_str(&format!("&cursor={}", client::query_value(cursor)));
        }
        query
    }

    fn matches(&self, job: &Job) -> bool {
        (self.state.is_empty() || self.state == job.state.as_str())
            && (self.pipeline.is_empty() || self.pipeline == job.pipeline)
            && (self.project.is_empty() || self.project == job.project)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Load {
    Loading,
    Loaded,
    Failed(ApiFailure),
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let filter = Memo::new(move |_| {
        let query = query.read();
        Filter {
            state: query.get("state").unwrap_or_default(),
            pipeline: query.get("pipeline").unwrap_or_default(),
            project: query.get("project").unwrap_or_default(),
        }
    });
    super::set_title("Jobs");

    view! {
        <section class="page">
            <div class="page-head">
                <h1>"Jobs"</h1>
                <FilterBar filter />
                <A href="/run" attr:class="button primary">"Run a project"</A>
            </div>
            <JobList filter history=false />
        </section>
    }
}

/// The jobs of one project, newest first and live: a project's run
/// history.
#[component]
pub fn ProjectJobs(#[prop(into)] project: Signal<String>) -> impl IntoView {
    let filter = Memo::new(move |_| Filter {
        project: project.get(),
        ..Filter::default()
    });
    view! { <JobList filter history=true /> }
}

/// The jobs that `filter` selects, fetched a page at a time and kept
/// current from the change feed. A project's `history` has its own empty
/// state.
#[component]
fn JobList(filter: Memo<Filter>, history: bool) -> impl IntoView {
    let jobs = RwSignal::new(Vec::<Job>::new());
    let cursor = RwSignal::new(None::<String>);
    let load = RwSignal::new(Load::Loading);
    let selected = RwSignal::new(0_usize);
    let paused = Paused::default();

    let fetch_first = move || {
        let wanted = filter.get_untracked();
        spawn_local(async move {
            match client::get::<JobPage>(&wanted.query(None)).await {
                Ok(page) if filter.get_untracked() == wanted => {
                    paused.seed(&page.jobs);
                    jobs.set(page.jobs);
                    cursor.set(page.next_cursor);
                    load.set(Load::Loaded);
                }
                Ok(_) => {}
                Err(failure) => load.set(Load::Failed(failure)),
            }
        });
    };
    Effect::new(move |_| {
        filter.track();
        load.set(Load::Loading);
        selected.set(0);
        fetch_first();
    });

    // Live: known jobs change state in place; an unknown job means a new
    // one, so the first page is fetched again.
    let feed = changes();
    Effect::new(move |_| {
        let Some(event) = feed.last.get() else {
            return;
        };
        match event {
            ChangeEvent::Job {
                job_id,
                state,
                reason,
            } => {
                let known = jobs.with_untracked(|list| list.iter().any(|job| job.id == job_id));
                if known {
                    jobs.update(|list| {
                        if let Some(job) = list.iter_mut().find(|job| job.id == job_id) {
                            job.state = state;
                            job.reason = reason;
                        }
                    });
                    if state.is_final() {
                        paused.clear(&job_id);
                        fetch_first();
                    }
                } else {
                    fetch_first();
                }
            }
            ChangeEvent::Plan {
                job_id, pipeline, ..
            } => jobs.update(|list| {
                if let Some(job) = list.iter_mut().find(|job| job.id == job_id) {
                    job.pipeline = pipeline;
                }
            }),
            ChangeEvent::Paused { job_id, pause } => paused.set(job_id, pause.summary()),
            ChangeEvent::Resumed { job_id, .. } => paused.clear(&job_id),
            ChangeEvent::Lagged { .. } => fetch_first(),
            _ => {}
        }
    });

    // Jobs that `danube run` starts in other processes send no events to
    // this server, so the first page is also fetched again now and then.
    let poll = set_interval_with_handle(
        move || {
            if jobs.with_untracked(|list| list.len() <= PAGE_SIZE) {
                fetch_first();
            }
        },
        POLL_INTERVAL,
    );
    on_cleanup(move || {
        if let Ok(handle) = poll {
            handle.clear();
        }
    });

    let more = move |_| {
        let Some(next) = cursor.get_untracked() else {
            return;
        };
        let wanted = filter.get_untracked();
        spawn_local(async move {
            match client::get::<JobPage>(&wanted.query(Some(&next))).await {
                Ok(page) if filter.get_untracked() == wanted => {
                    jobs.update(|list| list.extend(page.jobs));
                    cursor.set(page.next_cursor);
                }
                Ok(_) => {}
                Err(failure) => load.set(Load::Failed(failure)),
            }
        });
    };

    list_keys(jobs, selected);

    view! {
        {move || match load.get() {
            Load::Loading => view! { <p class="loading" aria-busy="true">"Loading jobs…"</p> }.into_any(),
            Load::Failed(failure) => view! { <Failure failure /> }.into_any(),
            Load::Loaded => view! {
                <JobTable jobs filter selected history paused />
                <Show when=move || cursor.get().is_some()>
                    <button class="button" on:click=more data-testid="more-jobs">"Show older jobs"</button>
                </Show>
            }.into_any(),
        }}
    }
}

/// `j`/`k` move the selection, Enter opens the selected job.
fn list_keys(jobs: RwSignal<Vec<Job>>, selected: RwSignal<usize>) {
    let navigate = use_navigate();
    let handle = window_event_listener(ev::keydown, move |event| {
        if typing_in_field(&event) {
            return;
        }
        let count = jobs.with_untracked(Vec::len);
        if count == 0 {
            return;
        }
        match event.key().as_str() {
            "j" | "ArrowDown" => selected.update(|at| *at = (*at + 1).min(count - 1)),
            "k" | "ArrowUp" => selected.update(|at| *at = at.saturating_sub(1)),
            "Enter" => {
                let id = jobs.with_untracked(|list| {
                    list.get(selected.get_untracked()).map(|job| job.id.clone())
                });
                if let Some(id) = id {
                    navigate(&format!("/jobs/{id}"), Default::default());
                }
            }
            _ => return,
        }
        event.prevent_default();
    });
    on_cleanup(move || handle.remove());
}

#[component]
fn FilterBar(filter: Memo<Filter>) -> impl IntoView {
    let navigate = use_navigate();
    let apply = move |state: String, pipeline: String, project: String| {
        let wanted = Filter {
            state,
            pipeline,
            project,
        };
        let query = wanted.query(None);
        let search = query.trim_start_matches(&format!("/api/v1/jobs?limit={PAGE_SIZE}"));
        let search = search.trim_start_matches('&');
        let path = if search.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{search}")
        };
        navigate(&path, Default::default());
    };
    let on_state = {
        let apply = apply.clone();
        move |event: ev::Event| {
            let current = filter.get_untracked();
            apply(
                event_target_value(&event),
                current.pipeline,
                current.project,
            );
        }
    };
    let on_pipeline = move |event: ev::Event| {
        let current = filter.get_untracked();
        apply(
            current.state,
            event_target_value(&event).trim().to_owned(),
            current.project,
        );
    };
    view! {
        <form class="filters" role="search" on:submit=|event| event.prevent_default()>
            <label>
                "State "
                <select on:change=on_state data-testid="filter-state" prop:value=move || filter.get().state>
                    <option value="">"any"</option>
                    {State::JOB_STATES
                        .iter()
                        .map(|state| view! { <option value=state.as_str()>{state.as_str()}</option> })
                        .collect_view()}
                </select>
            </label>
            <label>
                "Pipeline "
                <input
                    type="search"
                    placeholder="any"
                    data-testid="filter-pipeline"
                    prop:value=move || filter.get().pipeline
                    on:change=on_pipeline
                />
            </label>
            <Show when=move || !filter.get().project.is_empty()>
                <span class="chip" title="Project filter">
                    {move || filter.get().project}
                    <A href="/" attr:class="chip-clear" attr:aria-label="Clear the project filter">"×"</A>
                </span>
            </Show>
        </form>
    }
}

#[component]
fn JobTable(
    jobs: RwSignal<Vec<Job>>,
    filter: Memo<Filter>,
    selected: RwSignal<usize>,
    history: bool,
    paused: Paused,
) -> impl IntoView {
    let now = now_ms();
    let visible = move || {
        let wanted = filter.get();
        jobs.get()
            .into_iter()
            .filter(|job| wanted.matches(job))
            .enumerate()
            .collect::<Vec<_>>()
    };
    view! {
        <Show
            when=move || !jobs.with(Vec::is_empty)
            fallback=move || view! { <EmptyJobs filtered=filter.get() != Filter::default() history /> }
        >
            <table class="jobs" data-testid="jobs">
                <thead>
                    <tr>
                        <th scope="col">"State"</th>
                        <th scope="col">"Pipeline"</th>
                        <th scope="col">"Job"</th>
                        <th scope="col">"Project"</th>
                        <th scope="col">"Target"</th>
                        <th scope="col">"Started"</th>
                        <th scope="col">"Duration"</th>
                    </tr>
                </thead>
                <tbody>
                    <For
                        each=visible
                        key=|(at, job)| (*at, job.id.clone(), job.state, job.pipeline.clone(), job.duration_ms)
                        children=move |(at, job)| {
                            let href = format!("/jobs/{}", job.id);
                            let short = format::short_id(&job.id).to_owned();
                            let pipeline = job.pipeline_label();
                            let project_filter = format!("/?project={}", client::query_value(&job.project));
                            let project_title = format!("Only jobs of {}", job.project);
                            let project = job.project.clone();
                            let target = job.target.clone().unwrap_or_else(|| "local".to_owned());
                            let started = format::ago(job.started_at.unwrap_or(job.created_at), now);
                            let duration = running_time(job.duration_ms, job.started_at);
                            let state = job.state;
                            let pause = paused.of(job.id.clone());
                            let rerun = job.changed_file().is_some().then(|| view! { <div class="muted trigger-note"><TriggerText job=job.clone() /></div> });
                            view! {
                                <tr
                                    class="job-row"
                                    class:selected=move || selected.get() == at
                                    data-testid="job-row"
                                    data-job=job.id.clone()
                                    data-state=move || if pause.get().is_some() { "paused" } else { state.as_str() }
                                >
                                    <td title=move || pause.get()>
                                        {move || match pause.get() {
                                            Some(_) => view! { <PausedBadge /> }.into_any(),
                                            None => view! { <StateBadge state /> }.into_any(),
                                        }}
                                    </td>
                                    <td><A href=href.clone()>{pipeline}</A>{rerun}</td>
                                    <td><A href=href attr:class="mono">{short}</A></td>
                                    <td class="project" title=project_title><A href=project_filter>{project}</A></td>
                                    <td class="mono" data-testid="job-row-target">{target}</td>
                                    <td>{started}</td>
                                    <td class="num">{move || duration.get()}</td>
                                </tr>
                            }
                        }
                    />
                </tbody>
            </table>
        </Show>
    }
}

/// The debug pause of each listed job, by job id. The list's jobs lack
/// their pause, so it comes from each running job's detail and then from
/// the change feed.
#[derive(Clone, Copy, Default)]
struct Paused(RwSignal<HashMap<String, String>>);

impl Paused {
    /// Asks the detail of each running job in `jobs` for its pause.
    fn seed(self, jobs: &[Job]) {
        let running = jobs.iter().filter(|job| !job.state.is_final());
        for id in running.map(|job| job.id.clone()) {
            spawn_local(async move {
                let Ok(detail) = client::get::<JobDetail>(&format!("/api/v1/jobs/{id}")).await
                else {
                    return;
                };
                match detail.pause {
                    Some(pause) => self.set(id, pause.summary()),
                    None => self.clear(&id),
                }
            });
        }
    }

    fn set(self, job_id: String, summary: String) {
        self.0.update(|paused| {
            paused.insert(job_id, summary);
        });
    }

    fn clear(self, job_id: &str) {
        if self.0.with_untracked(|paused| paused.contains_key(job_id)) {
            self.0.update(|paused| {
                paused.remove(job_id);
            });
        }
    }

    /// Returns where job `job_id` is paused, `None` while it is not.
    fn of(self, job_id: String) -> Signal<Option<String>> {
        Signal::derive(move || self.0.with(|paused| paused.get(&job_id).cloned()))
    }
}

#[component]
fn EmptyJobs(filtered: bool, history: bool) -> impl IntoView {
    if history {
        return view! {
            <section class="empty" data-testid="no-history">
                <p class="muted">"No runs of this project yet: press Run."</p>
            </section>
        }
        .into_any();
    }
    if filtered {
        return view! {
            <section class="empty">
                <h2>"No job matches these filters"</h2>
                <p><A href="/">"Clear the filters"</A>" to see every job."</p>
            </section>
        }
        .into_any();
    }
    view! {
        <section class="empty">
            <h2>"No jobs yet"</h2>
            <p>
                "Start one with "<A href="/run">"Run a project"</A>", or from a terminal with "
                <code>"danube run DIR"</code>"."
            </p>
        </section>
    }
    .into_any()
}

/// A state shown by icon, word and colour together.
#[component]
pub fn StateBadge(state: State) -> impl IntoView {
    view! {
        <span class=format!("state state-{}", state.as_str())>
            <span class="state-icon" aria-hidden="true">{state.icon()}</span>
            {state.as_str()}
        </span>
    }
}

/// Shows the state badge of a task or step paused in the debugger.
#[component]
pub fn PausedBadge() -> impl IntoView {
    view! {
        <span class="state state-paused">
            <span class="state-icon" aria-hidden="true">"‖"</span>
            "paused"
        </span>
    }
}
