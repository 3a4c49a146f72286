//! Retrying Kubernetes API calls that failed for a transient reason.
//!
//! kube's client already retries 429, 503 and 504 answers. This adds the
//! failures it leaves to the caller: a connection that could not be made or
//! broke (an API server restarting), and 500 and 502 answers. Anything else,
//! such as a 403 or a 422, is returned at once.

use std::future::Future;
use std::time::Duration;

/// Attempts of one call, the first included.
pub const ATTEMPTS: u32 = 5;

/// First delay between attempts; each further one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Returns the delay before retry number `attempt` (0 for the first retry).
pub fn delay(attempt: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_DELAY)
}

/// Returns true for failures that may pass when the call is repeated.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails for a reason that is not
/// transient, or failed [`ATTEMPTS`] times. `what` names the call in the log.
pub async fn with_backoff<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) && attempt + 1 < ATTEMPTS => {
                tracing::debug!(call = what, attempt, error = %error, "transient Kubernetes API error; retrying");
                tokio::time::sleep(delay(attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use kube::core::Status;

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("failed", "Reason").with_code(code).boxed())
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(delay(0), Duration::from_millis(200));
        assert_eq!(delay(1), Duration::from_millis(400));
        assert_eq!(delay(4), Duration::from_millis(3200));
        assert_eq!(delay(10), MAX_DELAY);
    }

    #[test]
    fn only_server_side_and_connection_errors_are_transient() {
        assert!(is_transient(&api_error(500)));
        assert!(is_transient(&api_error(503)));
        assert!(!is_transient(&api_error(403)));
        assert!(!is_transient(&api_error(422)));
        assert!(!is_transient(&api_error(409)));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);

        let result = with_backoff("test", || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < 2 {
                    Err(api_error(502))
                } else {
                    Ok(call)
                }
            }
        })
        .await;

        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_exhaustion_stop_retrying() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_backoff("test", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(api_error(403)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_backoff("test", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(api_error(500)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }
}
