//! Checks of the files under `deploy/`. Every Kubernetes manifest
//! deserialises into its k8s-openapi type with unknown fields rejected,
//! because a typo such as `securityContex` would otherwise drop a setting
//! without a word. The security settings hold, and the coordinator image's
//! Dockerfile copies paths that exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use danube::backend::kubernetes::network::{self, CiliumNetworkPolicy};
use danube::backend::kubernetes::strict::{self, StrictError};
use danube::model::JobId;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;

const JOBS_NAMESPACE: &str = "danube-jobs";
const SYSTEM_NAMESPACE: &str = "danube-system";

/// Example output of the engine, not applied by the kustomization.
const CILIUM_EXAMPLE: &str = "cilium-egress-example.yaml";

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_owned()
}

fn manifests_dir() -> PathBuf {
    repository_root().join("deploy/kubernetes")
}

/// Lists every `.yaml` file under `deploy/kubernetes`, sorted by name.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("deploy/kubernetes exists")
        .map(|entry| entry.expect("deploy/kubernetes can be listed").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    files
}

/// Reads the documents of one file under `deploy/kubernetes`.
fn documents_of(file: &str) -> Vec<serde_json::Value> {
    let path = manifests_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
    strict::yaml_documents(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Deserialises `document` into `T` and fails on any field `T` does not
/// know, with the engine's own checker.
fn strict<T: DeserializeOwned>(document: serde_json::Value) -> Result<T, StrictError> {
    strict::from_value(document, "manifest")
}

/// Checks one document against the type its `kind` names and returns the
/// kind.
fn check_document(document: serde_json::Value) -> Result<String, StrictError> {
    let kind = document["kind"].as_str().unwrap_or_default().to_owned();
    match kind.as_str() {
        "Namespace" => strict::from_value::<Namespace>(document, "Namespace").map(drop),
        "ServiceAccount" => {
            strict::from_value::<ServiceAccount>(document, "ServiceAccount").map(drop)
        }
        "Role" => strict::from_value::<Role>(document, "Role").map(drop),
        "RoleBinding" => strict::from_value::<RoleBinding>(document, "RoleBinding").map(drop),
        "Deployment" => strict::from_value::<Deployment>(document, "Deployment").map(drop),
        "Service" => strict::from_value::<Service>(document, "Service").map(drop),
        "PersistentVolumeClaim" => {
            strict::from_value::<PersistentVolumeClaim>(document, "PersistentVolumeClaim").map(drop)
        }
        "NetworkPolicy" => strict::from_value::<NetworkPolicy>(document, "NetworkPolicy").map(drop),
        "CiliumNetworkPolicy" => {
            strict::from_value::<CiliumNetworkPolicy>(document, "CiliumNetworkPolicy").map(drop)
        }
        other => panic!("no type is known for kind `{other}`; add one to this test"),
    }?;
    Ok(kind)
}

/// Reads every document of every manifest except the kustomization, checks
/// each strictly, and returns them with their file names.
fn all_documents() -> Vec<(String, serde_json::Value)> {
    let mut all = Vec::new();
    for path in manifest_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "kustomization.yaml" {
            continue;
        }
        for document in documents_of(&name) {
            check_document(document.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
            all.push((name.clone(), document));
        }
    }
    all
}

fn find<T: DeserializeOwned>(kind: &str, name: &str) -> T {
    let document = all_documents()
        .into_iter()
        .map(|(_, document)| document)
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} `{name}` under deploy/kubernetes"));
    strict(document).unwrap()
}

fn engine_deployment() -> Deployment {
    find("Deployment", "danube-engine")
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("the Deployment has a pod template")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[test]
fn every_manifest_matches_its_type() {
    let kinds: Vec<String> = all_documents()
        .into_iter()
        .map(|(_, document)| document["kind"].as_str().unwrap().to_owned())
        .collect();

    for expected in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    ] {
        assert!(
            kinds.iter().any(|kind| kind == expected),
            "no {expected} under deploy/kubernetes"
        );
    }
}

#[test]
fn typo_in_a_manifest_is_caught() {
    let document = strict::yaml_documents(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  lables: {a: b}\n",
    )
    .unwrap()
    .remove(0);
    let nested = strict::yaml_documents(concat!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "spec:\n  selector: {}\n  template:\n    spec:\n      containers:\n",
        "        - name: c\n          securityContex: {runAsNonRoot: true}\n",
    ))
    .unwrap()
    .remove(0);

    let error = check_document(document).unwrap_err().to_string();
    let nested_error = check_document(nested).unwrap_err().to_string();

    assert_eq!(error, "unknown fields for Namespace: metadata.lables");
    assert_eq!(
        nested_error,
        "unknown fields for Deployment: spec.template.spec.containers.0.securityContex"
    );
}

