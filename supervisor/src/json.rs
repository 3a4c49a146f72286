//! A small JSON reader for the step request, since the supervisor uses no
//! crates besides libc. It reads RFC 8259 JSON into [`Value`], and numbers are
//! kept as `f64`, which is all the request needs.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

/// Invalid JSON: what was expected and the byte offset where it went wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub expected: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid JSON at byte {}: expected {}",
            self.offset, self.expected
        )
    }
}

/// Deepest nesting accepted, so that a hostile request cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// Parses `text` as one JSON value with nothing but whitespace after it.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        position: 0,
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position != parser.bytes.len() {
        return Err(parser.error("the end of the input"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &'static str) -> ParseError {
        ParseError {
            offset: self.position,
            expected,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.position += 1;
        }
    }

    fn eat(&mut self, literal: &str, expected: &'static str) -> Result<(), ParseError> {
        if self.bytes[self.position..].starts_with(literal.as_bytes()) {
            self.position += literal.len();
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("at most 64 levels of nesting"));
        }
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.eat("true", "`true`").map(|()| Value::Bool(true)),
            Some(b'f') => self.eat("false", "`false`").map(|()| Value::Bool(false)),
            Some(b'n') => self.eat("null", "`null`").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.position += 1;
        let mut members = BTreeMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("a member name"));
            }
            let name = self.string()?;
            self.skip_whitespace();
            self.eat(":", "`:`")?;
            let value = self.value(depth + 1)?;
            members.insert(name, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b'}') => {
                    self.position += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("`,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.position += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.position += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b']') => {
                    self.position += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("`,` or `]`")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.position;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.position += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.position])
            .expect("the scanned bytes are ASCII");
        text.parse::<f64>().map(Value::Number).map_err(|_| {
            self.position = start;
            self.error("a number")
        })
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.position += 1;
        let mut text = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("a closing `\"`"));
            };
            self.position += 1;
            match byte {
                b'"' => break,
                b'\\' => self.escape(&mut text)?,
                0x00..=0x1f => {
                    self.position -= 1;
                    return Err(self.error("an escaped control character"));
                }
                _ => text.push(byte),
            }
        }
        // The input is a `str` and escapes add valid UTF-8, so this holds.
        Ok(String::from_utf8(text).expect("a JSON string built from UTF-8 is UTF-8"))
    }

    fn escape(&mut self, text: &mut Vec<u8>) -> Result<(), ParseError> {
        let Some(byte) = self.peek() else {
            return Err(self.error("an escape character"));
        };
        self.position += 1;
        let decoded = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => {
                self.position -= 1;
                return Err(self.error("one of `\"\\/bfnrtu` after `\\`"));
            }
        };
        let mut buffer = [0; 4];
        text.extend_from_slice(decoded.encode_utf8(&mut buffer).as_bytes());
        Ok(())
    }

    /// Decodes `XXXX` after `\u`, joining a UTF-16 surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            self.eat("\\u", "the low half of a surrogate pair")?;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("the low half of a surrogate pair"));
            }
            let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            return char::from_u32(code).ok_or_else(|| self.error("a valid code point"));
        }
        char::from_u32(first).ok_or_else(|| self.error("a code point that is not a lone surrogate"))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .bytes
            .get(self.position..self.position + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u32::from_str_radix(digits, 16).ok())
            .ok_or_else(|| self.error("four hexadecimal digits"))?;
        self.position += 4;
        Ok(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_object() {
        let value = parse(r#" {"a": [1, -2.5e1, true, null], "b": {"c": "d"}} "#).unwrap();
        let Value::Object(members) = value else {
            panic!("not an object");
        };
        assert_eq!(
            members["a"],
            Value::Array(vec![
                Value::Number(1.0),
                Value::Number(-25.0),
                Value::Bool(true),
                Value::Null
            ])
        );
        let Value::Object(inner) = &members["b"] else {
            panic!("b is not an object");
        };
        assert_eq!(inner["c"], Value::String("d".into()));
    }

    #[test]
    fn decodes_escapes_and_surrogates() {
        let value = parse(r#""a\"b\\c\/\n\t\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(value, Value::String("a\"b\\c/\n\té😀".into()));
    }

    #[test]
    fn rejects_malformed_input_with_offset() {
        assert_eq!(parse("{\"a\" 1}").unwrap_err().offset, 5);
        assert_eq!(parse("[1,]").unwrap_err().expected, "a value");
        assert!(parse("\"unterminated").is_err());
        assert!(parse("\"raw\ncontrol\"").is_err());
        assert!(parse("\"\\ud800\"").is_err());
        assert!(parse("{} extra").is_err());
        assert!(parse(&"[".repeat(100)).is_err());
    }
}
