//! LoRA sync: keeps the adapters loaded in the engine equal to the list in
//! `--lora-adapters-file` (the operator's ConfigMap, which the kubelet updates in place),
//! so editing `spec.loraAdapters` loads and unloads adapters without restarting the engine.
//!
//! Every `--lora-sync-interval-ms`: read the file, list the engine's adapters
//! (`GET /v1/models`, the cards with a `parent`), [`plan`] the difference, and call
//! `POST /v1/unload_lora_adapter` / `POST /v1/load_lora_adapter` (vLLM's runtime
//! endpoints; the engine needs `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING`).
//! When nothing changed a sync costs one small file read and one loopback GET.
//!
//! The file is the whole truth: adapters the engine has that it does not list are
//! unloaded. A missing, unreadable or invalid file changes nothing (it is never read as an
//! empty list). A failed load is retried with a per-adapter backoff ([`RETRY_MAX`]), so a
//! bad adapter neither hammers the engine or the hub nor floods the log. A changed path
//! under the same name is an unload then a load.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candela_contract::ports::{
    LOAD_LORA_ADAPTER_PATH as LOAD_PATH, MODELS_PATH, UNLOAD_LORA_ADAPTER_PATH as UNLOAD_PATH,
};
use candela_contract::sidecar::{LoraAdapter, LoraAdapterList};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info, warn};

use super::device::{header, sample};
use super::names;

/// Longest wait before retrying an adapter that failed to load.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Listing and unloading are quick; a load may download from the hub.
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// What the sync needs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The adapter list file.
    pub file: PathBuf,
    /// The engine's HTTP base URL (`http://127.0.0.1:8000`).
    pub engine: String,
    /// The client requests go through (TLS roots and server name for `https://`).
    pub client: reqwest::Client,
    /// The engine's API key.
    pub api_key: Option<String>,
    /// Time between syncs.
    pub interval: Duration,
}

/// A failed step of a sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The adapter list file is missing, unreadable or invalid.
    #[error("adapter list {path}: {message}")]
    File { path: String, message: String },
    /// The engine's HTTP API did not answer, or not as expected.
    #[error("engine: {0}")]
    Engine(String),
    /// The engine refused or failed to load an adapter.
    #[error("loading {name:?} from {path:?}: {message}")]
    Load {
        name: String,
        path: String,
        message: String,
    },
    /// The engine refused to unload an adapter.
    #[error("unloading {name:?}: {message}")]
    Unload { name: String, message: String },
}

impl SyncError {
    /// The `kind` label of [`names::LORA_SYNC_ERRORS_TOTAL`].
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Engine(_) => "engine",
            Self::Load { .. } => "load",
            Self::Unload { .. } => "unload",
        }
    }
}

/// Every `kind` label value, so each counter series exists from the start.
const ERROR_KINDS: [&str; 4] = ["file", "engine", "load", "unload"];

/// An adapter the engine reports loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Its name (the card's `id`).
    pub name: String,
    /// Where the engine says it came from (the card's `root`).
    pub root: String,
}

/// One change to make in the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `POST /v1/unload_lora_adapter`.
    Unload { name: String },
    /// `POST /v1/load_lora_adapter`.
    Load(LoraAdapter),
}

/// The changes that turn `loaded` into `desired`: unloads first (adapters no longer
/// listed, or listed with another path), then loads, each by name. An adapter's current
/// path is the one this sidecar loaded it from (`loaded_from`) when known, else the
/// engine's `root`: an engine that reports a resolved path (a hub snapshot directory) then
/// causes at most one reload after a sidecar restart, never a reload loop.
pub fn plan(
    desired: &[LoraAdapter],
    loaded: &[Loaded],
    loaded_from: &BTreeMap<String, String>,
) -> Vec<Action> {
    let want: BTreeMap<&str, &LoraAdapter> = desired.iter().map(|a| (a.name.as_str(), a)).collect();
    let have: BTreeMap<&str, &str> = loaded
        .iter()
        .map(|l| {
            let path = loaded_from.get(&l.name).unwrap_or(&l.root);
            (l.name.as_str(), path.as_str())
        })
        .collect();
    let mut unloads = Vec::new();
    let mut loads = Vec::new();
    for (name, path) in &have {
        match want.get(name) {
            Some(a) if a.path == *path => {}
            _ => unloads.push(Action::Unload {
                name: (*name).to_owned(),
            }),
        }
    }
    for (name, a) in &want {
        if have.get(name) != Some(&a.path.as_str()) {
            loads.push(Action::Load((*a).clone()));
        }
    }
    unloads.extend(loads);
    unloads
}

/// What `/metrics` shows about the sync.
#[derive(Clone, Debug, Default)]
pub struct SyncStatus {
    /// Adapters in the file at the last successful read.
    pub desired: Option<usize>,
    /// Adapters the engine reported at the last successful listing.
    pub loaded: Option<usize>,
    /// The last sync left the engine with exactly the listed adapters.
    pub in_sync: bool,
    /// A sync has run to its end once (list read, engine listed, every change tried):
    /// the pod may take traffic ([`candela_contract::sidecar::READY_PATH`]). Failed loads
    /// do not hold it back, so one bad adapter cannot keep a pod out of its Service.
    pub primed: bool,
    /// Adapters loaded and unloaded since start.
    pub loads: u64,
    pub unloads: u64,
    /// Failed steps by [`SyncError::metric_label`].
    pub errors: BTreeMap<&'static str, u64>,
}

