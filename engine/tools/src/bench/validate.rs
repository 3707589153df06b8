//! Stage 1 of `bench serve`: flags → [`Settings`], every check that needs no
//! server, no tokenizer and no file. Later stages trust what comes out (a
//! ShareGPT run has its path, percentiles are in range, the extra body is an
//! object), so a bad flag fails here with one line before anything is sent.
//!
//! vLLM's folding rules apply: `--input-len` / `--output-len` set the
//! dataset-specific lengths, and the random dataset always sends `ignore_eos`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::client::Backend;
use super::dataset::RandomSpec;
use super::metrics::Goodput;
use super::report;
use super::{BenchServeArgs, DatasetName};
use crate::error::{Error, Result};

/// Validated `bench serve` flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    /// Without a trailing `/`.
    pub base_url: String,
    /// `base_url` + endpoint.
    pub api_url: String,
    pub api_key: Option<String>,
    /// `--model`; `None` asks the server.
    pub model: Option<String>,
    pub served_model_name: Option<String>,
    /// `--lora-modules`: adapter names drawn at random per request.
    pub lora_modules: Vec<String>,
    /// `--tokenizer`; `None` means the default model.
    pub tokenizer: Option<PathBuf>,
    pub dataset: Dataset,
    pub num_prompts: usize,
    pub seed: u64,
    pub traffic: Traffic,
    pub ignore_eos: bool,
    /// Stream answers (vLLM's way); `false` (`--no-stream`) reads whole answers.
    pub stream: bool,
    /// Sampling flags and `--extra-body`, merged into every request.
    pub extra_body: Map<String, Value>,
    pub num_warmups: usize,
    /// Zero skips the ready check.
    pub ready_check_timeout: Duration,
    pub profile: bool,
    pub progress_bar: bool,
    pub output: OutputSettings,
}

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum Dataset {
    Sharegpt {
        path: PathBuf,
        /// Fixed output length; `None` keeps the dataset's answer lengths.
        output_len: Option<usize>,
    },
    Random(RandomSpec),
}

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Requests per second, positive (`inf` sends all at once).
    pub request_rate: f64,
    /// Gamma shape of the arrival gaps, positive.
    pub burstiness: f64,
    /// At least 1 when set.
    pub max_concurrency: Option<usize>,
}

/// What the report stage computes and writes.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// Names from [`report::PERCENTILE_METRICS`], in flag order.
    pub percentile_metrics: Vec<String>,
    /// Each in [0, 100].
    pub percentiles: Vec<f64>,
    pub goodput: Goodput,
    pub metadata: Vec<(String, String)>,
    pub label: Option<String>,
    pub save_result: bool,
    pub save_detailed: bool,
    pub result_dir: Option<PathBuf>,
    pub result_filename: Option<String>,
    pub plot: bool,
}

/// Checks and parses the flags (in vLLM's order, so the first problem named is
/// the one vLLM would name).
///
/// # Errors
/// [`Error::InvalidArgs`] with one line naming the flag.
pub fn validate(args: BenchServeArgs) -> Result<Settings> {
    let traffic = traffic(&args)?;
    if args.num_prompts == 0 {
        return bad("--num-prompts must be at least 1".into());
    }
    let dataset = dataset(&args)?;
    let (percentile_metrics, percentiles) = percentiles(&args)?;
    let goodput = Goodput::parse(&args.goodput).map_err(Error::InvalidArgs)?;
    if args.no_stream && (goodput.ttft_ms.is_some() || goodput.tpot_ms.is_some()) {
        return bad(
            "--goodput ttft/tpot need streaming: with --no-stream only e2el is measured".into(),
        );
    }
    let extra_body = extra_body(&args)?;
    let metadata = metadata(&args)?;
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
    Ok(Settings {
        backend: args.backend,
        api_url: format!("{base_url}{endpoint}"),
        base_url,
        api_key: args.api_key,
        model: args.model,
        served_model_name: args.served_model_name,
        lora_modules: args.lora_modules,
        tokenizer: args.tokenizer,
        ignore_eos: args.ignore_eos || matches!(dataset, Dataset::Random(_)),
        stream: !args.no_stream,
        dataset,
        num_prompts: args.num_prompts,
        seed: args.seed,
        traffic,
        extra_body,
        num_warmups: args.num_warmups,
        ready_check_timeout: Duration::from_secs(args.ready_check_timeout_sec),
        profile: args.profile,
        progress_bar: !args.disable_tqdm,
        output: OutputSettings {
            percentile_metrics,
            percentiles,
            goodput,
            metadata,
            label: args.label,
            save_result: args.save_result,
            save_detailed: args.save_detailed,
            result_dir: args.result_dir,
            result_filename: args.result_filename,
            plot: args.plot,
        },
    })
}

fn bad<T>(message: String) -> Result<T> {
    Err(Error::InvalidArgs(message))
}

fn traffic(args: &BenchServeArgs) -> Result<Traffic> {
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
    Ok(Traffic {
        request_rate: args.request_rate,
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
    })
}

