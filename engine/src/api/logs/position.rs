//! Positions in a job's logs that clients hand back: the `cursor` of a paged
//! read, and the event id of the stream of every log of a job.
//!
//! Both are opaque to clients. A cursor names one log and an offset, because
//! a paged read goes through the logs one after the other. The stream of
//! every log sends the logs' chunks interleaved as they are written, so its
//! event id records how far it got in each log.

use std::ops::RangeInclusive;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::logs::LogKey;

/// Start of the next page of a whole job's or task's logs: `offset` in the
/// log `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCursor {
    pub key: LogKey,
    pub offset: u64,
}

/// A cursor or event id that this server did not send.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidPosition;

impl PageCursor {
    /// `<log stem>:<offset>` in unpadded URL-safe base64, such as
    /// `step-12:1048576`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.key.stem(), self.offset))
    }

    pub fn decode(cursor: &str) -> Result<PageCursor, InvalidPosition> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| InvalidPosition)?;
        let text = String::from_utf8(bytes).map_err(|_| InvalidPosition)?;
        let (stem, offset) = text.split_once(':').ok_or(InvalidPosition)?;
        Ok(PageCursor {
            key: LogKey::from_stem(stem).ok_or(InvalidPosition)?,
            offset: parse_number(offset)?,
        })
    }
}

/// How far the stream of every log of a job got.
///
/// Written as `<complete>/<partial>`. `complete` lists the logs that are
/// final and were sent to their end: `c` for the coordinator's log, and
/// step ids or ranges `first-last` of them. `partial` lists the offset of
/// the next byte of each log partly sent, as `c:<offset>` or
/// `<step id>:<offset>`. A log in neither list starts at byte 0. For
/// example, `c,12-40/41:88,43:1024`.
///
/// A range covers the job's steps whose ids lie in it. Step ids grow in the
/// order steps are recorded. So a step recorded after a range was written
/// has a larger id than the range's end and never falls inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPosition {
    pub coordinator_complete: bool,
    pub complete_steps: Vec<RangeInclusive<i64>>,
    pub partial: Vec<(LogKey, u64)>,
}

impl StreamPosition {
    /// Returns whether `key` is listed as complete.
    pub fn is_complete(&self, key: LogKey) -> bool {
        match key {
            LogKey::Coordinator => self.coordinator_complete,
            LogKey::Step(id) => self.complete_steps.iter().any(|range| range.contains(&id)),
        }
    }

    pub fn encode(&self) -> String {
        let mut complete = Vec::new();
        if self.coordinator_complete {
            complete.push("c".to_owned());
        }
        for range in &self.complete_steps {
            if range.start() == range.end() {
                complete.push(range.start().to_string());
            } else {
                complete.push(format!("{}-{}", range.start(), range.end()));
            }
        }
        let partial: Vec<String> = self
            .partial
            .iter()
            .map(|(key, offset)| format!("{}:{offset}", key_text(*key)))
            .collect();
        format!("{}/{}", complete.join(","), partial.join(","))
    }

    pub fn decode(text: &str) -> Result<StreamPosition, InvalidPosition> {
        let (complete, partial) = text.trim().split_once('/').ok_or(InvalidPosition)?;
        let mut position = StreamPosition::default();
        for item in complete.split(',').filter(|item| !item.is_empty()) {
            if item == "c" {
                position.coordinator_complete = true;
                continue;
            }
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let (first, last) = (parse_step_id(first)?, parse_step_id(last)?);
            if first > last {
                return Err(InvalidPosition);
            }
            position.complete_steps.push(first..=last);
        }
        for entry in partial.split(',').filter(|entry| !entry.is_empty()) {
            let (key, offset) = entry.split_once(':').ok_or(InvalidPosition)?;
            let key = match key {
                "c" => LogKey::Coordinator,
                id => LogKey::Step(parse_step_id(id)?),
            };
            if position.is_complete(key) || position.partial.iter().any(|(seen, _)| *seen == key) {
                return Err(InvalidPosition);
            }
            position.partial.push((key, parse_number(offset)?));
        }
        Ok(position)
    }
}

fn key_text(key: LogKey) -> String {
    match key {
        LogKey::Coordinator => "c".to_owned(),
        LogKey::Step(id) => id.to_string(),
    }
}

/// Parses digits only: `u64::from_str` would also take a leading `+`.
fn parse_number(text: &str) -> Result<u64, InvalidPosition> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(InvalidPosition);
    }
    text.parse().map_err(|_| InvalidPosition)
}

fn parse_step_id(text: &str) -> Result<i64, InvalidPosition> {
    i64::try_from(parse_number(text)?).map_err(|_| InvalidPosition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_cursor_round_trips() {
        for cursor in [
            PageCursor {
                key: LogKey::Coordinator,
                offset: 0,
            },
            PageCursor {
                key: LogKey::Step(12),
                offset: 16 << 20,
            },
        ] {
            assert_eq!(PageCursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn page_cursor_that_was_not_sent_is_invalid() {
        let forged = |text: &str| URL_SAFE_NO_PAD.encode(text);

        for cursor in [
            "not a cursor".to_owned(),
            forged("step-12"),
            forged("step-x:10"),
            forged("step-012:10"),
            forged("coordinator:-1"),
            forged("coordinator:+1"),
        ] {
            assert_eq!(
                PageCursor::decode(&cursor),
                Err(InvalidPosition),
                "{cursor}"
            );
        }
    }

    #[test]
    fn stream_position_round_trips() {
        let position = StreamPosition {
            coordinator_complete: true,
            complete_steps: vec![12..=40, 42..=42],
            partial: vec![(LogKey::Step(41), 88), (LogKey::Step(43), 1024)],
        };

        let text = position.encode();

        assert_eq!(text, "c,12-40,42/41:88,43:1024");
        assert_eq!(StreamPosition::decode(&text), Ok(position));
    }

    #[test]
    fn stream_position_lists_coordinator_offset() {
        let position = StreamPosition::decode("/c:5,7:9").unwrap();

        assert!(!position.coordinator_complete);
        assert!(position.complete_steps.is_empty());
        assert_eq!(
            position.partial,
            [(LogKey::Coordinator, 5), (LogKey::Step(7), 9)]
        );
        assert!(!position.is_complete(LogKey::Step(3)));
    }

    #[test]
    fn stream_position_that_was_not_sent_is_invalid() {
        for text in [
            "",
            "12",
            "40-12/",
            "/c",
            "/c:x",
            "c/c:5",
            "12-40/13:5",
            "/7:1,7:2",
            "/-3:1",
            "x/",
        ] {
            assert_eq!(
                StreamPosition::decode(text),
                Err(InvalidPosition),
                "{text:?}"
            );
        }
    }
}
