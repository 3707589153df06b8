//! Sending one benchmark request to an OpenAI-compatible server and timing its
//! stream the way vLLM's `backend_request_func` does.
//!
//! Both backends stream with `stream_options.include_usage`. Every SSE message
//! carrying a non-empty `choices` array is one arrival: the first sets TTFT, the
//! next ones append inter-token gaps, the last ends the request's latency. A
//! trailing usage message (no choices) gives the server's token counts. A
//! request succeeds when the answer is HTTP 200 and at least one choice arrived;
//! otherwise its error text is kept.
//!
//! Without streaming (`--no-stream`, Candela's extension: vLLM's benchmark
//! always streams) the request says `"stream": false` and the client reads one
//! JSON answer: its first choice's text and its `usage`, as the streamed usage
//! message gives them. Latency is the time to the whole answer and TTFT equals
//! it (as vLLM's non-streaming request functions set it); there are no
//! inter-token gaps. The client then parses one body per request instead of
//! one SSE message per token, so it takes less CPU from the server it measures.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

use super::metrics::RequestOutput;

/// Which OpenAI API the benchmark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Backend {
    /// `/v1/completions` with a text prompt.
    #[value(name = "openai")]
    #[serde(rename = "openai")]
    Openai,
    /// `/v1/chat/completions` with the prompt as one user message.
    #[value(name = "openai-chat")]
    #[serde(rename = "openai-chat")]
    OpenaiChat,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Openai => "openai",
            Backend::OpenaiChat => "openai-chat",
        }
    }

    pub fn default_endpoint(self) -> &'static str {
        match self {
            Backend::Openai => "/v1/completions",
            Backend::OpenaiChat => "/v1/chat/completions",
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct RequestInput {
    pub prompt: String,
    pub prompt_len: usize,
    pub output_len: usize,
    /// `model` for this request (a LoRA adapter), else the client's.
    pub model: Option<String>,
}

/// The HTTP side: one connection pool shared by every request of a run.
#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub backend: Backend,
    pub api_url: String,
    /// Sent as `model`.
    pub model: String,
    pub ignore_eos: bool,
    /// Merged into every request body (sampling parameters, `--extra-body`).
    pub extra_body: serde_json::Map<String, Value>,
    pub api_key: Option<String>,
    /// Stream the answer (vLLM's way); `false` reads one JSON answer.
    pub stream: bool,
}

