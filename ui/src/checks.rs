//! Checks of values that users type, shared by the web UI and the engine
//! (its API and command line), so that a form rejects what the server
//! would reject, with the same words.

/// Seconds an ad-hoc debug command gets when the request sets none.
pub const DEFAULT_COMMAND_TIMEOUT_SECONDS: u64 = 60;

/// The maximum timeout of an ad-hoc debug command, in seconds.
pub const MAX_COMMAND_TIMEOUT_SECONDS: u64 = 3600;

/// The maximum length of a pipeline name, in characters.
pub const MAX_PIPELINE_NAME_CHARS: usize = 100;

/// Checks the timeout of an ad-hoc debug command.
///
/// # Errors
///
/// Returns a message with the value and the allowed range.
pub fn command_timeout(seconds: u64) -> Result<u64, String> {
    if (1..=MAX_COMMAND_TIMEOUT_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "a timeout of {seconds} seconds is out of range; give 1 to {MAX_COMMAND_TIMEOUT_SECONDS} seconds"
        ))
    }
}

/// Reads a typed timeout in whole seconds; an empty field means
/// [`DEFAULT_COMMAND_TIMEOUT_SECONDS`].
///
/// # Errors
///
/// Returns a message for text that is not a whole number, and as
/// [`command_timeout`].
pub fn parse_command_timeout(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(DEFAULT_COMMAND_TIMEOUT_SECONDS);
    }
    let seconds = text.parse::<u64>().map_err(|_| {
        format!(
            "timeout `{text}` is not a whole number of seconds; give 1 to {MAX_COMMAND_TIMEOUT_SECONDS}"
        )
    })?;
    command_timeout(seconds)
}

/// Checks a pipeline name, as a job request or a secret's scope gives it.
///
/// # Errors
///
/// Returns a message with the value, why it is invalid and what a
/// valid name looks like.
pub fn pipeline_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().count() > MAX_PIPELINE_NAME_CHARS {
        "it is too long"
    } else if name.starts_with('-') {
        "it starts with `-`"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    let shown: String = name
        .chars()
        .take(MAX_PIPELINE_NAME_CHARS)
        .map(|character| {
            if character.is_control() {
                '?'
            } else {
                character
            }
        })
        .collect();
    Err(format!(
        "pipeline name `{shown}` is invalid: {reason}; use 1 to {MAX_PIPELINE_NAME_CHARS} characters without control characters, not starting with `-`"
    ))
}

/// Checks the pipeline of a secret's scope: a valid pipeline name, and not
/// a scope as the secrets list shows it (`global`, `pipeline:NAME`).
///
/// # Errors
///
/// As [`pipeline_name`], and a message that names what to give instead.
pub fn secret_pipeline(name: &str) -> Result<(), String> {
    pipeline_name(name)?;
    if name == "global" {
        return Err(
            "pipeline `global` names the scope of secrets that every pipeline reads; to store one, give no pipeline"
                .to_owned(),
        );
    }
    if let Some(bare) = name.strip_prefix("pipeline:") {
        return Err(format!(
            "pipeline `{name}` is written as the secrets list shows a scope; give the pipeline's name alone: `{bare}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_timeout_defaults_and_stays_in_range() {
        assert_eq!(
            parse_command_timeout(""),
            Ok(DEFAULT_COMMAND_TIMEOUT_SECONDS)
        );
        assert_eq!(parse_command_timeout(" 5 "), Ok(5));
        assert_eq!(parse_command_timeout("3600"), Ok(3600));

        let zero = parse_command_timeout("0").unwrap_err();
        assert!(zero.contains("0 seconds is out of range"), "{zero}");
        let over = parse_command_timeout("3601").unwrap_err();
        assert!(over.contains("1 to 3600"), "{over}");
        let words = parse_command_timeout("1.5").unwrap_err();
        assert!(words.contains("`1.5` is not a whole number"), "{words}");
    }

    #[test]
    fn pipeline_names_are_checked() {
        assert_eq!(pipeline_name("web deploy"), Ok(()));

        for (wrong, reason) in [
            ("", "it is empty"),
            ("-x", "starts with `-`"),
            ("a\nb", "control characters"),
        ] {
            let error = pipeline_name(wrong).unwrap_err();
            assert!(error.contains(reason), "{wrong:?}: {error}");
        }
        let long = "p".repeat(MAX_PIPELINE_NAME_CHARS + 1);
        assert!(pipeline_name(&long).unwrap_err().contains("too long"));
        assert!(pipeline_name("a\nb").unwrap_err().contains("`a?b`"));
    }

    #[test]
    fn secret_pipeline_rejects_scope_words() {
        assert_eq!(secret_pipeline("web"), Ok(()));

        let global = secret_pipeline("global").unwrap_err();
        assert!(global.contains("give no pipeline"), "{global}");
        let prefixed = secret_pipeline("pipeline:web").unwrap_err();
        assert!(prefixed.contains("alone: `web`"), "{prefixed}");
        assert!(secret_pipeline("").unwrap_err().contains("it is empty"));
    }
}
