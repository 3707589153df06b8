//! Seed 000's symptom → cause table on recorded metric series: each fixture in
//! tests/fixtures/doctor/ is a real `candela serve` (CPU, default model) driven
//! into one symptom and recorded with `candela doctor --record` (see record.py
//! there for the flags and load of each). A few tests edit a recording's values
//! (scaling a gauge, dropping the current metric names) to reach branches a CPU
//! run cannot, and say so.
//!
//! The recordings come from a CPU, where decoding is ~40 ms a token even for a
//! single sequence: the seed's TPOT ceiling (30 ms, written for a bf16 70B on
//! GPUs) is replaced by a CPU one wherever TPOT is not what a test is about.

use candela_tools::doctor::expo::Sample;
use candela_tools::doctor::{
    Diagnosis, Finding, Series, Severity, Thresholds, examine, recording, report,
};

fn series(name: &str) -> Series {
    let p = format!(
        "{}/tests/fixtures/doctor/{name}.prom",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    recording::parse(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The seed's thresholds, with a TPOT ceiling a CPU meets when it is not busy.
fn cpu() -> Thresholds {
    Thresholds {
        tpot_p95_s: 0.25,
        ..Thresholds::default()
    }
}

fn find<'a>(d: &'a Diagnosis, id: &str) -> &'a Finding {
    d.findings.iter().find(|f| f.id == id).unwrap_or_else(|| {
        let ids: Vec<&str> = d.findings.iter().map(|f| f.id).collect();
        panic!(
            "no {id} finding; found {ids:?}\n{}",
            report::text(d, "fixture")
        )
    })
}

fn ids(d: &Diagnosis) -> Vec<&'static str> {
    d.findings.iter().map(|f| f.id).collect()
}

fn has(items: &[String], needle: &str) -> bool {
    items.iter().any(|s| s.contains(needle))
}

/// Rewrites every sample named `name` with `f(snapshot index, value)`.
fn edit(s: &mut Series, name: &str, f: impl Fn(usize, f64) -> f64) {
    for (i, snap) in s.snapshots.iter_mut().enumerate() {
        for x in snap.samples.iter_mut().filter(|x| x.name == name) {
            x.value = f(i, x.value);
        }
    }
}

#[test]
fn healthy_traffic_gives_no_findings() {
    let th = Thresholds {
        multi_turn: true,
        ..cpu()
    };
    let d = examine(&series("healthy"), &th);
    assert!(d.findings.is_empty(), "{}", report::text(&d, "healthy"));
    let f = &d.facts;
    assert_eq!((f.snapshots, f.targets), (13, 1));
    assert!((f.window_s - 60.0).abs() < 1.0, "{}", f.window_s);
    assert!(
        f.finished > 50.0 && f.generation_tokens.rate > 10.0,
        "{f:?}"
    );
    assert!(f.prefix_hit_rate().unwrap() > 0.4);
    let text = report::text(&d, "healthy");
    assert!(text.contains("no problems found"), "{text}");
    for want in [
        "queue",
        "KV cache",
        "throughput",
        "TTFT",
        "TPOT",
        "prefix cache",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&report::json(&d, "healthy")).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["findings"].as_array().unwrap().len(), 0);
    assert!(json["facts"]["ttft"]["p95"].as_f64().unwrap() < 0.5);
}

#[test]
fn a_sustained_queue_is_critical_and_blamed_on_capacity() {
    let th = Thresholds {
        max_num_seqs: Some(2),
        ..cpu()
    };
    let d = examine(&series("waiting_queue"), &th);
    let w = find(&d, "waiting_queue");
    assert_eq!(w.severity, Severity::Critical);
    assert!(
        w.symptom.contains("TTFT is about to explode"),
        "{}",
        w.symptom
    );
    assert!(
        has(&w.evidence, "waiting > 10 in 13 of 13 snapshots over 60 s"),
        "{:?}",
        w.evidence
    );
    assert!(
        w.cause.contains("the batch is full at --max-num-seqs 2"),
        "{}",
        w.cause
    );
    assert!(has(&w.turn, "add replicas") && has(&w.turn, "--enable-chunked-prefill"));
    assert!(has(&w.turn, "--max-model-len") && has(&w.turn, "raise --max-num-seqs above 2"));
    // TTFT is high because of the queue, not the prefill.
    let t = find(&d, "ttft_high");
    assert!(t.cause.starts_with("queueing"), "{}", t.cause);
    assert!(
        has(&t.evidence, "of which queueing mean"),
        "{:?}",
        t.evidence
    );
    // And the batch is full.
    assert_eq!(find(&d, "batch_full").severity, Severity::Warning);
    // Critical findings come first.
    assert_eq!(d.findings[0].id, "waiting_queue");
}