impl Client {
    /// The JSON body vLLM's request functions send.
    pub fn body(&self, input: &RequestInput) -> Value {
        let mut body = match self.backend {
            Backend::Openai => json!({
                "model": input.model.as_deref().unwrap_or(&self.model),
                "prompt": input.prompt,
                "repetition_penalty": 1.0,
                "max_tokens": input.output_len,
            }),
            Backend::OpenaiChat => json!({
                "model": input.model.as_deref().unwrap_or(&self.model),
                "messages": [{"role": "user", "content": input.prompt}],
                "max_completion_tokens": input.output_len,
            }),
        };
        let map = body.as_object_mut().expect("object");
        map.insert("stream".into(), Value::Bool(self.stream));
        if self.stream {
            map.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if self.ignore_eos {
            map.insert("ignore_eos".into(), Value::Bool(true));
        }
        for (k, v) in &self.extra_body {
            map.insert(k.clone(), v.clone());
        }
        body
    }

    /// Send `input`, timing from `epoch`; never fails, errors land in the output.
    ///
    /// A request that dies on a pooled keep-alive connection the server had just
    /// closed (no byte of answer came back, so the server never took it) is sent
    /// once more on a fresh connection, timed from the resend: servers with short
    /// keep-alive timeouts (llama.cpp's cpp-httplib: 5 s) would otherwise show
    /// spurious failures that no real client would see.
    pub async fn send(&self, input: &RequestInput, epoch: Instant) -> RequestOutput {
        let mut attempt = 0;
        loop {
            let sent = Instant::now();
            let mut out = RequestOutput {
                prompt_len: input.prompt_len,
                start_time: sent.duration_since(epoch).as_secs_f64(),
                ..Default::default()
            };
            let done = if self.stream {
                self.stream_into(input, sent, &mut out).await
            } else {
                self.fetch_into(input, sent, &mut out).await
            };
            match done {
                Ok(()) => return out,
                Err(e) if e.stale_connection && attempt == 0 => attempt += 1,
                Err(e) => {
                    out.success = false;
                    out.error = e.message;
                    return out;
                }
            }
        }
    }

    /// POST the request; an HTTP error status becomes a [`Failure`] with the
    /// server's message.
    async fn post(&self, input: &RequestInput) -> Result<reqwest::Response, Failure> {
        let mut req = self.http.post(&self.api_url).json(&self.body(input));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            let chain = error_chain(&e);
            Failure {
                stale_connection: chain.contains(STALE_CONNECTION),
                message: format!("{}: {chain}", self.api_url),
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {}", error_message(&text)).into());
        }
        Ok(resp)
    }

    /// Streaming: TTFT at the first chunk with a choice, one ITL gap per later one.
    async fn stream_into(
        &self,
        input: &RequestInput,
        sent: Instant,
        out: &mut RequestOutput,
    ) -> Result<(), Failure> {
        let resp = self.post(input).await?;
        let mut sse = SseBuffer::default();
        let mut stream = resp.bytes_stream();
        let mut last = sent;
        let mut first = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the stream: {}", error_chain(&e)))?;
            for data in sse.push(&chunk) {
                if data == "[DONE]" {
                    continue;
                }
                let now = Instant::now();
                let v: Value = serde_json::from_str(&data)
                    .map_err(|e| format!("bad SSE data {data:?}: {e}"))?;
                if let Some(err) = v.get("error") {
                    return Err(
                        format!("error in stream: {}", err.get("message").unwrap_or(err)).into(),
                    );
                }
                match v.get("choices").and_then(Value::as_array) {
                    Some(choices) if !choices.is_empty() => {
                        if first {
                            out.ttft = now.duration_since(sent).as_secs_f64();
                            first = false;
                        } else {
                            out.itl.push(now.duration_since(last).as_secs_f64());
                        }
                        last = now;
                        let text = match self.backend {
                            Backend::Openai => choices[0].get("text"),
                            Backend::OpenaiChat => {
                                choices[0].get("delta").and_then(|d| d.get("content"))
                            }
                        };
                        out.generated_text
                            .push_str(text.and_then(Value::as_str).unwrap_or(""));
                    }
                    _ => read_usage(&v, out),
                }
            }
        }
        out.latency = last.duration_since(sent).as_secs_f64();
        if first {
            return Err("Never received a valid chunk to calculate TTFT. This response will be marked as failed!".into());
        }
        out.success = true;
        Ok(())
    }

    /// Non-streaming: one JSON answer; latency and TTFT are the time to all of it.
    async fn fetch_into(
        &self,
        input: &RequestInput,
        sent: Instant,
        out: &mut RequestOutput,
    ) -> Result<(), Failure> {
        let resp = self.post(input).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer: {}", error_chain(&e)))?;
        out.latency = sent.elapsed().as_secs_f64();
        out.ttft = out.latency;
        read_answer(self.backend, &body, out)?;
        out.success = true;
        Ok(())
    }
}

/// The generated text and usage of a non-streamed answer: `choices[0].text`
/// (completions) or `choices[0].message.content` (chat).
fn read_answer(backend: Backend, body: &[u8], out: &mut RequestOutput) -> Result<(), Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "bad JSON answer {}: {e}",
            error_message(&String::from_utf8_lossy(body))
        )
    })?;
    if let Some(err) = v.get("error") {
        return Err(format!("error in answer: {}", err.get("message").unwrap_or(err)).into());
    }
    let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err("the answer has no choices. This response will be marked as failed!".into());
    };
    let text = match backend {
        Backend::Openai => choice.get("text"),
        Backend::OpenaiChat => choice.get("message").and_then(|m| m.get("content")),
    };
    out.generated_text
        .push_str(text.and_then(Value::as_str).unwrap_or(""));
    read_usage(&v, out);
    Ok(())
}

/// The server's token counts from a message's `usage`, when it has one.
fn read_usage(v: &Value, out: &mut RequestOutput) {
    if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
        out.usage_output_tokens = usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        if let Some(p) = usage.get("prompt_tokens").and_then(Value::as_u64) {
            out.prompt_len = p as usize;
        }
    }
}

/// How hyper reports a keep-alive connection closed under a request just sent.
const STALE_CONNECTION: &str = "connection closed before message completed";

/// Why a request failed, and whether it died on a stale keep-alive connection.
struct Failure {
    message: String,
    stale_connection: bool,
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            stale_connection: false,
        }
    }
}

/// `message` of an OpenAI-shaped error body, else the body itself (shortened).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if let Some(msg) = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(|m| {
            m.as_str()
                .map(str::to_owned)
                .or_else(|| Some(m.to_string()))
        })
    {
        return msg;
    }
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

