//! Blocking HTTP helpers for tests that talk to a [`Server`]: requests
//! with its token, JSON bodies and the API's error shape.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

use crate::Server;

/// Builds a client whose requests time out after a minute, so that a stuck
/// server fails a test instead of hanging it.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build an HTTP client")
}

/// `GET path` with the server's token.
pub fn get(server: &Server, path: &str) -> RequestBuilder {
    client().get(server.url(path)).bearer_auth(&server.token)
}

/// `POST path` with the server's token and `body` as JSON.
pub fn post(server: &Server, path: &str, body: Value) -> RequestBuilder {
    client()
        .post(server.url(path))
        .bearer_auth(&server.token)
        .json(&body)
}

/// Parses the body of `response` as JSON.
pub fn json_of(response: Response) -> Value {
    response.json().expect("the body is JSON")
}

/// Asserts the status and the error shape (a code and a message that is
/// not empty), and returns the error code.
pub fn assert_error(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body = json_of(response);
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "no message in {body}");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned()
}
