//! The sidecar's LoRA sync against the real engine, with real processes and no mocks:
//! `candela serve --enable-lora --api-key` (with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`)
//! on the default model, and `candela sidecar --lora-adapters-file` following a file the
//! way it follows the operator's ConfigMap volume. Adapters are PEFT directories (rank 8 on
//! `q_proj` and `v_proj`) written by `scripts/make-lora-adapters.py`.
//!
//! Checks: the listed adapters get loaded (`/v1/models` lists them with the base model as
//! `parent`) and serve requests; editing the file unloads and loads the difference in the
//! running engine (same process); an invalid file changes nothing and is counted; the
//! sidecar's `/metrics` reports desired, loaded, in-sync and the changes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, spawn_healthy};
use serde_json::{Value, json};

const KEY: &str = "sidecar-lora-key";
/// Writes the adapter list as the operator's ConfigMap holds it: a new file moved into
/// place (the kubelet swaps a symlink; readers never see half a file either way).
fn write_list(file: &Path, adapters: &[(&str, &Path)]) {
    let list = json!({"adapters": adapters
        .iter()
        .map(|(name, path)| json!({"name": name, "path": path}))
        .collect::<Vec<_>>()});
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, list.to_string()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

async fn models(client: &reqwest::Client, http: u16) -> Vec<Value> {
    let body: Value = client
        .get(format!("http://127.0.0.1:{http}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"].as_array().cloned().unwrap_or_default()
}

fn adapter_names(cards: &[Value]) -> BTreeSet<String> {
    cards
        .iter()
        .filter(|c| c["parent"].is_string())
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect()
}

async fn sidecar_metrics(metrics: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .map(|r| r.text())
        .unwrap_or_else(|e| panic!("sidecar /metrics: {e}"))
        .await
        .unwrap()
}

/// Waits until the engine lists exactly `want` and the sidecar says it is in sync.
async fn wait_synced(client: &reqwest::Client, http: u16, metrics: u16, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = adapter_names(&models(client, http).await);
        // The sidecar may not listen yet right after it was started.
        let text = match reqwest::get(format!("http://127.0.0.1:{metrics}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("not answering yet: {e}"),
        };
        if have == want && text.lines().any(|l| l == "candela_sidecar_lora_in_sync 1") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "engine has {have:?}, want {want:?}; sidecar metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_loads_and_unloads_adapters_in_the_running_engine() {
    let scratch: PathBuf =
        std::env::temp_dir().join(format!("candela-sidecar-lora-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let [sql, support, french]: [PathBuf; 3] = common::make_lora_adapters(
        &scratch,
        "sql,support,french",
        &["--targets", "q_proj,v_proj"],
    )
    .try_into()
    .unwrap();
    let list = scratch.join("adapters.json");
    write_list(&list, &[("sql", &sql), ("support", &support)]);

    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let model = common::default_model();
    let mut cmd = common::serve_command(http);
    cmd.args(["--grpc-port", &grpc.to_string()])
        .args(["--max-model-len", "256", "--kv-cache-memory", "64MiB"])
        .args([
            "--served-model-name",
            "smol",
            "--enable-lora",
            "--max-loras",
            "2",
        ])
        .arg("--model")
        .arg(&model)
        .env("CANDELA_API_KEY", KEY)
        .env(candela_contract::env::ALLOW_RUNTIME_LORA_UPDATING, "True")
        .stderr(Stdio::inherit());
    let mut engine = tokio::task::spawn_blocking(move || spawn_healthy(cmd, http))
        .await
        .unwrap();
    let engine_pid = engine.0.id();

    let sidecar = Proc(
        Command::new(env!("CARGO_BIN_EXE_candela"))
            .args([
                "sidecar",
                "--engine-grpc",
                &format!("http://127.0.0.1:{grpc}"),
            ])
            .args(["--listen", &format!("127.0.0.1:{metrics}")])
            .args(["--engine-http", &format!("http://127.0.0.1:{http}")])
            .arg("--lora-adapters-file")
            .arg(&list)
            .args(["--lora-sync-interval-ms", "200"])
            .env("CANDELA_API_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn candela sidecar"),
    );
    let client = reqwest::Client::new();

    // 1. The listed adapters are loaded, under the base model, and serve requests.
    wait_synced(&client, http, metrics, &["sql", "support"]).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{metrics}/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready once the list is applied");
    let cards = models(&client, http).await;
    for card in cards.iter().filter(|c| c["parent"].is_string()) {
        assert_eq!(card["parent"], "smol", "{card}");
    }
    let answer = client
        .post(format!("http://127.0.0.1:{http}/v1/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "sql", "prompt": "SELECT", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);

    // 2. Edit the list: one stays, one goes, one comes, in the same engine process.
    write_list(&list, &[("sql", &sql), ("french", &french)]);
    wait_synced(&client, http, metrics, &["french", "sql"]).await;
    assert!(
        engine.0.try_wait().unwrap().is_none() && engine.0.id() == engine_pid,
        "the engine was not restarted"
    );
    let text = sidecar_metrics(metrics).await;
    assert_eq!(
        metric(
            &text,
            "candela_sidecar_lora_adapter_changes_total{action=\"load\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "candela_sidecar_lora_adapter_changes_total{action=\"unload\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "candela_sidecar_lora_adapters_desired"), 2.0);
    assert_eq!(metric(&text, "candela_sidecar_lora_adapters_loaded"), 2.0);

    // 3. An invalid list changes nothing and is counted as a file error.
    std::fs::write(&list, "{\"adapters\": [").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = sidecar_metrics(metrics).await;
        if metric(
            &text,
            "candela_sidecar_lora_sync_errors_total{kind=\"file\"}",
        ) >= 2.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        adapter_names(&models(&client, http).await),
        BTreeSet::from(["french".to_owned(), "sql".to_owned()])
    );

    drop(sidecar);
    drop(engine);
    std::fs::remove_dir_all(&scratch).ok();
}
