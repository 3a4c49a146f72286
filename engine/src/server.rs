//! Building a running HTTP server around a local engine: the one path that
//! `danube serve` and the desktop app share.
//!
//! [`Server::start`] opens the data directory and the database, prepares the
//! SDK's Python environment, starts the engine on the local backend and binds
//! the listener. [`Server::serve`] then serves the API, the web UI and any
//! routes the caller adds, until its stop future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::api::{self, AppState, LocalToken, ServerParts, TOKEN_FILE, TokenError};
use crate::backend::Backend;
use crate::backend::local::LocalBackend;
use crate::config::{ConfigError, DataDir};
use crate::orchestrator::{Engine, EngineParts, OrchestratorError};
use crate::python::PythonError;
use crate::store::{Store, StoreError};

/// How often a server looks for jobs whose engine process died.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    OpenDataDir(#[from] ConfigError),

    #[error("failed to open the database in `{path}`", path = .path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: StoreError,
    },

    #[error("failed to check for abandoned jobs")]
    RecoverJobs(#[source] StoreError),

    #[error(transparent)]
    Token(#[from] TokenError),

    #[error(transparent)]
    Python(#[from] PythonError),

    #[error("failed to start the engine")]
    StartEngine(#[source] OrchestratorError),

    #[error("failed to listen on {addr}: {source}; pick another address or port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("failed to read the address the server listens on")]
    LocalAddr(#[source] std::io::Error),
}

/// The source of the server's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `<data_dir>/keys/local-token`, created on first use: what `danube
    /// serve` uses, so that scripts and the CLI can read it.
    File,
    /// A random token for this process alone, never written anywhere: what
    /// the desktop app uses, so no other local process can drive its engine.
    Ephemeral,
}

/// Settings of [`Server::start`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The data directory, as [`DataDir::resolve`] returned it.
    pub data_root: PathBuf,
    /// A loopback address; port 0 picks a free port.
    pub bind: SocketAddr,
    pub token: TokenSource,
    /// Upper bound on tasks running at once in each job.
    pub max_parallel: usize,
    /// Usually [`api::DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Cap on open connections below the one the descriptor limit allows.
    pub max_connections: Option<usize>,
    /// The repositories jobs may clone.
    pub repository_policy: crate::orchestrator::RepositoryPolicy,
}

/// A server whose engine runs and whose listener is bound, not serving yet.
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
    addr: SocketAddr,
    token_path: Option<PathBuf>,
}

impl Server {
    /// Opens everything the server needs and binds its listener.
    ///
    /// `progress` receives one line per slow or notable action: creating
    /// the Python environment on first use, and jobs of dead processes
    /// marked as failed.
    ///
    /// # Errors
    ///
    /// A [`ServerError`] variant for each part that can fail; nothing is
    /// served then.
    pub async fn start(
        config: ServerConfig,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Server, ServerError> {
        let (data, store) = open_data(&config.data_root, progress).await?;
        let engine = start_local_engine(&data, store.clone(), progress).await?;
        Server::bind(config, data, store, engine).await
    }

    /// Binds the listener of a server around an engine that already runs,
    /// for callers that choose the backend themselves.
    ///
    /// # Errors
    ///
    /// [`ServerError::Token`], [`ServerError::Bind`] or
    /// [`ServerError::LocalAddr`].
    pub async fn bind(
        config: ServerConfig,
        data: DataDir,
        store: Store,
        engine: Engine,
    ) -> Result<Server, ServerError> {
        let (token, token_path) = match config.token {
            TokenSource::File => {
                let path = data.keys_dir().join(TOKEN_FILE);
                (LocalToken::load_or_create(&path)?, Some(path))
            }
            TokenSource::Ephemeral => (LocalToken::random(), None),
        };

        // Jobs of `danube run` processes that die while this server runs
        // would otherwise show as running until the next CLI command.
        tokio::spawn(recover_abandoned_jobs_periodically(data.clone(), store));

        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        let state = AppState::new(ServerParts {
            engine,
            data,
            addr,
            max_parallel: config.max_parallel,
            header_read_timeout: config.header_read_timeout,
            max_connections: config.max_connections,
            token,
            repository_policy: config.repository_policy,
        });
        tracing::info!(%addr, "server listening");
        Ok(Server {
            state,
            listener,
            addr,
            token_path,
        })
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state the handlers share: the engine, the store, the data
    /// directory.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The token file, for a [`TokenSource::File`] server.
    pub fn token_path(&self) -> Option<&std::path::Path> {
        self.token_path.as_deref()
    }

    /// The address that signs a browser in: `http://ADDR/?token=TOKEN`.
    /// It contains the token, so it must not be logged.
    pub fn login_url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.state.token_str())
    }

    /// Serves until `stop` resolves, then stops as [`api::serve`] does.
    /// `extra_api` is merged into `/api/v1`, behind the same checks as
    /// every other route there.
    pub async fn serve(
        self,
        extra_api: Router<Arc<AppState>>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        api::serve(self.listener, self.state, extra_api, stop).await
    }
}

/// Opens the data directory and its database, and fails the jobs of engine
/// processes that died mid-job, so they do not show as running forever.
///
/// # Errors
///
/// [`ServerError::OpenDataDir`], [`ServerError::OpenStore`] or
/// [`ServerError::RecoverJobs`].
pub async fn open_data(
    root: &std::path::Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(DataDir, Store), ServerError> {
    let data = DataDir::open(root)?;
    let store =
        Store::open(&data.database_path())
            .await
            .map_err(|source| ServerError::OpenStore {
                path: data.root().to_owned(),
                source,
            })?;
    let recovered = crate::orchestrator::ownership::recover_abandoned_jobs(&data, &store)
        .await
        .map_err(ServerError::RecoverJobs)?;
    if recovered > 0 {
        progress(&format!(
            "note: marked {recovered} job(s) as failed whose danube process stopped before they finished"
        ));
    }
    Ok((data, store))
}

/// Sets up the SDK's Python environment and starts an engine on the local
/// backend.
///
/// # Errors
///
/// As [`start_engine`].
pub async fn start_local_engine(
    data: &DataDir,
    store: Store,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Engine, ServerError> {
    let backend = Arc::new(LocalBackend::new(data.workspaces_dir()));
    start_engine(
        data,
        store,
        backend,
        crate::rpc::LOOPBACK_EPHEMERAL,
        progress,
    )
    .await
}

/// Sets up the SDK's Python environment and starts an engine on `backend`
/// whose gRPC server for coordinators listens on `rpc_bind`.
///
/// # Errors
///
/// [`ServerError::Python`] when the environment cannot be made,
/// [`ServerError::StartEngine`] when the engine does not start.
pub async fn start_engine(
    data: &DataDir,
    store: Store,
    backend: Arc<dyn Backend>,
    rpc_bind: SocketAddr,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Engine, ServerError> {
    let python = crate::python::ensure_env(data, progress).await?;
    Engine::start_with_rpc(
        EngineParts {
            data: data.clone(),
            store,
            backend,
            python,
            max_artifact_bytes: crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
        },
        rpc_bind,
    )
    .await
    .map_err(ServerError::StartEngine)
}

/// Tasks that may run at once in a job when no option sets it: the number
/// of CPUs, at least 4.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .max(4)
}

async fn recover_abandoned_jobs_periodically(data: DataDir, store: Store) {
    let mut interval = tokio::time::interval(RECOVERY_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        match crate::orchestrator::ownership::recover_abandoned_jobs(&data, &store).await {
            Ok(0) => {}
            Ok(recovered) => tracing::info!(recovered, "marked abandoned jobs as failed"),
            Err(err) => tracing::error!(error = %err, "failed to check for abandoned jobs"),
        }
    }
}
