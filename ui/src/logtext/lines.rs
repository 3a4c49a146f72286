//! The line store: a log's text as a terminal would show it, in one buffer
//! with an index of line starts.
//!
//! # Layout
//!
//! The shown text of every line (escapes stripped, carriage returns and
//! erases applied, invalid UTF-8 replaced with U+FFFD) sits in one `Vec<u8>`
//! with lines joined by `\n`. Beside it, each line has its start offset
//! (`u32`), the index of its first style run (`u32`) and the streams that
//! wrote to it (`u8`). That is 9 bytes a line, about 14 MB for 1.5 million
//! lines. Style runs (8 bytes each) exist only where the style
//! changes, and distinct styles are stored once.
//!
//! # Terminal semantics
//!
//! Only the last line is open: `\r` moves the cursor to its column 0 and
//! later text overwrites from there, so a progress bar redrawn with `\r`
//! collapses to its last state, while `\r\n` is a plain line end. `ESC [ K`
//! (0, 1, 2), `\b` and the column moves `ESC [ n G` and `ESC [ n C` act on
//! the open line too; sequences that move to other lines are dropped, so
//! a multi-line progress display shows as separate lines.
//!
//! Each stream (stdout, stderr, engine) keeps its own decoder: a character
//! or escape cut between two chunks of one stream is joined even when a
//! chunk of another stream comes in between, and one stream's colours do
//! not bleed into another's. Within a stream, the SGR state carries across
//! lines as in a terminal.

use std::collections::HashMap;
use std::ops::Range;

use super::decoder::{Control, Decoder, Screen};
use super::style::Style;

/// Maximum characters of a line that the view renders. The rest is counted
/// in [`Rendered::hidden_bytes`], and search still scans whole lines.
pub const RENDER_MAX_CHARS: usize = 10_000;

/// Maximum bytes of shown text kept. Output past it is counted in
/// [`LineStore::bytes_dropped`] and not stored, which bounds the memory a
/// runaway log takes in the browser.
pub const MAX_TEXT_BYTES: usize = 1 << 30;

/// Maximum column a cursor move (`ESC [ n G`, `ESC [ n C`) goes, in columns, so
/// that a few bytes of escape cannot produce megabytes of padding.
const MAX_COLUMN: usize = 1_000;

/// The output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Messages the engine wrote into the step's log.
    Engine,
}

impl Stream {
    /// Reads the API's `stream` field: `stdout`, `stderr` or `engine`.
    pub fn from_api(name: &str) -> Option<Stream> {
        match name {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            "engine" => Some(Stream::Engine),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Engine => 2,
        }
    }
}

/// The set of streams that wrote to a line. A line can mix streams when a
/// process writes part of a line to one and ends it on another, as a
/// terminal shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams(u8);

impl Streams {
    pub fn contains(self, stream: Stream) -> bool {
        self.0 & stream.bit() != 0
    }

    /// Returns the stream a line is shown as: stderr if any of it is, else
    /// engine if any of it is, else stdout.
    pub fn primary(self) -> Stream {
        if self.contains(Stream::Stderr) {
            Stream::Stderr
        } else if self.contains(Stream::Engine) {
            Stream::Engine
        } else {
            Stream::Stdout
        }
    }
}

/// From `at` (a byte offset in the text buffer) on, text has `style` (an
/// index into the style table) until the next run. Text of a line before
/// its first run is plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    at: u32,
    style: u32,
}

/// A log's lines, built from chunks as they arrive. See the module docs.
#[derive(Debug)]
pub struct LineStore {
    /// Shown text; lines joined by `\n`, always valid UTF-8.
    text: Vec<u8>,
    /// Start offset of each line; the last entry is the open line's.
    starts: Vec<u32>,
    /// Index into `runs` of each line's first run.
    line_runs: Vec<u32>,
    /// [`Streams`] bits of each line.
    streams: Vec<u8>,
    runs: Vec<Run>,
    /// Distinct styles; index 0 is plain text.
    styles: Vec<Style>,
    style_ids: HashMap<Style, u32>,
    /// Byte offset of the cursor in `text`, within the open line.
    cursor: usize,
    /// Columns between the open line's end and the cursor. Spaces fill them
    /// when text is printed there.
    pad: usize,
    decoders: [Decoder; 3],
    bytes_received: u64,
    bytes_dropped: u64,
}

