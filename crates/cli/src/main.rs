//! `beacon`, the command-line client: parses arguments, connects a [`beacon_client::Client`],
//! runs one command, prints its result through [`output`]. Errors go to stderr as one line and
//! exit with status 1; Ctrl-C exits with 130, except for a command that handles signals itself
//! to clean up (`service register --ttl`, which deregisters and exits 0).

mod args;
mod commands;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse_valid();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let handles_signals = cli.command.handles_signals();
    let outcome = runtime.block_on(async {
        if handles_signals {
            return Some(commands::run(cli).await);
        }
        tokio::select! {
            result = commands::run(cli) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Do not wait for in-flight requests (the bench may have thousands) on the way out.
    runtime.shutdown_background();
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
    }
}
