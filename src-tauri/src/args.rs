//! The app's command line.

use std::path::PathBuf;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "danube-desktop",
    version,
    about = "Danube Desktop: run and debug pipelines in a window",
    long_about = "Danube Desktop: run and debug pipelines in a window.\n\nThe engine runs inside the app and shares its data directory, and so its job history and secrets, with the `danube` command line."
)]
pub struct Args {
    /// Open this project folder (the one that contains danubefile.py)
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,

    /// Directory for the database, logs, artifacts, workspaces and keys
    /// [default: the platform's user data directory, as for `danube`]
    #[arg(long, env = "DANUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The kubeconfig (whose contexts are the cluster targets) and the
    /// options of every cluster target
    #[command(flatten)]
    pub cluster: danube::cli::target::ClusterArgs,

    /// Print the app's own log (-v for info, -vv for debug); DANUBE_LOG
    /// takes a full tracing filter instead
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
