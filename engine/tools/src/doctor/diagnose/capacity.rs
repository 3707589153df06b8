//! The capacity rules: a queue piling up, a full KV pool, swapping, preemptions
//! and a batch at `--max-num-seqs` — the seed's alert rules for Pending, GPU KV
//! cache usage and Swapped, and its "加 GPU / 减并发" advice.

use super::{Ctx, Finding, Severity, dist_line, pct};

pub(super) fn waiting_queue(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let w = &f.waiting;
    let (above, of) = w.count_where(|v| v > th.waiting);
    let sustained = cx.level_sustained(w, th.waiting);
    let (early, late) = w.thirds();
    let first = w.trace.first().map_or(0.0, |p| p.1);
    let growing = late - early >= th.waiting_growth && late >= 1.5 * early && w.last > first;
    if !sustained && !growing {
        return None;
    }
    let mut evidence = vec![format!(
        "waiting > {} {} (mean {:.1}, max {:.0}, last {:.0})",
        th.waiting,
        cx.in_scrapes(above, of),
        w.mean,
        w.max,
        w.last
    )];
    if growing {
        evidence.push(format!(
            "the queue grew from {early:.1} to {late:.1} (mean of the first vs the last third)"
        ));
    }
    if let Some(t) = &f.ttft {
        evidence.push(dist_line("TTFT", t));
    }
    evidence.push(format!(
        "running mean {:.1}, max {:.0}",
        f.running.mean, f.running.max
    ));
    let mut cause = "requests arrive faster than the running batch finishes them; each waiting \
                     request's TTFT includes its wait, so TTFT is about to explode"
        .to_string();
    let mut turn = vec![
        "add replicas (scale out on vllm:num_requests_waiting)".to_string(),
        "--enable-chunked-prefill (admit prefills alongside decodes)".to_string(),
        "lower --max-model-len (smaller worst-case KV per request, more requests admitted)"
            .to_string(),
    ];
    if let Some(m) = cx.batch_full() {
        cause.push_str(&format!("; the batch is full at --max-num-seqs {m}"));
        if !cx.kv_full() {
            turn.push(format!(
                "raise --max-num-seqs above {m}: KV usage (max {}) has room",
                pct(f.kv_usage.max)
            ));
        }
    }
    if cx.kv_full() {
        cause.push_str(&format!(
            "; the KV cache is full (mean {}), so nothing more can be admitted",
            pct(f.kv_usage.mean)
        ));
    }
    Some(Finding {
        id: "waiting_queue",
        severity: if sustained {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: if sustained {
            format!(
                "waiting queue > {} sustained: TTFT is about to explode",
                th.waiting
            )
        } else {
            "waiting queue growing: TTFT is about to explode".into()
        },
        evidence,
        cause,
        turn,
    })
}

pub(super) fn kv_cache_full(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    if !cx.kv_full() {
        return None;
    }
    let k = &f.kv_usage;
    let (above, of) = k.count_where(|v| v > th.kv_usage);
    let mut evidence = vec![format!(
        "{} > {} {} (mean {}, max {})",
        k.metric.unwrap_or("KV usage"),
        pct(th.kv_usage),
        cx.in_scrapes(above, of),
        pct(k.mean),
        pct(k.max)
    )];
    if let Some(b) = f.num_gpu_blocks {
        evidence.push(format!("pool: {b} blocks (vllm:cache_config_info)"));
    }
    let pressure = f.preemptions.total > 0.0 || f.swapped.max > 0.0;
    if pressure {
        evidence.push(format!(
            "{:.0} preemptions, swapped max {:.0} in the window",
            f.preemptions.total, f.swapped.max
        ));
    }
    Some(Finding {
        id: "kv_cache_full",
        severity: if pressure {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: format!(
            "KV cache usage > {} sustained: time to scale out",
            pct(th.kv_usage)
        ),
        evidence,
        cause: "the running sequences fill the KV pool: new requests wait for blocks and long \
                ones get preempted"
            .into(),
        turn: vec![
            "add replicas / GPUs".into(),
            "--kv-cache-dtype fp8 (halves KV per token)".into(),
            "quantized weights (AWQ) to leave more memory to the pool".into(),
            "raise --gpu-memory-utilization if it is below 0.95".into(),
            "lower --max-model-len".into(),
        ],
    })
}

pub(super) fn swapping(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let s = &f.swapped;
    let (above, of) = s.count_where(|v| v > 0.0);
    if above == 0 {
        return None;
    }
    let sustained = above as f64 / of as f64 >= th.sustained;
    let mut evidence = vec![format!(
        "swapped > 0 {} (mean {:.1}, max {:.0})",
        cx.in_scrapes(above, of),
        s.mean,
        s.max
    )];
    if f.cpu_kv_usage.present() {
        evidence.push(format!(
            "CPU KV usage max {} (> 0 = overflow)",
            pct(f.cpu_kv_usage.max)
        ));
    }
    evidence.push(format!("GPU KV usage mean {}", pct(f.kv_usage.mean)));
    Some(Finding {
        id: "swapping",
        severity: if sustained {
            Severity::Critical
        } else {
            Severity::Info
        },
        symptom: if sustained {
            "sequences swapped to CPU, sustained: the KV pool is too small".into()
        } else {
            "sequences were swapped to CPU at times".into()
        },
        evidence,
        cause: "the GPU KV pool cannot hold the running batch: sequences are parked in host \
                memory and recomputed or copied back later; a bigger --swap-space only hides this"
            .into(),
        turn: vec![
            "add GPUs / replicas".into(),
            "lower --max-num-seqs".into(),
            "--kv-cache-dtype fp8".into(),
        ],
    })
}

pub(super) fn preemptions(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let p = &f.preemptions;
    if p.total <= 0.0 {
        return None;
    }
    let rising = p.late_rate > 2.0 * p.early_rate && p.late_rate > 0.0;
    let fast = p.rate >= th.preemption_rate_critical;
    Some(Finding {
        id: "preemptions",
        severity: if fast || rising {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: if rising {
            "preemptions rising".into()
        } else {
            "preemptions in the window".into()
        },
        evidence: vec![
            format!(
                "+{:.0} vllm:num_preemptions_total over {} ({:.2}/s; first half {:.2}/s, second half {:.2}/s)",
                p.total, cx.window, p.rate, p.early_rate, p.late_rate
            ),
            format!(
                "KV usage mean {}, max {}; running mean {:.1}",
                pct(f.kv_usage.mean),
                pct(f.kv_usage.max),
                f.running.mean
            ),
        ],
        cause: "the KV cache ran out mid-decode: sequences are evicted and their work redone, \
                which costs throughput and latency"
            .into(),
        turn: vec![
            "lower --max-num-seqs".into(),
            "add GPUs / replicas".into(),
            "--kv-cache-dtype fp8".into(),
        ],
    })
}

pub(super) fn batch_full(cx: &Ctx) -> Option<Finding> {
    let f = cx.f;
    let m = cx.batch_full()?;
    let (at, of) = f.running.count_where(|r| r >= m as f64);
    let queue = f.waiting.mean >= 1.0;
    Some(Finding {
        id: "batch_full",
        severity: if queue {
            Severity::Warning
        } else {
            Severity::Info
        },
        symptom: format!("running = --max-num-seqs {m} sustained: the engine is at full batch"),
        evidence: vec![
            format!("running >= {m} {}", cx.in_scrapes(at, of)),
            format!(
                "waiting mean {:.1}; KV usage max {}",
                f.waiting.mean,
                pct(f.kv_usage.max)
            ),
        ],
        cause: if queue {
            "every slot is taken and requests queue behind them".into()
        } else {
            "every slot is taken; no queue yet".into()
        },
        turn: if cx.kv_full() {
            vec!["add replicas (KV is full too)".into()]
        } else {
            vec![
                format!("raise --max-num-seqs above {m} (KV has room)"),
                "or add replicas".into(),
            ]
        },
    })
}