fn dataset(args: &BenchServeArgs) -> Result<Dataset> {
    match (args.dataset_name, &args.dataset_path) {
        (DatasetName::Random, Some(p)) => bad(format!(
            "cannot use the 'random' dataset with --dataset-path {}; use --dataset-name sharegpt for a ShareGPT file",
            p.display()
        )),
        (DatasetName::Sharegpt, None) => bad(
            "--dataset-name sharegpt needs --dataset-path (e.g. engine/tools/data/sharegpt-sample.json)"
                .into(),
        ),
        (DatasetName::Sharegpt, Some(path)) => Ok(Dataset::Sharegpt {
            path: path.clone(),
            output_len: args.output_len.or(args.sharegpt_output_len),
        }),
        (DatasetName::Random, None) => Ok(Dataset::Random(RandomSpec {
            input_len: args.input_len.unwrap_or(args.random_input_len),
            output_len: args.output_len.unwrap_or(args.random_output_len),
            range_ratio: args.random_range_ratio,
            prefix_len: args.random_prefix_len,
        })),
    }
}

/// `--percentile-metrics` and `--metric-percentiles`.
fn percentiles(args: &BenchServeArgs) -> Result<(Vec<String>, Vec<f64>)> {
    let metrics: Vec<String> = args
        .percentile_metrics
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    if let Some(m) = metrics
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
    Ok((metrics, percentiles))
}

/// Sampling flags, then `--extra-body` over them.
fn extra_body(args: &BenchServeArgs) -> Result<Map<String, Value>> {
    let mut body = Map::new();
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
            body.insert(k.into(), v);
        }
    }
    if let Some(raw) = &args.extra_body {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => body.extend(m),
            _ => return bad(format!("--extra-body must be a JSON object, got {raw:?}")),
        }
    }
    Ok(body)
}

fn metadata(args: &BenchServeArgs) -> Result<Vec<(String, String)>> {
    args.metadata
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::InvalidArgs("--metadata: use KEY=VALUE pairs".into()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchServeArgs,
    }

    fn settings(flags: &[&str]) -> Result<Settings> {
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        validate(Cli::try_parse_from(argv).expect("flags parse").args)
    }

    fn refused(flags: &[&str]) -> String {
        settings(flags).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_vllms() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.base_url, "http://127.0.0.1:8000");
        assert_eq!(s.api_url, "http://127.0.0.1:8000/v1/completions");
        let Dataset::Random(spec) = s.dataset else {
            panic!("random is the default dataset");
        };
        assert_eq!((spec.input_len, spec.output_len), (1024, 128));
        assert!(s.ignore_eos, "the random dataset always ignores EOS");
        assert_eq!(s.output.percentile_metrics, ["ttft", "tpot", "itl"]);
        assert_eq!(s.output.percentiles, [99.0]);
        assert!(s.extra_body.is_empty());
        assert!(s.stream, "vLLM always streams");
        assert!(s.progress_bar);
        assert_eq!(s.ready_check_timeout, Duration::from_secs(600));
    }

    #[test]
    fn general_lengths_fold_into_the_datasets_and_urls_are_joined() {
        let s = settings(&[
            "--input-len",
            "7",
            "--output-len",
            "9",
            "--base-url",
            "http://h:1/",
            "--backend",
            "openai-chat",
        ])
        .unwrap();
        let Dataset::Random(spec) = s.dataset else {
            panic!("random");
        };
        assert_eq!((spec.input_len, spec.output_len), (7, 9));
        assert_eq!(s.api_url, "http://h:1/v1/chat/completions");
        let s = settings(&[
            "--dataset-name",
            "sharegpt",
            "--dataset-path",
            "d.json",
            "--output-len",
            "5",
        ])
        .unwrap();
        assert!(!s.ignore_eos);
        assert!(matches!(
            s.dataset,
            Dataset::Sharegpt { output_len: Some(5), ref path } if path == &PathBuf::from("d.json")
        ));
    }

    #[test]
    fn sampling_flags_and_extra_body_merge() {
        let s = settings(&[
            "--temperature",
            "0.5",
            "--top-k",
            "3",
            "--extra-body",
            r#"{"top_k": 4, "seed": 1}"#,
        ])
        .unwrap();
        assert_eq!(
            Value::Object(s.extra_body),
            serde_json::json!({"temperature": 0.5, "top_k": 4, "seed": 1})
        );
    }

    #[test]
    fn no_stream_turns_streaming_off_and_keeps_e2el_goodput() {
        let s = settings(&["--no-stream", "--goodput", "e2el:1000"]).unwrap();
        assert!(!s.stream);
        assert_eq!(s.output.goodput.e2el_ms, Some(1000.0));
    }

    #[test]
    fn bad_flags_are_one_line_each() {
        for (flags, want) in [
            (
                ["--max-concurrency", "0"],
                "--max-concurrency must be greater than 0",
            ),
            (["--request-rate", "0"], "--request-rate must be positive"),
            (["--request-rate", "NaN"], "--request-rate must be positive"),
            (["--burstiness", "0"], "--burstiness must be positive"),
            (["--num-prompts", "0"], "--num-prompts must be at least 1"),
            (
                ["--dataset-path", "x.json"],
                "cannot use the 'random' dataset",
            ),
            (["--dataset-name", "sharegpt"], "needs --dataset-path"),
            (
                ["--percentile-metrics", "ttft,foo"],
                "unknown metric \"foo\"",
            ),
            (["--metric-percentiles", "50,101"], "--metric-percentiles"),
            (["--goodput", "ttft"], "KEY:VALUE"),
            (
                ["--extra-body", "[1]"],
                "--extra-body must be a JSON object",
            ),
            (["--metadata", "novalue"], "KEY=VALUE"),
            (["--no-stream", "--goodput=tpot:50"], "need streaming"),
        ] {
            let e = refused(&flags);
            assert!(e.contains(want), "{flags:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
