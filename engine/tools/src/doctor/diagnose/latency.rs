//! The latency and efficiency rules: TTFT (queueing vs prefill), TPOT (batch size
//! vs prefill interference), generation throughput drops (small requests vs
//! falling load) and the prefix-cache hit rate of multi-turn traffic.

use super::{BIG_BATCH, Ctx, Finding, LONG_PROMPT, Severity, dist_line, pct, secs};

pub(super) fn ttft_high(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let t = f.ttft.filter(|t| t.p95 > th.ttft_p95_s)?;
    let mut evidence = vec![format!(
        "{} (ceiling p95 {})",
        dist_line("TTFT", &t),
        secs(th.ttft_p95_s)
    )];
    let queue_share = match (f.queue_time, f.prefill_time) {
        (Some(q), Some(p)) if q.mean + p.mean > 0.0 => {
            evidence.push(format!(
                "of which queueing mean {} (p95 {}), prefill mean {} (p95 {})",
                secs(q.mean),
                secs(q.p95),
                secs(p.mean),
                secs(p.p95)
            ));
            Some(q.mean / (q.mean + p.mean))
        }
        _ => None,
    };
    evidence.push(format!(
        "waiting mean {:.1}, max {:.0}",
        f.waiting.mean, f.waiting.max
    ));
    if let Some(p) = f.prompt_len {
        evidence.push(format!("prompts mean {:.0} tokens", p.mean));
    }
    let queueing = queue_share.map_or(f.waiting.mean >= 1.0, |s| s >= 0.5);
    let prompt_mean = f.prompt_len.map_or(0.0, |p| p.mean);
    let mut turn;
    let cause;
    if queueing {
        cause = "queueing: requests wait for a slot in the batch before their prefill starts \
                 (a capacity problem, not a slow prefill)"
            .to_string();
        turn = vec![
            "add replicas".to_string(),
            "--enable-chunked-prefill".to_string(),
            "lower --max-model-len".to_string(),
        ];
        if let Some(m) = cx.batch_full().filter(|_| !cx.kv_full()) {
            turn.push(format!("raise --max-num-seqs above {m}: KV has room"));
        }
    } else if prompt_mean >= LONG_PROMPT {
        cause = format!(
            "prefill: long prompts (mean {prompt_mean:.0} tokens) take a whole step, or several, \
             before the first token"
        );
        turn = vec![
            "--enable-chunked-prefill".to_string(),
            "raise --max-num-batched-tokens (bigger prefill chunks per step)".to_string(),
        ];
    } else {
        let mut c = format!(
            "the first step is slow although prompts are short (mean {prompt_mean:.0} tokens): \
             scheduled requests share crowded steps"
        );
        if f.preemptions.total > 0.0 || f.swapped.max > 0.0 {
            c.push_str(", and preemption or swapping sends some back before their first token");
        }
        cause = c;
        turn = vec![
            "lower --max-num-seqs (shorter steps)".to_string(),
            "relieve KV pressure first if it is reported (fp8 KV, replicas)".to_string(),
        ];
    }
    if th.multi_turn && f.prefix_hit_rate().is_none_or(|r| r < th.prefix_hit_min) {
        turn.push("--enable-prefix-caching (multi-turn prompts repeat their history)".into());
    }
    Some(Finding {
        id: "ttft_high",
        severity: Severity::Warning,
        symptom: format!("TTFT p95 {} > {}", secs(t.p95), secs(th.ttft_p95_s)),
        evidence,
        cause,
        turn,
    })
}

pub(super) fn tpot_high(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let t = f.tpot.filter(|t| t.p95 > th.tpot_p95_s)?;
    let mut evidence = vec![format!(
        "{} ({}; ceiling p95 {})",
        dist_line("TPOT", &t),
        f.tpot_metric.unwrap_or("TPOT"),
        secs(th.tpot_p95_s)
    )];
    let running = match th.max_num_seqs {
        Some(m) => format!(
            "running mean {:.1}, max {:.0} of --max-num-seqs {m}",
            f.running.mean, f.running.max
        ),
        None => format!(
            "running mean {:.1}, max {:.0}",
            f.running.mean, f.running.max
        ),
    };
    evidence.push(running);
    let near_cap = th
        .max_num_seqs
        .is_some_and(|m| f.running.mean >= 0.9 * m as f64);
    let big = f.running.mean >= BIG_BATCH;
    // Prefills stretching some steps show as a long tail over the median.
    let tail = t.p95 / t.p50;
    let prefill_heavy = tail > 2.5 && f.prompt_tokens.rate > f.generation_tokens.rate;
    if prefill_heavy {
        evidence.push(format!(
            "p95 is {tail:.1}x p50 while prompt {:.1} tok/s > generation {:.1} tok/s: \
             prefills stretch some decode steps",
            f.prompt_tokens.rate, f.generation_tokens.rate
        ));
    }
    let mut causes = Vec::new();
    let mut turn = Vec::new();
    if big {
        causes.push(format!(
            "the batch is large (about {:.0} sequences per step{}): every step decodes them all, \
             so each token waits longer",
            f.running.mean,
            if near_cap { ", at --max-num-seqs" } else { "" }
        ));
        turn.push("lower --max-num-seqs".to_string());
        turn.push("--kv-cache-dtype fp8 (less KV to read per token)".to_string());
    }
    if prefill_heavy {
        causes.push("prompt prefills interleaved with decodes stretch the steps".to_string());
        turn.push(
            "--enable-chunked-prefill with a smaller --max-num-batched-tokens (shorter steps)"
                .into(),
        );
    }
    if causes.is_empty() {
        causes.push(format!(
            "decode is slow even for a small batch (about {:.1} sequences): the model is slow on \
             this hardware for this ceiling",
            f.running.mean
        ));
        turn.push("a faster GPU, quantized weights, or --tensor-parallel-size".to_string());
        turn.push("--tpot-p95-ms if the ceiling does not suit this model".to_string());
    }
    let cause = causes.join("; ");
    Some(Finding {
        id: "tpot_high",
        severity: Severity::Warning,
        symptom: format!("TPOT p95 {} > {}", secs(t.p95), secs(th.tpot_p95_s)),
        evidence,
        cause,
        turn,
    })
}

