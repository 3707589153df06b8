//! Router tests: every route through axum, with a tiny byte-level BPE tokenizer and
//! an engine that echoes the prompt back (see [`fake`]).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, ChatMessage, router};
use crate::detokenizer::tests::{EOT, byte_level_tokenizer};

mod fake;

const MAX_MODEL_LEN: usize = 64;

fn state(api_key: Option<&str>) -> (AppState, fake::Handle) {
    let (engine, handle) = fake::engine(EOT);
    let template = |messages: &[ChatMessage], add_generation_prompt: bool| {
        if messages.iter().any(|m| m.role == "bad") {
            return Err("unknown role `bad`".to_owned());
        }
        let mut out: String =
            messages.iter().map(|m| format!("{}: {}\n", m.role, m.content)).collect();
        if add_generation_prompt {
            out.push_str("assistant:");
        }
        Ok(out)
    };
    let state = AppState {
        engine,
        tokenizer: byte_level_tokenizer(),
        chat_template: Arc::new(template),
        served_model_names: vec!["smol".into(), "org/alias".into()],
        max_model_len: MAX_MODEL_LEN,
        eos_token_ids: vec![EOT],
        api_key: api_key.map(str::to_owned),
        model_root: "/models/smol.gguf".into(),
        created: 1,
    };
    (state, handle)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Body>,
    key: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.unwrap_or_else(Body::empty))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, bytes) = call(app, "POST", uri, Some(Body::from(body.to_string())), None).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn app() -> (axum::Router, fake::Handle) {
    let (state, handle) = state(None);
    (router(state), handle)
}

