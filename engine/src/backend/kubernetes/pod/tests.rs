use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

use super::*;
use crate::backend::kubernetes::strict;

fn job_id() -> JobId {
    JobId::new()
}

fn settings() -> PodSettings {
    PodSettings::new("danube-jobs".into(), "engine-1".into())
}

fn built(job_id: &JobId) -> Pod {
    build_pod(
        &settings(),
        &JobPod {
            job_id,
            pipeline: Some("web build/main"),
        },
    )
}

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("a built pod has a spec")
}

fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = spec(pod);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect()
}

/// Asserts that a container's only environment is `HOME` when it runs
/// steps, and that the tools container has none.
fn assert_environment_is_home_only(container: &Container) {
    let expected = (container.name != TOOLS_CONTAINER).then(|| {
        vec![EnvVar {
            name: "HOME".into(),
            value: Some(HOME_PATH.into()),
            value_from: None,
        }]
    });
    assert_eq!(container.env, expected, "{}", container.name);
}

fn assert_restricted(name: &str, security: Option<&SecurityContext>) {
    let security = security.unwrap_or_else(|| panic!("{name} has no securityContext"));
    assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(security.privileged, Some(false), "{name}");
    assert_eq!(security.run_as_non_root, Some(true), "{name}");
    assert_ne!(security.run_as_user, Some(0), "{name}");
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(
        capabilities.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{name}"
    );
    assert_eq!(capabilities.add, None, "{name}");
    assert_eq!(
        security
            .seccomp_profile
            .as_ref()
            .map(|profile| profile.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
}

#[test]
fn pod_meets_pod_security_restricted() {
    let pod = built(&job_id());
    let spec = spec(&pod);

    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    // Eight days and ten minutes: the longest max_duration, the margin and
    // a day to load the pipeline.
    assert_eq!(spec.active_deadline_seconds, Some(8 * 86_400 + 600));
    assert_eq!(spec.host_network, None);
    assert_eq!(spec.host_pid, None);
    assert_eq!(spec.host_ipc, None);
    let pod_security = spec.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(RUN_AS_ID));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    for container in all_containers(&pod) {
        assert_restricted(&container.name, container.security_context.as_ref());
    }
    for volume in spec.volumes.iter().flatten() {
        assert!(
            volume.empty_dir.is_some(),
            "{} is not an emptyDir",
            volume.name
        );
        assert!(volume.host_path.is_none(), "{}", volume.name);
    }
}

#[test]
fn pod_spec_carries_no_environment_but_home() {
    let pod = built(&job_id());

    for container in all_containers(&pod) {
        assert_environment_is_home_only(container);
        assert_eq!(container.env_from, None, "{}", container.name);
        assert_eq!(container.args, None, "{}", container.name);
    }
    let yaml = to_yaml(&pod).unwrap();
    assert_eq!(yaml.matches("env:").count(), 1, "{yaml}");
    assert!(!yaml.to_lowercase().contains("secret"), "{yaml}");
}

#[test]
fn worker_idles_on_the_supervisor_with_its_volumes() {
    let pod = built(&job_id());
    let spec = spec(&pod);

    let worker = &spec.containers[0];
    assert_eq!(worker.name, WORKER_CONTAINER);
    assert_eq!(worker.image.as_deref(), Some(DEFAULT_WORKER_IMAGE));
    assert_eq!(
        worker.command.as_deref(),
        Some(&[SUPERVISOR_PATH.to_owned(), "idle".to_owned()][..])
    );
    assert_eq!(worker.working_dir.as_deref(), Some(WORKSPACE_PATH));
    let mounts: Vec<(&str, Option<bool>)> = worker
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| (mount.mount_path.as_str(), mount.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (WORKSPACE_PATH, None),
            (TOOLS_PATH, Some(true)),
            (STATE_PATH, None),
            (HOME_PATH, None),
        ]
    );

    let resources = worker.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "2Gi");

    let tools = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(tools.name, TOOLS_CONTAINER);
    assert_eq!(
        tools.command.as_deref(),
        Some(
            &[
                "danube-supervisor".to_owned(),
                "install".to_owned(),
                "/danube/bin".to_owned()
            ][..]
        )
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let workspace = &spec.volumes.as_ref().unwrap()[0];
    assert_eq!(
        workspace.empty_dir.as_ref().unwrap().size_limit,
        Some(Quantity("10Gi".into()))
    );
}

