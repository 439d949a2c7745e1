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

/// The first Ctrl-C or SIGTERM (what `timeout` and `docker stop` send) stops the run cleanly (flush,
/// summary, complete `--tee-jsonl` files); a second one exits at once.
async fn stop_on_ctrl_c(shutdown: adgen::Shutdown) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        eprintln!("adgen: cannot listen for SIGTERM");
        return;
    };
    let signal = async {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = term.recv() => r.is_some(),
        }
    };
    if signal.await {
        eprintln!("adgen: stopping; Ctrl-C again to quit without flushing");
        shutdown.trigger();
        let again = async {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = term.recv() => r.is_some(),
            }
        };
        if again.await {
            std::process::exit(130);
        }
    }
}
