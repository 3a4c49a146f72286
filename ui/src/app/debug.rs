//! The debug panel of a paused job: where and why it paused, a command box
//! that runs in the paused step's environment with a timeout, a browser of
//! the workspace's files, and Continue, Retry (after a failure) and Abort.
//!
//! Output and file text come from the server with the job's secrets
//! already masked.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Serialize;

use super::Failure;
use super::client::{self, ApiFailure};
use crate::api::{DebugPause, ExecResult, WorkspaceFiles};
use crate::checks::{
    DEFAULT_COMMAND_TIMEOUT_SECONDS, MAX_COMMAND_TIMEOUT_SECONDS, parse_command_timeout,
};
use crate::format;
use crate::logtext::styled_lines;

#[derive(Serialize)]
struct ExecRequest {
    command: String,
    timeout_seconds: u64,
}

#[derive(Serialize)]
struct Empty {}

/// Shows the panel while `pause` is set. `on_action` runs after a decision
/// was sent, so that the page fetches the job again.
#[component]
pub fn DebugPanel(
    job_id: String,
    pause: Signal<Option<DebugPause>>,
    on_action: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    // Rebuilt only when the pause itself changes, not on every refresh of
    // the job, so the command box and its output stay.
    let pause = Memo::new(move |_| pause.get());
    view! {
        {move || pause.get().map(|pause| view! { <PausedStep job_id=job_id.clone() pause on_action /> })}
    }
}

#[component]
fn PausedStep(
    job_id: String,
    pause: DebugPause,
    on_action: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    // Counts the commands run, so that the file list shows what they changed.
    let ran = RwSignal::new(0_u32);
    reveal_debug_panel();
    let image = pause
        .image
        .clone()
        .map(|image| view! { <dt>"Image"</dt><dd class="mono">{image}</dd> });
    view! {
        <section class="debug-panel" data-testid="debug-panel" aria-label="Debugging a paused step">
            <h2><span aria-hidden="true">"‖ "</span>{pause.summary()}</h2>
            <dl class="job-facts">
                <dt>"Working directory"</dt><dd class="mono">{pause.workdir.clone()}</dd>
                {image}
            </dl>
            <Decisions job_id=job_id.clone() retry=pause.can_retry() on_action />
            <CommandBox job_id=job_id.clone() ran />
            <FileBrowser job_id ran />
        </section>
    }
}

#[component]
fn Decisions(
    job_id: String,
    retry: bool,
    on_action: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<ApiFailure>);
    let decide = move |decision: &'static str| {
        let id = job_id.clone();
        move |_| {
            let path = format!("/api/v1/jobs/{}/debug/{decision}", client::query_value(&id));
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                match client::post::<_, serde_json::Value>(&path, &Empty {}).await {
                    Ok(_) => on_action(),
                    Err(err) => failure.set(Some(err)),
                }
                busy.set(false);
            });
        }
    };
    let retry_step = decide("retry");
    view! {
        <div class="actions">
            <button class="button primary" disabled=move || busy.get() on:click=decide("continue") data-testid="debug-continue">"Continue"</button>
            // Before a step there is nothing to retry; the server rejects it too.
            <Show when=move || retry>
                <button class="button" disabled=move || busy.get() on:click=retry_step.clone() data-testid="debug-retry">"Retry step"</button>
            </Show>
            <button class="button danger" disabled=move || busy.get() on:click=decide("abort") data-testid="debug-abort">"Abort job"</button>
        </div>
        {move || failure.get().map(|failure| view! { <Failure failure /> })}
    }
}

#[component]
fn CommandBox(job_id: String, ran: RwSignal<u32>) -> impl IntoView {
    let command = RwSignal::new(String::new());
    let timeout = RwSignal::new(DEFAULT_COMMAND_TIMEOUT_SECONDS.to_string());
    let busy = RwSignal::new(false);
    let result = RwSignal::new(None::<Result<ExecResult, ApiFailure>>);
    let run = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let text = command.get_untracked();
        if busy.get_untracked() || text.trim().is_empty() {
            return;
        }
        let timeout_seconds = match parse_command_timeout(&timeout.get_untracked()) {
            Ok(seconds) => seconds,
            Err(message) => {
                result.set(Some(Err(ApiFailure {
                    status: 400,
                    message,
                })));
                return;
            }
        };
        let path = format!("/api/v1/jobs/{}/debug/exec", client::query_value(&job_id));
        busy.set(true);
        spawn_local(async move {
            let request = ExecRequest {
                command: text,
                timeout_seconds,
            };
            let answer = client::post::<_, ExecResult>(&path, &request).await;
            result.set(Some(answer));
            busy.set(false);
            ran.update(|count| *count += 1);
        });
    };
    view! {
        <form class="debug-command" on:submit=run>
            <label for="debug-command">"Run a command in the step's environment"</label>
            <div class="debug-command-row">
                <input
                    id="debug-command"
                    type="text"
                    class="mono"
                    placeholder="ls -la"
                    autocomplete="off"
                    data-testid="debug-command"
                    bind:value=command
                />
                <label class="debug-timeout">
                    "Timeout (s) "
                    <input
                        type="text"
                        inputmode="numeric"
                        title=format!("Whole seconds, 1 to {MAX_COMMAND_TIMEOUT_SECONDS}")
                        class="num"
                        data-testid="debug-timeout"
                        bind:value=timeout
                    />
                </label>
                <button type="submit" class="button" disabled=move || busy.get() data-testid="debug-run">
                    {move || if busy.get() { "Running…" } else { "Run" }}
                </button>
            </div>
        </form>
        <pre class="debug-output" data-testid="debug-output" aria-live="polite">{move || result.get().map(|answer| match answer {
            Ok(output) => styled_lines(&render_output(&output))
                .into_iter()
                .map(|line| {
                    let pieces = line
                        .into_iter()
                        .map(|piece| view! { <span class=piece.classes style=piece.style>{piece.text}</span> })
                        .collect_view();
                    view! { {pieces}"\n" }
                })
                .collect_view()
                .into_any(),
            Err(failure) => format!("error: {}", failure.message).into_any(),
        })}</pre>
    }
}