#[test]
fn namespaces_enforce_restricted_pod_security() {
    let mut names = Vec::new();
    for document in documents_of("namespaces.yaml") {
        let namespace: Namespace = strict(document).unwrap();
        let name = namespace.metadata.name.clone().unwrap();
        let labels = namespace.metadata.labels.unwrap();

        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels[&format!("pod-security.kubernetes.io/{mode}")],
                "restricted",
                "{name}: {mode}"
            );
            assert_eq!(
                labels[&format!("pod-security.kubernetes.io/{mode}-version")],
                "latest",
                "{name}: {mode}-version"
            );
        }
        names.push(name);
    }

    assert_eq!(names, [SYSTEM_NAMESPACE, JOBS_NAMESPACE]);
}

#[test]
fn engine_role_grants_exactly_the_job_pod_rules() {
    let role: Role = find("Role", "danube-engine");

    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(strings(&[group])),
        resources: Some(strings(&[resource])),
        verbs: strings(verbs),
        ..PolicyRule::default()
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some(JOBS_NAMESPACE));
    assert_eq!(
        role.rules.unwrap(),
        [
            rule(
                "",
                "pods",
                &["create", "get", "list", "watch", "patch", "delete"]
            ),
            rule("", "pods/exec", &["create", "get"]),
            rule("", "pods/log", &["get"]),
            rule("", "pods/ephemeralcontainers", &["get", "patch", "update"]),
            rule(
                "networking.k8s.io",
                "networkpolicies",
                &["create", "delete"]
            ),
            rule("cilium.io", "ciliumnetworkpolicies", &["create", "delete"]),
        ]
    );
}

#[test]
fn engine_rbac_reaches_only_the_jobs_namespace() {
    let documents = all_documents();

    for (file, document) in &documents {
        let kind = document["kind"].as_str().unwrap();
        assert!(
            !matches!(kind, "ClusterRole" | "ClusterRoleBinding"),
            "{file}: a {kind} grants rights outside {JOBS_NAMESPACE}"
        );
        if matches!(kind, "Role" | "RoleBinding") {
            assert_eq!(
                document["metadata"]["namespace"], JOBS_NAMESPACE,
                "{file}: {kind} outside {JOBS_NAMESPACE}"
            );
        }
    }
    let binding: RoleBinding = find("RoleBinding", "danube-engine");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "danube-engine");
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "danube-engine");
    assert_eq!(subjects[0].namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    let account: ServiceAccount = find("ServiceAccount", "danube-engine");
    assert_eq!(
        account.metadata.namespace.as_deref(),
        Some(SYSTEM_NAMESPACE)
    );
    assert_eq!(
        pod_spec(&engine_deployment())
            .service_account_name
            .as_deref(),
        Some("danube-engine")
    );
}