/// Shared between the sync task (writer) and `/metrics` (readers).
pub type Shared = Arc<Mutex<SyncStatus>>;

/// Appends the sync's series to `/metrics`.
pub fn render(status: &SyncStatus, out: &mut String) {
    for (name, help, value) in [
        (
            names::LORA_ADAPTERS_DESIRED,
            "LoRA adapters the adapter list file asks for.",
            status.desired,
        ),
        (
            names::LORA_ADAPTERS_LOADED,
            "LoRA adapters the engine reported loaded at the last sync.",
            status.loaded,
        ),
    ] {
        if let Some(v) = value {
            header(out, name, help, "gauge");
            sample(out, name, &[], v as f64);
        }
    }
    header(
        out,
        names::LORA_IN_SYNC,
        "1 when the last sync left the engine with exactly the listed LoRA adapters, else 0.",
        "gauge",
    );
    sample(
        out,
        names::LORA_IN_SYNC,
        &[],
        f64::from(u8::from(status.in_sync)),
    );
    header(
        out,
        names::LORA_ADAPTER_CHANGES,
        "LoRA adapters the sidecar loaded or unloaded in the engine.",
        "counter",
    );
    for (action, n) in [("load", status.loads), ("unload", status.unloads)] {
        sample(
            out,
            names::LORA_ADAPTER_CHANGES_TOTAL,
            &[("action", action)],
            n as f64,
        );
    }
    header(
        out,
        names::LORA_SYNC_ERRORS,
        "Failed LoRA sync steps by kind (file, engine, load, unload).",
        "counter",
    );
    for kind in ERROR_KINDS {
        let n = status.errors.get(kind).copied().unwrap_or(0);
        sample(
            out,
            names::LORA_SYNC_ERRORS_TOTAL,
            &[("kind", kind)],
            n as f64,
        );
    }
}

/// The engine's HTTP API, as the sync uses it.
struct EngineApi {
    client: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

/// `GET /v1/models`'s body, as far as the sync reads it.
#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelCard>,
}

#[derive(Deserialize)]
struct ModelCard {
    id: String,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    parent: Option<String>,
}

impl EngineApi {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base.trim_end_matches('/')));
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// The loaded adapters: the model cards with a parent.
    async fn adapters(&self) -> Result<Vec<Loaded>, SyncError> {
        let response = self
            .request(reqwest::Method::GET, MODELS_PATH)
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|e| SyncError::Engine(format!("GET {MODELS_PATH}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(SyncError::Engine(format!(
                "GET {MODELS_PATH} answered {status}: {}",
                body.trim()
            )));
        }
        let list: ModelList = response
            .json()
            .await
            .map_err(|e| SyncError::Engine(format!("GET {MODELS_PATH}: {e}")))?;
        Ok(list
            .data
            .into_iter()
            .filter(|card| card.parent.is_some())
            .map(|card| Loaded {
                root: card.root.unwrap_or_default(),
                name: card.id,
            })
            .collect())
    }

    /// POSTs `body` to `path`; `Err` carries the engine's answer (status, body).
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<(), (Option<StatusCode>, String)> {
        let response = self
            .request(reqwest::Method::POST, path)
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| (None, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        // The engine answers 404 "No route" when the endpoints are not enabled.
        let unrouted = text.trim().is_empty() || text.contains("No route");
        let hint = if status == StatusCode::NOT_FOUND && unrouted {
            format!(
                " (does the engine run with --enable-lora and {}=True?)",
                candela_contract::env::ALLOW_RUNTIME_LORA_UPDATING
            )
        } else {
            String::new()
        };
        Err((Some(status), format!("{status}: {}{hint}", text.trim())))
    }

    async fn load(&self, a: &LoraAdapter) -> Result<(), SyncError> {
        let body = json!({"lora_name": a.name, "lora_path": a.path});
        self.post(LOAD_PATH, body, LOAD_TIMEOUT)
            .await
            .map_err(|(_, message)| SyncError::Load {
                name: a.name.clone(),
                path: a.path.clone(),
                message,
            })
    }

    async fn unload(&self, name: &str) -> Result<(), SyncError> {
        match self
            .post(UNLOAD_PATH, json!({"lora_name": name}), QUICK_TIMEOUT)
            .await
        {
            // Already gone (e.g. unloaded by someone else since the listing): done.
            Ok(()) | Err((Some(StatusCode::NOT_FOUND), _)) => Ok(()),
            Err((_, message)) => Err(SyncError::Unload {
                name: name.to_owned(),
                message,
            }),
        }
    }
}

/// A load that failed: not retried before `at`, unless the path changes.
struct Retry {
    path: String,
    at: Instant,
    delay: Duration,
}

