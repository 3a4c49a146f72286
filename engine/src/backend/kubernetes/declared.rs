//! The patch a job pod gets once the pipeline declares its plan. It adds
//! the pipeline's name as a label and an annotation, which a job started
//! without one lacks until then. It also sets `activeDeadlineSeconds` from
//! the job's `max_duration`, so that the cluster itself ends a pod whose
//! engine was killed, instead of leaving it running until the next engine
//! start.
//!
//! The deadline counts from the pod's start, so it is the time the pod
//! already ran, plus `max_duration`, plus [`DEADLINE_MARGIN`]. The engine
//! ends a job at `max_duration` itself; the margin leaves it time to stop
//! the steps, copy their changes back and delete the pod. A pod's deadline
//! may be lowered but never raised, so the pod is created with
//! [`INITIAL_DEADLINE`], past the longest `max_duration` a pipeline may
//! declare, and the plan lowers it. A pod whose engine died before the plan
//! still ends.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::pod::{PIPELINE_ANNOTATION, PIPELINE_LABEL, label_value};
use super::retry;

/// Time a pod gets past the job's `max_duration` before the cluster ends
/// it: enough for the engine to stop the steps and clean up. A debugging
/// pause longer than the margin still ends the pod.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The deadline a job pod is created with: the longest `max_duration`,
/// the margin, and a day for the pipeline to load and declare its plan.
/// The deadline the plan sets never exceeds it.
pub const INITIAL_DEADLINE: Duration = Duration::from_secs(
    crate::orchestrator::MAX_JOB_DURATION.as_secs() + DEADLINE_MARGIN.as_secs() + 24 * 60 * 60,
);

/// The plan's facts that the pod receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared<'a> {
    pub pipeline: &'a str,
    pub max_duration: Duration,
    /// How long the pod has existed so far.
    pub pod_age: Duration,
}

/// Returns the merge patch that labels the pod with the pipeline and sets
/// its deadline.
pub fn patch(declared: &Declared<'_>) -> serde_json::Value {
    let deadline =
        (declared.pod_age + declared.max_duration + DEADLINE_MARGIN).min(INITIAL_DEADLINE);
    let mut patch = serde_json::json!({
        "spec": { "activeDeadlineSeconds": deadline.as_secs().max(1) },
    });
    if !declared.pipeline.is_empty() {
        patch["metadata"] = serde_json::json!({
            "labels": { PIPELINE_LABEL: label_value(declared.pipeline) },
            "annotations": { PIPELINE_ANNOTATION: declared.pipeline },
        });
    }
    patch
}

/// Applies [`patch`] to the pod `name`.
///
/// # Errors
///
/// The API refused the patch, or stayed unreachable through the retries.
pub async fn apply(api: &Api<Pod>, name: &str, declared: &Declared<'_>) -> Result<(), kube::Error> {
    let patch = Patch::Merge(patch(declared));
    let params = PatchParams::default();
    retry::with_backoff("patch pod", || api.patch(name, &params, &patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_labels_the_pipeline_and_bounds_the_pod() {
        let declared = Declared {
            pipeline: "web build/main",
            max_duration: Duration::from_secs(300),
            pod_age: Duration::from_secs(7),
        };

        let patch = patch(&declared);

        assert_eq!(
            patch["metadata"]["labels"][PIPELINE_LABEL],
            "web_build_main"
        );
        assert_eq!(
            patch["metadata"]["annotations"][PIPELINE_ANNOTATION],
            "web build/main"
        );
        assert_eq!(
            patch["spec"]["activeDeadlineSeconds"],
            7 + 300 + DEADLINE_MARGIN.as_secs()
        );
    }

    #[test]
    fn patch_without_a_pipeline_sets_only_the_deadline() {
        let declared = Declared {
            pipeline: "",
            max_duration: Duration::from_secs(60),
            pod_age: Duration::ZERO,
        };

        let patch = patch(&declared);

        assert!(patch.get("metadata").is_none(), "{patch}");
        assert_eq!(patch["spec"]["activeDeadlineSeconds"], 660);
    }

    #[test]
    fn deadline_never_exceeds_the_initial_one() {
        let declared = Declared {
            pipeline: "slow",
            max_duration: crate::orchestrator::MAX_JOB_DURATION,
            pod_age: Duration::from_secs(2 * 24 * 60 * 60),
        };

        let patch = patch(&declared);

        assert_eq!(
            patch["spec"]["activeDeadlineSeconds"],
            INITIAL_DEADLINE.as_secs()
        );
    }
}