/// The `data:` payloads of an SSE body.
fn sse_events(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn health_version_models() {
    let (app, _) = app();
    let (status, _, body) = call(&app, "GET", "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let (_, _, body) = call(&app, "GET", "/version", None, None).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (status, _, body) = call(&app, "GET", "/v1/models", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "smol");
    assert_eq!(v["data"][1]["id"], "org/alias");
    assert_eq!(v["data"][0]["max_model_len"], MAX_MODEL_LEN);
    assert_eq!(v["data"][0]["root"], "/models/smol.gguf");
    let (status, _, body) = call(&app, "GET", "/v1/models/org/alias", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["id"], "org/alias");
    let (status, _, _) = call(&app, "GET", "/v1/models/gpt-4", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = call(&app, "GET", "/v2/nothing", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn api_key_guards_v1_only() {
    let (state, _) = state(Some("sekrit-key-123"));
    let app = router(state);
    let (status, _, body) = call(&app, "GET", "/v1/models", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, _, _) = call(&app, "GET", "/v1/models", None, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = Body::from(json!({"prompt": "hi"}).to_string());
    let (status, _, _) = call(&app, "POST", "/v1/completions", Some(body), Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&app, "GET", "/v1/models", None, Some("sekrit-key-123")).await;
    assert_eq!(status, StatusCode::OK);
    for open in ["/health", "/version"] {
        let (status, _, _) = call(&app, "GET", open, None, None).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    let body = Body::from(json!({"prompt": "hi"}).to_string());
    let (status, _, _) = call(&app, "POST", "/tokenize", Some(body), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hostile_bodies_are_openai_400s() {
    let (app, handle) = app();
    let cases: Vec<(&str, Body, &str)> = vec![
        ("/v1/completions", Body::from("{not json"), "Invalid JSON"),
        ("/v1/completions", Body::from(""), "Invalid JSON"),
        ("/v1/completions", Body::from("[1,2]"), "Invalid JSON"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","max_tokens":"5"}"#), "max_tokens"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","temperature":"hot"}"#), "temperature"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","max_tokens":-1}"#), "max_tokens"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","n":0}"#), "n must be"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","temperature":-1}"#), "temperature"),
        ("/v1/completions", Body::from(r#"{"prompt":"x","logprobs":50}"#), "logprobs"),
        ("/v1/completions", Body::from(r#"{"prompt":[]}"#), "prompt"),
        ("/v1/completions", Body::from(r#"{"prompt":""}"#), "prompt"),
        ("/v1/completions", Body::from(r#"{"prompt":[999999]}"#), "vocabulary"),
        (
            "/v1/completions",
            Body::from(r#"{"prompt":"x","max_tokens":1000000000000}"#),
            "maximum context length",
        ),
        ("/v1/chat/completions", Body::from(r#"{"messages":[]}"#), "messages"),
        ("/v1/chat/completions", Body::from(r#"{"messages":"hi"}"#), "messages"),
        (
            "/v1/chat/completions",
            Body::from(r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#),
            "image_url",
        ),
        (
            "/v1/chat/completions",
            Body::from(r#"{"messages":[{"role":"bad","content":"x"}]}"#),
            "template",
        ),
        (
            "/v1/chat/completions",
            Body::from(r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#),
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            Body::from(
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#,
            ),
            "logprobs",
        ),
    ];
    for (uri, body, needle) in cases {
        let (status, _, bytes) = call(&app, "POST", uri, Some(body), None).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "expected `{needle}` in {msg}");
    }
    assert_eq!(handle.submitted(), 0, "nothing invalid reaches the engine");
}

#[tokio::test]
async fn unknown_model_is_404() {
    let (app, _) = app();
    let (status, v) = post(&app, "/v1/completions", json!({"model": "gpt-4", "prompt": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["message"], "The model `gpt-4` does not exist.");
    let (status, _) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        post(&app, "/v1/completions", json!({"model": "org/alias", "prompt": "x", "max_tokens": 1}))
            .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn big_prompts_are_tokenized_then_refused_and_huge_bodies_are_413() {
    let (app, _) = app();
    let prompt = "a".repeat(1 << 20);
    let (status, v) = post(&app, "/v1/completions", json!({"prompt": prompt})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("maximum context length is 64"));
    let huge = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(super::MAX_BODY_BYTES + 1));
    let (status, _, bytes) =
        call(&app, "POST", "/v1/completions", Some(Body::from(huge)), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(serde_json::from_slice::<Value>(&bytes).unwrap()["error"].is_object());
}

#[tokio::test]
async fn overloaded_engine_is_503_with_retry_after() {
    let (app, handle) = app();
    handle.set_queue_full(true);
    let body = Body::from(json!({"prompt": "hi"}).to_string());
    let (status, headers, _) = call(&app, "POST", "/v1/completions", Some(body), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
}

#[tokio::test]
async fn completion_echoes_and_counts_usage() {
    let (app, _) = app();
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "hello world", "max_tokens": 3, "echo": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], "smol");
    // The fake engine replays the prompt: "hello", " w", "o" are its first 3 tokens.
    assert_eq!(v["choices"][0]["text"], "hello worldhello wo");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn batch_prompts_and_n_index_choices() {
    let (app, handle) = app();
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": ["ab", "hi"], "n": 2, "max_tokens": 2, "seed": 7}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    assert_eq!(choices[0]["text"], "ab");
    assert_eq!(choices[3]["text"], "hi");
    assert_eq!(handle.seeds(), vec![Some(7), Some(8), Some(7), Some(8)]);
}

#[tokio::test]
async fn stop_strings_truncate_and_abort() {
    let (app, handle) = app();
    let (_, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "one two STOP three", "max_tokens": 20, "stop": ["STOP"]}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], "one two ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (_, v) = post(&app, "/v1/completions", json!({"prompt": "one two STOP three", "max_tokens": 20, "stop": "STOP", "include_stop_str_in_output": true})).await;
    assert_eq!(v["choices"][0]["text"], "one two STOP");
    handle.wait_idle().await;
}

#[tokio::test]
async fn eos_ends_with_stop_and_hides_its_text() {
    let (app, _) = app();
    let (_, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": [104, 105, EOT], "max_tokens": 10, "skip_special_tokens": false}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], "hi");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn completion_logprobs_shape() {
    let (app, _) = app();
    let (_, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "hello", "max_tokens": 2, "logprobs": 2, "echo": true}),
    )
    .await;
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(lp["tokens"][0], "hello");
    assert_eq!(lp["token_logprobs"][0], -0.5);
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() >= 2);
    assert_eq!(lp["text_offset"], json!([5, 10]));
}

#[tokio::test]
async fn chat_non_streamed_with_logprobs() {
    let (app, _) = app();
    let (status, v) = post(&app, "/v1/chat/completions", json!({
        "model": "smol",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "max_completion_tokens": 4, "logprobs": true, "top_logprobs": 2,
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().starts_with("syst"));
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 4);
    assert!(content[0]["bytes"].is_array());
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn chat_stream_shape_with_usage() {
    let (app, _) = app();
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "n": 2,
                      "stream": true, "stream_options": {"include_usage": true}});
    let (status, headers, bytes) =
        call(&app, "POST", "/v1/chat/completions", Some(Body::from(body.to_string())), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "text/event-stream");
    let events = sse_events(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    for index in 0..2 {
        let mine: Vec<&Value> =
            chunks.iter().filter(|c| c["choices"][0]["index"] == index).collect();
        let text: String =
            mine.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "use");
        let finishes: Vec<&Value> = mine
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")]);
    }
}

#[tokio::test]
async fn completion_stream_with_stop_never_leaks_the_stop_string() {
    let (app, handle) = app();
    let body =
        json!({"prompt": "one two STOP three", "max_tokens": 20, "stream": true, "stop": ["STOP"]});
    let (_, _, bytes) =
        call(&app, "POST", "/v1/completions", Some(Body::from(body.to_string())), None).await;
    let events = sse_events(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "one two ");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    handle.wait_idle().await;
}

#[tokio::test]
async fn client_hangup_mid_stream_aborts_every_sequence() {
    let (state, handle) = state(None);
    handle.set_slow(true);
    let app = router(state);
    let body = json!({"prompt": "hello world", "max_tokens": 50, "n": 3, "stream": true});
    let req = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(handle.live(), 3);
    let mut body = res.into_body().into_data_stream();
    use futures::StreamExt;
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    handle.wait_idle().await;
    assert_eq!(handle.live(), 0);
}

#[tokio::test]
async fn tokenize_and_detokenize() {
    let (app, _) = app();
    let (status, v) = post(&app, "/tokenize", json!({"prompt": "hello world"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["count"], 6);
    assert_eq!(v["max_model_len"], MAX_MODEL_LEN);
    let tokens = v["tokens"].clone();
    let (_, v) = post(&app, "/detokenize", json!({"tokens": tokens})).await;
    assert_eq!(v["prompt"], "hello world");
    let (_, v) =
        post(&app, "/tokenize", json!({"messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(v["count"], "user: hi\nassistant:".len(), "{v}");
    let (status, _) = post(&app, "/tokenize", json!({"prompt": "a", "messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&app, "/detokenize", json!({"tokens": [-1]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&app, "/tokenize", json!({"model": "x", "prompt": "a"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The wiring `main.rs` does: the model crate's tokenizer and Jinja chat template
/// behind [`AppState`] (skipped when the default model is not downloaded).
#[tokio::test]
async fn real_model_template_and_tokenizer() {
    let Some(home) = std::env::var_os("HOME") else { return };
    let path = std::path::PathBuf::from(home)
        .join(".cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipped: {} missing (run scripts/setup.sh)", path.display());
        return;
    }
    let (content, _) = candela_model::load_gguf::read_gguf(&path).unwrap();
    let bundle = candela_model::tokenizer::tokenizer_from_gguf(&content).unwrap();
    let template = candela_model::ChatTemplate::new(
        bundle.chat_template.as_deref().unwrap(),
        bundle.bos_token.as_deref(),
        bundle.eos_token.as_deref(),
    )
    .unwrap();
    let (mut state, _) = state(None);
    state.tokenizer = Arc::new(bundle.tokenizer);
    state.eos_token_ids = bundle.eos_token_ids;
    state.chat_template = Arc::new(move |messages: &[ChatMessage], add_generation_prompt: bool| {
        template.render(&messages, add_generation_prompt).map_err(|e| e.to_string())
    });
    let app = router(state);
    let (status, v) =
        post(&app, "/tokenize", json!({"messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, d) = post(&app, "/detokenize", json!({"tokens": v["tokens"]})).await;
    let prompt = d["prompt"].as_str().unwrap();
    assert!(prompt.contains("<|im_start|>user\nhi<|im_end|>\n"), "{prompt:?}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let (_, v) = post(&app, "/tokenize", json!({"prompt": "<|im_start|>"})).await;
    assert_eq!(v["count"], 1, "special tokens encode to one id: {v}");
}

#[tokio::test]
async fn client_request_id_is_used_and_echoed() {
    let (app, _) = app();
    let body = json!({"prompt": "hi", "max_tokens": 1}).to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .header("X-Request-Id", "trace-42")
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "cmpl-trace-42");
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap()["id"], "cmpl-trace-42");
    // Absent or unprintable ids get a fresh one.
    let (_, headers, bytes) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(Body::from(
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}).to_string(),
        )),
        None,
    )
    .await;
    let id = serde_json::from_slice::<Value>(&bytes).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-") && id.len() > 20, "{id}");
    assert_eq!(headers.get("x-request-id").unwrap(), id.as_str());
}
