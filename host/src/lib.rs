//! adstream: event-time ad analytics over Kafka, with the aggregations as WebAssembly
//! components that are swapped by path, never by rebuilding the host.
//!
//! Data flow:
//!
//! ```text
//! ad-impressions ─┐                                            ┌─> campaign-ctr-results
//!                 ├─> source ─> task p: decode ─> watermark / windows ─> join ─> batch ─> plugins ─┐
//! ad-clicks ──────┘                   │              │                                         partials
//!                                     └─> dlq        └─> late      merge: every task closed it ─<─┘─> results
//! ```
//!
//! The host owns time (windows, watermarks, lateness), the click-to-impression join and the
//! Kafka side; a plugin owns its per-window accumulators and turns a closed window into output
//! records. See `wit/aggregation.wit` for the plugin contract and the README for the design.
//!
//! Modules:
//! - [`app`]: `run` over Kafka (attempts restarted from the last checkpoint when Kafka fails
//!   one) and `replay` over files; the delivery guarantee.
//! - [`cli`]: the `adstream` command line (also run by the benchmark build, `bench/`).
//! - [`config`]: flags, environment, config file, defaults, validation.
//! - [`event`]: decoding input messages; why a message is rejected.
//! - [`engine`]: the synchronous core: tasks (partition `p` of both inputs, each with its own
//!   watermark, join and plugin instances), the merge stage that publishes a window once every
//!   task has closed it, the window rule, offsets, and what is published.
//! - [`kafka`]: what the Kafka clients share: connection and security settings, the client
//!   context, which errors stop the host, topic sizes and creation.
//! - [`plugin`]: loading, caching, limiting and calling WebAssembly plugins.
//! - [`source`]: Kafka consumer and JSONL files.
//! - [`sink`]: Kafka producer and JSONL output; output topic names and record sizes.
//! - [`metrics`]: counters and the conservation identity.
//! - [`ops`]: the web console, Prometheus metrics, health probes, and live plugin swaps.
//! - [`tail`]: the live result table of `adstream tail`.

pub mod app;
mod bytes;
pub mod cli;
pub mod config;
pub mod engine;
pub mod event;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod plugin;
pub mod scaffold;
pub mod sink;
pub mod source;
pub mod tail;
