//! Serves the Kubernetes API emulator of the tests until Ctrl-C, to try
//! `--target kube` by hand without a cluster:
//!
//! ```sh
//! cargo build -p danube -p danube-supervisor
//! PATH="$PWD/target/debug:$PATH" cargo run -p danube-tests --example kube-emulator -- --cilium
//! danube run examples/quickstart --target kube --kubeconfig PRINTED_PATH
//! ```
//!
//! Pods run as local processes in folders of the emulator's own, as in the
//! tests; their containers find programs, `danube-supervisor` included, on
//! the emulator's `PATH`. Options: `--cilium` serves CiliumNetworkPolicy,
//! `--image-without-shell IMAGE` and `--failing-image IMAGE` (both
//! repeatable) mark images as the tests do.

use danube_tests::kube::{Emulator, EmulatorOptions};

/// The options, for `--help` and for errors.
const USAGE: &str = "options: --cilium, --image-without-shell IMAGE, --failing-image IMAGE";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("kube-emulator: serves the tests' Kubernetes API emulator on loopback\n{USAGE}");
        return Ok(());
    }
    let options = options(std::env::args().skip(1))?;
    let emulator = Emulator::start(options).await?;

    println!("Kubernetes API emulator at {}", emulator.url());
    println!("kubeconfig: {}", emulator.kubeconfig_path().display());
    println!("press Ctrl-C to stop it (its pods and files go with it)");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    // Dropping the emulator stops its pods and removes its folder.
    drop(emulator);
    Ok(())
}

/// Reads the options; an unknown one is an error that lists the known ones.
fn options(mut args: impl Iterator<Item = String>) -> Result<EmulatorOptions, String> {
    let mut options = EmulatorOptions::default();
    while let Some(arg) = args.next() {
        let mut image = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs an image name after it"))
        };
        options = match arg.as_str() {
            "--cilium" => options.with_cilium(),
            "--image-without-shell" => options.image_without_shell(&image()?),
            "--failing-image" => options.failing_image(&image()?),
            _ => return Err(format!("unknown option `{arg}`; {USAGE}")),
        };
    }
    Ok(options)
}
