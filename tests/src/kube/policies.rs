//! Network policies: `networking.k8s.io/v1` `networkpolicies`, and
//! `cilium.io/v2` `ciliumnetworkpolicies` when
//! [`super::EmulatorOptions::cilium`] is set. Create, get, list and delete,
//! decoded as strictly as pods. They are stored, not enforced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use danube::backend::kubernetes::network::CiliumNetworkPolicy;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use tracing::info;

use super::Shared;
use super::query::Query;
use super::selector::LabelSelector;
use super::server::{AppState, with_warnings};
use super::status::{ApiError, Cause};
use super::store::now;
use super::validation::{self, FieldValidation};

/// A policy resource the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyResource {
    /// `networking.k8s.io/v1` `networkpolicies`.
    Plain,
    /// `cilium.io/v2` `ciliumnetworkpolicies`.
    Cilium,
}

impl PolicyResource {
    pub fn plural(self) -> &'static str {
        match self {
            PolicyResource::Plain => "networkpolicies",
            PolicyResource::Cilium => "ciliumnetworkpolicies",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            PolicyResource::Plain => "NetworkPolicy",
            PolicyResource::Cilium => "CiliumNetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            PolicyResource::Plain => "networking.k8s.io/v1",
            PolicyResource::Cilium => "cilium.io/v2",
        }
    }
}

/// Stored policies by resource, namespace and name.
#[derive(Default)]
pub(crate) struct PolicyStore {
    objects: Mutex<BTreeMap<(PolicyResource, String, String), Value>>,
}

impl PolicyStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(PolicyResource, String, String), Value>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the stored policies of one resource in `namespace`, by name.
    pub fn list(&self, resource: PolicyResource, namespace: &str) -> Vec<Value> {
        self.lock()
            .iter()
            .filter(|((kind, stored_namespace, _), _)| {
                *kind == resource && stored_namespace == namespace
            })
            .map(|(_, object)| object.clone())
            .collect()
    }
}

/// `/apis/networking.k8s.io/v1`.
pub(crate) async fn plain_resources() -> Response {
    resource_list(PolicyResource::Plain)
}

/// `/apis/cilium.io/v2`, which exists only with Cilium.
pub(crate) async fn cilium_resources(State(shared): AppState) -> Response {
    if !shared.options.cilium {
        return ApiError::no_route().into_response();
    }
    resource_list(PolicyResource::Cilium)
}

fn resource_list(resource: PolicyResource) -> Response {
    axum::Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": resource.api_version(),
        "resources": [{
            "name": resource.plural(),
            "singularName": "",
            "namespaced": true,
            "kind": resource.kind(),
            "verbs": ["create", "delete", "get", "list"],
        }],
    }))
    .into_response()
}

/// Returns the API groups beside the core one, for `/apis`.
pub(crate) fn groups(shared: &Shared) -> Vec<Value> {
    let group = |name: &str, version: &str| {
        let version = json!({"groupVersion": format!("{name}/{version}"), "version": version});
        json!({"name": name, "versions": [version.clone()], "preferredVersion": version})
    };
    let mut groups = vec![group("networking.k8s.io", "v1")];
    if shared.options.cilium {
        groups.push(group("cilium.io", "v2"));
    }
    groups
}

pub(crate) async fn plain_collection(
    state: AppState,
    Path(namespace): Path<String>,
    raw: RawQuery,
) -> Response {
    collection(state, PolicyResource::Plain, namespace, raw)
}

pub(crate) async fn cilium_collection(
    state: AppState,
    Path(namespace): Path<String>,
    raw: RawQuery,
) -> Response {
    collection(state, PolicyResource::Cilium, namespace, raw)
}

pub(crate) async fn plain_create(
    state: AppState,
    Path(namespace): Path<String>,
    raw: RawQuery,
    body: Bytes,
) -> Response {
    create(state, PolicyResource::Plain, namespace, raw, body)
}

pub(crate) async fn cilium_create(
    state: AppState,
    Path(namespace): Path<String>,
    raw: RawQuery,
    body: Bytes,
) -> Response {
    create(state, PolicyResource::Cilium, namespace, raw, body)
}

pub(crate) async fn plain_get(state: AppState, Path(path): Path<(String, String)>) -> Response {
    get(state, PolicyResource::Plain, path)
}

pub(crate) async fn cilium_get(state: AppState, Path(path): Path<(String, String)>) -> Response {
    get(state, PolicyResource::Cilium, path)
}

pub(crate) async fn plain_delete(state: AppState, Path(path): Path<(String, String)>) -> Response {
    delete(state, PolicyResource::Plain, path)
}

pub(crate) async fn cilium_delete(state: AppState, Path(path): Path<(String, String)>) -> Response {
    delete(state, PolicyResource::Cilium, path)
}

fn served(shared: &Shared, resource: PolicyResource) -> Result<(), ApiError> {
    if resource == PolicyResource::Cilium && !shared.options.cilium {
        return Err(ApiError::no_route());
    }
    Ok(())
}

