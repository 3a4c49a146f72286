//! Turns one stream's raw bytes into text, controls and styles, keeping its
//! state between chunks so that a chunk may end anywhere: inside a UTF-8
//! character, inside an escape sequence, or between `\r` and `\n`.

use super::style::{SgrParam, Style};

/// The terminal operations the decoder calls.
pub trait Screen {
    /// Writes text in `style` at the cursor.
    fn print(&mut self, text: &str, style: &Style);
    /// Acts on a control character or a cursor or erase sequence.
    fn control(&mut self, control: Control);
}

/// Controls that change the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `\n`: ends the line.
    Newline,
    /// `\r`: moves the cursor to column 0, so later text overwrites.
    CarriageReturn,
    /// `\b`: moves the cursor one column left.
    Backspace,
    /// `ESC [ n G`: moves the cursor to column `n` (0-based here).
    Column(usize),
    /// `ESC [ n C`: moves the cursor `n` columns right.
    Forward(usize),
    /// `ESC [ K` or `ESC [ 0 K`: erases from the cursor to the line's end.
    EraseToEnd,
    /// `ESC [ 1 K`: erases from the line's start through the cursor.
    EraseToCursor,
    /// `ESC [ 2 K`: erases the whole line; the cursor keeps its column.
    EraseLine,
}

/// Maximum length of one CSI sequence's parameters. Real sequences are a
/// few bytes, and a longer one is consumed and ignored.
const MAX_CSI_PARAMS: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    /// After `ESC`.
    Escape,
    /// After `ESC` and intermediate bytes (`ESC ( B` picks a charset).
    EscapeIntermediate,
    /// After `ESC [`, collecting parameters until the final byte.
    Csi,
    /// Inside an OSC (`ESC ]`), DCS, SOS, PM or APC string, which ends with
    /// BEL or `ESC \`.
    String,
    /// After `ESC` inside a string: `\` ends it.
    StringEscape,
}

/// Decoding state of one output stream.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    state: State,
    /// Bytes of a UTF-8 character cut by the end of the last chunk.
    partial: Vec<u8>,
    csi: Vec<u8>,
    /// The CSI sequence outgrew [`MAX_CSI_PARAMS`] and is being skipped.
    csi_overflow: bool,
    style: Style,
}

impl Decoder {
    /// Decodes `bytes`, the next piece of this stream, onto `screen`.
    pub fn feed(&mut self, bytes: &[u8], screen: &mut impl Screen) {
        let mut index = 0;
        while index < bytes.len() {
            if self.state == State::Ground {
                let text_end = bytes[index..]
                    .iter()
                    .position(|&byte| is_control(byte))
                    .map_or(bytes.len(), |found| index + found);
                if text_end > index {
                    let cut_by_chunk = text_end == bytes.len();
                    self.print_text(&bytes[index..text_end], cut_by_chunk, screen);
                    index = text_end;
                    continue;
                }
                // A control byte cannot continue a UTF-8 character.
                self.flush_partial(screen);
                self.ground_control(bytes[index], screen);
            } else {
                self.sequence_byte(bytes[index], screen);
            }
            index += 1;
        }
    }

