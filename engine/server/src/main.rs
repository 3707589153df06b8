//! `candela` binary: parse flags, set up logging, dispatch the subcommand.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use candela::cli::{Cli, Command};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => candela::serve::run(args).await,
        Command::Sidecar(args) => candela::sidecar::run(args).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
