//! `candela` binary: parse flags, set up logging (and the profiler's span
//! recorder), dispatch the subcommand.

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use candela::cli::{BenchTokenizer, Cli, Command, ProcessCommand};
use candela::profiler::Profiler;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let profiler = Profiler::new(match &cli.command {
        Command::Process(ProcessCommand::Serve(args)) => args.log.profiler_dir(),
        _ => None,
    });
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        // Colours only on a terminal: container logs (kubectl logs) stay plain text.
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(env),
        )
        .with(profiler.layer())
        .init();
    let result = match cli.command {
        Command::Process(ProcessCommand::Serve(args)) => candela::serve::run(args, profiler).await,
        Command::Process(ProcessCommand::Sidecar(args)) => candela::sidecar::run(args).await,
        Command::Bench(command) => candela_tools::bench::run(command, BenchTokenizer::load)
            .await
            .map_err(Into::into),
        Command::Plan(args) => candela_tools::plan::run(args).map_err(Into::into),
        Command::Doctor(args) => candela_tools::doctor::run(args).await.map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
