//! Where a job runs (`--target local|kube[:CONTEXT]`) and how the engine
//! reaches a cluster: a context of the user's kubeconfig, or the pod's own
//! service account when the engine runs inside the cluster.
//!
//! Reading the kubeconfig never contacts the cluster, so `--dry-run` can use
//! it to name the namespace.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The namespace of job pods when neither `--namespace` nor the context
/// names one; the manifests in `deploy/` create it.
pub const DEFAULT_NAMESPACE: &str = "danube-jobs";

/// Where jobs run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Child processes on this machine.
    Local,
    /// Pods on a cluster. `context` is a kubeconfig context; `None` is the
    /// kubeconfig's current context, or the in-cluster configuration when no
    /// kubeconfig exists and the engine runs in a pod.
    Kube { context: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target `{0}`: use `local`, `kube` or `kube:CONTEXT`")]
    Invalid(String),

    #[error(
        "failed to read the kubeconfig (point KUBECONFIG or --kubeconfig at a readable \
         kubeconfig file, or run the engine inside a cluster)"
    )]
    ReadKubeconfig {
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error(
        "kubeconfig context `{context}` was not found; known contexts: {known} \
         (pick one with --target kube:CONTEXT)"
    )]
    UnknownContext { context: String, known: String },

    #[error(
        "kubeconfig context `{context}` was named, but no kubeconfig was found (set KUBECONFIG \
         or --kubeconfig, or create ~/.kube/config)"
    )]
    NoConfigForContext { context: String },

    #[error(
        "the kubeconfig sets no current context; known contexts: {known} \
         (pick one with --target kube:CONTEXT, or run `kubectl config use-context NAME`)"
    )]
    NoCurrentContext { known: String },

    #[error(
        "no kubeconfig was found and the engine is not running inside a cluster \
         (set KUBECONFIG or --kubeconfig, or create ~/.kube/config)"
    )]
    NoConfig {
        #[source]
        source: kube::config::InClusterError,
    },

    #[error("failed to load kubeconfig context `{context}`")]
    LoadContext {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error(
        "namespace `{0}` is invalid: use 1 to 63 lowercase letters, digits and `-`, \
         starting and ending with a letter or digit"
    )]
    InvalidNamespace(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Target, TargetError> {
        match text {
            "local" => Ok(Target::Local),
            "kube" | "kubernetes" => Ok(Target::Kube { context: None }),
            _ => match text.split_once(':') {
                Some(("kube" | "kubernetes", context)) if !context.trim().is_empty() => {
                    Ok(Target::Kube {
                        context: Some(context.to_owned()),
                    })
                }
                _ => Err(TargetError::Invalid(text.to_owned())),
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local => f.write_str("local"),
            Target::Kube { context: None } => f.write_str("kube"),
            Target::Kube {
                context: Some(context),
            } => write!(f, "kube:{context}"),
        }
    }
}

/// How to reach the cluster of a `kube` target.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// A kubeconfig context; `None` for the current one.
    pub context: Option<String>,
    /// A kubeconfig file instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The jobs namespace instead of the context's own or [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
}

/// A resolved cluster: the client configuration and the jobs namespace.
pub struct Cluster {
    pub config: kube::Config,
    pub namespace: String,
    /// The context used, `None` for the in-cluster configuration.
    pub context: Option<String>,
}

impl fmt::Debug for Cluster {
    // kube::Config holds credentials; print only where it points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster_url", &self.config.cluster_url.to_string())
            .field("namespace", &self.namespace)
            .field("context", &self.context)
            .finish()
    }
}

impl Cluster {
    /// Name of the context [`Cluster::placeholder`] pretends to use.
    pub const PLACEHOLDER_CONTEXT: &'static str = "placeholder";

