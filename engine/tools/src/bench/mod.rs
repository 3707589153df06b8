//! `candela bench serve`: vLLM's online serving benchmark, re-implemented.
//!
//! Same flags, datasets ([`dataset`]), arrival process ([`arrivals`]), request
//! timing ([`client`]), metric definitions ([`metrics`]), printed block and JSON
//! fields ([`report`]) as `vllm bench serve`, so numbers compare across the two;
//! plus charts ([`charts`]). It speaks plain OpenAI HTTP, so it measures any
//! compatible server (Candela, vLLM, llama.cpp's `llama-server`).
//!
//! [`serve`] runs four stages with typed values between them: [`validate()`]
//! (flags → [`Settings`]), [`session::plan`] (→ client, model id, tokenizer,
//! prompts), [`session::run`] (→ outputs and duration) and the report (metrics,
//! printed block, JSON, charts → [`Outcome`]).
//!
//! Differences from vLLM, on purpose: the tokenizer is a local file (`--tokenizer`,
//! a GGUF or HF model directory; default the embedded default model) rather than a
//! hub name, loaded by the caller's [`Tokenize`] implementation (the `candela`
//! binary passes the model crate's, so this crate never links candle); `errors` of
//! failed requests stay in the result JSON even without `--save-detailed`; `--plot`
//! writes PNG/SVG charts next to the result; `--no-stream` asks for whole answers
//! (a lighter client that measures throughput and E2EL only) and the result JSON
//! records `stream`.

pub mod arrivals;
pub mod charts;
pub mod client;
pub mod dataset;
pub mod metrics;
pub mod report;
pub mod session;
pub mod validate;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::error::{Error, Result};
use client::Backend;
pub use dataset::Tokenize;
use metrics::RequestOutput;
use report::RunInfo;
use session::{Plan, Run};
pub use validate::{Settings, validate};

/// `candela bench` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// vLLM's serving benchmark against any OpenAI-compatible server.
    Serve(Box<BenchServeArgs>),
}

/// Datasets `--dataset-name` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// ShareGPT-format JSON from `--dataset-path`.
    Sharegpt,
    /// Synthetic prompts of `--random-input-len` tokens.
    Random,
}

/// `candela bench serve` flags (vLLM's spellings and defaults).
#[derive(Debug, Clone, Args)]
pub struct BenchServeArgs {
    /// API the server speaks.
    #[arg(long, value_enum, default_value = "openai")]
    pub backend: Backend,
    /// Server base URL (overrides --host/--port), e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub base_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// API path [default: /v1/completions, or /v1/chat/completions for openai-chat].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model id; by default the first model the server's /v1/models lists.
    #[arg(long)]
    pub model: Option<String>,
    /// Name sent as `model` when it differs from --model.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// LoRA adapters the server serves: each request is sent to one drawn at random
    /// (its `model`), as vLLM's benchmark does.
    #[arg(long, num_args = 1..)]
    pub lora_modules: Vec<String>,
    /// Tokenizer: a .gguf file or an HF model directory [default: the embedded default model].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "random")]
    pub dataset_name: DatasetName,
    /// Dataset file (ShareGPT-format JSON for --dataset-name sharegpt).
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Requests per second; `inf` sends all at once. Gaps follow a Poisson (or gamma) process.
    #[arg(long, default_value = "inf")]
    pub request_rate: f64,
    /// Gamma shape of the arrival gaps: 1 = Poisson, < 1 burstier, > 1 more uniform.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight at once (client-side).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// General input length (sets --random-input-len).
    #[arg(long)]
    pub input_len: Option<usize>,
    /// General output length (sets --random-output-len and --sharegpt-output-len).
    #[arg(long)]
    pub output_len: Option<usize>,
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub random_output_len: usize,
    /// Lengths are uniform in len × [1 − r, 1 + r].
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Random tokens shared by every prompt, before the random part.
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: usize,
    /// Fixed output length for ShareGPT prompts (default: the dataset's answer length).
    #[arg(long)]
    pub sharegpt_output_len: Option<usize>,
    /// Comma-separated metrics to report percentiles for: ttft, tpot, itl, e2el.
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    /// Comma-separated percentiles, e.g. 50,90,99.
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// SLOs for goodput as KEY:VALUE in ms (ttft, tpot, e2el), e.g. --goodput ttft:500 tpot:50.
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send ignore_eos (always on for the random dataset, as vLLM does).
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<i64>,
    #[arg(long)]
    pub min_p: Option<f64>,
    #[arg(long)]
    pub frequency_penalty: Option<f64>,
    #[arg(long)]
    pub presence_penalty: Option<f64>,
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// JSON object merged into every request body.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Ask for whole answers (`"stream": false`) instead of streams. vLLM's benchmark
    /// always streams; this is Candela's extension for a lighter client (one JSON
    /// body per request instead of one SSE message per token). Latency is the time
    /// to the whole answer; TTFT, TPOT and ITL are not measured (reported as n/a),
    /// so --goodput takes only e2el.
    #[arg(long)]
    pub no_stream: bool,
    /// Bearer token for the server.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests sent (and not measured) before the run.
    #[arg(long, default_value_t = 0)]
    pub num_warmups: usize,
    /// Retry the first prompt until it succeeds for up to this long; 0 skips the check.
    #[arg(long, default_value_t = 600)]
    pub ready_check_timeout_sec: u64,
    /// POST /start_profile before and /stop_profile after the run.
    #[arg(long)]
    pub profile: bool,
    /// No progress bar.
    #[arg(long)]
    pub disable_tqdm: bool,
    /// Write the result JSON.
    #[arg(long)]
    pub save_result: bool,
    /// Keep per-request lists (lengths, TTFTs, ITLs, texts, errors) in the JSON.
    #[arg(long)]
    pub save_detailed: bool,
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    #[arg(long)]
    pub result_filename: Option<String>,
    /// Label (prefix) of the result [default: the backend].
    #[arg(long)]
    pub label: Option<String>,
    /// KEY=VALUE pairs recorded in the result JSON.
    #[arg(long, num_args = 1..)]
    pub metadata: Vec<String>,
    /// Write latency-CDF and timeline charts (PNG and SVG) next to the result.
    #[arg(long)]
    pub plot: bool,
}

