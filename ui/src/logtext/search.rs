//! Case-insensitive substring search over a [`LineStore`]'s shown text.
//!
//! Search scans what the viewer shows, without escapes and after carriage
//! returns took effect, and whole lines even where rendering cuts them.
//! A query that is ASCII once lowercased (the usual case) runs as a
//! byte-level scan: `memchr` finds the query's rarest byte in either case
//! and each candidate is compared ignoring ASCII case. Other queries fall
//! back to comparing lowercased characters, and only on lines that are not
//! pure ASCII, which cannot hold a non-ASCII match.

use std::ops::Range;

use super::lines::{LineStore, Span};
use super::style::Style;

/// A prepared query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The query lowercased.
    lower: String,
    /// For an ASCII query: the position of its rarest byte, which the scan
    /// looks for first.
    anchor: Option<usize>,
}

impl Query {
    /// Prepares `text`; `None` when it is empty.
    pub fn new(text: &str) -> Option<Query> {
        if text.is_empty() {
            return None;
        }
        let lower = text.to_lowercase();
        let anchor = lower.is_ascii().then(|| {
            lower
                .bytes()
                .enumerate()
                .min_by_key(|&(_, byte)| commonness(byte))
                .map_or(0, |(position, _)| position)
        });
        Some(Query { lower, anchor })
    }

    /// Indices of the lines in `lines` (0-based) that contain the query.
    pub fn matching_lines(&self, store: &LineStore, lines: Range<usize>) -> Vec<usize> {
        let lines = lines.start..lines.end.min(store.line_count());
        if lines.is_empty() || self.spans_lines() {
            return Vec::new();
        }
        match self.anchor {
            Some(anchor) => self.scan_ascii(store, lines, anchor),
            None => lines
                .filter(|&index| {
                    let text = store.line(index).expect("index below line_count").text();
                    !text.is_ascii() && !self.find_unicode(text).is_empty()
                })
                .collect(),
        }
    }

    /// Returns whether the query has a line break, so it matches nothing
    /// because matches lie within one line.
    fn spans_lines(&self) -> bool {
        self.lower.contains('\n')
    }

    fn scan_ascii(&self, store: &LineStore, lines: Range<usize>, anchor: usize) -> Vec<usize> {
        let needle = self.lower.as_bytes();
        let start = store.line_range(lines.start).start;
        let end = store.line_range(lines.end - 1).end;
        let haystack = &store.text()[..end];
        let lower = needle[anchor];
        let upper = lower.to_ascii_uppercase();

        let mut found = Vec::new();
        // Where the next candidate's anchor byte may be.
        let mut position = start + anchor;
        while position < haystack.len() {
            let Some(hit) = memchr::memchr2(lower, upper, &haystack[position..]) else {
                break;
            };
            let anchor_at = position + hit;
            let candidate = anchor_at - anchor;
            let candidate_end = candidate + needle.len();
            if candidate_end <= haystack.len()
                && haystack[candidate..candidate_end].eq_ignore_ascii_case(needle)
            {
                // The query has no `\n`, so the match lies within one line;
                // later matches on that line add nothing.
                let line = store.line_at(candidate);
                found.push(line);
                position = store.line_range(line).end + 1 + anchor;
            } else {
                position = anchor_at + 1;
            }
        }
        found
    }

    /// Byte ranges of the matches in `text` (one line), left to right and
    /// not overlapping.
    pub fn find_in(&self, text: &str) -> Vec<Range<usize>> {
        if self.spans_lines() {
            return Vec::new();
        }
        if self.anchor.is_none() {
            return self.find_unicode(text);
        }
        let needle = self.lower.as_bytes();
        let haystack = text.as_bytes();
        let mut ranges = Vec::new();
        let mut from = 0;
        while from + needle.len() <= haystack.len() {
            let window = &haystack[from..from + needle.len()];
            if window.eq_ignore_ascii_case(needle) {
                ranges.push(from..from + needle.len());
                from += needle.len();
            } else {
                from += 1;
            }
        }
        ranges
    }

    fn find_unicode(&self, text: &str) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut next_free = 0;
        for (start, _) in text.char_indices() {
            if start < next_free {
                continue;
            }
            if let Some(end) = self.match_at(text, start) {
                ranges.push(start..end);
                next_free = end;
            }
        }
        ranges
    }

    /// Returns the end of a match that starts at byte `start` of `text`, comparing
    /// lowercased characters.
    fn match_at(&self, text: &str, start: usize) -> Option<usize> {
        let mut wanted = self.lower.chars().peekable();
        for (index, ch) in text[start..].char_indices() {
            for lower in ch.to_lowercase() {
                if wanted.next() != Some(lower) {
                    return None;
                }
            }
            if wanted.peek().is_none() {
                return Some(start + index + ch.len_utf8());
            }
        }
        None
    }
}

/// A piece of a rendered line: a span, or the part of one inside a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub text: &'a str,
    pub style: &'a Style,
    pub matched: bool,
}