impl Default for LineStore {
    fn default() -> Self {
        LineStore::new()
    }
}

impl LineStore {
    pub fn new() -> LineStore {
        let plain = Style::default();
        LineStore {
            text: Vec::new(),
            starts: vec![0],
            line_runs: vec![0],
            streams: vec![0],
            runs: Vec::new(),
            styles: vec![plain],
            style_ids: HashMap::from([(plain, 0)]),
            cursor: 0,
            pad: 0,
            decoders: Default::default(),
            bytes_received: 0,
            bytes_dropped: 0,
        }
    }

    /// Appends the next raw bytes of `stream`. Chunks may cut lines,
    /// characters and escape sequences anywhere.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        self.bytes_received += bytes.len() as u64;
        // Every input byte makes at most 3 bytes of text (U+FFFD), plus
        // padding bounded by MAX_COLUMN per sequence.
        if self.text.len() + bytes.len() * 3 + MAX_COLUMN > MAX_TEXT_BYTES {
            self.bytes_dropped += bytes.len() as u64;
            return;
        }
        reserve_gently(&mut self.text, bytes.len());

        let mut decoder = std::mem::take(&mut self.decoders[stream.index()]);
        decoder.feed(
            bytes,
            &mut Writer {
                store: self,
                stream,
            },
        );
        self.decoders[stream.index()] = decoder;
    }

    /// Lines so far, counting the open last line only once it has text.
    pub fn line_count(&self) -> usize {
        let open_start = *self.starts.last().expect("there is always an open line") as usize;
        if self.text.len() > open_start {
            self.starts.len()
        } else {
            self.starts.len() - 1
        }
    }

    /// Raw bytes passed to [`push`](Self::push).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Raw bytes not stored because the text reached [`MAX_TEXT_BYTES`].
    pub fn bytes_dropped(&self) -> u64 {
        self.bytes_dropped
    }

    /// Line `index` (0-based), or `None` past the last line.
    pub fn line(&self, index: usize) -> Option<Line<'_>> {
        if index >= self.line_count() {
            return None;
        }
        let range = self.line_range(index);
        let first_run = self.line_runs[index] as usize;
        let last_run = self
            .line_runs
            .get(index + 1)
            .map_or(self.runs.len(), |&next| next as usize);
        Some(Line {
            bytes: &self.text[range.clone()],
            start: range.start,
            streams: Streams(self.streams[index]),
            runs: &self.runs[first_run..last_run],
            styles: &self.styles,
        })
    }

    /// Returns the text buffer: every line's text, joined by `\n`.
    pub(crate) fn text(&self) -> &[u8] {
        &self.text
    }

    /// Byte range of line `index` in [`text`](Self::text), without its `\n`.
    pub(crate) fn line_range(&self, index: usize) -> Range<usize> {
        let start = self.starts[index] as usize;
        let end = self
            .starts
            .get(index + 1)
            .map_or(self.text.len(), |&next| next as usize - 1);
        start..end
    }

    /// Returns the line that contains byte `offset` of the text buffer.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&start| start as usize <= offset)
            - 1
    }

    fn open_start(&self) -> usize {
        *self.starts.last().expect("there is always an open line") as usize
    }

    fn open_first_run(&self) -> usize {
        *self.line_runs.last().expect("there is always an open line") as usize
    }

    fn intern(&mut self, style: &Style) -> u32 {
        if let Some(&id) = self.style_ids.get(style) {
            return id;
        }
        let id = u32::try_from(self.styles.len()).expect("fewer styles than bytes of text");
        self.styles.push(*style);
        self.style_ids.insert(*style, id);
        id
    }

    fn print(&mut self, text: &str, style: u32) {
        if self.pad > 0 {
            let spaces = " ".repeat(std::mem::take(&mut self.pad));
            self.print(&spaces, 0);
        }
        if self.cursor == self.text.len() {
            self.append(text, style);
            return;
        }
        for (index, ch) in text.char_indices() {
            if self.cursor == self.text.len() {
                self.append(&text[index..], style);
                return;
            }
            self.overwrite(ch, style);
        }
    }

    fn append(&mut self, text: &str, style: u32) {
        let end_style = self.runs[self.open_first_run()..]
            .last()
            .map_or(0, |run| run.style);
        if end_style != style {
            self.runs.push(Run {
                at: offset(self.text.len()),
                style,
            });
        }
        reserve_gently(&mut self.text, text.len());
        self.text.extend_from_slice(text.as_bytes());
        self.cursor = self.text.len();
    }

    /// Replaces the character at the cursor with `ch`.
    fn overwrite(&mut self, ch: char, style: u32) {
        let at = self.cursor;
        let old_len = char_len_at(&self.text, at);
        let mut buffer = [0; 4];
        let new = ch.encode_utf8(&mut buffer).as_bytes();
        if old_len == new.len() {
            self.text[at..at + old_len].copy_from_slice(new);
        } else {
            self.text.splice(at..at + old_len, new.iter().copied());
            self.shift_runs_after(at, new.len() as i64 - old_len as i64);
        }
        self.set_style(at..at + new.len(), style);
        self.cursor = at + new.len();
    }

    /// Moves the open line's runs that start after `at` by `delta` bytes.
    fn shift_runs_after(&mut self, at: usize, delta: i64) {
        let first = self.open_first_run();
        for run in &mut self.runs[first..] {
            if run.at as usize > at {
                run.at = offset((run.at as i64 + delta) as usize);
            }
        }
    }

    /// Gives `range` of the open line `style`, keeping the style after it.
    fn set_style(&mut self, range: Range<usize>, style: u32) {
        let first = self.open_first_run();
        let line_start = self.open_start();
        let tail = self.runs.split_off(first);
        let style_at = |position: usize| {
            tail.iter()
                .rev()
                .find(|run| run.at as usize <= position)
                .map_or(0, |run| run.style)
        };
        let before = if range.start > line_start {
            style_at(range.start - 1)
        } else {
            0
        };
        let after = style_at(range.end);

        self.runs
            .extend(tail.iter().filter(|run| (run.at as usize) < range.start));
        if style != before {
            self.runs.push(Run {
                at: offset(range.start),
                style,
            });
        }
        if range.end < self.text.len() && after != style {
            self.runs.push(Run {
                at: offset(range.end),
                style: after,
            });
        }
        self.runs
            .extend(tail.iter().filter(|run| run.at as usize > range.end));
    }

    fn newline(&mut self) {
        self.text.push(b'\n');
        self.starts.push(offset(self.text.len()));
        self.line_runs.push(offset(self.runs.len()));
        self.streams.push(0);
        self.cursor = self.text.len();
        self.pad = 0;
    }

    /// Returns the cursor's column in the open line, counting padding.
    fn column(&self) -> usize {
        count_chars(&self.text[self.open_start()..self.cursor]) + self.pad
    }

    /// Moves the cursor to `column`, past the line's end if need be.
    fn move_to_column(&mut self, column: usize) {
        let line_start = self.open_start();
        let line = &self.text[line_start..];
        let mut chars = 0;
        for (position, &byte) in line.iter().enumerate() {
            if is_char_start(byte) {
                if chars == column {
                    self.cursor = line_start + position;
                    self.pad = 0;
                    return;
                }
                chars += 1;
            }
        }
        self.cursor = self.text.len();
        self.pad = column - chars;
    }

    fn erase_to_end(&mut self) {
        if self.pad > 0 {
            return;
        }
        let cursor = self.cursor;
        self.text.truncate(cursor);
        let first = self.open_first_run();
        let keep = self.runs[first..]
            .iter()
            .take_while(|run| (run.at as usize) < cursor)
            .count();
        self.runs.truncate(first + keep);
    }

    fn erase_line(&mut self) {
        let column = self.column();
        let line_start = self.open_start();
        self.text.truncate(line_start);
        self.runs.truncate(self.open_first_run());
        self.cursor = line_start;
        self.pad = column;
    }

    /// Blanks the open line from its start through the cursor.
    fn erase_to_cursor(&mut self) {
        if self.pad > 0 || self.cursor == self.text.len() {
            self.erase_line();
            return;
        }
        let column = self.column();
        let line_start = self.open_start();
        let end = self.cursor + char_len_at(&self.text, self.cursor);
        let blanks = column + 1;
        let style_after = self.style_at(end);

        self.text
            .splice(line_start..end, std::iter::repeat_n(b' ', blanks));
        let delta = (line_start + blanks) as i64 - end as i64;
        let tail = self.runs.split_off(self.open_first_run());
        let kept = tail
            .into_iter()
            .filter(|run| run.at as usize >= end)
            .map(|run| Run {
                at: offset((run.at as i64 + delta) as usize),
                style: run.style,
            });
        let blank_end = line_start + blanks;
        if style_after != 0 && blank_end < self.text.len() {
            self.runs.push(Run {
                at: offset(blank_end),
                style: style_after,
            });
        }
        self.runs
            .extend(kept.filter(|run| run.at as usize != blank_end || style_after == 0));
        self.cursor = line_start + column;
    }

    /// Returns the style of the open line's byte at `position`.
    fn style_at(&self, position: usize) -> u32 {
        self.runs[self.open_first_run()..]
            .iter()
            .rev()
            .find(|run| run.at as usize <= position)
            .map_or(0, |run| run.style)
    }

    fn backspace(&mut self) {
        if self.pad > 0 {
            self.pad -= 1;
            return;
        }
        let line_start = self.open_start();
        while self.cursor > line_start {
            self.cursor -= 1;
            if is_char_start(self.text[self.cursor]) {
                break;
            }
        }
    }
}

