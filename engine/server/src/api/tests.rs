//! Router tests: every route through axum against the real engine thread running
//! the default model (SmolLM2-135M-Instruct, fetched by `scripts/setup.sh`).
//!
//! The model is loaded once per test binary; each test starts its own engine
//! (scheduler, runner, small KV pool) from a clone of the weights, so tests share
//! no queue or cache. Generation is greedy or seeded and a few tokens long, which
//! keeps the suite cheap and its outputs reproducible.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use candela_core::{CacheConfig, Scheduler, SchedulerConfig, SchedulerStats, SchedulingPolicy};
use candela_model::{Llama, ModelRunner, RunnerConfig};
use serde_json::{Value, json};
use tokenizers::Tokenizer;
use tower::ServiceExt;

use super::{AppState, ChatMessage, ChatTemplate, TemplateOptions, router};
use crate::engine::{self, EngineClient};
use crate::frontend::structured::Compiler;
use crate::metrics::{CacheInfo, EngineMetrics};

mod chat;
mod completions;
mod routes;

const MAX_MODEL_LEN: usize = 512;
const BLOCK_SIZE: usize = 16;
/// 4,096 tokens of KV: room for every test's concurrent sequences at full length.
const KV_BLOCKS: usize = 256;
/// How long a test waits for the engine to reach a state (it gets there in a step or two).
const DEADLINE: Duration = Duration::from_secs(10);

/// A greedy completion of this prompt starts " Paris." (5 prompt tokens).
const FRANCE: &str = "The capital of France is";

/// What every test's engine and router are built from.
struct Model {
    model: Llama,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    eos_token_ids: Vec<u32>,
    grammars: Arc<Compiler>,
    path: String,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| {
    let path = candela_contract::model_ref::default_model_path().expect("$HOME is set");
    assert!(
        path.exists(),
        "the default model {} is missing: run scripts/setup.sh first",
        path.display()
    );
    let loaded = candela_model::load(&path).expect("the default model loads");
    let source = loaded.chat_template.expect("SmolLM2 ships a chat template");
    let template = candela_model::ChatTemplate::new(
        &source,
        loaded.bos_token.as_deref(),
        loaded.eos_token.as_deref(),
    )
    .expect("the chat template compiles");
    let grammars = candela_structured::Grammars::new(
        &loaded.tokenizer,
        &loaded.eos_token_ids,
        loaded.config.vocab_size,
    );
    Model {
        grammars: Arc::new(grammars),
        model: loaded.model,
        tokenizer: Arc::new(loaded.tokenizer),
        template: render(template),
        eos_token_ids: loaded.eos_token_ids,
        path: path.display().to_string(),
    }
});

/// The API's template callback over a compiled template, as `serve::start` builds it.
fn render(template: candela_model::ChatTemplate) -> Arc<ChatTemplate> {
    Arc::new(move |messages: &[ChatMessage], options: &TemplateOptions| {
        template
            .render_with(&messages, options.add_generation_prompt, options)
            .map_err(|e| e.to_string())
    })
}

/// Scheduler limits a test may change.
#[derive(Clone, Copy)]
struct Limits {
    max_num_seqs: usize,
    max_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_num_seqs: 8,
            max_waiting: 64,
        }
    }
}