    fn print_text(&mut self, mut text: &[u8], cut_by_chunk: bool, screen: &mut impl Screen) {
        if !self.partial.is_empty() {
            // Complete the character the last chunk cut: at most 3 more
            // bytes, so decode just the joined front.
            let take = text.len().min(4 - self.partial.len());
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(&text[..take]);
            let used = match std::str::from_utf8(&joined) {
                Ok(_) => joined.len(),
                Err(err) if err.valid_up_to() > 0 => err.valid_up_to(),
                Err(err) => match err.error_len() {
                    Some(bad) => {
                        screen.print("\u{FFFD}", &self.style);
                        bad
                    }
                    None if cut_by_chunk && take == text.len() => {
                        // Still incomplete and the chunk is over.
                        self.partial = joined;
                        return;
                    }
                    None => {
                        screen.print("\u{FFFD}", &self.style);
                        joined.len()
                    }
                },
            };
            if let Ok(valid) = std::str::from_utf8(&joined[..used])
                && !valid.is_empty()
            {
                screen.print(valid, &self.style);
            }
            let old = joined.len() - take;
            text = &text[used.saturating_sub(old)..];
        }

        loop {
            match std::str::from_utf8(text) {
                Ok(valid) => {
                    if !valid.is_empty() {
                        screen.print(valid, &self.style);
                    }
                    return;
                }
                Err(err) => {
                    let (valid, rest) = text.split_at(err.valid_up_to());
                    if !valid.is_empty() {
                        let valid = std::str::from_utf8(valid)
                            .expect("bytes before valid_up_to are valid UTF-8");
                        screen.print(valid, &self.style);
                    }
                    match err.error_len() {
                        Some(bad) => {
                            screen.print("\u{FFFD}", &self.style);
                            text = &rest[bad..];
                        }
                        None if cut_by_chunk => {
                            self.partial = rest.to_vec();
                            return;
                        }
                        None => {
                            // Cut by a control byte, which no character
                            // continues through.
                            screen.print("\u{FFFD}", &self.style);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn flush_partial(&mut self, screen: &mut impl Screen) {
        if !self.partial.is_empty() {
            self.partial.clear();
            screen.print("\u{FFFD}", &self.style);
        }
    }

    fn ground_control(&mut self, byte: u8, screen: &mut impl Screen) {
        match byte {
            b'\n' => screen.control(Control::Newline),
            b'\r' => screen.control(Control::CarriageReturn),
            0x08 => screen.control(Control::Backspace),
            0x1b => self.state = State::Escape,
            // BEL, NUL and the other C0 controls, and DEL, show nothing.
            _ => {}
        }
    }

    fn sequence_byte(&mut self, byte: u8, screen: &mut impl Screen) {
        // A newline ends any unfinished sequence, so that a stray ESC or an
        // unterminated OSC cannot hide the rest of the log.
        if byte == b'\n' {
            self.state = State::Ground;
            screen.control(Control::Newline);
            return;
        }
        match self.state {
            State::Ground => unreachable!("ground bytes are handled by feed"),
            State::Escape => {
                self.state = match byte {
                    b'[' => {
                        self.csi.clear();
                        self.csi_overflow = false;
                        State::Csi
                    }
                    b']' | b'P' | b'X' | b'^' | b'_' => State::String,
                    0x20..=0x2f => State::EscapeIntermediate,
                    0x1b => State::Escape,
                    // Any other final byte ends a two-byte sequence.
                    _ => State::Ground,
                };
            }
            State::EscapeIntermediate => {
                if !(0x20..=0x2f).contains(&byte) {
                    self.state = State::Ground;
                }
            }
            State::Csi => match byte {
                0x40..=0x7e => {
                    self.state = State::Ground;
                    if !self.csi_overflow {
                        self.finish_csi(byte, screen);
                    }
                }
                0x1b => self.state = State::Escape,
                // CAN and SUB abort the sequence.
                0x18 | 0x1a => self.state = State::Ground,
                _ => {
                    if self.csi.len() < MAX_CSI_PARAMS {
                        self.csi.push(byte);
                    } else {
                        self.csi_overflow = true;
                    }
                }
            },
            State::String => match byte {
                0x07 => self.state = State::Ground,
                0x1b => self.state = State::StringEscape,
                _ => {}
            },
            State::StringEscape => {
                self.state = match byte {
                    b'\\' => State::Ground,
                    0x1b => State::StringEscape,
                    _ => State::String,
                };
            }
        }
    }

    fn finish_csi(&mut self, final_byte: u8, screen: &mut impl Screen) {
        // A private marker (`?`, `>`, `<`, `=`) or an intermediate byte makes
        // a different command (`ESC [ ? 25 l` hides the cursor), not ours.
        let private = self
            .csi
            .iter()
            .any(|&byte| matches!(byte, b'<'..=b'?' | 0x20..=0x2f));
        if private {
            return;
        }
        let params = parse_params(&self.csi);
        let first = params.first().map_or(0, |param| usize::from(param.value));
        match final_byte {
            b'm' => self.style.apply_sgr(&params),
            b'K' => match first {
                0 => screen.control(Control::EraseToEnd),
                1 => screen.control(Control::EraseToCursor),
                2 => screen.control(Control::EraseLine),
                _ => {}
            },
            b'G' => screen.control(Control::Column(first.max(1) - 1)),
            b'C' => screen.control(Control::Forward(first.max(1))),
            // Cursor movement across lines, screen erases, modes and the
            // rest have no meaning in a log and are dropped.
            _ => {}
        }
    }
}

/// Returns whether `byte` is handled apart from text: C0 controls except tab, and
/// DEL.
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

fn parse_params(bytes: &[u8]) -> Vec<SgrParam> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&byte| byte == b';')
        .map(|group| {
            let mut numbers = group.split(|&byte| byte == b':').map(parse_number);
            SgrParam {
                value: numbers.next().unwrap_or(0),
                subparams: numbers.collect(),
            }
        })
        .collect()
}

/// Reads a decimal parameter; an empty one is 0 and a huge one saturates.
fn parse_number(digits: &[u8]) -> u16 {
    digits
        .iter()
        .filter(|byte| byte.is_ascii_digit())
        .fold(0u16, |number, &digit| {
            number
                .saturating_mul(10)
                .saturating_add(u16::from(digit - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logtext::style::Color;

    /// Records what the decoder did, merging adjacent prints of one style.
    #[derive(Default)]
    struct Recorder {
        events: Vec<Event>,
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Print(String, Style),
        Control(Control),
    }

    impl Screen for Recorder {
        fn print(&mut self, text: &str, style: &Style) {
            if let Some(Event::Print(last, last_style)) = self.events.last_mut()
                && last_style == style
            {
                last.push_str(text);
                return;
            }
            self.events.push(Event::Print(text.to_owned(), *style));
        }

        fn control(&mut self, control: Control) {
            self.events.push(Event::Control(control));
        }
    }

    fn decode_pieces(pieces: &[&[u8]]) -> Vec<Event> {
        let mut decoder = Decoder::default();
        let mut recorder = Recorder::default();
        for piece in pieces {
            decoder.feed(piece, &mut recorder);
        }
        recorder.events
    }

    fn plain(text: &str) -> Event {
        Event::Print(text.to_owned(), Style::default())
    }

    fn red() -> Style {
        Style {
            fg: Color::Indexed(1),
            ..Style::default()
        }
    }

    #[test]
    fn character_split_across_chunks_is_joined() {
        let euro = "€".as_bytes();
        let events = decode_pieces(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(events, [plain("a€b")]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let events = decode_pieces(&[b"a\xffb\xe2\x82", b"\n"]);
        assert_eq!(
            events,
            [
                plain("a\u{FFFD}b\u{FFFD}"),
                Event::Control(Control::Newline)
            ]
        );
    }

    #[test]
    fn cut_character_followed_by_ascii_is_replaced() {
        let events = decode_pieces(&[b"\xe2\x82", b"x"]);
        assert_eq!(events, [plain("\u{FFFD}x")]);
    }

    #[test]
    fn escape_split_across_chunks_still_styles() {
        let events = decode_pieces(&[b"a\x1b", b"[3", b"1mred\x1b[", b"0m b"]);
        assert_eq!(
            events,
            [
                plain("a"),
                Event::Print("red".to_owned(), red()),
                plain(" b")
            ]
        );
    }

    #[test]
    fn non_sgr_sequences_are_dropped() {
        let events =
            decode_pieces(&[b"a\x1b[?25l\x1b[2J\x1b]0;title\x07b\x1b]8;;http://x\x1b\\c\x1b(Bd"]);
        assert_eq!(events, [plain("abcd")]);
    }

    #[test]
    fn erase_and_column_sequences_become_controls() {
        let events = decode_pieces(&[b"\x1b[K\x1b[1K\x1b[2K\x1b[5G\x1b[C\r\x08"]);
        assert_eq!(
            events,
            [
                Event::Control(Control::EraseToEnd),
                Event::Control(Control::EraseToCursor),
                Event::Control(Control::EraseLine),
                Event::Control(Control::Column(4)),
                Event::Control(Control::Forward(1)),
                Event::Control(Control::CarriageReturn),
                Event::Control(Control::Backspace),
            ]
        );
    }

    #[test]
    fn unterminated_osc_ends_at_newline() {
        let events = decode_pieces(&[b"\x1b]0;never closed\nnext"]);
        assert_eq!(events, [Event::Control(Control::Newline), plain("next")]);
    }

    #[test]
    fn bell_and_nul_show_nothing_but_tabs_stay() {
        let events = decode_pieces(&[b"a\x07\x00b\tc"]);
        assert_eq!(events, [plain("ab\tc")]);
    }
}
