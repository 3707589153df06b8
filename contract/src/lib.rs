//! The contract between Candela's processes, defined once.
//!
//! The engine (`candela serve`, `candela sidecar`) and the operator that starts it in pods
//! must agree on flag names and values, ports, environment variables, model references and
//! metric names. Each is spelled here and nowhere else:
//!
//! - [`serve`] and [`sidecar`]: the clap definitions of both command lines with their
//!   validation. The engine parses its argv with them; the operator builds argv from typed
//!   values ([`serve::ServeFlags`]) and runs the *same* parser over what it built before
//!   any pod exists, so a spec the engine would refuse becomes a status condition instead
//!   of a crash-looping pod.
//! - [`model_ref`]: what `--model` accepts (local path, `hf://org/name[:QUANT]`, `org/name`)
//!   and the default model's path.
//! - [`ports`] and [`env`]: ports, container names, probe paths, environment variables.
//! - [`images`]: the image names the build produces and the operator and chart default to.
//! - [`metrics`]: every metric name the engine and sidecar export and dashboards, alerts,
//!   autoscalers and `candela doctor` read.
//!
//! - [`speculative`]: the JSON of `--speculative-config`.
//! - [`lora`]: `--lora-modules` entries and the LoRA limits.
//! - [`tls`]: the `--ssl-*` flags every listener takes.
//! - [`tiers`]: service tiers, `--max-num-seqs-per-tier` and the `--api-key-tiers` file.
//!
//! No I/O (the default model path reads `$HOME`, nothing else); clap parses, serde_json
//! reads the JSON-valued flags.

pub mod env;
pub mod images;
pub mod lora;
pub mod metrics;
pub mod model_ref;
pub mod ports;
pub mod serve;
pub mod sidecar;
pub mod speculative;
pub mod tiers;
pub mod tls;
mod values;

pub use lora::LoraModule;
pub use model_ref::{HubRef, ModelRef};
pub use serve::{ServeArgs, ServeFlags};
pub use sidecar::{SidecarArgs, SidecarFlags};
pub use speculative::SpeculativeConfig;
pub use tiers::{ServiceTier, TierCap};
pub use values::{ByteSize, Device, Dtype, KvCacheDtype, SchedulingPolicy};

/// The subcommands that run inside a Candela pod (`candela serve`, `candela sidecar`).
///
/// The `candela` binary flattens this enum into its own subcommands, so the operator's
/// check ([`parse_process_args`]) and the binary parse argv with the same definition.
// Parsed once at start-up: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProcessCommand {
    /// Serve a model over the OpenAI HTTP API.
    Serve(ServeArgs),
    /// Relay the engine's metrics (gRPC WatchStats) with device metrics on a secured /metrics.
    Sidecar(SidecarArgs),
}

#[derive(Debug, clap::Parser)]
#[command(name = "candela")]
struct ProcessCli {
    #[command(subcommand)]
    command: ProcessCommand,
}

/// Parses a container's argv (without the program name, e.g. `["serve", "--model", …]`)
/// exactly as the `candela` binary would, then runs the validation that needs no model.
///
/// # Errors
/// The first line of clap's message, or the validation's one line.
pub fn parse_process_args<I, S>(args: I) -> Result<ProcessCommand, String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let argv = std::iter::once(std::ffi::OsString::from("candela"))
        .chain(args.into_iter().map(Into::into));
    let cli = ProcessCli::try_parse_from(argv).map_err(|e| first_line(&e.to_string()))?;
    match &cli.command {
        ProcessCommand::Serve(a) => a.validate()?,
        ProcessCommand::Sidecar(a) => a.validate()?,
    }
    Ok(cli.command)
}

/// clap's message as one line: its first line, plus its `tip:` when it has one (e.g. the
/// flag that was probably meant).
fn first_line(message: &str) -> String {
    let mut line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim_start_matches("error: ")
        .to_owned();
    if let Some(tip) = message
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tip:"))
    {
        line.push_str(" (");
        line.push_str(tip);
        line.push(')');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_processes_and_reports_one_line() {
        assert!(matches!(
            parse_process_args(["serve", "--max-num-seqs", "4"]),
            Ok(ProcessCommand::Serve(_))
        ));
        assert!(matches!(
            parse_process_args(["sidecar", "--listen", ":9090"]),
            Ok(ProcessCommand::Sidecar(_))
        ));
        let e = parse_process_args(["serve", "--max-num-seq", "4"]).unwrap_err();
        assert_eq!(
            e,
            "unexpected argument '--max-num-seq' found (tip: a similar argument exists: '--max-num-seqs')"
        );
        let e = parse_process_args(["serve", "--block-size", "12"]).unwrap_err();
        assert!(e.starts_with("--block-size"), "{e}");
    }
}
