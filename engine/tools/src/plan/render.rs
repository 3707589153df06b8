//! The text and JSON forms of a [`Plan`]: what `candela plan` prints.

use std::fmt::Write;

use super::formula::Plan;

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.1} M", n as f64 / 1e6)
    }
}

/// The plan as `candela plan` prints it.
pub fn text(p: &Plan) -> String {
    let mut s = String::from("candela plan: KV-cache capacity (seed 000's formula)\n");
    let mut line = |label: &str, value: String| {
        let _ = writeln!(s, "  {label:<15} {value}");
    };
    line(
        "model",
        format!(
            "{} ({}, {}): {} layers, {} attention heads, {} KV heads, head_dim {}, {} params",
            p.model,
            p.architecture,
            p.model_source,
            p.num_layers,
            p.num_attention_heads,
            p.num_kv_heads_model,
            p.head_dim,
            params(p.params)
        ),
    );
    let gpu = p.gpu.clone().unwrap_or_else(|| "GPU".into());
    let gpus = if p.tensor_parallel_size > 1 {
        format!(
            " per GPU, {} GPUs (tensor parallel)",
            p.tensor_parallel_size
        )
    } else {
        String::new()
    };
    line(
        "GPU memory",
        format!(
            "{gpu}: {:.2} GiB x {:.2} utilization = {:.2} GiB{gpus}",
            p.gpu_memory_gib, p.gpu_memory_utilization, p.usable_gib_per_gpu
        ),
    );
    let per_gpu = if p.tensor_parallel_size > 1 {
        format!(", {:.2} GiB per GPU", p.weights_gib_per_gpu)
    } else {
        String::new()
    };
    line(
        "weights",
        format!("{:.2} GiB{per_gpu} ({})", p.weights_gib, p.weights_source),
    );
    line(
        "KV pool",
        format!(
            "{:.2} - {:.2} = {:.2} GiB{}",
            p.usable_gib_per_gpu,
            p.weights_gib_per_gpu,
            p.kv_pool_gib_per_gpu,
            if p.tensor_parallel_size > 1 {
                format!(" per GPU, {:.2} GiB in all", p.kv_pool_gib)
            } else {
                String::new()
            }
        ),
    );
    let heads_per_gpu = (p.num_kv_heads / p.tensor_parallel_size).max(1);
    let dims = if p.head_dim == p.value_head_dim {
        format!("2 (K+V) x {} head_dim", p.head_dim)
    } else {
        format!("({} K + {} V) dims", p.head_dim, p.value_head_dim)
    };
    let kv_bytes = p.kv_bytes_per_token_per_gpu as f64
        / (p.num_layers * heads_per_gpu * (p.head_dim + p.value_head_dim)) as f64;
    line(
        "KV per token",
        format!(
            "{} layers x {} KV heads{} x {dims} x {kv_bytes} B ({}) = {}",
            p.num_layers,
            heads_per_gpu,
            if p.tensor_parallel_size > 1 {
                " per GPU"
            } else {
                ""
            },
            p.kv_cache_dtype,
            bytes(p.kv_bytes_per_token_per_gpu)
        ),
    );
    line("KV dtype", p.kv_cache_dtype_source.clone());
    line(
        "KV pool tokens",
        format!(
            "{} ({} blocks of {})",
            thousands(p.kv_pool_tokens),
            thousands(p.kv_pool_blocks),
            p.block_size
        ),
    );
    line(
        "per request",
        format!(
            "{} prompt + {} output = {} tokens",
            p.avg_prompt_len, p.avg_output_len, p.avg_request_tokens
        ),
    );
    line(
        "concurrency",
        format!(
            "{} / {} = {:.1} requests (theoretical)",
            thousands(p.kv_pool_tokens),
            p.avg_request_tokens,
            p.theoretical_concurrency
        ),
    );
    line(
        "recommended",
        format!(
            "--max-num-seqs {}  ({:.1} x (1 - {:.2} buffer))",
            p.recommended_max_num_seqs, p.theoretical_concurrency, p.buffer
        ),
    );
    line(
        "max-model-len",
        if p.max_model_len_fits {
            format!(
                "{}: one request fits; {} such requests fit at once (worst case)",
                p.max_model_len, p.max_model_len_concurrency
            )
        } else {
            format!(
                "{}: does NOT fit (pool {} tokens)",
                p.max_model_len,
                thousands(p.kv_pool_tokens)
            )
        },
    );
    for n in &p.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The plan as JSON (`candela plan --json`).
pub fn json(p: &Plan) -> String {
    serde_json::to_string_pretty(p).expect("invariant: a Plan is plain data and serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(114_688), "114,688");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn sizes_pick_a_readable_unit() {
        assert_eq!(bytes(512 * 1024), "512.0 KiB");
        assert_eq!(bytes(23_040), "22.5 KiB");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        assert_eq!(params(8_030_261_248), "8.03 B");
        assert_eq!(params(134_515_008), "134.5 M");
    }
}
