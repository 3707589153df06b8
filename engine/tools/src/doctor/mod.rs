//! `candela doctor`: reads a server's vLLM metrics over a window and applies
//! seed 000's symptom → cause table, printing findings with the flags to turn.
//!
//! A pure core and a thin I/O shell:
//! - [`expo`]: Prometheus text exposition parser;
//! - [`series`]: snapshots over time, counter increases, `histogram_quantile`;
//! - [`facts`]: the window's numbers; [`diagnose`]: the rules; [`report`]: text / JSON;
//! - [`recording`]: a window saved to a file (`--record`) and replayed (`--replay`);
//! - [`scrape`]: `--url` scraping with one-line errors; [`prom`]: `--prometheus` query_range.

pub mod diagnose;
pub mod expo;
pub mod facts;
pub mod names;
pub mod prom;
pub mod recording;
pub mod report;
pub mod scrape;
pub mod series;

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

pub use diagnose::{Diagnosis, Finding, Severity, Thresholds, diagnose, examine};
pub use series::{Series, Snapshot};

use crate::error::{Error, Result};

/// `candela doctor` flags.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["url", "prometheus", "replay"])))]
pub struct DoctorArgs {
    /// A metrics endpoint to scrape over the window (engine :8000/metrics or sidecar :9090/metrics)
    #[arg(long, env = "CANDELA_DOCTOR_URL", value_name = "URL")]
    pub url: Option<String>,

    /// A Prometheus server (root URL) to read the window from with query_range
    #[arg(long, env = "CANDELA_DOCTOR_PROMETHEUS", value_name = "URL")]
    pub prometheus: Option<String>,

    /// A recording made with --record, diagnosed offline
    #[arg(long, env = "CANDELA_DOCTOR_REPLAY", value_name = "PATH")]
    pub replay: Option<PathBuf>,

    /// Label matchers narrowing --prometheus, e.g. '{namespace="llm",model_name="smol"}'
    #[arg(long, env = "CANDELA_DOCTOR_SELECTOR")]
    pub selector: Option<String>,

    /// How far back to look (`60s`, `5m`, `1h`)
    #[arg(long, env = "CANDELA_DOCTOR_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,

    /// Time between scrapes (--url) or query steps (--prometheus)
    #[arg(long, env = "CANDELA_DOCTOR_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Bearer token for the metrics endpoint (the sidecar's --metrics-token) or Prometheus
    #[arg(long, env = "CANDELA_METRICS_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<String>,

    /// The server's --max-num-seqs: running at it means the batch is full
    #[arg(long, env = "CANDELA_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<u64>,

    /// Traffic is multi-turn chat: a prefix-cache hit rate under 40% is a finding
    #[arg(long, env = "CANDELA_DOCTOR_MULTI_TURN")]
    pub multi_turn: bool,

    /// Waiting requests that count as a queue (seed: > 10)
    #[arg(long, env = "CANDELA_DOCTOR_WAITING_THRESHOLD", default_value_t = 10.0)]
    pub waiting_threshold: f64,

    /// KV cache usage (0-1) that counts as full (seed: > 0.9)
    #[arg(long, env = "CANDELA_DOCTOR_KV_USAGE_THRESHOLD", default_value_t = 0.9)]
    pub kv_usage_threshold: f64,

    /// TTFT p95 ceiling in ms (seed: chat < 500)
    #[arg(long, env = "CANDELA_DOCTOR_TTFT_P95_MS", default_value_t = 500.0)]
    pub ttft_p95_ms: f64,

    /// TPOT p95 ceiling in ms (seed: bf16 70B < 30)
    #[arg(long, env = "CANDELA_DOCTOR_TPOT_P95_MS", default_value_t = 30.0)]
    pub tpot_p95_ms: f64,

    /// Save the window's snapshots to this file (replay it with --replay)
    #[arg(long, env = "CANDELA_DOCTOR_RECORD", value_name = "PATH")]
    pub record: Option<PathBuf>,

    /// Print the diagnosis as JSON
    #[arg(long, env = "CANDELA_DOCTOR_JSON")]
    pub json: bool,
}

