//! SIGTERM drains `candela serve` (what a rolling update relies on): a stream in flight
//! finishes with every token, requests on existing and new connections are still answered
//! during the drain window (with `Connection: close`), `/health` turns 503, and the process
//! then exits 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, http_get, spawn_serve};

fn post_raw(port: u16, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let port = free_port();
    let model = common::default_model();
    let mut server = spawn_serve(
        port,
        [
            "--model",
            model.to_str().unwrap(),
            "--grpc-port",
            &free_port().to_string(),
            "--max-model-len",
            "1024",
            "--kv-cache-memory",
            "64MiB",
        ],
        Stdio::null(),
    );
    // A long stream, in flight when SIGTERM arrives.
    let stream = std::thread::spawn(move || {
        let mut s = post_raw(
            port,
            r#"{"prompt":"Once upon a time","max_tokens":160,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let pid = server.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    // Draining: health is off, a new request is still answered, with Connection: close.
    let (status, _) = http_get(port, "/health").unwrap();
    assert_eq!(status, 503);
    let mut s = post_raw(port, r#"{"prompt":"Hi","max_tokens":4}"#);
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    // The stream in flight ends whole.
    let raw = stream.join().unwrap();
    assert!(raw.contains("data: [DONE]"), "{raw}");
    assert!(raw.contains("\"completion_tokens\":160"), "{raw}");
    // Then the process exits by itself, 0, after the drain window.
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() >= candela::drain::DRAIN_WINDOW);
}
