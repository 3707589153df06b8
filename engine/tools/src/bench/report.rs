//! The result block (vLLM's labels, order and column widths) and the result JSON
//! (vLLM's field names), built from [`BenchmarkMetrics`] without I/O.
//!
//! A run without streaming (`--no-stream`) measured no TTFT, TPOT or ITL: the
//! block prints them as "n/a" and the JSON leaves their fields out (rather than
//! report TTFT = E2EL and a TPOT of zero); its peak output tokens/s (bursts of
//! whole answers) is "n/a" and null. The JSON's `stream` says which kind of run
//! it was.

use serde_json::{Map, Value, json};

use super::metrics::{BenchmarkMetrics, RequestOutput, Stats};

/// What the report needs besides the metrics.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub backend: &'static str,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: String,
    pub num_prompts: usize,
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub duration: f64,
    /// Whether answers were streamed (TTFT, TPOT, ITL measured).
    pub stream: bool,
    pub goodput: bool,
    /// `--percentile-metrics`, in order.
    pub percentile_metrics: Vec<String>,
    pub date: String,
    pub metadata: Vec<(String, String)>,
}

/// Every percentile metric vLLM knows: (attribute, short name, header).
const METRICS: [(&str, &str, &str); 4] = [
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
];

pub const PERCENTILE_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// Whether `attr` was measured: without streaming only E2EL is.
fn measured(info: &RunInfo, attr: &str) -> bool {
    info.stream || attr == "e2el"
}

fn stats<'a>(m: &'a BenchmarkMetrics, attr: &str) -> &'a Stats {
    match attr {
        "ttft" => &m.ttft,
        "tpot" => &m.tpot,
        "itl" => &m.itl,
        _ => &m.e2el,
    }
}

