//! What tasks tell the merge stage, as bytes: the records of the partials topic.
//!
//! Three kinds of record, all from a task's owner, in the transaction that commits the task's
//! input offsets:
//!
//! - a **partial**: one task's share of one window for one plugin (see [`Partial`]). A share
//!   larger than the topic takes is cut into chunks, each a record of its own, sent one after
//!   the other in the same transaction; the merge puts them together again.
//! - a **progress** report: the task's watermark and whether it is idle. Every window that
//!   watermark closes has had its partials sent before it.
//! - **counts** for a window's completeness record (see [`super::complete`]): what the task adds
//!   to it, sent with its partials (duplicates, unattributed clicks) and after them (late events).
//!   A merge stage older than this kind logs each as a record it cannot read, and skips it: the
//!   results do not depend on it.
//!
//! ```text
//! record   = magic "ADX1" | kind: u8 (0 partial, 1 progress, 2 counts) | task: i32
//! partial  = window-start-ms: i64 | plugin | version | state-version: u32 | events: u64
//!          | share: u8 (0 state, 1 empty, 2 withheld) | chunk: u32 | chunks: u32 | bytes
//!            (the chunk of the state; the reason, for a withheld share)
//! progress = watermark: i64 | idle: u8
//! counts   = window-start-ms: i64 | late: u64 | duplicates: u64 | unattributed: u64
//! string   = len: u32 | UTF-8;  bytes = len: u32 | bytes     (integers little-endian)
//! ```

use std::collections::HashMap;

use super::complete::Counts;
use super::merge::{Partial, Share, TaskClock, TaskId};

const MAGIC: &[u8; 4] = b"ADX1";

/// A record of the partials topic, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// One chunk of a partial: `chunk` of `chunks`. A share that fits is chunk 0 of 1.
    Partial {
        partial: Partial,
        chunk: u32,
        chunks: u32,
    },
    Progress {
        task: TaskId,
        clock: TaskClock,
    },
    Counts {
        task: TaskId,
        window_start_ms: i64,
        counts: Counts,
    },
}

/// The key of a partial's records (and of no other record): one per task, window and plugin.
pub fn partial_key(p: &Partial) -> String {
    format!("w{}/t{}/{}", p.window_start_ms, p.task, p.plugin)
}

/// The key of a task's counts of a window.
pub fn counts_key(task: TaskId, window_start_ms: i64) -> String {
    format!("c{window_start_ms}/t{task}")
}

/// The key of a task's progress reports.
pub fn progress_key(task: TaskId) -> String {
    format!("t{task}")
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8, task: TaskId) -> Self {
        let mut w = Writer(Vec::with_capacity(64));
        w.0.extend_from_slice(MAGIC);
        w.0.push(kind);
        w.0.extend_from_slice(&task.to_le_bytes());
        w
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).expect("a chunk is far below 4 GiB"));
        self.0.extend_from_slice(b);
        self
    }
}

/// The records of `partial`, each at most `max_bytes` long (plus the plugin's name and
/// version): one, or one per chunk of a share larger than that.
pub fn encode_partial(partial: &Partial, max_bytes: usize) -> Vec<Vec<u8>> {
    let (kind, payload): (u8, &[u8]) = match &partial.share {
        Share::State(bytes) => (0, bytes),
        Share::Empty => (1, &[]),
        Share::Withheld(reason) => (2, reason.as_bytes()),
    };
    let chunk_bytes = max_bytes.max(1024);
    let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(chunk_bytes).collect() };
    let total = u32::try_from(chunks.len()).expect("a partial of fewer than 4G chunks");
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut w = Writer::new(0, partial.task);
            w.i64(partial.window_start_ms)
                .bytes(partial.plugin.as_bytes())
                .bytes(partial.version.as_bytes())
                .u32(partial.state_version)
                .u64(partial.events)
                .u8(kind)
                .u32(i as u32)
                .u32(total)
                .bytes(chunk);
            w.0
        })
        .collect()
}

pub fn encode_progress(task: TaskId, clock: TaskClock) -> Vec<u8> {
    let mut w = Writer::new(1, task);
    w.i64(clock.watermark).u8(u8::from(clock.idle));
    w.0
}

pub fn encode_counts(task: TaskId, window_start_ms: i64, counts: Counts) -> Vec<u8> {
    let mut w = Writer::new(2, task);
    w.i64(window_start_ms).u64(counts.late).u64(counts.duplicates).u64(counts.unattributed);
    w.0
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: {n} bytes expected, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_owned())
    }
}

