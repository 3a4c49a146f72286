//! Routes, authentication, authorisation and request counting, discovery,
//! and the namespace and node endpoints. Pod endpoints are in
//! [`super::pods`], exec in [`super::exec`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::Shared;
use super::exec;
use super::pods;
use super::policies;
use super::query::Query;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Kind, to_value};
use super::validation::{self, FieldValidation};
use super::watch::{self, WatchRequest};

pub(crate) type AppState = State<Arc<Shared>>;

/// The user RBAC messages name.
const USER: &str = "system:serviceaccount:danube-system:danube-engine";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let pod_routes = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(pods::list).post(pods::create),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(pods::get).delete(pods::delete).patch(pods::patch),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/status",
            get(pods::get),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(pods::log),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(exec::exec).post(exec::exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers",
            get(pods::get)
                .patch(pods::patch_ephemeral)
                .put(pods::replace_ephemeral),
        )
        .route("/api/v1/pods", get(pods::list_all));

    let policy_routes = Router::new()
        .route("/apis/networking.k8s.io/v1", get(policies::plain_resources))
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
            get(policies::plain_collection).post(policies::plain_create),
        )
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
            get(policies::plain_get).delete(policies::plain_delete),
        )
        .route("/apis/cilium.io/v2", get(policies::cilium_resources))
        .route(
            "/apis/cilium.io/v2/namespaces/{namespace}/ciliumnetworkpolicies",
            get(policies::cilium_collection).post(policies::cilium_create),
        )
        .route(
            "/apis/cilium.io/v2/namespaces/{namespace}/ciliumnetworkpolicies/{name}",
            get(policies::cilium_get).delete(policies::cilium_delete),
        );

    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(api_resources))
        .route("/apis", get(api_groups))
        .route(
            "/api/v1/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/api/v1/namespaces/{namespace}",
            get(get_namespace).delete(delete_namespace),
        )
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .merge(pod_routes)
        .merge(policy_routes)
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// What RBAC would check for a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Action {
    pub verb: String,
    /// `pods`, `pods/exec`, or the path for non-resource requests.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

pub(crate) fn classify(method: &Method, path: &str, query: &Query) -> Action {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watch = query.flag("watch").unwrap_or(false);
    let collection_verb = || match *method {
        Method::POST => "create",
        Method::DELETE => "deletecollection",
        _ if watch => "watch",
        _ => "list",
    };
    let item_verb = || match *method {
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::POST => "create",
        _ if watch => "watch",
        _ => "get",
    };
    let action =
        |verb: &str, resource: String, namespace: Option<&str>, name: Option<&str>| Action {
            verb: verb.to_owned(),
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        };
    // Named API groups put two segments where the core group has `api/v1`.
    let segments: Vec<&str> = match segments.as_slice() {
        ["apis", _group, _version, rest @ ..] if !rest.is_empty() => {
            [&["api", "v1"][..], rest].concat()
        }
        _ => segments,
    };
    match segments.as_slice() {
        ["api", "v1", "namespaces"] => action(collection_verb(), "namespaces".into(), None, None),
        ["api", "v1", "namespaces", name] => {
            action(item_verb(), "namespaces".into(), None, Some(name))
        }
        ["api", "v1", "namespaces", namespace, resource] => {
            action(collection_verb(), (*resource).into(), Some(namespace), None)
        }
        ["api", "v1", "namespaces", namespace, resource, name] => {
            action(item_verb(), (*resource).into(), Some(namespace), Some(name))
        }
        ["api", "v1", "namespaces", namespace, resource, name, sub] => {
            // The exec WebSocket is a GET, but RBAC checks `create`.
            let verb = if *sub == "exec" {
                "create"
            } else {
                item_verb()
            };
            action(
                verb,
                format!("{resource}/{sub}"),
                Some(namespace),
                Some(name),
            )
        }
        ["api", "v1", resource] => action(collection_verb(), (*resource).into(), None, None),
        ["api", "v1", resource, name] => action(item_verb(), (*resource).into(), None, Some(name)),
        _ => action(&method.as_str().to_lowercase(), path.to_owned(), None, None),
    }
}