/// Asserts what Pod Security `restricted` demands of a pod, and a read-only
/// root filesystem besides.
fn assert_restricted(name: &str, pod: &PodSpec) {
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
    assert!(
        pod_security.run_as_user.is_some_and(|user| user != 0),
        "{name}"
    );
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault",
        "{name}"
    );

    for container in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let context = format!("{name}, container {}", container.name);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(
            security.allow_privilege_escalation,
            Some(false),
            "{context}"
        );
        assert_ne!(security.privileged, Some(true), "{context}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{context}");
        assert_ne!(security.run_as_non_root, Some(false), "{context}");
        let capabilities = security.capabilities.as_ref().unwrap();
        assert_eq!(
            capabilities.drop.as_deref(),
            Some(&strings(&["ALL"])[..]),
            "{context}"
        );
        assert_eq!(capabilities.add, None, "{context}");
        let resources = container.resources.as_ref().unwrap();
        for quantities in [&resources.requests, &resources.limits] {
            let quantities = quantities.as_ref().unwrap();
            assert!(quantities.contains_key("cpu"), "{context}");
            assert!(quantities.contains_key("memory"), "{context}");
        }
    }
}

#[test]
fn every_deployment_runs_restricted() {
    let deployments: Vec<Deployment> = all_documents()
        .into_iter()
        .filter(|(_, document)| document["kind"] == "Deployment")
        .map(|(_, document)| strict(document).unwrap())
        .collect();

    assert_eq!(deployments.len(), 2);
    for deployment in &deployments {
        let name = deployment.metadata.name.as_deref().unwrap();
        assert_eq!(
            deployment.metadata.namespace.as_deref(),
            Some(SYSTEM_NAMESPACE),
            "{name}"
        );
        assert_restricted(name, pod_spec(deployment));
    }
}

#[test]
fn engine_pod_has_probes_and_volume() {
    let deployment = engine_deployment();
    let spec = deployment.spec.as_ref().unwrap();
    let pod = pod_spec(&deployment);
    let engine = &pod.containers[0];

    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    assert_eq!(pod.containers.len(), 1);
    let probe_command = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .clone()
            .unwrap()
            .join(" ")
    };
    assert!(probe_command(&engine.liveness_probe).contains("http://127.0.0.1:8080/health'"));
    assert!(probe_command(&engine.startup_probe).contains("http://127.0.0.1:8080/health'"));
    assert!(probe_command(&engine.readiness_probe).contains("http://127.0.0.1:8080/health/ready'"));
    assert!(
        engine
            .args
            .as_ref()
            .unwrap()
            .contains(&"--bind=127.0.0.1:8080".to_owned())
    );

    let data_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|volume| volume.name == "data")
        .unwrap();
    let claim = &data_volume
        .persistent_volume_claim
        .as_ref()
        .unwrap()
        .claim_name;
    let pvc: PersistentVolumeClaim = find("PersistentVolumeClaim", claim);
    assert_eq!(pvc.metadata.namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    let mount = engine
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|mount| mount.name == "data")
        .unwrap();
    let data_dir = engine
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|variable| variable.name == "DANUBE_DATA_DIR")
        .and_then(|variable| variable.value.clone());
    assert_eq!(data_dir.as_deref(), Some(mount.mount_path.as_str()));
}

#[test]
fn engine_image_and_tools_image_match_the_version() {
    let deployment = engine_deployment();
    let engine = &pod_spec(&deployment).containers[0];
    let expected = format!("danube-coordinator:{}", env!("CARGO_PKG_VERSION"));

    assert_eq!(engine.image.as_deref(), Some(expected.as_str()));
    assert!(
        engine
            .args
            .as_ref()
            .unwrap()
            .contains(&format!("--tools-image={expected}")),
        "the job pods' tools image must be the engine's own image"
    );
}

#[test]
fn services_select_their_deployments() {
    for name in ["danube-engine", "danube-registry"] {
        let service: Service = find("Service", name);
        let deployment: Deployment = find("Deployment", name);

        let selector = service.spec.unwrap().selector.unwrap();
        let labels = deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        for (key, value) in &selector {
            assert_eq!(labels.get(key), Some(value), "{name}: {key}");
        }
    }
}

fn network_policy(name: &str) -> NetworkPolicy {
    let policy: NetworkPolicy = find("NetworkPolicy", name);
    assert_eq!(
        policy.metadata.namespace.as_deref(),
        Some(JOBS_NAMESPACE),
        "{name}"
    );
    policy
}

