//! The engine's gRPC server for coordinators (`JobService` in
//! `proto/danube/v1/job.proto`), on an ephemeral loopback port.
//!
//! Every call must carry `authorization: Bearer <token>` with the token
//! issued to its job. Tokens live only in memory, are stored hashed, and are
//! revoked when the job ends; any other token gets `PERMISSION_DENIED` before
//! the call touches anything.

mod service;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use tokens::{TokenHash, TokenRegistry};

use crate::proto::job_service_server::JobServiceServer;

/// Binds `127.0.0.1:0`, serves in the background, and returns the address.
pub async fn serve(tokens: Arc<TokenRegistry>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let service = JobServiceServer::new(service::JobServiceImpl::new(tokens));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "engine gRPC server stopped");
        }
    });
    Ok(addr)
}