/// An error and its sources on one line (reqwest hides the useful part in sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Splits a byte stream into server-sent events and returns each event's data.
/// Comments (`:` lines, used as pings) and events without data are dropped;
/// multi-line data joins with `\n`; UTF-8 split across chunks is reassembled.
#[derive(Debug, Default)]
pub struct SseBuffer {
    buf: Vec<u8>,
}

impl SseBuffer {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_event_end(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&raw[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
}

/// Position and length of the first blank-line separator (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_comments_dropped() {
        let mut sse = SseBuffer::default();
        assert!(sse.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            sse.push(b":1}\n\n: ping\n\ndata: [DONE]\n\n"),
            vec!["{\"a\":1}", "[DONE]"]
        );
        // A multi-byte character split between chunks.
        let e = "data: é\r\n\r\n".as_bytes();
        assert!(sse.push(&e[..7]).is_empty());
        assert_eq!(sse.push(&e[7..]), vec!["é"]);
        assert_eq!(sse.push(b"data: a\ndata: b\n\n"), vec!["a\nb"]);
    }

    #[test]
    fn request_bodies_match_vllm() {
        let mut c = Client {
            http: reqwest::Client::new(),
            backend: Backend::Openai,
            api_url: "http://x/v1/completions".into(),
            model: "m".into(),
            ignore_eos: true,
            extra_body: serde_json::Map::new(),
            api_key: None,
            stream: true,
        };
        c.extra_body.insert("temperature".into(), json!(0.0));
        let input = RequestInput {
            prompt: "hi".into(),
            prompt_len: 1,
            output_len: 7,
            model: None,
        };
        let b = c.body(&input);
        assert_eq!(b["max_tokens"], 7);
        let to_adapter = RequestInput {
            model: Some("sql".into()),
            ..input.clone()
        };
        assert_eq!(
            c.body(&to_adapter)["model"],
            "sql",
            "--lora-modules' pick wins"
        );
        assert_ne!(b["model"], "sql");
        assert_eq!(b["prompt"], "hi");
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["temperature"], 0.0);
        c.backend = Backend::OpenaiChat;
        let b = c.body(&input);
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["max_completion_tokens"], 7);
        assert!(b.get("prompt").is_none());
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn non_streaming_bodies_ask_for_one_answer() {
        let mut c = Client {
            http: reqwest::Client::new(),
            backend: Backend::Openai,
            api_url: "http://x/v1/completions".into(),
            model: "m".into(),
            ignore_eos: false,
            extra_body: serde_json::Map::new(),
            api_key: None,
            stream: false,
        };
        let input = RequestInput {
            prompt: "hi".into(),
            prompt_len: 1,
            output_len: 7,
            model: None,
        };
        for backend in [Backend::Openai, Backend::OpenaiChat] {
            c.backend = backend;
            let b = c.body(&input);
            assert_eq!(b["stream"], false, "{backend:?}");
            assert!(b.get("stream_options").is_none(), "{backend:?}");
        }
    }

    #[test]
    fn non_streamed_answers_give_text_and_usage() {
        let completion = br#"{"id":"c","object":"text_completion","choices":[{"index":0,"text":"Hello there","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let mut out = RequestOutput {
            prompt_len: 4,
            ..Default::default()
        };
        assert!(read_answer(Backend::Openai, completion, &mut out).is_ok());
        assert_eq!(out.generated_text, "Hello there");
        assert_eq!((out.usage_output_tokens, out.prompt_len), (Some(2), 5));
        assert!(out.itl.is_empty());

        let chat = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#;
        let mut out = RequestOutput::default();
        assert!(read_answer(Backend::OpenaiChat, chat, &mut out).is_ok());
        assert_eq!(out.generated_text, "Hi!");
        assert_eq!((out.usage_output_tokens, out.prompt_len), (Some(3), 9));
    }

    #[test]
    fn non_streamed_answers_without_choices_fail() {
        let mut out = RequestOutput::default();
        let e = read_answer(Backend::Openai, br#"{"choices":[]}"#, &mut out).unwrap_err();
        assert!(e.message.contains("no choices"), "{}", e.message);
        let e = read_answer(
            Backend::Openai,
            br#"{"error":{"message":"too long"}}"#,
            &mut out,
        )
        .unwrap_err();
        assert!(e.message.contains("too long"), "{}", e.message);
        let e = read_answer(Backend::OpenaiChat, b"<html>", &mut out).unwrap_err();
        assert!(e.message.starts_with("bad JSON answer"), "{}", e.message);
        assert!(!e.stale_connection);
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(error_message("plain text"), "plain text");
        assert!(error_message(&"x".repeat(1000)).ends_with('…'));
    }
}