fn selects_every_pod(policy: &NetworkPolicy) -> bool {
    let selector = policy
        .spec
        .as_ref()
        .unwrap()
        .pod_selector
        .clone()
        .unwrap_or_default();
    selector.match_labels.unwrap_or_default().is_empty()
        && selector.match_expressions.unwrap_or_default().is_empty()
}

fn label_selector(key: &str, value: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(key.to_owned(), value.to_owned())]))
}

#[test]
fn jobs_namespace_denies_all_ingress() {
    let policy = network_policy("default-deny-ingress");
    let spec = policy.spec.as_ref().unwrap();

    assert!(selects_every_pod(&policy));
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&strings(&["Ingress"])[..])
    );
    assert_eq!(spec.ingress, None);
    assert_eq!(spec.egress, None);
}

#[test]
fn jobs_namespace_allows_dns_egress_only_by_default() {
    let policy = network_policy("default-egress-dns-only");
    let spec = policy.spec.as_ref().unwrap();

    assert!(selects_every_pod(&policy));
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&strings(&["Egress"])[..])
    );
    let egress = spec.egress.as_ref().unwrap();
    assert_eq!(egress.len(), 1);
    let peers = egress[0].to.as_ref().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].namespace_selector.as_ref().unwrap().match_labels,
        label_selector("kubernetes.io/metadata.name", "kube-system")
    );
    assert_eq!(
        peers[0].pod_selector.as_ref().unwrap().match_labels,
        label_selector("k8s-app", "kube-dns")
    );
    let ports: Vec<(String, String)> = egress[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|port| {
            (
                port.protocol.clone().unwrap(),
                serde_json::to_string(port.port.as_ref().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("UDP".to_owned(), "53".to_owned()),
            ("TCP".to_owned(), "53".to_owned())
        ]
    );
}

#[test]
fn egress_rules_name_peer_and_port() {
    let policies: Vec<NetworkPolicy> = all_documents()
        .into_iter()
        .filter(|(_, document)| document["kind"] == "NetworkPolicy")
        .map(|(_, document)| strict(document).unwrap())
        .collect();

    assert_eq!(policies.len(), 5);
    for policy in policies {
        let name = policy.metadata.name.clone().unwrap();
        let expected_namespace = if name == "engine-grpc-from-jobs" {
            SYSTEM_NAMESPACE
        } else {
            JOBS_NAMESPACE
        };
        assert_eq!(
            policy.metadata.namespace.as_deref(),
            Some(expected_namespace),
            "{name}"
        );
        // A rule without peers or ports allows every destination or port.
        for rule in policy.spec.unwrap().egress.unwrap_or_default() {
            assert!(!rule.to.unwrap_or_default().is_empty(), "{name}");
            assert!(!rule.ports.unwrap_or_default().is_empty(), "{name}");
        }
    }
    let registry = network_policy("jobs-to-registry");
    let rule = &registry.spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    let peer = &rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector.as_ref().unwrap().match_labels,
        label_selector("kubernetes.io/metadata.name", SYSTEM_NAMESPACE)
    );
    assert_eq!(
        peer.pod_selector.as_ref().unwrap().match_labels,
        label_selector("app.kubernetes.io/name", "danube-registry")
    );
}

/// The namespace labels and pod labels of a policy's one peer, and its
/// ports as `PROTOCOL/PORT`.
type PeerAndPorts = (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
    Vec<String>,
);

fn peer_and_ports(
    peers: &[k8s_openapi::api::networking::v1::NetworkPolicyPeer],
    ports: &[k8s_openapi::api::networking::v1::NetworkPolicyPort],
) -> PeerAndPorts {
    assert_eq!(peers.len(), 1);
    let ports = ports
        .iter()
        .map(|port| {
            format!(
                "{}/{}",
                port.protocol.clone().unwrap(),
                serde_json::to_string(port.port.as_ref().unwrap()).unwrap()
            )
        })
        .collect();
    (
        peers[0].namespace_selector.clone().unwrap().match_labels,
        peers[0].pod_selector.clone().unwrap().match_labels,
        ports,
    )
}

