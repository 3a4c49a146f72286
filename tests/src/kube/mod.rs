//! A Kubernetes API server emulator for tests: plain HTTP on loopback,
//! the real REST and WebSocket protocols, and a one-node "cluster" whose
//! containers are local processes.
//!
//! [`Emulator::start`] serves on `127.0.0.1:0` and writes a kubeconfig with
//! one context, `danube-emulator`, whose namespace is `danube-jobs` and
//! whose user has a bearer token the emulator checks. kube-rs connects to
//! it as to a real cluster.
//!
//! # What it emulates
//!
//! - Discovery (`/version`, `/api`, `/api/v1`, `/apis`), namespaces
//!   (create, get, list, watch, delete), nodes (get, list, watch) and pods
//!   (create, get, list, watch, delete with a grace period), with one
//!   resource version counter, `labelSelector` and `fieldSelector`, watch
//!   bookmarks and `410 Gone` for a version older than the kept history.
//! - Strict decoding: unknown fields in a created object are a
//!   `400 BadRequest` unless the request sets `fieldValidation=Warn` or
//!   `Ignore` (real servers default to `Warn`); required and malformed
//!   fields are a `422 Invalid` listing every cause.
//! - `Status` errors: 400, 401 (missing or wrong token), 403 (namespaces
//!   outside [`EmulatorOptions::allowed_namespaces`]), 404, 405, 409, 410,
//!   415, 422.
//! - `pods/exec` over WebSocket, subprotocols `v4.channel.k8s.io` and
//!   `v5.channel.k8s.io`: channels 0 to 4, v5's close channel 255, and the
//!   exit `Status` on channel 3 (`NonZeroExitCode` with the code as a
//!   cause, or `InternalError` for a command that cannot start).
//! - `pods/log` (`container`, `follow`, `tailLines`, `timestamps`,
//!   `limitBytes`) and `pods/ephemeralcontainers` (get, patch, update).
//! - Merge patches of a pod's labels, annotations and
//!   `activeDeadlineSeconds`, which may be set or lowered but not raised. A
//!   pod past its deadline is `Failed` with reason `DeadlineExceeded` and
//!   its containers are killed.
//! - `networking.k8s.io/v1` `networkpolicies` and, with
//!   [`EmulatorOptions::cilium`], `cilium.io/v2` `ciliumnetworkpolicies`
//!   (create, get, list, delete), in discovery too; stored, not enforced.
//! - Containers as processes: each in its own mount and PID namespace with
//!   its `emptyDir` volumes bind-mounted at their `mountPath`s, its
//!   `workingDir`, `env` (values, `$(VAR)` references and a few `fieldRef`s),
//!   `command` and `args`, `runAsUser` and `runAsGroup`. Images are the
//!   host's filesystem; commands resolve on [`EmulatorOptions::path`].
//!   Images listed in [`EmulatorOptions::images_without_shell`] have `sh`,
//!   `bash` and `dash` hidden. Init containers run first, in order; the
//!   pod's phase, conditions and container states move as a kubelet's do.
//!   Deleting a pod sends `SIGTERM` to each container's PID 1, `SIGKILL`
//!   after the grace period, and removes the pod; every process of a
//!   container dies with its PID 1.
//! - Faults on request: image pull failures, unschedulable pods (cordoned
//!   node, or requests above the node's allocatable), OOM kills, evictions,
//!   a lost node, and dropping every exec connection at once. Requests are
//!   counted per verb and resource.
//!
//! # What it does not emulate
//!
//! Other resources (deployments, services, secrets, config maps, events),
//! watches of network policies, garbage collection by `ownerReferences`
//! (a policy owned by a deleted pod stays),
//! admission (Pod Security, quotas, defaults such as a service-account
//! token volume), TLS, paging (`limit` is ignored and every list is
//! complete), updates of pods and patches of other pod fields,
//! container restarts (`restartPolicy` is treated as `Never`), probes,
//! resource limits (nothing is enforced; OOM kills are injected), volumes
//! other than `emptyDir`, image entrypoints (a container needs `command`),
//! TTYs for containers (execs get them), `attach`, port forwarding, and
//! selector transitions in watches (an object that stops matching is not
//! sent as `DELETED`). Mount points missing on
//! the host are created there as empty folders, because a bind mount needs
//! one.
//!
//! The emulator must run as root: it creates namespaces, mounts and
//! whiteout device nodes.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::info;