pub(super) fn throughput_drop(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let g = &f.generation_tokens;
    if f.snapshots < 4
        || g.early_rate <= 0.0
        || g.late_rate >= (1.0 - th.throughput_drop) * g.early_rate
    {
        return None;
    }
    let (run_early, run_late) = f.running.halves(f.t_mid);
    let (_, wait_late) = f.waiting.halves(f.t_mid);
    let mut evidence = vec![format!(
        "generation {:.1} tok/s in the first half, {:.1} tok/s in the second ({:.0}% lower)",
        g.early_rate,
        g.late_rate,
        (1.0 - g.late_rate / g.early_rate) * 100.0
    )];
    evidence.push(format!("running mean {run_early:.1} then {run_late:.1}"));
    let small = match f.generation_len_halves {
        (Some(a), Some(b)) => {
            evidence.push(format!(
                "generated tokens per request: mean {a:.1} then {b:.1}"
            ));
            b < 0.5 * a
        }
        (_, Some(b)) => {
            evidence.push(format!(
                "generated tokens per request in the second half: mean {b:.1}"
            ));
            false
        }
        _ => false,
    };
    if let (Some(a), Some(b)) = f.max_tokens_halves {
        evidence.push(format!("requested max_tokens: mean {a:.1} then {b:.1}"));
    }
    evidence.push(format!(
        "prompt {:.1} tok/s then {:.1} tok/s",
        f.prompt_tokens.early_rate, f.prompt_tokens.late_rate
    ));
    let load_fell = run_late < 0.5 * run_early && wait_late < 1.0;
    let (severity, cause, turn) = if small {
        (
            Severity::Warning,
            "the batch is filled with small requests: each generates few tokens, so steps go \
             to prefills and admissions instead of decoding"
                .to_string(),
            vec![
                "check the clients' max_tokens (and stop sequences)".to_string(),
                "--scheduler-delay-factor to batch prefills together".to_string(),
            ],
        )
    } else if load_fell {
        (
            Severity::Info,
            "fewer requests are running: the load fell, the server did not slow down".to_string(),
            vec!["nothing to turn, unless clients are failing to reach the server".to_string()],
        )
    } else {
        (
            Severity::Warning,
            "the batch held but produced fewer tokens: most often small requests filling it \
             (check the clients' max_tokens), else preemption or long prefills stealing steps"
                .to_string(),
            vec![
                "check the clients' max_tokens".to_string(),
                "see preemption / KV findings; --enable-chunked-prefill".to_string(),
            ],
        )
    };
    Some(Finding {
        id: "throughput_drop",
        severity,
        symptom: "generation throughput dropped".into(),
        evidence,
        cause,
        turn,
    })
}

pub(super) fn prefix_cache(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    if !th.multi_turn || f.prompt_tokens.total <= 0.0 {
        return None;
    }
    let finding = |symptom: String, evidence: Vec<String>, cause: &str| Finding {
        id: "prefix_cache_low",
        severity: Severity::Warning,
        symptom,
        evidence,
        cause: cause.into(),
        turn: vec!["--enable-prefix-caching (multi-turn TTFT drops at once)".into()],
    };
    if f.prefix_caching_enabled == Some(false) {
        return Some(finding(
            "prefix caching is off for multi-turn traffic".into(),
            vec!["vllm:cache_config_info{enable_prefix_caching=\"False\"}".into()],
            "every turn re-computes the whole conversation history",
        ));
    }
    if f.prefix_counters && f.prefix_queries <= 0.0 {
        return Some(finding(
            "no prefix-cache lookups while prompts were processed".into(),
            vec![format!(
                "vllm:prefix_cache_queries_total +0 while vllm:prompt_tokens_total +{:.0} over {}",
                f.prompt_tokens.total, cx.window
            )],
            "prefix caching is probably off: every turn re-computes the history",
        ));
    }
    let rate = f.prefix_hit_rate()?;
    if rate >= th.prefix_hit_min {
        return None;
    }
    let mut evidence = vec![if f.prefix_counters {
        format!(
            "hit rate {} ({:.0} of {:.0} queried tokens over {}); multi-turn should be > {}",
            pct(rate),
            f.prefix_hits,
            f.prefix_queries,
            cx.window,
            pct(th.prefix_hit_min)
        )
    } else {
        format!(
            "vllm:gpu_prefix_cache_hit_rate {} (since start); multi-turn should be > {}",
            pct(rate),
            pct(th.prefix_hit_min)
        )
    }];
    evidence.push(format!("KV usage mean {}", pct(f.kv_usage.mean)));
    Some(finding(
        format!(
            "prefix-cache hit rate {} < {} in multi-turn traffic",
            pct(rate),
            pct(th.prefix_hit_min)
        ),
        evidence,
        "conversation prefixes are not reused: caching off, cached blocks evicted under KV \
         pressure, or clients changing the start of the prompt (timestamps, reordered system \
         prompts)",
    ))
}