/// Formats a command's result as a terminal would show it, with its ending.
fn render_output(output: &ExecResult) -> String {
    let mut text = format!("$ {}\n{}{}", output.command, output.stdout, output.stderr);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let ending = match (output.exit_code, output.timed_out) {
        (_, true) => "[timed out]".to_owned(),
        (Some(code), false) => format!("[exit {code}]"),
        (None, false) => "[stopped]".to_owned(),
    };
    text.push_str(&ending);
    if output.truncated {
        text.push_str(" [output cut at 1 MiB]");
    }
    text
}

#[component]
fn FileBrowser(job_id: String, ran: RwSignal<u32>) -> impl IntoView {
    let path = RwSignal::new(String::new());
    let shown = RwSignal::new(None::<Result<WorkspaceFiles, ApiFailure>>);
    Effect::new(move |_| {
        ran.track();
        let wanted = path.get();
        let url = format!(
            "/api/v1/jobs/{}/debug/files?path={}",
            client::query_value(&job_id),
            client::query_value(&wanted)
        );
        spawn_local(async move {
            let answer = client::get::<WorkspaceFiles>(&url).await;
            if path.get_untracked() == wanted {
                shown.set(Some(answer));
            }
        });
    });
    let open = move |name: String| {
        let current = path.get_untracked();
        path.set(if current.is_empty() {
            name
        } else {
            format!("{current}/{name}")
        });
    };
    let up = move |_| {
        let current = path.get_untracked();
        path.set(
            current
                .rsplit_once('/')
                .map(|(parent, _)| parent.to_owned())
                .unwrap_or_default(),
        );
    };

    view! {
        <section class="debug-files" data-testid="debug-files">
            <h3>
                "Workspace: "
                <span class="mono">{move || format!("/{}", path.get())}</span>
                " "
                <Show when=move || !path.with(String::is_empty)>
                    <button type="button" class="button" on:click=up data-testid="debug-files-up">"Up"</button>
                </Show>
            </h3>
            {move || match shown.get() {
                None => view! { <p class="muted" aria-busy="true">"Loading…"</p> }.into_any(),
                Some(Err(failure)) => view! { <Failure failure /> }.into_any(),
                Some(Ok(WorkspaceFiles::Directory { entries, .. })) => view! {
                    <ul class="debug-entries">
                        {entries.into_iter().map(|entry| {
                            let name = entry.name.clone();
                            let label = match entry.kind.as_str() {
                                "directory" => format!("{}/", entry.name),
                                "symlink" => format!("{} →", entry.name),
                                _ => entry.name.clone(),
                            };
                            let size = (entry.kind == "file").then(|| format::size(entry.size_bytes as i64));
                            view! {
                                <li data-testid="debug-file" data-kind=entry.kind.clone()>
                                    <button type="button" class="link" on:click=move |_| open(name.clone())>{label}</button>
                                    " "<span class="muted num">{size}</span>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any(),
                Some(Ok(WorkspaceFiles::File { content, truncated, size_bytes, .. })) => view! {
                    <p class="muted">{format::size(size_bytes as i64)}{truncated.then_some(" (first MiB shown)")}</p>
                    <pre class="debug-file-content" data-testid="debug-file-content">{content}</pre>
                }.into_any(),
            }}
        </section>
    }
}

/// Scrolls the page up to the debug panel once it is drawn: a pause also
/// opens the paused step's log lower down, which would hide the panel.
pub fn reveal_debug_panel() {
    request_animation_frame(|| {
        let panel = web_sys::window()
            .and_then(|window| window.document())
            .and_then(|document| {
                document
                    .query_selector("[data-testid=debug-panel]")
                    .ok()
                    .flatten()
            });
        if let Some(panel) = panel {
            let options = web_sys::ScrollIntoViewOptions::new();
            options.set_block(web_sys::ScrollLogicalPosition::Start);
            panel.scroll_into_view_with_scroll_into_view_options(&options);
        }
    });
}
