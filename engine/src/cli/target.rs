//! `--target`, `--namespace` and the other options that choose where jobs
//! run, shared by `danube run` and `danube serve`, and the backend they make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::backend::Backend;
use crate::backend::kubernetes::coordinator::{self as pod_coordinator, Placement};
use crate::backend::kubernetes::{self, JobPod, Target};
use crate::backend::targets::{self, TargetSettings};
use crate::config::DataDir;
use crate::model::JobId;
use crate::store::Store;

#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// Where jobs run: `local` (processes on this machine), `kube` (a pod per
    /// job on the kubeconfig's current context, or on this cluster when
    /// running in a pod) or `kube:CONTEXT`; `kubernetes` may stand for `kube`
    #[arg(long, default_value = "local", env = "DANUBE_TARGET", value_name = "TARGET", value_parser = parse_target)]
    pub target: Target,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Address of the engine's gRPC server for coordinators; set it to
    /// an address job pods can reach, such as `0.0.0.0:7001`, when they
    /// run the coordinator
    #[arg(
        long,
        env = "DANUBE_RPC_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub rpc_listen: SocketAddr,
}

/// The options of every kube target, whichever context it names: shared by
/// the CLI's commands and the desktop app, whose jobs each choose a context.
#[derive(Clone, Debug, Default, Args)]
pub struct ClusterArgs {
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

    /// Destination every job on a kube target may reach, besides its
    /// pipeline's `egress_allowlist`: a host name (pypi.org), a wildcard
    /// domain (*.github.com) or a CIDR (10.0.0.0/8), optionally with :PORT.
    /// Repeat for more
    #[arg(long = "egress-allow", value_name = "ENTRY", value_parser = parse_egress_entry)]
    pub egress_allow: Vec<String>,

    /// Reject pipelines whose `egress_allowlist` adds entries beyond
    /// --egress-allow: their plan fails with the entries named
    #[arg(long)]
    pub egress_fixed: bool,

    /// Placement of the pipeline script on a kube target: `pod` (a
    /// `coordinator` container in each job pod) or `engine` (a process
    /// beside the engine) [default: pod when the engine runs in the
    /// cluster, engine with a kubeconfig context]
    #[arg(long, env = "DANUBE_COORDINATOR", value_name = "WHERE")]
    pub coordinator: Option<Placement>,

    /// Image of the job pod's coordinator container, with Python and the
    /// Danube SDK [default: the tools image]
    #[arg(long, env = "DANUBE_COORDINATOR_IMAGE", value_name = "IMAGE", value_parser = parse_image)]
    pub coordinator_image: Option<String>,

    /// Python interpreter in the coordinator image that can import the
    /// SDK [default: /opt/danube/venv/bin/python]
    #[arg(long, env = "DANUBE_COORDINATOR_PYTHON", value_name = "PATH")]
    pub coordinator_python: Option<String>,

    /// Address at which coordinators in job pods reach the engine's gRPC
    /// server, such as `http://danube-engine.danube-system.svc:7001`
    /// [default: the address --rpc-listen bound]
    #[arg(long, env = "DANUBE_ENGINE_ADDRESS", value_name = "URL", value_parser = pod_coordinator::parse_engine_address)]
    pub engine_address: Option<String>,
}

impl ClusterArgs {
    /// Returns the options set on the command line that only a kube target
    /// uses, as the command line spells them.
    fn kube_only_options(&self) -> Vec<&'static str> {
        let options = [
            (!self.egress_allow.is_empty(), "--egress-allow"),
            (self.egress_fixed, "--egress-fixed"),
            (self.coordinator.is_some(), "--coordinator"),
            (self.engine_address.is_some(), "--engine-address"),
        ];
        options
            .into_iter()
            .filter_map(|(set, option)| set.then_some(option))
            .collect()
    }

    pub fn settings(&self) -> TargetSettings {
        TargetSettings {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            worker_image: self.worker_image.clone(),
            tools_image: self.tools_image.clone(),
            egress: kubernetes::network::EgressSettings {
                allow: self.egress_allow.clone(),
                fixed: self.egress_fixed,
            },
            coordinator: self.coordinator,
            coordinator_image: self.coordinator_image.clone(),
            coordinator_python: self.coordinator_python.clone(),
            engine_address: self.engine_address.clone(),
        }
    }
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

fn parse_egress_entry(text: &str) -> Result<String, String> {
    kubernetes::network::EgressEntry::parse(text)
        .map(|_| text.trim().to_owned())
        .map_err(|err| err.to_string())
}

