//! Server-side validation of created objects: strict decoding (unknown
//! fields are an error) and the required and well-formed fields a pod needs.
//!
//! Real API servers decode with `fieldValidation=Warn` unless told
//! otherwise; the emulator decodes strictly unless the request asks for
//! `Warn` or `Ignore`, so that a misspelt field in a pod the backend builds
//! fails its tests instead of being silently dropped.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, Volume, VolumeMount};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::status::{ApiError, Cause};

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// Parses the parameter; a missing one means `Strict` in the emulator.
    ///
    /// # Errors
    ///
    /// `400 BadRequest` for any other value.
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value {
            None | Some("Strict") => Ok(FieldValidation::Strict),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid fieldValidation `{other}`: use Strict, Warn or Ignore"
            ))),
        }
    }
}

/// A decoded object and the unknown fields it carried (empty under
/// `Strict`, which rejects them).
pub(crate) struct Decoded<T> {
    pub object: T,
    pub unknown_fields: Vec<String>,
}

/// Decodes `body` as `T`, finding unknown fields by comparing the body with
/// the object serialised again: a field the type does not know is lost in
/// the round trip.
///
/// # Errors
///
/// `400 BadRequest` for a body that is not JSON of type `T`, or that carries
/// unknown fields under `Strict`.
pub(crate) fn decode<T>(
    body: &[u8],
    kind: &str,
    validation: FieldValidation,
) -> Result<Decoded<T>, ApiError>
where
    T: DeserializeOwned + serde::Serialize,
{
    let raw: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
    })?;
    let object: T = serde_json::from_value(raw.clone()).map_err(|error| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {error}"
        ))
    })?;
    let echoed = serde_json::to_value(&object).expect("k8s-openapi objects serialise to JSON");

    let mut unknown_fields = Vec::new();
    collect_unknown(&raw, &echoed, "", &mut unknown_fields);
    if validation == FieldValidation::Strict && !unknown_fields.is_empty() {
        let list = unknown_fields
            .iter()
            .map(|field| format!("unknown field \"{field}\""))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {list}"
        )));
    }
    Ok(Decoded {
        object,
        unknown_fields,
    })
}

fn collect_unknown(raw: &Value, echoed: &Value, path: &str, found: &mut Vec<String>) {
    match (raw, echoed) {
        (Value::Object(raw), Value::Object(echoed)) => {
            for (key, value) in raw {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match echoed.get(key) {
                    Some(echoed_value) => collect_unknown(value, echoed_value, &child, found),
                    // `null` and empty collections decode to "unset", which
                    // serialises to nothing: those are known fields.
                    None if is_empty(value) => {}
                    None => found.push(child),
                }
            }
        }
        (Value::Array(raw), Value::Array(echoed)) => {
            for (index, (value, echoed_value)) in raw.iter().zip(echoed).enumerate() {
                collect_unknown(value, echoed_value, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// Collects validation failures with their field paths.
#[derive(Default)]
struct Causes(Vec<Cause>);

impl Causes {
    fn required(&mut self, field: String) {
        self.0.push(Cause {
            reason: "FieldValueRequired",
            field,
            message: "Required value".to_owned(),
        });
    }

    fn invalid(&mut self, field: String, value: &str, why: &str) {
        self.0.push(Cause {
            reason: "FieldValueInvalid",
            field,
            message: format!("Invalid value: \"{value}\": {why}"),
        });
    }

    fn duplicate(&mut self, field: String, value: &str) {
        self.0.push(Cause {
            reason: "FieldValueDuplicate",
            field,
            message: format!("Duplicate value: \"{value}\""),
        });
    }

    fn not_found(&mut self, field: String, value: &str) {
        self.0.push(Cause {
            reason: "FieldValueNotFound",
            field,
            message: format!("Not found: \"{value}\""),
        });
    }

    fn not_supported(&mut self, field: String, value: &str, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|value| format!("\"{value}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.0.push(Cause {
            reason: "FieldValueNotSupported",
            field,
            message: format!("Unsupported value: \"{value}\": supported values: {list}"),
        });
    }
}

/// Checks whether `name` is a DNS-1123 label: lowercase alphanumerics and `-`, at
/// most 63 characters, starting and ending alphanumeric.
pub(crate) fn is_dns_label(name: &str) -> bool {
    is_dns_part(name) && name.len() <= 63
}

/// Checks whether `name` is a DNS-1123 subdomain (labels joined by `.`, at most
/// 253 characters), the rule for pod and namespace names.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_part)
}

fn is_dns_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

const DNS_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character";

/// Checks a pod about to be created.
///
/// # Errors
///
/// `422 Invalid` listing every failed field.
pub(crate) fn validate_pod(pod: &Pod) -> Result<(), ApiError> {
    let mut causes = Causes::default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        causes.required("metadata.name".to_owned());
    } else if !is_dns_subdomain(&name) {
        causes.invalid("metadata.name".to_owned(), &name, DNS_LABEL_RULE);
    }
    validate_labels(pod, &mut causes);

    let Some(spec) = &pod.spec else {
        causes.required("spec".to_owned());
        return finish("Pod", &name, causes);
    };
    if let Some(policy) = &spec.restart_policy
        && !["Always", "OnFailure", "Never"].contains(&policy.as_str())
    {
        causes.not_supported(
            "spec.restartPolicy".to_owned(),
            policy,
            &["Always", "OnFailure", "Never"],
        );
    }

    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &mut causes);
    if spec.containers.is_empty() {
        causes.required("spec.containers".to_owned());
    }
    let mut names = HashSet::new();
    let groups = [
        ("spec.initContainers", spec.init_containers.as_deref()),
        ("spec.containers", Some(spec.containers.as_slice())),
    ];
    for (path, containers) in groups {
        for (index, container) in containers.unwrap_or_default().iter().enumerate() {
            let path = format!("{path}[{index}]");
            validate_container_fields(&container_fields(container), &path, &volumes, &mut causes);
            if !names.insert(container.name.clone()) {
                causes.duplicate(format!("{path}.name"), &container.name);
            }
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        causes.0.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec.ephemeralContainers".to_owned(),
            message: "Forbidden: cannot be set on create".to_owned(),
        });
    }
    finish("Pod", &name, causes)
}

