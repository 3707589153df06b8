//! `candela bench serve`: vLLM's online serving benchmark, re-implemented.
//!
//! Same flags, datasets ([`dataset`]), arrival process ([`arrivals`]), request
//! timing ([`client`]), metric definitions ([`metrics`]), printed block and JSON
//! fields ([`report`]) as `vllm bench serve`, so numbers compare across the two;
//! plus charts ([`charts`]). It speaks plain OpenAI HTTP, so it measures any
//! compatible server (Candela, vLLM, llama.cpp's `llama-server`).
//!
//! Differences from vLLM, on purpose: the tokenizer is a local file (`--tokenizer`,
//! a GGUF or HF model directory; default the embedded default model) rather than a
//! hub name; `errors` of failed requests stay in the result JSON even without
//! `--save-detailed`; `--plot` writes PNG/SVG charts next to the result.

pub mod arrivals;
pub mod charts;
pub mod client;
pub mod dataset;
pub mod metrics;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use client::{Backend, Client, RequestInput, error_chain};
use dataset::{RandomSpec, SampleRequest, Tokenize};
use metrics::{Goodput, RequestOutput};
use report::RunInfo;

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

/// Run a `candela bench` subcommand.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Serve(args) => serve(*args).await.map(|_| ()),
    }
}

/// A finished run: the JSON result and where files went.
#[derive(Debug)]
pub struct Outcome {
    pub result: Value,
    pub result_file: Option<PathBuf>,
    pub charts: Vec<PathBuf>,
}

