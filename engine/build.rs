//! Compiles `proto/danube/v1/job.proto` with a pure-Rust protobuf compiler,
//! so building needs no `protoc` on the machine, and builds the web UI that
//! the binary embeds.

#[path = "build/ui.rs"]
mod ui;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/danube/v1/job.proto");
    println!("cargo:rerun-if-changed=../sdk/python/danube");
    // `sqlx::migrate!` embeds these files; rebuild when one changes.
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(["danube/v1/job.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    ui::build()
}
