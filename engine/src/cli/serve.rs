//! `danube serve`: the engine as a long-running process with the HTTP API.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::api;
use crate::server::{Server, ServerConfig, TokenSource};
use anyhow::Context;
use clap::Args;

use super::Status;
use super::signals::Interrupts;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: a loopback address and port (`127.0.0.1:8080`,
    /// `[::1]:8080`, `localhost:8080`); port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    bind: String,

    /// Maximum number of tasks running at the same time in each job
    /// [default: the number of CPUs, at least 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    max_parallel: Option<u16>,

    /// Time a client has to send a request's headers, such as `2s`; longer
    /// idle connections are closed [default: 30s]. Hidden because tests
    /// alone need another value.
    #[arg(long, hide = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    header_read_timeout: Option<std::time::Duration>,

    /// Maximum number of open connections; more wait in the kernel's queue
    /// [default: about half the open file limit, at most 8192]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Folder whose Git repositories jobs may clone by `file://` URL or
    /// absolute path (`repository` in `POST /api/v1/jobs`); repeat it for
    /// several. Without it the server clones only remote repositories, so
    /// that an API client cannot read the server's own files
    #[arg(
        long = "allow-repository-path",
        env = "DANUBE_ALLOW_REPOSITORY_PATHS",
        value_delimiter = ':',
        value_name = "DIR"
    )]
    allowed_repository_paths: Vec<std::path::PathBuf>,

    /// Host that jobs may clone repositories from (`repository` in `POST
    /// /api/v1/jobs`): `git.example`, `*.example` for its subdomains, or `*`
    /// for any host; repeat it for several. Without it the server clones no
    /// remote repository, so that an API client cannot make it reach hosts
    /// of its own network
    #[arg(
        long = "allow-repository-host",
        env = "DANUBE_ALLOW_REPOSITORY_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    allowed_repository_hosts: Vec<String>,

    #[command(flatten)]
    target: super::target::TargetArgs,
}

pub async fn serve(data_root: &Path, args: ServeArgs) -> anyhow::Result<Status> {
    let addr = loopback_addr(&args.bind)?;
    let mut interrupts = Interrupts::install();
    let config = ServerConfig {
        data_root: data_root.to_owned(),
        bind: addr,
        token: TokenSource::File,
        max_parallel: args
            .max_parallel
            .map(usize::from)
            .unwrap_or_else(super::run::default_parallelism),
        header_read_timeout: args
            .header_read_timeout
            .unwrap_or(api::DEFAULT_HEADER_READ_TIMEOUT),
        max_connections: args.max_connections.map(|cap| cap as usize),
        repository_policy: crate::orchestrator::RepositoryPolicy {
            allowed_local_roots: args.allowed_repository_paths.clone(),
            allowed_hosts: args.allowed_repository_hosts.clone(),
        },
    };
    let (data, store) = super::open_data(data_root).await?;
    let Some(engine) = super::start_engine(
        &data,
        store.clone(),
        &args.target,
        &mut interrupts,
        "the server did not start",
    )
    .await?
    else {
        return Ok(Status::JobFailed);
    };
    let server = Server::bind(config, data, store, engine).await?;

    let local = server.addr();
    // Write errors are ignored: a server whose stdout was closed keeps serving.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "Danube is serving on http://{local}/");
    if let Some(token_path) = server.token_path() {
        let _ = writeln!(
            stdout,
            "API clients send `Authorization: Bearer <token>` with the token in {}",
            token_path.display()
        );
    }
    // The login address contains the token. Printed to a pipe, it would end
    // up in log files and, for an engine in a cluster, in the pod's log,
    // which anyone with `pods/log` can read.
    if std::io::IsTerminal::is_terminal(&stdout) {
        let _ = writeln!(
            stdout,
            "Open this address to log in: {}",
            server.login_url()
        );
    } else {
        let _ = writeln!(
            stdout,
            "To log in, open http://{local}/?token=TOKEN with the token from the file above"
        );
    }
    // Tests and scripts read the address from a pipe, which is block-buffered.
    let _ = stdout.flush();
    drop(stdout);

    let stop = async move {
        let name = interrupts.next().await;
        eprintln!("received {name}: cancelling running jobs and stopping");
    };
    server
        .serve(axum::Router::new(), stop)
        .await
        .context("the HTTP server failed")?;
    Ok(Status::Success)
}

/// Parses `--bind` and rejects anything but loopback.
fn loopback_addr(bind: &str) -> anyhow::Result<SocketAddr> {
    let addr = match bind.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let port = bind
                .strip_prefix("localhost:")
                .and_then(|port| port.parse::<u16>().ok());
            match port {
                Some(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                None => anyhow::bail!(
                    "invalid --bind `{bind}`: pass a loopback address and port such as 127.0.0.1:8080"
                ),
            }
        }
    };
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {addr}: login is not implemented yet, so `danube serve` only listens on loopback; use --bind 127.0.0.1:{port}",
            port = addr.port()
        );
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_accepted() {
        assert_eq!(
            loopback_addr("127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            loopback_addr("localhost:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            loopback_addr("[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
    }

    #[test]
    fn other_addresses_are_rejected_with_the_reason() {
        for bind in ["0.0.0.0:8080", "192.168.1.4:80", "[::]:8080"] {
            let err = loopback_addr(bind).unwrap_err().to_string();
            assert!(
                err.contains("login is not implemented yet"),
                "{bind}: {err}"
            );
        }
        let err = loopback_addr("example.com:80").unwrap_err().to_string();
        assert!(err.contains("invalid --bind"), "{err}");
    }
}
