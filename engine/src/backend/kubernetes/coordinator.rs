//! The coordinator in the job pod (`coordinator = "pod"`): the engine
//! starts `python -m danube._coordinator` in the pod's `coordinator`
//! container through an exec of the supervisor, as it runs a step.
//!
//! The job token travels as the `stdin` text of the supervisor's request,
//! itself the first line of the exec's stdin, so it never appears in the
//! pod spec, the process's environment or arguments, or the exec URL. The
//! script reads the pod's `/workspace` directly, so its artifacts need no
//! copy back to the engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use zeroize::Zeroizing;

use super::pod::WORKSPACE_PATH;
use crate::backend::CoordinatorLaunch;

/// The place the coordinator runs in, for jobs on a kube target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In a `coordinator` container of each job pod.
    Pod,
    /// As a local process beside the engine.
    Engine,
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(text: &str) -> Result<Placement, String> {
        match text {
            "pod" => Ok(Placement::Pod),
            "engine" => Ok(Placement::Engine),
            other => Err(format!(
                "invalid coordinator placement `{other}`: use `pod` (a container of each job pod) \
                 or `engine` (a process beside the engine)"
            )),
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Pod => "pod",
            Placement::Engine => "engine",
        })
    }
}

/// The Python of Danube's coordinator image (`deploy/coordinator/`), a
/// venv with the SDK installed.
pub const DEFAULT_PYTHON: &str = "/opt/danube/venv/bin/python";

/// Settings of coordinators in job pods.
#[derive(Clone, Debug)]
pub struct PodCoordinator {
    /// The interpreter in the coordinator image that can import `danube`.
    pub python: String,
    /// The `host:port` of the engine's gRPC server as job pods reach it.
    /// `None` uses the address the server is bound to, which works only
    /// when pods share the engine's network, as in the API-server emulator.
    pub engine_address: Option<String>,
}

/// Parses an engine address for job pods: `http://HOST:PORT` or
/// `HOST:PORT`, returned as `HOST:PORT`.
///
/// # Errors
///
/// A message that names the value and the expected form.
pub fn parse_engine_address(text: &str) -> Result<String, String> {
    let invalid = |why: &str| {
        format!(
            "invalid engine address `{text}`: {why}; use `http://HOST:PORT`, such as \
             `http://danube-engine.danube-system.svc:7001`"
        )
    };
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "scheme `{scheme}` is not supported (the engine's gRPC is plain HTTP/2)"
            )));
        }
        None => text,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(invalid("the port is missing"));
    };
    if host.is_empty()
        || host
            .chars()
            .any(|character| character.is_whitespace() || "/?#@".contains(character))
    {
        return Err(invalid("the host is missing or contains a path"));
    }
    if !port.parse::<u16>().is_ok_and(|port| port > 0) {
        return Err(invalid("the port is not a number from 1 to 65535"));
    }
    Ok(rest.to_owned())
}

/// Returns the address the coordinator dials: the configured one, else the
/// bound one.
///
/// # Errors
///
/// The bound address is unspecified (`0.0.0.0`), which no pod can dial.
pub fn dial_address(settings: &PodCoordinator, bound: SocketAddr) -> Result<String, String> {
    match &settings.engine_address {
        Some(address) => Ok(address.clone()),
        None if bound.ip().is_unspecified() => Err(format!(
            "the engine's gRPC server listens on {bound}, which job pods cannot dial; set \
             --engine-address (DANUBE_ENGINE_ADDRESS) to the address pods reach it at"
        )),
        None => Ok(bound.to_string()),
    }
}