/// Starts a fresh engine thread on the shared weights; it stops when the last
/// [`EngineClient`] (the router's included) is dropped.
fn engine(limits: Limits) -> EngineClient {
    let m = &*MODEL;
    let scheduler = SchedulerConfig {
        max_num_seqs: limits.max_num_seqs,
        max_num_batched_tokens: MAX_MODEL_LEN,
        max_model_len: MAX_MODEL_LEN,
        enable_chunked_prefill: false,
        policy: SchedulingPolicy::Fcfs,
        delay_factor: 0.0,
        max_waiting: limits.max_waiting,
        eos_token_ids: m.eos_token_ids.clone(),
        num_lookahead_tokens: 0,
        max_loras: 0,
        max_num_seqs_per_tier: candela_core::TierCaps::default(),
    };
    let cache = CacheConfig {
        block_size: BLOCK_SIZE,
        num_device_blocks: KV_BLOCKS,
        num_host_blocks: 0,
        enable_prefix_caching: false,
    };
    let runner = ModelRunner::new(
        m.model.clone(),
        RunnerConfig {
            num_device_blocks: KV_BLOCKS,
            num_host_blocks: 0,
            block_size: BLOCK_SIZE,
        },
    );
    let scheduler = Scheduler::new(scheduler, cache).expect("test limits are valid");
    let cache_info = CacheInfo {
        block_size: BLOCK_SIZE,
        num_gpu_blocks: KV_BLOCKS,
        num_cpu_blocks: 0,
        enable_prefix_caching: false,
        cache_dtype: "auto".into(),
        gpu_memory_utilization: 0.0,
        swap_space_gib: 0.0,
    };
    let metrics = EngineMetrics::new("smol", MAX_MODEL_LEN, cache_info);
    let (client, _thread) =
        engine::spawn(scheduler, runner, metrics).expect("engine thread starts");
    client
}

/// The production [`AppState`] over a fresh engine.
fn state_with(limits: Limits, api_key: Option<&str>) -> AppState {
    let m = &*MODEL;
    AppState {
        engine: engine(limits),
        tokenizer: m.tokenizer.clone(),
        grammars: m.grammars.clone(),
        auto_tool_parser: Some(crate::frontend::tool_calls::ToolParser::Hermes),
        chat_template: m.template.clone(),
        served_model_names: vec!["smol".into(), "org/alias".into()],
        max_model_len: MAX_MODEL_LEN,
        api_keys: crate::frontend::keys::ApiKeys::single(api_key.map(str::to_owned)),
        model_root: m.path.clone(),
        created: 1,
        loras: None,
        runtime_lora_updating: false,
    }
}

/// A router and a handle on its engine (for [`SchedulerStats`]).
fn app_with(limits: Limits) -> (axum::Router, EngineClient) {
    let state = state_with(limits, None);
    let engine = state.engine.clone();
    (router(state), engine)
}

fn app() -> (axum::Router, EngineClient) {
    app_with(Limits::default())
}

fn request(method: &str, uri: &str, body: Option<Body>, key: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    req.header(header::CONTENT_TYPE, "application/json")
        .body(body.unwrap_or_else(Body::empty))
        .unwrap()
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Body>,
    key: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let res = app
        .clone()
        .oneshot(request(method, uri, body, key))
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, bytes) = call(app, "POST", uri, Some(Body::from(body.to_string())), None).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// POSTs and insists on a 200.
async fn post_ok(app: &axum::Router, uri: &str, body: Value) -> Value {
    let (status, v) = post(app, uri, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// How many tokens `/tokenize` counts for `body` (a prompt or messages).
async fn token_count(app: &axum::Router, body: Value) -> u64 {
    post_ok(app, "/tokenize", body).await["count"]
        .as_u64()
        .unwrap()
}

/// The `data:` payloads of an SSE body.
fn sse_events(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// The JSON chunks of an SSE body, after checking it ends with `[DONE]`.
fn sse_chunks(bytes: &[u8]) -> Vec<Value> {
    let events = sse_events(bytes);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// Polls the engine's gauges until `done` holds; panics with them after [`DEADLINE`].
async fn wait_for(engine: &EngineClient, what: &str, done: impl Fn(&SchedulerStats) -> bool) {
    let start = Instant::now();
    loop {
        let stats = engine.stats();
        if done(&stats) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "engine never reached `{what}`: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the engine holds no request and no KV block.
async fn wait_drained(engine: &EngineClient) {
    wait_for(engine, "drained", |s| {
        s.num_running + s.num_waiting == 0 && s.device_cache_usage == 0.0
    })
    .await;
}

/// Asserts the alternatives are log-probabilities and the greedy pick is the likeliest.
fn assert_greedy_logprob(chosen: f64, alternatives: &[f64]) {
    assert!(alternatives.iter().all(|&lp| lp <= 0.0), "{alternatives:?}");
    let best = alternatives
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        (chosen - best).abs() < 1e-6,
        "greedy pick {chosen} is not the best of {alternatives:?}"
    );
    assert!(chosen <= 0.0);
}
