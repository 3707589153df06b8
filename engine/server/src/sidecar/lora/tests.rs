//! The planner as a pure function, and the sync loop against a fake engine that answers
//! like vLLM's runtime LoRA endpoints (bearer key, 400 on a second load, 404 on an unknown
//! unload).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::*;

fn adapter(name: &str, path: &str) -> LoraAdapter {
    LoraAdapter {
        name: name.into(),
        path: path.into(),
    }
}

fn loaded(name: &str, root: &str) -> Loaded {
    Loaded {
        name: name.into(),
        root: root.into(),
    }
}

fn load(name: &str, path: &str) -> Action {
    Action::Load(adapter(name, path))
}

fn unload(name: &str) -> Action {
    Action::Unload { name: name.into() }
}

#[test]
fn plan_unloads_then_loads_the_difference() {
    let none = BTreeMap::new();
    assert_eq!(plan(&[], &[], &none), []);
    assert_eq!(
        plan(&[adapter("b", "/b"), adapter("a", "/a")], &[], &none),
        [load("a", "/a"), load("b", "/b")]
    );
    assert_eq!(
        plan(&[], &[loaded("a", "/a"), loaded("b", "/b")], &none),
        [unload("a"), unload("b")]
    );
    // Same name and path: nothing; a new path: replaced; an unlisted one: unloaded.
    assert_eq!(
        plan(
            &[
                adapter("keep", "/k"),
                adapter("moved", "/new"),
                adapter("new", "/n")
            ],
            &[
                loaded("keep", "/k"),
                loaded("moved", "/old"),
                loaded("gone", "/g")
            ],
            &none
        ),
        [
            unload("gone"),
            unload("moved"),
            load("moved", "/new"),
            load("new", "/n")
        ]
    );
}

/// What this sidecar loaded from wins over the engine's `root`, so an engine that reports
/// a resolved path causes no reload loop.
#[test]
fn plan_trusts_the_path_it_loaded_from() {
    let desired = [adapter("chat", "hf://org/chat")];
    let engine = [loaded("chat", "/cache/hub/models--org--chat/snapshots/abc")];
    assert_eq!(
        plan(&desired, &engine, &BTreeMap::new()),
        [unload("chat"), load("chat", "hf://org/chat")]
    );
    let ours = BTreeMap::from([("chat".to_owned(), "hf://org/chat".to_owned())]);
    assert_eq!(plan(&desired, &engine, &ours), []);
}

/// A fake engine: `/v1/models` with the base model and the loaded adapters; loads of
/// paths starting with `/bad` fail.
#[derive(Clone, Default)]
struct Fake {
    adapters: Arc<Mutex<BTreeMap<String, String>>>,
    load_calls: Arc<Mutex<Vec<String>>>,
}

const KEY: &str = "k3y";

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {KEY}"))
}

async fn models(State(f): State<Fake>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let mut data = vec![json!({"id": "base", "object": "model", "root": "/m", "parent": null})];
    for (name, path) in f.adapters.lock().unwrap().iter() {
        data.push(json!({"id": name, "object": "model", "root": path, "parent": "base"}));
    }
    (
        StatusCode::OK,
        Json(json!({"object": "list", "data": data})),
    )
}

async fn load_adapter(
    State(f): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    let name = body["lora_name"].as_str().unwrap().to_owned();
    let path = body["lora_path"].as_str().unwrap().to_owned();
    f.load_calls.lock().unwrap().push(name.clone());
    let mut adapters = f.adapters.lock().unwrap();
    if adapters.contains_key(&name) || path.starts_with("/bad") {
        return StatusCode::BAD_REQUEST;
    }
    adapters.insert(name, path);
    StatusCode::OK
}

async fn unload_adapter(
    State(f): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    let name = body["lora_name"].as_str().unwrap();
    match f.adapters.lock().unwrap().remove(name) {
        Some(_) => StatusCode::OK,
        None => StatusCode::NOT_FOUND,
    }
}

async fn start_fake() -> (Fake, String) {
    let fake = Fake::default();
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/load_lora_adapter", post(load_adapter))
        .route("/v1/unload_lora_adapter", post(unload_adapter))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, url)
}

fn write_list(path: &std::path::Path, adapters: &[(&str, &str)]) {
    let list = LoraAdapterList {
        adapters: adapters.iter().map(|(n, p)| adapter(n, p)).collect(),
    };
    std::fs::write(path, list.to_json()).unwrap();
}

fn status(shared: &Shared) -> SyncStatus {
    shared.lock().unwrap().clone()
}

