//! Deserialising Kubernetes objects with unknown fields rejected.
//!
//! k8s-openapi's types skip fields they do not know, as a client must. A
//! manifest or pod spec that Danube writes should have none, since a typo
//! there (`securityContex`) would silently drop a security setting. These
//! functions deserialise as usual and fail if anything was skipped.

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    #[error("invalid YAML: {0}")]
    Yaml(#[source] Box<serde_saphyr::Error>),

    #[error("does not match the {kind} schema: {source}")]
    Schema {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("unknown fields for {kind}: {}", fields.join(", "))]
    UnknownFields {
        kind: &'static str,
        fields: Vec<String>,
    },
}

/// Deserialises `value` into `T`, failing on any field `T` does not know.
/// `kind` names `T` in the error, such as `Pod`.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    kind: &'static str,
) -> Result<T, StrictError> {
    let mut unknown = Vec::new();
    // serde_ignored writes `?` for every `Option` on the way; drop them.
    let parsed = serde_ignored::deserialize(value, |path| {
        unknown.push(path.to_string().replace(".?", "").replace("?.", ""))
    })
    .map_err(|source| StrictError::Schema { kind, source })?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(StrictError::UnknownFields {
            kind,
            fields: unknown,
        })
    }
}

/// Parses every document of a YAML stream into JSON values; empty
/// documents (a trailing `---`) are dropped.
pub fn yaml_documents(text: &str) -> Result<Vec<serde_json::Value>, StrictError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|err| StrictError::Yaml(Box::new(err)))?;
    Ok(documents
        .into_iter()
        .filter(|document| !document.is_null())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn known_fields_pass() {
        let value = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        });
        let pod: Pod = from_value(value, "Pod").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn unknown_fields_are_listed_with_their_path() {
        let value = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "securityContex": {}}]}
        });
        let error = from_value::<Pod>(value, "Pod").unwrap_err().to_string();
        assert!(error.contains("unknown fields for Pod"), "{error}");
        assert!(
            error.contains("spec.containers.0.securityContex"),
            "{error}"
        );
    }

    #[test]
    fn yaml_streams_split_into_documents() {
        let documents = yaml_documents("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["b"], 2);
    }
}