/// Writes one stream's decoded output into the store.
struct Writer<'a> {
    store: &'a mut LineStore,
    stream: Stream,
}

impl Writer<'_> {
    fn mark_stream(&mut self) {
        let last = self.store.streams.len() - 1;
        self.store.streams[last] |= self.stream.bit();
    }
}

impl Screen for Writer<'_> {
    fn print(&mut self, text: &str, style: &Style) {
        self.mark_stream();
        let style = self.store.intern(style);
        self.store.print(text, style);
    }

    fn control(&mut self, control: Control) {
        if control == Control::Newline {
            self.mark_stream();
            self.store.newline();
            return;
        }
        let store = &mut *self.store;
        match control {
            Control::Newline => unreachable!("handled above"),
            Control::CarriageReturn => {
                store.cursor = store.open_start();
                store.pad = 0;
            }
            Control::Backspace => store.backspace(),
            Control::Column(column) => store.move_to_column(column.min(MAX_COLUMN)),
            Control::Forward(columns) => {
                let target = (store.column() + columns).min(MAX_COLUMN.max(store.column()));
                store.move_to_column(target);
            }
            Control::EraseToEnd => store.erase_to_end(),
            Control::EraseToCursor => store.erase_to_cursor(),
            Control::EraseLine => store.erase_line(),
        }
    }
}