mod exec;
mod kubelet;
mod logs;
mod node;
mod pod_state;
mod pods;
mod policies;
mod query;
mod runtime;
mod selector;
mod server;
mod status;
mod store;
pub(crate) mod terminal;
mod validation;
mod watch;

pub use node::NODE_NAME;
pub use policies::PolicyResource;

/// The kubeconfig context, cluster and user name.
pub const CONTEXT: &str = "danube-emulator";

/// The namespace of the kubeconfig context.
pub const JOBS_NAMESPACE: &str = "danube-jobs";

/// An exec WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecProtocol {
    /// `v4.channel.k8s.io`: no way to close stdin but closing the socket.
    V4,
    /// `v5.channel.k8s.io`: adds channel 255 to close one stream.
    V5,
}

impl ExecProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecProtocol::V4 => "v4.channel.k8s.io",
            ExecProtocol::V5 => "v5.channel.k8s.io",
        }
    }
}

/// How [`Emulator::fail_exec_connections`] ends the open exec connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFault {
    /// The TCP connection closes without a WebSocket close frame, as when
    /// the API server process dies.
    Reset,
    /// A close frame with code 1001 (going away), then the TCP close, as an
    /// API server that shuts down or a load balancer that ends an idle
    /// connection sends.
    Close,
    /// The connection stays open, but nothing more is sent on it or read
    /// from it, as behind a load balancer that lost its backend. It is
    /// closed at the next fault or when the emulator stops.
    Stall,
}

/// How to start an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// `PATH` of every container, where commands resolve. Default: the
    /// test process's `PATH`.
    pub path: OsString,
    /// Images whose pull fails: the container waits with `ErrImagePull`,
    /// then `ImagePullBackOff` after [`Self::image_pull_backoff`].
    pub failing_images: HashSet<String>,
    /// Images with no shell: `sh`, `bash`, `dash` and `rbash` are hidden
    /// from `/bin` and `/usr/bin` in their containers and execs.
    pub images_without_shell: HashSet<String>,
    /// Allocatable CPU of the node, in millicores. Default 64 cores.
    pub node_cpu_millis: u64,
    /// Allocatable memory of the node, in bytes. Default 256 GiB.
    pub node_memory_bytes: u64,
    /// How many pods the node takes at once. Default 110, the kubelet's.
    pub node_max_pods: u64,
    /// The exec subprotocols served, in the server's order of preference.
    /// Default: v5, then v4.
    pub exec_protocols: Vec<ExecProtocol>,
    /// How many events the watch history keeps; a watch from a version
    /// older than that gets `410 Gone`. Default 1000.
    pub watch_history: usize,
    /// Time between bookmarks on watches that allow them. Default 1 s.
    pub bookmark_interval: Duration,
    /// Time from `ErrImagePull` to `ImagePullBackOff`. Default 1 s.
    pub image_pull_backoff: Duration,
    /// Namespaces that exist at start. Default: `default` and
    /// `danube-jobs`.
    pub namespaces: Vec<String>,
    /// When set, the token may touch only these namespaces, as a Role
    /// bound in each would allow: anything else, cluster-scoped requests
    /// included, is `403 Forbidden`. Default: no limit.
    pub allowed_namespaces: Option<Vec<String>>,
    /// Serve `cilium.io/v2` `ciliumnetworkpolicies`, in discovery too, as
    /// a cluster running Cilium does. Default: off.
    pub cilium: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            path: runtime::default_path(),
            failing_images: HashSet::new(),
            images_without_shell: HashSet::new(),
            node_cpu_millis: 64_000,
            node_memory_bytes: 256 << 30,
            node_max_pods: 110,
            exec_protocols: vec![ExecProtocol::V5, ExecProtocol::V4],
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(1),
            image_pull_backoff: Duration::from_secs(1),
            namespaces: vec!["default".to_owned(), JOBS_NAMESPACE.to_owned()],
            allowed_namespaces: None,
            cilium: false,
        }
    }
}

