//! The batch encoding, version 1, documented in `wit/aggregation.wit` (`process`).
//!
//! Fixed-width numbers first, then five length-prefixed strings, so that a plugin reads every
//! field in place without allocating.

use std::fmt;

/// The first four bytes of every batch.
pub const MAGIC: &[u8; 4] = b"ADB1";

/// Longest string a batch can carry (its length is a `u16`). The host rejects longer fields
/// before they reach a batch.
pub const MAX_STR_LEN: usize = u16::MAX as usize;

/// The kind of an event in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Impression = 0,
    Click = 1,
}

/// One event as a plugin sees it, borrowed from the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event<'a> {
    pub kind: Kind,
    /// Start of the window the event belongs to, epoch ms.
    pub window_start_ms: i64,
    /// The event's own time, epoch ms.
    pub event_time_ms: i64,
    /// For a click the matched impression's time; for an impression its own time.
    pub impression_time_ms: i64,
    /// The impression's cost (for a click: the clicked impression's cost).
    pub cost: f64,
    pub campaign_id: &'a str,
    pub ad_id: &'a str,
    pub device_type: &'a str,
    pub browser: &'a str,
    pub user_id: &'a str,
}

/// Why a byte string is not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    BadMagic,
    Truncated { event: u32 },
    BadKind { event: u32, kind: u8 },
    NotUtf8 { event: u32 },
    TrailingBytes,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::BadMagic => write!(f, "batch does not start with {MAGIC:?}"),
            BatchError::Truncated { event } => write!(f, "batch truncated in event {event}"),
            BatchError::BadKind { event, kind } => {
                write!(f, "event {event} has unknown kind {kind}")
            }
            BatchError::NotUtf8 { event } => {
                write!(f, "event {event} has a string that is not UTF-8")
            }
            BatchError::TrailingBytes => write!(f, "batch has bytes after its last event"),
        }
    }
}

impl std::error::Error for BatchError {}

/// Builds a batch in a reusable buffer.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&0u32.to_le_bytes());
        BatchWriter { buf, count: 0 }
    }

    /// Appends one event. Strings longer than [`MAX_STR_LEN`] bytes are cut at that length
    /// (the host never passes one: it dead-letters such messages first).
    pub fn push(&mut self, e: &Event<'_>) {
        self.buf.push(e.kind as u8);
        self.buf.extend_from_slice(&e.window_start_ms.to_le_bytes());
        self.buf.extend_from_slice(&e.event_time_ms.to_le_bytes());
        self.buf.extend_from_slice(&e.impression_time_ms.to_le_bytes());
        self.buf.extend_from_slice(&e.cost.to_le_bytes());
        for s in [e.campaign_id, e.ad_id, e.device_type, e.browser, e.user_id] {
            let bytes = &s.as_bytes()[..s.len().min(MAX_STR_LEN)];
            self.buf.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(bytes);
        }
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded batch so far.
    pub fn bytes(&mut self) -> &[u8] {
        self.buf[4..8].copy_from_slice(&self.count.to_le_bytes());
        &self.buf
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.truncate(8);
        self.count = 0;
    }
}

/// Reads the events of a batch in order, without copying.
pub struct BatchReader<'a> {
    rest: &'a [u8],
    remaining: u32,
    index: u32,
}

impl<'a> BatchReader<'a> {
    pub fn new(batch: &'a [u8]) -> Result<Self, BatchError> {
        if batch.len() < 8 || &batch[..4] != MAGIC {
            return Err(BatchError::BadMagic);
        }
        let count = u32::from_le_bytes(batch[4..8].try_into().expect("slice of 4 bytes"));
        Ok(BatchReader { rest: &batch[8..], remaining: count, index: 0 })
    }