/// Splits `spans` where the `matches` (byte ranges in the line, sorted and
/// not overlapping) begin and end, so that matched text can be marked.
pub fn mark_matches<'a>(spans: &[Span<'a>], matches: &[Range<usize>]) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    for span in spans {
        let span_end = span.start + span.text.len();
        let mut cursor = span.start;
        for found in matches {
            if found.end <= cursor || found.start >= span_end {
                continue;
            }
            let from = found.start.max(cursor);
            let to = found.end.min(span_end);
            if from > cursor {
                pieces.push(piece(span, cursor..from, false));
            }
            pieces.push(piece(span, from..to, true));
            cursor = to;
        }
        if cursor < span_end {
            pieces.push(piece(span, cursor..span_end, false));
        }
    }
    pieces
}

fn piece<'a>(span: &Span<'a>, range: Range<usize>, matched: bool) -> Piece<'a> {
    Piece {
        text: &span.text[range.start - span.start..range.end - span.start],
        style: span.style,
        matched,
    }
}

/// Ranks roughly how often a lowercase byte occurs in build logs, so the
/// scan can anchor on the query's least common byte. The ranks are a guess,
/// not measured.
fn commonness(byte: u8) -> u8 {
    match byte {
        b' ' => 255,
        b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 200,
        b'l' | b'c' | b'd' | b'u' | b'h' | b'm' | b'p' | b'/' | b'.' => 150,
        b'0'..=b'9' | b'-' | b'_' | b':' | b'=' => 120,
        b'a'..=b'z' => 80,
        _ => 40,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logtext::lines::{RENDER_MAX_CHARS, Stream};
    use crate::logtext::style::Color;

    fn store_of(text: &[u8]) -> LineStore {
        let mut store = LineStore::new();
        store.push(Stream::Stdout, text);
        store
    }

    fn search(store: &LineStore, query: &str) -> Vec<usize> {
        Query::new(query)
            .unwrap()
            .matching_lines(store, 0..store.line_count())
    }

    #[test]
    fn search_ignores_case_and_lists_each_line_once() {
        let store = store_of(b"Error: one\nfine\nerror error ERROR\nno\nterror");
        assert_eq!(search(&store, "ERROR"), [0, 2, 4]);
        assert_eq!(search(&store, "fine"), [1]);
        assert_eq!(search(&store, "missing"), Vec::<usize>::new());
    }

    #[test]
    fn search_sees_shown_text_not_escapes_or_overwritten_text() {
        let store = store_of(b"\x1b[31mfa\x1b[0mil here\nold\rnew\n");
        assert_eq!(search(&store, "fail"), [0]);
        assert_eq!(search(&store, "31m"), Vec::<usize>::new());
        assert_eq!(search(&store, "old"), Vec::<usize>::new());
        assert_eq!(search(&store, "new"), [1]);
    }

    #[test]
    fn search_never_matches_across_lines() {
        let store = store_of(b"ab\ncd\n");
        assert_eq!(search(&store, "bc"), Vec::<usize>::new());
        assert_eq!(search(&store, "b\nc"), Vec::<usize>::new());
    }

    #[test]
    fn search_limits_itself_to_the_given_lines() {
        let store = store_of(b"x\nx\nx\nx");
        let query = Query::new("X").unwrap();
        assert_eq!(query.matching_lines(&store, 1..3), [1, 2]);
        assert_eq!(query.matching_lines(&store, 3..10), [3]);
        assert_eq!(query.matching_lines(&store, 4..10), Vec::<usize>::new());
    }

    #[test]
    fn search_reads_whole_long_lines() {
        let mut text = "x".repeat(RENDER_MAX_CHARS * 3);
        text.push_str("needle\n");
        let store = store_of(text.as_bytes());
        assert_eq!(search(&store, "NEEDLE"), [0]);
    }

    #[test]
    fn non_ascii_query_folds_case() {
        let store = store_of("Äpfel\nBIRNEN\näpfel und ÄPFEL\n".as_bytes());
        assert_eq!(search(&store, "äPFEL"), [0, 2]);
        let query = Query::new("ÄPFEL").unwrap();
        assert_eq!(query.find_in("äpfel und ÄPFEL"), [0..6, 11..17]);
    }

    #[test]
    fn find_in_returns_non_overlapping_ranges() {
        let query = Query::new("aa").unwrap();
        assert_eq!(query.find_in("aaaXAa"), [0..2, 4..6]);
        assert!(Query::new("").is_none());
    }

    #[test]
    fn mark_matches_splits_spans_at_match_edges() {
        let store = store_of(b"ab\x1b[31mcdef\x1b[0mgh\n");
        let line = store.line(0).unwrap();
        let rendered = line.spans(RENDER_MAX_CHARS);
        let query = Query::new("BCD").unwrap();
        let matches = query.find_in(rendered.text);
        let pieces: Vec<(&str, bool, Color)> = mark_matches(&rendered.spans, &matches)
            .iter()
            .map(|piece| (piece.text, piece.matched, piece.style.fg))
            .collect();
        assert_eq!(
            pieces,
            [
                ("a", false, Color::Default),
                ("b", true, Color::Default),
                ("cd", true, Color::Indexed(1)),
                ("ef", false, Color::Indexed(1)),
                ("gh", false, Color::Default),
            ]
        );
    }
}