impl EmulatorOptions {
    /// Adds an image whose pull fails.
    pub fn failing_image(mut self, image: &str) -> Self {
        self.failing_images.insert(image.to_owned());
        self
    }

    /// Adds an image without a shell.
    pub fn image_without_shell(mut self, image: &str) -> Self {
        self.images_without_shell.insert(image.to_owned());
        self
    }

    /// Serves CiliumNetworkPolicy, as a cluster running Cilium does.
    pub fn with_cilium(mut self) -> Self {
        self.cilium = true;
        self
    }

    /// Puts `dir` first on the containers' `PATH`.
    pub fn path_prepend(mut self, dir: &Path) -> Self {
        let mut path = OsString::from(dir);
        path.push(":");
        path.push(&self.path);
        self.path = path;
        self
    }
}

/// Errors of [`Emulator::start`] and of the fault-injection methods.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("failed to create the emulator's temporary folder: {0}")]
    CreateRoot(#[source] std::io::Error),
    #[error("failed to bind 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
    #[error("failed to write the kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to create the whiteout files that hide shells (the emulator must run as root): {0}"
    )]
    PrepareShellMask(#[source] std::io::Error),
    #[error("pod {namespace}/{name} does not exist or is not running on the node")]
    PodNotFound { namespace: String, name: String },
    #[error("container `{container}` of pod {namespace}/{name} is not running")]
    ContainerNotRunning {
        namespace: String,
        name: String,
        container: String,
    },
}

/// State shared by the HTTP handlers, the kubelet and the test's handle.
pub(crate) struct Shared {
    pub options: EmulatorOptions,
    pub token: String,
    pub root: PathBuf,
    pub store: store::Store,
    pub kubelet: kubelet::Kubelet,
    pub shell_mask: runtime::ShellMask,
    node: Mutex<node::NodeFlags>,
    counters: Mutex<BTreeMap<(String, String), u64>>,
    /// Bumped to end every exec connection the way `exec_fault` sets.
    pub exec_drops: tokio::sync::watch::Sender<u64>,
    pub exec_fault: Mutex<ExecFault>,
    /// Set while new exec requests fail, as when the kubelet cannot be
    /// dialled.
    pub refuse_execs: std::sync::atomic::AtomicBool,
    /// Exec connections open now.
    pub exec_open: AtomicUsize,
    pub policies: policies::PolicyStore,
    /// The path and query of every exec request, as an audit log has them.
    pub exec_uris: Mutex<Vec<String>>,
}

impl Shared {
    pub fn node_flags(&self) -> node::NodeFlags {
        *self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_lost(&self) -> bool {
        self.node_flags().lost
    }

    fn set_node_flags(&self, change: impl FnOnce(&mut node::NodeFlags)) {
        let flags = {
            let mut flags = self.node.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut flags);
            *flags
        };
        self.store.put_node(node::node_object(self, flags));
    }

    pub fn count(&self, verb: &str, resource: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }
}

