//! End to end with real processes and no mocks: `candela serve` on the default
//! model, its gRPC API, and `candela sidecar` (the real binary) relaying its
//! metrics. One engine serves every check so the model loads once (twice: the
//! test restarts it to watch the sidecar reconnect).
//!
//! Checks: `Generate` streams the same greedy text as `/v1/completions`;
//! `WatchStats` rebuilds exactly the engine's `/metrics` (every `vllm:` sample);
//! the sidecar serves the same `vllm:` samples at a quiescent moment, its device
//! series, 401 without the token, finished profiles; `candela_sidecar_engine_up`
//! goes to 0 when the engine is killed and back to 1 when it restarts on the same
//! ports.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candela::grpc::{
    FinishReason, GenerateRequest, GrpcClient, HealthRequest, Prompt, SamplingParams,
    ServingStatus, StartProfileRequest, StopProfileRequest, TokenIds, WatchStatsRequest,
};
use candela::metrics::EngineMetrics;
use common::{Proc, free_port, spawn_serve};
use serde_json::{Value, json};

const TOKEN: &str = "sidecar-test-token";
const PROMPT: &str = "The capital of France is";

fn start_engine(model: &Path, http: u16, grpc: u16, profiles: &Path) -> Proc {
    let grpc = grpc.to_string();
    let args = [
        OsStr::new("--grpc-port"),
        OsStr::new(&grpc),
        OsStr::new("--max-model-len"),
        OsStr::new("256"),
        OsStr::new("--kv-cache-memory"),
        OsStr::new("64MiB"),
        OsStr::new("--served-model-name"),
        OsStr::new("smol"),
        OsStr::new("--model"),
        model.as_os_str(),
        OsStr::new("--profiler-dir"),
        profiles.as_os_str(),
    ];
    spawn_serve(http, args, Stdio::inherit())
}

fn start_sidecar(grpc: u16, port: u16, engine_pid: u32, profiles: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_candela"))
        .args([
            "sidecar",
            "--engine-grpc",
            &format!("http://127.0.0.1:{grpc}"),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--stats-interval-ms",
            "100",
        ])
        .args(["--engine-pid", &engine_pid.to_string()])
        .arg("--profiles-dir")
        .arg(profiles)
        .env("CANDELA_SIDECAR_METRICS_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn candela sidecar");
    let mut sidecar = Proc(child);
    wait_until("the sidecar answers", Duration::from_secs(30), || {
        if let Ok(Some(status)) = sidecar.0.try_wait() {
            panic!("candela sidecar exited early: {status}");
        }
        get(port, "/health", None).is_ok_and(|(status, _)| status == 200)
    });
    sidecar
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 exchange; `(status, body)`.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "test client reads plain bodies only"
    );
    Ok((status, body.to_owned()))
}

fn get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    request(port, "GET", path, "", token)
}

