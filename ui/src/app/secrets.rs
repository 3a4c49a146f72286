//! Secrets: their keys and scopes, a form to store one, and removal after
//! a confirmation. Values are write-only: the API never returns them, and
//! the form clears its value field once the secret is stored. The form
//! checks the pipeline with the check `danube secret` applies.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Serialize;

use super::client::{self, ApiFailure};
use super::{Failure, set_title};
use crate::api::{Secret, SecretList};
use crate::checks::secret_pipeline;

#[derive(Serialize)]
struct PutSecret {
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
}

#[component]
pub fn SecretsPage() -> impl IntoView {
    set_title("Secrets");
    let secrets = RwSignal::new(None::<Vec<Secret>>);
    let failure = RwSignal::new(None::<ApiFailure>);
    let notice = RwSignal::new(None::<String>);
    // The secret whose Remove was clicked, as `(key, scope)`, until the
    // removal is confirmed or cancelled.
    let confirming = RwSignal::new(None::<(String, String)>);

    let refresh = move || {
        spawn_local(async move {
            match client::get::<SecretList>("/api/v1/secrets").await {
                Ok(list) => secrets.set(Some(list.secrets)),
                Err(err) => failure.set(Some(err)),
            }
        });
    };
    refresh();

    let remove = move |secret: Secret| {
        confirming.set(None);
        failure.set(None);
        let mut path = format!("/api/v1/secrets/{}", client::query_value(&secret.key));
        if let Some(pipeline) = &secret.pipeline {
            path.push_str(&format!("?pipeline={}", client::query_value(pipeline)));
        }
        spawn_local(async move {
            match client::delete(&path).await {
                Ok(()) => {
                    notice.set(Some(format!("Removed {} ({}).", secret.key, secret.scope)));
                    refresh();
                }
                Err(err) => failure.set(Some(err)),
            }
        });
    };

    view! {
        <section class="page narrow" data-testid="secrets-page">
            <h1>"Secrets"</h1>
            <p class="muted">
                "Pipelines read these with "<code>"secrets.get(KEY)"</code>". They are stored encrypted, "
                "shared with "<code>"danube secret"</code>", and never shown again once saved."
            </p>
            <SecretForm on_saved=move |message| {
                notice.set(Some(message));
                refresh();
            } failure />
            {move || notice.get().map(|text| view! { <p class="notice" role="status" data-testid="secret-notice">{text}</p> })}
            {move || failure.get().map(|failure| view! { <Failure failure /> })}
            {move || match secrets.get() {
                None => view! { <p class="loading" aria-busy="true">"Loading secrets…"</p> }.into_any(),
                Some(list) if list.is_empty() => view! {
                    <p class="empty muted" data-testid="no-secrets">"No secrets yet."</p>
                }.into_any(),
                Some(list) => view! {
                    <table class="jobs" data-testid="secrets">
                        <thead><tr><th scope="col">"Key"</th><th scope="col">"Scope"</th><th></th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|secret| {
                                let shown = secret.clone();
                                let id = (secret.key.clone(), secret.scope.clone());
                                let row = id.clone();
                                let is_confirming = move || confirming.get().as_ref() == Some(&row);
                                view! {
                                    <tr data-testid="secret-row" data-key=shown.key.clone()>
                                        <td class="mono">{shown.key.clone()}</td>
                                        <td>{shown.scope.clone()}</td>
                                        <td>
                                            <Show
                                                when=is_confirming
                                                fallback=move || {
                                                    let id = id.clone();
                                                    view! {
                                                        <button
                                                            class="button danger"
                                                            on:click=move |_| confirming.set(Some(id.clone()))
                                                            data-testid="secret-remove"
                                                        >"Remove"</button>
                                                    }
                                                }
                                            >
                                                {
                                                    let secret = secret.clone();
                                                    view! {
                                                        <span class="confirm" role="group" aria-label="Confirm removal">
                                                            "Remove for good? "
                                                            <button
                                                                class="button danger"
                                                                on:click=move |_| remove(secret.clone())
                                                                data-testid="secret-remove-confirm"
                                                            >"Remove"</button>
                                                            " "
                                                            <button
                                                                class="button"
                                                                on:click=move |_| confirming.set(None)
                                                                data-testid="secret-remove-cancel"
                                                            >"Keep"</button>
                                                        </span>
                                                    }
                                                }
                                            </Show>
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}

/// Key, optional pipeline, and the value in a password field.
#[component]
fn SecretForm(
    on_saved: impl Fn(String) + Copy + Send + Sync + 'static,
    failure: RwSignal<Option<ApiFailure>>,
) -> impl IntoView {
    let key = RwSignal::new(String::new());
    let pipeline = RwSignal::new(String::new());
    let value = RwSignal::new(String::new());
    let busy = RwSignal::new(false);

    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let name = key.get_untracked().trim().to_owned();
        if name.is_empty() || busy.get_untracked() {
            return;
        }
        let scope = pipeline.get_untracked().trim().to_owned();
        if !scope.is_empty()
            && let Err(message) = secret_pipeline(&scope)
        {
            failure.set(Some(ApiFailure {
                status: 422,
                message,
            }));
            return;
        }
        let body = PutSecret {
            value: value.get_untracked(),
            pipeline: (!scope.is_empty()).then_some(scope),
        };
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            let path = format!("/api/v1/secrets/{}", client::query_value(&name));
            match client::put::<_, Secret>(&path, &body).await {
                Ok(saved) => {
                    value.set(String::new());
                    key.set(String::new());
                    on_saved(format!("Stored {} ({}).", saved.key, saved.scope));
                }
                Err(err) => failure.set(Some(err)),
            }
            busy.set(false);
        });
    };

    view! {
        <form class="run-form" on:submit=submit data-testid="secret-form">
            <label for="secret-key">"Key"</label>
            <input id="secret-key" type="text" required placeholder="API_TOKEN" data-testid="secret-key" bind:value=key />
            <label for="secret-pipeline">"Pipeline " <span class="muted">"(empty: every pipeline)"</span></label>
            <input id="secret-pipeline" type="text" data-testid="secret-pipeline" bind:value=pipeline />
            <label for="secret-value">"Value"</label>
            <input
                id="secret-value"
                type="password"
                required
                autocomplete="off"
                data-testid="secret-value"
                bind:value=value
            />
            <button type="submit" class="button primary" disabled=move || busy.get() data-testid="secret-save">
                {move || if busy.get() { "Saving…" } else { "Save" }}
            </button>
        </form>
    }
}
