//! Applying a job's egress policy: which kind the cluster enforces, and
//! creating and deleting the one policy of each job.
//!
//! Whether the cluster runs Cilium is asked once per backend, through API
//! discovery of `cilium.io/v2`. With Cilium the job gets a
//! CiliumNetworkPolicy. Without it the job gets a plain NetworkPolicy that
//! keeps the CIDR entries only, and the job's log names the dropped ones.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::KubeError;
use super::network::{self, EgressEntry, PolicyFor};
use super::retry;

/// The API group and version of CiliumNetworkPolicy.
pub const CILIUM_GROUP_VERSION: &str = "cilium.io/v2";

/// The resource of CiliumNetworkPolicy, as RBAC and discovery name it.
pub const CILIUM_RESOURCE: &str = "ciliumnetworkpolicies";

/// The kind of policy a cluster enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Cilium,
    Plain,
}

/// A policy the backend created for a job, to delete with its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedPolicy {
    pub kind: PolicyKind,
    pub name: String,
}

/// The result of applying a job's allowlist.
#[derive(Debug)]
pub struct Applied {
    pub policy: AppliedPolicy,
    /// Host-name entries a plain NetworkPolicy cannot enforce.
    pub dropped: Vec<String>,
}

/// Creates and deletes the egress policies of one namespace's jobs.
pub struct EgressPolicies {
    client: Client,
    namespace: String,
    cilium: OnceCell<bool>,
}

impl EgressPolicies {
    pub fn new(client: Client, namespace: String) -> EgressPolicies {
        EgressPolicies {
            client,
            namespace,
            cilium: OnceCell::new(),
        }
    }

    /// Returns the kind of policy the cluster enforces, asking the API
    /// server on first use.
    ///
    /// # Errors
    ///
    /// Discovery failed for a reason other than the group being absent.
    pub async fn kind(&self) -> Result<PolicyKind, KubeError> {
        let cilium = self
            .cilium
            .get_or_try_init(|| async {
                let found = retry::with_backoff("discover cilium.io/v2", || {
                    self.client.list_api_group_resources(CILIUM_GROUP_VERSION)
                })
                .await;
                match found {
                    Ok(list) => Ok(list
                        .resources
                        .iter()
                        .any(|resource| resource.name == CILIUM_RESOURCE)),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                    Err(source) => Err(KubeError::Discover {
                        group_version: CILIUM_GROUP_VERSION.into(),
                        source: Box::new(source),
                    }),
                }
            })
            .await?;
        tracing::debug!(namespace = %self.namespace, cilium, "egress policy kind known");
        Ok(if *cilium {
            PolicyKind::Cilium
        } else {
            PolicyKind::Plain
        })
    }

    /// Creates the egress policy of `job`, owned by its pod.
    ///
    /// # Errors
    ///
    /// Discovery or the create request failed.
    pub async fn apply(
        &self,
        job: &PolicyFor<'_>,
        entries: &[EgressEntry],
    ) -> Result<Applied, KubeError> {
        let kind = self.kind().await?;
        let name = network::policy_name(job.job_id);
        let params = PostParams::default();
        let created = match kind {
            PolicyKind::Cilium => {
                let policy = network::cilium_egress_policy(job, entries);
                let object: DynamicObject = serde_json::from_value(
                    serde_json::to_value(&policy).expect("a policy serialises to JSON"),
                )
                .expect("a policy is a Kubernetes object");
                let api = self.cilium_api();
                retry::with_backoff("create cilium egress policy", || {
                    api.create(&params, &object)
                })
                .await
                .map(drop)
            }
            PolicyKind::Plain => {
                let policy = network::plain_egress_policy(job, entries);
                let api = self.plain_api();
                retry::with_backoff("create egress policy", || api.create(&params, &policy))
                    .await
                    .map(drop)
            }
        };
        // A retried create whose first attempt got through meets its own policy.
        let created = match created {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            other => other,
        };
        created.map_err(|source| KubeError::CreatePolicy {
            policy: name.clone(),
            namespace: self.namespace.clone(),
            resource: resource_of(kind),
            source: Box::new(source),
        })?;

        let dropped = match kind {
            PolicyKind::Cilium => Vec::new(),
            PolicyKind::Plain => entries
                .iter()
                .filter(|entry| !entry.is_cidr())
                .map(ToString::to_string)
                .collect(),
        };
        tracing::info!(job_id = %job.job_id, policy = %name, ?kind, entries = entries.len(), "egress policy created");
        Ok(Applied {
            policy: AppliedPolicy { kind, name },
            dropped,
        })
    }

    /// Deletes a job's policy; one that is already gone is not an error.
    ///
    /// # Errors
    ///
    /// The delete request failed.
    pub async fn delete(&self, policy: &AppliedPolicy) -> Result<(), KubeError> {
        let params = DeleteParams::default();
        let result = match policy.kind {
            PolicyKind::Cilium => {
                let api = self.cilium_api();
                retry::with_backoff("delete cilium egress policy", || {
                    api.delete(&policy.name, &params)
                })
                .await
                .map(drop)
            }
            PolicyKind::Plain => {
                let api = self.plain_api();
                retry::with_backoff("delete egress policy", || api.delete(&policy.name, &params))
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(KubeError::DeletePolicy {
                policy: policy.name.clone(),
                source: Box::new(source),
            }),
        }
    }

    fn plain_api(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn cilium_api(&self) -> Api<DynamicObject> {
        let kind = GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy");
        let resource = ApiResource::from_gvk_with_plural(&kind, CILIUM_RESOURCE);
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }
}

fn resource_of(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Cilium => "ciliumnetworkpolicies.cilium.io",
        PolicyKind::Plain => "networkpolicies.networking.k8s.io",
    }
}
