//! The host's integration tests: one test binary of modules, one module per subject.
//!
//! One binary rather than one per file: wasmtime and librdkafka are linked once, and the tests of
//! every module run side by side. Most of their time is spent waiting for a broker or a host, so
//! `scripts/test.sh` runs 6 at a time on 2 cores (`-- --test-threads 6`; libtest's default is one
//! per core), and the whole takes little more than its longest series.
//! Run one module with its path as the filter, e.g.
//! `cargo test --release -p adstream --test integration replay::`.
//!
//! libtest starts the tests in the order of their names, so a long series must sort early:
//! `consumer_group`'s tests (several hosts each: scale-out and failover) take turns on a lock of
//! their own, about two minutes in all. `broker_outage` stops and starts a broker of its own,
//! never the one the other tests share.

mod common;

mod anomaly;
mod broker_outage;
mod compose;
mod console_browser;
mod consumer_group;
mod crash_recovery;
mod e2e_kafka;
mod hostile_input;
mod logs;
mod ops;
mod plugin_faults;
mod plugins;
mod production_kafka;
mod replay;
mod swap_properties;
mod time_properties;
