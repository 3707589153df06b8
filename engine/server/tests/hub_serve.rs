//! `candela serve` with hub models, end to end against a local hub
//! (`engine/hub/tests/fake_hub.py`, pointed to by `HF_ENDPOINT`) serving the real default
//! GGUF (two revisions) and the default model as a Hugging Face directory: the first start
//! downloads with a progress line (resuming after a cut connection), the next starts use
//! the cache (online without downloading, offline with the hub gone), `--revision` pins
//! another file, a bare `org/name` serves an HF directory, and every failure is one line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use candela_hub::fake::FakeHub;
use common::{Proc, free_port, http_get, http_post, serve_command, spawn_healthy};

const GGUF_REPO: &str = "candela-test/SmolLM2-135M-Instruct-GGUF";
const HF_REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("candela-hubserve-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two revisions of a GGUF repository (main: the real default model; v1: the same with
/// another `general.name`, so another file) and the HF-directory repository.
fn hub_config(root: &Path) -> serde_json::Value {
    let gguf = common::default_model();
    let main = root.join("gguf-main");
    let v1 = root.join("gguf-v1");
    std::fs::create_dir_all(&main).unwrap();
    std::fs::create_dir_all(&v1).unwrap();
    std::os::unix::fs::symlink(&gguf, main.join(GGUF_FILE)).unwrap();
    std::fs::write(main.join("README.md"), "SmolLM2-135M-Instruct, Q4_1\n").unwrap();
    let mut bytes = std::fs::read(&gguf).unwrap();
    let name = b"Smollm2 135M 8k Lc100K Mix1 Ep2";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("general.name");
    bytes[at + name.len() - 1] = b'3';
    std::fs::write(v1.join(GGUF_FILE), bytes).unwrap();
    serde_json::json!({
        "repos": {
            GGUF_REPO: {"revisions": {"main": main, "v1": v1}},
            HF_REPO: {"revisions": {"main": common::default_hf_dir()}},
            "candela-test/gated": {"revisions": {"main": main}, "gated": true, "granted": ["hf_good"]},
        },
        "tokens": ["hf_good"],
    })
}

fn serve(port: u16, hub: &str, hf_home: &Path, log: &Path, args: &[&str]) -> Command {
    let mut cmd = serve_command(port);
    cmd.args([
        "--grpc-port",
        &free_port().to_string(),
        "--max-model-len",
        "2048",
    ])
    .args(args)
    .env("HF_ENDPOINT", hub)
    .env("HF_HOME", hf_home)
    .env_remove("HF_TOKEN")
    .env_remove("HF_HUB_OFFLINE")
    .env("RUST_LOG", "info");
    // The log goes to stdout, errors to stderr: both into the log file.
    let file = std::fs::File::create(log).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    cmd
}

/// A chat answer (non-empty) and a greedy completion that knows the capital of France:
/// the model was loaded whole and right.
fn answers(port: u16) {
    let (status, body) = http_post(
        port,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":24,"temperature":0}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chat = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!chat.trim().is_empty(), "{body}");
    let (status, body) = http_post(
        port,
        "/v1/completions",
        r#"{"prompt":"The capital of France is","max_tokens":8,"temperature":0}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

fn models(port: u16) -> serde_json::Value {
    let (status, body) = http_get(port, "/v1/models").unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn hub_gguf_downloads_once_then_serves_from_the_cache_and_offline() {
    let root = tmp("gguf");
    let hf_home = root.join("hf");
    let hub = FakeHub::start(&hub_config(&root), &root);
    let model = format!("hf://{GGUF_REPO}:Q4_1");

    // First start: downloads, cut once at 40 MiB and resumed, with progress in the log.
    hub.cut(GGUF_FILE, 40 << 20, 1);
    let port = free_port();
    let log = root.join("first.log");
    let server = spawn_healthy(serve(port, &hub.url(), &hf_home, &log, &[&model]), port);
    answers(port);
    let m = models(port);
    assert_eq!(m["data"][0]["id"], GGUF_REPO);
    let ids: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&model.as_str()), "{ids:?}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    for want in [
        &format!("downloading hf://{GGUF_REPO}/{GGUF_FILE}: 0.0 MiB of 93.8 MiB (0%)"),
        "resuming at 40.0 MiB of 93.8 MiB",
        &format!("downloaded hf://{GGUF_REPO}/{GGUF_FILE}: 93.8 MiB in"),
        "size and sha256 verified",
    ] {
        assert!(text.contains(want), "log lacks {want:?}:\n{text}");
    }
    let gets = hub.downloads("");
    assert_eq!(gets.len(), 2, "{gets:?}");
    // The hub's cache layout, shared with Python tools.
    let repo_dir = hf_home.join("hub/models--candela-test--SmolLM2-135M-Instruct-GGUF");
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    let snap = repo_dir.join("snapshots").join(&commit).join(GGUF_FILE);
    assert_eq!(
        std::fs::metadata(&snap).unwrap().len(),
        std::fs::metadata(common::default_model()).unwrap().len()
    );
    assert_eq!(m["data"][0]["root"], snap.display().to_string());

    // Second start, hub up, the file named with --gguf-file: nothing is downloaded again.
    let port = free_port();
    let log = root.join("second.log");
    let repo = format!("hf://{GGUF_REPO}");
    let server = spawn_healthy(
        serve(
            port,
            &hub.url(),
            &hf_home,
            &log,
            &[&repo, "--gguf-file", GGUF_FILE],
        ),
        port,
    );
    answers(port);
    drop(server);
    assert_eq!(hub.downloads("").len(), 2);
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("downloading")
    );

    // A revision pins another file (and only that one is downloaded).
    let port = free_port();
    let log = root.join("v1.log");
    let server = spawn_healthy(
        serve(
            port,
            &hub.url(),
            &hf_home,
            &log,
            &[&model, "--revision", "v1"],
        ),
        port,
    );
    let v1_commit = std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap();
    assert_ne!(v1_commit, commit);
    assert!(
        models(port)["data"][0]["root"]
            .as_str()
            .unwrap()
            .contains(&v1_commit)
    );
    answers(port);
    drop(server);
    assert_eq!(hub.downloads("").len(), 3);

    // Offline with the hub gone: from the cache.
    let dead = hub.url();
    drop(hub);
    let port = free_port();
    let log = root.join("offline.log");
    let mut cmd = serve(port, &dead, &hf_home, &log, &[&model]);
    cmd.env("HF_HUB_OFFLINE", "1");
    let server = spawn_healthy(cmd, port);
    answers(port);
    drop(server);
    // Hub unreachable and not offline: the cached snapshot, with a warning.
    let port = free_port();
    let log = root.join("unreachable.log");
    let server = spawn_healthy(serve(port, &dead, &hf_home, &log, &[&model]), port);
    answers(port);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot reach the Hugging Face Hub") && text.contains("from the cache"),
        "{text}"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_bare_org_name_serves_a_sharded_hf_directory() {
    let root = tmp("hfdir");
    let hf_home = root.join("hf");
    let hub = FakeHub::start(&hub_config(&root), &root);
    let port = free_port();
    let log = root.join("hf.log");
    let server: Proc = spawn_healthy(serve(port, &hub.url(), &hf_home, &log, &[HF_REPO]), port);
    assert_eq!(models(port)["data"][0]["id"], HF_REPO);
    answers(port);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(
            text.contains(&format!("downloaded hf://{HF_REPO}/{file}")),
            "{file}:\n{text}"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

/// LoRA adapters from hub repositories: `--lora-modules name=hf://org/repo` at start and
/// `POST /v1/load_lora_adapter` with an `hf://` path at runtime fetch the two PEFT files
/// (not the rest of the repository) into the hub cache, and the adapters serve.
#[test]
fn lora_adapters_come_from_hub_repositories() {
    let root = tmp("lora");
    let hf_home = root.join("hf");
    let adapters = common::make_lora_adapters(&root.join("repos"), "sql,chat", &[]);
    for dir in &adapters {
        std::fs::write(dir.join("README.md"), "a test adapter\n").unwrap();
    }
    let mut config = hub_config(&root);
    config["repos"]["candela-test/sql-lora"] =
        serde_json::json!({"revisions": {"main": adapters[0]}});
    config["repos"]["candela-test/chat-lora"] =
        serde_json::json!({"revisions": {"main": adapters[1]}});
    let hub = FakeHub::start(&config, &root);
    let port = free_port();
    let log = root.join("lora.log");
    let model = common::default_model();
    let mut cmd = serve(
        port,
        &hub.url(),
        &hf_home,
        &log,
        &[
            model.to_str().unwrap(),
            "--enable-lora",
            "--max-lora-rank",
            "8",
            "--lora-modules",
            "sql=hf://candela-test/sql-lora",
        ],
    );
    cmd.env("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True");
    let server: Proc = spawn_healthy(cmd, port);
    let (status, body) = http_post(
        port,
        "/v1/load_lora_adapter",
        r#"{"lora_name": "chat", "lora_path": "hf://candela-test/chat-lora"}"#,
    )
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "Success: LoRA adapter 'chat' added successfully.")
    );
    let m = models(port);
    let cards = m["data"].as_array().unwrap();
    for name in ["sql", "chat"] {
        let card = cards.iter().find(|c| c["id"] == name).expect(name);
        let repo_dir = hf_home.join(format!("hub/models--candela-test--{name}-lora"));
        assert!(
            card["root"]
                .as_str()
                .unwrap()
                .starts_with(repo_dir.to_str().unwrap()),
            "{card}"
        );
        let (status, body) = http_post(
            port,
            "/v1/completions",
            &format!(r#"{{"model": "{name}", "prompt": "Hello", "max_tokens": 4}}"#),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    for repo in ["sql-lora", "chat-lora"] {
        for file in ["adapter_config.json", "adapter_model.safetensors"] {
            assert!(
                text.contains(&format!("downloaded hf://candela-test/{repo}/{file}")),
                "{repo}/{file}:\n{text}"
            );
        }
    }
    assert!(hub.downloads("README.md").is_empty(), "only the PEFT files");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn hub_failures_stop_the_server_with_one_line() {
    let root = tmp("fail");
    let hf_home = root.join("hf");
    let hub = FakeHub::start(&hub_config(&root), &root);
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (
            vec!["hf://nobody/nothing"],
            false,
            "error: hf://nobody/nothing: repository not found on",
        ),
        (
            vec!["hf://candela-test/gated:Q4_1"],
            false,
            "error: hf://candela-test/gated is gated: accept its conditions at",
        ),
        (
            vec![
                "hf://candela-test/SmolLM2-135M-Instruct-GGUF:Q4_1",
                "--revision",
                "v9",
            ],
            false,
            "has no revision `v9`",
        ),
        (
            vec!["hf://candela-test/SmolLM2-135M-Instruct-GGUF:Q5_K_M"],
            false,
            "no GGUF file matches :Q5_K_M; GGUF files: SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        (
            vec!["hf://candela-test/SmolLM2-135M-Instruct-GGUF:Q4_1"],
            true,
            "HF_HUB_OFFLINE is set and no download of revision `main` was recorded",
        ),
        (
            vec!["hf://org"],
            false,
            "error: `hf://org` is not a hub model: expected org/name",
        ),
        (
            vec!["hf://candela-test/gated:Q4_1", "--hf-token", "hf_bad"],
            false,
            "the hub refused the token (401 Invalid credentials in Authorization header)",
        ),
    ];
    for (args, offline, want) in cases {
        let mut cmd = serve(
            free_port(),
            &hub.url(),
            &hf_home,
            &root.join("x.log"),
            &args,
        );
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        let out = cmd.stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            last.starts_with("error: ") && last.contains(want),
            "{args:?}: want {want:?} in {last:?}"
        );
    }
    // The right token (HF_TOKEN, as the hub's own clients read it) opens the gated model.
    let port = free_port();
    let mut cmd = serve(
        port,
        &hub.url(),
        &hf_home,
        &root.join("gated.log"),
        &["hf://candela-test/gated:Q4_1"],
    );
    cmd.env("HF_TOKEN", "hf_good");
    let server = spawn_healthy(cmd, port);
    answers(port);
    drop(server);
    std::fs::remove_dir_all(hf_home.join("hub/models--candela-test--gated")).unwrap();
    // No failure left a blob or partial file behind.
    let leftovers: Vec<_> = walk(&hf_home)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("blobs"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&root).ok();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
