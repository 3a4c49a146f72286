//! Pod endpoints: create, get, list and watch, patch (labels, annotations
//! and `activeDeadlineSeconds`), delete, `log` and `ephemeralcontainers`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;

use super::Shared;
use super::kubelet::{self, ContainerDef, Interrupt};
use super::pod_state::{self, Group, State as ContainerState};
use super::query::Query;
use super::server::{AppState, list_or_watch, with_warnings};
use super::status::ApiError;
use super::store::{Kind, now, to_value};
use super::validation::{self, FieldValidation};

/// The grace period of a pod that sets none, as the API server defaults it.
const DEFAULT_GRACE_SECONDS: i64 = 30;

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn list(
    State(shared): AppState,
    Path(namespace): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::parse(raw.as_deref());
    respond(list_or_watch(shared, Kind::Pod, Some(namespace), &query))
}

pub(crate) async fn list_all(State(shared): AppState, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    respond(list_or_watch(shared, Kind::Pod, None, &query))
}

pub(crate) async fn create(
    State(shared): AppState,
    Path(namespace): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(create_pod(
        &shared,
        &namespace,
        &Query::parse(raw.as_deref()),
        &body,
    ))
}

fn create_pod(
    shared: &Arc<Shared>,
    namespace: &str,
    query: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let validation = FieldValidation::parse(query.get("fieldValidation"))?;
    let decoded = validation::decode::<Pod>(body, "Pod", validation)?;
    let mut pod = decoded.object;
    if let Some(body_namespace) = &pod.metadata.namespace
        && body_namespace != namespace
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({body_namespace}) does not match the \
             namespace sent on the request ({namespace})"
        )));
    }
    if pod.metadata.name.as_deref().unwrap_or_default().is_empty()
        && let Some(prefix) = &pod.metadata.generate_name
    {
        // The last characters of a version 7 uuid are random.
        let id = uuid::Uuid::now_v7().simple().to_string();
        pod.metadata.name = Some(format!("{prefix}{}", &id[id.len() - 5..]));
    }
    validation::validate_pod(&pod)?;
    if query.get("dryRun") == Some("All") {
        return Ok((StatusCode::CREATED, axum::Json(to_value(&pod))).into_response());
    }

    // The API server fills defaults before storing.
    let spec = pod.spec.get_or_insert_default();
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_GRACE_SECONDS);
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Pending".to_owned()),
        ..Default::default()
    });

    let created = shared.store.create_pod(namespace, pod)?;
    info!(
        %namespace,
        pod = created.metadata.name.as_deref().unwrap_or_default(),
        "pod created"
    );
    kubelet::start_pod(shared, &created);
    let response = (StatusCode::CREATED, axum::Json(to_value(&created))).into_response();
    Ok(with_warnings(response, &decoded.unknown_fields))
}

pub(crate) async fn get(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match shared.store.pod(&namespace, &name) {
        Some(pod) => axum::Json(to_value(&pod)).into_response(),
        None => ApiError::not_found("pods", &name).into_response(),
    }
}

pub(crate) async fn delete(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let result = (|| {
        let options: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|error| {
                ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {error}"))
            })?
        };
        let grace = match query.number("gracePeriodSeconds")? {
            Some(seconds) => Some(seconds),
            None => options["gracePeriodSeconds"].as_u64(),
        };
        let uid = options["preconditions"]["uid"].as_str();
        let pod = delete_pod(&shared, &namespace, &name, grace, uid)?;
        Ok(axum::Json(to_value(&pod)).into_response())
    })();
    respond(result)
}

/// Deletes a pod as the API server does: at once when it never ran or has
/// finished, or when `grace` is zero; otherwise it is marked with a
/// `deletionTimestamp` and the kubelet stops its containers and removes it.
///
/// # Errors
///
/// `404` for a missing pod, `409` for a failed `uid` precondition.
pub(crate) fn delete_pod(
    shared: &Shared,
    namespace: &str,
    name: &str,
    grace: Option<u64>,
    uid_precondition: Option<&str>,
) -> Result<Pod, ApiError> {
    let pod = shared
        .store
        .pod(namespace, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(wanted) = uid_precondition
        && wanted != uid
    {
        return Err(ApiError::conflict(
            "pods",
            name,
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
            ),
        ));
    }

    let spec_grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map_or(DEFAULT_GRACE_SECONDS as u64, |s| s.max(0) as u64);
    let unscheduled = pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
    let grace = if unscheduled || pod_state::is_terminal(&pod) {
        0
    } else {
        grace.unwrap_or(spec_grace)
    };
    let runtime = shared.kubelet.pod(&uid);
    info!(%namespace, pod = %name, grace, "pod deleting");

    if grace == 0 {
        if let Some(runtime) = &runtime {
            runtime.interrupt(Interrupt::Delete {
                grace: Duration::ZERO,
            });
        }
        // The kubelet finishes in the background; the API object goes now.
        return Ok(shared
            .store
            .remove_pod(namespace, name, &uid)
            .unwrap_or(pod));
    }

    let marked = shared
        .store
        .update_pod(namespace, name, |pod| {
            let seconds = i64::try_from(grace).unwrap_or(i64::MAX);
            let already = pod.metadata.deletion_grace_period_seconds;
            if already.is_none_or(|current| seconds < current) {
                let at = now().0 + k8s_openapi::jiff::SignedDuration::from_secs(seconds);
                pod.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
                pod.metadata.deletion_grace_period_seconds = Some(seconds);
            }
        })
        .unwrap_or(pod);
    if let Some(runtime) = runtime {
        runtime.interrupt(Interrupt::Delete {
            grace: Duration::from_secs(grace),
        });
    }
    Ok(marked)
}

