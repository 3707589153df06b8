//! `/v1/chat/completions` on the real model and its chat template: EOS handling,
//! logprobs, streaming with `n > 1`, and client hang-ups.

use futures::StreamExt;

use super::*;

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

/// The `logprobs.content[].token` strings of a chat choice.
fn logprob_tokens(choice: &Value) -> Vec<&str> {
    let content = choice["logprobs"]["content"].as_array().unwrap();
    content
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn eos_ends_with_stop_and_hides_its_text() {
    let (app, engine) = app();
    let body = json!({"messages": user("What is 2+2? Reply with just the number."),
                      "max_tokens": 16, "temperature": 0, "skip_special_tokens": false,
                      "logprobs": true});
    let v = post_ok(&app, "/v1/chat/completions", body).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "stop", "{v}");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.contains('4'), "{content:?}");
    // The end-of-turn token was generated and counted, but its text is not shown
    // even with `skip_special_tokens: false`.
    let tokens = logprob_tokens(choice);
    assert_eq!(tokens.last(), Some(&"<|im_end|>"), "{tokens:?}");
    assert_eq!(tokens[..tokens.len() - 1].concat(), content);
    assert_eq!(v["usage"]["completion_tokens"], tokens.len());
    wait_drained(&engine).await;
    assert_eq!(engine.metrics().success_stop, 1);
}

#[tokio::test]
async fn chat_non_streamed_with_logprobs() {
    let (app, _) = app();
    let messages = json!([
        {"role": "system", "content": "You are a friendly assistant."},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
    ]);
    let body = json!({"model": "smol", "messages": messages, "max_completion_tokens": 4,
                      "logprobs": true, "top_logprobs": 2, "temperature": 0});
    let v = post_ok(&app, "/v1/chat/completions", body).await;
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length");
    let content = choice["message"]["content"].as_str().unwrap();
    let entries = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(logprob_tokens(choice).concat(), content);
    for e in entries {
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, e["token"].as_str().unwrap().as_bytes());
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{e}");
        assert_eq!(
            top[0]["token"], e["token"],
            "greedy picks the likeliest token"
        );
        let alternatives: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert_greedy_logprob(e["logprob"].as_f64().unwrap(), &alternatives);
    }
    assert_eq!(
        v["usage"]["prompt_tokens"],
        token_count(&app, json!({"messages": messages})).await
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn chat_stream_shape_with_usage() {
    let (app, engine) = app();
    let body = json!({"messages": user("hello"), "max_tokens": 3, "n": 2, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}});
    let (status, headers, bytes) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(Body::from(body.to_string())),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let chunks = sse_chunks(&bytes);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    let whole = json!({"messages": user("hello"), "max_tokens": 3, "temperature": 0});
    let v = post_ok(&app, "/v1/chat/completions", whole).await;
    let expected = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
    for index in 0..2 {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = mine
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            text, expected,
            "choice {index} streams what the greedy answer is"
        );
        let finishes: Vec<&Value> = mine
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")]);
    }
    wait_drained(&engine).await;
    assert_eq!(engine.metrics().success_length, 3);
}

/// One sequence may run at a time, so two of the three wait: all three must be
/// aborted, not left to generate 1,200 tokens nobody reads.
#[tokio::test]
async fn client_hangup_mid_stream_aborts_every_sequence() {
    let (app, engine) = app_with(Limits {
        max_num_seqs: 1,
        ..Limits::default()
    });
    let body = json!({"prompt": FRANCE, "max_tokens": 400, "ignore_eos": true, "n": 3,
                      "stream": true});
    let req = request(
        "POST",
        "/v1/completions",
        Some(Body::from(body.to_string())),
        None,
    );
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    wait_for(&engine, "1 running, 2 waiting", |s| {
        s.num_running == 1 && s.num_waiting == 2
    })
    .await;
    let mut body = res.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert!(engine.stats().device_cache_usage > 0.0);
    drop(body);
    wait_drained(&engine).await;
    // All three ended as aborts, none ran to its 400 tokens.
    let m = engine.metrics();
    assert_eq!(
        (m.success_abort, m.success_length, m.success_stop),
        (3, 0, 0)
    );
}
