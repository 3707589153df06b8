//! Routing, auth, validation, admission and tokenization: the HTTP layer's own
//! decisions, with the real engine behind it.

use super::*;

#[tokio::test]
async fn health_version_models() {
    let (app, engine) = app();
    assert!(engine.is_alive());
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
    assert_eq!(v["data"][0]["root"], MODEL.path.as_str());
    let (status, _, body) = call(&app, "GET", "/v1/models/org/alias", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["id"],
        "org/alias"
    );
    let (status, _, _) = call(&app, "GET", "/v1/models/gpt-4", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = call(&app, "GET", "/v2/nothing", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn api_key_guards_v1_only() {
    let app = router(state_with(Limits::default(), Some("sekrit-key-123")));
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

/// The engine admits nothing (`max_waiting` 0): a valid request that got past the
/// HTTP checks would come back 503, so every 400 here was decided before the engine.
#[tokio::test]
async fn hostile_bodies_are_openai_400s() {
    let (app, engine) = app_with(Limits {
        max_waiting: 0,
        ..Limits::default()
    });
    let chat = "/v1/chat/completions";
    let cases: Vec<(&str, &str, &str)> = vec![
        ("/v1/completions", "{not json", "Invalid JSON"),
        ("/v1/completions", "", "Invalid JSON"),
        ("/v1/completions", "[1,2]", "Invalid JSON"),
        (
            "/v1/completions",
            r#"{"prompt":"x","max_tokens":"5"}"#,
            "max_tokens",
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","temperature":"hot"}"#,
            "temperature",
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","max_tokens":-1}"#,
            "max_tokens",
        ),
        ("/v1/completions", r#"{"prompt":"x","n":0}"#, "n must be"),
        (
            "/v1/completions",
            r#"{"prompt":"x","temperature":-1}"#,
            "temperature",
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","logprobs":50}"#,
            "logprobs",
        ),
        ("/v1/completions", r#"{"prompt":[]}"#, "prompt"),
        ("/v1/completions", r#"{"prompt":""}"#, "prompt"),
        ("/v1/completions", r#"{"prompt":[999999]}"#, "vocabulary"),
        (
            "/v1/completions",
            r#"{"prompt":"x","max_tokens":1000000000000}"#,
            "maximum context length",
        ),
        (chat, r#"{"messages":[]}"#, "messages"),
        (chat, r#"{"messages":"hi"}"#, "messages"),
        (
            chat,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            "image_url",
        ),
        (
            chat,
            r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#,
            "logprobs",
        ),
        (
            chat,
            r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#,
            "logprobs",
        ),
    ];
    for (uri, body, needle) in cases {
        let (status, _, bytes) = call(&app, "POST", uri, Some(Body::from(body)), None).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "expected `{needle}` in {msg}");
    }
    // The same engine does answer a valid request: with the 503 that proves the point.
    let (status, _, _) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(Body::from(
            json!({"prompt": "x", "max_tokens": 1}).to_string(),
        )),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    wait_drained(&engine).await;
    let m = engine.metrics();
    assert_eq!((m.prompt_tokens, m.generation_tokens), (0, 0));
}

/// A template that raises (as many Hugging Face templates do for unknown roles) is
/// the client's error, on chat and on `/tokenize`.
#[tokio::test]
async fn chat_template_errors_are_400s() {
    let source = "{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}\
        {{ raise_exception('unknown role ' + m.role) }}{% endif %}\
        <|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let template = candela_model::ChatTemplate::new(source, None, None).unwrap();
    let mut state = state_with(Limits::default(), None);
    state.chat_template = render(template);
    let app = router(state);
    let bad = json!([{"role": "bad", "content": "x"}]);
    for (uri, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": bad, "max_tokens": 1}),
        ),
        ("/tokenize", json!({"messages": bad})),
    ] {
        let (status, v) = post(&app, uri, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("template") && msg.contains("unknown role bad"),
            "{msg}"
        );
    }
    let ok = json!({"messages": [{"role": "user", "content": "hi"}]});
    let v = post_ok(&app, "/tokenize", ok).await;
    let (_, d) = post(&app, "/detokenize", json!({"tokens": v["tokens"]})).await;
    assert_eq!(
        d["prompt"],
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test]
async fn unknown_model_is_404() {
    let (app, _) = app();
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"model": "gpt-4", "prompt": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["message"], "The model `gpt-4` does not exist.");
    let (status, _) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v = post_ok(
        &app,
        "/v1/completions",
        json!({"model": "org/alias", "prompt": FRANCE, "max_tokens": 1, "temperature": 0}),
    )
    .await;
    assert_eq!(v["model"], "org/alias");
    assert_eq!(v["choices"][0]["text"], " Paris");
}

#[tokio::test]
async fn big_prompts_are_tokenized_then_refused_and_huge_bodies_are_413() {
    let (app, engine) = app();
    let prompt = "hello ".repeat(100_000);
    let (status, v) = post(&app, "/v1/completions", json!({"prompt": prompt})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("maximum context length is 512"), "{msg}");
    let huge = format!(
        r#"{{"prompt":"{}"}}"#,
        "a".repeat(super::super::MAX_BODY_BYTES + 1)
    );
    let (status, _, bytes) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(Body::from(huge)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(serde_json::from_slice::<Value>(&bytes).unwrap()["error"].is_object());
    wait_drained(&engine).await;
}

/// One sequence runs, one waits, the third finds the queue full.
#[tokio::test]
async fn overloaded_engine_is_503_with_retry_after() {
    let (app, engine) = app_with(Limits {
        max_num_seqs: 1,
        max_waiting: 1,
    });
    let long = json!({"prompt": FRANCE, "max_tokens": 400, "ignore_eos": true, "stream": true});
    let send = || {
        request(
            "POST",
            "/v1/completions",
            Some(Body::from(long.to_string())),
            None,
        )
    };
    let running = app.clone().oneshot(send()).await.unwrap();
    assert_eq!(running.status(), StatusCode::OK);
    wait_for(&engine, "one running", |s| {
        s.num_running == 1 && s.num_waiting == 0
    })
    .await;
    let waiting = app.clone().oneshot(send()).await.unwrap();
    assert_eq!(waiting.status(), StatusCode::OK);
    wait_for(&engine, "one waiting", |s| {
        s.num_running == 1 && s.num_waiting == 1
    })
    .await;
    let body = Body::from(json!({"prompt": "hi", "max_tokens": 1}).to_string());
    let (status, headers, bytes) = call(&app, "POST", "/v1/completions", Some(body), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
    assert!(serde_json::from_slice::<Value>(&bytes).unwrap()["error"]["message"].is_string());
    // Hanging up on both frees the engine for good.
    drop((running, waiting));
    wait_drained(&engine).await;
    let m = engine.metrics();
    assert_eq!((m.success_abort, m.success_length), (2, 0));
}

#[tokio::test]
async fn tokenize_and_detokenize_with_the_models_template() {
    let (app, _) = app();
    let v = post_ok(&app, "/tokenize", json!({"prompt": FRANCE})).await;
    assert_eq!(v["count"], 5);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(v["max_model_len"], MAX_MODEL_LEN);
    let (_, d) = post(&app, "/detokenize", json!({"tokens": v["tokens"]})).await;
    assert_eq!(d["prompt"], FRANCE);
    let messages = json!({"messages": [{"role": "user", "content": "hi"}]});
    let v = post_ok(&app, "/tokenize", messages).await;
    let (_, d) = post(&app, "/detokenize", json!({"tokens": v["tokens"]})).await;
    let prompt = d["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("<|im_start|>user\nhi<|im_end|>\n"),
        "{prompt:?}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    assert_eq!(
        v["count"],
        token_count(&app, json!({"prompt": prompt})).await
    );
    let v = post_ok(&app, "/tokenize", json!({"prompt": "<|im_start|>"})).await;
    assert_eq!(v["count"], 1, "special tokens encode to one id: {v}");
    let (status, _) = post(&app, "/tokenize", json!({"prompt": "a", "messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&app, "/detokenize", json!({"tokens": [-1]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&app, "/tokenize", json!({"model": "x", "prompt": "a"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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
    // The header comes back unchanged; the body's id carries the endpoint prefix.
    assert_eq!(res.headers().get("x-request-id").unwrap(), "trace-42");
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["id"],
        "cmpl-trace-42"
    );
    // Absent or unprintable ids get a fresh one.
    let body = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1});
    let (_, headers, bytes) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(Body::from(body.to_string())),
        None,
    )
    .await;
    let id = serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("chatcmpl-") && id.len() > 20, "{id}");
    assert_eq!(headers.get("x-request-id").unwrap(), id.as_str());
}

/// `service_tier`: echoed, bounded by the key of `--api-key-tiers`, `auto` resolved, an
/// unknown value a 400 naming the field; the `--api-key` key may use any tier.
#[tokio::test]
async fn service_tiers_are_echoed_and_bounded_by_the_callers_key() {
    use candela_core::ServiceTier;
    let mut state = state_with(Limits::default(), None);
    state.api_keys = crate::frontend::keys::ApiKeys::new(
        Some("sk-main".into()),
        vec![("sk-batch".into(), ServiceTier::Flex)],
    );
    let app = router(state);
    let ask = |tier: Option<&str>, stream: bool| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": stream});
        if let Some(t) = tier {
            body["service_tier"] = json!(t);
        }
        Body::from(body.to_string())
    };
    let chat = "/v1/chat/completions";
    for (key, asked, ran) in [
        ("sk-main", None, "default"),
        ("sk-main", Some("auto"), "default"),
        ("sk-main", Some("priority"), "priority"),
        ("sk-main", Some("flex"), "flex"),
        ("sk-batch", None, "flex"),
        ("sk-batch", Some("auto"), "flex"),
        ("sk-batch", Some("priority"), "flex"),
        ("sk-batch", Some("default"), "flex"),
    ] {
        let (status, _, body) = call(&app, "POST", chat, Some(ask(asked, false)), Some(key)).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["service_tier"], ran, "{key} asking {asked:?}");
    }
    let (status, _, body) = call(
        &app,
        "POST",
        chat,
        Some(ask(Some("priority"), true)),
        Some("sk-batch"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = sse_chunks(&body);
    assert!(chunks.len() > 1 && chunks.iter().all(|c| c["service_tier"] == "flex"));
    let completion = Body::from(
        json!({"prompt": FRANCE, "max_tokens": 2, "service_tier": "priority"}).to_string(),
    );
    let (status, _, body) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(completion),
        Some("sk-batch"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["service_tier"],
        "flex"
    );
    let (status, _, body) = call(
        &app,
        "POST",
        chat,
        Some(ask(Some("scale"), false)),
        Some("sk-main"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["param"], "service_tier", "{v}");
    let (status, _, _) = call(
        &app,
        "POST",
        chat,
        Some(ask(None, false)),
        Some("sk-nobody"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&app, "POST", chat, Some(ask(None, false)), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
