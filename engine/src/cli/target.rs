//! `--target`, `--namespace` and the other options that choose where jobs
//! run, shared by `danube run` and `danube serve`, and the backend they make.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::backend::Backend;
use crate::backend::kubernetes::{
    self, ClusterOptions, JobPod, KubeSettings, KubernetesBackend, PodSettings, Target,
};
use crate::backend::local::LocalBackend;
use crate::config::DataDir;
use crate::model::JobId;
use crate::orchestrator::ownership;
use crate::store::Store;

#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// Where jobs run: `local` (processes on this machine), `kube` (a pod per
    /// job on the kubeconfig's current context, or on this cluster when
    /// running in a pod) or `kube:CONTEXT`
    #[arg(long, default_value = "local", env = "DANUBE_TARGET", value_name = "TARGET", value_parser = parse_target)]
    pub target: Target,

    /// Namespace of job pods on a kube target [default: the context's
    /// namespace, else danube-jobs]
    #[arg(long, env = "DANUBE_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// Kubeconfig file for a kube target [default: $KUBECONFIG, else
    /// ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Image of the worker container on a kube target [default:
    /// docker.io/library/python:3.12-slim-bookworm]
    #[arg(long, env = "DANUBE_WORKER_IMAGE", value_name = "IMAGE", value_parser = parse_image)]
    pub worker_image: Option<String>,

    /// Image that carries danube-supervisor, run as the job pod's init
    /// container [default: danube-coordinator:VERSION, built from
    /// deploy/coordinator]
    #[arg(long, env = "DANUBE_TOOLS_IMAGE", value_name = "IMAGE", value_parser = parse_image)]
    pub tools_image: Option<String>,
}

fn parse_target(text: &str) -> Result<Target, String> {
    text.parse()
        .map_err(|err: kubernetes::TargetError| err.to_string())
}

fn parse_image(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text
            .chars()
            .any(|character| character.is_whitespace() || character.is_control())
    {
        return Err(format!(
            "invalid image `{text}`: use a reference such as `python:3.12` without spaces"
        ));
    }
    Ok(text.to_owned())
}

impl TargetArgs {
    pub fn is_kube(&self) -> bool {
        matches!(self.target, Target::Kube { .. })
    }

    fn cluster_options(&self) -> ClusterOptions {
        let context = match &self.target {
            Target::Kube { context } => context.clone(),
            Target::Local => None,
        };
        ClusterOptions {
            context,
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Reads the kubeconfig (without contacting the cluster) and returns the
    /// pod settings of this engine.
    async fn pod_settings(
        &self,
        data: &DataDir,
    ) -> anyhow::Result<(kubernetes::Cluster, PodSettings)> {
        let cluster = self.cluster_options().resolve().await?;
        let engine_id = kubernetes::load_engine_id(&data.root().join(kubernetes::ENGINE_ID_FILE))
            .context("failed to read this engine's id")?;
        let mut settings = PodSettings::new(cluster.namespace.clone(), engine_id);
        if let Some(image) = &self.worker_image {
            settings.worker_image = image.clone();
        }
        if let Some(image) = &self.tools_image {
            settings.tools_image = image.clone();
        }
        Ok((cluster, settings))
    }

    /// Makes the backend of this target. For a kube target it also deletes
    /// pods this engine left behind (see [`kubernetes::orphans`]).
    pub async fn backend(&self, data: &DataDir, store: &Store) -> anyhow::Result<Arc<dyn Backend>> {
        if !self.is_kube() {
            return Ok(Arc::new(LocalBackend::new(data.workspaces_dir())));
        }
        let (cluster, pod) = self.pod_settings(data).await?;
        let described = format!(
            "context `{}`, namespace `{}`",
            cluster.context.as_deref().unwrap_or("in-cluster"),
            cluster.namespace
        );
        let backend = KubernetesBackend::connect(
            cluster,
            KubeSettings {
                pod,
                workspaces_root: data.workspaces_dir(),
                pod_start_limit: kubernetes::POD_START_LIMIT,
                max_download_bytes: crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
            },
        )?;

        let orphans = kubernetes::orphans::clean_orphans(
            backend.api(),
            &backend.settings().pod.engine_id,
            store,
            |job| ownership::is_owned(&data.job_logs_dir(job)),
        )
        .await
        .with_context(|| format!("failed to reach the cluster ({described})"))?;
        if !orphans.is_empty() {
            eprintln!(
                "note: deleted {} pod(s) of jobs whose danube process stopped before they finished",
                orphans.len()
            );
        }
        tracing::info!(target = %self.target, cluster = %described, "kubernetes backend ready");
        Ok(Arc::new(backend))
    }

    /// Prints the pod a job would get as YAML, without contacting the cluster.
    pub async fn print_dry_run(
        &self,
        data: &DataDir,
        pipeline: Option<&str>,
    ) -> anyhow::Result<()> {
        let (_, settings) = self.pod_settings(data).await?;
        let job_id = JobId::new();
        let pod = kubernetes::pod::build_pod(
            &settings,
            &JobPod {
                job_id: &job_id,
                pipeline,
            },
        );
        let yaml = kubernetes::pod::to_yaml(&pod).context("failed to write the pod as YAML")?;
        println!("# The pod of one job; each job gets a new id.\n{yaml}");
        Ok(())
    }
}
