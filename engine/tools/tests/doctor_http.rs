//! `candela doctor`'s I/O shell: scraping a metrics endpoint over a window
//! (served here by a plain `std::net::TcpListener` replaying a recorded Candela
//! series), every way a scrape fails as one clear line, `--record` / `--replay`,
//! and reading the window back from a real Prometheus (`/usr/bin/prometheus`,
//! Debian's package) that scraped the same replay with a bearer token.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candela_tools::doctor::{self, DoctorArgs, Thresholds, recording};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    doctor: DoctorArgs,
}

fn args(flags: &[&str]) -> DoctorArgs {
    let argv = std::iter::once("doctor").chain(flags.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("flags {flags:?}: {e}"))
        .doctor
}

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/doctor/{name}.prom",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The exposition texts of a recorded fixture, in order.
fn bodies(name: &str) -> Vec<String> {
    recording::split(&fixture(name))
        .unwrap()
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

/// A one-thread HTTP/1.1 server: `/metrics` answers the next recorded body on each
/// request (then keeps answering the last), `/html`, `/plain` and anything else
/// answer what a wrong URL would. With a token, requests without
/// `Authorization: Bearer <token>` get 401.
struct Replay {
    port: u16,
    served: Arc<AtomicUsize>,
}

fn respond(mut stream: TcpStream, bodies: &[String], token: Option<&str>, served: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) =
        if token.is_some_and(|t| auth.as_deref() != Some(&format!("Bearer {t}"))) {
            (
                "401 Unauthorized",
                "text/plain",
                "unauthorized\n".to_string(),
            )
        } else {
            match path.split('?').next().unwrap_or("/") {
                "/metrics" => {
                    let i = served.fetch_add(1, Ordering::SeqCst);
                    (
                        "200 OK",
                        "text/plain; version=0.0.4",
                        bodies[i.min(bodies.len() - 1)].clone(),
                    )
                }
                "/html" => (
                    "200 OK",
                    "text/html",
                    "<!DOCTYPE html>\n<html></html>\n".into(),
                ),
                "/plain" => ("200 OK", "text/plain", "# TYPE up gauge\nup 1\n".into()),
                _ => ("404 Not Found", "text/plain", "404 page not found\n".into()),
            }
        };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Replay {
    fn start(bodies: Vec<String>, token: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let token = token.map(str::to_string);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                respond(stream, &bodies, token.as_deref(), &counter);
            }
        });
        Self { port, served }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("candela-doctor-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn scrapes_a_window_records_it_and_diagnoses_the_queue() {
    let server = Replay::start(bodies("waiting_queue"), None);
    let rec = tmp("rec.prom");
    let a = args(&[
        "--url",
        &server.url("/metrics"),
        "--window",
        "2s",
        "--interval",
        "500ms",
        "--record",
        rec.to_str().unwrap(),
    ]);
    let (series, source) = doctor::read(&a).await.unwrap();
    assert_eq!(series.snapshots.len(), 5, "2 s / 0.5 s + 1 scrapes");
    assert_eq!(server.served.load(Ordering::SeqCst), 5);
    assert!((series.span() - 2.0).abs() < 0.5, "{}", series.span());
    let findings = doctor::diagnose(&series, &Thresholds::default());
    assert!(
        findings.iter().any(|f| f.id == "waiting_queue"),
        "{findings:#?}"
    );

    // The recording replays to the same samples (times rounded to ms).
    let replayed = recording::parse(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    assert_eq!(replayed.snapshots.len(), 5);
    for (a, b) in series.snapshots.iter().zip(&replayed.snapshots) {
        assert!((a.t - b.t).abs() < 0.001);
        assert_eq!(a.samples, b.samples);
    }
    let (from_file, _) = doctor::read(&args(&["--replay", rec.to_str().unwrap()]))
        .await
        .unwrap();
    assert_eq!(from_file, replayed);
    let text = doctor::report(&series, &source, &Thresholds::default(), false).unwrap();
    assert!(
        text.starts_with(&format!(
            "candela doctor: {source}: 2 s window, 5 snapshots"
        )),
        "{text}"
    );
    std::fs::remove_file(&rec).unwrap();
}

async fn read_err(flags: &[&str]) -> String {
    let e = doctor::read(&args(flags)).await.unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[tokio::test]
async fn every_failed_scrape_is_one_clear_line() {
    let fast = ["--window", "1s", "--interval", "1s"];
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let e = read_err(&[&["--url", url.as_str()], &fast[..]].concat()).await;
    assert!(e.starts_with(&format!("{url}: cannot connect: ")), "{e}");

    let guarded = Replay::start(bodies("healthy"), Some("s3cret"));
    let url = guarded.url("/metrics");
    let e = read_err(&[&["--url", url.as_str()], &fast[..]].concat()).await;
    assert_eq!(
        e,
        format!(
            "{url}: 401 Unauthorized: it wants a bearer token (--bearer-token or CANDELA_METRICS_TOKEN)"
        )
    );
    let e = read_err(
        &[
            &["--url", url.as_str(), "--bearer-token", "wrong"],
            &fast[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        e,
        format!("{url}: 401 Unauthorized: the bearer token was refused")
    );
    let (ok, _) = doctor::read(&args(
        &[
            &["--url", url.as_str(), "--bearer-token", "s3cret"],
            &fast[..],
        ]
        .concat(),
    ))
    .await
    .unwrap();
    assert_eq!(ok.snapshots.len(), 2);

    let open = Replay::start(bodies("healthy"), None);
    let e = read_err(&[&["--url", open.url("/html").as_str()], &fast[..]].concat()).await;
    assert!(
        e.contains("the answer is not Prometheus metrics (line 1: expected a metric name"),
        "{e}"
    );
    let e = read_err(&[&["--url", open.url("/plain").as_str()], &fast[..]].concat()).await;
    assert!(
        e.ends_with("no vllm:* metrics among 1 samples: not a vLLM / Candela metrics endpoint"),
        "{e}"
    );
    let e = read_err(&[&["--url", open.url("/nope").as_str()], &fast[..]].concat()).await;
    assert!(e.ends_with("HTTP 404 Not Found: 404 page not found"), "{e}");
    let e = read_err(&["--url", "not a url", "--window", "1s", "--interval", "1s"]).await;
    assert!(e.starts_with("not a url: "), "{e}");
    let e = read_err(&[
        "--url",
        &open.url("/metrics"),
        "--window",
        "1s",
        "--interval",
        "2s",
    ])
    .await;
    assert!(e.contains("is longer than --window"), "{e}");
    let e = read_err(&[
        "--url",
        "https://127.0.0.1:9/metrics",
        "--window",
        "1s",
        "--interval",
        "1s",
    ])
    .await;
    assert!(e.ends_with("https is not supported: scrape the endpoint over http (e.g. through kubectl port-forward) or read it from Prometheus with --prometheus"), "{e}");
    // --selector narrows Prometheus queries only.
    let e = read_err(&["--url", "http://x", "--selector", "{a=\"b\"}"]).await;
    assert!(e.contains("--selector narrows --prometheus queries"), "{e}");
    assert!(
        Cli::try_parse_from(["doctor", "--window", "1s"]).is_err(),
        "a source is required"
    );
    let e = read_err(&["--replay", "/nonexistent.prom"]).await;
    assert!(e.starts_with("/nonexistent.prom: "), "{e}");
    // A single snapshot cannot be diagnosed.
    let one = doctor::Series::new(vec![doctor::Snapshot {
        t: 0.0,
        samples: vec![],
    }]);
    let e = doctor::report(&one, "x", &Thresholds::default(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs at least two"), "{e}");
}

/// A Prometheus server on loopback, stopped (by its own handle) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prometheus(target_port: u16, token: &str) -> Prometheus {
    let bin = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: apt-get install prometheus (scripts/test.sh installs it)"
    );
    let dir = tmp("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vllm\n    scrape_interval: 1s\n    \
         authorization:\n      credentials: '{token}'\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n        \
         labels: {{namespace: llm}}\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus { child, port, dir }
}

#[tokio::test]
async fn reads_the_window_back_from_a_real_prometheus() {
    let recorded = bodies("waiting_queue");
    let n = recorded.len();
    let server = Replay::start(recorded, Some("scrape-token"));
    let prom = prometheus(server.port, "scrape-token");
    // Every recorded snapshot scraped, plus two more of the last one.
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.served.load(Ordering::SeqCst) < n + 2 {
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped only {} times",
            server.served.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let base = format!("http://127.0.0.1:{}", prom.port);
    let window = format!("{}s", n + 2);
    let flags = [
        "--prometheus",
        base.as_str(),
        "--selector",
        "{namespace=\"llm\",model_name=\"smol\"}",
        "--window",
        window.as_str(),
        "--interval",
        "1s",
    ];
    let (series, source) = doctor::read(&args(&flags)).await.unwrap();
    assert!(
        series.snapshots.len() >= n,
        "{} steps",
        series.snapshots.len()
    );
    assert!(
        source.ends_with("{namespace=\"llm\",model_name=\"smol\"}"),
        "{source}"
    );
    // Prometheus adds the target's labels; the vLLM ones are as scraped.
    let w = series.snapshots[0]
        .samples
        .iter()
        .find(|s| s.name == "vllm:num_requests_waiting")
        .expect("waiting gauge");
    assert_eq!(w.label("namespace"), Some("llm"));
    assert_eq!(w.label("job"), Some("vllm"));
    let th = Thresholds {
        max_num_seqs: Some(2),
        ..Thresholds::default()
    };
    let findings = doctor::diagnose(&series, &th);
    let ids: Vec<&str> = findings.iter().map(|f| f.id).collect();
    assert!(
        ids.contains(&"waiting_queue") && ids.contains(&"batch_full"),
        "{ids:?}"
    );

    // A selector nothing matches, and a query Prometheus rejects, are one line each.
    let e = doctor::read(&args(&[
        "--prometheus",
        &base,
        "--selector",
        "{namespace=\"other\"}",
        "--window",
        "10s",
        "--interval",
        "1s",
    ]))
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        format!(
            "{base}/api/v1/query_range: no vllm:* series match {{namespace=\"other\"}} in the last 10 s"
        )
    );
    let e = doctor::read(&args(&[
        "--prometheus",
        &base,
        "--selector",
        "{namespace=~\"(\"}",
        "--window",
        "10s",
        "--interval",
        "1s",
    ]))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("Prometheus said bad_data"), "{e}");
}