/// Python's `str(float)` for the values vLLM puts in names (`inf`, `10.0`, `2.5`).
pub fn py_float(v: f64) -> String {
    if v.is_infinite() {
        "inf".into()
    } else if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// `99` for 99.0, `99.9` for 99.9 — the `p99_ttft_ms` key and `P99 TTFT` label.
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

fn row(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{label:<40} {value:<10}\n"));
}

fn row_f(out: &mut String, label: &str, value: f64) {
    out.push_str(&format!("{label:<40} {:<10}\n", format!("{value:.2}")));
}

/// The block vLLM prints after a run.
pub fn result_block(info: &RunInfo, m: &BenchmarkMetrics) -> String {
    let mut s = format!("{:=^50}\n", " Serving Benchmark Result ");
    row(&mut s, "Successful requests:", m.completed);
    row(&mut s, "Failed requests:", m.failed);
    if let Some(c) = info.max_concurrency {
        row(&mut s, "Maximum request concurrency:", c);
    }
    if info.request_rate.is_finite() {
        row_f(&mut s, "Request rate configured (RPS):", info.request_rate);
    }
    row_f(&mut s, "Benchmark duration (s):", info.duration);
    row(&mut s, "Total input tokens:", m.total_input);
    row(&mut s, "Total generated tokens:", m.total_output);
    row_f(&mut s, "Request throughput (req/s):", m.request_throughput);
    if info.goodput {
        row_f(&mut s, "Request goodput (req/s):", m.request_goodput);
    }
    row_f(
        &mut s,
        "Output token throughput (tok/s):",
        m.output_throughput,
    );
    if info.stream {
        row_f(
            &mut s,
            "Peak output token throughput (tok/s):",
            m.max_output_tokens_per_s,
        );
    } else {
        row(&mut s, "Peak output token throughput (tok/s):", "n/a");
    }
    row_f(
        &mut s,
        "Peak concurrent requests:",
        m.max_concurrent_requests as f64,
    );
    row_f(
        &mut s,
        "Total token throughput (tok/s):",
        m.total_token_throughput,
    );
    let mut unmeasured = Vec::new();
    for (attr, name, header) in METRICS {
        if !info.percentile_metrics.iter().any(|p| p == attr) {
            continue;
        }
        if !measured(info, attr) {
            unmeasured.push(name);
            continue;
        }
        let st = stats(m, attr);
        s.push_str(&format!("{header:-^50}\n"));
        row_f(&mut s, &format!("Mean {name} (ms):"), st.mean);
        row_f(&mut s, &format!("Median {name} (ms):"), st.median);
        for (p, v) in &st.percentiles {
            row_f(&mut s, &format!("P{} {name} (ms):", p_word(*p)), *v);
        }
    }
    if !unmeasured.is_empty() {
        s.push_str(&format!("{:-^50}\n", " Not measured (--no-stream) "));
        row(&mut s, &format!("{} (ms):", unmeasured.join(", ")), "n/a");
    }
    s.push_str(&"=".repeat(50));
    s.push('\n');
    s
}

/// The result JSON: run settings, then vLLM's result fields. With `detailed`,
/// the per-request lists are kept (vLLM's `--save-detailed`); `errors` of failed
/// requests are always kept so a failed run can be diagnosed from its file.
pub fn result_json(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    outputs: &[RequestOutput],
    detailed: bool,
) -> Value {
    let mut j = Map::new();
    j.insert("date".into(), json!(info.date));
    j.insert("endpoint_type".into(), json!(info.backend));
    j.insert("backend".into(), json!(info.backend));
    j.insert("label".into(), json!(info.label));
    j.insert("model_id".into(), json!(info.model_id));
    j.insert("tokenizer_id".into(), json!(info.tokenizer_id));
    j.insert("num_prompts".into(), json!(info.num_prompts));
    j.insert("stream".into(), json!(info.stream));
    for (k, v) in &info.metadata {
        j.insert(k.clone(), json!(v));
    }
    j.insert(
        "request_rate".into(),
        if info.request_rate.is_finite() {
            json!(info.request_rate)
        } else {
            json!("inf")
        },
    );
    j.insert(
        "burstiness".into(),
        if info.burstiness.is_finite() {
            json!(info.burstiness)
        } else {
            json!("inf")
        },
    );
    j.insert("max_concurrency".into(), json!(info.max_concurrency));
    j.insert("duration".into(), json!(info.duration));
    j.insert("completed".into(), json!(m.completed));
    j.insert("failed".into(), json!(m.failed));
    j.insert("total_input_tokens".into(), json!(m.total_input));
    j.insert("total_output_tokens".into(), json!(m.total_output));
    j.insert("request_throughput".into(), json!(m.request_throughput));
    j.insert(
        "request_goodput".into(),
        if info.goodput {
            json!(m.request_goodput)
        } else {
            Value::Null
        },
    );
    j.insert("output_throughput".into(), json!(m.output_throughput));
    j.insert(
        "total_token_throughput".into(),
        json!(m.total_token_throughput),
    );
    if detailed {
        j.insert(
            "input_lens".into(),
            json!(outputs.iter().map(|o| o.prompt_len).collect::<Vec<_>>()),
        );
        j.insert("output_lens".into(), json!(m.output_lens));
        if info.stream {
            j.insert(
                "ttfts".into(),
                json!(outputs.iter().map(|o| o.ttft).collect::<Vec<_>>()),
            );
            j.insert(
                "itls".into(),
                json!(outputs.iter().map(|o| &o.itl).collect::<Vec<_>>()),
            );
        }
        j.insert(
            "start_times".into(),
            json!(outputs.iter().map(|o| o.start_time).collect::<Vec<_>>()),
        );
        j.insert(
            "generated_texts".into(),
            json!(
                outputs
                    .iter()
                    .map(|o| &o.generated_text)
                    .collect::<Vec<_>>()
            ),
        );
    }
    if detailed || m.failed > 0 {
        j.insert(
            "errors".into(),
            json!(outputs.iter().map(|o| &o.error).collect::<Vec<_>>()),
        );
    }
    j.insert(
        "latencies".into(),
        json!(outputs.iter().map(|o| o.latency).collect::<Vec<_>>()),
    );
    j.insert(
        "queue_times".into(),
        json!(
            outputs
                .iter()
                .map(|o| o.client_queue_time)
                .collect::<Vec<_>>()
        ),
    );
    j.insert(
        "max_output_tokens_per_s".into(),
        if info.stream {
            json!(m.max_output_tokens_per_s)
        } else {
            Value::Null
        },
    );
    j.insert(
        "max_concurrent_requests".into(),
        json!(m.max_concurrent_requests),
    );
    for (attr, _, _) in METRICS {
        if !info.percentile_metrics.iter().any(|p| p == attr) || !measured(info, attr) {
            continue;
        }
        let st = stats(m, attr);
        j.insert(format!("mean_{attr}_ms"), json!(st.mean));
        j.insert(format!("median_{attr}_ms"), json!(st.median));
        j.insert(format!("std_{attr}_ms"), json!(st.std));
        for (p, v) in &st.percentiles {
            j.insert(format!("p{}_{attr}_ms", p_word(*p)), json!(v));
        }
    }
    Value::Object(j)
}

/// vLLM's result file name: `{label}-{rate}qps[-concurrency{n}]-{model}-{date}.json`.
pub fn result_file_name(info: &RunInfo) -> String {
    let base_model = info.model_id.rsplit('/').next().unwrap_or(&info.model_id);
    let concurrency = info
        .max_concurrency
        .map(|c| format!("-concurrency{c}"))
        .unwrap_or_default();
    let label = info.label.as_deref().unwrap_or(info.backend);
    format!(
        "{label}-{}qps{concurrency}-{base_model}-{}.json",
        py_float(info.request_rate),
        info.date
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            backend: "openai",
            label: None,
            model_id: "org/SmolLM2".into(),
            tokenizer_id: "t".into(),
            num_prompts: 3,
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: Some(4),
            duration: 2.0,
            stream: true,
            goodput: false,
            percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into()],
            date: "20261123-101500".into(),
            metadata: vec![],
        }
    }

    fn metrics() -> BenchmarkMetrics {
        let st = Stats {
            mean: 12.345,
            median: 10.0,
            std: 1.0,
            percentiles: vec![(99.0, 30.0), (99.9, 31.0)],
        };
        BenchmarkMetrics {
            completed: 3,
            failed: 0,
            total_input: 300,
            total_output: 90,
            request_throughput: 1.5,
            output_throughput: 45.0,
            total_token_throughput: 195.0,
            max_output_tokens_per_s: 60.0,
            max_concurrent_requests: 3,
            ttft: st.clone(),
            tpot: st.clone(),
            itl: st.clone(),
            e2el: st,
            output_lens: vec![30, 30, 30],
            ..Default::default()
        }
    }

    #[test]
    fn block_has_vllms_labels_order_and_widths() {
        let block = result_block(&info(), &metrics());
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(
            lines[0],
            "============ Serving Benchmark Result ============"
        );
        assert_eq!(
            lines[1],
            format!("{:<40} {:<10}", "Successful requests:", 3)
        );
        let labels: Vec<&str> = lines.iter().filter_map(|l| l.split(':').next()).collect();
        let want = [
            "Successful requests",
            "Failed requests",
            "Maximum request concurrency",
            "Benchmark duration (s)",
            "Total input tokens",
            "Total generated tokens",
            "Request throughput (req/s)",
            "Output token throughput (tok/s)",
            "Peak output token throughput (tok/s)",
            "Peak concurrent requests",
            "Total token throughput (tok/s)",
        ];
        assert_eq!(&labels[1..12], &want);
        assert!(
            !block.contains("Request rate configured"),
            "infinite rate is not printed"
        );
        assert!(block.contains("---------------Time to First Token----------------\n"));
        assert!(block.contains("-----Time per Output Token (excl. 1st token)------\n"));
        assert!(block.contains(&format!("{:<40} {:<10}\n", "Mean TTFT (ms):", "12.35")));
        assert!(block.contains("P99.9 ITL (ms):"));
        assert!(!block.contains("E2EL"), "not selected");
        assert!(block.ends_with(&format!("{}\n", "=".repeat(50))));
        assert!(
            block.lines().all(|l| l.len() == 50 || l.len() == 51),
            "fixed width"
        );
    }

    #[test]
    fn json_has_vllms_field_names() {
        let mut i = info();
        i.request_rate = 4.0;
        i.goodput = true;
        let j = result_json(&i, &metrics(), &[], false);
        for key in [
            "date",
            "backend",
            "model_id",
            "tokenizer_id",
            "num_prompts",
            "request_rate",
            "burstiness",
            "max_concurrency",
            "duration",
            "completed",
            "failed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "request_goodput",
            "output_throughput",
            "total_token_throughput",
            "max_output_tokens_per_s",
            "max_concurrent_requests",
            "mean_ttft_ms",
            "median_tpot_ms",
            "std_itl_ms",
            "p99_ttft_ms",
            "p99.9_itl_ms",
        ] {
            assert!(j.get(key).is_some(), "{key} missing");
        }
        assert!(
            j.get("ttfts").is_none() && j.get("errors").is_none(),
            "details only on request"
        );
        assert_eq!(j["request_rate"], 4.0);
        assert_eq!(
            result_file_name(&info()),
            "openai-infqps-concurrency4-SmolLM2-20261123-101500.json"
        );
        assert_eq!(
            result_file_name(&i),
            "openai-4.0qps-concurrency4-SmolLM2-20261123-101500.json"
        );
    }

    #[test]
    fn a_run_without_streaming_reports_no_ttft_tpot_or_itl() {
        let mut i = info();
        i.stream = false;
        i.percentile_metrics = vec!["ttft".into(), "tpot".into(), "itl".into(), "e2el".into()];
        let block = result_block(&i, &metrics());
        assert!(!block.contains("Mean TPOT"), "{block}");
        assert!(!block.contains("P99 TTFT") && !block.contains("Inter-token"));
        assert!(block.contains("End-to-end Latency") && block.contains("P99 E2EL (ms):"));
        assert!(block.contains(&format!("{:<40} {:<10}\n", "TTFT, TPOT, ITL (ms):", "n/a")));
        assert!(block.contains("Output token throughput (tok/s):"));
        assert!(block.contains(&format!(
            "{:<40} {:<10}\n",
            "Peak output token throughput (tok/s):", "n/a"
        )));
        assert!(
            block.lines().all(|l| l.len() == 50 || l.len() == 51),
            "fixed width"
        );
        let j = result_json(&i, &metrics(), &[RequestOutput::default()], true);
        assert_eq!(j["stream"], false);
        assert!(j["max_output_tokens_per_s"].is_null());
        for gone in [
            "mean_ttft_ms",
            "mean_tpot_ms",
            "p99_tpot_ms",
            "median_itl_ms",
            "ttfts",
            "itls",
        ] {
            assert!(j.get(gone).is_none(), "{gone} present");
        }
        assert!(j.get("mean_e2el_ms").is_some() && j.get("output_throughput").is_some());
        assert_eq!(result_json(&info(), &metrics(), &[], false)["stream"], true);
    }
}
