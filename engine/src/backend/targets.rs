//! Making the backend of a target (`local`, `kube` or `kube:CONTEXT`): the
//! one path that `danube run`, `danube serve` and the desktop app take, and
//! [`TargetBackends`], which keeps one backend per cluster context for an
//! engine whose jobs each choose their target.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Backend;
use super::kubernetes::coordinator::{self as pod_coordinator, Placement, PodCoordinator};
use super::kubernetes::pod::CoordinatorContainer;
use super::kubernetes::{
    self, ClusterOptions, KubeError, KubeSettings, KubernetesBackend, PodSettings, Resources,
    Target, TargetError,
};
use super::local::LocalBackend;
use crate::config::DataDir;
use crate::orchestrator::{JobBackend, ownership};
use crate::store::Store;

/// The options of a kube target besides its context. `None` fields take
/// the defaults that `danube run --help` lists.
#[derive(Clone, Debug, Default)]
pub struct TargetSettings {
    /// A kubeconfig file instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The jobs namespace instead of the context's own or `danube-jobs`.
    pub namespace: Option<String>,
    /// The image of the worker container.
    pub worker_image: Option<String>,
    /// The image that carries `danube-supervisor`.
    pub tools_image: Option<String>,
    /// The engine's part of every job's egress allowlist.
    pub egress: kubernetes::network::EgressSettings,
    /// The coordinator's placement. `None` is `pod` with the in-cluster
    /// configuration and `engine` with a kubeconfig context.
    pub coordinator: Option<Placement>,
    /// The image of the job pod's `coordinator` container instead of the
    /// tools image.
    pub coordinator_image: Option<String>,
    /// The Python in the coordinator image instead of
    /// [`pod_coordinator::DEFAULT_PYTHON`].
    pub coordinator_python: Option<String>,
    /// `HOST:PORT` of the engine's gRPC server as job pods reach it.
    pub engine_address: Option<String>,
}

impl TargetSettings {
    /// Returns the coordinator's placement on `cluster`: as set, else `pod`
    /// when the engine itself runs in the cluster, because its own container
    /// must not run users' code. Otherwise it is `engine`, because the
    /// cluster usually cannot reach a laptop.
    pub fn placement(&self, cluster: &kubernetes::Cluster) -> Placement {
        self.coordinator.unwrap_or(match cluster.context {
            None => Placement::Pod,
            Some(_) => Placement::Engine,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Cluster(#[from] TargetError),

    #[error("failed to read this engine's id from `{path}`", path = .path.display())]
    EngineId {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Client(KubeError),

    #[error(
        "the cluster ({cluster}) did not respond within {}s; check that it runs and that the kubeconfig's server address is right",
        REACH_LIMIT.as_secs()
    )]
    Unresponsive { cluster: String },

    #[error(
        "the coordinator runs in job pods, which cannot reach this engine's gRPC server on \
         loopback: set --engine-address (DANUBE_ENGINE_ADDRESS) to the address pods reach it at \
         and --rpc-listen (DANUBE_RPC_LISTEN) to match, or pass --coordinator engine"
    )]
    EngineAddressMissing,

    #[error("failed to reach the cluster ({cluster}){}", reach_hint(source))]
    Reach {
        /// The context, server and namespace, as [`describe`] writes them.
        cluster: String,
        #[source]
        source: KubeError,
    },
}

/// Returns what to check when the cluster could not be reached. It is
/// empty when the API server returned an error, because that error names
/// the problem.
fn reach_hint(error: &KubeError) -> &'static str {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if kubernetes::error::api_error_text(error).is_some() {
            return "";
        }
        cause = error.source();
    }
    "; check that it runs and that the kubeconfig's server address is right"
}

/// Names `cluster` for messages: its context, API server and namespace.
fn describe(cluster: &kubernetes::Cluster) -> String {
    format!(
        "context `{}` at {}, namespace `{}`",
        cluster.context.as_deref().unwrap_or("in-cluster"),
        cluster.config.cluster_url,
        cluster.namespace
    )
}

/// How long the first requests to a cluster may take before connecting
/// gives up. A server that accepts connections and never responds (a
/// stopped VM behind a port forward, say) would otherwise hold the job's
/// start for minutes.
pub const REACH_LIMIT: Duration = Duration::from_secs(20);

/// A backend that is ready, and what making it cleaned up.
pub struct Connected {
    pub backend: Arc<dyn Backend>,
    /// Pods of jobs whose engine process stopped before they finished,
    /// deleted while connecting.
    pub deleted_orphans: usize,
    /// The context and namespace, for messages; `None` for local processes.
    pub cluster: Option<String>,
}

/// Reads the kubeconfig (without contacting the cluster) and returns the
/// cluster of `context` with the pod settings of this engine.
///
/// # Errors
///
/// [`ConnectError::Cluster`] for a kubeconfig that cannot be read or lacks
/// the context, [`ConnectError::EngineId`] for an unreadable engine id.
pub async fn pod_settings(
    context: Option<String>,
    settings: &TargetSettings,
    data: &DataDir,
) -> Result<(kubernetes::Cluster, PodSettings), ConnectError> {
    let options = ClusterOptions {
        context,
        kubeconfig: settings.kubeconfig.clone(),
        namespace: settings.namespace.clone(),
    };
    let cluster = options.resolve().await?;
    let pod = pod_settings_for(&cluster, settings, data)?;
    Ok((cluster, pod))
}

