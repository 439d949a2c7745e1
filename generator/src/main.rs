//! `adgen`: the command line → [`adgen::run`].

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = adgen::Config::parse();
    let shutdown = adgen::Shutdown::default();
    tokio::spawn(stop_on_ctrl_c(shutdown.clone()));
    match adgen::run(config, shutdown).await {
        Ok(summary) => {
            eprintln!("{summary}");
            if summary.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            eprintln!("adgen: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first Ctrl-C stops the run cleanly (flush, summary); a second one exits at once.
async fn stop_on_ctrl_c(shutdown: adgen::Shutdown) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("adgen: stopping; Ctrl-C again to quit without flushing");
        shutdown.trigger();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    }
}
