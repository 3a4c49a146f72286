//! Short text with ANSI escapes, such as a debug command's output, as
//! styled lines for a view that shows all of it at once.

use super::lines::{LineStore, RENDER_MAX_CHARS, Stream};

/// A piece of a line in one style, as CSS classes and inline colours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StyledPiece {
    pub text: String,
    pub classes: String,
    pub style: String,
}

/// Splits `text` into lines of styled pieces with the log view's terminal
/// decoder, so that ANSI escapes show as colours rather than as raw bytes.
/// A line keeps its first [`RENDER_MAX_CHARS`] characters.
pub fn styled_lines(text: &str) -> Vec<Vec<StyledPiece>> {
    let mut store = LineStore::new();
    store.push(Stream::Stdout, text.as_bytes());
    // Ends the last line, which the store holds back until a newline.
    if !text.ends_with('\n') {
        store.push(Stream::Stdout, b"\n");
    }
    (0..store.line_count())
        .filter_map(|index| store.line(index))
        .map(|line| {
            line.spans(RENDER_MAX_CHARS)
                .spans
                .into_iter()
                .map(|span| StyledPiece {
                    text: span.text.to_owned(),
                    classes: span.style.css_classes(),
                    style: span.style.css_inline(),
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Vec<StyledPiece>]) -> Vec<String> {
        lines
            .iter()
            .map(|line| line.iter().map(|piece| piece.text.as_str()).collect())
            .collect()
    }

    #[test]
    fn styled_lines_drop_ansi_escapes() {
        let lines = styled_lines("\x1b[31mred\x1b[0m plain\nnext");

        assert_eq!(texts(&lines), ["red plain", "next"]);
        assert_eq!(lines[0][0].text, "red");
        assert_eq!(lines[0][1].text, " plain");
        assert_ne!(lines[0][0].classes, lines[0][1].classes);
    }

    #[test]
    fn styled_lines_keep_trailing_newline_as_one_line_end() {
        assert_eq!(texts(&styled_lines("a\nb\n")), ["a", "b"]);
    }
}