/// `candela bench serve`.
pub async fn serve(mut args: BenchServeArgs) -> Result<Outcome> {
    let bad = |m: String| Err(Error::InvalidArgs(m));
    if args.max_concurrency == Some(0) {
        return bad("--max-concurrency must be greater than 0".into());
    }
    if args.request_rate.is_nan() || args.request_rate <= 0.0 {
        return bad(format!(
            "--request-rate must be positive (or inf), got {}",
            args.request_rate
        ));
    }
    if args.burstiness.is_nan() || args.burstiness <= 0.0 {
        return bad(format!(
            "--burstiness must be positive, got {}",
            args.burstiness
        ));
    }
    if args.num_prompts == 0 {
        return bad("--num-prompts must be at least 1".into());
    }
    match (args.dataset_name, &args.dataset_path) {
        (DatasetName::Random, Some(p)) => {
            return bad(format!(
                "cannot use the 'random' dataset with --dataset-path {}; use --dataset-name sharegpt for a ShareGPT file",
                p.display()
            ));
        }
        (DatasetName::Sharegpt, None) => {
            return bad("--dataset-name sharegpt needs --dataset-path (e.g. engine/tools/data/sharegpt-sample.json)".into());
        }
        _ => {}
    }
    if let Some(n) = args.input_len {
        args.random_input_len = n;
    }
    if let Some(n) = args.output_len {
        args.random_output_len = n;
        args.sharegpt_output_len = Some(n);
    }
    if args.dataset_name == DatasetName::Random {
        args.ignore_eos = true;
    }
    let percentile_metrics: Vec<String> = args
        .percentile_metrics
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    if let Some(m) = percentile_metrics
        .iter()
        .find(|m| !report::PERCENTILE_METRICS.contains(&m.as_str()))
    {
        return bad(format!(
            "--percentile-metrics: unknown metric {m:?} (ttft, tpot, itl, e2el)"
        ));
    }
    let percentiles: Vec<f64> = args
        .metric_percentiles
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            Error::InvalidArgs(format!(
                "--metric-percentiles: {:?} is not a list of numbers in [0, 100]",
                args.metric_percentiles
            ))
        })?;
    let goodput = Goodput::parse(&args.goodput).map_err(Error::InvalidArgs)?;
    let mut extra_body = serde_json::Map::new();
    let sampling = [
        ("top_p", args.top_p.map(Value::from)),
        ("top_k", args.top_k.map(Value::from)),
        ("min_p", args.min_p.map(Value::from)),
        ("temperature", args.temperature.map(Value::from)),
        ("frequency_penalty", args.frequency_penalty.map(Value::from)),
        ("presence_penalty", args.presence_penalty.map(Value::from)),
        (
            "repetition_penalty",
            args.repetition_penalty.map(Value::from),
        ),
    ];
    for (k, v) in sampling {
        if let Some(v) = v {
            extra_body.insert(k.into(), v);
        }
    }
    if let Some(raw) = &args.extra_body {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => extra_body.extend(m),
            _ => return bad(format!("--extra-body must be a JSON object, got {raw:?}")),
        }
    }
    let metadata: Vec<(String, String)> = args
        .metadata
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::InvalidArgs("--metadata: use KEY=VALUE pairs".into()))?;

    let base_url = args
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:{}", args.host, args.port))
        .trim_end_matches('/')
        .to_owned();
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| args.backend.default_endpoint().to_owned());
    let api_url = format!("{base_url}{endpoint}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(6 * 60 * 60))
        .build()
        .map_err(|e| Error::Http {
            url: base_url.clone(),
            message: error_chain(&e),
        })?;

    let model_id = match &args.model {
        Some(m) => m.clone(),
        None => {
            println!("Model not specified, fetching first model from server...");
            let m = first_model(&http, &base_url, args.api_key.as_deref()).await?;
            println!("First model name: {m}, first model id: {m}");
            m
        }
    };
    let tokenizer_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None => candela_model::default_model_path().filter(|p| p.exists()).ok_or_else(|| {
            Error::InvalidArgs(
                "no tokenizer: pass --tokenizer PATH (a .gguf or an HF model directory), or run scripts/setup.sh for the default model".into(),
            )
        })?,
    };
    let tokenizer = BenchTokenizer::load(&tokenizer_path)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let requests = match args.dataset_name {
        DatasetName::Sharegpt => {
            let path = args.dataset_path.as_deref().expect("checked above");
            let pairs = dataset::read_sharegpt(path)?;
            dataset::sample_sharegpt(
                pairs,
                args.num_prompts,
                args.sharegpt_output_len,
                &tokenizer,
                &mut rng,
            )?
        }
        DatasetName::Random => {
            let spec = RandomSpec {
                input_len: args.random_input_len,
                output_len: args.random_output_len,
                range_ratio: args.random_range_ratio,
                prefix_len: args.random_prefix_len,
            };
            dataset::sample_random(spec, args.num_prompts, &tokenizer, &mut rng)?
        }
    };

    let client = Arc::new(Client {
        http,
        backend: args.backend,
        api_url,
        model: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| model_id.clone()),
        ignore_eos: args.ignore_eos,
        extra_body,
        api_key: args.api_key.clone(),
    });
    let test_input = to_input(&requests[0]);
    if args.ready_check_timeout_sec > 0 {
        println!("Starting initial single prompt test run...");
        ready_check(
            &client,
            &test_input,
            Duration::from_secs(args.ready_check_timeout_sec),
        )
        .await?;
        println!("Initial test run completed.");
    } else {
        println!("Skipping endpoint ready check.");
    }
    if args.num_warmups > 0 {
        println!("Warming up with {} requests...", args.num_warmups);
        let epoch = Instant::now();
        let sem = Arc::new(Semaphore::new(
            args.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        let warmups: Vec<_> = (0..args.num_warmups)
            .map(|_| {
                let (client, input, sem) = (client.clone(), test_input.clone(), sem.clone());
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    client.send(&input, epoch).await
                })
            })
            .collect();
        futures::future::join_all(warmups).await;
        println!("Warmup run completed.");
    }
    println!("Starting main benchmark run...");
    if args.profile {
        println!("Starting profiler...");
        post_profile(&client, &format!("{base_url}/start_profile")).await?;
        println!("Profiler started");
    }
    println!(
        "Traffic request rate: {}",
        report::py_float(args.request_rate)
    );
    println!(
        "Burstiness factor: {} ({})",
        report::py_float(args.burstiness),
        arrivals::distribution_name(args.burstiness)
    );
    match args.max_concurrency {
        Some(c) => println!("Maximum request concurrency: {c}"),
        None => println!("Maximum request concurrency: None"),
    }

    let (outputs, duration) = run_requests(&client, &requests, &args, &mut rng).await;

    if args.profile {
        println!("Stopping profiler...");
        post_profile(&client, &format!("{base_url}/stop_profile")).await?;
        println!("Profiler stopped");
    }
    let m = metrics::calculate(
        &outputs,
        duration,
        |t| tokenizer.encode(t).len(),
        &percentiles,
        &goodput,
    );
    let failed: Vec<&RequestOutput> = outputs.iter().filter(|o| !o.success).collect();
    if !failed.is_empty() {
        println!("Failed requests during benchmark run detected (capping to 10):");
        for (i, o) in failed.iter().take(10).enumerate() {
            println!("Error {i}: {}", o.error);
        }
    }
    let info = RunInfo {
        backend: args.backend.name(),
        label: args.label.clone(),
        model_id: model_id.clone(),
        tokenizer_id: tokenizer_path.display().to_string(),
        num_prompts: args.num_prompts,
        request_rate: args.request_rate,
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        duration,
        goodput: goodput.is_set(),
        percentile_metrics,
        date: utc_now_stamp(),
        metadata,
    };
    print!("{}", report::result_block(&info, &m));
    let result = report::result_json(&info, &m, &outputs, args.save_detailed);

    let file = args
        .result_filename
        .clone()
        .unwrap_or_else(|| report::result_file_name(&info));
    let path = match &args.result_dir {
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
    if args.save_result {
        let text = serde_json::to_string_pretty(&result).expect("JSON values serialize");
        std::fs::write(&path, text).map_err(|e| Error::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        println!("Result written to {}", path.display());
        result_file = Some(path.clone());
    }
    let mut charts = Vec::new();
    if args.plot {
        let stem = path.with_extension("");
        let title = format!(
            "{} {} qps, concurrency {}",
            model_id,
            report::py_float(args.request_rate),
            args.max_concurrency
                .map_or("none".to_string(), |c| c.to_string())
        );
        charts = charts::write_charts(&stem, &title, &m, &outputs)?;
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

fn to_input(r: &SampleRequest) -> RequestInput {
    RequestInput {
        prompt: r.prompt.clone(),
        prompt_len: r.prompt_len,
        output_len: r.expected_output_len,
    }
}

/// Send every request at its arrival time, bounded by --max-concurrency; returns
/// the outputs in dataset order and the run's duration in seconds.
async fn run_requests(
    client: &Arc<Client>,
    requests: &[SampleRequest],
    args: &BenchServeArgs,
    rng: &mut StdRng,
) -> (Vec<RequestOutput>, f64) {
    let offsets = arrivals::send_offsets(requests.len(), args.request_rate, args.burstiness, rng);
    let bar = if args.disable_tqdm {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(requests.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    let sem = Arc::new(Semaphore::new(
        args.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let epoch = Instant::now();
    let mut tasks = Vec::with_capacity(requests.len());
    for (r, offset) in requests.iter().zip(offsets) {
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(offset)).into()).await;
        let (client, sem, bar, input) = (client.clone(), sem.clone(), bar.clone(), to_input(r));
        let arrived = Instant::now();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let mut out = client.send(&input, epoch).await;
            out.client_queue_time = out.start_time - arrived.duration_since(epoch).as_secs_f64();
            bar.inc(1);
            out
        }));
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outputs.push(t.await.unwrap_or_else(|e| RequestOutput {
            error: format!("request task failed: {e}"),
            ..Default::default()
        }));
    }
    let duration = epoch.elapsed().as_secs_f64();
    bar.finish();
    (outputs, duration)
}

/// Retry `input` until one request succeeds or `timeout` passes.
async fn ready_check(client: &Client, input: &RequestInput, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let out = client.send(input, start).await;
        if out.success {
            return Ok(());
        }
        // A server that answers with an HTTP error is up: the arguments are wrong.
        if out.error.starts_with("HTTP ") || start.elapsed() >= timeout {
            return Err(Error::Http {
                url: client.api_url.clone(),
                message: format!(
                    "initial test run failed - please make sure benchmark arguments are correctly specified. Error: {}",
                    out.error
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn post_profile(client: &Client, url: &str) -> Result<()> {
    let mut req = client.http.post(url);
    if let Some(k) = &client.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| Error::Http {
        url: url.into(),
        message: error_chain(&e),
    })?;
    if !resp.status().is_success() {
        return Err(Error::Http {
            url: url.into(),
            message: format!("HTTP {}", resp.status()),
        });
    }
    Ok(())
}

/// The first model the server lists on /v1/models.
async fn first_model(
    http: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
) -> Result<String> {
    let url = format!("{base_url}/v1/models");
    let err = |message: String| Error::Http {
        url: url.clone(),
        message,
    };
    let mut req = http.get(&url);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| err(format!("is the server running? {}", error_chain(&e))))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let v: Value = resp
        .json()
        .await
        .map_err(|e| err(format!("not a model list: {}", error_chain(&e))))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| err("the server lists no models; pass --model".into()))
}

/// `YYYYmmdd-HHMMSS` in UTC (vLLM's result date format).
fn utc_now_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The benchmark's tokenizer: the one a GGUF embeds, or an HF directory's.
pub struct BenchTokenizer {
    bundle: candela_model::TokenizerBundle,
}

impl BenchTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        let err = |e: candela_model::Error| Error::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let bundle = if path.is_dir() {
            candela_model::tokenizer::tokenizer_from_hf_dir(path).map_err(err)?
        } else {
            let (content, _file) = candela_model::load_gguf::read_gguf(path).map_err(err)?;
            candela_model::tokenizer::tokenizer_from_gguf(&content).map_err(err)?
        };
        Ok(BenchTokenizer { bundle })
    }
}

impl Tokenize for BenchTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.bundle
            .tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.bundle.tokenizer.decode(ids, false).unwrap_or_default()
    }

    fn ordinary_ids(&self) -> Vec<u32> {
        let special: std::collections::HashSet<u32> = self
            .bundle
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        (0..self.bundle.tokenizer.get_vocab_size(true) as u32)
            .filter(|id| !special.contains(id))
            .collect()
    }
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
}