/// Records what the node controller does to a pod on a lost node.
pub(crate) fn mark_node_lost(shared: &Shared, namespace: &str, name: &str) {
    shared.store.update_pod(namespace, name, |pod| {
        if pod.spec.as_ref().is_none_or(|s| s.node_name.is_none()) || pod_state::is_terminal(pod) {
            return;
        }
        let message = format!(
            "Node {} which was running pod {name} is unresponsive",
            super::NODE_NAME
        );
        let status = pod.status.get_or_insert_default();
        status.phase = Some("Unknown".to_owned());
        status.reason = Some("NodeLost".to_owned());
        status.message = Some(message.clone());
        pod_state::set_condition(pod, "Ready", false, Some("NodeLost"), Some(message));
        pod_state::set_condition(
            pod,
            "DisruptionTarget",
            true,
            Some("DeletionByTaintManager"),
            Some("Taint manager: deleting due to NoExecute taint".to_owned()),
        );
        if pod.metadata.deletion_timestamp.is_none() {
            pod.metadata.deletion_timestamp = Some(now());
            pod.metadata.deletion_grace_period_seconds = Some(DEFAULT_GRACE_SECONDS);
        }
    });
}

/// Streams or returns a container's log.
pub(crate) async fn log(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    respond(container_log(&shared, &namespace, &name, &Query::parse(raw.as_deref())).await)
}

/// Returns the container `query` names, or the pod's only container.
///
/// # Errors
///
/// `400 BadRequest` when the pod has several containers and none is named,
/// or the named one is not in the pod.
pub(crate) fn pick_container(pod: &Pod, wanted: Option<&str>) -> Result<String, ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let main: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let others: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.clone()),
        )
        .collect();
    match wanted.filter(|w| !w.is_empty()) {
        Some(wanted) if main.iter().chain(&others).any(|c| c == wanted) => Ok(wanted.to_owned()),
        Some(wanted) => Err(ApiError::bad_request(format!(
            "container {wanted} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

async fn container_log(
    shared: &Arc<Shared>,
    namespace: &str,
    name: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let pod = shared
        .store
        .pod(namespace, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let container = pick_container(&pod, query.get("container"))?;
    if query.flag("previous")? {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let follow = query.flag("follow")?;
    let timestamps = query.flag("timestamps")?;
    let tail = query.number("tailLines")?;
    let limit = query.number("limitBytes")?;

    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let log = shared
        .kubelet
        .pod(&uid)
        .and_then(|runtime| runtime.log(&container))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: \
                 ContainerCreating"
            ))
        })?;

    let (lines, _) = log.read_from(0);
    let start = match tail {
        Some(tail) => lines.len().saturating_sub(tail as usize),
        None => 0,
    };
    let render = move |line: &super::logs::LogLine| -> Vec<u8> {
        if timestamps {
            let mut out = format!("{} ", line.time).into_bytes();
            out.extend_from_slice(&line.bytes);
            out
        } else {
            line.bytes.clone()
        }
    };
    if !follow {
        let mut body: Vec<u8> = lines[start..].iter().flat_map(&render).collect();
        if let Some(limit) = limit {
            body.truncate(limit as usize);
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response());
    }

    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut changes = log.subscribe();
        let mut next = start;
        let mut budget = limit.unwrap_or(u64::MAX);
        loop {
            let (lines, closed) = log.read_from(next);
            next += lines.len();
            for line in &lines {
                let mut bytes = render(line);
                bytes.truncate(budget.min(bytes.len() as u64) as usize);
                budget -= bytes.len() as u64;
                if sender.send(Bytes::from(bytes)).await.is_err() || budget == 0 {
                    return;
                }
            }
            if closed || changes.changed().await.is_err() {
                return;
            }
        }
    });
    let body =
        Body::from_stream(ReceiverStream::new(receiver).map(Ok::<_, std::convert::Infallible>));
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// Applies a merge patch to a pod's labels, annotations and
/// `spec.activeDeadlineSeconds`, the fields a pod update may change here.
/// As on an API server, the deadline may be set or lowered, never raised.
pub(crate) async fn patch(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let result = (|| {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !matches!(
            media,
            "application/merge-patch+json" | "application/strategic-merge-patch+json"
        ) {
            return Err(ApiError::unsupported_media_type(media));
        }
        let patch: Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!("the patch is not valid JSON: {error}"))
        })?;
        let pod = shared
            .store
            .pod(&namespace, &name)
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        let deadline = patched_deadline(&pod, &patch)?;

        let updated = shared
            .store
            .update_pod(&namespace, &name, |pod| {
                merge_map(&mut pod.metadata.labels, &patch["metadata"]["labels"]);
                merge_map(
                    &mut pod.metadata.annotations,
                    &patch["metadata"]["annotations"],
                );
                if let Some(seconds) = deadline {
                    pod.spec.get_or_insert_default().active_deadline_seconds = Some(seconds);
                }
            })
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        if let Some(seconds) = deadline
            && let Some(runtime) = shared
                .kubelet
                .pod(updated.metadata.uid.as_deref().unwrap_or_default())
        {
            kubelet::set_deadline(&runtime, seconds);
        }
        Ok(axum::Json(to_value(&updated)).into_response())
    })();
    respond(result)
}

