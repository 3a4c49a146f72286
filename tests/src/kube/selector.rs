//! `labelSelector` and `fieldSelector` query parameters, matched against an
//! object's JSON.

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the label selector syntax (`a=b,c!=d,e in (f,g),!h`).
    ///
    /// # Errors
    ///
    /// `400 BadRequest` naming the requirement that does not parse.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        for part in split_outside_parentheses(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement `{part}` of labelSelector `{text}`: \
                     use key=value, key!=value, key in (a,b), key notin (a,b), key or !key"
                ))
            })?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Checks whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                LabelRequirement::Equals(key, value) => label(key) == Some(value.as_str()),
                LabelRequirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
                LabelRequirement::In(key, values) => {
                    label(key).is_some_and(|found| values.iter().any(|value| value == found))
                }
                LabelRequirement::NotIn(key, values) => {
                    label(key).is_none_or(|found| values.iter().all(|value| value != found))
                }
                LabelRequirement::Exists(key) => label(key).is_some(),
                LabelRequirement::NotExists(key) => label(key).is_none(),
            })
    }
}

fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Option<LabelRequirement> {
    if let Some(key) = part.strip_prefix('!') {
        return valid_key(key).then(|| LabelRequirement::NotExists(key.trim().to_owned()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return valid_key(key)
            .then(|| LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return valid_key(key)
            .then(|| LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned()));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim();
        let (operator, list) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let values = list
            .trim()
            .strip_prefix('(')?
            .strip_suffix(')')?
            .split(',')
            .map(|value| value.trim().to_owned())
            .collect();
        return match operator {
            "in" => Some(LabelRequirement::In((*key).to_owned(), values)),
            "notin" => Some(LabelRequirement::NotIn((*key).to_owned(), values)),
            _ => None,
        };
    }
    valid_key(part).then(|| LabelRequirement::Exists(part.to_owned()))
}

fn valid_key(key: &str) -> bool {
    let key = key.trim();
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// A parsed `fieldSelector`: `path=value` and `path!=value` terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector and checks every field against the ones the
    /// resource supports, as the API server does.
    ///
    /// # Errors
    ///
    /// `400 BadRequest` for a term without an operator or an unsupported
    /// field.
    pub fn parse(text: &str, supported: &[&str]) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                (field, true, value)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term `{term}`: use field=value or field!=value"
                )));
            };
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field} (supported: {})",
                    supported.join(", ")
                )));
            }
            terms.push((field.to_owned(), equal, value.to_owned()));
        }
        Ok(FieldSelector { terms })
    }

    /// Checks whether every term holds on the object. A missing field reads as the
    /// empty string, so `spec.nodeName=` matches unscheduled pods.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let found = field
                .split('.')
                .fold(object, |node, key| &node[key])
                .as_str()
                .unwrap_or("");
            (found == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "n", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_equality_and_sets() {
        let object = pod(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app,tier", true),
            ("!app", false),
            ("!missing", true),
            ("tier in (back, front)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("app=web,tier in (back)", false),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).expect("selector parses");
            assert_eq!(selector.matches(&object), expected, "selector `{text}`");
        }
    }

    #[test]
    fn label_selector_rejects_bad_operator() {
        let error = LabelSelector::parse("tier within (a)").expect_err("unknown operator");
        assert!(
            error.message.contains("tier within (a)"),
            "{}",
            error.message
        );
    }

    #[test]
    fn field_selector_matches_and_rejects_unknown_fields() {
        let object = pod(json!({}));
        let supported = ["metadata.name", "status.phase", "spec.nodeName"];
        let selector = FieldSelector::parse("metadata.name=p,status.phase!=Failed", &supported)
            .expect("selector parses");
        assert!(selector.matches(&object));
        let other = FieldSelector::parse("metadata.name=q", &supported).expect("parses");
        assert!(!other.matches(&object));
        let unscheduled = FieldSelector::parse("spec.nodeName=", &supported).expect("parses");
        assert!(unscheduled.matches(&object));
        let error = FieldSelector::parse("spec.image=x", &supported).expect_err("unsupported");
        assert_eq!(error.code, 400);
        assert!(error.message.contains("spec.image"), "{}", error.message);
    }
}