fn finish(kind: &str, name: &str, causes: Causes) -> Result<(), ApiError> {
    if causes.0.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, name, causes.0))
    }
}

fn validate_labels(pod: &Pod, causes: &mut Causes) {
    for (key, value) in pod.metadata.labels.iter().flatten() {
        let valid = value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_alphanumeric())
            && value
                .chars()
                .last()
                .is_none_or(|c| c.is_ascii_alphanumeric());
        if !valid {
            causes.invalid(
                format!("metadata.labels.{key}"),
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, \
                 '-', '_' or '.', and must start and end with an alphanumeric character \
                 (at most 63 characters)",
            );
        }
    }
}

fn validate_volumes(volumes: &[Volume], causes: &mut Causes) -> HashSet<String> {
    let mut names = HashSet::new();
    for (index, volume) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{index}].name");
        if volume.name.is_empty() {
            causes.required(path);
        } else if !is_dns_label(&volume.name) {
            causes.invalid(path, &volume.name, DNS_LABEL_RULE);
        } else if !names.insert(volume.name.clone()) {
            causes.duplicate(path, &volume.name);
        }
    }
    names
}

fn container_fields(container: &Container) -> ContainerFields<'_> {
    ContainerFields {
        name: &container.name,
        image: container.image.as_deref(),
        mounts: container.volume_mounts.as_deref().unwrap_or_default(),
        env: container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect(),
    }
}

/// The fields that containers and ephemeral containers share.
struct ContainerFields<'a> {
    pub name: &'a str,
    pub image: Option<&'a str>,
    pub mounts: &'a [VolumeMount],
    pub env: Vec<&'a str>,
}

fn validate_container_fields(
    container: &ContainerFields<'_>,
    path: &str,
    volumes: &HashSet<String>,
    causes: &mut Causes,
) {
    if container.name.is_empty() {
        causes.required(format!("{path}.name"));
    } else if !is_dns_label(container.name) {
        causes.invalid(format!("{path}.name"), container.name, DNS_LABEL_RULE);
    }
    if container.image.is_none_or(|image| image.trim().is_empty()) {
        causes.required(format!("{path}.image"));
    }
    let mut mount_paths = HashSet::new();
    for (index, mount) in container.mounts.iter().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{index}]");
        if mount.name.is_empty() {
            causes.required(format!("{mount_path}.name"));
        } else if !volumes.contains(&mount.name) {
            causes.not_found(format!("{mount_path}.name"), &mount.name);
        }
        if mount.mount_path.is_empty() {
            causes.required(format!("{mount_path}.mountPath"));
        } else if !mount.mount_path.starts_with('/') {
            causes.invalid(
                format!("{mount_path}.mountPath"),
                &mount.mount_path,
                "must be an absolute path",
            );
        } else if !mount_paths.insert(mount.mount_path.clone()) {
            causes.invalid(
                format!("{mount_path}.mountPath"),
                &mount.mount_path,
                "must be unique",
            );
        }
    }
    for (index, name) in container.env.iter().enumerate() {
        if name.is_empty() {
            causes.required(format!("{path}.env[{index}].name"));
        }
    }
}

