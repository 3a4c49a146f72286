//! The text that names a job's trigger on the job page and in the jobs list.

use leptos::prelude::*;

use crate::api::Job;

/// Shows the trigger of `job`: its type, or for a job that a watch session
/// reran, the file whose change started it.
#[component]
pub fn TriggerText(job: Job) -> impl IntoView {
    match job.changed_file() {
        Some(path) => view! {
            <span class="trigger" data-testid="job-trigger">
                "rerun after a change to "<code>{path.to_owned()}</code>
            </span>
        }
        .into_any(),
        None => view! { <span class="trigger" data-testid="job-trigger">{job.trigger_type.clone()}</span> }
            .into_any(),
    }
}
