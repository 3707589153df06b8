//! `candela bench serve` against a live `candela serve` on the default model:
//! the printed block and the result JSON agree with each other and with the
//! server's own counters (prompt/generation token and request-success deltas),
//! for the random dataset on /v1/completions and the shipped ShareGPT sample on
//! /v1/chat/completions, and without streaming (`--no-stream`) on both APIs;
//! failed requests are counted with their errors kept; bad flags fail with one
//! line. Charts come out as PNG and SVG.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ExpositionExt, Proc, free_port, http_get, parse_exposition, spawn_serve};
use serde_json::Value;

struct Server {
    _proc: Proc,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = free_port();
        let grpc = free_port().to_string();
        let model = common::default_model();
        let args = [
            OsStr::new("--grpc-port"),
            OsStr::new(&grpc),
            OsStr::new("--max-model-len"),
            OsStr::new("2048"),
            OsStr::new("--model"),
            model.as_os_str(),
        ];
        let proc = spawn_serve(port, args, Stdio::null());
        Server { _proc: proc, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (prompt tokens, generation tokens, successful requests) from /metrics.
    fn counters(&self) -> (f64, f64, f64) {
        let (status, text) = http_get(self.port, "/metrics").expect("metrics");
        assert_eq!(status, 200);
        let e = parse_exposition(&text);
        let success: f64 = e
            .samples
            .iter()
            .filter(|s| s.name == "vllm:request_success_total")
            .map(|s| s.value)
            .sum();
        (
            e.value("vllm:prompt_tokens_total", &[]),
            e.value("vllm:generation_tokens_total", &[]),
            success,
        )
    }
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candela"))
        .args(["bench", "serve", "--disable-tqdm"])
        .args(args)
        .output()
        .expect("run candela bench serve")
}

/// The one JSON file in `dir`.
fn result_json(dir: &Path) -> Value {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap()
}

/// The run's JSON totals equal the server's counter deltas: prompt tokens,
/// generation tokens and successful requests.
fn assert_counter_deltas(before: (f64, f64, f64), after: (f64, f64, f64), j: &Value) {
    let field = |k: &str| j[k].as_f64().unwrap();
    assert_eq!(
        after.0 - before.0,
        field("total_input_tokens"),
        "vllm:prompt_tokens_total"
    );
    assert_eq!(
        after.1 - before.1,
        field("total_output_tokens"),
        "vllm:generation_tokens_total"
    );
    assert_eq!(
        after.2 - before.2,
        field("completed"),
        "vllm:request_success_total"
    );
}

/// The value printed after `label` in the result block.
fn printed(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{stdout}"));
    line[label.len()..].trim().parse().unwrap()
}

#[test]
fn bench_serve_agrees_with_the_servers_counters() {
    let server = Server::start();
    let tmp = std::env::temp_dir().join(format!("candela-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);

    // 1. Random dataset, completions, Poisson arrivals with a concurrency cap.
    let before = server.counters();
    let dir = tmp.join("random");
    let out = bench(&[
        "--base-url",
        &server.url(),
        "--dataset-name",
        "random",
        "--random-input-len",
        "48",
        "--random-output-len",
        "12",
        "--num-prompts",
        "24",
        "--request-rate",
        "16",
        "--max-concurrency",
        "6",
        "--ready-check-timeout-sec",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--goodput",
        "e2el:600000",
        "--save-result",
        "--save-detailed",
        "--plot",
        "--result-dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.counters();
    let j = result_json(&dir);
    assert_eq!(j["completed"], 24);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["stream"], true);
    // Random prompts ignore EOS: every request generates exactly its 12 tokens.
    assert_eq!(j["total_output_tokens"], 24 * 12);
    assert_counter_deltas(before, after, &j);
    // The block prints the same numbers, in vLLM's order.
    assert_eq!(printed(&stdout, "Successful requests:"), 24.0);
    assert_eq!(
        printed(&stdout, "Total input tokens:"),
        j["total_input_tokens"].as_f64().unwrap()
    );
    assert_eq!(printed(&stdout, "Total generated tokens:"), 288.0);
    assert_eq!(printed(&stdout, "Maximum request concurrency:"), 6.0);
    assert_eq!(printed(&stdout, "Request rate configured (RPS):"), 16.0);
    assert!(printed(&stdout, "Peak concurrent requests:") <= 6.0);
    assert!((printed(&stdout, "P99 TTFT (ms):") - j["p99_ttft_ms"].as_f64().unwrap()).abs() < 0.01);
    let order = [
        "Successful requests:",
        "Benchmark duration (s):",
        "Request goodput (req/s):",
        "Mean TTFT (ms):",
        "Mean TPOT (ms):",
        "P90 ITL (ms):",
        "P99 E2EL (ms):",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|l| stdout.find(l).unwrap_or_else(|| panic!("{l} missing")))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "order {pos:?}");
    // Every request met the generous SLO; per-request detail is saved.
    let duration = j["duration"].as_f64().unwrap();
    assert!((j["request_goodput"].as_f64().unwrap() * duration - 24.0).abs() < 1e-6);
    assert_eq!(j["itls"].as_array().unwrap().len(), 24);
    assert!(j["output_lens"].as_array().unwrap().iter().all(|n| n == 12));
    assert!(j["mean_tpot_ms"].as_f64().unwrap() > 0.0 && j["p50_e2el_ms"].as_f64().unwrap() > 0.0);
    for suffix in [
        "latency-cdf.png",
        "latency-cdf.svg",
        "timeline.png",
        "timeline.svg",
    ] {
        let chart = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} chart"));
        let bytes = std::fs::read(chart).unwrap();
        if suffix.ends_with("png") {
            assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
        } else {
            assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
        }
    }

    // 2. The shipped ShareGPT sample over the chat API.
    let before = server.counters();
    let dir = tmp.join("sharegpt");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/data/sharegpt-sample.json");
    let out = bench(&[
        "--base-url",
        &server.url(),
        "--backend",
        "openai-chat",
        "--dataset-name",
        "sharegpt",
        "--dataset-path",
        sample.to_str().unwrap(),
        "--sharegpt-output-len",
        "16",
        "--num-prompts",
        "8",
        "--ready-check-timeout-sec",
        "0",
        "--save-result",
        "--result-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.counters();
    let j = result_json(&dir);
    assert_eq!(j["completed"], 8);
    assert_counter_deltas(before, after, &j);
    assert_eq!(j["backend"], "openai-chat");

    // 2b. Without streaming, on both APIs: whole answers, the same token counts;
    // only throughput and E2EL are reported.
    for backend in ["openai", "openai-chat"] {
        let before = server.counters();
        let dir = tmp.join(format!("nostream-{backend}"));
        let out = bench(&[
            "--base-url",
            &server.url(),
            "--backend",
            backend,
            "--no-stream",
            "--random-input-len",
            "32",
            "--random-output-len",
            "10",
            "--num-prompts",
            "6",
            "--max-concurrency",
            "3",
            "--ready-check-timeout-sec",
            "0",
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--save-result",
            "--result-dir",
            dir.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = server.counters();
        let j = result_json(&dir);
        assert_eq!(j["stream"], false, "{backend}");
        assert_eq!(j["completed"], 6, "{backend}: {stdout}");
        assert_eq!(j["total_output_tokens"], 6 * 10, "{backend}");
        assert_counter_deltas(before, after, &j);
        assert!(j["output_throughput"].as_f64().unwrap() > 0.0);
        assert!(j["p99_e2el_ms"].as_f64().unwrap() > 0.0);
        for gone in ["mean_ttft_ms", "mean_tpot_ms", "p99_itl_ms"] {
            assert!(j.get(gone).is_none(), "{backend}: {gone} reported");
        }
        assert!(!stdout.contains("Mean TPOT"), "{stdout}");
        assert!(stdout.contains("n/a"), "{stdout}");
    }

    // 3. A model the server does not serve: every request fails, errors are kept.
    let before = server.counters();
    let dir = tmp.join("failing");
    let out = bench(&[
        "--base-url",
        &server.url(),
        "--model",
        "no-such-model",
        "--num-prompts",
        "3",
        "--random-input-len",
        "8",
        "--random-output-len",
        "4",
        "--ready-check-timeout-sec",
        "0",
        "--save-result",
        "--result-dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(printed(&stdout, "Failed requests:"), 3.0);
    assert!(stdout.contains("Error 0: HTTP 404"), "{stdout}");
    let j = result_json(&dir);
    assert_eq!(j["failed"], 3);
    assert!(
        j["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.as_str().unwrap().contains("no-such-model"))
    );
    assert_eq!(
        server.counters(),
        before,
        "failed requests reach no counter"
    );

    // 4. The ready check names what is wrong instead of benchmarking a broken setup.
    let out = bench(&[
        "--base-url",
        &server.url(),
        "--model",
        "no-such-model",
        "--num-prompts",
        "1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("initial test run failed") && stderr.contains("404"),
        "{stderr}"
    );

    // 5. Bad flags: one clear line, no run.
    for (args, want) in [
        (
            vec!["--request-rate", "0"],
            "--request-rate must be positive",
        ),
        (
            vec!["--max-concurrency", "0"],
            "--max-concurrency must be greater than 0",
        ),
        (vec!["--dataset-name", "sharegpt"], "needs --dataset-path"),
        (vec!["--goodput", "ttft"], "KEY:VALUE"),
        (vec!["--percentile-metrics", "ttft,foo"], "unknown metric"),
    ] {
        let mut all = vec!["--base-url", "http://127.0.0.1:9"];
        all.extend(args);
        let out = bench(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want),
            "{all:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