/// Run a `candela bench` subcommand; `load_tokenizer` reads `--tokenizer` (a
/// `.gguf` file or an HF model directory).
///
/// # Errors
/// As [`serve`].
pub async fn run<T: Tokenize, E: std::fmt::Display>(
    command: BenchCommand,
    load_tokenizer: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> Result<()> {
    match command {
        BenchCommand::Serve(args) => serve(*args, load_tokenizer).await.map(|_| ()),
    }
}

/// A finished run: the JSON result and where files went.
#[derive(Debug)]
pub struct Outcome {
    pub result: Value,
    pub result_file: Option<PathBuf>,
    pub charts: Vec<PathBuf>,
}

/// `candela bench serve`: validate → plan → run → report.
///
/// # Errors
/// [`Error::InvalidArgs`] for bad flags (before anything is sent),
/// [`Error::Input`] for an unreadable tokenizer or dataset, [`Error::Http`] when
/// the server cannot be reached or fails the ready check, [`Error::Output`] when
/// results cannot be written.
pub async fn serve<T: Tokenize, E: std::fmt::Display>(
    args: BenchServeArgs,
    load_tokenizer: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> Result<Outcome> {
    let settings = validate(args)?;
    let mut plan = session::plan(&settings, load_tokenizer).await?;
    let run = session::run(&settings, &mut plan).await?;
    report(&settings, &plan, &run)
}

/// Stage 4: metrics, the printed block, the result JSON and charts.
fn report<T: Tokenize>(s: &Settings, plan: &Plan<T>, run: &Run) -> Result<Outcome> {
    let out = &s.output;
    let outputs = &run.outputs;
    let m = metrics::calculate(
        outputs,
        run.duration,
        |t| plan.tokenizer.encode(t).len(),
        &out.percentiles,
        &out.goodput,
        s.stream,
    );
    let failed: Vec<&RequestOutput> = outputs.iter().filter(|o| !o.success).collect();
    if !failed.is_empty() {
        println!("Failed requests during benchmark run detected (capping to 10):");
        for (i, o) in failed.iter().take(10).enumerate() {
            println!("Error {i}: {}", o.error);
        }
    }
    let info = RunInfo {
        backend: s.backend.name(),
        label: out.label.clone(),
        model_id: plan.model_id.clone(),
        tokenizer_id: plan.tokenizer_path.display().to_string(),
        num_prompts: s.num_prompts,
        request_rate: s.traffic.request_rate,
        burstiness: s.traffic.burstiness,
        max_concurrency: s.traffic.max_concurrency,
        duration: run.duration,
        stream: s.stream,
        goodput: out.goodput.is_set(),
        percentile_metrics: out.percentile_metrics.clone(),
        date: utc_now_stamp(),
        metadata: out.metadata.clone(),
    };
    print!("{}", report::result_block(&info, &m));
    let result = report::result_json(&info, &m, outputs, out.save_detailed);

    let file = out
        .result_filename
        .clone()
        .unwrap_or_else(|| report::result_file_name(&info));
    let path = match &out.result_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::Output {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            dir.join(file)
        }
        None => PathBuf::from(file),
    };
    let mut result_file = None;
    if out.save_result {
        let text = serde_json::to_string_pretty(&result).expect("JSON values serialize");
        std::fs::write(&path, text).map_err(|e| Error::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        println!("Result written to {}", path.display());
        result_file = Some(path.clone());
    }
    let mut charts = Vec::new();
    if out.plot {
        let stem = path.with_extension("");
        let title = format!(
            "{} {} qps, concurrency {}",
            plan.model_id,
            report::py_float(s.traffic.request_rate),
            s.traffic
                .max_concurrency
                .map_or("none".to_string(), |c| c.to_string())
        );
        charts = charts::write_charts(&stem, &title, &m, outputs, s.stream)?;
        for c in &charts {
            println!("Chart written to {}", c.display());
        }
    }
    Ok(Outcome {
        result,
        result_file,
        charts,
    })
}

/// `YYYYmmdd-HHMMSS` in UTC (vLLM's result date format).
fn utc_now_stamp() -> String {
    utc_stamp(jiff::Timestamp::now())
}

fn utc_stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%d-%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_has_vllms_shape() {
        let s = utc_now_stamp();
        assert_eq!(s.len(), 15);
        assert_eq!(&s[8..9], "-");
        assert!(s.starts_with("20"));
    }

    #[test]
    fn utc_stamp_is_the_civil_date_and_time() {
        // 2000-02-29T01:01:01Z: a leap day in a century leap year.
        let t = jiff::Timestamp::from_second(951_782_400 + 3_661).unwrap();
        assert_eq!(utc_stamp(t), "20000229-010101");
        assert_eq!(utc_stamp(jiff::Timestamp::UNIX_EPOCH), "19700101-000000");
    }
}