fn complete(port: u16, body: Value) -> Value {
    let (status, text) = request(port, "POST", "/v1/completions", &body.to_string(), None).unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Every `vllm:` sample of an exposition: `name{labels}` → value as printed.
fn vllm_samples(text: &str) -> BTreeMap<String, String> {
    // vLLM's series and the engine's own per-tier gauges (the sidecar's own are not the
    // engine's).
    text.lines()
        .filter(|l| l.starts_with("vllm:") || l.starts_with("candela_num_requests_"))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("sample line");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn engine_metrics(http: u16) -> String {
    let (status, body) = get(http, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    body
}

fn sidecar_metrics(port: u16) -> String {
    let (status, body) = get(port, "/metrics", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn grpc_and_sidecar_against_the_real_engine() {
    let model = common::default_model();
    let (http, grpc, sidecar_port) = (free_port(), free_port(), free_port());
    let profiles =
        std::env::temp_dir().join(format!("candela-sidecar-test-{}", std::process::id()));
    std::fs::create_dir_all(&profiles).unwrap();
    let mut engine = start_engine(&model, http, grpc, &profiles);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // A small workload over HTTP: greedy, stopped by length.
    let reference = complete(
        http,
        json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0}),
    );
    for max_tokens in [3, 5] {
        complete(
            http,
            json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0}),
        );
    }

    let (status, tokenized) = request(
        http,
        "POST",
        "/tokenize",
        &json!({"prompt": PROMPT}).to_string(),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{tokenized}");
    let prompt_ids: Vec<u32> = serde_json::from_value(
        serde_json::from_str::<Value>(&tokenized).unwrap()["tokens"].clone(),
    )
    .unwrap();
    rt.block_on(generate_streams_tokens(
        grpc,
        &prompt_ids,
        reference["choices"][0]["text"].as_str().unwrap(),
    ));
    wait_until("the engine is idle", Duration::from_secs(30), || {
        let text = engine_metrics(http);
        sample(
            &text,
            "vllm:num_requests_running{engine=\"0\",model_name=\"smol\"}",
        ) == Some(0.0)
            && sample(
                &text,
                "vllm:num_requests_waiting{engine=\"0\",model_name=\"smol\"}",
            ) == Some(0.0)
    });
    let trace = rt.block_on(profile_over_grpc(grpc, &profiles));
    rt.block_on(watch_stats_equals_metrics(grpc, http));

    let sidecar = start_sidecar(grpc, sidecar_port, engine.0.id(), &profiles);
    sidecar_relays_metrics(sidecar_port, http);
    sidecar_requires_the_token(sidecar_port);
    sidecar_serves_profiles(sidecar_port, &profiles, &trace);

    // The engine goes away: the sidecar keeps answering, engine_up 0, no vllm: series.
    drop(engine);
    wait_until("engine_up is 0", Duration::from_secs(20), || {
        sample(&sidecar_metrics(sidecar_port), "candela_sidecar_engine_up") == Some(0.0)
    });
    let down = sidecar_metrics(sidecar_port);
    assert!(
        vllm_samples(&down).is_empty(),
        "stale vllm: series while the engine is down:\n{down}"
    );
    assert!(sample(&down, "candela_host_memory_total_bytes").is_some_and(|v| v > 0.0));

    // Restarted on the same ports, it is found again without touching the sidecar.
    engine = start_engine(&model, http, grpc, &profiles);
    wait_until("engine_up is 1 again", Duration::from_secs(30), || {
        let text = sidecar_metrics(sidecar_port);
        sample(&text, "candela_sidecar_engine_up") == Some(1.0) && !vllm_samples(&text).is_empty()
    });
    let fresh = vllm_samples(&sidecar_metrics(sidecar_port));
    assert_eq!(
        fresh["vllm:prompt_tokens_total{engine=\"0\",model_name=\"smol\"}"], "0.0",
        "a new engine's counters"
    );
    drop(sidecar);
    drop(engine);
    let _ = std::fs::remove_dir_all(&profiles);
}

async fn generate_streams_tokens(grpc: u16, prompt_ids: &[u32], expected_text: &str) {
    let mut client = GrpcClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("gRPC connects");
    let health = client
        .health(HealthRequest {})
        .await
        .expect("Health")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    assert_eq!(health.model_name, "smol");

    let sampling = SamplingParams {
        temperature: Some(0.0),
        max_tokens: Some(8),
        ..Default::default()
    };
    let request = GenerateRequest {
        prompt: Some(Prompt::Text(PROMPT.into())),
        sampling: Some(sampling.clone()),
    };
    let mut stream = client
        .generate(request)
        .await
        .expect("Generate")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("stream item") {
        events.push(event);
    }
    assert!(events.len() > 1, "one message per token, got {events:?}");
    let (last, init) = events.split_last().unwrap();
    assert!(
        init.iter()
            .all(|e| e.finish_reason() == FinishReason::Unspecified && e.token_id.is_some())
    );
    assert_ne!(last.finish_reason(), FinishReason::Unspecified);
    assert_eq!(last.completion_tokens as usize, events.len());
    assert!(last.prompt_tokens > 0);
    let text: String = events.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        text, expected_text,
        "gRPC and HTTP give the same greedy text"
    );
    assert!(events.iter().all(|e| e.service_tier == "default"));

    // A service tier is taken and echoed (no API keys on gRPC: any tier).
    let flex = GenerateRequest {
        prompt: Some(Prompt::Text(PROMPT.into())),
        sampling: Some(SamplingParams {
            service_tier: Some("flex".into()),
            ..sampling.clone()
        }),
    };
    let mut stream = client
        .generate(flex)
        .await
        .expect("Generate flex")
        .into_inner();
    let mut flex_text = String::new();
    while let Some(event) = stream.message().await.expect("stream item") {
        assert_eq!(event.service_tier, "flex");
        flex_text.push_str(&event.text);
    }
    assert_eq!(flex_text, expected_text, "a tier changes when, not what");

    // The same prompt as token ids gives the same tokens.
    let by_ids = GenerateRequest {
        prompt: Some(Prompt::TokenIds(TokenIds {
            ids: prompt_ids.to_vec(),
        })),
        sampling: Some(sampling.clone()),
    };
    let mut stream = client
        .generate(by_ids)
        .await
        .expect("Generate by ids")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(event) = stream.message().await.expect("stream item") {
        ids.extend(event.token_id);
    }
    assert_eq!(
        ids,
        events.iter().filter_map(|e| e.token_id).collect::<Vec<_>>()
    );

    let bad = GenerateRequest {
        prompt: Some(Prompt::Text(PROMPT.into())),
        sampling: Some(SamplingParams {
            max_tokens: Some(0),
            ..sampling.clone()
        }),
    };
    let status = client
        .generate(bad)
        .await
        .expect_err("max_tokens 0 is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad_tier = GenerateRequest {
        prompt: Some(Prompt::Text(PROMPT.into())),
        sampling: Some(SamplingParams {
            service_tier: Some("scale".into()),
            ..sampling
        }),
    };
    let status = client
        .generate(bad_tier)
        .await
        .expect_err("an unknown tier is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("service_tier"), "{status:?}");
}

/// StartProfile, one request, StopProfile: the trace's file name in `dir`.
async fn profile_over_grpc(grpc: u16, dir: &Path) -> String {
    let mut client = GrpcClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("gRPC connects");
    client
        .start_profile(StartProfileRequest {})
        .await
        .expect("StartProfile");
    let sampling = SamplingParams {
        temperature: Some(0.0),
        max_tokens: Some(3),
        ..Default::default()
    };
    let request = GenerateRequest {
        prompt: Some(Prompt::Text(PROMPT.into())),
        sampling: Some(sampling),
    };
    let mut stream = client
        .generate(request)
        .await
        .expect("Generate")
        .into_inner();
    while stream.message().await.expect("stream item").is_some() {}
    let path = client
        .stop_profile(StopProfileRequest {})
        .await
        .expect("StopProfile")
        .into_inner()
        .path;
    let path = Path::new(&path);
    assert_eq!(
        path.parent(),
        Some(dir),
        "the trace is written to --profiler-dir"
    );
    assert!(path.is_file());
    let status = client
        .stop_profile(StopProfileRequest {})
        .await
        .expect_err("nothing running");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("a file name")
        .to_owned()
}

async fn watch_stats_equals_metrics(grpc: u16, http: u16) {
    let mut client = GrpcClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("gRPC connects");
    let asked = Instant::now();
    let mut stream = client
        .watch_stats(WatchStatsRequest { interval_ms: 50 })
        .await
        .expect("WatchStats")
        .into_inner();
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            stream
                .message()
                .await
                .expect("snapshot")
                .expect("stream open"),
        );
    }
    // The first comes at once, then one per interval: the fifth no sooner than 4 × 50 ms.
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "snapshots paced by interval_ms"
    );
    let metrics = EngineMetrics::try_from(last.expect("five snapshots")).expect("valid snapshot");
    assert!(
        metrics.prompt_tokens > 0 && metrics.success_length >= 3,
        "the workload is counted: {metrics:?}"
    );
    let from_grpc = vllm_samples(&metrics.render());
    let from_http = vllm_samples(&engine_metrics(http));
    assert!(from_http.len() > 100, "the engine exports every family");
    assert_eq!(
        from_grpc, from_http,
        "WatchStats rebuilds exactly the engine's /metrics"
    );
}