pub fn decode(value: &[u8]) -> Result<Message, String> {
    let mut r = Reader(value);
    if r.take(4)? != MAGIC {
        return Err("not a record of this version of adstream (no ADX1 magic)".into());
    }
    let [kind] = r.array()?;
    let task = i32::from_le_bytes(r.array()?);
    let message = match kind {
        0 => {
            let window_start_ms = i64::from_le_bytes(r.array()?);
            let plugin = r.string()?;
            let version = r.string()?;
            let state_version = u32::from_le_bytes(r.array()?);
            let events = u64::from_le_bytes(r.array()?);
            let [share] = r.array()?;
            let chunk = u32::from_le_bytes(r.array()?);
            let chunks = u32::from_le_bytes(r.array()?);
            let payload = r.bytes()?;
            let share = match share {
                0 => Share::State(payload.to_vec()),
                1 => Share::Empty,
                2 => Share::Withheld(String::from_utf8_lossy(payload).into_owned()),
                other => return Err(format!("unknown share kind {other}")),
            };
            if chunk >= chunks {
                return Err(format!("chunk {chunk} of {chunks}"));
            }
            let partial = Partial { task, window_start_ms, plugin, version, state_version, events, share };
            Message::Partial { partial, chunk, chunks }
        }
        1 => {
            let watermark = i64::from_le_bytes(r.array()?);
            let [idle] = r.array()?;
            Message::Progress { task, clock: TaskClock { watermark, idle: idle != 0 } }
        }
        2 => {
            let window_start_ms = i64::from_le_bytes(r.array()?);
            let mut u64 = || r.array().map(u64::from_le_bytes);
            let counts = Counts { late: u64()?, duplicates: u64()?, unattributed: u64()? };
            Message::Counts { task, window_start_ms, counts }
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the record", r.0.len()));
    }
    Ok(message)
}

/// Puts chunked partials together again. Chunks of one partial come in order, in one
/// transaction; a chunk seen again (a replay) replaces the one held.
#[derive(Default)]
pub struct Assembler {
    /// (task, window, plugin) → the chunks so far.
    open: HashMap<(TaskId, i64, String), Chunks>,
}

/// A partial's chunks, by index; `None` until it arrives.
type Chunks = Vec<Option<Vec<u8>>>;

impl Assembler {
    /// The whole partial once its last chunk is in.
    pub fn add(&mut self, partial: Partial, chunk: u32, chunks: u32) -> Option<Partial> {
        if chunks == 1 {
            return Some(partial);
        }
        let key = (partial.task, partial.window_start_ms, partial.plugin.clone());
        let parts = self.open.entry(key.clone()).or_insert_with(|| vec![None; chunks as usize]);
        if parts.len() != chunks as usize {
            *parts = vec![None; chunks as usize];
        }
        let Share::State(bytes) = partial.share else { return Some(partial) };
        parts[chunk as usize] = Some(bytes);
        if parts.iter().any(Option::is_none) {
            return None;
        }
        let parts = self.open.remove(&key).expect("present");
        let state = parts.into_iter().flatten().flatten().collect();
        Some(Partial { share: Share::State(state), ..partial })
    }

    /// Partials still missing chunks (for the console).
    pub fn incomplete(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(share: Share) -> Partial {
        Partial {
            task: 3,
            window_start_ms: 1_795_946_400_000,
            plugin: "engagement".into(),
            version: "0.1.0".into(),
            state_version: 2,
            events: 17,
            share,
        }
    }

    #[test]
    fn records_round_trip_and_large_shares_are_chunked() {
        for share in [Share::Empty, Share::Withheld("trapped".into()), Share::State(vec![7; 10])] {
            let p = partial(share);
            let records = encode_partial(&p, 1 << 20);
            assert_eq!(records.len(), 1);
            assert_eq!(decode(&records[0]), Ok(Message::Partial { partial: p, chunk: 0, chunks: 1 }));
        }
        let clock = TaskClock { watermark: -5, idle: true };
        assert_eq!(decode(&encode_progress(9, clock)), Ok(Message::Progress { task: 9, clock }));
        let counts = Counts { late: 3, duplicates: u64::MAX, unattributed: 0 };
        assert_eq!(
            decode(&encode_counts(2, -60_000, counts)),
            Ok(Message::Counts { task: 2, window_start_ms: -60_000, counts })
        );

        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let p = partial(Share::State(big));
        let records = encode_partial(&p, 1024);
        assert_eq!(records.len(), 5);
        let mut assembler = Assembler::default();
        let mut whole = None;
        for (i, r) in records.iter().enumerate() {
            let Ok(Message::Partial { partial, chunk, chunks }) = decode(r) else { panic!("a partial") };
            assert_eq!((chunk, chunks), (i as u32, 5));
            // The first chunk twice, as after a replay.
            if i == 0 {
                assert_eq!(assembler.add(partial.clone(), chunk, chunks), None);
            }
            whole = assembler.add(partial, chunk, chunks);
            assert_eq!(whole.is_some(), i == 4);
        }
        assert_eq!(whole, Some(p));
        assert_eq!(assembler.incomplete(), 0);
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(decode(b"").is_err());
        assert!(decode(b"ADB1\x00\x00\x00\x00\x00").is_err());
        let mut r = encode_progress(1, TaskClock { watermark: 0, idle: false });
        r.push(0);
        assert!(decode(&r).is_err());
        let r = encode_partial(&partial(Share::Empty), 1 << 20).remove(0);
        assert!(decode(&r[..r.len() - 1]).is_err());
    }
}