#[test]
fn labels_identify_engine_job_and_pipeline() {
    let job_id = job_id();
    let pod = built(&job_id);

    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "danube");
    assert_eq!(labels[ENGINE_LABEL], "engine-1");
    assert_eq!(labels[JOB_LABEL], job_id.as_str());
    assert_eq!(labels[PIPELINE_LABEL], "web_build_main");
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()[PIPELINE_ANNOTATION],
        "web build/main"
    );
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some(pod_name(&job_id).as_str())
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("danube-jobs"));
    assert_eq!(
        engine_selector("engine-1"),
        "app.kubernetes.io/managed-by=danube,danube.dev/engine=engine-1"
    );
}

#[test]
fn label_values_are_made_valid() {
    assert_eq!(label_value("release"), "release");
    assert_eq!(label_value("-a b-"), "a_b");
    assert_eq!(label_value("ünïcode"), "n_code");
    assert_eq!(label_value("***"), "unnamed");
    assert_eq!(label_value(&"x".repeat(100)).len(), 63);
}

#[test]
fn yaml_deserialises_with_unknown_fields_rejected() {
    let pod = built(&job_id());

    let yaml = to_yaml(&pod).unwrap();
    let documents = strict::yaml_documents(&yaml).unwrap();
    let parsed: Pod = strict::from_value(documents[0].clone(), "Pod").unwrap();

    assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\n"), "{yaml}");
    assert_eq!(parsed, pod);
}

#[test]
fn image_container_is_restricted_and_shares_the_workspace() {
    let container = build_image_container("image-1", "gcr.io/kaniko-project/executor:debug");

    let security = container.security_context.as_ref();
    assert_restricted("image-1", security);
    assert_eq!(
        container.env.as_ref().map(|env| env[0].name.as_str()),
        Some("HOME")
    );
    assert_eq!(
        container.command.as_deref(),
        Some(&[SUPERVISOR_PATH.to_owned(), "idle".to_owned()][..])
    );
    let value = serde_json::to_value(&container).unwrap();
    let parsed: EphemeralContainer = strict::from_value(value, "EphemeralContainer").unwrap();
    assert_eq!(parsed, container);
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.mount_path == WORKSPACE_PATH)
    );
}

fn built_with_coordinator(job_id: &JobId) -> Pod {
    let mut settings = settings();
    settings.coordinator = Some(CoordinatorContainer {
        image: "registry.example/danube-coordinator:1".into(),
        resources: Resources::coordinator_default(),
    });
    build_pod(
        &settings,
        &JobPod {
            job_id,
            pipeline: None,
        },
    )
}

#[test]
fn coordinator_container_is_restricted_and_shares_the_workspace() {
    let pod = built_with_coordinator(&job_id());
    let spec = spec(&pod);

    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [WORKER_CONTAINER, COORDINATOR_CONTAINER]);
    let coordinator = &spec.containers[1];
    assert_eq!(
        coordinator.image.as_deref(),
        Some("registry.example/danube-coordinator:1")
    );
    assert_eq!(
        coordinator.command.as_deref(),
        Some(&[SUPERVISOR_PATH.to_owned(), "idle".to_owned()][..])
    );
    assert_eq!(coordinator.volume_mounts, spec.containers[0].volume_mounts);
    assert_restricted(&coordinator.name, coordinator.security_context.as_ref());
    let resources = coordinator.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(spec.automount_service_account_token, Some(false));
}

#[test]
fn coordinator_container_carries_no_environment_but_home_and_no_token() {
    let pod = built_with_coordinator(&job_id());

    for container in all_containers(&pod) {
        assert_environment_is_home_only(container);
        assert_eq!(container.env_from, None, "{}", container.name);
        assert_eq!(container.args, None, "{}", container.name);
    }
    let yaml = to_yaml(&pod).unwrap();
    assert_eq!(yaml.matches("env:").count(), 2, "{yaml}");
    let documents = strict::yaml_documents(&yaml).unwrap();
    let parsed: Pod = strict::from_value(documents[0].clone(), "Pod").unwrap();
    assert_eq!(parsed, pod);
}
