//! The HTTP API of `danube serve`: jobs, logs, live events and artifacts
//! under `/api/v1` as JSON and Server-Sent Events, plus `/health` and
//! `/metrics`.
//!
//! Every route goes through [`auth::check_request`] (Host, Origin and
//! content-type checks); `/api/v1` also needs the local token
//! ([`auth::require_token`]). Errors have one shape, [`error::ErrorBody`].
//! Timestamps are milliseconds since the Unix epoch.

mod artifacts;
mod auth;
mod debug;
mod doc;
mod error;
mod events;
mod health;
mod jobs;
mod listener;
mod logs;
mod metrics;
mod projects;
mod secrets;
mod targets;
mod ui;
mod watches;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

use self::doc::CheckResponses;
use crate::artifacts::{ArtifactStore, DEFAULT_MAX_ARTIFACT_BYTES};
use crate::backend::targets::TargetBackends;
use crate::config::DataDir;
use crate::orchestrator::{Engine, JobHandle, RepositoryPolicy};
use crate::store::Store;
use crate::watch::Watches;

pub use auth::{LocalToken, ServerOrigin, TOKEN_COOKIE, TOKEN_FILE, TokenError, token_cookie_name};
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
pub use listener::DEFAULT_HEADER_READ_TIMEOUT;
pub use metrics::Metrics;

/// State shared by the handlers.
pub struct AppState {
    pub engine: Engine,
    pub store: Store,
    pub data: DataDir,
    artifacts: ArtifactStore,
    token: LocalToken,
    /// Name of the cookie that carries the token: [`token_cookie_name`].
    token_cookie: String,
    origin: ServerOrigin,
    metrics: Metrics,
    /// Tasks that wait for the jobs this server started.
    jobs: TaskTracker,
    /// Cancelled when the server starts to stop; jobs started after it are
    /// cancelled at once.
    stopping: CancellationToken,
    /// Cancelled once the jobs of a stopping server are final; ends the
    /// event streams.
    shutdown: CancellationToken,
    header_read_timeout: Duration,
    /// Requested cap on open connections; see [`listener::connection_cap`].
    max_connections: Option<usize>,
    /// Upper bound on tasks running at once in each job.
    max_parallel: usize,
    /// Watch sessions started over the API.
    watches: Watches,
    /// Backends of the targets a request may name; unset, every job runs
    /// on the engine's own backend.
    targets: OnceLock<Arc<TargetBackends>>,
    /// The repository URLs `POST /api/v1/jobs` accepts.
    pub(crate) repository_policy: RepositoryPolicy,
}

/// How to build an [`AppState`].
pub struct ServerParts {
    pub engine: Engine,
    pub data: DataDir,
    pub token: LocalToken,
    /// The address the listener is bound to.
    pub addr: SocketAddr,
    pub max_parallel: usize,
    /// Time a client has to send a request head before its connection is
    /// closed; usually [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Cap on open connections, below the one the descriptor limit allows.
    pub max_connections: Option<usize>,
    /// The repository URLs jobs may clone.
    pub repository_policy: RepositoryPolicy,
}

impl AppState {
    pub fn new(parts: ServerParts) -> Arc<AppState> {
        Arc::new(AppState {
            store: parts.engine.store().clone(),
            engine: parts.engine,
            artifacts: ArtifactStore::new(parts.data.artifacts_dir(), DEFAULT_MAX_ARTIFACT_BYTES),
            data: parts.data,
            token: parts.token,
            token_cookie: token_cookie_name(parts.addr.port()),
            origin: ServerOrigin::for_listener(parts.addr),
            metrics: Metrics::new(),
            jobs: TaskTracker::new(),
            stopping: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            max_parallel: parts.max_parallel,
            header_read_timeout: parts.header_read_timeout,
            max_connections: parts.max_connections,
            repository_policy: parts.repository_policy,
            watches: Watches::default(),
            targets: OnceLock::new(),
        })
    }

    /// Lets requests choose each job's target (`target` in `POST
    /// /api/v1/jobs` and `POST /api/v1/watches`) among `backends`. Returns
    /// `false` when targets were set before; the first set stays.
    pub fn set_target_backends(&self, backends: Arc<TargetBackends>) -> bool {
        self.targets.set(backends).is_ok()
    }

    /// The token API clients send; it must never be logged.
    pub(crate) fn token_str(&self) -> &str {
        self.token.as_str()
    }

    /// Waits for a submitted job in the background and records its duration.
    fn track(&self, handle: JobHandle) {
        // A job submitted while the server stops may have missed the
        // cancellation of the running jobs in `serve`.
        if self.stopping.is_cancelled() {
            handle.cancel();
        }
        let started = Instant::now();
        let duration = self.metrics.job_duration.clone();
        self.jobs.spawn(async move {
            let outcome = handle.wait().await;
            duration.observe(started.elapsed().as_secs_f64());
            outcome
        });
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Danube API",
        description = "Start jobs, follow their state and logs, download their artifacts, and manage secrets. Every `/api/v1` request needs the local token as `Authorization: Bearer <token>`."
    ),
    paths(
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::cancel,
        jobs::rerun,
        debug::show,
        debug::exec,
        debug::files,
        debug::resume,
        logs::read,
        logs::stream,
        logs::stream_all,
        logs::raw::raw,
        events::stream,
        artifacts::list,
        artifacts::download,
        projects::pipelines,
        secrets::list,
        secrets::put,
        secrets::remove,
        watches::create,
        watches::list,
        watches::stop,
        health::live,
        health::ready,
        metrics::render,
        openapi,
    ),
    // Path parameters of an enum type are referenced, not collected.
    components(schemas(debug::ResumeAction)),
    modifiers(&TokenSecurity, &CheckResponses),
    security(("bearer_token" = []), ("token_cookie" = []))
)]
pub struct ApiDoc;

