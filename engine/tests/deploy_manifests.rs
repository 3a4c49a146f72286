//! Every manifest in deploy/kubernetes deserialises into its Kubernetes type
//! with unknown fields rejected, so a typo cannot silently drop a setting.

use std::path::{Path, PathBuf};

use danube::backend::kubernetes::network::{self, CiliumNetworkPolicy};
use danube::backend::kubernetes::strict::{self, StrictError};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

/// The allowlist of `cilium-egress-example.yaml`.
const EXAMPLE_ALLOWLIST: [&str; 4] = [
    "pypi.org",
    "files.pythonhosted.org",
    "*.github.com",
    "10.96.0.0/12:5000",
];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Checks one document against the type its `kind` names; returns the kind.
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
        "CiliumNetworkPolicy" => serde_json::from_value::<CiliumNetworkPolicy>(document)
            .map(drop)
            .map_err(|source| StrictError::Schema {
                kind: "CiliumNetworkPolicy",
                source,
            }),
        other => panic!("no type known for kind `{other}`; add it to this test"),
    }?;
    Ok(kind)
}

#[test]
fn every_manifest_matches_its_type() {
    let mut kinds = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());

    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for document in strict::yaml_documents(&text).unwrap() {
            let kind =
                check_document(document).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            kinds.push(kind);
        }
    }

    for expected in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "CiliumNetworkPolicy",
    ] {
        assert!(
            kinds.iter().any(|kind| kind == expected),
            "no {expected} in deploy/"
        );
    }
}

#[test]
fn a_typo_in_a_manifest_is_caught() {
    let document = strict::yaml_documents(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  lables: {a: b}\n",
    )
    .unwrap()
    .remove(0);

    let error = check_document(document).unwrap_err().to_string();

    assert!(error.contains("metadata.lables"), "{error}");
}

#[test]
fn namespaces_enforce_pod_security_restricted() {
    let text = std::fs::read_to_string(manifests_dir().join("namespaces.yaml")).unwrap();
    let mut names = Vec::new();
    for document in strict::yaml_documents(&text).unwrap() {
        let namespace: Namespace = strict::from_value(document, "Namespace").unwrap();
        let labels = namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        names.push(namespace.metadata.name.unwrap());
    }
    assert_eq!(names, ["danube-system", "danube-jobs"]);
}

#[test]
fn engine_role_is_limited_to_pods_in_the_jobs_namespace() {
    let text = std::fs::read_to_string(manifests_dir().join("engine-rbac.yaml")).unwrap();
    let role = strict::yaml_documents(&text)
        .unwrap()
        .into_iter()
        .find(|document| document["kind"] == "Role")
        .unwrap();
    let role: Role = strict::from_value(role, "Role").unwrap();

    assert_eq!(role.metadata.namespace.as_deref(), Some("danube-jobs"));
    let mut resources: Vec<String> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|rule| {
            assert_eq!(rule.api_groups.as_deref(), Some(&["".to_owned()][..]));
            assert!(!rule.verbs.contains(&"*".to_owned()));
            rule.resources.unwrap_or_default()
        })
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        ["pods", "pods/ephemeralcontainers", "pods/exec", "pods/log"]
    );
}

#[test]
fn cilium_example_is_what_the_engine_generates() {
    let allowlist: Vec<String> = EXAMPLE_ALLOWLIST
        .iter()
        .map(|entry| entry.to_string())
        .collect();
    let policy = network::cilium_egress_policy("danube-jobs", &allowlist).unwrap();
    let generated = format!(
        "# Generated by the engine from egress_allowlist = {:?}.\n{}",
        EXAMPLE_ALLOWLIST,
        serde_saphyr::to_string(&policy).unwrap()
    );
    let path = manifests_dir().join("cilium-egress-example.yaml");
    if std::env::var_os("DANUBE_UPDATE_EXAMPLES").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }

    let stored = std::fs::read_to_string(&path).unwrap();

    assert_eq!(
        stored, generated,
        "run with DANUBE_UPDATE_EXAMPLES=1 to update the example"
    );
}