/// One line of a [`LineStore`].
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    bytes: &'a [u8],
    /// Offset of the line in the store's text buffer.
    start: usize,
    streams: Streams,
    runs: &'a [Run],
    styles: &'a [Style],
}

/// A piece of a line in one style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<'a> {
    /// Byte offset of `text` in the line.
    pub start: usize,
    pub text: &'a str,
    pub style: &'a Style,
}

/// A line as shown: its first [`RENDER_MAX_CHARS`] characters in spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered<'a> {
    /// The shown part of the line's text.
    pub text: &'a str,
    pub spans: Vec<Span<'a>>,
    /// Bytes of the line past the shown part; 0 for most lines.
    pub hidden_bytes: usize,
}

impl<'a> Line<'a> {
    /// Returns the whole line's text.
    pub fn text(&self) -> &'a str {
        std::str::from_utf8(self.bytes).expect("the store keeps valid UTF-8")
    }

    pub fn streams(&self) -> Streams {
        self.streams
    }

    /// Splits the line's first `max_chars` characters into style spans.
    pub fn spans(&self, max_chars: usize) -> Rendered<'a> {
        // Only the shown part is validated and scanned: a line can be
        // megabytes long. A char is at most 4 bytes.
        let window = &self.bytes[..self.bytes.len().min(max_chars.saturating_mul(4))];
        let window_end = window
            .iter()
            .rposition(|&byte| is_char_start(byte))
            .filter(|_| window.len() < self.bytes.len())
            .unwrap_or(window.len());
        let window =
            std::str::from_utf8(&window[..window_end]).expect("the store keeps valid UTF-8");
        let shown = window
            .char_indices()
            .nth(max_chars)
            .map_or(window.len(), |(index, _)| index);

        let plain = &self.styles[0];
        let mut spans = Vec::new();
        let mut boundaries: Vec<(usize, &'a Style)> = self
            .runs
            .iter()
            .map(|run| {
                (
                    run.at as usize - self.start,
                    &self.styles[run.style as usize],
                )
            })
            .collect();
        if boundaries.first().is_none_or(|&(at, _)| at > 0) {
            boundaries.insert(0, (0, plain));
        }
        for (index, &(from, style)) in boundaries.iter().enumerate() {
            let to = boundaries
                .get(index + 1)
                .map_or(shown, |&(next, _)| next.min(shown));
            if from >= shown {
                break;
            }
            if to > from {
                spans.push(Span {
                    start: from,
                    text: &window[from..to],
                    style,
                });
            }
        }
        Rendered {
            text: &window[..shown],
            spans,
            hidden_bytes: self.bytes.len() - shown,
        }
    }
}

