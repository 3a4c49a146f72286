//! The coordinator gRPC service rejects calls without a live job token.

use std::sync::Arc;

use danube::proto::job_service_client::JobServiceClient;
use danube::proto::{GetSecretRequest, ReportStatusRequest, ScriptError, report_status_request};
use danube::rpc::{TokenRegistry, serve};
use tonic::Code;

async fn client() -> JobServiceClient<tonic::transport::Channel> {
    let addr = serve(
        Arc::new(TokenRegistry::default()),
        danube::rpc::LOOPBACK_EPHEMERAL,
    )
    .await
    .unwrap();
    JobServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn call_without_token_is_permission_denied() {
    let mut client = client().await;
    let status = client
        .get_secret(GetSecretRequest { key: "ANY".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn call_with_unknown_token_is_permission_denied() {
    let mut client = client().await;
    let status = client
        .get_secret(with_token(GetSecretRequest { key: "ANY".into() }, "f00d"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let report = ReportStatusRequest {
        status: Some(report_status_request::Status::ScriptError(ScriptError {
            message: "forged".into(),
        })),
    };
    let status = client
        .report_status(with_token(report, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