/// Builds the supervisor's request that starts the coordinator under
/// supervisor id `id`, with the token as its stdin text.
pub fn request(
    launch: &CoordinatorLaunch,
    settings: &PodCoordinator,
    engine_address: &str,
    id: &str,
) -> Zeroizing<Vec<u8>> {
    let mut env: BTreeMap<&str, String> = launch
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    env.insert("DANUBE_WORKSPACE", WORKSPACE_PATH.to_owned());
    env.insert("DANUBE_ENGINE_ADDR", engine_address.to_owned());
    env.insert("PYTHONUNBUFFERED", "1".to_owned());
    // Keep bytecode caches out of the workspace, which the steps share.
    env.insert("PYTHONDONTWRITEBYTECODE", "1".to_owned());

    let mut command = format!(
        "exec {} -m danube._coordinator --file {}/{} --project-dir {}",
        shell_quote(&settings.python),
        WORKSPACE_PATH,
        crate::orchestrator::PIPELINE_FILE,
        shell_quote(&launch.project.display().to_string()),
    );
    if let Some(pipeline) = &launch.pipeline {
        // One word, so a name starting with `-` is never read as an option.
        command.push(' ');
        command.push_str(&shell_quote(&format!("--pipeline={pipeline}")));
    }

    let request = serde_json::json!({
        "id": id,
        "command": command,
        "workdir": WORKSPACE_PATH,
        "env": env,
        "stdin": format!("{}\n", launch.token.as_str()),
    });
    let mut line = Zeroizing::new(
        serde_json::to_vec(&request).expect("a JSON object of strings always serialises"),
    );
    line.push(b'\n');
    // NOTE: `request` contains a copy of the token and is freed without
    // being wiped. Only the line sent is zeroised.
    line
}

/// Quotes `text` as one word for `/bin/sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::backend::Workspace;
    use crate::model::JobId;

    fn launch() -> CoordinatorLaunch {
        CoordinatorLaunch {
            job_id: JobId::new(),
            workspace: Workspace {
                path: PathBuf::from("/data/workspaces/job-1"),
                in_place: false,
            },
            project: PathBuf::from("/home/dev/it's here"),
            pipeline: Some("-odd name".into()),
            env: BTreeMap::from([
                ("DANUBE_JOB_ID".to_owned(), "job-1".to_owned()),
                (
                    "DANUBE_WORKSPACE".to_owned(),
                    "/data/workspaces/job-1".to_owned(),
                ),
            ]),
            engine_addr: "127.0.0.1:4000".parse().unwrap(),
            token: Zeroizing::new("tok-secret-1".to_owned()),
        }
    }

    fn settings() -> PodCoordinator {
        PodCoordinator {
            python: DEFAULT_PYTHON.into(),
            engine_address: None,
        }
    }

    #[test]
    fn token_travels_as_stdin_text_only() {
        let line = request(&launch(), &settings(), "127.0.0.1:4000", "coordinator-0");

        let request: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(request["stdin"], "tok-secret-1\n");
        assert!(
            !request["command"]
                .as_str()
                .unwrap()
                .contains("tok-secret-1")
        );
        assert!(!request["env"].to_string().contains("tok-secret-1"));
        assert_eq!(request["env"]["DANUBE_ENGINE_ADDR"], "127.0.0.1:4000");
        assert_eq!(request["env"]["DANUBE_WORKSPACE"], "/workspace");
        assert_eq!(request["workdir"], "/workspace");
    }

    #[test]
    fn command_quotes_every_word_from_outside() {
        let line = request(&launch(), &settings(), "127.0.0.1:4000", "coordinator-0");

        let request: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            request["command"],
            "exec '/opt/danube/venv/bin/python' -m danube._coordinator --file \
             /workspace/danubefile.py --project-dir '/home/dev/it'\\''s here' \
             '--pipeline=-odd name'"
        );
    }

    #[test]
    fn engine_addresses_parse_to_host_and_port() {
        assert_eq!(
            parse_engine_address("http://danube-engine.danube-system.svc:7001").unwrap(),
            "danube-engine.danube-system.svc:7001"
        );
        assert_eq!(
            parse_engine_address("10.0.0.5:7001/").unwrap(),
            "10.0.0.5:7001"
        );
        for (invalid, why) in [
            ("https://engine:7001", "scheme `https` is not supported"),
            ("http://engine", "the port is missing"),
            ("http://engine:0", "not a number from 1 to 65535"),
            ("http://engine:7001/path", "not a number"),
            ("http://:7001", "the host is missing"),
        ] {
            let error = parse_engine_address(invalid).unwrap_err();
            assert!(error.contains(why), "{invalid}: {error}");
            assert!(error.contains(invalid), "{error}");
        }
    }

    #[test]
    fn unspecified_bound_address_needs_a_configured_one() {
        let bound: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let error = dial_address(&settings(), bound).unwrap_err();
        assert!(error.contains("--engine-address"), "{error}");

        let configured = PodCoordinator {
            engine_address: Some("engine.svc:7001".into()),
            ..settings()
        };
        assert_eq!(dial_address(&configured, bound).unwrap(), "engine.svc:7001");
        let loopback: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            dial_address(&settings(), loopback).unwrap(),
            "127.0.0.1:4000"
        );
    }
}