/// Declares how clients send the local token: the `Authorization: Bearer`
/// header, or the `danube_token_<port>` cookie that `/?token=` sets. The
/// served document names the cookie of its server.
struct TokenSecurity;

impl utoipa::Modify for TokenSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "token_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("danube_token"))),
        );
    }
}

/// Builds the router with every route and check. `extra_api` is merged
/// into `/api/v1` before the token check, so its routes need the token too;
/// the desktop app mounts its own routes this way.
pub fn router(state: Arc<AppState>, extra_api: Router<Arc<AppState>>) -> Router {
    let api = Router::new()
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/rerun", post(jobs::rerun))
        .route("/jobs/{id}/debug", get(debug::show))
        .route("/jobs/{id}/debug/exec", post(debug::exec))
        .route("/jobs/{id}/debug/files", get(debug::files))
        .route("/jobs/{id}/debug/{action}", post(debug::resume))
        .route("/jobs/{id}/logs", get(logs::read))
        .route("/jobs/{id}/logs/stream", get(logs::stream))
        .route("/jobs/{id}/logs/stream/all", get(logs::stream_all))
        .route("/jobs/{id}/logs/raw", get(logs::raw::raw))
        .route("/jobs/{id}/artifacts", get(artifacts::list))
        .route("/jobs/{id}/artifacts/{name}", get(artifacts::download))
        .route("/projects/pipelines", get(projects::pipelines))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{key}", put(secrets::put).delete(secrets::remove))
        .route("/events", get(events::stream))
        .route("/watches", get(watches::list).post(watches::create))
        .route("/watches/{id}", delete(watches::stop))
        .route("/openapi.json", get(openapi))
        .merge(extra_api)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(from_fn_with_state(state.clone(), auth::require_token));

    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(ui::asset))
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::render))
        .nest("/api/v1", api)
        .fallback(ui::fallback)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(from_fn_with_state(state.clone(), auth::check_request))
        .with_state(state)
}

/// Time connections get to finish sending their last response once the
/// event streams have ended. It keeps a client that reads nothing from
/// holding up the exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router(state, extra_api)` on `listener` until `stop` resolves, then stops.
///
/// Stopping refuses new connections first. Then it cancels the jobs this
/// engine runs and waits until they are final, so that the event streams
/// carry the jobs' final events. Last, it ends the event streams and waits
/// up to [`DRAIN_TIMEOUT`] for the connections to close.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    extra_api: Router<Arc<AppState>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener =
        listener::LimitedListener::new(listener, listener::connection_cap(state.max_connections));
    let connections = listener::serve_connections(
        listener,
        router(state.clone(), extra_api),
        state.header_read_timeout,
        state.stopping.clone(),
    );

    stop.await;
    state.stopping.cancel();
    // Stopped first, so that no session starts a job after the cancellations below.
    state.watches.stop_all().await;
    let running = state.engine.active_jobs();
    tracing::info!(jobs = running.len(), "stopping: cancelling running jobs");
    for id in &running {
        state.engine.cancel(id);
    }
    state.jobs.close();
    state.jobs.wait().await;

    state.shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "stopping without waiting longer for connections whose clients read slowly"
        );
    }
    tracing::info!("server stopped");
    Ok(())
}

#[derive(serde::Deserialize)]
struct IndexQuery {
    token: Option<String>,
}

/// Serves the web UI's page at `/`. `/?token=...` stores the token in an
/// HttpOnly cookie and redirects to `/`, so the address that `danube serve`
/// prints logs a browser in. A wrong token gets 401 without a cookie: the
/// app's page for a browser, which then shows that it is not signed in, and
/// the JSON error for other clients.
async fn index(
    State(state): State<Arc<AppState>>,
    error::ApiQuery(query): error::ApiQuery<IndexQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = query.token {
        if !state.token.matches(&token) {
            tracing::debug!("rejected a wrong token in the address");
            if ui::wants_html(&headers) {
                return ui::unauthorized_page(&headers);
            }
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong token in the address; open the address that `danube serve` printed",
            )
            .into_response();
        }
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            state.token_cookie,
            state.token.as_str()
        );
        return (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, "/".to_owned()),
                // The address contains the token, so no cache may keep it.
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response();
    }
    ui::page(&headers)
}

#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut document = ApiDoc::openapi();
    doc::name_token_cookie(&mut document, &state.token_cookie);
    axum::Json(document)
}
