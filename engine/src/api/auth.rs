//! Who may call the server: the local token, and the checks that keep web
//! pages the user happens to open from driving it.
//!
//! Until login exists the server listens only on loopback, but loopback is no
//! trust boundary for a server that runs code. So every `/api/v1` request
//! carries the local token (a bearer header or the `danube_token_<port>`
//! cookie),
//! every request's `Host` must be the address the server listens on (a DNS
//! rebinding page sends its own host name), a request with an `Origin` must
//! come from the server's own origin, and state-changing requests must be
//! `application/json`, which a cross-site form cannot send without a CORS
//! preflight that this server never grants.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Start of the name of the cookie that carries the token for browsers; the
/// whole name is [`token_cookie_name`].
pub const TOKEN_COOKIE: &str = "danube_token";

/// Returns the token cookie's name for a server on `port`,
/// `danube_token_<port>`. Browsers send a host's cookies to every port of
/// that host, so servers on other ports of one address need a cookie each.
pub fn token_cookie_name(port: u16) -> String {
    format!("{TOKEN_COOKIE}_{port}")
}

/// File name of the local token under `<data_dir>/keys/`.
pub const TOKEN_FILE: &str = "local-token";

/// Random bytes in a token; it is stored and sent as hex.
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("failed to read the local token `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to create the local token `{path}`")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the local token `{path}` is readable by other users (mode {mode:o}); run `chmod 600 {path}` or delete it to get a new one",
        path = .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },

    #[error(
        "the local token `{path}` is not {TOKEN_BYTES} bytes of hex; delete it to get a new one",
        path = .path.display()
    )]
    Malformed { path: PathBuf },
}

/// The secret that API clients send; compared in constant time.
pub struct LocalToken {
    value: String,
}

impl LocalToken {
    /// Reads the token at `path`, or creates it (mode 0600) when missing.
    ///
    /// # Errors
    ///
    /// [`TokenError::Exposed`] when the file is readable or writable by
    /// group or others, [`TokenError::Malformed`] when it holds something
    /// else than a token.
    pub fn load_or_create(path: &Path) -> Result<LocalToken, TokenError> {
        match read_token(path) {
            Ok(token) => return Ok(token),
            Err(TokenError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }

        let value = LocalToken::random().value;
        let create = |source| TokenError::Create {
            path: path.to_owned(),
            source,
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                file.write_all(value.as_bytes()).map_err(create)?;
                file.sync_all().map_err(create)?;
                Ok(LocalToken { value })
            }
            // Another `danube serve` created it first: use theirs.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_token(path),
            Err(err) => Err(create(err)),
        }
    }

    /// Returns a new random token that lives in this process's memory
    /// only.
    pub fn random() -> LocalToken {
        LocalToken {
            value: hex::encode(rand::random::<[u8; TOKEN_BYTES]>()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Compares without stopping at the first differing byte, so response
    /// times do not tell how much of a guess was right.
    pub fn matches(&self, candidate: &str) -> bool {
        let expected = self.value.as_bytes();
        let candidate = candidate.as_bytes();
        if expected.len() != candidate.len() {
            return false;
        }
        expected
            .iter()
            .zip(candidate)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

fn read_token(path: &Path) -> Result<LocalToken, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut value = String::new();
    file.read_to_string(&mut value).map_err(read)?;
    let value = value.trim().to_owned();
    let well_formed =
        value.len() == TOKEN_BYTES * 2 && value.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !well_formed {
        return Err(TokenError::Malformed {
            path: path.to_owned(),
        });
    }
    Ok(LocalToken { value })
}

/// The `Host` values and origins under which the server is reached.
pub struct ServerOrigin {
    hosts: Vec<String>,
}

impl ServerOrigin {
    /// `127.0.0.1:PORT` (or `[::1]:PORT`) and `localhost:PORT` for a
    /// server listening on `addr`.
    pub fn for_listener(addr: SocketAddr) -> ServerOrigin {
        let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
        // Clients leave out the default port: `Host: 127.0.0.1` means port 80.
        if addr.port() == 80 {
            let bare = match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            };
            hosts.extend([bare, "localhost".to_owned()]);
        }
        ServerOrigin { hosts }
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    fn allows_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.allows_host(host))
    }
}

/// Rejects requests with a foreign `Host` or `Origin` (403) and
/// state-changing requests that are not JSON (415). Runs on every route.
pub async fn check_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = header_text(headers, header::HOST);
    if !host.is_some_and(|host| state.origin.allows_host(host)) {
        tracing::debug!(
            host = host.unwrap_or(""),
            "rejected a request for a foreign host"
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the Host header must be this server's address, `{}`",
                state.origin.hosts.join("` or `")
            ),
        )
        .into_response();
    }
    if let Some(origin) = header_text(headers, header::ORIGIN)
        && !state.origin.allows_origin(origin)
    {
        tracing::debug!(origin, "rejected a cross-origin request");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-origin requests are not allowed; call the API from the server's own origin",
        )
        .into_response();
    }
    let changes_state = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes_state && !is_json(headers) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send state-changing requests with `Content-Type: application/json`",
        )
        .into_response();
    }
    next.run(request).await
}