#[tokio::test]
async fn sync_follows_the_file_and_reports_on_metrics() {
    let (fake, url) = start_fake().await;
    let dir = std::env::temp_dir().join(format!("candela-lora-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("adapters.json");
    let shared = Shared::default();
    let mut syncer = Syncer::new(
        SyncConfig {
            file: file.clone(),
            engine: url,
            client: reqwest::Client::new(),
            api_key: Some(KEY.into()),
            interval: Duration::from_millis(100),
        },
        shared.clone(),
    );
    let engine = || fake.adapters.lock().unwrap().clone();

    // No file yet: nothing changes, the problem is counted.
    fake.adapters
        .lock()
        .unwrap()
        .insert("stray".into(), "/s".into());
    syncer.sync_once().await;
    assert_eq!(engine().len(), 1, "a missing list is not an empty list");
    assert_eq!(status(&shared).errors.get("file"), Some(&1));
    assert!(!status(&shared).in_sync && !status(&shared).primed);

    // Two adapters: loaded; the stray one unloaded.
    write_list(&file, &[("sql", "/a/sql"), ("chat", "hf://org/chat")]);
    syncer.sync_once().await;
    assert_eq!(
        engine(),
        BTreeMap::from([
            ("chat".to_owned(), "hf://org/chat".to_owned()),
            ("sql".to_owned(), "/a/sql".to_owned())
        ])
    );
    let s = status(&shared);
    assert!(s.in_sync && s.primed, "{s:?}");
    assert_eq!(
        (s.desired, s.loaded, s.loads, s.unloads),
        (Some(2), Some(2), 2, 1)
    );

    // Nothing changed: no calls.
    let calls = fake.load_calls.lock().unwrap().len();
    syncer.sync_once().await;
    assert_eq!(fake.load_calls.lock().unwrap().len(), calls);

    // Edit: one removed, one moved, one bad; the bad one backs off.
    write_list(&file, &[("sql", "/a/sql-v2"), ("broken", "/bad/x")]);
    syncer.sync_once().await;
    assert_eq!(
        engine(),
        BTreeMap::from([("sql".to_owned(), "/a/sql-v2".to_owned())])
    );
    let s = status(&shared);
    assert!(
        !s.in_sync && s.primed,
        "a bad adapter does not make the pod unready"
    );
    assert_eq!(s.errors.get("load"), Some(&1));
    let broken_calls = || {
        fake.load_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == "broken")
            .count()
    };
    syncer.sync_once().await;
    assert_eq!(broken_calls(), 1, "retried only after its backoff");
    tokio::time::sleep(Duration::from_millis(150)).await;
    syncer.sync_once().await;
    assert_eq!(broken_calls(), 2, "retried after its backoff");

    // Fixed path: loaded at once, in sync; the engine restarting empty reloads everything.
    write_list(&file, &[("sql", "/a/sql-v2"), ("broken", "/fixed/x")]);
    syncer.sync_once().await;
    assert!(status(&shared).in_sync);
    fake.adapters.lock().unwrap().clear();
    syncer.sync_once().await;
    assert_eq!(engine().len(), 2);

    // An invalid file changes nothing.
    std::fs::write(&file, r#"{"adapters": [{"name": "a b", "path": "/x"}]}"#).unwrap();
    syncer.sync_once().await;
    assert_eq!(engine().len(), 2);
    assert_eq!(status(&shared).errors.get("file"), Some(&2));

    let mut out = String::new();
    render(&status(&shared), &mut out);
    for line in [
        "candela_sidecar_lora_adapters_desired 2",
        "candela_sidecar_lora_adapters_loaded 2",
        "candela_sidecar_lora_in_sync 0",
        "candela_sidecar_lora_adapter_changes_total{action=\"load\"} 6",
        "candela_sidecar_lora_sync_errors_total{kind=\"file\"} 2",
        "candela_sidecar_lora_sync_errors_total{kind=\"unload\"} 0",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_wrong_key_is_an_engine_error() {
    let (_fake, url) = start_fake().await;
    let shared = Shared::default();
    let dir = std::env::temp_dir().join(format!("candela-lora-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("adapters.json");
    write_list(&file, &[("a", "/a")]);
    let mut syncer = Syncer::new(
        SyncConfig {
            file,
            engine: url,
            client: reqwest::Client::new(),
            api_key: Some("wrong".into()),
            interval: Duration::from_millis(100),
        },
        shared.clone(),
    );
    syncer.sync_once().await;
    assert_eq!(status(&shared).errors.get("engine"), Some(&1));
    std::fs::remove_dir_all(&dir).ok();
}
