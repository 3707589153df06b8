//! `/v1/completions` on the real model: greedy answers, usage against `/tokenize`,
//! `n` and batched prompts, seeds, stop strings and logprobs.

use super::*;

#[tokio::test]
async fn completion_echoes_and_counts_usage() {
    let (app, _) = app();
    let body = json!({"prompt": FRANCE, "max_tokens": 3, "temperature": 0, "echo": true});
    let v = post_ok(&app, "/v1/completions", body.clone()).await;
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], "smol");
    let text = v["choices"][0]["text"].as_str().unwrap();
    let answer = text
        .strip_prefix(FRANCE)
        .unwrap_or_else(|| panic!("no echo: {text:?}"));
    assert!(answer.starts_with(" Paris"), "{text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt_tokens = token_count(&app, json!({"prompt": FRANCE})).await;
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 3);
    // Greedy decoding is deterministic.
    let again = post_ok(&app, "/v1/completions", body).await;
    assert_eq!(again["choices"][0]["text"], text);
}

#[tokio::test]
async fn batch_prompts_and_n_index_choices() {
    let (app, engine) = app();
    let prompts = [FRANCE, "1, 2, 3, 4,"];
    let body = json!({"prompt": prompts, "n": 2, "max_tokens": 2, "temperature": 0});
    let v = post_ok(&app, "/v1/completions", body).await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
    }
    // Choices are grouped by prompt, and greedy choices of one prompt agree.
    assert!(texts[0].starts_with(" Paris"), "{texts:?}");
    assert!(texts[2].starts_with(" 5"), "{texts:?}");
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[2], texts[3]);
    // Prompt tokens count once per prompt, completion tokens once per choice.
    let mut prompt_tokens = 0;
    for p in prompts {
        prompt_tokens += token_count(&app, json!({"prompt": p})).await;
    }
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    wait_drained(&engine).await;
    assert_eq!(engine.metrics().success_length, 4);
}

/// Choice `i` samples with `seed + i`: a seeded request repeats exactly, and its
/// second choice is what the next seed gives alone.
#[tokio::test]
async fn seeded_sampling_is_reproducible_per_choice() {
    let (app, _) = app();
    let sample = |seed: u64, n: usize| {
        let app = app.clone();
        async move {
            let body = json!({"prompt": "Once upon a time", "max_tokens": 6, "n": n, "seed": seed,
                              "temperature": 1.0});
            let v = post_ok(&app, "/v1/completions", body).await;
            let texts: Vec<String> = v["choices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["text"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(texts.len(), n);
            texts
        }
    };
    let first = sample(7, 2).await;
    assert_eq!(sample(7, 2).await, first, "same seed, same samples");
    assert_ne!(first[0], first[1], "seeds 7 and 8 sampled the same text");
    assert_eq!(
        sample(8, 1).await,
        vec![first[1].clone()],
        "choice 1 of seed 7 is seed 8"
    );
}

/// The greedy answer to [`FRANCE`] is " Paris.\n…": `.\n` spans two tokens.
#[tokio::test]
async fn stop_strings_truncate_and_abort() {
    let (app, engine) = app();
    let greedy = json!({"prompt": FRANCE, "max_tokens": 4, "temperature": 0});
    let v = post_ok(&app, "/v1/completions", greedy).await;
    let full = v["choices"][0]["text"].as_str().unwrap().to_owned();
    let cut = full
        .find(".\n")
        .unwrap_or_else(|| panic!("no `.\\n` in the greedy answer {full:?}"));
    let app = &app;
    let stopped = move |extra: Value| {
        let mut body = json!({"prompt": FRANCE, "max_tokens": 20, "temperature": 0});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post_ok(app, "/v1/completions", body)
    };
    let v = stopped(json!({"stop": [".\n", "never"]})).await;
    assert_eq!(v["choices"][0]["text"], &full[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 20);
    let v = stopped(json!({"stop": ".\n", "include_stop_str_in_output": true})).await;
    assert_eq!(v["choices"][0]["text"], &full[..cut + 2]);
    // A stop inside one token cuts that token's text.
    let v = stopped(json!({"stop": "aris"})).await;
    assert_eq!(v["choices"][0]["text"], " P");
    // Each stopped request was ended in the engine as `stop` (not left to generate
    // its 20 tokens, nor merely dropped as an abort).
    wait_drained(&engine).await;
    let m = engine.metrics();
    assert_eq!(
        (m.success_length, m.success_stop, m.success_abort),
        (1, 3, 0)
    );
    assert!(
        m.generation_tokens < 4 + 3 * 20,
        "{} tokens generated",
        m.generation_tokens
    );
}

#[tokio::test]
async fn completion_logprobs_shape() {
    let (app, _) = app();
    let body =
        json!({"prompt": FRANCE, "max_tokens": 3, "logprobs": 2, "echo": true, "temperature": 0});
    let v = post_ok(&app, "/v1/completions", body).await;
    let text = v["choices"][0]["text"].as_str().unwrap();
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    // With `echo`, the 5 prompt tokens come first, then the 3 generated ones.
    assert_eq!(tokens.len(), 5 + 3);
    assert_eq!(tokens.concat(), text);
    assert!(text.starts_with(FRANCE));
    // Offsets count from the start of the echoed text.
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let mut at = 0;
    for (token, offset) in tokens.iter().zip(&offsets) {
        assert_eq!(*offset, at, "{offsets:?}");
        at += token.len() as u64;
    }
    // Nothing precedes the first prompt token: no logprob, no alternatives.
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    for i in 1..5 {
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(
            top.contains_key(tokens[i]),
            "prompt token {:?} not in {top:?}",
            tokens[i]
        );
        assert!(lp["token_logprobs"][i].as_f64().unwrap() <= 0.0);
    }
    for i in 5..8 {
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 2, "{top:?}");
        assert!(
            top.contains_key(tokens[i]),
            "greedy token {:?} not in {top:?}",
            tokens[i]
        );
        let alternatives: Vec<f64> = top.values().map(|x| x.as_f64().unwrap()).collect();
        assert_greedy_logprob(lp["token_logprobs"][i].as_f64().unwrap(), &alternatives);
    }
    // Without `prompt_logprobs` asked for, the vLLM field is left out.
    assert!(v["choices"][0].get("prompt_logprobs").is_none());
}

#[tokio::test]
async fn completion_stream_with_stop_never_leaks_the_stop_string() {
    let (app, engine) = app();
    let body = json!({"prompt": FRANCE, "max_tokens": 20, "temperature": 0, "stream": true,
                      "stop": [".\n"]});
    let (status, headers, bytes) = call(
        &app,
        "POST",
        "/v1/completions",
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
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(deltas.concat(), " Paris", "{deltas:?}");
    assert!(deltas.iter().all(|d| !d.contains('.')), "{deltas:?}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    wait_drained(&engine).await;
    let m = engine.metrics();
    assert_eq!(
        (m.success_stop, m.success_abort, m.success_length),
        (1, 0, 0)
    );
}
