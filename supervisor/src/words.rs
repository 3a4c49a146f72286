//! Splitting a command into words the way a POSIX shell would, for images
//! without `/bin/sh`. Only quoting is understood: single quotes, double
//! quotes and backslashes. Anything that needs a shell to mean what it says
//! (pipes, redirections, variables, globs, command lists) is rejected with
//! the character that gave it away, so a command never runs with a meaning
//! other than the one its author wrote.

use std::fmt;

/// A command that cannot be run without a shell.
#[derive(Debug, PartialEq, Eq)]
pub enum SplitError {
    /// An unquoted character that only a shell gives a meaning to.
    ShellSyntax { character: char },
    /// A quote that is never closed.
    UnclosedQuote { quote: char },
    /// A backslash at the very end of the command.
    TrailingBackslash,
    /// `NAME=value command`: an assignment prefix, which needs a shell.
    Assignment { word: String },
    /// Nothing to run.
    Empty,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::ShellSyntax { character } => write!(
                f,
                "the command uses shell syntax (`{character}`), but the image has no /bin/sh; \
                 quote the character, write the command without it, or use an image with a shell"
            ),
            SplitError::UnclosedQuote { quote } => {
                write!(f, "the command has an unclosed `{quote}` quote")
            }
            SplitError::TrailingBackslash => f.write_str("the command ends with a lone backslash"),
            SplitError::Assignment { word } => write!(
                f,
                "the command starts with the variable assignment `{word}`, which needs a shell, \
                 but the image has no /bin/sh; pass the variable with env= instead"
            ),
            SplitError::Empty => f.write_str("the command is empty"),
        }
    }
}

/// Characters a shell would act on outside quotes.
const SHELL_CHARACTERS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '~', '#', '\n',
];

/// Splits `command` into words, or says why it needs a shell.
pub fn split(command: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut characters = command.chars();

    while let Some(character) = characters.next() {
        match character {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match characters.next() {
                        Some('\'') => break,
                        Some(quoted) => word.push(quoted),
                        None => return Err(SplitError::UnclosedQuote { quote: '\'' }),
                    }
                }
            }
            '"' => {
                in_word = true;
                double_quoted(&mut characters, &mut word)?;
            }
            '\\' => {
                in_word = true;
                match characters.next() {
                    // A backslash-newline joins lines, as in a shell.
                    Some('\n') => {}
                    Some(escaped) => word.push(escaped),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            // `#` starts a comment only at the start of a word.
            '#' if in_word => word.push('#'),
            // `~` expands only at the start of a word.
            '~' if in_word => word.push('~'),
            other if SHELL_CHARACTERS.contains(&other) => {
                return Err(SplitError::ShellSyntax { character: other });
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }

    match words.first() {
        None => Err(SplitError::Empty),
        Some(first) if is_assignment(first) => Err(SplitError::Assignment {
            word: first.split('=').next().unwrap_or_default().to_owned() + "=…",
        }),
        Some(_) => Ok(words),
    }
}

/// Reads up to the closing `"`. Inside double quotes a shell still expands
/// `$` and backquotes, so those are rejected; a backslash escapes only
/// `$`, `` ` ``, `"`, `\` and newline.
fn double_quoted(
    characters: &mut std::str::Chars<'_>,
    word: &mut String,
) -> Result<(), SplitError> {
    loop {
        match characters.next() {
            Some('"') => return Ok(()),
            Some(character @ ('$' | '`')) => return Err(SplitError::ShellSyntax { character }),
            Some('\\') => match characters.next() {
                Some(escaped @ ('$' | '`' | '"' | '\\')) => word.push(escaped),
                Some('\n') => {}
                Some(other) => {
                    word.push('\\');
                    word.push(other);
                }
                None => return Err(SplitError::UnclosedQuote { quote: '"' }),
            },
            Some(other) => word.push(other),
            None => return Err(SplitError::UnclosedQuote { quote: '"' }),
        }
    }
}

/// Returns true for `NAME=...` where NAME is a valid shell variable name.
fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && characters.all(|rest| rest == '_' || rest.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &str) -> Vec<String> {
        split(command).unwrap()
    }

    #[test]
    fn plain_words_split_on_blanks() {
        assert_eq!(
            words("  /kaniko/executor --context dir:///workspace\t--no-push "),
            [
                "/kaniko/executor",
                "--context",
                "dir:///workspace",
                "--no-push"
            ]
        );
    }

    #[test]
    fn quotes_and_backslashes_join_words() {
        assert_eq!(
            words(r#"echo 'a b' "c \"d\" \x" e\ f '' x#y a~b"#),
            ["echo", "a b", r#"c "d" \x"#, "e f", "", "x#y", "a~b"]
        );
    }

    #[test]
    fn shell_syntax_is_rejected_with_the_character() {
        for (command, character) in [
            ("ls | wc", '|'),
            ("make && make test", '&'),
            ("echo $HOME", '$'),
            ("echo \"$HOME\"", '$'),
            ("cat < in", '<'),
            ("rm *.o", '*'),
            ("echo `date`", '`'),
            ("cd ~", '~'),
            ("true # comment", '#'),
            ("a; b", ';'),
        ] {
            assert_eq!(
                split(command),
                Err(SplitError::ShellSyntax { character }),
                "{command}"
            );
        }
    }

    #[test]
    fn quoted_shell_characters_are_literal() {
        assert_eq!(words("echo '|&;$*' \\$HOME"), ["echo", "|&;$*", "$HOME"]);
    }

    #[test]
    fn malformed_commands_are_rejected() {
        assert_eq!(
            split("echo 'open"),
            Err(SplitError::UnclosedQuote { quote: '\'' })
        );
        assert_eq!(
            split("echo \"open"),
            Err(SplitError::UnclosedQuote { quote: '"' })
        );
        assert_eq!(split("echo \\"), Err(SplitError::TrailingBackslash));
        assert_eq!(split("   "), Err(SplitError::Empty));
    }

    #[test]
    fn assignment_prefix_needs_a_shell_and_hides_the_value() {
        let error = split("TOKEN=secret ./publish").unwrap_err();
        assert_eq!(
            error,
            SplitError::Assignment {
                word: "TOKEN=…".into()
            }
        );
        assert!(!error.to_string().contains("secret"));
        assert_eq!(words("./tool --opt=value"), ["./tool", "--opt=value"]);
    }
}
