//! `/start_profile` … `/stop_profile` on the real engine: the Chrome trace holds
//! every engine step with its batch composition, the schedule, each layer's
//! attention and MLP, the LM head and sampling, as complete events Perfetto reads.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use candela::engine::GenerateRequest;
use candela::profiler::Profiler;
use candela_core::SamplingParams;
use serde_json::Value;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

async fn post(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let res = app
        .clone()
        .oneshot(Request::post(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_records_steps_layers_and_sampling() {
    let dir = std::env::temp_dir().join(format!("candela-prof-{}", std::process::id()));
    let profiler = Profiler::new(Some(dir.clone()));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(profiler.layer()))
        .unwrap();
    let app = candela::profiler::router(profiler.clone());
    let disabled = candela::profiler::router(Profiler::new(None));
    let (status, body) = post(&disabled, "/start_profile").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--profiler-dir")
    );
    assert_eq!(
        post(&app, "/stop_profile").await.0,
        StatusCode::BAD_REQUEST,
        "stop before start"
    );

    let m = common::load_default_model();
    let layers = m.config.num_layers;
    let engine = common::spawn_engine(&m, 64, 512, 8, 8);

    assert_eq!(post(&app, "/start_profile").await.0, StatusCode::OK);
    let prompt = m
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let req = GenerateRequest {
        prompt_token_ids: prompt.clone(),
        params: SamplingParams::greedy(4),
        priority: 0,
        tier: candela_core::ServiceTier::Default,
        arrival: Instant::now(),
        constraint: None,
        lora: None,
    };
    let mut stream = engine.submit(req).await.unwrap();
    let mut n = 0;
    while stream.next().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    let (status, body) = post(&app, "/stop_profile").await;
    assert_eq!(status, StatusCode::OK);
    let path = body["path"].as_str().unwrap().to_owned();
    let trace: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in events {
        assert_eq!(e["ph"], "X");
        assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0);
        *count.entry(e["name"].as_str().unwrap()).or_default() += 1;
    }
    // 4 tokens = 1 prefill step + 3 decode steps, each a forward through every layer.
    assert_eq!(count["step"], 4, "{count:?}");
    assert_eq!(count["forward"], 4);
    assert_eq!(count["sample"], 4);
    assert_eq!(count["layer"], 4 * layers);
    assert_eq!((count["attention"], count["mlp"]), (4 * layers, 4 * layers));
    let steps: Vec<&Value> = events.iter().filter(|e| e["name"] == "step").collect();
    assert_eq!(steps[0]["args"]["prefill_tokens"], prompt.len());
    assert_eq!(steps[1]["args"]["decode_tokens"], 1);
    std::fs::remove_dir_all(&dir).ok();
}
