//! Stages 2 and 3 of `bench serve`, the ones that talk to the server.
//!
//! - [`plan`]: [`Settings`] → [`Plan`]: the HTTP client, the model id (asked of
//!   the server when `--model` is absent), the tokenizer and the sampled prompts.
//! - [`run`]: [`Plan`] → [`Run`]: ready check, warm-up, profiler, then every
//!   request at its arrival time under the concurrency cap.
//!
//! One seeded RNG samples the prompts and then draws the arrival gaps, as in
//! vLLM, so a seed reproduces both; it travels in the [`Plan`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::arrivals;
use super::client::{Client, RequestInput, error_chain};
use super::dataset::{self, SampleRequest, Tokenize};
use super::metrics::RequestOutput;
use super::report;
use super::validate::{Dataset, Settings, Traffic};
use crate::error::{Error, Result};

/// Everything ready to send.
pub struct Plan<T> {
    pub client: Arc<Client>,
    /// The model id reported in the result (`--model` or the server's first).
    pub model_id: String,
    pub tokenizer: T,
    pub tokenizer_path: PathBuf,
    /// At least one (validation refuses `--num-prompts 0`).
    pub requests: Vec<SampleRequest>,
    /// Past the dataset sampling; draws the arrival gaps next.
    pub rng: StdRng,
}

/// What the measured run produced.
pub struct Run {
    /// In dataset order.
    pub outputs: Vec<RequestOutput>,
    /// Seconds from the first send to the last response.
    pub duration: f64,
}

/// Builds the client, resolves the model and tokenizer, samples the prompts.
///
/// # Errors
/// [`Error::Http`] when the server cannot be asked for its model;
/// [`Error::InvalidArgs`] without a tokenizer; [`Error::Input`] when the
/// tokenizer or dataset cannot be read.
pub async fn plan<T: Tokenize, E: std::fmt::Display>(
    s: &Settings,
    load_tokenizer: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> Result<Plan<T>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(6 * 60 * 60))
        .build()
        .map_err(|e| Error::Http {
            url: s.base_url.clone(),
            message: error_chain(&e),
        })?;
    let model_id = match &s.model {
        Some(m) => m.clone(),
        None => {
            println!("Model not specified, fetching first model from server...");
            let m = first_model(&http, &s.base_url, s.api_key.as_deref()).await?;
            println!("First model name: {m}, first model id: {m}");
            m
        }
    };
    let tokenizer_path = match &s.tokenizer {
        Some(p) => p.clone(),
        None => candela_contract::model_ref::default_model_path().filter(|p| p.exists()).ok_or_else(|| {
            Error::InvalidArgs(
                "no tokenizer: pass --tokenizer PATH (a .gguf or an HF model directory), or run scripts/setup.sh for the default model".into(),
            )
        })?,
    };
    let tokenizer = load_tokenizer(&tokenizer_path).map_err(|e| Error::Input {
        path: tokenizer_path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut requests = match &s.dataset {
        Dataset::Sharegpt { path, output_len } => {
            let pairs = dataset::read_sharegpt(path)?;
            dataset::sample_sharegpt(pairs, s.num_prompts, *output_len, &tokenizer, &mut rng)?
        }
        Dataset::Random(spec) => {
            dataset::sample_random(*spec, s.num_prompts, &tokenizer, &mut rng)?
        }
    };
    // vLLM's `--lora-modules`: each request goes to an adapter drawn at random.
    if !s.lora_modules.is_empty() {
        for r in &mut requests {
            r.model = Some(
                s.lora_modules[rand::Rng::random_range(&mut rng, 0..s.lora_modules.len())].clone(),
            );
        }
    }
    let client = Arc::new(Client {
        http,
        backend: s.backend,
        api_url: s.api_url.clone(),
        model: s
            .served_model_name
            .clone()
            .unwrap_or_else(|| model_id.clone()),
        ignore_eos: s.ignore_eos,
        extra_body: s.extra_body.clone(),
        api_key: s.api_key.clone(),
        stream: s.stream,
    });
    Ok(Plan {
        client,
        model_id,
        tokenizer,
        tokenizer_path,
        requests,
        rng,
    })
}

/// Ready check, warm-up and profiler around the measured run.
///
/// # Errors
/// [`Error::Http`] when the ready check fails or the profiler endpoints refuse;
/// failed benchmark requests are outputs, not errors.
pub async fn run<T>(s: &Settings, plan: &mut Plan<T>) -> Result<Run> {
    let client = &plan.client;
    let test_input = to_input(&plan.requests[0]);
    if s.ready_check_timeout > Duration::ZERO {
        println!("Starting initial single prompt test run...");
        ready_check(client, &test_input, s.ready_check_timeout).await?;
        println!("Initial test run completed.");
    } else {
        println!("Skipping endpoint ready check.");
    }
    if s.num_warmups > 0 {
        println!("Warming up with {} requests...", s.num_warmups);
        warm_up(
            client,
            &test_input,
            s.num_warmups,
            s.traffic.max_concurrency,
        )
        .await;
        println!("Warmup run completed.");
    }
    println!("Starting main benchmark run...");
    if s.profile {
        println!("Starting profiler...");
        post_profile(client, &format!("{}/start_profile", s.base_url)).await?;
        println!("Profiler started");
    }
    let t = s.traffic;
    println!("Traffic request rate: {}", report::py_float(t.request_rate));
    println!(
        "Burstiness factor: {} ({})",
        report::py_float(t.burstiness),
        arrivals::distribution_name(t.burstiness)
    );
    match t.max_concurrency {
        Some(c) => println!("Maximum request concurrency: {c}"),
        None => println!("Maximum request concurrency: None"),
    }

    let run = send_all(client, &plan.requests, t, s.progress_bar, &mut plan.rng).await;

    if s.profile {
        println!("Stopping profiler...");
        post_profile(client, &format!("{}/stop_profile", s.base_url)).await?;
        println!("Profiler stopped");
    }
    Ok(run)
}

fn to_input(r: &SampleRequest) -> RequestInput {
    RequestInput {
        prompt: r.prompt.clone(),
        prompt_len: r.prompt_len,
        output_len: r.expected_output_len,
        model: r.model.clone(),
    }
}

/// `n` copies of `input`, unmeasured, under the same concurrency cap.
async fn warm_up(client: &Arc<Client>, input: &RequestInput, n: usize, cap: Option<usize>) {
    let epoch = Instant::now();
    let sem = Arc::new(Semaphore::new(cap.unwrap_or(Semaphore::MAX_PERMITS)));
    let warmups: Vec<_> = (0..n)
        .map(|_| {
            let (client, input, sem) = (client.clone(), input.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                client.send(&input, epoch).await
            })
        })
        .collect();
    futures::future::join_all(warmups).await;
}

/// Sends every request at its arrival time, bounded by the concurrency cap.
async fn send_all(
    client: &Arc<Client>,
    requests: &[SampleRequest],
    traffic: Traffic,
    progress_bar: bool,
    rng: &mut StdRng,
) -> Run {
    let offsets = arrivals::send_offsets(
        requests.len(),
        traffic.request_rate,
        traffic.burstiness,
        rng,
    );
    let bar = if progress_bar {
        indicatif::ProgressBar::new(requests.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    let sem = Arc::new(Semaphore::new(
        traffic.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
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
    Run { outputs, duration }
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
