//! Secret scrubbing for log output.
//!
//! Two kinds of masking, applied in this order:
//!
//! 1. Secrets known to the job, each in four forms: the raw bytes, standard
//!    base64 with and without padding, and percent-encoding as Python's
//!    `urllib.parse.quote(value, safe="")` produces it. Every non-empty secret
//!    is masked, so a secret of one or two bytes masks every occurrence of
//!    those bytes in the log.
//! 2. Token-like patterns: JWTs (`eyJ….eyJ….…`, masked whole), the values of
//!    `password`, `passwd`, `secret`, `token` and `api_key` keys (also with
//!    `:`, quoted, and as the end of a longer key such as `GITHUB_TOKEN`), and
//!    `Bearer` credentials. A key is found only when its first letters are
//!    in lower case, upper case or capitalized (`Token`, not `tOKEN`).
//!
//! A stream (one process output) is scrubbed piece by piece as it arrives. A
//! secret split across two writes is still masked, because the scrubber holds
//! back the tail of a write when that tail is the beginning of some secret
//! form, and scans it again together with the next write. Nothing else is
//! held back, so output without a trailing newline is released at once.
//! Token patterns split across writes are masked on a best-effort basis: a
//! value cut at the end of one write is masked, and its continuation at the
//! start of the next write is dropped, but a key split across writes
//! (`pass` | `word=x`) is not recognized.

use std::ops::Range;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, Input, Match, MatchKind, Span, packed};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use regex::bytes::Regex;
use zeroize::Zeroizing;

/// The text that replaces a secret or a token value.
pub const MASK: &[u8] = b"***";

/// Bytes that `urllib.parse.quote(value, safe="")` leaves as they are:
/// letters, digits and `_.-~`.
const URL_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Replaces secrets known to a job, their base64 and URL-encoded forms, and
/// token-like patterns (JWTs, `password=...`) with `***`.
///
/// Secrets can be added while output is being scrubbed; each write uses the
/// secrets known when it starts. See the module docs for what is matched.
pub struct Scrubber {
    secrets: RwLock<Arc<SecretMatcher>>,
}

/// Per-stream state of [`Scrubber::scrub_stream`]: the held-back tail and
/// the class of a token value that may continue into the next write.
#[derive(Default)]
pub struct ScrubState {
    /// Unreleased input: the longest tail of the last write that is a proper
    /// prefix of some secret form. Shorter than the longest form.
    held_tail: Zeroizing<Vec<u8>>,
    /// Set when the last released output ended inside a masked token value,
    /// so that the value's continuation is dropped from the next write.
    open_value: Option<ValueClass>,
}

impl ScrubState {
    /// Number of input bytes held back, waiting for the next write.
    pub fn held_len(&self) -> usize {
        self.held_tail.len()
    }
}

impl Scrubber {
    pub fn new() -> Arc<Scrubber> {
        Arc::new(Scrubber {
            secrets: RwLock::new(Arc::new(SecretMatcher::default())),
        })
    }

    /// Adds a secret value, so that every later write is scrubbed of it.
    ///
    /// An empty value is ignored. Adding a value twice does nothing.
    pub fn add_secret(&self, value: &[u8]) {
        if value.is_empty() {
            return;
        }

        // The write lock is held across the rebuild so that two concurrent
        // additions cannot both start from the same old set and lose one.
        let mut current = self.secrets.write().unwrap_or_else(PoisonError::into_inner);
        let mut forms = current.forms.clone();
        let before = forms.len();
        for form in secret_forms(value) {
            if let Err(at) = forms.binary_search_by(|known| known.as_slice().cmp(form.as_slice())) {
                forms.insert(at, form);
            }
        }
        if forms.len() == before {
            return;
        }
        *current = Arc::new(SecretMatcher::build(forms));
    }