/// Parses `60s`, `5m`, `1h`, `500ms` or a bare number of seconds.
///
/// # Errors
/// A message for clap when the text is not a positive duration.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (60s, 5m, 1h, 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be more than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The rules' thresholds from the flags.
///
/// # Errors
/// [`Error::InvalidArgs`] for out-of-range values.
pub fn thresholds(args: &DoctorArgs) -> Result<Thresholds> {
    let kv = args.kv_usage_threshold;
    if !(kv > 0.0 && kv <= 1.0) {
        return Err(Error::InvalidArgs(format!(
            "--kv-usage-threshold {kv} is not in (0, 1]"
        )));
    }
    for (flag, v) in [
        ("--waiting-threshold", args.waiting_threshold),
        ("--ttft-p95-ms", args.ttft_p95_ms),
        ("--tpot-p95-ms", args.tpot_p95_ms),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::InvalidArgs(format!(
                "{flag} {v} must be zero or more"
            )));
        }
    }
    Ok(Thresholds {
        waiting: args.waiting_threshold,
        kv_usage: kv,
        ttft_p95_s: args.ttft_p95_ms / 1000.0,
        tpot_p95_s: args.tpot_p95_ms / 1000.0,
        max_num_seqs: args.max_num_seqs,
        multi_turn: args.multi_turn,
        ..Thresholds::default()
    })
}

fn write_recording(path: &std::path::Path, chunks: &[String]) -> Result<()> {
    let mut text = format!("{}\n", recording::HEADER);
    for c in chunks {
        text.push_str(c);
    }
    std::fs::write(path, text).map_err(|e| Error::Output {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads the window from the chosen source; returns the series and a name for it.
///
/// # Errors
/// Source errors (one line each); [`Error::Output`] when `--record` cannot be written.
pub async fn read(args: &DoctorArgs) -> Result<(Series, String)> {
    if args.interval > args.window {
        return Err(Error::InvalidArgs(format!(
            "--interval {:?} is longer than --window {:?}",
            args.interval, args.window
        )));
    }
    if args.selector.is_some() && args.prometheus.is_none() {
        return Err(Error::InvalidArgs(
            "--selector narrows --prometheus queries; it does nothing with --url or --replay"
                .into(),
        ));
    }
    let client = || scrape::Client::new(args.bearer_token.clone());
    if let Some(url) = &args.url {
        let c = client()?;
        let n = (args.window.as_secs_f64() / args.interval.as_secs_f64()).floor() as usize + 1;
        eprintln!(
            "scraping {url} every {:?} for {:?} ({n} scrapes)",
            args.interval, args.window
        );
        let snaps = c
            .scrape_window(url, args.window, args.interval, |_, _| {})
            .await?;
        if let Some(path) = &args.record {
            let chunks: Vec<String> = snaps
                .iter()
                .map(|(t, body)| recording::chunk(*t, &recording::keep_doctor_families(body)))
                .collect();
            write_recording(path, &chunks)?;
        }
        let mut snapshots = Vec::with_capacity(snaps.len());
        for (t, body) in snaps {
            let e = expo::parse(&body).map_err(|e| Error::Http {
                url: url.clone(),
                message: format!("the answer is not Prometheus metrics ({e})"),
            })?;
            snapshots.push(Snapshot {
                t,
                samples: e.samples,
            });
        }
        return Ok((Series::new(snapshots), url.clone()));
    }
    if let Some(base) = &args.prometheus {
        let c = client()?;
        let selector = args.selector.as_deref().unwrap_or_default();
        let series = prom::read_window(&c, base, selector, args.window, args.interval).await?;
        if let Some(path) = &args.record {
            let chunks: Vec<String> = series
                .snapshots
                .iter()
                .map(|s| recording::chunk(s.t, &recording::exposition_of(&s.samples)))
                .collect();
            write_recording(path, &chunks)?;
        }
        let name = if selector.is_empty() {
            base.clone()
        } else {
            format!("{base} {selector}")
        };
        return Ok((series, name));
    }
    if let Some(path) = &args.replay {
        let input = |message: String| Error::Input {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| input(e.to_string()))?;
        let series = recording::parse(&text).map_err(|e| input(e.0))?;
        return Ok((series, path.display().to_string()));
    }
    Err(Error::InvalidArgs(
        "give one of --url, --prometheus or --replay".into(),
    ))
}

/// Diagnoses a series and renders the report (`json` or text).
///
/// # Errors
/// [`Error::InvalidArgs`] when the series has fewer than two snapshots.
pub fn report(series: &Series, source: &str, th: &Thresholds, json: bool) -> Result<String> {
    if series.snapshots.len() < 2 {
        return Err(Error::InvalidArgs(format!(
            "{source}: {} snapshot(s): a diagnosis needs at least two (a --window of at least one --interval)",
            series.snapshots.len()
        )));
    }
    let d = examine(series, th);
    Ok(if json {
        report::json(&d, source)
    } else {
        report::text(&d, source)
    })
}

/// Run `candela doctor`.
///
/// # Errors
/// As [`read`] and [`report`].
pub async fn run(args: DoctorArgs) -> Result<()> {
    let th = thresholds(&args)?;
    let (series, source) = read(&args).await?;
    print!("{}", report(&series, &source, &th, args.json)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
