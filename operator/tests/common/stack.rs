//! Real processes for the autoscaling end-to-end tests, each on 127.0.0.1 with its own
//! state directory under the control plane's scratch directory, and each under the
//! testenv watchdog (killed when the test process exits):
//!
//! - `candela serve` with the default model (`CANDELA_BIN`, default `target/debug/candela`;
//!   `CANDELA_MODEL`, default what `scripts/setup.sh` fetches), and `candela bench serve`
//!   to drive it into backlog;
//! - Prometheus and Alertmanager from Debian's `prometheus` and `prometheus-alertmanager`
//!   packages (`operator/test.sh` installs them).
//!
//! A missing binary or model is a failure with the command that provides it, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::testenv::{Watched, free_port, spawn_watched};
use super::wait_for;

/// `candela` binary: `$CANDELA_BIN`, else the workspace's `target/debug/candela`.
pub fn candela_bin() -> PathBuf {
    let path = std::env::var_os("CANDELA_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/candela"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p candela` (operator/test.sh does) or set CANDELA_BIN",
        path.display()
    );
    path
}

/// The default model: `$CANDELA_MODEL`, else `~/.cache/candela/models/...gguf`.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("CANDELA_MODEL").map_or_else(
        || {
            let cache = std::env::var_os("CANDELA_CACHE").map_or_else(
                || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/candela"),
                PathBuf::from,
            );
            cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: scripts/setup.sh fetches it (or set CANDELA_MODEL)",
        path.display()
    );
    path
}

/// The first of `names` on `PATH`.
pub fn tool(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("none of {names:?} on PATH: apt-get install {package} (operator/test.sh installs it)")
}

/// An HTTP client for the tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Polls `url` until it answers 2xx.
pub async fn wait_http_ok(what: &str, url: &str, timeout: Duration) {
    let client = http();
    wait_for(what, timeout, || async {
        let r = client.get(url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// A running `candela serve`.
pub struct Engine {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its port.
    pub port: u16,
    _child: Watched,
}

/// Starts `candela serve` on the default model with `served` as its name and `extra`
/// flags, and waits for `/health`.
pub async fn start_engine(dir: &Path, served: &str, extra: &[&str]) -> Engine {
    let (port, grpc) = (free_port(), free_port());
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--model".into(),
        model_path().display().to_string(),
        "--served-model-name".into(),
        served.into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--grpc-port".into(),
        grpc.to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let child = Watched(spawn_watched(
        &candela_bin(),
        &args,
        &dir.join("engine.log"),
    ));
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(
        "candela serve /health",
        &format!("{url}/health"),
        Duration::from_secs(120),
    )
    .await;
    Engine {
        url,
        port,
        _child: child,
    }
}

/// A running Prometheus.
pub struct Prometheus {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _child: Watched,
}

/// Writes `config` and starts Prometheus with it (1 s alert resend delay), waiting until
/// it is ready.
pub async fn start_prometheus(dir: &Path, config: &str) -> Prometheus {
    let port = free_port();
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("prometheus.yml");
    let promtool = Command::new(tool(&["promtool"], "prometheus"))
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .expect("promtool runs");
    assert!(
        promtool.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    let child = Watched(spawn_watched(
        &tool(&["prometheus"], "prometheus"),
        &[
            format!("--config.file={}", config_path.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        &dir.join("prometheus.log"),
    ));
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(
        "Prometheus ready",
        &format!("{url}/-/ready"),
        Duration::from_secs(60),
    )
    .await;
    Prometheus { url, _child: child }
}

impl Prometheus {
    /// `GET /api/v1/<path>`'s `data`.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let body: Value = http()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("Prometheus JSON");
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)]).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The state (`pending`/`firing`) of alert `name`, if active.
    pub async fn alert_state(&self, name: &str) -> Option<String> {
        let data = self.api("alerts", &[]).await;
        data["alerts"].as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == name).then(|| a["state"].as_str().unwrap_or("").to_owned())
        })
    }

    /// Waits until the scrape job `job` is up.
    pub async fn wait_up(&self, job: &str) {
        wait_for(
            &format!("Prometheus scraping {job}"),
            Duration::from_secs(60),
            || async {
                let r = self.query(&format!("up{{job=\"{job}\"}}")).await;
                (r.first()?["value"][1] == "1").then_some(())
            },
        )
        .await;
    }
}

/// Writes `config`, checks it with amtool and starts Alertmanager (no clustering),
/// waiting until it is ready. Returns its URL.
pub async fn start_alertmanager(dir: &Path, config: &str) -> (String, Watched) {
    let port = free_port();
    let config_path = dir.join("alertmanager.yml");
    std::fs::write(&config_path, config).expect("alertmanager.yml");
    let amtool = Command::new(tool(&["amtool"], "prometheus-alertmanager"))
        .args(["check-config"])
        .arg(&config_path)
        .output()
        .expect("amtool runs");
    assert!(
        amtool.status.success(),
        "amtool check-config: {}{}",
        String::from_utf8_lossy(&amtool.stdout),
        String::from_utf8_lossy(&amtool.stderr)
    );
    let child = Watched(spawn_watched(
        &tool(
            &["prometheus-alertmanager", "alertmanager"],
            "prometheus-alertmanager",
        ),
        &[
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.join("alertmanager-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    ));
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(
        "Alertmanager ready",
        &format!("{url}/-/ready"),
        Duration::from_secs(60),
    )
    .await;
    (url, child)
}

/// A `candela bench serve` run in the background.
pub struct Bench {
    child: Child,
    log: PathBuf,
}

/// Starts `candela bench serve` against `url`: `prompts` random prompts of 64 tokens, 64
/// output tokens each, all at once (`--request-rate inf`), so a small `--max-num-seqs`
/// queues most of them.
pub fn start_bench(dir: &Path, url: &str, served: &str, prompts: u32) -> Bench {
    let log = dir.join("bench.log");
    let file = std::fs::File::create(&log).expect("bench log");
    let child = Command::new(candela_bin())
        .args(["bench", "serve", "--base-url", url, "--model", served])
        .args(["--dataset-name", "random", "--random-input-len", "64"])
        .args(["--random-output-len", "64", "--num-prompts"])
        .arg(prompts.to_string())
        .args(["--request-rate", "inf", "--ready-check-timeout-sec", "0"])
        .arg("--disable-tqdm")
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("candela bench serve starts");
    Bench { child, log }
}

impl Bench {
    /// `Some(output)` once finished (panics if it failed).
    pub fn finished(&mut self) -> Option<String> {
        let status = self.child.try_wait().expect("bench status")?;
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "candela bench serve failed:\n{out}");
        Some(out)
    }
}
