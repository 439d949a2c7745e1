//! `replay`: the pipeline over two JSONL files instead of Kafka, on one thread or several.
//!
//! With one thread, one engine runs every task and merges their windows in this process. With
//! `threads` > 1 the tasks are spread over that many worker threads, each with an engine of its
//! own, and hands its windows over as the Kafka path does: partials, counts and task clocks in
//! the partials topic's encoding, here through a channel to this thread, whose engine is the
//! merge stage and writes every record. One more thread reads both files, once, in the order one
//! thread would, and deals each line to the thread that runs its task ([`deal_lines`]). For input
//! within the out-of-orderness bound the result records are the same as on one thread (SPEC
//! "Time": results do not depend on how tasks are spread), in another order: late copies go out
//! when a worker routes them rather than after their window. An event beyond the bound may be
//! decided otherwise: a worker's task closes a window by its own watermark, where one thread's
//! engine waits for the merge's. The late copies' `reason-detail` and the completeness records'
//! `watermark`, `idle_tasks` and revisions also differ (the merge publishes from the task clocks
//! it is told).

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use anyhow::Context;

use crate::config::{PluginConfig, TimeConfig};
use crate::engine::watermark::PartitionId;
use crate::engine::{Engine, Input, Sink};
use crate::event::Source;
use crate::metrics::Stats;
use crate::plugin::Loader;
use crate::sink::jsonl::JsonlSink;
use crate::sink::topics::OutputTopics;
use crate::source::files::JsonlFile;

mod deal;

use deal::{FEEDS_IN_FLIGHT, Feed, Item, deal_lines};

/// The in-process stand-in for the partials topic between the workers and the merge stage (a
/// name no output topic has: it never reaches the output).
const EXCHANGE: &str = "\0replay-partials";
/// Largest share of a partial in one exchange record: large enough that a window's state is
/// one record (the chunks are reassembled anyway).
const EXCHANGE_RECORD_BYTES: usize = 16 << 20;
/// Records a worker hands over at a time (one channel message).
const BATCH: usize = 1024;
/// Batches in flight from the workers: bounds the memory when the writer falls behind.
const IN_FLIGHT: usize = 64;
/// Lines a worker reads between two reports of its tasks' clocks (they also go with every
/// window it hands over).
const REPORT_EVERY: u64 = 1 << 16;

/// Runs the pipeline over two JSONL files, as if each were one Kafka partition (or `tasks`
/// partitions, each line going to the partition its `impression_id` hashes to, as a keyed
/// producer would), writing every output record (results, late, dead letters) to `out` as JSON
/// lines. The end of the input closes every window.
///
/// The files are read in step: the next line always comes from the file whose largest event
/// time so far is the smaller, so the watermark advances as it would with live partitions.
/// With several tasks every window is merged from their partials, which exercises a plugin's
/// `export-window`, `restore-window` and `merge-window`: the same input within the
/// out-of-orderness bound gives the same records whatever the number of tasks, and of
/// `threads` the tasks run on (see the module documentation).
pub fn replay(
    time: TimeConfig,
    plugins: &PluginConfig,
    impressions: &Path,
    clicks: &Path,
    tasks: usize,
    threads: usize,
    out: impl Write,
) -> anyhow::Result<Stats> {
    anyhow::ensure!((1..=64).contains(&tasks), "--tasks must be between 1 and 64");
    anyhow::ensure!(
        (1..=tasks).contains(&threads),
        "--threads must be between 1 and --tasks ({tasks}): a thread runs whole tasks"
    );
    let loader = Loader::new(plugins)?;
    let mut sink = JsonlSink::new(std::io::BufWriter::new(out));
    let stats = if threads == 1 {
        let mut engine = Engine::new(time, &loader, OutputTopics::with_prefix(""))?;
        let mine: Vec<usize> = (0..tasks).collect();
        read_tasks(&mut engine, &mine, tasks, impressions, clicks, &mut sink, |_, _| Ok(()))?;
        engine.finish(&mut sink)?;
        engine.stats()
    } else {
        tracing::info!(
            tasks,
            threads,
            "replaying on several threads: one reads the input and deals each the lines of its share of the tasks; their windows are merged on one more"
        );
        let mut merge = Engine::new(time, &loader, OutputTopics::with_prefix(""))?;
        merge.use_exchange(EXCHANGE, EXCHANGE_RECORD_BYTES);
        merge.open_merge(tasks, i64::MIN, i64::MIN);
        let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let workers = std::thread::scope(|scope| {
            let mut feeds = Vec::with_capacity(threads);
            let handles: Vec<_> = (0..threads)
                .map(|thread| {
                    let (tx, loader) = (tx.clone(), &loader);
                    let (feed, lines) = std::sync::mpsc::sync_channel(FEEDS_IN_FLIGHT);
                    feeds.push(feed);
                    // Tasks dealt out in turn: thread i runs tasks i, i + threads, ...
                    let mine: Vec<usize> = (thread..tasks).step_by(threads).collect();
                    std::thread::Builder::new().name(format!("replay-{thread}")).spawn_scoped(scope, move || {
                        let _span = tracing::info_span!("replay", thread).entered();
                        worker(time, loader, &mine, tasks, [impressions, clicks], lines, tx)
                    })
                })
                .collect::<Result<_, _>>()
                .context("starting the replay threads")?;
            drop(tx);
            let reader = std::thread::Builder::new()
                .name("replay-reader".into())
                .spawn_scoped(scope, move || deal_lines(impressions, clicks, tasks, feeds))
                .context("starting the replay's reader")?;
            // The workers stop at their next hand-over if this fails (the channel closes), and
            // the reader at its next line for them: the writer's error is the one to tell then.
            let merged = write_merged(&mut merge, tasks, rx, &mut sink);
            let joined: Vec<anyhow::Result<Stats>> = handles
                .into_iter()
                .map(|h: std::thread::ScopedJoinHandle<'_, anyhow::Result<Stats>>| {
                    h.join().map_err(|_| anyhow::anyhow!("a replay thread panicked")).and_then(|r| r)
                })
                .collect();
            let read = reader.join().map_err(|_| anyhow::anyhow!("the replay's reader panicked")).and_then(|r| r);
            // The first cause: the writer's failure, then a worker's own, then the reader's; a
            // worker that only saw the reader stop says nothing new.
            merged?;
            let (mut stats, mut stopped) = (Vec::with_capacity(threads), None);
            for result in joined {
                match result {
                    Ok(s) => stats.push(s),
                    Err(e) if e.is::<ReaderStopped>() => stopped = Some(e),
                    Err(e) => return Err(e),
                }
            }
            read?;
            stopped.map_or(Ok(stats), Err)
        })?;
        merge.finish(&mut sink)?;
        Stats::host(workers.iter().chain([&merge.stats()]))
    };
    sink.into_inner().flush().context("writing the output")?;
    Ok(stats)
}

