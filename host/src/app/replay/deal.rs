//! The reader of a replay on several threads: both input files read once, each line dealt to
//! the worker thread that runs its task.
//!
//! The order is one thread's: the next line comes from the file whose largest event time so far
//! is the smaller, as [`super::read_tasks`] takes it from its engine, so each worker sees its
//! tasks' lines in the order one engine would. (Before, every worker read both files itself,
//! splitting and hashing every line, and ordered them by its own tasks' times: with N threads
//! the input was read N times.) A worker's only input is its channel, so a slow worker holds
//! the reader back and nothing else: there is no cycle of waits, which one reader per file
//! would allow (a worker waiting on one file while the other file's reader waits on it).
//!
//! The reader takes a line's time from its `event_timestamp` alone ([`event_time`]), not from
//! a full decoding, which would cost it as much as a worker. A line an engine rejects for
//! another reason (a dead letter) still counts here: only the order of reading differs then,
//! and only with such a line. One far ahead of the others holds its file back until the other
//! file catches up: the results are the same for input within the out-of-orderness bound, but
//! the join holds more in between.

use std::path::Path;
use std::sync::mpsc::SyncSender;

use super::task_of;
use crate::event::{MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Source};
use crate::source::files::JsonlFile;

/// Lines a worker is handed at a time (one channel message).
const FEED_LINES: usize = 1024;
/// Feeds in flight to each worker: bounds the memory when a worker falls behind the reader.
pub const FEEDS_IN_FLIGHT: usize = 16;

/// Lines for one worker, in the order the reader read them.
pub struct Feed {
    /// The lines' bytes, one after the other.
    pub text: Vec<u8>,
    pub items: Vec<Item>,
}

impl Feed {
    fn new() -> Self {
        Feed { text: Vec::with_capacity(FEED_LINES * 256), items: Vec::with_capacity(FEED_LINES + 2) }
    }
}

pub enum Item {
    /// A line of `file`: its task, its offset (its number in the file, from 0) and where it
    /// ends in [`Feed::text`] (it starts where the line before it ends).
    Line { file: Source, task: usize, offset: i64, end: usize },
    /// `file` has ended.
    End { file: Source },
}

/// Reads both files and deals their lines to `feeds`, one per worker (worker `i` runs tasks `i`,
/// `i + feeds.len()`, ...). A worker that stops (it reports why) stops the reader too.
pub fn deal_lines(impressions: &Path, clicks: &Path, tasks: usize, feeds: Vec<SyncSender<Feed>>) -> anyhow::Result<()> {
    let sources = [Source::Impressions, Source::Clicks];
    let mut files = [JsonlFile::open(impressions)?, JsonlFile::open(clicks)?];
    let mut newest = [i64::MIN; 2];
    let mut live = [true, true];
    let mut pending: Vec<Feed> = feeds.iter().map(|_| Feed::new()).collect();
    while let Some(pick) = (0..2).filter(|&f| live[f]).min_by_key(|&f| newest[f]) {
        let offset = files[pick].offset + 1;
        match files[pick].next_line()? {
            Some(line) => {
                if let Some(ts) = event_time(line) {
                    newest[pick] = newest[pick].max(ts);
                }
                let task = task_of(line, tasks);
                let worker = task % feeds.len();
                let feed = &mut pending[worker];
                feed.text.extend_from_slice(line);
                feed.items.push(Item::Line { file: sources[pick], task, offset, end: feed.text.len() });
                if feed.items.len() >= FEED_LINES && feeds[worker].send(std::mem::replace(feed, Feed::new())).is_err() {
                    // The worker failed: its error is the one to report.
                    return Ok(());
                }
            }
            None => {
                live[pick] = false;
                for feed in &mut pending {
                    feed.items.push(Item::End { file: sources[pick] });
                }
            }
        }
    }
    for (to, feed) in feeds.iter().zip(pending) {
        // As above: a worker that stopped says why.
        let _ = to.send(feed);
    }
    Ok(())
}

/// A line's `event_timestamp` in epoch milliseconds, as the decoder reads a valid one (an
/// integer, or an RFC 3339 string) and within the range it accepts; `None` otherwise. It takes
/// the first `"event_timestamp"` key in the line, so one inside an unknown field's object that
/// comes before the event's own would be taken instead.
pub fn event_time(line: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"event_timestamp\"";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let rest = line[FINDER.find(line)? + KEY.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let ms = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let text = std::str::from_utf8(&quoted[..memchr::memchr(b'"', quoted)?]).ok()?;
        adstream_abi::time::parse_rfc3339_millis(text).ok()?
    } else {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit() || **b == b'-').count();
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?
    };
    (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_time_as_the_decoder_accepts_it() {
        let at = |line: &str| event_time(line.as_bytes());
        assert_eq!(at(r#"{"a":1,"event_timestamp":"2026-11-29T10:00:00.123Z","cost":1}"#), Some(1_795_946_400_123));
        assert_eq!(at(r#"{"event_timestamp":1795946400999}"#), Some(1_795_946_400_999));
        assert_eq!(at(r#"{ "event_timestamp" :  1795946400999 }"#), Some(1_795_946_400_999));
        // Outside 2000..2100, not a time, or none: not counted.
        assert_eq!(at(r#"{"event_timestamp":5}"#), None);
        assert_eq!(at(r#"{"event_timestamp":"yesterday"}"#), None);
        assert_eq!(at(r#"{"event_timestamp":null}"#), None);
        assert_eq!(at(r#"{"impression_id":"i1"}"#), None);
        assert_eq!(at("not json"), None);
    }
}
