//! The advice an error message gives, chosen from the HTTP status of the
//! failed call and from where the UI runs (the desktop app's window or a
//! browser on `danube serve`).

/// Returns the advice for an error with HTTP `status` (0 when the server
/// could not be reached); empty when the server's own message is enough.
pub fn hint(status: u16, in_app: bool) -> &'static str {
    match (status, in_app) {
        (401, true) => {
            "This window's key to the app's engine is no longer valid. Restart Danube Desktop."
        }
        (401, false) => {
            "This page has no valid token. Open the address that `danube serve` printed \
             (it ends in ?token=…), or open /?token=TOKEN on this server with the token \
             from <data dir>/keys/local-token."
        }
        (0, true) => "The app's engine does not answer. Restart Danube Desktop.",
        (0, false) => "Check that `danube serve` is running, then reload this page.",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_in_app_says_restart_the_app() {
        assert_eq!(
            hint(401, true),
            "This window's key to the app's engine is no longer valid. Restart Danube Desktop."
        );
    }

    #[test]
    fn unauthorized_in_browser_points_at_the_token() {
        let advice = hint(401, false);

        assert!(advice.contains("?token="), "{advice}");
        assert!(!advice.contains("Restart Danube Desktop"), "{advice}");
    }

    #[test]
    fn other_failures_get_advice_only_when_unreachable() {
        assert_eq!(
            hint(0, true),
            "The app's engine does not answer. Restart Danube Desktop."
        );
        assert!(hint(0, false).contains("`danube serve`"));
        assert_eq!(hint(409, true), "");
        assert_eq!(hint(500, false), "");
    }
}
