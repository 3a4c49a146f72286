//! The step request that `danube-supervisor run` reads from stdin: one JSON
//! object on one line. It travels over the exec stream's stdin, never in the
//! exec URL, because API servers write that URL to their audit log and the
//! environment can hold secrets.
//!
//! ```json
//! {"id": "42", "command": "make test", "workdir": "/workspace", "env": {"CI": "true"}}
//! ```
//!
//! An optional `stdin` string is written to the command's stdin, which is
//! then closed; without it the command's stdin is `/dev/null`. The engine
//! hands the coordinator its job token this way.

use crate::json::{self, Value};

/// One step to run.
#[derive(Debug, PartialEq)]
pub struct StepRequest {
    /// The step's id, which names its state directory.
    pub id: String,
    pub command: String,
    pub workdir: String,
    /// Added to the container's environment; a request value wins.
    pub env: Vec<(String, String)>,
    /// Written to the command's stdin before it is closed; `None` gives
    /// the command `/dev/null`.
    pub stdin: Option<String>,
}

impl StepRequest {
    /// Parses a request line.
    ///
    /// # Errors
    ///
    /// Names the field that is missing or has the wrong type. Never quotes
    /// an environment value.
    pub fn parse(line: &str) -> Result<StepRequest, String> {
        let value = json::parse(line).map_err(|err| format!("invalid step request: {err}"))?;
        let Value::Object(mut members) = value else {
            return Err("invalid step request: expected a JSON object".into());
        };
        let mut string = |name: &str| match members.remove(name) {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(format!("invalid step request: `{name}` must be a string")),
            None => Err(format!("invalid step request: `{name}` is missing")),
        };
        let id = string("id")?;
        let command = string("command")?;
        let workdir = string("workdir")?;

        let env = match members.remove("env") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(variables)) => env_pairs(variables)?,
            Some(_) => return Err("invalid step request: `env` must be an object".into()),
        };
        // Never quoted in an error: it can hold a token.
        let stdin = match members.remove("stdin") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => return Err("invalid step request: `stdin` must be a string".into()),
        };
        Ok(StepRequest {
            id,
            command,
            workdir,
            env,
            stdin,
        })
    }
}

fn env_pairs(
    variables: std::collections::BTreeMap<String, Value>,
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::with_capacity(variables.len());
    for (name, value) in variables {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "invalid step request: environment variable name `{name}` is empty or contains `=` or NUL"
            ));
        }
        let Value::String(value) = value else {
            return Err(format!(
                "invalid step request: the value of environment variable `{name}` must be a string"
            ));
        };
        if value.contains('\0') {
            return Err(format!(
                "invalid step request: the value of environment variable `{name}` contains NUL"
            ));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_request_parses() {
        let request = StepRequest::parse(
            r#"{"id":"3","command":"echo hi","workdir":"/workspace","env":{"B":"2","A":"1"}}"#,
        )
        .unwrap();
        assert_eq!(
            request,
            StepRequest {
                id: "3".into(),
                command: "echo hi".into(),
                workdir: "/workspace".into(),
                env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
                stdin: None,
            }
        );
    }

    #[test]
    fn stdin_text_parses_and_is_never_quoted() {
        let request = StepRequest::parse(
            r#"{"id":"c-0","command":"python","workdir":"/workspace","stdin":"tok-123\n"}"#,
        )
        .unwrap();
        assert_eq!(request.stdin.as_deref(), Some("tok-123\n"));

        let wrong =
            StepRequest::parse(r#"{"id":"c","command":"x","workdir":"/","stdin":5}"#).unwrap_err();
        assert!(wrong.contains("`stdin` must be a string"), "{wrong}");
    }

    #[test]
    fn errors_name_the_field_but_not_the_value() {
        let missing = StepRequest::parse(r#"{"id":"3","workdir":"/"}"#).unwrap_err();
        assert!(missing.contains("`command` is missing"), "{missing}");

        let wrong = StepRequest::parse(r#"{"id":3,"command":"x","workdir":"/"}"#).unwrap_err();
        assert!(wrong.contains("`id` must be a string"), "{wrong}");

        let bad_value =
            StepRequest::parse(r#"{"id":"3","command":"x","workdir":"/","env":{"TOKEN":5}}"#)
                .unwrap_err();
        assert!(bad_value.contains("`TOKEN`"), "{bad_value}");

        let nul = StepRequest::parse(
            r#"{"id":"3","command":"x","workdir":"/","env":{"TOKEN":"s3cret\u0000"}}"#,
        )
        .unwrap_err();
        assert!(nul.contains("`TOKEN`") && !nul.contains("s3cret"), "{nul}");
    }
}
