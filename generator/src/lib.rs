//! `adgen`: deterministic ad impressions and clicks, per SPEC.md, into Kafka or JSONL files.
//!
//! The data flow of a run:
//!
//! ```text
//! Config ──stream_params()──▶ MessageStream ──Message──▶ Sink (Kafka, JSONL, or both) ──▶ Summary
//!           (options)          (seeded world;              (in emission order)             (counts)
//!                               events in event-time
//!                               order, emitted in
//!                               bounded disorder)
//! ```
//!
//! Everything that lands in a message comes from one ChaCha8 RNG seeded with `--seed`, in a fixed order, so
//! the same options give the same bytes in the same order on every topic, whatever the destination or pace.
//!
//! - [`config`]: the command line, its defaults and checks.
//! - [`model`]: the world (campaigns, ads, click-through rates, users), one impression or click, its JSON.
//! - [`anomaly`]: anomalies injected into the stream (`--anomaly`), for detectors.
//! - [`malformed`]: the kinds of invalid message and how a valid one is broken into each.
//! - [`stream`]: when messages are made and in which order they leave — jitter, late events, the bounded queue.
//! - [`time`]: epoch milliseconds to and from RFC 3339, without a date crate.
//! - [`sink`]: the destinations: [`sink::kafka`] (topic creation, idempotent batching producer) and
//!   [`sink::jsonl`] (one file per topic, one message per line).
//! - [`summary`]: the counts of what was written, as a line on stderr and as `--summary-json`.
//! - [`app`]: [`run`] wires these together, with pacing, progress and shutdown.

pub mod anomaly;
pub mod app;
pub mod config;
pub mod malformed;
pub mod model;
pub mod sink;
pub mod stream;
pub mod summary;
pub mod time;

#[cfg(test)]
mod spec_check;

pub use app::{Shutdown, run};
pub use config::Config;
pub use summary::Summary;