/// Checks the bearer token and the namespace allowance, then counts the
/// request.
async fn gate(State(shared): AppState, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented != Some(shared.token.as_str()) {
        debug!(path = %request.uri().path(), "request with a missing or wrong token");
        return ApiError::unauthorized().into_response();
    }

    let query = Query::parse(request.uri().query());
    let action = classify(request.method(), request.uri().path(), &query);
    if let Some(allowed) = &shared.options.allowed_namespaces
        && action
            .resource
            .starts_with(|c: char| c.is_ascii_lowercase())
        && !action
            .namespace
            .as_ref()
            .is_some_and(|namespace| allowed.contains(namespace))
    {
        let scope = match &action.namespace {
            Some(namespace) => format!("in the namespace \"{namespace}\""),
            None => "at the cluster scope".to_owned(),
        };
        return ApiError::forbidden(format!(
            "{} is forbidden: User \"{USER}\" cannot {} resource \"{}\" in API group \"\" {scope}",
            action.resource, action.verb, action.resource
        ))
        .into_response();
    }
    shared.count(&action.verb, &action.resource);
    next.run(request).await
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-danube-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}

async fn api_versions(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }))
    .into_response()
}

async fn api_groups(State(shared): AppState) -> Response {
    let groups = policies::groups(&shared);
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

async fn api_resources() -> Response {
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| {
        json!({
            "name": name,
            "singularName": "",
            "namespaced": namespaced,
            "kind": kind,
            "verbs": verbs,
        })
    };
    axum::Json(json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            resource("namespaces", "Namespace", false, &["create", "delete", "get", "list", "watch"]),
            resource("nodes", "Node", false, &["get", "list", "watch"]),
            resource("pods", "Pod", true, &["create", "delete", "get", "list", "patch", "watch"]),
            resource("pods/ephemeralcontainers", "Pod", true, &["get", "patch", "update"]),
            resource("pods/exec", "PodExecOptions", true, &["create", "get"]),
            resource("pods/log", "Pod", true, &["get"]),
            resource("pods/status", "Pod", true, &["get"]),
        ],
    }))
    .into_response()
}

/// Returns the fields `fieldSelector` may name for each resource.
pub(crate) fn selectable_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        Kind::Namespace => &["metadata.name", "status.phase"],
        Kind::Node => &["metadata.name", "spec.unschedulable"],
    }
}

/// Answers a list or, with `watch=true`, a watch of `kind`.
pub(crate) fn list_or_watch(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    query: &Query,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or_default(),
        selectable_fields(kind),
    )?;

    if query.flag("watch")? {
        let since = match query.get("resourceVersion") {
            None | Some("" | "0") => None,
            Some(version) => Some(version.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resourceVersion `{version}`: use a version from a list or an event"
                ))
            })?),
        };
        let timeout = query.number("timeoutSeconds")?.unwrap_or(1800);
        let request = WatchRequest {
            kind,
            namespace,
            labels,
            fields,
            since,
            bookmarks: query.flag("allowWatchBookmarks")?,
            send_initial_events: query.flag("sendInitialEvents")?,
            timeout: Duration::from_secs(timeout),
        };
        return Ok(watch::respond(shared, request));
    }

    let (items, revision): (Vec<Value>, u64) = match kind {
        Kind::Pod => {
            let (pods, revision) = shared.store.pods(namespace.as_deref());
            (pods.iter().map(to_value).collect(), revision)
        }
        Kind::Namespace => {
            let (namespaces, revision) = shared.store.namespaces();
            (namespaces.iter().map(to_value).collect(), revision)
        }
        Kind::Node => {
            let (nodes, revision) = shared.store.nodes();
            (nodes.iter().map(to_value).collect(), revision)
        }
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|item| labels.matches(item) && fields.matches(item))
        .collect();
    Ok(axum::Json(json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
    .into_response())
}