/// Checks that `patch` touches only what [`patch`] applies, and returns
/// the new deadline it sets, if any.
fn patched_deadline(pod: &Pod, patch: &Value) -> Result<Option<i64>, ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let forbidden = |field: &str, message: String| {
        ApiError::invalid(
            "Pod",
            &name,
            vec![super::status::Cause {
                reason: "FieldValueForbidden",
                field: field.to_owned(),
                message,
            }],
        )
    };
    let allowed_keys = |value: &Value, keys: &[&str], at: &str| -> Result<(), ApiError> {
        for key in value.as_object().into_iter().flat_map(|map| map.keys()) {
            if !keys.contains(&key.as_str()) {
                return Err(forbidden(
                    &format!("{at}{key}"),
                    "Forbidden: the emulator patches only metadata.labels, \
                     metadata.annotations and spec.activeDeadlineSeconds"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    };
    allowed_keys(patch, &["metadata", "spec"], "")?;
    allowed_keys(&patch["metadata"], &["labels", "annotations"], "metadata.")?;
    allowed_keys(&patch["spec"], &["activeDeadlineSeconds"], "spec.")?;

    let Some(wanted) = patch["spec"].get("activeDeadlineSeconds") else {
        return Ok(None);
    };
    let field = "spec.activeDeadlineSeconds";
    let seconds = wanted
        .as_i64()
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| {
            forbidden(
                field,
                format!("Invalid value: {wanted}: must be greater than 0"),
            )
        })?;
    let current = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.active_deadline_seconds);
    if current.is_some_and(|current| seconds > current) {
        return Err(forbidden(
            field,
            format!(
                "Forbidden: may not be increased (from {} to {seconds})",
                current.unwrap_or(0)
            ),
        ));
    }
    Ok(Some(seconds))
}

/// Merges a JSON object into a string map as a merge patch does: `null`
/// removes a key.
fn merge_map(map: &mut Option<std::collections::BTreeMap<String, String>>, patch: &Value) {
    let Some(entries) = patch.as_object() else {
        return;
    };
    let map = map.get_or_insert_default();
    for (key, value) in entries {
        match value.as_str() {
            Some(text) => {
                map.insert(key.clone(), text.to_owned());
            }
            None => {
                map.remove(key);
            }
        }
    }
}

pub(crate) async fn patch_ephemeral(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let result = (|| {
        let pod = shared
            .store
            .pod(&namespace, &name)
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        let existing = current_ephemeral(&pod);
        let patch: Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!("the patch is not valid JSON: {error}"))
        })?;
        let wanted = match content_type.split(';').next().unwrap_or_default().trim() {
            "application/strategic-merge-patch+json" => {
                let mut list = existing_values(&existing);
                for added in list_at(&patch["spec"]["ephemeralContainers"])? {
                    match list.iter().position(|c| c["name"] == added["name"]) {
                        Some(index) => list[index] = added,
                        None => list.push(added),
                    }
                }
                list
            }
            "application/merge-patch+json" => list_at(&patch["spec"]["ephemeralContainers"])?,
            "application/json-patch+json" => json_patch_list(&existing, &patch)?,
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        set_ephemeral(&shared, &pod, &query, wanted)
    })();
    respond(result)
}

