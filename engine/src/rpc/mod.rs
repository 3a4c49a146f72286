//! The engine's gRPC server for coordinators (`JobService` in
//! `proto/danube/v1/job.proto`), on an ephemeral loopback port unless the
//! engine is given another address, which coordinators in job pods dial
//! over the cluster network.
//!
//! Every call must carry `authorization: Bearer <token>` with the token
//! issued to its job. Tokens live only in memory, are stored hashed, and are
//! revoked when the job ends; any other token gets `PERMISSION_DENIED` before
//! the call touches anything.

mod service;
mod tokens;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use tokens::{TokenHash, TokenRegistry};

use crate::proto::job_service_server::JobServiceServer;

/// The default address of the gRPC server: an ephemeral loopback port,
/// which coordinators beside the engine reach.
pub const LOOPBACK_EPHEMERAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Binds `bind`, serves in the background, and returns the bound address.
pub async fn serve(tokens: Arc<TokenRegistry>, bind: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let service = JobServiceServer::new(service::JobServiceImpl::new(tokens));
    // TCP_NODELAY is set on the incoming stream because the builder's
    // `tcp_nodelay` is ignored by `serve_with_incoming` (tonic 0.14). Without
    // it, Nagle's algorithm delays the end of each response until the
    // coordinator's delayed ACK, which made every `step.run` take about 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "engine gRPC server stopped");
        }
    });
    Ok(addr)
}