/// Rejects requests without the local token (401). Runs on `/api/v1`.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let presented = bearer_token(headers).or_else(|| cookie_token(headers, &state.token_cookie));
    if presented.is_some_and(|token| state.token.matches(token)) {
        return next.run(request).await;
    }
    tracing::debug!(
        presented = presented.is_some(),
        "rejected a request without a valid token"
    );
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "missing or wrong token: send `Authorization: Bearer <token>` with the token from `<data_dir>/keys/{TOKEN_FILE}`, or open the address that `danube serve` printed"
        ),
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn is_json(headers: &HeaderMap) -> bool {
    header_text(headers, header::CONTENT_TYPE).is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = header_text(headers, header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie_token<'a>(headers: &'a HeaderMap, cookie: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == cookie).then_some(value)
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn default_port_host_is_allowed_without_port() {
        let origin = ServerOrigin::for_listener("127.0.0.1:80".parse().unwrap());
        assert!(origin.allows_host("127.0.0.1"));
        assert!(origin.allows_host("localhost"));
        assert!(origin.allows_host("127.0.0.1:80"));
        assert!(!origin.allows_host("evil.example"));

        let other = ServerOrigin::for_listener("127.0.0.1:8080".parse().unwrap());
        assert!(!other.allows_host("127.0.0.1"));
    }

    use super::*;

    #[test]
    fn token_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);

        let first = LocalToken::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let second = LocalToken::load_or_create(&path).unwrap();

        assert_eq!(mode, 0o600);
        assert_eq!(first.as_str().len(), TOKEN_BYTES * 2);
        assert_eq!(first.as_str(), second.as_str());
    }

    #[test]
    fn token_readable_by_others_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        LocalToken::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let err = LocalToken::load_or_create(&path).err().unwrap();

        assert!(
            matches!(err, TokenError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        let token = LocalToken {
            value: "ab".repeat(TOKEN_BYTES),
        };
        let mut wrong = "ab".repeat(TOKEN_BYTES);
        wrong.replace_range(0..1, "c");

        assert!(token.matches(&"ab".repeat(TOKEN_BYTES)));
        assert!(!token.matches(&wrong));
        assert!(!token.matches("ab"));
        assert!(!token.matches(""));
    }

    #[test]
    fn origin_allows_only_the_listening_address() {
        let origin = ServerOrigin::for_listener("127.0.0.1:8080".parse().unwrap());

        assert!(origin.allows_host("127.0.0.1:8080"));
        assert!(origin.allows_host("LOCALHOST:8080"));
        assert!(!origin.allows_host("127.0.0.1:8081"));
        assert!(!origin.allows_host("evil.example:8080"));
        assert!(origin.allows_origin("http://localhost:8080"));
        assert!(!origin.allows_origin("https://localhost:8080"));
        assert!(!origin.allows_origin("http://evil.example"));
    }

    #[test]
    fn cookie_token_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; danube_token_8080=abc; other=1"
                .parse()
                .unwrap(),
        );

        assert_eq!(cookie_token(&headers, "danube_token_8080"), Some("abc"));
    }

    #[test]
    fn cookie_token_of_another_port_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "danube_token_8081=abc; danube_token=def".parse().unwrap(),
        );

        assert_eq!(token_cookie_name(8080), "danube_token_8080");
        assert_eq!(cookie_token(&headers, &token_cookie_name(8080)), None);
        assert_eq!(
            cookie_token(&headers, &token_cookie_name(8081)),
            Some("abc")
        );
    }
}
