// Without a console window on Windows release builds; Linux ignores it.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = danube_desktop::Args::parse();
    danube_desktop::init_tracing(args.verbose);
    match danube_desktop::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
