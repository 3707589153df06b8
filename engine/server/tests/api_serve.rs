//! End to end: starts `candela serve` on the default model and speaks raw HTTP/1.1
//! to it (no client crate: the point is to see exactly what goes over the wire).
//!
//! Needs the default model (`scripts/setup.sh` fetches it; the test fails with
//! that hint when it is missing). One server serves every check so the model loads once.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Proc, free_port, spawn_serve};
use serde_json::{Value, json};

const API_KEY: &str = "sk-candela-test-key";
const MAX_MODEL_LEN: usize = 512;

/// The server process; killed when dropped.
struct Server {
    _proc: Proc,
    port: u16,
}

impl Server {
    fn start(model: &Path) -> Server {
        let port = free_port();
        let grpc = free_port().to_string();
        let max_len = MAX_MODEL_LEN.to_string();
        let args = [
            OsStr::new("--grpc-port"),
            OsStr::new(&grpc),
            OsStr::new("--max-model-len"),
            OsStr::new(&max_len),
            OsStr::new("--max-waiting"),
            OsStr::new("512"),
            OsStr::new("--api-key"),
            OsStr::new(API_KEY),
            OsStr::new("--served-model-name"),
            OsStr::new("smol"),
            OsStr::new("--model"),
            model.as_os_str(),
        ];
        let proc = spawn_serve(port, args, Stdio::inherit());
        Server { _proc: proc, port }
    }

    fn try_get(&self, path: &str) -> Option<Reply> {
        send(self.port, "GET", path, b"", &[]).ok()
    }

    fn get(&self, path: &str) -> Reply {
        send(
            self.port,
            "GET",
            path,
            b"",
            &[("Authorization", &format!("Bearer {API_KEY}"))],
        )
        .unwrap()
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {API_KEY}");
        send(
            self.port,
            "POST",
            path,
            body,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
        )
        .unwrap()
    }

    fn post_json(&self, path: &str, body: Value) -> Reply {
        self.post(path, body.to_string().as_bytes())
    }
}

/// A parsed HTTP response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body.
    fn sse(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .filter_map(|e| e.trim_start().strip_prefix("data: ").map(str::to_owned))
            .collect()
    }

    fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) before reading a huge body; a broken pipe is fine then.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_reply(&raw))
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Opens a streaming request, reads until the first SSE chunk arrives, then drops the socket.
fn stream_and_hang_up(port: u16, i: usize) -> bool {
    let body = json!({"model": "smol", "prompt": format!("Story {i}: once upon a time"),
                      "max_tokens": 300, "ignore_eos": true, "stream": true})
    .to_string();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(7).any(|w| w == b"data: {") {
            return true; // dropping `stream` hangs up mid-generation
        }
    }
    false
}

/// `vllm:kv_cache_usage_perc` reaches 0 once every request is gone.
fn assert_kv_cache_drains(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = server.get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let usage: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("vllm:kv_cache_usage_perc"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(!usage.is_empty(), "vllm:kv_cache_usage_perc missing");
        if usage.iter().all(|&u| u == 0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "KV cache still in use: {usage:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn serve_end_to_end() {
    let server = Server::start(&common::default_model());

    // Open endpoints and auth.
    assert_eq!(server.try_get("/health").unwrap().status, 200);
    let version = server.try_get("/version").unwrap().json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server.try_get("/v1/models").unwrap().status, 401);
    let wrong = send(
        server.port,
        "GET",
        "/v1/models",
        b"",
        &[("Authorization", "Bearer nope")],
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "smol");
    assert_eq!(models["data"][0]["max_model_len"], MAX_MODEL_LEN);

    // Greedy completion, then the same request streamed gives the same text.
    let req = json!({"model": "smol", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0});
    let full = server.post_json("/v1/completions", req.clone());
    assert_eq!(full.status, 200, "{}", String::from_utf8_lossy(&full.body));
    let full = full.json();
    let text = full["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    let mut streamed_req = req.clone();
    streamed_req["stream"] = json!(true);
    streamed_req["stream_options"] = json!({"include_usage": true});
    let streamed = server.post_json("/v1/completions", streamed_req);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    let events = streamed.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed_text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed_text, text);
    assert_eq!(chunks.last().unwrap()["usage"], full["usage"]);

    // A stop string taken from the greedy text cuts it there.
    if let Some(stop) = text
        .get(text.len() / 2..text.len() / 2 + 2)
        .filter(|s| !s.trim().is_empty())
    {
        let cut = text.find(stop).unwrap();
        let mut stop_req = req.clone();
        stop_req["stop"] = json!([stop]);
        let r = server.post_json("/v1/completions", stop_req).json();
        assert_eq!(r["choices"][0]["text"], &text[..cut]);
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            r["choices"][0]["stop_reason"], stop,
            "vLLM's stop_reason: the matched string"
        );
    }
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert!(full["choices"][0]["stop_reason"].is_null());

    // Chat with n = 2 and logprobs.
    let chat = server
        .post_json(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8,
                   "n": 2, "logprobs": true, "top_logprobs": 2}),
        )
        .json();
    assert_eq!(chat["choices"].as_array().unwrap().len(), 2);
    assert_eq!(chat["choices"][1]["index"], 1);
    assert_eq!(
        chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Hostile requests.
    let r = server.post("/v1/completions", b"{nope");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = server.post_json(
        "/v1/completions",
        json!({"model": "smol", "prompt": "x", "max_tokens": -1}),
    );
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("max_tokens"));
    let r = server.post_json("/v1/completions", json!({"model": "gpt-9", "prompt": "x"}));
    assert_eq!(r.status, 404);
    assert_eq!(r.error_message(), "The model `gpt-9` does not exist.");
    let r = server.post_json(
        "/v1/completions",
        json!({"model": "smol", "prompt": vec![100; MAX_MODEL_LEN + 1]}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().contains("maximum context length"),
        "{}",
        r.error_message()
    );
    let big = json!({"model": "smol", "prompt": "hello ".repeat(180_000)});
    let r = server.post_json("/v1/completions", big);
    assert_eq!(
        r.status, 400,
        "a 1 MB prompt is tokenized, then refused as too long"
    );
    let huge = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(33 << 20));
    let r = server.post("/v1/completions", huge.as_bytes());
    assert_eq!(r.status, 413);

    // Clients that hang up mid-stream leave nothing behind.
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let port = server.port;
            std::thread::spawn(move || stream_and_hang_up(port, i))
        })
        .collect();
    let started = handles
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|&ok| ok)
        .count();
    assert!(started > 0, "no stream started");
    assert_kv_cache_drains(&server);
    let r = server.post_json("/v1/completions", req);
    assert_eq!(
        r.json()["choices"][0]["text"],
        text,
        "still serving, same greedy answer"
    );
}