    /// Number of events not read yet.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.rest.len() < n {
            return Err(BatchError::Truncated { event: self.index });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'a str, BatchError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("slice of 2 bytes"));
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes).map_err(|_| BatchError::NotUtf8 { event: self.index })
    }

    /// The five strings of an event. UTF-8 is checked once over all of them (length prefixes
    /// included) rather than string by string, which is most of the cost of reading an event;
    /// the rare region that fails that check, or splits a character at a prefix, is read
    /// string by string for a precise error.
    fn strs(&mut self) -> Result<[&'a str; 5], BatchError> {
        let rest = self.rest;
        let mut ends = [0usize; 5];
        let mut at = 0;
        for end in &mut ends {
            let Some(len) = rest.get(at..at + 2) else { break };
            at += 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
            *end = at;
        }
        // All five prefixes read (the first end is at least 2 then), and their strings there.
        let Some(region) = rest.get(..at).filter(|_| ends[0] != 0 && ends[4] == at) else {
            return Ok([self.str()?, self.str()?, self.str()?, self.str()?, self.str()?]);
        };
        // The usual case, ASCII (ids and labels are): then every sub-slice is UTF-8 and no
        // character can be split, which is cheaper to know than to check string by string.
        if crate::bytes::is_ascii(region) {
            let mut from = 0;
            let strs = ends.map(|end| {
                let bytes = &region[from + 2..end];
                from = end;
                // SAFETY: `bytes` is ASCII (checked above for all of `region`), so valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            });
            self.rest = &rest[at..];
            return Ok(strs);
        }
        if let Ok(text) = std::str::from_utf8(region) {
            let mut from = 0;
            let strs = ends.map(|end| {
                let s = text.get(from + 2..end);
                from = end;
                s
            });
            if let [Some(a), Some(b), Some(c), Some(d), Some(e)] = strs {
                self.rest = &rest[at..];
                return Ok([a, b, c, d, e]);
            }
        }
        Ok([self.str()?, self.str()?, self.str()?, self.str()?, self.str()?])
    }

    fn event(&mut self) -> Result<Event<'a>, BatchError> {
        // The fixed-width part, one bounds check for all of it.
        let head: &[u8; 33] = self.take(33)?.try_into().expect("33 bytes");
        let kind = match head[0] {
            0 => Kind::Impression,
            1 => Kind::Click,
            other => {
                return Err(BatchError::BadKind { event: self.index, kind: other });
            }
        };
        let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
        let (window_start_ms, event_time_ms, impression_time_ms) = (word(1) as i64, word(9) as i64, word(17) as i64);
        let cost = f64::from_bits(word(25));
        let [campaign_id, ad_id, device_type, browser, user_id] = self.strs()?;
        Ok(Event {
            kind,
            window_start_ms,
            event_time_ms,
            impression_time_ms,
            cost,
            campaign_id,
            ad_id,
            device_type,
            browser,
            user_id,
        })
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<Event<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return (!self.rest.is_empty()).then(|| {
                self.rest = &[];
                Err(BatchError::TrailingBytes)
            });
        }
        let event = self.event();
        self.index += 1;
        self.remaining = if event.is_ok() { self.remaining - 1 } else { 0 };
        if event.is_err() {
            self.rest = &[];
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind, user: &str) -> Event<'_> {
        Event {
            kind,
            window_start_ms: 60_000,
            event_time_ms: 61_234,
            impression_time_ms: 61_000,
            cost: 0.0125,
            campaign_id: "c17",
            ad_id: "a17-3",
            device_type: "mobile",
            browser: "firefox",
            user_id: user,
        }
    }

    #[test]
    fn round_trips_events() {
        let mut w = BatchWriter::new();
        let events = [sample(Kind::Impression, "u1"), sample(Kind::Click, "ü-ñ"), sample(Kind::Impression, "")];
        for e in &events {
            w.push(e);
        }
        let read: Vec<_> = BatchReader::new(w.bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, events);
        w.clear();
        assert_eq!(BatchReader::new(w.bytes()).unwrap().count(), 0);
    }

    #[test]
    fn rejects_damaged_batches() {
        assert_eq!(BatchReader::new(b"XXXX\0\0\0\0").err(), Some(BatchError::BadMagic));
        let mut w = BatchWriter::new();
        w.push(&sample(Kind::Click, "u1"));
        let bytes = w.bytes().to_vec();
        let cut = &bytes[..bytes.len() - 1];
        let errors: Vec<_> = BatchReader::new(cut).unwrap().filter_map(Result::err).collect();
        assert_eq!(errors, [BatchError::Truncated { event: 0 }]);
        let mut extra = bytes.clone();
        extra.push(0);
        let last = BatchReader::new(&extra).unwrap().last().unwrap();
        assert_eq!(last, Err(BatchError::TrailingBytes));
        let mut not_utf8 = bytes.clone();
        let user_at = not_utf8.len() - 2;
        not_utf8[user_at] = 0xff;
        let first = BatchReader::new(&not_utf8).unwrap().next().unwrap();
        assert_eq!(first, Err(BatchError::NotUtf8 { event: 0 }));
        // Cut anywhere, even right after an event's fixed part, a batch is an error, never a panic.
        for len in 8..bytes.len() {
            let errors: Vec<_> = BatchReader::new(&bytes[..len]).unwrap().filter_map(Result::err).collect();
            assert_eq!(errors, [BatchError::Truncated { event: 0 }], "cut at {len}");
        }
        let mut bad_kind = bytes;
        bad_kind[8] = 9;
        let first = BatchReader::new(&bad_kind).unwrap().next().unwrap();
        assert_eq!(first, Err(BatchError::BadKind { event: 0, kind: 9 }));
    }

    #[test]
    fn a_character_split_by_a_length_prefix_is_not_utf8() {
        // The ad id is 169 bytes long, so its prefix starts with 0xA9; the campaign id's last
        // byte becomes 0xC3, and the two make a valid "é" across the boundary.
        let ad = "a".repeat(169);
        let mut w = BatchWriter::new();
        w.push(&Event { ad_id: &ad, ..sample(Kind::Impression, "u1") });
        let mut bytes = w.bytes().to_vec();
        let campaign_last = 8 + 33 + 2 + 2;
        assert_eq!(&bytes[campaign_last - 2..campaign_last + 3], b"c17\xa9\x00");
        bytes[campaign_last] = 0xc3;
        let first = BatchReader::new(&bytes).unwrap().next().unwrap();
        assert_eq!(first, Err(BatchError::NotUtf8 { event: 0 }));
    }
}