fn offset(position: usize) -> u32 {
    u32::try_from(position).expect("MAX_TEXT_BYTES keeps offsets within u32")
}

fn is_char_start(byte: u8) -> bool {
    byte & 0xC0 != 0x80
}

/// Length of the UTF-8 character starting at `at`.
fn char_len_at(text: &[u8], at: usize) -> usize {
    match text[at] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn count_chars(text: &[u8]) -> usize {
    text.iter().filter(|&&byte| is_char_start(byte)).count()
}

/// Reserves room for `additional` bytes, growing by a quarter instead of
/// doubling, so a 100 MB log needs at most about 125 MB of buffer.
fn reserve_gently(buffer: &mut Vec<u8>, additional: usize) {
    let needed = buffer.len() + additional;
    if needed > buffer.capacity() {
        let target = needed.max(buffer.capacity() + buffer.capacity() / 4);
        buffer.reserve_exact(target - buffer.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logtext::style::{Color, flag};

    fn store_of(pieces: &[&[u8]]) -> LineStore {
        let mut store = LineStore::new();
        for piece in pieces {
            store.push(Stream::Stdout, piece);
        }
        store
    }

    fn texts(store: &LineStore) -> Vec<String> {
        (0..store.line_count())
            .map(|index| store.line(index).unwrap().text().to_owned())
            .collect()
    }

    /// The line's spans as (text, style) pairs.
    fn spans(store: &LineStore, index: usize) -> Vec<(String, Style)> {
        store
            .line(index)
            .unwrap()
            .spans(RENDER_MAX_CHARS)
            .spans
            .iter()
            .map(|span| (span.text.to_owned(), *span.style))
            .collect()
    }

    fn fg(index: u8) -> Style {
        Style {
            fg: Color::Indexed(index),
            ..Style::default()
        }
    }

    fn plain(text: &str) -> (String, Style) {
        (text.to_owned(), Style::default())
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let store = store_of(&[b"ab", b"c\nde", b"f\n"]);
        assert_eq!(texts(&store), ["abc", "def"]);
    }

    #[test]
    fn open_last_line_counts_once_it_has_text() {
        let mut store = store_of(&[b"a\n\n"]);
        assert_eq!(texts(&store), ["a", ""]);
        store.push(Stream::Stdout, b"b");
        assert_eq!(texts(&store), ["a", "", "b"]);
        assert_eq!(store.bytes_received(), 4);
    }

    #[test]
    fn empty_log_has_no_lines() {
        let store = store_of(&[b"", b"\x1b[31m"]);
        assert_eq!(store.line_count(), 0);
        assert!(store.line(0).is_none());
    }

    #[test]
    fn carriage_return_overwrites_from_column_zero() {
        let store = store_of(&[b"Downloading 10%\rDownloading 55%\rDownloading 100%\n"]);
        assert_eq!(texts(&store), ["Downloading 100%"]);

        let store = store_of(&[b"abcdef\rXY\n"]);
        assert_eq!(texts(&store), ["XYcdef"]);
    }

    #[test]
    fn crlf_is_a_plain_newline_even_when_split() {
        let store = store_of(&[b"one\r\ntwo\r", b"\nthree"]);
        assert_eq!(texts(&store), ["one", "two", "three"]);
    }

    #[test]
    fn overwrite_handles_characters_of_other_widths() {
        let store = store_of(&["aé€b\r€xé\n".as_bytes()]);
        assert_eq!(texts(&store), ["€xéb"]);
    }

    #[test]
    fn erase_to_end_clears_the_rest_of_the_line() {
        let store = store_of(&[b"progress 50%\r\x1b[Kdone\n"]);
        assert_eq!(texts(&store), ["done"]);

        let store = store_of(&[b"abcdef\r\x1b[2C\x1b[0K\n"]);
        assert_eq!(texts(&store), ["ab"]);
    }

    #[test]
    fn erase_line_blanks_it_and_keeps_the_column() {
        let store = store_of(&[b"abc\x1b[2K\rxy\n"]);
        assert_eq!(texts(&store), ["xy"]);

        let store = store_of(&[b"abc\x1b[2Kd\n"]);
        assert_eq!(texts(&store), ["   d"]);
    }

    #[test]
    fn erase_to_cursor_blanks_through_the_cursor() {
        let store = store_of(&[b"abcdef\r\x1b[3G\x1b[1K\n"]);
        assert_eq!(texts(&store), ["   def"]);
    }

    #[test]
    fn erase_to_cursor_keeps_the_style_after_it() {
        let store = store_of(&["é\x1b[31mxyz\x1b[0m\r\x1b[2G\x1b[1K\n".as_bytes()]);
        assert_eq!(spans(&store, 0), [plain("  "), ("yz".to_owned(), fg(1))]);
    }

    #[test]
    fn backspace_and_column_moves_position_the_cursor() {
        let store = store_of(&[b"abc\x08X\n"]);
        assert_eq!(texts(&store), ["abX"]);

        let store = store_of(&[b"ab\x1b[5Gx\x1b[2Cy\n"]);
        assert_eq!(texts(&store), ["ab  x  y"]);
    }

    #[test]
    fn sgr_colours_become_spans() {
        let store =
            store_of(&[b"\x1b[31mred\x1b[0m plain \x1b[1;38;5;208mo\x1b[22;38;2;1;2;3mt\n"]);
        assert_eq!(
            spans(&store, 0),
            [
                ("red".to_owned(), fg(1)),
                plain(" plain "),
                (
                    "o".to_owned(),
                    Style {
                        fg: Color::Indexed(208),
                        flags: flag::BOLD,
                        ..Style::default()
                    }
                ),
                (
                    "t".to_owned(),
                    Style {
                        fg: Color::Rgb(1, 2, 3),
                        ..Style::default()
                    }
                ),
            ]
        );
    }

    #[test]
    fn sgr_state_carries_across_lines() {
        let store = store_of(&[b"\x1b[32mgreen\nstill\x1b[0m after\n"]);
        assert_eq!(spans(&store, 0), [("green".to_owned(), fg(2))]);
        assert_eq!(
            spans(&store, 1),
            [("still".to_owned(), fg(2)), plain(" after")]
        );
    }

    #[test]
    fn overwrite_restyles_only_what_it_covers() {
        let store = store_of(&[b"\x1b[31mabcdef\x1b[0m\r\x1b[32mXY\x1b[0m\n"]);
        assert_eq!(
            spans(&store, 0),
            [("XY".to_owned(), fg(2)), ("cdef".to_owned(), fg(1))]
        );
    }

    #[test]
    fn escape_split_across_chunks_styles_the_text() {
        let store = store_of(&[b"a\x1b", b"[3", b"4mb", b"lue\x1b[", b"0m\n"]);
        assert_eq!(spans(&store, 0), [plain("a"), ("blue".to_owned(), fg(4))]);
    }

    #[test]
    fn character_split_across_chunks_is_kept_whole() {
        let snowman = "☃".as_bytes();
        let store = store_of(&[b"x", &snowman[..2], &snowman[2..], b"y\n"]);
        assert_eq!(texts(&store), ["x☃y"]);
    }

    #[test]
    fn invalid_utf8_shows_replacement_characters() {
        let store = store_of(&[b"ok \xff\xfe end\n"]);
        assert_eq!(texts(&store), ["ok \u{FFFD}\u{FFFD} end"]);
    }

    #[test]
    fn streams_decode_apart_and_tag_their_lines() {
        let euro = "€".as_bytes();
        let mut store = LineStore::new();
        store.push(Stream::Stdout, &euro[..2]);
        store.push(Stream::Stderr, b"\x1b[31mwarning");
        store.push(Stream::Stderr, b"\n");
        store.push(Stream::Stdout, &euro[2..]);
        store.push(Stream::Stdout, b" ok\n");
        store.push(Stream::Engine, b"step finished\n");

        assert_eq!(texts(&store), ["warning", "€ ok", "step finished"]);
        assert_eq!(spans(&store, 0), [("warning".to_owned(), fg(1))]);
        assert_eq!(spans(&store, 1), [plain("€ ok")]);
        assert_eq!(store.line(0).unwrap().streams().primary(), Stream::Stderr);
        assert_eq!(store.line(1).unwrap().streams().primary(), Stream::Stdout);
        assert_eq!(store.line(2).unwrap().streams().primary(), Stream::Engine);
    }

    #[test]
    fn line_mixing_streams_is_shown_as_stderr() {
        let mut store = LineStore::new();
        store.push(Stream::Stdout, b"partial ");
        store.push(Stream::Stderr, b"error\n");
        let streams = store.line(0).unwrap().streams();
        assert!(streams.contains(Stream::Stdout));
        assert_eq!(streams.primary(), Stream::Stderr);
    }

    #[test]
    fn long_line_renders_a_prefix_and_counts_the_rest() {
        let mut long = "é".repeat(RENDER_MAX_CHARS + 5);
        long.push('\n');
        let store = store_of(&[long.as_bytes()]);
        let rendered = store.line(0).unwrap().spans(RENDER_MAX_CHARS);
        assert_eq!(rendered.text.chars().count(), RENDER_MAX_CHARS);
        assert_eq!(rendered.spans.len(), 1);
        assert_eq!(rendered.spans[0].text, rendered.text);
        assert_eq!(rendered.hidden_bytes, 10);
    }

    #[test]
    fn line_at_finds_the_line_of_an_offset() {
        let store = store_of(&[b"ab\n\ncd"]);
        assert_eq!(store.line_at(0), 0);
        assert_eq!(store.line_at(2), 0);
        assert_eq!(store.line_at(3), 1);
        assert_eq!(store.line_at(5), 2);
        assert_eq!(store.line_range(2), 4..6);
    }
}