#[test]
fn only_job_pods_reach_the_engine_grpc_port() {
    let deployment = engine_deployment();
    let args = pod_spec(&deployment).containers[0].args.clone().unwrap();
    assert!(args.contains(&"--coordinator=pod".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--rpc-listen=0.0.0.0:7001".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--engine-address=http://danube-engine.danube-system.svc:7001".to_owned()),
        "{args:?}"
    );
    let service: Service = find("Service", "danube-engine");
    let grpc = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|port| port.name.as_deref() == Some("grpc"))
        .expect("the engine's Service exposes the gRPC port");
    assert_eq!(grpc.port, 7001);

    let egress = network_policy("jobs-to-engine-grpc");
    let spec = egress.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels,
        label_selector("app.kubernetes.io/managed-by", "danube")
    );
    let rules = spec.egress.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        peer_and_ports(
            rules[0].to.as_deref().unwrap(),
            rules[0].ports.as_deref().unwrap()
        ),
        (
            label_selector("kubernetes.io/metadata.name", SYSTEM_NAMESPACE),
            label_selector("app.kubernetes.io/name", "danube-engine"),
            vec!["TCP/7001".to_owned()]
        )
    );

    let ingress: NetworkPolicy = find("NetworkPolicy", "engine-grpc-from-jobs");
    assert_eq!(
        ingress.metadata.namespace.as_deref(),
        Some(SYSTEM_NAMESPACE)
    );
    let spec = ingress.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels,
        label_selector("app.kubernetes.io/name", "danube-engine")
    );
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&strings(&["Ingress"])[..])
    );
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        peer_and_ports(
            rules[0].from.as_deref().unwrap(),
            rules[0].ports.as_deref().unwrap()
        ),
        (
            label_selector("kubernetes.io/metadata.name", JOBS_NAMESPACE),
            label_selector("app.kubernetes.io/managed-by", "danube"),
            vec!["TCP/7001".to_owned()]
        )
    );
}

#[test]
fn kustomization_lists_every_manifest_but_the_example() {
    let kustomization = documents_of("kustomization.yaml").remove(0);
    let listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource.as_str().unwrap().to_owned())
        .collect();

    let mut expected: Vec<String> = manifest_files()
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml" && name != CILIUM_EXAMPLE)
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    assert_eq!(kustomization["kind"], "Kustomization");
}