/// Checks the ephemeral containers a patch adds. `volumes` are the pod's.
///
/// # Errors
///
/// `422 Invalid` listing every failed field.
pub(crate) fn validate_ephemeral(
    pod: &Pod,
    added: &[k8s_openapi::api::core::v1::EphemeralContainer],
    first_index: usize,
) -> Result<(), ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let volumes: HashSet<String> = spec
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|volume| volume.name.clone())
        .collect();
    let mut taken: HashSet<String> = spec
        .into_iter()
        .flat_map(|spec| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| c.name.clone())
                .chain(
                    spec.ephemeral_containers
                        .iter()
                        .flatten()
                        .map(|c| c.name.clone()),
                )
        })
        .collect();

    let mut causes = Causes::default();
    for (offset, container) in added.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{}]", first_index + offset);
        validate_container_fields(
            &ContainerFields {
                name: &container.name,
                image: container.image.as_deref(),
                mounts: container.volume_mounts.as_deref().unwrap_or_default(),
                env: container
                    .env
                    .iter()
                    .flatten()
                    .map(|e| e.name.as_str())
                    .collect(),
            },
            &path,
            &volumes,
            &mut causes,
        );
        if !taken.insert(container.name.clone()) {
            causes.duplicate(format!("{path}.name"), &container.name);
        }
        if let Some(target) = &container.target_container_name
            && !spec.is_some_and(|spec| spec.containers.iter().any(|c| &c.name == target))
        {
            causes.not_found(format!("{path}.targetContainerName"), target);
        }
        for (field, set) in [
            ("ports", container.ports.is_some()),
            ("resources", container.resources.is_some()),
            ("livenessProbe", container.liveness_probe.is_some()),
            ("readinessProbe", container.readiness_probe.is_some()),
            ("startupProbe", container.startup_probe.is_some()),
            ("lifecycle", container.lifecycle.is_some()),
        ] {
            if set {
                causes.0.push(Cause {
                    reason: "FieldValueForbidden",
                    field: format!("{path}.{field}"),
                    message: "Forbidden: cannot be set for an Ephemeral Container".to_owned(),
                });
            }
        }
    }
    finish("Pod", &name, causes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_body(containers: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "job-1", "labels": {"app": "danube"}},
            "spec": {
                "containers": containers,
                "volumes": [{"name": "workspace", "emptyDir": {}}],
            },
        }))
        .expect("JSON")
    }

    #[test]
    fn strict_decoding_names_unknown_nested_field() {
        let body = pod_body(json!([{"name": "worker", "image": "busybox", "comand": ["sh"]}]));
        let error = decode::<Pod>(&body, "Pod", FieldValidation::Strict)
            .err()
            .expect("unknown field rejected");
        assert_eq!(error.code, 400);
        assert!(
            error
                .message
                .contains("unknown field \"spec.containers[0].comand\""),
            "{}",
            error.message
        );
    }

    #[test]
    fn warn_decoding_keeps_unknown_fields_as_warnings() {
        let body = pod_body(json!([{"name": "worker", "image": "busybox", "comand": ["sh"]}]));
        let decoded = decode::<Pod>(&body, "Pod", FieldValidation::Warn).expect("decodes");
        assert_eq!(decoded.unknown_fields, ["spec.containers[0].comand"]);
    }

    #[test]
    fn empty_and_null_fields_are_known() {
        let body =
            pod_body(json!([{"name": "worker", "image": "busybox", "env": [], "args": null}]));
        let decoded = decode::<Pod>(&body, "Pod", FieldValidation::Strict).expect("decodes");
        assert!(decoded.unknown_fields.is_empty());
    }

    #[test]
    fn validation_lists_every_failed_field() {
        let body = pod_body(json!([
            {"name": "worker", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
            {"name": "worker", "image": "busybox"},
        ]));
        let pod = decode::<Pod>(&body, "Pod", FieldValidation::Strict)
            .expect("decodes")
            .object;
        let error = validate_pod(&pod).expect_err("invalid");
        assert_eq!(error.code, 422);
        let fields: Vec<&str> = error.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].image",
                "spec.containers[0].volumeMounts[0].name",
                "spec.containers[1].name"
            ]
        );
        assert!(
            error.message.starts_with("Pod \"job-1\" is invalid: ["),
            "{}",
            error.message
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_label("worker-1"));
        assert!(!is_dns_label("Worker"));
        assert!(!is_dns_label("-worker"));
        assert!(is_dns_subdomain("job.1"));
        assert!(!is_dns_subdomain("job_1"));
    }
}
