//! The Danube engine: runs pipelines written in Python, records every job,
//! task and step in SQLite, stores logs and artifacts, and keeps secrets
//! encrypted.
//!
//! The `danube` binary in `main.rs` is a thin command-line layer over this
//! library.

pub mod api;
pub mod artifacts;
pub mod backend;
pub mod cli;
pub mod config;
pub mod logs;
pub mod model;
pub mod orchestrator;
pub mod python;
pub mod rpc;
pub mod secrets;
pub mod server;
pub mod store;
pub mod watch;

/// Code generated from `proto/danube/v1/job.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("danube.v1");
}