/// Adds a `Warning` header per unknown field, as `fieldValidation=Warn`
/// does.
pub(crate) fn with_warnings(mut response: Response, unknown_fields: &[String]) -> Response {
    for field in unknown_fields {
        let text = format!("299 - \"unknown field \\\"{field}\\\"\"");
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

async fn list_namespaces(State(shared): AppState, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    list_or_watch(shared, Kind::Namespace, None, &query).unwrap_or_else(IntoResponse::into_response)
}

async fn create_namespace(
    State(shared): AppState,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let result = (|| {
        let validation = FieldValidation::parse(query.get("fieldValidation"))?;
        let decoded = validation::decode::<Namespace>(&body, "Namespace", validation)?;
        let name = decoded.object.metadata.name.clone().unwrap_or_default();
        if !validation::is_dns_label(&name) {
            return Err(ApiError::invalid(
                "Namespace",
                &name,
                vec![super::status::Cause {
                    reason: if name.is_empty() {
                        "FieldValueRequired"
                    } else {
                        "FieldValueInvalid"
                    },
                    field: "metadata.name".to_owned(),
                    message: format!(
                        "Invalid value: \"{name}\": must be a lowercase RFC 1123 label"
                    ),
                }],
            ));
        }
        let created = shared.store.create_namespace(decoded.object)?;
        info!(namespace = %name, "namespace created");
        let response = (StatusCode::CREATED, axum::Json(to_value(&created))).into_response();
        Ok(with_warnings(response, &decoded.unknown_fields))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn get_namespace(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.store.namespace(&name) {
        Some(namespace) => axum::Json(to_value(&namespace)).into_response(),
        None => ApiError::not_found("namespaces", &name).into_response(),
    }
}

/// Marks the namespace terminating, deletes its pods, and removes it once
/// they are gone.
async fn delete_namespace(State(shared): AppState, Path(name): Path<String>) -> Response {
    if shared.store.namespace(&name).is_none() {
        return ApiError::not_found("namespaces", &name).into_response();
    }
    shared.store.update_namespace(&name, |namespace| {
        if namespace.metadata.deletion_timestamp.is_none() {
            namespace.metadata.deletion_timestamp = Some(super::store::now());
        }
        namespace.status.get_or_insert_default().phase = Some("Terminating".to_owned());
    });
    info!(namespace = %name, "namespace deleting");
    let (pods, _) = shared.store.pods(Some(&name));
    for pod in &pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        // A pod deleted meanwhile is what this wants anyway.
        let _ = pods::delete_pod(&shared, &name, &pod_name, None, None);
    }
    let remover = shared.clone();
    let namespace = name.clone();
    tokio::spawn(async move {
        loop {
            let changed = remover.store.changed.notified();
            if remover.store.pods(Some(&namespace)).0.is_empty() {
                remover.store.remove_namespace(&namespace);
                info!(%namespace, "namespace removed");
                return;
            }
            changed.await;
        }
    });
    let namespace = shared.store.namespace(&name);
    axum::Json(namespace.as_ref().map(to_value)).into_response()
}

async fn list_nodes(State(shared): AppState, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    list_or_watch(shared, Kind::Node, None, &query).unwrap_or_else(IntoResponse::into_response)
}

async fn get_node(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.store.node(&name) {
        Some(node) => axum::Json(to_value(&node)).into_response(),
        None => ApiError::not_found("nodes", &name).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(method: Method, path: &str, query: &str) -> (String, String, Option<String>) {
        let action = classify(&method, path, &Query::parse(Some(query)));
        (action.verb, action.resource, action.namespace)
    }

    #[test]
    fn classify_names_rbac_verbs_and_resources() {
        let ns = Some("jobs".to_owned());
        assert_eq!(
            classified(Method::GET, "/api/v1/namespaces/jobs/pods", "watch=true"),
            ("watch".into(), "pods".into(), ns.clone())
        );
        assert_eq!(
            classified(Method::GET, "/api/v1/namespaces/jobs/pods", ""),
            ("list".into(), "pods".into(), ns.clone())
        );
        assert_eq!(
            classified(
                Method::GET,
                "/api/v1/namespaces/jobs/pods/p/exec",
                "command=ls"
            ),
            ("create".into(), "pods/exec".into(), ns.clone())
        );
        assert_eq!(
            classified(
                Method::PATCH,
                "/api/v1/namespaces/jobs/pods/p/ephemeralcontainers",
                ""
            ),
            (
                "patch".into(),
                "pods/ephemeralcontainers".into(),
                ns.clone()
            )
        );
        assert_eq!(
            classified(Method::DELETE, "/api/v1/namespaces/jobs/pods/p", ""),
            ("delete".into(), "pods".into(), ns)
        );
        assert_eq!(
            classified(Method::GET, "/api/v1/namespaces", ""),
            ("list".into(), "namespaces".into(), None)
        );
        assert_eq!(
            classified(
                Method::DELETE,
                "/apis/cilium.io/v2/namespaces/jobs/ciliumnetworkpolicies/p",
                ""
            ),
            (
                "delete".into(),
                "ciliumnetworkpolicies".into(),
                Some("jobs".to_owned())
            )
        );
        assert_eq!(
            classified(Method::GET, "/version", ""),
            ("get".into(), "/version".into(), None)
        );
    }
}
