//! The `adstream` binary: the command line of [`adstream::cli`], with no aggregation compiled in.

fn main() -> anyhow::Result<()> {
    adstream::cli::main(&[])
}