    /// Scrubs a complete text, such as a command line or an error message.
    ///
    /// A secret that is not valid UTF-8 can match inside a multi-byte
    /// character; such a cut character comes out as U+FFFD.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len());
        let mut state = ScrubState::default();
        self.scrub_final(&mut state, text.as_bytes(), &mut out);
        match String::from_utf8(out) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }

    /// Scrubs a complete byte string.
    pub fn scrub_bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut state = ScrubState::default();
        self.scrub_final(&mut state, data, &mut out);
        out
    }

    /// Scrubs the next piece of a stream and appends to `out` the output that
    /// can be released now.
    ///
    /// The output is `state`'s held tail followed by `data`, scrubbed, minus a
    /// new held tail: the longest tail that is a proper prefix of a secret
    /// form. Call [`Scrubber::finish_stream`] at the end of the stream to
    /// release it.
    pub fn scrub_stream(&self, state: &mut ScrubState, data: &[u8], out: &mut Vec<u8>) {
        let secrets = self.snapshot();
        let start = out.len();

        if state.held_tail.is_empty() {
            let held_from = secrets.mask(data, true, out);
            state.held_tail.extend_from_slice(&data[held_from..]);
        } else {
            // The held tail and the new data are scanned as one text, so a
            // secret that starts in the tail is matched whole.
            let mut input = std::mem::take(&mut state.held_tail);
            input.extend_from_slice(data);
            let held_from = secrets.mask(&input, true, out);
            state.held_tail.extend_from_slice(&input[held_from..]);
        }

        mask_tokens(state, out, start);
    }

    /// Releases `state`'s held tail, scrubbed as the end of the stream, and
    /// resets `state`.
    pub fn finish_stream(&self, state: &mut ScrubState, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut state.held_tail);
        self.scrub_final(state, &held, out);
        *state = ScrubState::default();
    }

    /// Scrubs `state`'s held tail and `data` as the last piece of a stream.
    fn scrub_final(&self, state: &mut ScrubState, data: &[u8], out: &mut Vec<u8>) {
        let secrets = self.snapshot();
        let start = out.len();
        let mut input = std::mem::take(&mut state.held_tail);
        input.extend_from_slice(data);
        secrets.mask(&input, false, out);
        mask_tokens(state, out, start);
    }

    fn snapshot(&self) -> Arc<SecretMatcher> {
        Arc::clone(&self.secrets.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Encodes one secret in every form that is masked. The caller removes
/// duplicate forms.
fn secret_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    vec![
        Zeroizing::new(value.to_vec()),
        Zeroizing::new(STANDARD.encode(value).into_bytes()),
        Zeroizing::new(STANDARD_NO_PAD.encode(value).into_bytes()),
        Zeroizing::new(
            percent_encode(value, URL_UNRESERVED)
                .to_string()
                .into_bytes(),
        ),
    ]
}

/// An immutable matcher over every form of every secret known so far.
struct SecretMatcher {
    /// Every form, sorted and without duplicates, so that "is this a prefix
    /// of some form" is a binary search.
    forms: Vec<Zeroizing<Vec<u8>>>,
    /// Leftmost-longest, so that of two overlapping secrets the one that
    /// starts first is masked, and of two starting at the same byte the
    /// longer one. `None` while there are no secrets.
    finder: Option<LiteralFinder>,
    /// First bytes of the forms, to skip most positions in `hold_start`.
    first_bytes: [bool; 256],
    max_len: usize,
}

impl Default for SecretMatcher {
    fn default() -> SecretMatcher {
        SecretMatcher {
            forms: Vec::new(),
            finder: None,
            first_bytes: [false; 256],
            max_len: 0,
        }
    }
}

impl SecretMatcher {
    fn build(forms: Vec<Zeroizing<Vec<u8>>>) -> SecretMatcher {
        let finder = LiteralFinder::new(
            forms.iter().map(|form| form.as_slice()),
            MatchKind::LeftmostLongest,
        );
        let mut first_bytes = [false; 256];
        for form in &forms {
            first_bytes[usize::from(form[0])] = true;
        }
        let max_len = forms.iter().map(|form| form.len()).max().unwrap_or(0);
        SecretMatcher {
            forms,
            finder: Some(finder),
            first_bytes,
            max_len,
        }
    }

    /// Appends `input` to `out` with every secret form replaced by [`MASK`]
    /// and returns where the unreleased tail starts (`input.len()` unless
    /// `hold`).
    ///
    /// With `hold`, a match is accepted only if it starts before the held
    /// tail. Such a match is the one a scan of the whole stream would find:
    /// no match that needs later bytes can start at or before it, because
    /// such a match would start inside the held tail.
    fn mask(&self, input: &[u8], hold: bool, out: &mut Vec<u8>) -> usize {
        let Some(finder) = &self.finder else {
            out.extend_from_slice(input);
            return input.len();
        };

        let mut held_from = if hold {
            self.hold_start(input, 0)
        } else {
            input.len()
        };
        let mut pos = 0;
        for found in finder.find_iter(input) {
            if found.start() >= held_from {
                break;
            }
            out.extend_from_slice(&input[pos..found.start()]);
            out.extend_from_slice(MASK);
            pos = found.end();
            // A match that ran into the held tail consumed its start; a
            // shorter tail after the match may still be a secret's prefix.
            if pos > held_from {
                held_from = self.hold_start(input, pos);
            }
        }
        out.extend_from_slice(&input[pos..held_from]);
        held_from
    }

    /// Returns the start of the longest tail of `input[from..]` that is a
    /// proper prefix of some form, or `input.len()` if there is none.
    fn hold_start(&self, input: &[u8], from: usize) -> usize {
        let first = from.max(input.len().saturating_sub(self.max_len.saturating_sub(1)));
        (first..input.len())
            .find(|&at| {
                self.first_bytes[usize::from(input[at])] && self.is_proper_prefix(&input[at..])
            })
            .unwrap_or(input.len())
    }

    /// Checks whether some form starts with `tail` and is longer than it.
    fn is_proper_prefix(&self, tail: &[u8]) -> bool {
        // In sorted order the forms that start with `tail` follow right
        // after the position where `tail` itself would be.
        let at = self.forms.partition_point(|form| form.as_slice() < tail);
        let candidate = match self.forms.get(at) {
            Some(form) if form.as_slice() == tail => self.forms.get(at + 1),
            other => other,
        };
        candidate.is_some_and(|form| form.starts_with(tail))
    }
}

/// A multi-literal search that uses the SIMD "Teddy" searcher when it can.
///
/// `AhoCorasick` picks its prefilter by guessing which bytes are rare in
/// text. On base64 text no byte is rare: scrubbing 700 MB of it measured
/// 140-520 MB/s that way and 2.5-6 GB/s with Teddy (release build, x86-64
/// with AVX2, 64 KiB and 1 MiB chunks). Teddy takes at most 64 patterns and
/// needs SSSE3 or NEON, so more secret forms, or other CPUs, use the
/// automaton.
enum LiteralFinder {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl LiteralFinder {
    /// `kind` is `LeftmostFirst` or `LeftmostLongest`.
    fn new<'p>(patterns: impl Iterator<Item = &'p [u8]> + Clone, kind: MatchKind) -> LiteralFinder {
        let packed_kind = match kind {
            MatchKind::LeftmostLongest => packed::MatchKind::LeftmostLongest,
            _ => packed::MatchKind::LeftmostFirst,
        };
        let packed = packed::Config::new()
            .match_kind(packed_kind)
            .builder()
            .extend(patterns.clone())
            .build();
        match packed {
            Some(searcher) => LiteralFinder::Packed(searcher),
            None => LiteralFinder::Automaton(
                AhoCorasick::builder()
                    .match_kind(kind)
                    .build(patterns)
                    .expect("secret forms total far fewer bytes than the automaton's state limit"),
            ),
        }
    }

    fn find_at(&self, haystack: &[u8], at: usize) -> Option<Match> {
        match self {
            LiteralFinder::Packed(searcher) => {
                searcher.find_in(haystack, Span::from(at..haystack.len()))
            }
            LiteralFinder::Automaton(automaton) => automaton.find(Input::new(haystack).range(at..)),
        }
    }

    /// Non-overlapping matches from left to right.
    fn find_iter<'h>(&'h self, haystack: &'h [u8]) -> impl Iterator<Item = Match> + 'h {
        let mut at = 0;
        std::iter::from_fn(move || {
            let found = self.find_at(haystack, at)?;
            // No pattern is empty, so every match moves forward.
            at = found.end();
            Some(found)
        })
    }
}

/// The class of bytes that can continue a masked token value cut at the end
/// of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueClass {
    Unquoted,
    DoubleQuoted,
    SingleQuoted,
    Jwt,
    Bearer,
}

