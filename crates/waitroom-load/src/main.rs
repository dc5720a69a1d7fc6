//! `waitroom-load`: the load tool as its own binary (the same as `waitroom load`).

use std::process::ExitCode;

use clap::Parser;

/// Simulate a spike of users against a waitroom deployment and measure how well it meters them.
#[derive(Debug, Parser)]
#[command(name = "waitroom-load", version)]
struct Cli {
    #[command(flatten)]
    args: waitroom_load::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("waitroom-load: cannot start the runtime: {error}");
            return ExitCode::from(waitroom_load::EXIT_ERROR);
        }
    };
    runtime.block_on(waitroom_load::cli_main(cli.args))
}
