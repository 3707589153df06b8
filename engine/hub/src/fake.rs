//! Test support (cargo feature `fake-hub`): starts `tests/fake_hub.py`, the local server
//! that speaks the hub's file protocol, and reads or steers it through its `/_admin`
//! endpoints. The hub itself cannot be reached where Candela is tested; with this the
//! client under test is the real one. Blocking std I/O only, so sync and async tests
//! alike can use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The fake hub's script (in this crate's `tests/`).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_hub.py")
}

/// A running fake hub; killed on drop.
pub struct FakeHub {
    child: Child,
    port: u16,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeHub {
    /// Starts the hub with `config` (see the script's docstring: repositories, their
    /// revisions as directories, tokens, gated/private flags), written to `dir/hub.json`.
    ///
    /// # Panics
    /// When python3 cannot run the script (a test environment error).
    pub fn start(config: &serde_json::Value, dir: &Path) -> Self {
        let path = dir.join("hub.json");
        std::fs::write(&path, config.to_string()).expect("write the fake hub's config");
        let mut child = Command::new("python3")
            .arg(script())
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake hub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the fake hub prints its port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the fake hub printed {line:?}"));
        Self { child, port }
    }

    /// `http://127.0.0.1:<port>` (what `HF_ENDPOINT` is set to).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request served so far: `method`, `path`, `status`, `bytes` (body), `range`.
    pub fn stats(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.request("GET", "/_admin/stats", "")).expect("stats are JSON")
    }

    /// File downloads (GETs that carried bytes, neither API nor admin calls) whose path
    /// ends with `suffix` (a file name, a sha256, or "" for all).
    pub fn downloads(&self, suffix: &str) -> Vec<serde_json::Value> {
        self.stats()
            .into_iter()
            .filter(|r| {
                let path = r["path"].as_str().unwrap_or_default();
                r["method"] == "GET"
                    && r["bytes"].as_u64().unwrap_or(0) > 0
                    && !path.starts_with("/api/")
                    && !path.starts_with("/_admin/")
                    && path.ends_with(suffix)
            })
            .collect()
    }

    /// The next `times` downloads of `file` drop the connection after `cut_after` bytes.
    pub fn cut(&self, file: &str, cut_after: u64, times: u32) {
        let body = serde_json::json!({"file": file, "cut_after": cut_after, "times": times});
        self.request("POST", "/_admin/faults", &body.to_string());
    }

    /// Forgets stats and faults.
    pub fn reset(&self) {
        self.request("POST", "/_admin/reset", "{}");
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("the fake hub listens");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}
