//! Server-sent events: an incremental parser that never buffers more than one event, and the
//! encoder. Follows the WHATWG event-stream rules (LF, CRLF or CR line ends; `data` lines joined
//! with LF; comments ignored; an event is dispatched on a blank line).

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Feed bytes as they arrive; take complete events out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// A CR ended the last line: a following LF belongs to it.
    skip_lf: bool,
    max_event_bytes: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("server-sent event larger than {0} bytes")]
    TooLarge(usize),
    #[error("server-sent event is not valid UTF-8")]
    NotUtf8,
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_limit(16 * 1024 * 1024)
    }

    pub fn with_limit(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            ..Default::default()
        }
    }

    /// Appends `chunk` and returns every event it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        self.push_into(chunk, &mut out)?;
        Ok(out)
    }

    /// As [`SseParser::push`], appending the completed events to `out` (no allocation per
    /// chunk for callers that keep a queue).
    pub fn push_into(
        &mut self,
        chunk: &[u8],
        out: &mut impl Extend<SseEvent>,
    ) -> Result<(), SseError> {
        let mut input = chunk;
        if self.skip_lf && !input.is_empty() {
            if input[0] == b'\n' {
                input = &input[1..];
            }
            self.skip_lf = false;
        }
        self.buf.extend_from_slice(input);
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', &self.buf) {
            let line = self.buf.split_to(pos + 1);
            let ended_by_cr = line[pos] == b'\r';
            if ended_by_cr {
                if self.buf.first() == Some(&b'\n') {
                    let _ = self.buf.split_to(1);
                } else if self.buf.is_empty() {
                    self.skip_lf = true;
                }
            }
            let line = &line[..pos];
            if let Some(ev) = self.line(line)? {
                out.extend(Some(ev));
            }
        }
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    /// Bytes held that did not end in a line break (a stream cut mid-event leaves some).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.has_data
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return Ok(None);
            }
            let ev = SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            };
            self.has_data = false;
            return Ok(Some(ev));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event_bytes {
                    return Err(SseError::TooLarge(self.max_event_bytes));
                }
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        Ok(None)
    }
}

/// `data: {payload}\n\n`
pub fn data_event(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

/// `event: {name}\ndata: {payload}\n\n`
pub fn named_event(name: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + name.len() + 16);
    b.extend_from_slice(b"event: ");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\ndata: ");
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks
            .iter()
            .flat_map(|c| p.push(c).unwrap_or_default())
            .collect()
    }

    #[test]
    fn parses_named_and_multiline_events() {
        let evs = all(&[b"event: ping\ndata: a\ndata: b\n\n: comment\ndata: c\r\n\r\n"]);
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("ping".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "c".into()
                },
            ]
        );
    }

    #[test]
    fn cr_split_across_chunks_is_one_line_end() {
        let evs = all(&[b"data: x\r", b"\ndata: y\r", b"\r\n"]);
        assert_eq!(
            evs,
            vec![SseEvent {
                event: None,
                data: "x\ny".into()
            }]
        );
    }

    #[test]
    fn unterminated_event_is_reported_partial() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"a\":").unwrap_or_default().is_empty());
        assert!(p.has_partial());
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::with_limit(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(SseError::TooLarge(8)));
    }

    proptest! {
        // However the bytes are split, the same events come out.
        #[test]
        fn chunking_does_not_change_events(
            datas in proptest::collection::vec("[a-z0-9 {}\":,]{0,20}", 1..6),
            cuts in proptest::collection::vec(0usize..200, 0..10),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = datas.iter().map(|d| format!("data: {d}{nl}{nl}")).collect();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = SseParser::new();
            let mut evs = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                evs.extend(p.push(&bytes[last..c]).unwrap_or_default());
                last = c;
            }
            let got: Vec<String> = evs.into_iter().map(|e| e.data).collect();
            prop_assert_eq!(got, datas);
        }
    }
}