/// The sync's memory between runs.
pub struct Syncer {
    config: SyncConfig,
    api: EngineApi,
    status: Shared,
    /// Where this sidecar loaded each adapter still loaded from.
    loaded_from: BTreeMap<String, String>,
    retries: BTreeMap<String, Retry>,
    /// The last file or engine problem, logged once until it changes.
    last_problem: Option<String>,
}

impl Syncer {
    /// A syncer for `config` reporting into `status`.
    pub fn new(config: SyncConfig, status: Shared) -> Self {
        let api = EngineApi {
            client: config.client.clone(),
            base: config.engine.clone(),
            api_key: config.api_key.clone(),
        };
        Self {
            config,
            api,
            status,
            loaded_from: BTreeMap::new(),
            retries: BTreeMap::new(),
            last_problem: None,
        }
    }

    /// Syncs every interval for as long as the process lives.
    pub async fn run(mut self) {
        info!(file = %self.config.file.display(), engine = %self.config.engine, "syncing LoRA adapters");
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.sync_once().await;
        }
    }

    /// One sync: read, list, change, record.
    pub async fn sync_once(&mut self) {
        let desired = match self.read_list().await {
            Ok(list) => list,
            Err(e) => return self.problem(e),
        };
        let loaded = match self.api.adapters().await {
            Ok(loaded) => loaded,
            Err(e) => return self.problem(e),
        };
        if let Some(problem) = self.last_problem.take() {
            info!(resolved = %problem, "LoRA sync works again");
        }
        // An adapter the engine no longer has (engine restart) is no longer ours to trust.
        self.loaded_from
            .retain(|name, _| loaded.iter().any(|l| &l.name == name));
        self.retries
            .retain(|name, r| desired.iter().any(|a| &a.name == name && a.path == r.path));
        let actions = plan(&desired, &loaded, &self.loaded_from);
        let mut complete = true;
        let now = Instant::now();
        for action in &actions {
            if let Action::Load(a) = action
                && self.retries.get(&a.name).is_some_and(|r| r.at > now)
            {
                complete = false;
                continue;
            }
            let result = match action {
                Action::Unload { name } => self.api.unload(name).await,
                Action::Load(a) => self.api.load(a).await,
            };
            match (&result, action) {
                (Ok(()), Action::Unload { name }) => {
                    info!(adapter = %name, "unloaded LoRA adapter");
                    self.loaded_from.remove(name);
                    self.count(|s| s.unloads += 1);
                }
                (Ok(()), Action::Load(a)) => {
                    info!(adapter = %a.name, path = %a.path, "loaded LoRA adapter");
                    self.loaded_from.insert(a.name.clone(), a.path.clone());
                    self.retries.remove(&a.name);
                    self.count(|s| s.loads += 1);
                }
                (Err(_), _) => {}
            }
            if let Err(e) = result {
                complete = false;
                if let Action::Load(a) = action {
                    let delay = self
                        .retries
                        .get(&a.name)
                        .map_or(self.config.interval, |r| (r.delay * 2).min(RETRY_MAX));
                    warn!(error = %e, retry_in = ?delay, "LoRA sync step failed");
                    self.retries.insert(
                        a.name.clone(),
                        Retry {
                            path: a.path.clone(),
                            at: Instant::now() + delay,
                            delay,
                        },
                    );
                } else {
                    warn!(error = %e, "LoRA sync step failed");
                }
                self.count_error(&e);
            }
        }
        // After changes, what the engine has now (else the listing is still current).
        let loaded_now = if actions.is_empty() {
            Some(loaded.len())
        } else {
            self.api.adapters().await.ok().map(|l| l.len())
        };
        if let Ok(mut s) = self.status.lock() {
            s.desired = Some(desired.len());
            s.loaded = loaded_now.or(s.loaded);
            s.in_sync = complete && loaded_now == Some(desired.len());
            if !s.primed {
                info!(in_sync = s.in_sync, "first LoRA sync done: ready");
                s.primed = true;
            }
        }
    }

    async fn read_list(&self) -> Result<Vec<LoraAdapter>, SyncError> {
        let file = &self.config.file;
        let error = |message: String| SyncError::File {
            path: file.display().to_string(),
            message,
        };
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| error(e.to_string()))?;
        LoraAdapterList::parse(&text)
            .map(|list| list.adapters)
            .map_err(error)
    }

    /// Records a failed file read or listing: counted always, logged when it is news.
    fn problem(&mut self, e: SyncError) {
        self.count_error(&e);
        if let Ok(mut s) = self.status.lock() {
            s.in_sync = false;
        }
        let message = e.to_string();
        if self.last_problem.as_deref() == Some(message.as_str()) {
            debug!(error = %message, "LoRA sync still failing");
        } else {
            warn!(error = %message, "LoRA sync cannot run; retrying");
            self.last_problem = Some(message);
        }
    }

    fn count_error(&self, e: &SyncError) {
        let kind = e.metric_label();
        self.count(|s| *s.errors.entry(kind).or_insert(0) += 1);
    }

    fn count(&self, f: impl FnOnce(&mut SyncStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

#[cfg(test)]
mod tests;
