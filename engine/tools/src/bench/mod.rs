//! `candela bench serve` (being built).

use clap::{Args, Subcommand};

/// `candela bench` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// vLLM's serving benchmark against any OpenAI-compatible server.
    Serve(BenchServeArgs),
}

/// `candela bench serve` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchServeArgs {}

/// Run a `candela bench` subcommand.
pub async fn run(command: BenchCommand) -> crate::error::Result<()> {
    match command {
        BenchCommand::Serve(_) => Err(crate::Error::InvalidArgs("not built yet".into())),
    }
}
