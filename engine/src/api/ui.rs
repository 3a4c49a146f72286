//! The web UI: the files `engine/build.rs` built from `ui/`, embedded into
//! the binary. `/assets/...` serves them (gzipped when the browser takes
//! it); every other page address gets `index.html`, whose app routes on
//! the client.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};
use sha2::{Digest as _, Sha256};

use super::error::{self, ApiError};

static FILES: Dir<'_> = include_dir!("$OUT_DIR/ui");

/// One version tag for every file: they are built together.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for file in FILES.files() {
        hasher.update(file.path().as_os_str().as_encoded_bytes());
        hasher.update(file.contents());
    }
    format!("\"{}\"", hex::encode(&hasher.finalize()[..12]))
});

/// What the browser may load and call: only this server, and WebAssembly
/// compiled from it. The app sets inline styles (log colours, positions).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /assets/{*path}`.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path == "index.html" {
        return page(&headers);
    }
    serve(&path, &headers).unwrap_or_else(|| {
        ApiError::not_found(format!("the web UI has no file `{path}`")).into_response()
    })
}

/// `index.html` for a page address; the JSON 404 for anything else, such
/// as a mistyped API path or a client that does not want HTML.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let reserved = ["/api/", "/assets/", "/health", "/metrics"]
        .iter()
        .any(|prefix| uri.path().starts_with(prefix));
    if method == Method::GET && wants_html(&headers) && !reserved {
        return page(&headers);
    }
    error::no_route().await.into_response()
}

/// The app's page, with the headers that keep it from being framed or
/// loading anything foreign.
pub fn page(headers: &HeaderMap) -> Response {
    let mut response = serve("index.html", headers).expect("build.rs always writes index.html");
    let extra = response.headers_mut();
    extra.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    extra.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    extra.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `index.html` with status 401, for a browser that presented a wrong
/// token: the app loads, its API calls fail, and it shows that the browser
/// is not signed in. It ignores `If-None-Match`, because a 304 has no body
/// to carry the page.
pub fn unauthorized_page(headers: &HeaderMap) -> Response {
    let mut unconditional = headers.clone();
    unconditional.remove(header::IF_NONE_MATCH);
    let mut response = page(&unconditional);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

/// Checks whether the request's `Accept` header takes HTML, as a browser
/// navigating to a page sends it.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let file = FILES.get_file(path)?;
    let etag = ETAG.as_str();
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes());

    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzipped = accepts_gzip(headers)
            .then(|| FILES.get_file(format!("{path}.gz")))
            .flatten();
        match gzipped {
            Some(compressed) => (
                [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
                compressed.contents(),
            )
                .into_response(),
            None => file.contents().into_response(),
        }
    };
    let head = response.headers_mut();
    head.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    head.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    head.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex is a valid header"),
    );
    head.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    head.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|coding| coding.trim().starts_with("gzip"))
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_embeds_the_page_and_its_script() {
        let page = std::str::from_utf8(FILES.get_file("index.html").unwrap().contents()).unwrap();
        assert!(page.contains("/assets/boot.js"), "{page}");
        assert!(FILES.get_file("danube_ui.js").is_some());
        assert!(FILES.get_file("style.css").is_some());
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&headers));
    }
}