/// Reads both files in step and ingests the lines of tasks `mine` (of `tasks`) into `engine`,
/// calling `progress` after a line that handed windows over, and every [`REPORT_EVERY`] lines
/// of its own.
/// Ends every partition it read.
fn read_tasks(
    engine: &mut Engine,
    mine: &[usize],
    tasks: usize,
    impressions: &Path,
    clicks: &Path,
    sink: &mut dyn Sink,
    mut progress: impl FnMut(&mut Engine, &mut dyn Sink) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // One clock for the whole replay: partitions never turn idle on their own.
    let now = Instant::now();
    let mut inputs = Vec::new();
    for (kind, path) in [(Source::Impressions, impressions), (Source::Clicks, clicks)] {
        inputs.push((add_partitions(engine, mine, tasks, kind, path, now)?, JsonlFile::open(path)?));
    }
    let newest = |engine: &Engine, ids: &[Option<PartitionId>]| {
        ids.iter().flatten().filter_map(|&id| engine.max_event_time(id)).max().unwrap_or(i64::MIN)
    };
    let mut live: Vec<usize> = (0..inputs.len()).collect();
    let mut lines = 0u64;
    while !live.is_empty() {
        let pick = *live.iter().min_by_key(|&&i| newest(engine, &inputs[i].0)).expect("live is not empty");
        let (ids, file) = &mut inputs[pick];
        let offset = file.offset + 1;
        match file.next_line()? {
            Some(line) => {
                let Some(partition) = ids[task_of(line, tasks)] else { continue };
                lines += 1;
                engine.ingest(Input { partition, offset, key: None, payload: line }, now, sink)?;
                if engine.checkpoint_wanted() || lines.is_multiple_of(REPORT_EVERY) {
                    progress(engine, sink)?;
                }
            }
            None => {
                for &id in ids.iter().flatten() {
                    engine.finish_partition(id);
                }
                live.retain(|&i| i != pick);
            }
        }
    }
    Ok(())
}