impl TargetArgs {
    pub fn is_kube(&self) -> bool {
        matches!(self.target, Target::Kube { .. })
    }

    fn context(&self) -> Option<String> {
        match &self.target {
            Target::Kube { context } => context.clone(),
            Target::Local => None,
        }
    }

    fn settings(&self) -> TargetSettings {
        self.cluster.settings()
    }

    /// Makes the backend of this target. For a kube target it also deletes
    /// pods this engine left behind (see [`kubernetes::orphans`]).
    pub async fn backend(&self, data: &DataDir, store: &Store) -> anyhow::Result<Arc<dyn Backend>> {
        let kube_only = self.cluster.kube_only_options();
        if !self.is_kube() && !kube_only.is_empty() {
            let (options, verbs) = match kube_only.as_slice() {
                [one] => ((*one).to_owned(), ("applies", "has")),
                many => (many.join(", "), ("apply", "have")),
            };
            eprintln!(
                "warning: {options} {} to kube targets only and {} no effect with --target local",
                verbs.0, verbs.1
            );
        }
        if self.is_kube()
            && self.cluster.coordinator == Some(Placement::Pod)
            && self.cluster.engine_address.is_none()
            && self.rpc_listen.ip().is_unspecified()
        {
            anyhow::bail!(
                "--coordinator pod with --rpc-listen {} needs --engine-address \
                 (DANUBE_ENGINE_ADDRESS): the HOST:PORT at which job pods reach this engine's \
                 gRPC server",
                self.rpc_listen
            );
        }
        let connected = targets::connect(&self.target, &self.settings(), data, store).await?;
        if connected.deleted_orphans > 0 {
            eprintln!(
                "note: deleted {} pod(s) of jobs whose danube process stopped before they finished",
                connected.deleted_orphans
            );
        }
        Ok(connected.backend)
    }

    /// Prints the pod a job would get as YAML, then its egress policy as a
    /// second document, without contacting the cluster. Without any
    /// kubeconfig the context and namespace are placeholders, and the
    /// output's first comment names them.
    pub async fn print_dry_run(
        &self,
        data: &DataDir,
        pipeline: Option<&str>,
    ) -> anyhow::Result<()> {
        let target = self.settings();
        let settings = match targets::pod_settings(self.context(), &target, data).await {
            Ok((_, settings)) => settings,
            Err(targets::ConnectError::Cluster(
                kubernetes::TargetError::NoConfig { .. }
                | kubernetes::TargetError::NoConfigForContext { .. },
            )) => {
                let context = self.context();
                let cluster = kubernetes::Cluster::placeholder(
                    context.as_deref(),
                    target.namespace.as_deref(),
                )?;
                println!(
                    "# No kubeconfig was found, so context `{}` and namespace `{}` are \
                     placeholders; pass --kubeconfig or set KUBECONFIG for a real context.",
                    cluster.context.as_deref().unwrap_or_default(),
                    cluster.namespace
                );
                targets::pod_settings_for(&cluster, &target, data)?
            }
            Err(error) => return Err(error.into()),
        };
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

        let egress = self.settings().egress;
        let entries = kubernetes::network::parse_allowlist(&egress.allow)?;
        if entries.is_empty() {
            println!(
                "# No egress policy of the job's own: --egress-allow is empty. A pipeline's \
                 egress_allowlist gets one when the job declares its plan."
            );
            return Ok(());
        }
        let target = kubernetes::network::PolicyFor {
            namespace: &settings.namespace,
            job_id: &job_id,
            owner: None,
        };
        let cilium = kubernetes::network::cilium_egress_policy(&target, &entries);
        let plain = kubernetes::network::plain_egress_policy(&target, &entries);
        let cilium =
            serde_saphyr::to_string(&cilium).context("failed to write the policy as YAML")?;
        let plain =
            serde_saphyr::to_string(&plain).context("failed to write the policy as YAML")?;
        println!(
            "---\n# The job's egress policy from --egress-allow, where the API server serves \
             cilium.io/v2; the pipeline's egress_allowlist adds its entries when the job \
             declares its plan. Owned by the pod once it exists.\n{cilium}"
        );
        println!(
            "---\n# The same policy where the cluster has no Cilium: a NetworkPolicy, which \
             keeps the CIDR entries only. The engine creates one of the two, never both.\n{plain}"
        );
        Ok(())
    }
}