#[test]
fn a_growing_queue_below_ten_is_a_warning() {
    // Edited: the recorded queue (22 waiting) scaled onto a ramp from 0 to 8.
    let mut s = series("waiting_queue");
    let n = s.snapshots.len() as f64;
    edit(&mut s, "vllm:num_requests_waiting", |i, v| {
        (v * 0.4 * i as f64 / (n - 1.0)).round()
    });
    let d = examine(&s, &cpu());
    let w = find(&d, "waiting_queue");
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.symptom, "waiting queue growing: TTFT is about to explode");
    assert!(has(&w.evidence, "the queue grew from"), "{:?}", w.evidence);
}

#[test]
fn kv_pressure_is_full_and_preempting() {
    let d = examine(&series("kv_pressure"), &cpu());
    let k = find(&d, "kv_cache_full");
    assert_eq!(k.severity, Severity::Critical, "full and preempting");
    assert!(
        has(&k.evidence, "vllm:kv_cache_usage_perc > 90.0%"),
        "{:?}",
        k.evidence
    );
    assert!(has(&k.evidence, "pool: 102 blocks"), "{:?}", k.evidence);
    assert!(has(&k.turn, "--kv-cache-dtype fp8") && has(&k.turn, "AWQ"));
    assert!(has(&k.turn, "--gpu-memory-utilization"));
    let p = find(&d, "preemptions");
    assert!(
        d.facts.preemptions.total >= 5.0,
        "{:?}",
        d.facts.preemptions
    );
    assert!(has(&p.turn, "lower --max-num-seqs"));
    assert!(
        !ids(&d).contains(&"swapping"),
        "no swap space: recompute only"
    );
}

#[test]
fn sustained_swapping_is_critical_and_not_fixed_by_swap_space() {
    let d = examine(&series("swapping"), &cpu());
    let s = find(&d, "swapping");
    assert_eq!(s.severity, Severity::Critical);
    assert!(
        has(&s.evidence, "swapped > 0 in 13 of 13 snapshots over 60 s"),
        "{:?}",
        s.evidence
    );
    assert!(has(&s.evidence, "CPU KV usage max"), "{:?}", s.evidence);
    assert!(s.cause.contains("a bigger --swap-space only hides this"));
    assert!(has(&s.turn, "add GPUs") && has(&s.turn, "lower --max-num-seqs"));
    assert!(d.facts.cpu_kv_usage.max > 0.0);
}

#[test]
fn long_prompts_make_ttft_a_prefill_problem() {
    let d = examine(&series("ttft_prefill"), &cpu());
    let t = find(&d, "ttft_high");
    assert!(
        t.cause.starts_with("prefill: long prompts (mean 15"),
        "{}",
        t.cause
    );
    assert!(has(&t.turn, "--enable-chunked-prefill"));
    assert!(has(&t.turn, "raise --max-num-batched-tokens"));
    assert!(!ids(&d).contains(&"waiting_queue"));
    assert_eq!(d.facts.waiting.max, 0.0);
}

#[test]
fn a_big_batch_makes_tpot_high() {
    let d = examine(&series("tpot_batch"), &cpu());
    let t = find(&d, "tpot_high");
    assert!(d.facts.running.mean > 30.0, "{:?}", d.facts.running);
    assert!(
        t.cause.starts_with("the batch is large (about 4"),
        "{}",
        t.cause
    );
    assert!(has(&t.turn, "lower --max-num-seqs") && has(&t.turn, "--kv-cache-dtype fp8"));
    assert!(
        has(&t.evidence, "vllm:inter_token_latency_seconds"),
        "{:?}",
        t.evidence
    );
    // With the server's --max-num-seqs at 48 the batch is also at its cap.
    let th = Thresholds {
        max_num_seqs: Some(48),
        ..cpu()
    };
    let d = examine(&series("tpot_batch"), &th);
    assert!(find(&d, "tpot_high").evidence[1].ends_with("of --max-num-seqs 48"));
}

#[test]
fn small_requests_filling_the_batch_drop_generation_throughput() {
    let d = examine(&series("throughput_drop"), &cpu());
    let t = find(&d, "throughput_drop");
    assert_eq!(t.severity, Severity::Warning);
    assert!(
        t.cause.contains("filled with small requests"),
        "{}",
        t.cause
    );
    assert!(has(&t.turn, "max_tokens"));
    assert!(
        has(
            &t.evidence,
            "generated tokens per request: mean 128.0 then 2.0"
        ),
        "{:?}",
        t.evidence
    );
    assert!(
        has(&t.evidence, "requested max_tokens: mean 128.0 then 2.0"),
        "{:?}",
        t.evidence
    );
    let g = d.facts.generation_tokens;
    assert!(g.late_rate < 0.5 * g.early_rate, "{g:?}");
}