pub(crate) async fn replace_ephemeral(
    State(shared): AppState,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let result = (|| {
        let pod = shared
            .store
            .pod(&namespace, &name)
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        let replacement: Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
        })?;
        let wanted = list_at(&replacement["spec"]["ephemeralContainers"])?;
        set_ephemeral(&shared, &pod, &query, wanted)
    })();
    respond(result)
}

fn current_ephemeral(pod: &Pod) -> Vec<EphemeralContainer> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.clone())
        .unwrap_or_default()
}

fn existing_values(existing: &[EphemeralContainer]) -> Vec<Value> {
    existing.iter().map(to_value).collect()
}

fn list_at(value: &Value) -> Result<Vec<Value>, ApiError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items.clone()),
        _ => Err(ApiError::bad_request(
            "spec.ephemeralContainers must be a list".to_owned(),
        )),
    }
}

/// Applies the `add` operations of a JSON patch that touch
/// `/spec/ephemeralContainers`, the only ones an ephemeral-container update
/// can make.
fn json_patch_list(existing: &[EphemeralContainer], patch: &Value) -> Result<Vec<Value>, ApiError> {
    let mut list = existing_values(existing);
    let operations = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be a list".to_owned()))?;
    for operation in operations {
        let path = operation["path"].as_str().unwrap_or_default();
        match (operation["op"].as_str(), path) {
            (Some("add"), "/spec/ephemeralContainers/-") => list.push(operation["value"].clone()),
            (Some("add" | "replace"), "/spec/ephemeralContainers") => {
                list = list_at(&operation["value"])?;
            }
            (op, _) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported JSON patch operation {} on `{path}`: the emulator applies \
                     `add` to /spec/ephemeralContainers/- or /spec/ephemeralContainers",
                    op.unwrap_or("(none)")
                )));
            }
        }
    }
    Ok(list)
}

/// Replaces the pod's ephemeral containers with `wanted`, which must keep
/// every existing one unchanged, and starts the new ones.
fn set_ephemeral(
    shared: &Arc<Shared>,
    pod: &Pod,
    query: &Query,
    wanted: Vec<Value>,
) -> Result<Response, ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let validation = FieldValidation::parse(query.get("fieldValidation"))?;
    let existing = current_ephemeral(pod);

    let mut decoded = Vec::new();
    let mut unknown_fields = Vec::new();
    for (index, value) in wanted.iter().enumerate() {
        let bytes = serde_json::to_vec(value).expect("JSON values serialise");
        let container =
            validation::decode::<EphemeralContainer>(&bytes, "EphemeralContainer", validation)?;
        unknown_fields.extend(
            container
                .unknown_fields
                .iter()
                .map(|field| format!("spec.ephemeralContainers[{index}].{field}")),
        );
        decoded.push(container.object);
    }
    for old in &existing {
        match decoded.iter().find(|c| c.name == old.name) {
            None => {
                return Err(ApiError::invalid(
                    "Pod",
                    &name,
                    vec![super::status::Cause {
                        reason: "FieldValueForbidden",
                        field: "spec.ephemeralContainers".to_owned(),
                        message: format!(
                            "Forbidden: existing ephemeral containers \"{}\" may not be removed",
                            old.name
                        ),
                    }],
                ));
            }
            Some(new) if new != old => {
                return Err(ApiError::invalid(
                    "Pod",
                    &name,
                    vec![super::status::Cause {
                        reason: "FieldValueForbidden",
                        field: "spec.ephemeralContainers".to_owned(),
                        message: format!(
                            "Forbidden: existing ephemeral containers \"{}\" may not be changed",
                            old.name
                        ),
                    }],
                ));
            }
            Some(_) => {}
        }
    }
    let added: Vec<EphemeralContainer> = decoded
        .iter()
        .filter(|c| existing.iter().all(|old| old.name != c.name))
        .cloned()
        .collect();
    validation::validate_ephemeral(pod, &added, existing.len())?;

    let updated = shared
        .store
        .update_pod(&namespace, &name, |pod| {
            pod.spec.get_or_insert_default().ephemeral_containers = Some(decoded.clone());
            for container in &added {
                let image = container.image.clone().unwrap_or_default();
                let state = ContainerState::Waiting {
                    reason: "ContainerCreating",
                    message: None,
                };
                pod_state::set_container(pod, Group::Ephemeral, &container.name, &image, state);
            }
        })
        .ok_or_else(|| ApiError::not_found("pods", &name))?;

    let uid = updated.metadata.uid.clone().unwrap_or_default();
    if let Some(runtime) = shared.kubelet.pod(&uid) {
        for container in &added {
            info!(%namespace, pod = %name, container = %container.name, "ephemeral container added");
            kubelet::start_ephemeral(shared, &runtime, ContainerDef::of_ephemeral(container));
        }
    }
    let response = axum::Json(to_value(&updated)).into_response();
    Ok(with_warnings(response, &unknown_fields))
}
