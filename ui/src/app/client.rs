//! Calls to the HTTP API. The browser sends the token cookie that
//! `/?token=` set, so no call carries a secret of its own.

use gloo_net::http::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;

/// A failed call, worded for the person looking at the page.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiFailure {
    /// HTTP status; 0 when the server could not be reached.
    pub status: u16,
    pub message: String,
}

impl ApiFailure {
    /// The server answered 401: the page was opened without the token.
    pub fn is_unauthorized(&self) -> bool {
        self.status == 401
    }
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiFailure> {
    let response = Request::get(path).send().await.map_err(unreachable)?;
    decode(response).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(
    path: &str,
    body: &B,
) -> Result<T, ApiFailure> {
    send_json(Request::post(path), body).await
}

pub async fn put<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiFailure> {
    send_json(Request::put(path), body).await
}

/// Sends a `DELETE`, which the server takes only as JSON like every
/// state-changing request, and expects no body back.
pub async fn delete(path: &str) -> Result<(), ApiFailure> {
    let request = Request::delete(path)
        .header("Content-Type", "application/json")
        .build()
        .map_err(|err| ApiFailure {
            status: 0,
            message: format!("could not build the request: {err}"),
        })?;
    let response = request.send().await.map_err(unreachable)?;
    if response.ok() {
        return Ok(());
    }
    decode::<serde_json::Value>(response).await.map(|_| ())
}

async fn send_json<B: Serialize, T: DeserializeOwned>(
    request: gloo_net::http::RequestBuilder,
    body: &B,
) -> Result<T, ApiFailure> {
    let request = request.json(body).map_err(|err| ApiFailure {
        status: 0,
        message: format!("could not encode the request: {err}"),
    })?;
    let response = request.send().await.map_err(unreachable)?;
    decode(response).await
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ApiFailure> {
    let status = response.status();
    if response.ok() {
        return response.json::<T>().await.map_err(|err| ApiFailure {
            status,
            message: format!("the server sent an answer this page cannot read: {err}"),
        });
    }
    let message = match response.json::<ErrorBody>().await {
        Ok(body) => body.error.message,
        Err(_) => format!("the server answered {status} {}", response.status_text()),
    };
    Err(ApiFailure { status, message })
}

fn unreachable(err: gloo_net::Error) -> ApiFailure {
    ApiFailure {
        status: 0,
        message: format!(
            "could not reach the Danube server ({err}); is `danube serve` still running?"
        ),
    }
}

/// Percent-encodes a query value.
pub fn query_value(value: &str) -> String {
    js_sys::encode_uri_component(value).into()
}