fn sidecar_relays_metrics(port: u16, http: u16) {
    let engine = vllm_samples(&engine_metrics(http));
    wait_until(
        "the sidecar shows the engine's samples",
        Duration::from_secs(20),
        || vllm_samples(&sidecar_metrics(port)) == engine,
    );
    let text = sidecar_metrics(port);
    assert_eq!(sample(&text, "candela_sidecar_engine_up"), Some(1.0));
    for series in [
        "candela_engine_process_resident_memory_bytes",
        "candela_engine_process_cpu_seconds_total",
        "candela_host_memory_total_bytes",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v > 0.0),
            "{series} missing or zero:\n{text}"
        );
    }
    assert!(text.contains("candela_host_cpu_seconds_total{mode=\"idle\"} "));
}

fn sidecar_requires_the_token(port: u16) {
    let (status, body) = get(port, "/metrics", None).unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(get(port, "/metrics", Some("wrong")).unwrap().0, 401);
    assert_eq!(get(port, "/profiles", None).unwrap().0, 401);
}

fn sidecar_serves_profiles(port: u16, dir: &Path, engine_trace: &str) {
    let trace = r#"{"traceEvents":[]}"#;
    std::fs::write(dir.join("trace-1.json"), trace).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a profile").unwrap();
    let (status, body) = get(port, "/profiles", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    let listing: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listing["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut expected = [engine_trace, "trace-1.json"];
    expected.sort_unstable();
    assert_eq!(names, expected, "finished profiles only");
    let (status, body) = get(port, &format!("/profiles/{engine_trace}"), Some(TOKEN)).unwrap();
    assert_eq!(status, 200);
    let events =
        serde_json::from_str::<Value>(&body).expect("the engine's trace is JSON")["traceEvents"]
            .clone();
    assert!(
        events.as_array().is_some_and(|e| !e.is_empty()),
        "the trace has events"
    );
    assert_eq!(
        get(port, "/profiles/trace-1.json", Some(TOKEN)).unwrap(),
        (200, trace.to_owned())
    );
    assert_eq!(
        get(port, "/profiles/notes.txt", Some(TOKEN)).unwrap().0,
        404
    );
    assert_eq!(
        get(port, "/profiles/..%2Fsecret.json", Some(TOKEN))
            .unwrap()
            .0,
        404
    );
}
