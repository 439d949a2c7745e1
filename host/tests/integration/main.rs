//! The host's integration tests: one test binary of modules, one module per subject.
//!
//! One binary rather than one per file: wasmtime and librdkafka are linked once, and the tests of
//! every module run side by side. Most of their time is spent waiting for a broker or a host, so
//! `scripts/test.sh` runs 5 at a time on 2 cores (`-- --test-threads 5`; libtest's default is one
//! per core), all but [`quiet`]'s, which it runs after them, and `consumer_group`'s, which it runs
//! beside them in a process of its own, one at a time (several hosts each: scale-out and
//! failover; about two and a half minutes in all). They also take turns on a lock of their own,
//! for a run of the whole binary by hand. `broker_outage` stops and starts a broker of its own,
//! never the one the other tests share.
//!
//! Run one module with its path as the filter, e.g.
//! `cargo test --release -p adstream --test integration replay::`.

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
mod plugins;
/// Tests whose assertions read the wall clock: a plugin call's deadline, a host that must stop
/// within seconds, a swap that must land in a given window. `scripts/test.sh` runs them in a pass
/// of their own (the plugin deadlines, whose bounds are a tenth of a second, alone first; the
/// others 4 at a time), because the load of the tests running beside them in the first pass
/// (hosts, brokers, compilers on 2 cores) moves their clocks: in 6 at a time they failed by going
/// over their bounds.
mod quiet {
    mod fetched;
    mod ops;
    mod plugin_faults;
    mod production_kafka;
}
mod replay;
mod swap_properties;
mod time_properties;