/// A running emulator. Dropping it stops the server and kills every
/// container process.
pub struct Emulator {
    shared: Arc<Shared>,
    address: SocketAddr,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

impl Emulator {
    /// Serves the API on `127.0.0.1:0` and writes the kubeconfig.
    ///
    /// # Errors
    ///
    /// The temporary folder, the socket, the kubeconfig or the whiteout
    /// files could not be created.
    pub async fn start(options: EmulatorOptions) -> Result<Emulator, EmulatorError> {
        let root = tempfile::Builder::new()
            .prefix("danube-kube-emulator-")
            .tempdir()
            .map_err(EmulatorError::CreateRoot)?;
        let shell_mask =
            runtime::ShellMask::prepare(root.path()).map_err(EmulatorError::PrepareShellMask)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(EmulatorError::Bind)?;
        let address = listener.local_addr().map_err(EmulatorError::Bind)?;

        let shared = Arc::new(Shared {
            store: store::Store::new(options.watch_history),
            options,
            // Version 7 uuids carry 74 random bits, plenty for a test's token.
            token: uuid::Uuid::now_v7().simple().to_string(),
            root: root.path().to_owned(),
            kubelet: kubelet::Kubelet::default(),
            shell_mask,
            node: Mutex::default(),
            counters: Mutex::default(),
            exec_drops: tokio::sync::watch::channel(0).0,
            exec_fault: Mutex::new(ExecFault::Reset),
            refuse_execs: std::sync::atomic::AtomicBool::new(false),
            exec_open: AtomicUsize::new(0),
            policies: policies::PolicyStore::default(),
            exec_uris: Mutex::default(),
        });
        for name in &shared.options.namespaces {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            // The list may name a namespace twice; the second is a no-op.
            let _ = shared.store.create_namespace(namespace);
        }
        shared.set_node_flags(|_| {});

        let kubeconfig = root.path().join("kubeconfig");
        let config = kubeconfig_json(&format!("http://{address}"), &shared.token);
        std::fs::write(&kubeconfig, config).map_err(|source| EmulatorError::WriteKubeconfig {
            path: kubeconfig.clone(),
            source,
        })?;

        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the emulator's server stopped");
            }
        });
        info!(%address, root = %root.path().display(), "Kubernetes API emulator started");
        Ok(Emulator {
            shared,
            address,
            kubeconfig,
            server,
            _root: root,
        })
    }

    /// Returns the kubeconfig file with the `danube-emulator` context.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Returns the server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns the bearer token the kubeconfig carries.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Returns a kube-rs client built from the kubeconfig file.
    ///
    /// # Panics
    ///
    /// The kubeconfig cannot be read back, which would be a bug here.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .expect("the emulator's kubeconfig is valid");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the emulator's kubeconfig has a context");
        kube::Client::try_from(config).expect("a client for plain HTTP builds")
    }

    /// Returns the stored policies of `resource` in `namespace` as JSON,
    /// sorted by name.
    pub fn policies(&self, resource: PolicyResource, namespace: &str) -> Vec<serde_json::Value> {
        policies::stored(&self.shared, resource, namespace)
    }

    /// Returns the path and query of every exec request so far, as an API
    /// server's audit log records them.
    pub fn exec_uris(&self) -> Vec<String> {
        self.shared
            .exec_uris
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Returns the host folder backing volume `volume` of a running pod.
    pub fn volume_dir(&self, namespace: &str, pod: &str, volume: &str) -> Option<PathBuf> {
        let runtime = self.pod_runtime(namespace, pod).ok()?;
        Some(runtime.dir.join("volumes").join(volume))
    }

    fn pod_runtime(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<kubelet::PodRuntime>, EmulatorError> {
        let not_found = || EmulatorError::PodNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let pod = self
            .shared
            .store
            .pod(namespace, name)
            .ok_or_else(not_found)?;
        let uid = pod.metadata.uid.unwrap_or_default();
        self.shared.kubelet.pod(&uid).ok_or_else(not_found)
    }

    /// Kills a running container as the kernel's OOM killer would: the
    /// container ends with exit code 137 and reason `OOMKilled`.
    ///
    /// # Errors
    ///
    /// The pod or the running container does not exist.
    pub fn oom_kill(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(), EmulatorError> {
        let runtime = self.pod_runtime(namespace, pod)?;
        let running = runtime
            .container(container)
            .filter(|c| !c.has_exited())
            .ok_or_else(|| EmulatorError::ContainerNotRunning {
                namespace: namespace.to_owned(),
                name: pod.to_owned(),
                container: container.to_owned(),
            })?;
        info!(namespace, pod, container, "injecting an OOM kill");
        running.kill(Some("OOMKilled"));
        Ok(())
    }

    /// Evicts a pod as the kubelet does under memory pressure: its
    /// containers are killed and the pod is `Failed` with reason `Evicted`.
    ///
    /// # Errors
    ///
    /// The pod does not exist.
    pub fn evict(&self, namespace: &str, pod: &str) -> Result<(), EmulatorError> {
        let runtime = self.pod_runtime(namespace, pod)?;
        info!(namespace, pod, "injecting an eviction");
        runtime.interrupt(kubelet::Interrupt::Evict {
            message: "The node was low on resource: memory. Threshold quantity: 100Mi, \
                      available: 42Mi."
                .to_owned(),
        });
        Ok(())
    }

    /// Makes the node stop reporting, as a machine that went away: the
    /// node's `Ready` condition turns `Unknown`, its containers die without
    /// a word, their exec connections drop, and the node controller marks
    /// each pod `Unknown` (reason `NodeLost`) and deletes it. Such a pod
    /// stays terminating until it is deleted with a zero grace period.
    pub fn lose_node(&self) {
        info!(node = NODE_NAME, "injecting a lost node");
        self.shared.set_node_flags(|flags| flags.lost = true);
        let (pods, _) = self.shared.store.pods(None);
        for pod in pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            pods::mark_node_lost(&self.shared, &namespace, &name);
            if let Some(runtime) = self
                .shared
                .kubelet
                .pod(pod.metadata.uid.as_deref().unwrap_or_default())
            {
                runtime.interrupt(kubelet::Interrupt::NodeLost);
            }
        }
    }

    /// Cordons the node (`true`): new pods stay `Unschedulable` until it is
    /// uncordoned (`false`).
    pub fn cordon(&self, cordoned: bool) {
        info!(
            node = NODE_NAME,
            cordoned, "changing the node's schedulability"
        );
        self.shared
            .set_node_flags(|flags| flags.cordoned = cordoned);
    }

    /// Closes every open exec connection at once without a close frame or
    /// a status, as an API server that crashes does. The exec'd processes
    /// keep running, their output discarded. Returns how many were open.
    pub fn drop_exec_connections(&self) -> usize {
        self.fail_exec_connections(ExecFault::Reset)
    }

    /// Ends every open exec connection at once as `fault` says. The exec'd
    /// processes keep running, their output discarded. Returns how many
    /// were open.
    pub fn fail_exec_connections(&self, fault: ExecFault) -> usize {
        let open = self.shared.exec_open.load(Ordering::SeqCst);
        info!(open, ?fault, "ending every exec connection");
        *self
            .shared
            .exec_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = fault;
        self.shared.exec_drops.send_modify(|n| *n += 1);
        open
    }

    /// Makes new exec requests fail (`true`) with `500` and the message an
    /// API server gives when it cannot dial the kubelet, until called with
    /// `false`. Open connections are not touched.
    pub fn refuse_execs(&self, refuse: bool) {
        info!(refuse, "changing whether execs are refused");
        self.shared.refuse_execs.store(refuse, Ordering::SeqCst);
    }

    /// Drops the watch history, as an etcd compaction does: a watch from
    /// any version before now gets `410 Gone`.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Returns how many requests were served, by `(verb, resource)`: verbs as RBAC
    /// names them (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`), resources with their subresource (`pods`, `pods/exec`,
    /// `pods/log`, `pods/ephemeralcontainers`), and paths such as `/api`
    /// for discovery. Requests rejected with 401 are not counted.
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Returns the count of one `(verb, resource)` pair.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.request_counts()
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Sets every request count back to zero.
    pub fn reset_request_counts(&self) {
        self.shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.exec_drops.send_modify(|n| *n += 1);
        for pod in self.shared.kubelet.all() {
            for name in pod.container_names() {
                if let Some(container) = pod.container(&name) {
                    container.kill(None);
                }
            }
        }
    }
}

fn kubeconfig_json(server: &str, token: &str) -> String {
    // JSON is YAML, so kube-rs and kubectl read this file as they read any
    // kubeconfig.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": CONTEXT,
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{
            "name": CONTEXT,
            "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": JOBS_NAMESPACE},
        }],
    });
    serde_json::to_string_pretty(&config).expect("JSON values serialise")
}