impl ValueClass {
    fn contains(self, byte: u8) -> bool {
        match self {
            // The complement of the regex's `[^\s"'&]`, where `\s` includes
            // the vertical tab.
            ValueClass::Unquoted => !matches!(
                byte,
                b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b'"' | b'\'' | b'&'
            ),
            ValueClass::DoubleQuoted => !matches!(byte, b'"' | b'\r' | b'\n'),
            ValueClass::SingleQuoted => !matches!(byte, b'\'' | b'\r' | b'\n'),
            ValueClass::Jwt => byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'),
            ValueClass::Bearer => {
                byte.is_ascii_alphanumeric()
                    || matches!(byte, b'.' | b'_' | b'~' | b'+' | b'/' | b'-' | b'=')
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rule {
    Keyword,
    Jwt,
    Bearer,
}

/// Token patterns. A SIMD literal search finds candidate positions, a
/// hand-written check rejects most candidates within a few bytes, and an
/// anchored regex confirms the rest. Text without candidates costs one scan
/// and no regex search.
struct TokenRules {
    /// Case-sensitive spellings on purpose, because aho-corasick 1.1 builds
    /// no SIMD searcher for an ASCII-case-insensitive search.
    candidates: LiteralFinder,
    rule_of_candidate: Vec<Rule>,
    keyword: Regex,
    jwt: Regex,
    bearer: Regex,
}

const CANDIDATES: &[(&str, Rule)] = &[
    ("eyJ", Rule::Jwt),
    ("passw", Rule::Keyword),
    ("Passw", Rule::Keyword),
    ("PASSW", Rule::Keyword),
    ("secret", Rule::Keyword),
    ("Secret", Rule::Keyword),
    ("SECRET", Rule::Keyword),
    ("token", Rule::Keyword),
    ("Token", Rule::Keyword),
    ("TOKEN", Rule::Keyword),
    ("api", Rule::Keyword),
    ("Api", Rule::Keyword),
    ("API", Rule::Keyword),
    ("bearer", Rule::Bearer),
    ("Bearer", Rule::Bearer),
    ("BEARER", Rule::Bearer),
];

/// Keys whose values are masked, matched case-insensitively. A key may have
/// any prefix (`GITHUB_TOKEN`, `clientSecret`), since the candidate search
/// finds keywords anywhere, and a suffix of up to [`MAX_KEY_SUFFIX`] key
/// characters that starts with `_`, `-` or `.` (`secret_access_key`). A
/// suffix without a separator does not count, so counters such as
/// `tokens=5` stay visible, and neither does a camel-case one (`secretKey`).
const KEYWORDS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"secret",
    b"token",
    b"api_key",
    b"api-key",
    b"apikey",
];

/// Bounds the key suffix scanned after a keyword, so that a long run of key
/// characters full of keywords costs linear time, not quadratic.
const MAX_KEY_SUFFIX: usize = 64;

static TOKEN_RULES: LazyLock<TokenRules> = LazyLock::new(|| {
    // `(?-u)` matches any byte, so invalid UTF-8 inside a value is masked
    // too. A quoted value missing its closing quote runs to the end of the
    // text, which is where a write cut it. `may_start_assignment` must accept
    // everything this accepts.
    let keyword = r#"(?i-u)\A(?:passw(?:or)?d|secret|token|api[_-]?key)(?:[_.-][a-z0-9_.-]{0,63})?["']?[ \t]*[:=][ \t]*(?:"[^"\r\n]+(?:"|\z)|'[^'\r\n]+(?:'|\z)|[^\s"'&]+)"#;
    let jwt = r"(?-u)\AeyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*";
    let bearer = r"(?i-u)\Abearer[ \t]+[A-Za-z0-9._~+/-]+=*";
    TokenRules {
        candidates: LiteralFinder::new(
            CANDIDATES.iter().map(|(literal, _)| literal.as_bytes()),
            MatchKind::LeftmostFirst,
        ),
        rule_of_candidate: CANDIDATES.iter().map(|&(_, rule)| rule).collect(),
        keyword: Regex::new(keyword).expect("the keyword pattern is valid"),
        jwt: Regex::new(jwt).expect("the JWT pattern is valid"),
        bearer: Regex::new(bearer).expect("the bearer pattern is valid"),
    }
});

/// The outcome of checking one candidate.
enum Candidate {
    /// Mask `value`, relative to the candidate. Bytes of `class` may
    /// continue it in the next write.
    Mask {
        value: Range<usize>,
        class: ValueClass,
    },
    /// No match, and no later candidate before `skip` (relative to the
    /// candidate) can match either.
    Reject { skip: usize },
}

impl TokenRules {
    /// Checks the candidate at the start of `text`.
    fn check(&self, rule: Rule, text: &[u8]) -> Candidate {
        let no_match = Candidate::Reject { skip: 0 };
        match rule {
            Rule::Jwt => {
                // Every `eyJ` in the same run of base64url bytes fails too,
                // because the run ends at the same byte for all of them.
                // Skipping the run keeps long runs linear.
                let run_end = 3 + text[3..]
                    .iter()
                    .take_while(|&&byte| is_base64url(byte))
                    .count();
                if !text[run_end..].starts_with(b".eyJ") {
                    return Candidate::Reject { skip: run_end };
                }
                match self.jwt.find(text) {
                    Some(found) => Candidate::Mask {
                        value: found.range(),
                        class: ValueClass::Jwt,
                    },
                    None => Candidate::Reject { skip: run_end },
                }
            }
            Rule::Bearer => {
                let Some(found) = self.bearer.find(text) else {
                    return no_match;
                };
                let blanks = text[6..]
                    .iter()
                    .take_while(|&&byte| matches!(byte, b' ' | b'\t'))
                    .count();
                Candidate::Mask {
                    value: 6 + blanks..found.end(),
                    class: ValueClass::Bearer,
                }
            }
            Rule::Keyword => {
                let Some(separator) = may_start_assignment(text) else {
                    return no_match;
                };
                let Some(found) = self.keyword.find(text) else {
                    return no_match;
                };
                let value_start = separator
                    + 1
                    + text[separator + 1..]
                        .iter()
                        .take_while(|&&byte| matches!(byte, b' ' | b'\t'))
                        .count();
                let (value, class) = match text[value_start] {
                    quote @ (b'"' | b'\'') => {
                        let closed =
                            found.end() > value_start + 1 && text[found.end() - 1] == quote;
                        let class = if quote == b'"' {
                            ValueClass::DoubleQuoted
                        } else {
                            ValueClass::SingleQuoted
                        };
                        (value_start + 1..found.end() - usize::from(closed), class)
                    }
                    _ => (value_start..found.end(), ValueClass::Unquoted),
                };
                Candidate::Mask { value, class }
            }
        }
    }
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-')
}

/// Returns the position of the `:` or `=` if `text` starts with a keyword,
/// key characters, an optional quote and blanks, followed by `:` or `=`.
///
/// This is the start of the keyword regex, written out because most
/// candidates (`api` in a URL, `token` in prose) fail it within a few bytes,
/// where a regex search costs far more per call.
fn may_start_assignment(text: &[u8]) -> Option<usize> {
    let keyword = KEYWORDS.iter().find(|keyword| {
        text.get(..keyword.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(keyword))
    })?;
    let mut at = keyword.len();
    if matches!(text.get(at), Some(b'_' | b'.' | b'-')) {
        let is_key_byte =
            |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
        at += text[at..]
            .iter()
            .take(MAX_KEY_SUFFIX)
            .take_while(|&&byte| is_key_byte(byte))
            .count();
    }
    if matches!(text.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at += text[at..]
        .iter()
        .take_while(|&&byte| matches!(byte, b' ' | b'\t'))
        .count();
    matches!(text.get(at), Some(b':' | b'=')).then_some(at)
}

/// Masks token values in `out[start..]`, in place.
fn mask_tokens(state: &mut ScrubState, out: &mut Vec<u8>, start: usize) {
    if let Some(class) = state.open_value {
        let continued = out[start..]
            .iter()
            .take_while(|&&byte| class.contains(byte))
            .count();
        // The value was already replaced by the mask, so its rest is dropped.
        out.drain(start..start + continued);
        if start < out.len() {
            state.open_value = None;
        }
    }

    // Values are collected first so that text without any stays untouched.
    // The vector allocates only when a value is found.
    let rules = &*TOKEN_RULES;
    let text = &out[start..];
    let mut values: Vec<Range<usize>> = Vec::new();
    let mut at = 0;
    while let Some(candidate) = rules.candidates.find_at(text, at) {
        let rule = rules.rule_of_candidate[candidate.pattern().as_usize()];
        match rules.check(rule, &text[candidate.start()..]) {
            Candidate::Mask { value, class } => {
                let value = candidate.start() + value.start..candidate.start() + value.end;
                if value.end == text.len() {
                    state.open_value = Some(class);
                }
                // Candidates inside the masked value, or between the
                // keyword and the value, are part of this match.
                at = value.end.max(candidate.end());
                values.push(value);
            }
            Candidate::Reject { skip } => at = (candidate.start() + skip).max(candidate.end()),
        }
    }
    if values.is_empty() {
        return;
    }

    let text = out.split_off(start);
    let mut copied = 0;
    for value in values {
        out.extend_from_slice(&text[copied..value.start]);
        out.extend_from_slice(MASK);
        copied = value.end;
    }
    out.extend_from_slice(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber_with(secrets: &[&str]) -> Arc<Scrubber> {
        let scrubber = Scrubber::new();
        for secret in secrets {
            scrubber.add_secret(secret.as_bytes());
        }
        scrubber
    }

    /// Feeds `pieces` as separate writes of one stream and returns the
    /// concatenated output, including what `finish_stream` releases.
    fn scrub_pieces(scrubber: &Scrubber, pieces: &[&[u8]]) -> Vec<u8> {
        let mut state = ScrubState::default();
        let mut out = Vec::new();
        for piece in pieces {
            scrubber.scrub_stream(&mut state, piece, &mut out);
        }
        scrubber.finish_stream(&mut state, &mut out);
        out
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn secret_written_whole_is_masked() {
        let scrubber = scrubber_with(&["hunter22"]);

        assert_eq!(scrubber.scrub_text("pw is hunter22!"), "pw is ***!");
        assert_eq!(scrubber.scrub_text("hunter22hunter22"), "******");
        assert_eq!(scrubber.scrub_text("hunter2"), "hunter2");
    }

    #[test]
    fn secret_split_at_every_position_is_masked() {
        let scrubber = scrubber_with(&["s3cr3t-value"]);
        let line = b"login with s3cr3t-value now\n";

        for split in 0..=line.len() {
            let (first, second) = line.split_at(split);
            let out = scrub_pieces(&scrubber, &[first, second]);
            assert_eq!(text(&out), "login with *** now\n", "split at {split}");
        }
    }

    #[test]
    fn secret_split_across_three_writes_is_masked() {
        let scrubber = scrubber_with(&["abcdefghij"]);
        let line = b"x abcdefghij y";

        for first in 0..=line.len() {
            for second in first..=line.len() {
                let pieces: [&[u8]; 3] = [&line[..first], &line[first..second], &line[second..]];
                let out = scrub_pieces(&scrubber, &pieces);
                assert_eq!(text(&out), "x *** y", "splits at {first} and {second}");
            }
        }
    }

    #[test]
    fn base64_and_url_forms_are_masked() {
        let scrubber = scrubber_with(&["p@ss w/rd+é!"]);
        let padded = STANDARD.encode("p@ss w/rd+é!");
        let unpadded = STANDARD_NO_PAD.encode("p@ss w/rd+é!");
        assert_ne!(padded, unpadded, "the test secret must need padding");

        assert_eq!(
            scrubber.scrub_text(&format!("auth {padded} end")),
            "auth *** end"
        );
        assert_eq!(
            scrubber.scrub_text(&format!("auth {unpadded}x")),
            "auth ***x"
        );
        assert_eq!(
            scrubber.scrub_text("https://h/?q=p%40ss%20w%2Frd%2B%C3%A9%21&x=1"),
            "https://h/?q=***&x=1"
        );
    }

    #[test]
    fn encoded_forms_split_across_writes_are_masked() {
        let scrubber = scrubber_with(&["correct horse"]);
        let line = format!(
            "b64={} url=correct%20horse\n",
            STANDARD.encode("correct horse")
        );
        let line = line.as_bytes();

        for split in 0..=line.len() {
            let (first, second) = line.split_at(split);
            let out = scrub_pieces(&scrubber, &[first, second]);
            assert_eq!(text(&out), "b64=*** url=***\n", "split at {split}");
        }
    }

    #[test]
    fn overlapping_secrets_are_masked_whole() {
        // "abcdef" and "defghi" overlap in "def"; "abc" is a prefix of the
        // first one.
        let scrubber = scrubber_with(&["abcdef", "defghi", "abc"]);

        assert_eq!(scrubber.scrub_text("abcdefghi"), "***ghi");
        assert_eq!(scrubber.scrub_text("xxdefghi"), "xx***");
        assert_eq!(scrubber.scrub_text("abcx"), "***x");

        let line = b"[abcdefghi] [abcdex] [abc]";
        let whole = scrubber.scrub_bytes(line);
        assert_eq!(text(&whole), "[***ghi] [***dex] [***]");
        for split in 0..=line.len() {
            let (first, second) = line.split_at(split);
            let out = scrub_pieces(&scrubber, &[first, second]);
            assert_eq!(text(&out), text(&whole), "split at {split}");
        }
    }

    #[test]
    fn random_splits_match_scrubbing_the_whole_text() {
        use rand::{Rng, SeedableRng};

        // A four-letter alphabet makes secrets overlap and repeat often; it
        // has no letters of the token patterns, which are only best effort
        // across writes.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let random_text = |rng: &mut rand::rngs::StdRng, len: usize| -> Vec<u8> {
            (0..len).map(|_| b"wxyz"[rng.random_range(0..4)]).collect()
        };
        for round in 0..300 {
            let scrubber = Scrubber::new();
            for _ in 0..rng.random_range(1..4) {
                let len = rng.random_range(1..6);
                scrubber.add_secret(&random_text(&mut rng, len));
            }
            let len = rng.random_range(0..60);
            let input = random_text(&mut rng, len);
            let expected = scrubber.scrub_bytes(&input);

            let mut pieces = Vec::new();
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(rng.random_range(0..=rest.len().min(7)));
                pieces.push(piece);
                rest = tail;
            }
            let out = scrub_pieces(&scrubber, &pieces);
            assert_eq!(
                text(&out),
                text(&expected),
                "round {round}, pieces {pieces:?}"
            );
        }
    }

    #[test]
    fn many_secrets_use_the_automaton_and_mask_alike() {
        // More than 64 forms do not fit the SIMD searcher.
        let secrets: Vec<String> = (0..30).map(|i| format!("secret-number-{i:02}")).collect();
        let scrubber = Scrubber::new();
        for secret in &secrets {
            scrubber.add_secret(secret.as_bytes());
        }
        let matcher = scrubber.snapshot();
        assert!(matches!(matcher.finder, Some(LiteralFinder::Automaton(_))));

        let line = b"a secret-number-07 b secret-number-29\n";
        for split in 0..=line.len() {
            let (first, second) = line.split_at(split);
            let out = scrub_pieces(&scrubber, &[first, second]);
            assert_eq!(text(&out), "a *** b ***\n", "split at {split}");
        }
    }

    #[test]
    fn few_secrets_use_the_packed_searcher() {
        let scrubber = scrubber_with(&["abcdef"]);

        let matcher = scrubber.snapshot();

        if cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("ssse3") {
            assert!(matches!(matcher.finder, Some(LiteralFinder::Packed(_))));
        }
    }

    #[test]
    fn assignment_check_accepts_everything_the_keyword_regex_does() {
        use rand::{Rng, SeedableRng};

        let pieces: &[&str] = &[
            "token", "api", "key", "_key", "-", "_", ".", "x", "T", "\"", "'", " ", "\t", ":", "=",
            "passwd", "&",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let rules = &*TOKEN_RULES;
        for _ in 0..20_000 {
            let count = rng.random_range(1..8);
            let text: String = (0..count)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let text = text.as_bytes();
            if rules.keyword.is_match(text) {
                assert!(
                    may_start_assignment(text).is_some(),
                    "text {:?}",
                    self::text(text)
                );
                let Candidate::Mask { value, .. } = rules.check(Rule::Keyword, text) else {
                    panic!(
                        "regex matched but the check rejected {:?}",
                        self::text(text)
                    );
                };
                assert!(!value.is_empty(), "empty value in {:?}", self::text(text));
            }
        }
    }

    #[test]
    fn candidate_runs_scan_in_linear_time() {
        let scrubber = Scrubber::new();
        let runs = [
            "eyJ".repeat(300_000),
            "token".repeat(200_000),
            "token_".repeat(200_000),
        ];

        for run in runs {
            let started = std::time::Instant::now();
            let out = scrubber.scrub_bytes(run.as_bytes());
            assert_eq!(out.len(), run.len());
            // Quadratic scanning takes minutes here; linear takes milliseconds.
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
        }
    }

    #[test]
    fn longer_secret_beats_its_prefix() {
        let scrubber = scrubber_with(&["abc", "abcdef"]);

        let out = scrub_pieces(&scrubber, &[b"xx abc", b"def yy"]);

        assert_eq!(text(&out), "xx *** yy");
    }

    #[test]
    fn output_without_secret_prefix_is_released_at_once() {
        let scrubber = scrubber_with(&["zebra-secret"]);
        let mut state = ScrubState::default();
        let mut out = Vec::new();

        scrubber.scrub_stream(&mut state, b"progress 50% (no newline)", &mut out);

        assert_eq!(text(&out), "progress 50% (no newline)");
        assert_eq!(state.held_len(), 0);
    }

    #[test]
    fn only_secret_prefix_is_held_back() {
        let scrubber = scrubber_with(&["zebra-secret"]);
        let mut state = ScrubState::default();
        let mut out = Vec::new();

        scrubber.scrub_stream(&mut state, b"look: zebra-se", &mut out);
        assert_eq!(text(&out), "look: ");
        assert_eq!(state.held_len(), "zebra-se".len());

        scrubber.finish_stream(&mut state, &mut out);
        assert_eq!(text(&out), "look: zebra-se");
        assert_eq!(state.held_len(), 0);
    }

    #[test]
    fn short_secret_masks_every_occurrence() {
        let scrubber = scrubber_with(&["a"]);

        assert_eq!(scrubber.scrub_text("banana"), "b***n***n***");
    }

    #[test]
    fn empty_secret_is_ignored() {
        let scrubber = scrubber_with(&[""]);

        assert_eq!(scrubber.scrub_text("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn secret_added_later_masks_later_writes() {
        let scrubber = Scrubber::new();
        let mut state = ScrubState::default();
        let mut out = Vec::new();

        scrubber.scrub_stream(&mut state, b"early ab12cd34\n", &mut out);
        scrubber.add_secret(b"ab12cd34");
        scrubber.scrub_stream(&mut state, b"late ab12cd34\n", &mut out);

        assert_eq!(text(&out), "early ab12cd34\nlate ***\n");
    }

    #[test]
    fn jwt_is_masked_whole() {
        let scrubber = Scrubber::new();
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

        assert_eq!(
            scrubber.scrub_text(&format!("token {jwt} ok")),
            "token *** ok"
        );
        assert_eq!(
            scrubber.scrub_text("eyJ is not a token"),
            "eyJ is not a token"
        );
    }

    #[test]
    fn keyword_values_are_masked() {
        let scrubber = Scrubber::new();
        let cases = [
            ("password=hunter2 next", "password=*** next"),
            ("PASSWORD: hunter2", "PASSWORD: ***"),
            ("passwd=x1", "passwd=***"),
            ("Secret = 'a b c'", "Secret = '***'"),
            (
                r#"{"token": "abc def", "n": 1}"#,
                r#"{"token": "***", "n": 1}"#,
            ),
            (
                "curl 'https://h/?api_key=k123&x=1'",
                "curl 'https://h/?api_key=***&x=1'",
            ),
            ("API-KEY:k123", "API-KEY:***"),
            ("export GITHUB_TOKEN=ghp_abc", "export GITHUB_TOKEN=***"),
            ("client_secret=s1;", "client_secret=***"),
            (
                "Authorization: Bearer abc.def-ghi",
                "Authorization: Bearer ***",
            ),
            ("the token was rejected", "the token was rejected"),
            ("aws_secret_access_key = abc", "aws_secret_access_key = ***"),
            ("clientSecret: abc", "clientSecret: ***"),
            ("tokens=5 passwords: 3", "tokens=5 passwords: 3"),
            (
                "GET /api/v1/jobs api::server",
                "GET /api/v1/jobs api::server",
            ),
            ("password=\"\"", "password=\"\""),
        ];

        for (input, expected) in cases {
            assert_eq!(scrubber.scrub_text(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn cut_keyword_value_is_masked() {
        let scrubber = Scrubber::new();

        let out = scrub_pieces(&scrubber, &[b"password=hun", b"ter2 rest\n"]);
        assert_eq!(text(&out), "password=*** rest\n");

        let out = scrub_pieces(&scrubber, &[b"token=\"ab", b"cd\" rest"]);
        assert_eq!(text(&out), "token=\"***\" rest");
    }

    #[test]
    fn invalid_utf8_and_control_bytes_pass_through() {
        let scrubber = scrubber_with(&["topsecret"]);
        let input = b"\xff\xfe\r50%\r\x1b[31mred\x1b[0m topsecret \xc3";

        let out = scrubber.scrub_bytes(input);

        assert_eq!(out, b"\xff\xfe\r50%\r\x1b[31mred\x1b[0m *** \xc3".to_vec());
    }

    #[test]
    fn secret_forms_match_python_quote() {
        let forms = secret_forms("a b/c~é".as_bytes());

        assert_eq!(forms[3].as_slice(), b"a%20b%2Fc~%C3%A9");
        assert_eq!(forms[1].as_slice(), b"YSBiL2N+w6k=");
        assert_eq!(forms[2].as_slice(), b"YSBiL2N+w6k");
    }
}
