//! `adstream` with the ctr and engagement aggregations compiled in, loadable as
//! `--plugin native:ctr --plugin native:engagement`: the same pipeline, the same aggregation
//! code, no WebAssembly. It exists so that `adbench` measures what the boundary costs as a ratio
//! within one run; it is not shipped.

use adstream::plugin::{Aggregator, NativeAggregator};

fn ctr() -> Box<dyn Aggregator> {
    Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "campaign-ctr-results"))
}

fn engagement() -> Box<dyn Aggregator> {
    Box::new(NativeAggregator::<engagement::Engagement>::new("engagement", "device-engagement-results"))
}

fn main() -> std::process::ExitCode {
    adstream::cli::main(&[("ctr", ctr), ("engagement", engagement)])
}