    /// Returns a cluster that exists nowhere, for `--dry-run` without a
    /// kubeconfig that has the context: `context` (or
    /// [`Cluster::PLACEHOLDER_CONTEXT`]) at an address that never resolves,
    /// in `namespace` or [`DEFAULT_NAMESPACE`].
    ///
    /// # Errors
    ///
    /// An invalid namespace.
    pub fn placeholder(
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Cluster, TargetError> {
        let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE).to_owned();
        check_namespace(&namespace)?;
        let url = "https://cluster.invalid"
            .parse()
            .expect("a fixed valid URL parses");
        Ok(Cluster {
            config: kube::Config::new(url),
            namespace,
            context: Some(context.unwrap_or(Self::PLACEHOLDER_CONTEXT).to_owned()),
        })
    }
}

impl ClusterOptions {
    /// Reads the kubeconfig (or the in-cluster configuration) without
    /// contacting the cluster.
    ///
    /// # Errors
    ///
    /// An unreadable kubeconfig, an unknown context (the message lists the
    /// known ones), a kubeconfig without a current context, or an invalid
    /// namespace.
    pub async fn resolve(&self) -> Result<Cluster, TargetError> {
        if let Some(namespace) = &self.namespace {
            check_namespace(namespace)?;
        }
        let kubeconfig = match self.read_kubeconfig()? {
            Some(kubeconfig) => kubeconfig,
            None => return self.in_cluster(),
        };

        let context = match &self.context {
            Some(context) => context.clone(),
            None => kubeconfig
                .current_context
                .clone()
                .filter(|context| !context.is_empty())
                .ok_or_else(|| TargetError::NoCurrentContext {
                    known: known_contexts(&kubeconfig),
                })?,
        };
        let Some(named) = kubeconfig
            .contexts
            .iter()
            .find(|named| named.name == context)
        else {
            return Err(TargetError::UnknownContext {
                context,
                known: known_contexts(&kubeconfig),
            });
        };
        let context_namespace = named
            .context
            .as_ref()
            .and_then(|context| context.namespace.clone());

        let options = KubeConfigOptions {
            context: Some(context.clone()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| TargetError::LoadContext {
                context: context.clone(),
                source,
            })?;
        let namespace = self
            .namespace
            .clone()
            .or(context_namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_namespace(&namespace)?;
        Ok(Cluster {
            config,
            namespace,
            context: Some(context),
        })
    }

    /// Returns the kubeconfig from `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`;
    /// `None` when none of them names a file that exists.
    fn read_kubeconfig(&self) -> Result<Option<Kubeconfig>, TargetError> {
        let read = |path: &Path| {
            Kubeconfig::read_from(path).map_err(|source| TargetError::ReadKubeconfig { source })
        };
        if let Some(path) = &self.kubeconfig {
            return read(path).map(Some);
        }
        if std::env::var_os("KUBECONFIG").is_some_and(|value| !value.is_empty()) {
            return Kubeconfig::from_env().map_err(|source| TargetError::ReadKubeconfig { source });
        }
        match dirs::home_dir().map(|home| home.join(".kube/config")) {
            Some(path) if path.exists() => read(&path).map(Some),
            _ => Ok(None),
        }
    }

    fn in_cluster(&self) -> Result<Cluster, TargetError> {
        if let Some(context) = &self.context {
            return Err(TargetError::NoConfigForContext {
                context: context.clone(),
            });
        }
        let config =
            kube::Config::incluster().map_err(|source| TargetError::NoConfig { source })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Ok(Cluster {
            config,
            namespace,
            context: None,
        })
    }
}

fn known_contexts(kubeconfig: &Kubeconfig) -> String {
    let names: Vec<String> = kubeconfig
        .contexts
        .iter()
        .map(|named| format!("`{}`", named.name))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Checks a namespace name against Kubernetes' DNS label rule.
pub fn check_namespace(namespace: &str) -> Result<(), TargetError> {
    let valid = (1..=63).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(TargetError::InvalidNamespace(
            namespace.chars().take(80).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: kind-dev
clusters:
- name: kind-dev
  cluster:
    server: https://127.0.0.1:6443
- name: remote
  cluster:
    server: https://127.0.0.1:7443
contexts:
- name: kind-dev
  context:
    cluster: kind-dev
    user: dev
- name: staging
  context:
    cluster: remote
    user: dev
    namespace: ci-jobs
users:
- name: dev
  user:
    token: not-a-real-token
"#;

    fn write_kubeconfig(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn options(file: &tempfile::NamedTempFile, context: Option<&str>) -> ClusterOptions {
        ClusterOptions {
            context: context.map(str::to_owned),
            kubeconfig: Some(file.path().to_owned()),
            namespace: None,
        }
    }

    #[test]
    fn targets_parse_and_print() {
        assert_eq!("local".parse::<Target>().unwrap(), Target::Local);
        assert_eq!(
            "kube".parse::<Target>().unwrap(),
            Target::Kube { context: None }
        );
        let named = "kube:kind-dev".parse::<Target>().unwrap();
        assert_eq!(
            named,
            Target::Kube {
                context: Some("kind-dev".into())
            }
        );
        assert_eq!(named.to_string(), "kube:kind-dev");
        for invalid in ["", "docker", "kube:", "local:x"] {
            let error = invalid.parse::<Target>().unwrap_err().to_string();
            assert!(
                error.contains("use `local`, `kube` or `kube:CONTEXT`"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn current_context_and_default_namespace() {
        let file = write_kubeconfig(KUBECONFIG);

        let cluster = options(&file, None).resolve().await.unwrap();

        assert_eq!(cluster.context.as_deref(), Some("kind-dev"));
        assert_eq!(cluster.namespace, DEFAULT_NAMESPACE);
        assert_eq!(
            cluster.config.cluster_url.to_string(),
            "https://127.0.0.1:6443/"
        );
    }

    #[tokio::test]
    async fn named_context_brings_its_namespace() {
        let file = write_kubeconfig(KUBECONFIG);

        let cluster = options(&file, Some("staging")).resolve().await.unwrap();

        assert_eq!(cluster.namespace, "ci-jobs");
        assert_eq!(
            cluster.config.cluster_url.to_string(),
            "https://127.0.0.1:7443/"
        );
    }

    #[tokio::test]
    async fn namespace_option_wins() {
        let file = write_kubeconfig(KUBECONFIG);
        let mut options = options(&file, Some("staging"));
        options.namespace = Some("other".into());

        assert_eq!(options.resolve().await.unwrap().namespace, "other");
    }

    #[tokio::test]
    async fn unknown_context_lists_the_known_ones() {
        let file = write_kubeconfig(KUBECONFIG);

        let error = options(&file, Some("prod")).resolve().await.unwrap_err();

        assert_eq!(
            error.to_string(),
            "kubeconfig context `prod` was not found; known contexts: `kind-dev`, `staging` \
             (pick one with --target kube:CONTEXT)"
        );
    }

    #[tokio::test]
    async fn missing_current_context_lists_the_known_ones() {
        let file = write_kubeconfig(&KUBECONFIG.replace("current-context: kind-dev\n", ""));

        let error = options(&file, None)
            .resolve()
            .await
            .unwrap_err()
            .to_string();

        assert!(error.contains("sets no current context"), "{error}");
        assert!(error.contains("`kind-dev`, `staging`"), "{error}");
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_names_the_file_and_fix() {
        let options = ClusterOptions {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..ClusterOptions::default()
        };

        let error = options.resolve().await.unwrap_err().to_string();

        assert!(
            error.contains("point KUBECONFIG or --kubeconfig"),
            "{error}"
        );
        let source = std::error::Error::source(&options.resolve().await.unwrap_err())
            .unwrap()
            .to_string();
        assert!(source.contains("/nonexistent/kubeconfig"), "{source}");
    }

    #[tokio::test]
    async fn invalid_namespace_is_rejected() {
        let file = write_kubeconfig(KUBECONFIG);
        let mut options = options(&file, None);
        options.namespace = Some("Jobs_Here".into());

        let error = options.resolve().await.unwrap_err().to_string();

        assert!(
            error.contains("namespace `Jobs_Here` is invalid"),
            "{error}"
        );
    }
}