/// Returns the settings of the job pods of a resolved `cluster`.
///
/// # Errors
///
/// [`ConnectError::EngineId`] for an unreadable engine id.
pub fn pod_settings_for(
    cluster: &kubernetes::Cluster,
    settings: &TargetSettings,
    data: &DataDir,
) -> Result<PodSettings, ConnectError> {
    let id_path = data.root().join(kubernetes::ENGINE_ID_FILE);
    let engine_id =
        kubernetes::load_engine_id(&id_path).map_err(|source| ConnectError::EngineId {
            path: id_path,
            source,
        })?;
    let mut pod = PodSettings::new(cluster.namespace.clone(), engine_id);
    if let Some(image) = &settings.worker_image {
        pod.worker_image = image.clone();
    }
    if let Some(image) = &settings.tools_image {
        pod.tools_image = image.clone();
    }
    if settings.placement(cluster) == Placement::Pod {
        pod.coordinator = Some(CoordinatorContainer {
            image: settings
                .coordinator_image
                .clone()
                .unwrap_or_else(|| pod.tools_image.clone()),
            resources: Resources::coordinator_default(),
        });
    }
    Ok(pod)
}

/// Makes the backend of `target`. For a kube target it contacts the
/// cluster once, to delete the pods this engine left behind (see
/// [`kubernetes::orphans`]), so an unreachable cluster fails here and not
/// in the middle of a job.
///
/// # Errors
///
/// As [`pod_settings`], plus [`ConnectError::Client`] for a configuration
/// the client rejects and [`ConnectError::Reach`] when the cluster does not
/// respond.
pub async fn connect(
    target: &Target,
    settings: &TargetSettings,
    data: &DataDir,
    store: &Store,
) -> Result<Connected, ConnectError> {
    let context = match target {
        Target::Local => {
            return Ok(Connected {
                backend: Arc::new(LocalBackend::new(data.workspaces_dir())),
                deleted_orphans: 0,
                cluster: None,
            });
        }
        Target::Kube { context } => context.clone(),
    };

    let (cluster, pod) = pod_settings(context, settings, data).await?;
    let described = describe(&cluster);
    let placement = settings.placement(&cluster);
    // In a cluster the pods and the engine never share a network namespace,
    // so the bound loopback address cannot serve as the pods' address.
    if placement == Placement::Pod && cluster.context.is_none() && settings.engine_address.is_none()
    {
        return Err(ConnectError::EngineAddressMissing);
    }
    let coordinator = pod.coordinator.as_ref().map(|_| PodCoordinator {
        python: settings
            .coordinator_python
            .clone()
            .unwrap_or_else(|| pod_coordinator::DEFAULT_PYTHON.to_owned()),
        engine_address: settings.engine_address.clone(),
    });
    let backend = KubernetesBackend::connect(
        cluster,
        KubeSettings {
            pod,
            workspaces_root: data.workspaces_dir(),
            pod_start_limit: kubernetes::POD_START_LIMIT,
            max_download_bytes: crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
            egress: settings.egress.clone(),
            coordinator,
        },
    )
    .map_err(ConnectError::Client)?;

    let cleaning = kubernetes::orphans::clean_orphans(
        backend.api(),
        &backend.settings().pod.engine_id,
        store,
        |job| ownership::is_owned(&data.job_logs_dir(job)),
    );
    let orphans = tokio::time::timeout(REACH_LIMIT, cleaning)
        .await
        .map_err(|_| ConnectError::Unresponsive {
            cluster: described.clone(),
        })?
        .map_err(|source| ConnectError::Reach {
            cluster: described.clone(),
            source,
        })?;
    tracing::info!(%target, cluster = %described, coordinator = %placement, "kubernetes backend ready");
    Ok(Connected {
        backend: Arc::new(backend),
        deleted_orphans: orphans.len(),
        cluster: Some(described),
    })
}

/// One backend per cluster context, made on a job's first use of that
/// context and kept for the engine's lifetime, for an engine whose own
/// backend is local processes (the desktop app's).
///
/// A context that cannot be reached is not kept, so the next job on it
/// tries again. No connection is checked after the first: a cluster that
/// goes away later fails the steps of the jobs that use it.
pub struct TargetBackends {
    settings: TargetSettings,
    data: DataDir,
    store: Store,
    /// By target, as `kube:CONTEXT` or `kube`. The lock is held while
    /// connecting so that two jobs started at once make one backend.
    connected: tokio::sync::Mutex<HashMap<String, Arc<dyn Backend>>>,
}

impl TargetBackends {
    pub fn new(settings: TargetSettings, data: DataDir, store: Store) -> TargetBackends {
        TargetBackends {
            settings,
            data,
            store,
            connected: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The kubeconfig file these backends read, when one was set instead
    /// of `KUBECONFIG`.
    pub fn kubeconfig(&self) -> Option<&std::path::Path> {
        self.settings.kubeconfig.as_deref()
    }

    /// Returns the backend of `target` for one job: `None` for local
    /// processes, which the engine's own backend runs.
    ///
    /// # Errors
    ///
    /// As [`connect`], on the first use of a context and after a failed one.
    pub async fn job_backend(&self, target: &Target) -> Result<Option<JobBackend>, ConnectError> {
        if *target == Target::Local {
            return Ok(None);
        }
        let key = target.to_string();
        let mut connected = self.connected.lock().await;
        if let Some(backend) = connected.get(&key) {
            return Ok(Some(JobBackend {
                target: key,
                backend: backend.clone(),
            }));
        }

        let made = connect(target, &self.settings, &self.data, &self.store).await?;
        if made.deleted_orphans > 0 {
            tracing::info!(%target, deleted = made.deleted_orphans, "deleted pods of jobs whose engine stopped");
        }
        connected.insert(key.clone(), made.backend.clone());
        Ok(Some(JobBackend {
            target: key,
            backend: made.backend,
        }))
    }
}
