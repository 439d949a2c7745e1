//! The `adstream` binary: the command line of [`adstream::cli`], with no aggregation compiled in.

fn main() -> std::process::ExitCode {
    adstream::cli::main(&[])
}