/// Reads the Dockerfile's instructions, with continued lines joined.
fn dockerfile_instructions() -> Vec<String> {
    let text =
        std::fs::read_to_string(repository_root().join("deploy/coordinator/Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// Reads the patterns of the Dockerfile's ignore file, without comments.
fn docker_ignored() -> Vec<String> {
    std::fs::read_to_string(repository_root().join("deploy/coordinator/Dockerfile.dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn coordinator_dockerfile_copies_paths_that_exist() {
    let root = repository_root();
    let ignored = docker_ignored();
    let mut sources = Vec::new();
    for instruction in dockerfile_instructions() {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        if words[0] == "COPY" && !words[1].starts_with("--from=") && words[1] != "." {
            sources.push(words[1].to_owned());
        }
        for word in &words {
            if let Some(options) = word.strip_prefix("--mount=type=bind,") {
                let source = options
                    .split(',')
                    .find_map(|option| option.strip_prefix("source="))
                    .unwrap();
                sources.push(source.to_owned());
            }
        }
    }

    assert_eq!(sources, ["sdk/python", "examples"]);
    for source in &sources {
        assert!(root.join(source).exists(), "`{source}` does not exist");
        let first = source.split('/').next().unwrap();
        assert!(
            !ignored
                .iter()
                .any(|pattern| pattern == first || pattern == source),
            "`{source}` is excluded by Dockerfile.dockerignore"
        );
    }
    assert!(root.join("sdk/python/danube/_requirements.txt").is_file());
    assert!(root.join("sdk/python/pyproject.toml").is_file());
}

#[test]
fn coordinator_dockerfile_installs_the_static_supervisor() {
    let instructions = dockerfile_instructions();
    let text = instructions.join("\n");

    assert!(text.contains("rustup target add x86_64-unknown-linux-musl"));
    assert!(text.contains("-p danube-supervisor --target x86_64-unknown-linux-musl"));
    assert!(text.contains("target/x86_64-unknown-linux-musl/release/danube-supervisor"));
    assert!(
        instructions.iter().any(|line| line
            == "COPY --from=build /out/danube-supervisor /usr/local/bin/danube-supervisor")
    );
    let user = instructions
        .iter()
        .rfind(|line| line.starts_with("USER "))
        .unwrap();
    assert_eq!(user, "USER 65532:65532");
}

/// Copies `from` into `to`, leaving out build outputs and caches.
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "build" || name == "__pycache__" || name.ends_with(".egg-info") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Runs `command` and fails the test with its output when it fails.
fn run(command: &mut std::process::Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("failed to start {command:?}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The image's SDK step, run here: pip installs the pinned packages and the
/// SDK from `sdk/python` into a fresh venv, which then imports the gRPC
/// client. Needs python3 with venv and the package index, as the engine's
/// own first run does.
#[test]
fn coordinator_sdk_installs_into_a_fresh_venv() {
    let temp = tempfile::tempdir().unwrap();
    let sdk = temp.path().join("sdk");
    let venv = temp.path().join("venv");
    // pip writes build files next to the sources, so it gets a copy.
    copy_sources(&repository_root().join("sdk/python"), &sdk);

    run(std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv));
    let python = venv.join("bin/python");
    run(std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(sdk.join("danube/_requirements.txt"))
        .arg(&sdk));
    let imported = run(std::process::Command::new(&python)
        .current_dir(temp.path())
        .args([
            "-c",
            "import danube, danube._proto.job_pb2_grpc; print(danube.__file__)",
        ]));

    let site_packages = venv.join("lib");
    assert!(
        Path::new(imported.trim()).starts_with(&site_packages),
        "danube was imported from {imported}, not from the venv"
    );
}

/// The allowlist of `cilium-egress-example.yaml`.
const EXAMPLE_ALLOWLIST: [&str; 4] = [
    "pypi.org",
    "files.pythonhosted.org",
    "*.github.com",
    "10.96.0.0/12:5000",
];

/// The job and pod uid of `cilium-egress-example.yaml`.
const EXAMPLE_JOB: &str = "019aef2c-0000-7000-8000-000000000000";
const EXAMPLE_POD_UID: &str = "5c1f7a6e-0000-4000-8000-000000000000";

#[test]
fn cilium_example_is_what_the_engine_generates() {
    let allowlist: Vec<String> = EXAMPLE_ALLOWLIST
        .iter()
        .map(|entry| entry.to_string())
        .collect();
    let entries = network::parse_allowlist(&allowlist).unwrap();
    let job_id = JobId(EXAMPLE_JOB.into());
    let job = network::PolicyFor {
        namespace: "danube-jobs",
        job_id: &job_id,
        owner: Some(network::PodOwner {
            name: &danube::backend::kubernetes::pod::pod_name(&job_id),
            uid: EXAMPLE_POD_UID,
        }),
    };
    let policy = network::cilium_egress_policy(&job, &entries);
    let generated = format!(
        "# Generated by the engine for one job from egress_allowlist = {:?}.\n{}",
        EXAMPLE_ALLOWLIST,
        serde_saphyr::to_string(&policy).unwrap()
    );
    let path = manifests_dir().join(CILIUM_EXAMPLE);
    if std::env::var_os("DANUBE_UPDATE_EXAMPLES").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }

    let stored = std::fs::read_to_string(&path).unwrap();

    assert_eq!(
        stored, generated,
        "run with DANUBE_UPDATE_EXAMPLES=1 to update the example"
    );
}
