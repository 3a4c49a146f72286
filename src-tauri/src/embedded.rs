//! The engine and its HTTP server, running on a thread of their own inside
//! the app.
//!
//! The server is the one `danube serve` runs, listening on `127.0.0.1:0`
//! with a token made for this launch ([`TokenSource::Ephemeral`]): it is
//! held in memory only, so the window, signed in through
//! [`EmbeddedEngine::login_url`], is the one client that can drive this
//! engine.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context;
use danube::backend::targets::{TargetBackends, TargetSettings};
use danube::server::{Server, ServerConfig, TokenSource};
use tokio::sync::oneshot;

use crate::picker::FolderPicker;
use crate::routes::{self, DesktopState};

/// Settings of the embedded engine.
pub struct EngineOptions {
    /// The data directory, shared with the `danube` command line.
    pub data_root: PathBuf,
    /// The project folder to open first (`--project`), already checked.
    pub project: Option<PathBuf>,
    /// Opens the native folder dialog for `POST /api/v1/desktop/projects/pick`.
    pub picker: Arc<dyn FolderPicker>,
    /// How jobs reach the kubeconfig's contexts.
    pub targets: TargetSettings,
}

/// A running engine. Dropping it stops the server, which cancels the
/// running jobs and waits until they are final.
pub struct EmbeddedEngine {
    addr: SocketAddr,
    /// Holds the token: never logged.
    login_url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

type Ready = Result<(SocketAddr, String), anyhow::Error>;

impl EmbeddedEngine {
    /// Starts the engine and blocks until it serves. `progress` receives a
    /// line for each slow setup step, such as creating the Python
    /// environment on first use.
    ///
    /// # Errors
    ///
    /// What kept the engine from starting: an unusable data directory,
    /// a Python environment that could not be made, no free port.
    pub fn start(
        options: EngineOptions,
        progress: impl Fn(&str) + Send + Sync + 'static,
    ) -> anyhow::Result<EmbeddedEngine> {
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("danube-engine".to_owned())
            .spawn(move || serve_on_this_thread(options, progress, ready_tx, stop_rx))
            .context("failed to start the engine's thread")?;

        let ready = ready_rx
            .recv()
            .context("the engine's thread stopped before it was ready")?;
        let (addr, login_url) = match ready {
            Ok(ready) => ready,
            Err(err) => {
                let _ = thread.join();
                return Err(err);
            }
        };
        tracing::info!(%addr, "embedded engine serving");
        Ok(EmbeddedEngine {
            addr,
            login_url,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/?token=TOKEN`: opening it sets the UI's token cookie.
    pub fn login_url(&self) -> &str {
        &self.login_url
    }

    /// Returns the per-launch token that [`EmbeddedEngine::login_url`] carries.
    pub fn token(&self) -> &str {
        self.login_url
            .split_once("token=")
            .map_or("", |(_, token)| token)
    }

    /// Stops the server: cancels the running jobs and waits until they are
    /// final and the connections have closed.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the engine's thread panicked while stopping");
        }
    }
}

impl Drop for EmbeddedEngine {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn serve_on_this_thread(
    options: EngineOptions,
    progress: impl Fn(&str) + Send + Sync + 'static,
    ready: mpsc::Sender<Ready>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("danube-engine-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(
                anyhow::Error::new(err).context("failed to start the async runtime")
            ));
            return;
        }
    };

    runtime.block_on(async move {
        let config = ServerConfig {
            data_root: options.data_root.clone(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token: TokenSource::Ephemeral,
            max_parallel: danube::server::default_parallelism(),
            header_read_timeout: danube::api::DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: None,
            repository_policy: danube::orchestrator::RepositoryPolicy::default(),
        };
        let server = match Server::start(config, &progress).await {
            Ok(server) => server,
            Err(err) => {
                let _ = ready.send(Err(
                    anyhow::Error::new(err).context("the embedded engine did not start")
                ));
                return;
            }
        };

        // The engine's own backend runs local processes; a job that names
        // a cluster context gets that context's backend, made on first use
        // and kept while the app runs. One engine thus keeps every job in
        // one history, debugger and event stream, whatever its target.
        let state = server.state();
        let kubeconfig = options.targets.kubeconfig.clone();
        let backends =
            TargetBackends::new(options.targets, state.data.clone(), state.store.clone());
        state.set_target_backends(Arc::new(backends));

        let desktop = DesktopState::new(options.picker, options.project.clone(), kubeconfig);
        if let Err(err) = desktop.remember_initial(server.state()).await {
            let _ = ready.send(Err(
                anyhow::Error::new(err).context("failed to record the --project folder")
            ));
            return;
        }
        let api = routes::router(Arc::new(desktop));
        let _ = ready.send(Ok((server.addr(), server.login_url())));

        let stopped = async move {
            let _ = stop.await;
            tracing::info!("stopping the embedded engine");
        };
        if let Err(err) = server.serve(api, stopped).await {
            tracing::error!(error = %err, "the embedded engine's server failed");
        }
    });
}