#[test]
fn prefix_caching_off_matters_only_for_multi_turn_traffic() {
    let th = Thresholds {
        multi_turn: true,
        ..cpu()
    };
    let d = examine(&series("prefix_off"), &th);
    let p = find(&d, "prefix_cache_low");
    assert_eq!(p.symptom, "prefix caching is off for multi-turn traffic");
    assert!(has(&p.turn, "--enable-prefix-caching"));
    assert_eq!(d.facts.prefix_caching_enabled, Some(false));
    let d = examine(&series("prefix_off"), &cpu());
    assert!(
        !ids(&d).contains(&"prefix_cache_low"),
        "not multi-turn: {:?}",
        ids(&d)
    );
}

#[test]
fn a_low_hit_rate_and_missing_lookups_in_multi_turn_traffic() {
    let th = Thresholds {
        multi_turn: true,
        ..cpu()
    };
    // Unique prompts: the counters say almost nothing was reused.
    let d = examine(&series("throughput_drop"), &th);
    let p = find(&d, "prefix_cache_low");
    assert!(
        p.symptom.starts_with("prefix-cache hit rate"),
        "{}",
        p.symptom
    );
    assert!(
        has(&p.evidence, "queried tokens over 60 s"),
        "{:?}",
        p.evidence
    );
    // Edited: the healthy recording with its lookup counter frozen.
    let mut s = series("healthy");
    let first = s.snapshots[0]
        .samples
        .iter()
        .find(|x| x.name == "vllm:prefix_cache_queries_total")
        .unwrap()
        .value;
    edit(&mut s, "vllm:prefix_cache_queries_total", |_, _| first);
    let d = examine(&s, &th);
    let p = find(&d, "prefix_cache_low");
    assert_eq!(
        p.symptom,
        "no prefix-cache lookups while prompts were processed"
    );
}

#[test]
fn the_seeds_older_metric_names_read_the_same() {
    // Edited: the current-generation names removed, leaving the ones the seed uses.
    let current = [
        "vllm:kv_cache_usage_perc",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:inter_token_latency_seconds_sum",
        "vllm:inter_token_latency_seconds_count",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    ];
    let new = series("kv_pressure");
    let mut old = new.clone();
    for snap in &mut old.snapshots {
        snap.samples.retain(|x| !current.contains(&x.name.as_str()));
    }
    let (a, b) = (examine(&new, &cpu()), examine(&old, &cpu()));
    assert_eq!(b.facts.kv_usage.metric, Some("vllm:gpu_cache_usage_perc"));
    assert_eq!(
        b.facts.tpot_metric,
        Some("vllm:time_per_output_token_seconds")
    );
    assert_eq!(a.facts.kv_usage.trace, b.facts.kv_usage.trace);
    assert_eq!(a.facts.tpot, b.facts.tpot);
    assert!(!b.facts.prefix_counters && b.facts.prefix_hit_rate_gauge.is_some());
    assert_eq!(ids(&a), ids(&b));
}

#[test]
fn two_targets_sum_counters_and_take_the_worst_gauge() {
    // Edited: two recordings side by side as two pods of one deployment.
    let (mut a, b) = (series("healthy"), series("waiting_queue"));
    let pod = |x: &Sample, p: &str| {
        let mut x = x.clone();
        x.labels.push(("pod".into(), p.into()));
        x
    };
    let gen_a = a.increase("vllm:generation_tokens_total");
    let gen_b = b.increase("vllm:generation_tokens_total");
    for (sa, sb) in a.snapshots.iter_mut().zip(&b.snapshots) {
        let mut merged: Vec<Sample> = sa.samples.iter().map(|x| pod(x, "a")).collect();
        merged.extend(sb.samples.iter().map(|x| pod(x, "b")));
        sa.samples = merged;
    }
    let d = examine(&a, &cpu());
    assert_eq!(d.facts.targets, 2);
    assert!((d.facts.generation_tokens.total - (gen_a + gen_b)).abs() < 1e-6);
    assert_eq!(find(&d, "waiting_queue").severity, Severity::Critical);
    let text = report::text(&d, "two pods");
    assert!(text.contains("2 targets (gauges: the worst one)"), "{text}");
}

#[test]
fn recordings_hold_every_family_candela_exports_for_doctor() {
    // The names doctor reads are the ones the server writes (engine/server/src/metrics/names.rs).
    let s = series("healthy");
    for family in candela_tools::doctor::names::FAMILIES {
        let sample = if s.has(family) {
            family.to_string()
        } else {
            format!("{family}_count")
        };
        assert!(
            s.has(&sample),
            "{family} is not in a real Candela exposition"
        );
    }
}