/// One worker thread of a replay on several: its own engine over tasks `mine`, fed their lines
/// by [`deal_lines`] through `lines`, handing every record to the merge stage's thread through
/// `tx`.
fn worker(
    time: TimeConfig,
    loader: &Loader,
    mine: &[usize],
    tasks: usize,
    [impressions, clicks]: [&Path; 2],
    lines: Receiver<Feed>,
    tx: SyncSender<Vec<Owned>>,
) -> anyhow::Result<Stats> {
    let mut engine = Engine::new(time, loader, OutputTopics::with_prefix(""))?;
    engine.use_exchange(EXCHANGE, EXCHANGE_RECORD_BYTES);
    let mut sink = ToMerge { batch: Vec::with_capacity(BATCH), tx };
    let now = Instant::now();
    // Per file (impressions, clicks), task number → this engine's partition of it.
    let side = |file: Source| usize::from(file == Source::Clicks);
    let ids = [
        add_partitions(&mut engine, mine, tasks, Source::Impressions, impressions, now)?,
        add_partitions(&mut engine, mine, tasks, Source::Clicks, clicks, now)?,
    ];
    let (mut ended, mut read) = ([false; 2], 0u64);
    for feed in lines {
        let mut from = 0;
        for item in &feed.items {
            match *item {
                Item::Line { file, task, offset, end } => {
                    let partition = ids[side(file)][task].expect("the reader deals a worker only its own tasks' lines");
                    let payload = &feed.text[from..end];
                    from = end;
                    engine.ingest(Input { partition, offset, key: None, payload }, now, &mut sink)?;
                    read += 1;
                    // The tasks' clocks go over after the windows they close (as at a checkpoint on Kafka).
                    if engine.checkpoint_wanted() || read.is_multiple_of(REPORT_EVERY) {
                        engine.report_progress(&mut sink)?;
                    }
                }
                Item::End { file } => {
                    for &id in ids[side(file)].iter().flatten() {
                        engine.finish_partition(id);
                    }
                    ended[side(file)] = true;
                }
            }
        }
    }
    // No windows from half an input: the reader failed (its error is reported), or stopped for
    // another worker's failure (that one is).
    if ended != [true; 2] {
        return Err(ReaderStopped.into());
    }
    engine.finish(&mut sink)?;
    sink.hand_over()?;
    Ok(engine.stats())
}

/// Adds file `path`'s partition of each task of `mine` to `engine`: task number → its partition
/// (`None`: another thread's task).
fn add_partitions(
    engine: &mut Engine,
    mine: &[usize],
    tasks: usize,
    kind: Source,
    path: &Path,
    now: Instant,
) -> anyhow::Result<Vec<Option<PartitionId>>> {
    let name = path.display().to_string();
    let mut ids = vec![None; tasks];
    for &t in mine {
        ids[t] = Some(engine.add_partition(kind, &name, t as i32, now)?);
    }
    Ok(ids)
}

/// A worker's input ended before both files did: the reader stopped (it failed, or another
/// worker did).
#[derive(Debug, thiserror::Error)]
#[error("the replay's reader stopped before the end of the input")]
struct ReaderStopped;

/// The merge stage's side: every record of the workers, in each worker's order. The exchange's
/// records go to the merge (which publishes what it can); the others are written as they come.
fn write_merged(merge: &mut Engine, tasks: usize, rx: Receiver<Vec<Owned>>, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut offset = 0;
    for batch in rx {
        for r in batch {
            if r.topic == EXCHANGE {
                merge.ingest_exchange(offset, &r.value, sink)?;
                offset += 1;
                if merge.merge_due() {
                    merge.publish_merged(tasks, now, sink)?;
                }
            } else {
                let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                sink.send(&r.topic, r.key.as_deref(), &r.value, &headers)?;
            }
        }
    }
    Ok(())
}

/// A record a worker's engine sent.
struct Owned {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A worker's sink: its records go to the merge stage's thread in batches, in the order sent.
struct ToMerge {
    batch: Vec<Owned>,
    tx: SyncSender<Vec<Owned>>,
}

impl ToMerge {
    fn hand_over(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx.send(batch).map_err(|_| anyhow::anyhow!("the replay's writer stopped"))
    }
}

impl Sink for ToMerge {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()> {
        self.batch.push(Owned {
            topic: topic.to_owned(),
            key: key.map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
        });
        if self.batch.len() >= BATCH || topic == EXCHANGE {
            self.hand_over()?;
        }
        Ok(())
    }
}

/// The task a replayed line goes to: its `impression_id`'s hash, as a keyed producer
/// partitions (an impression and its clicks share it); a line without one goes to task 0.
fn task_of(line: &[u8], tasks: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if tasks == 1 {
        return 0;
    }
    const FIELD: &[u8] = b"\"impression_id\":\"";
    // Built once: `memmem::find` would build its searcher for every line.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(FIELD));
    let Some(at) = FINDER.find(line) else {
        return 0;
    };
    let rest = &line[at + FIELD.len()..];
    let id = &rest[..memchr::memchr(b'"', rest).unwrap_or(rest.len())];
    // SipHash with fixed keys: the same split on every run.
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    (hasher.finish() % tasks as u64) as usize
}
