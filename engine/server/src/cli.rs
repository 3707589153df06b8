//! Command line of the `candela` binary (clap derive).
//!
//! `candela serve` and `candela sidecar` — the processes that run in a pod — are defined
//! in the contract crate ([`candela_contract::serve`], [`candela_contract::sidecar`]), the
//! one definition the operator also parses the argv it builds with. This binary adds the
//! tools (`bench`, `plan`, `doctor`) beside them.

use std::path::Path;

use candela_tools::bench::Tokenize;
use clap::{Parser, Subcommand};

pub use candela_contract::model_ref::{DEFAULT_MODEL_FILE, default_model_path};
pub use candela_contract::serve::{
    CacheArgs, HubArgs, LogArgs, ModelArgs, SchedulerArgs, ServeArgs, ServerArgs,
};
pub use candela_contract::sidecar::SidecarArgs;
pub use candela_contract::{
    ByteSize, Device, Dtype, KvCacheDtype, ProcessCommand, SchedulingPolicy,
};

/// Candela: an OpenAI-compatible LLM inference server on candle.
#[derive(Debug, Parser)]
#[command(name = "candela", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once at start-up: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// `serve` and `sidecar`.
    #[command(flatten)]
    Process(ProcessCommand),
    /// Benchmarks against any OpenAI-compatible server (`bench serve`: vLLM's serving benchmark).
    #[command(subcommand)]
    Bench(candela_tools::bench::BenchCommand),
    /// KV-cache capacity plan: pool tokens, concurrency, recommended --max-num-seqs.
    Plan(candela_tools::plan::PlanArgs),
    /// Read a server's metrics over a window and name the causes of its symptoms.
    Doctor(candela_tools::doctor::DoctorArgs),
}

/// The model crate's tokenizer for `candela bench` (the tools crate takes it
/// through [`Tokenize`] and never links candle).
pub struct BenchTokenizer(tokenizers::Tokenizer);

impl BenchTokenizer {
    /// The tokenizer a GGUF file embeds, or an HF model directory's.
    ///
    /// # Errors
    /// The model crate's, when the file or directory cannot be read as one.
    pub fn load(path: &Path) -> candela_model::Result<Self> {
        let bundle = if path.is_dir() {
            candela_model::tokenizer::tokenizer_from_hf_dir(path)?
        } else {
            let (content, _file) = candela_model::load_gguf::read_gguf(path)?;
            candela_model::tokenizer::tokenizer_from_gguf(&content)?
        };
        Ok(BenchTokenizer(bundle.tokenizer))
    }
}

impl Tokenize for BenchTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.0
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids, false).unwrap_or_default()
    }

    fn ordinary_ids(&self) -> Vec<u32> {
        let special: std::collections::HashSet<u32> = self
            .0
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        (0..self.0.get_vocab_size(true) as u32)
            .filter(|id| !special.contains(id))
            .collect()
    }
}

/// A `--max-num-seqs-per-tier` / `--api-key-tiers` tier in the core's terms.
pub fn service_tier(t: candela_contract::ServiceTier) -> candela_core::ServiceTier {
    use candela_contract::ServiceTier as T;
    match t {
        T::Priority => candela_core::ServiceTier::Priority,
        T::Default => candela_core::ServiceTier::Default,
        T::Flex => candela_core::ServiceTier::Flex,
    }
}

/// `--max-num-seqs-per-tier` in the core's terms.
pub fn tier_caps(caps: &[candela_contract::TierCap]) -> candela_core::TierCaps {
    caps.iter()
        .fold(candela_core::TierCaps::default(), |acc, c| {
            acc.with(service_tier(c.tier), c.max_num_seqs)
        })
}

/// `candela serve`'s scheduling policy in the core's terms.
pub fn scheduling_policy(p: SchedulingPolicy) -> candela_core::SchedulingPolicy {
    match p {
        SchedulingPolicy::Fcfs => candela_core::SchedulingPolicy::Fcfs,
        SchedulingPolicy::Priority => candela_core::SchedulingPolicy::Priority,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The binary's parser is the contract's: what `parse_process_args` accepts, the
    /// binary accepts with the same values, and the tools sit beside it.
    #[test]
    fn process_commands_parse_as_in_the_contract() {
        let argv = [
            "candela",
            "serve",
            "--model=hf://org/m:Q4_K_M",
            "--max-num-seqs=7",
        ];
        let Command::Process(ProcessCommand::Serve(a)) = Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("not serve");
        };
        assert_eq!(a.model_value(), Some("hf://org/m:Q4_K_M"));
        assert_eq!(a.scheduler.max_num_seqs, 7);
        assert!(matches!(
            Cli::try_parse_from(["candela", "sidecar"]).unwrap().command,
            Command::Process(ProcessCommand::Sidecar(_))
        ));
        assert!(matches!(
            Cli::try_parse_from(["candela", "plan", "--help"])
                .map(|_| ())
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::DisplayHelp
        ));
        assert_eq!(
            scheduling_policy(SchedulingPolicy::Priority),
            candela_core::SchedulingPolicy::Priority
        );
        for (t, core) in candela_contract::ServiceTier::ALL
            .into_iter()
            .zip(candela_core::ServiceTier::ALL)
        {
            assert_eq!(service_tier(t), core);
            assert_eq!(t.as_str(), core.as_str());
        }
        let caps = tier_caps(&["flex=4".parse().unwrap(), "priority=9".parse().unwrap()]);
        assert_eq!(caps.get(candela_core::ServiceTier::Flex), Some(4));
        assert_eq!(caps.get(candela_core::ServiceTier::Priority), Some(9));
        assert_eq!(caps.get(candela_core::ServiceTier::Default), None);
    }
}
