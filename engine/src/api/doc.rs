//! Parts of the OpenAPI document that the handlers' annotations cannot
//! state: the responses of the checks that run before every handler, and the
//! name of this server's token cookie.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// Adds the error responses of [`super::auth`]'s checks to every operation.
/// Every route rejects a foreign `Host` or `Origin` with 403. Routes under
/// `/api/v1` reject a missing or wrong token with 401. A `POST` that is not
/// `application/json` gets 415, even one without a body.
pub struct CheckResponses;

impl utoipa::Modify for CheckResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let needs_token = path.starts_with("/api/v1/");
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.options, false),
                (&mut item.head, false),
                (&mut item.patch, true),
                (&mut item.trace, false),
            ];
            for (operation, changes_state) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                add_error(
                    operation,
                    "403",
                    "The Host header is not this server's address, or the Origin is another site",
                );
                if needs_token {
                    add_error(operation, "401", "The local token is missing or wrong");
                }
                if changes_state {
                    add_error(
                        operation,
                        "415",
                        "The request's Content-Type is not application/json",
                    );
                }
            }
        }
    }
}

/// Adds an `ErrorBody` response for `status` unless the operation states
/// its own.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| response.into());
}

/// Names the token cookie scheme `cookie`, the name that this server's
/// `/?token=` sets.
pub fn name_token_cookie(openapi: &mut OpenApi, cookie: &str) {
    let scheme = openapi
        .components
        .as_mut()
        .and_then(|components| components.security_schemes.get_mut("token_cookie"));
    if let Some(SecurityScheme::ApiKey(ApiKey::Cookie(value))) = scheme {
        value.name = cookie.to_owned();
    }
}
