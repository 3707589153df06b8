//! Scrape overhead: decode throughput of the real engine while `/metrics` is
//! scraped every second versus not scraped, alternated in one run so machine
//! noise hits both sides alike. Target: under 1 % loss.
//!
//! Run: `cargo bench -p candela --bench scrape_overhead` (after `scripts/setup.sh`).
//! Each round serves 8 concurrent greedy requests of 128 tokens (`ignore_eos`)
//! through the real HTTP router and engine thread; the scraper GETs `/metrics`
//! over the same router once a second.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use candela::cli::{Cli, Command, ProcessCommand};
use clap::Parser;
use tower::ServiceExt;

const ROUNDS: usize = 4;
const CONCURRENCY: usize = 8;
const OUTPUT_LEN: usize = 128;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Command::Process(ProcessCommand::Serve(args)) = Cli::parse_from([
        "candela",
        "serve",
        "--max-model-len",
        "1024",
        "--kv-cache-memory",
        "256MiB",
    ])
    .command
    else {
        unreachable!("serve was parsed")
    };
    let model = candela::serve::resolve_model(&args)
        .await
        .expect("the default model (run scripts/setup.sh first)");
    let started = candela::serve::start(&args, &model).expect("engine starts");
    let engine = started.engine.clone();
    let app = candela::api::router(started.state)
        .merge(candela::metrics::router(engine.shared_metrics()));
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..2 * ROUNDS {
        let scraped = round % 2 == 1;
        let tps = run_round(&app, scraped).await;
        println!("round {round}: scraped={scraped:<5} {tps:8.1} output tok/s");
        if scraped { on.push(tps) } else { off.push(tps) }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&off), mean(&on));
    println!(
        "not scraped {a:.1} tok/s, scraped every 1 s {b:.1} tok/s, loss {:.2} %",
        (1.0 - b / a) * 100.0
    );
}

async fn run_round(app: &axum::Router, scraped: bool) -> f64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = scraped.then(|| {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut scrapes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = app
                    .clone()
                    .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let body = axum::body::to_bytes(res.into_body(), 1 << 22)
                    .await
                    .unwrap();
                assert!(body.len() > 1000);
                scrapes += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            scrapes
        })
    });
    let start = Instant::now();
    let body = format!(
        r#"{{"prompt":"Once upon a time","max_tokens":{OUTPUT_LEN},"temperature":0,"ignore_eos":true}}"#
    );
    let requests = (0..CONCURRENCY).map(|_| {
        let app = app.clone();
        let body = body.clone();
        async move {
            let req = Request::post("/v1/completions")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            assert!(res.status().is_success());
            axum::body::to_bytes(res.into_body(), 1 << 22)
                .await
                .unwrap();
        }
    });
    futures::future::join_all(requests).await;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = scraper {
        assert!(s.await.unwrap() >= 1, "scraped at least once");
    }
    (CONCURRENCY * OUTPUT_LEN) as f64 / elapsed
}