fn collection(
    State(shared): AppState,
    resource: PolicyResource,
    namespace: String,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = (|| {
        served(&shared, resource)?;
        let query = Query::parse(raw.as_deref());
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?;
        let items: Vec<Value> = shared
            .policies
            .list(resource, &namespace)
            .into_iter()
            .filter(|item| labels.matches(item))
            .collect();
        Ok(axum::Json(json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": shared.store.revision().to_string()},
            "items": items,
        }))
        .into_response())
    })();
    result.unwrap_or_else(|error: ApiError| error.into_response())
}

fn create(
    State(shared): AppState,
    resource: PolicyResource,
    namespace: String,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let result = (|| {
        served(&shared, resource)?;
        let query = Query::parse(raw.as_deref());
        let validation = FieldValidation::parse(query.get("fieldValidation"))?;
        let (mut object, unknown_fields) = decode(resource, &body, validation)?;
        let name = check_metadata(resource, &namespace, &object)?;
        if shared.store.namespace(&namespace).is_none() {
            return Err(ApiError::not_found("namespaces", &namespace));
        }

        let metadata = object["metadata"]
            .as_object_mut()
            .expect("check_metadata found the metadata object");
        metadata.insert("namespace".into(), json!(namespace));
        metadata.insert("uid".into(), json!(uuid::Uuid::now_v7().to_string()));
        metadata.insert("creationTimestamp".into(), json!(now()));
        metadata.insert(
            "resourceVersion".into(),
            json!(shared.store.bump_revision().to_string()),
        );
        let key = (resource, namespace.clone(), name.clone());
        {
            let mut objects = shared.policies.lock();
            if objects.contains_key(&key) {
                return Err(ApiError::already_exists(resource.plural(), &name));
            }
            objects.insert(key, object.clone());
        }
        info!(%namespace, %name, resource = resource.plural(), "policy created");
        let response = (StatusCode::CREATED, axum::Json(object)).into_response();
        Ok(with_warnings(response, &unknown_fields))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Decodes a policy strictly and returns it as JSON with its unknown fields.
fn decode(
    resource: PolicyResource,
    body: &[u8],
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let kind = resource.kind();
    let (mut object, unknown_fields) = match resource {
        PolicyResource::Plain => {
            let decoded = validation::decode::<NetworkPolicy>(body, kind, validation)?;
            (
                serde_json::to_value(&decoded.object).expect("policies serialise"),
                decoded.unknown_fields,
            )
        }
        PolicyResource::Cilium => {
            let decoded = validation::decode::<CiliumNetworkPolicy>(body, kind, validation)?;
            (
                serde_json::to_value(&decoded.object).expect("policies serialise"),
                decoded.unknown_fields,
            )
        }
    };
    object["apiVersion"] = json!(resource.api_version());
    object["kind"] = json!(kind);
    Ok((object, unknown_fields))
}

/// Checks the name and namespace of a decoded policy and returns the name.
fn check_metadata(
    resource: PolicyResource,
    namespace: &str,
    object: &Value,
) -> Result<String, ApiError> {
    let metadata = &object["metadata"];
    if let Some(body_namespace) = metadata["namespace"].as_str()
        && body_namespace != namespace
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({body_namespace}) does not match the \
             namespace sent on the request ({namespace})"
        )));
    }
    let name = metadata["name"].as_str().unwrap_or_default().to_owned();
    if !validation::is_dns_subdomain(&name) || !metadata.is_object() {
        return Err(ApiError::invalid(
            resource.kind(),
            &name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "metadata.name".to_owned(),
                message: format!(
                    "Invalid value: \"{name}\": must be a lowercase RFC 1123 subdomain"
                ),
            }],
        ));
    }
    Ok(name)
}

fn get(
    State(shared): AppState,
    resource: PolicyResource,
    (namespace, name): (String, String),
) -> Response {
    if let Err(error) = served(&shared, resource) {
        return error.into_response();
    }
    let object = shared
        .policies
        .lock()
        .get(&(resource, namespace, name.clone()))
        .cloned();
    match object {
        Some(object) => axum::Json(object).into_response(),
        None => ApiError::not_found(resource.plural(), &name).into_response(),
    }
}

fn delete(
    State(shared): AppState,
    resource: PolicyResource,
    (namespace, name): (String, String),
) -> Response {
    if let Err(error) = served(&shared, resource) {
        return error.into_response();
    }
    let removed = shared
        .policies
        .lock()
        .remove(&(resource, namespace.clone(), name.clone()));
    match removed {
        Some(object) => {
            shared.store.bump_revision();
            info!(%namespace, %name, resource = resource.plural(), "policy deleted");
            axum::Json(object).into_response()
        }
        None => ApiError::not_found(resource.plural(), &name).into_response(),
    }
}

/// Returns the policies of `resource` in `namespace`, for the test's handle.
pub(crate) fn stored(
    shared: &Arc<Shared>,
    resource: PolicyResource,
    namespace: &str,
) -> Vec<Value> {
    shared.policies.list(resource, namespace)
}
