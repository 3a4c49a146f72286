//! Danube Desktop: the engine in-process, its web UI in a native window.
//!
//! The app starts the same server `danube serve` runs ([`danube::server`])
//! on a free loopback port with a token that exists only in this process's
//! memory, then opens the web UI at the address that signs the window in.
//! The desktop's own routes ([`routes`]) are mounted into that server's
//! `/api/v1`, behind the same token check: projects, the native folder
//! dialog, and targets.

mod args;
mod embedded;
pub mod picker;
pub mod routes;
mod shell;
pub mod targets;

pub use args::Args;
pub use embedded::{EmbeddedEngine, EngineOptions};
pub use shell::run;

/// Sets up the app's own log on stderr: warnings by default, `-v` for
/// info, `-vv` for debug, or a full filter in `DANUBE_LOG`.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "danube=info,danube_desktop=info",
        _ => "danube=debug,danube_desktop=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DANUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
