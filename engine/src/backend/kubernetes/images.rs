//! Containers for images other than the worker's: a task's `image=` or a
//! step's. Each image gets one ephemeral container, added to the running pod
//! the first time a step needs it and reused by later steps. Ephemeral
//! containers can be added to a running pod (a pod's regular containers
//! cannot change), share its volumes, and idle on the supervisor like the
//! worker, so images without a shell work too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::{Mutex, watch};

use super::error::KubeError;
use super::lifecycle::{self, Observed, container_failure};
use super::pod::build_image_container;
use super::retry;

/// Ephemeral containers of one job pod, by image.
#[derive(Default)]
pub struct ImageContainers {
    /// Held while a container is added, so two steps that need the same
    /// image add it once.
    state: Mutex<Added>,
}

#[derive(Default)]
struct Added {
    /// Image to the name of its running container.
    by_image: BTreeMap<String, String>,
    /// Containers added so far, failed ones included, since a name cannot
    /// be used twice in a pod.
    count: usize,
}

impl ImageContainers {
    /// Returns the container that runs `image`, adding it to the pod and
    /// waiting for it to run if it is new.
    ///
    /// # Errors
    ///
    /// The patch was rejected, the image cannot be pulled, or the pod failed.
    pub async fn container_for(
        &self,
        api: &kube::Api<Pod>,
        pod: &str,
        image: &str,
        pod_state: &watch::Receiver<Observed>,
    ) -> Result<String, KubeError> {
        let mut added = self.state.lock().await;
        if let Some(name) = added.by_image.get(image) {
            return Ok(name.clone());
        }

        added.count += 1;
        let name = format!("image-{}", added.count);
        let container = build_image_container(&name, image);
        let patch = json!({"spec": {"ephemeralContainers": [container]}});
        let patch = Patch::Strategic(&patch);
        let params = PatchParams::default();
        retry::with_backoff("add ephemeral container", || {
            api.patch_ephemeral_containers(pod, &params, &patch)
        })
        .await
        .map_err(|source| KubeError::AddImageContainer {
            image: image.to_owned(),
            pod: pod.to_owned(),
            source: Box::new(source),
        })?;
        tracing::info!(pod, container = %name, image, "added a container for an image");

        let mut receiver = pod_state.clone();
        let started = lifecycle::wait_for(&mut receiver, |observed| {
            let status = observed
                .pod
                .as_ref()?
                .status
                .as_ref()?
                .ephemeral_container_statuses
                .as_ref()?
                .iter()
                .find(|status| status.name == name)?;
            if let Some(reason) = container_failure(status) {
                return Some(Err(reason));
            }
            let running = status.state.as_ref()?.running.is_some();
            running.then_some(Ok(()))
        })
        .await;
        let failed = |reason: String| KubeError::ImageContainerFailed {
            image: image.to_owned(),
            pod: pod.to_owned(),
            reason,
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(reason)) | Err(reason) => return Err(failed(reason)),
        }

        added.by_image.insert(image.to_owned(), name.clone());
        Ok(name)
    }
}
