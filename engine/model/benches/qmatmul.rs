//! Quantized matmul throughput (GMAC/s) on the default model's shapes: the Q4_1
//! projections for decode-sized (m = 1, 8, 32) and prefill-sized (m = 256, 2048)
//! batches, and the Q8_0 LM head with Candela's kernel beside candle's; then every
//! format Candela has kernels for (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16,
//! BF16) on one shape
//! of a Q4_K_M model (Qwen2.5-0.5B's ffn_down, [896, 4864]) at m = 1, 4, 32, 2048,
//! Candela's kernel beside candle's. `-- formats` runs only that part; after it,
//! format names (`Q4K Q6K`) pick formats, `shape=4096x14336` another `[n, k]` and
//! `m=1,4,512` other batch sizes (llama.cpp's `test-backend-ops perf` MUL_MAT cases
//! are `[4096, 14336]` at 1..5, 8 and 512 rows).
//! `cargo bench -p candela-model --bench qmatmul` (set CANDELA_NUM_THREADS to pin threads).

use std::time::{Duration, Instant};

use candela_model::qmatmul::{QFormat, QMatrix};

/// SmolLM2-135M projections: q/o [576, 576], k/v [192, 576], gate/up [1536, 576], down [576, 1536].
const SHAPES: [(&str, usize, usize); 3] = [
    ("q/o", 576, 576),
    ("gate/up", 1536, 576),
    ("down", 576, 1536),
];

fn matrix(n: usize, k: usize) -> QMatrix {
    // Valid blocks: f16 scale 0.01, min -0.05, pseudo-random nibbles.
    let mut data = Vec::with_capacity(n * k / 32 * 20);
    let mut s = 0x1234_5678u32;
    for _ in 0..n * k / 32 {
        data.extend_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        data.extend_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        for _ in 0..16 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            data.push((s >> 24) as u8);
        }
    }
    QMatrix::new(QFormat::Q4_1, &data, n, k).expect("valid matrix")
}

/// candle's quantized matmul on the tied Q8_0 embedding used as LM head [49152, 576].
fn candle_q8_0_lm_head() {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    let (n, k) = (49152usize, 576usize);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    let q = QMatMul::QTensor(std::sync::Arc::new(
        QTensor::quantize(&w, GgmlDType::Q8_0).unwrap(),
    ));
    let ours = QMatrix::new(QFormat::Q8_0, &q_bytes(&q), n, k).unwrap();
    for m in [1usize, 32] {
        let xv: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31) % 100) as f32 / 50.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(xv.clone(), (m, k), &Device::Cpu).unwrap();
        let _ = ours.matmul(&xv).unwrap();
        let (mut calls, start) = (0u32, Instant::now());
        while start.elapsed() < Duration::from_millis(400) {
            std::hint::black_box(ours.matmul(std::hint::black_box(&xv)).unwrap());
            calls += 1;
        }
        let per = start.elapsed().as_secs_f64() / calls as f64;
        println!(
            "{:<8} {m:>6} {:>10.3} {:>10.1}  (candela)",
            "lm_head",
            per * 1e3,
            (m * n * k) as f64 / per / 1e9
        );
        let _ = q.forward(&x).unwrap();
        let (mut calls, start) = (0u32, Instant::now());
        while start.elapsed() < Duration::from_millis(400) {
            std::hint::black_box(q.forward(&x).unwrap());
            calls += 1;
        }
        let per = start.elapsed().as_secs_f64() / calls as f64;
        println!(
            "{:<8} {m:>6} {:>10.3} {:>10.1}  (candle)",
            "lm_head",
            per * 1e3,
            (m * n * k) as f64 / per / 1e9
        );
    }
}

fn q_bytes(q: &candle_core::quantized::QMatMul) -> Vec<u8> {
    match q {
        candle_core::quantized::QMatMul::QTensor(t) => t.data().unwrap().to_vec(),
        _ => unreachable!("quantized"),
    }
}

/// Seconds per call of `f`, over at least 400 ms after one warm-up call.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let (mut calls, start) = (0u32, Instant::now());
    while start.elapsed() < Duration::from_millis(400) {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

/// Every format on Qwen2.5-0.5B's ffn_down shape (or `shape=NxK`), Candela beside
/// candle.
fn formats() {
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    let args: Vec<String> = std::env::args()
        .skip_while(|a| a != "formats")
        .skip(1)
        .collect();
    let value = |key: &str| args.iter().find_map(|a| a.strip_prefix(key));
    let (n, k) = value("shape=").map_or((896usize, 4864usize), |s| {
        let (n, k) = s.split_once('x').expect("shape=NxK");
        (n.parse().expect("n"), k.parse().expect("k"))
    });
    let ms: Vec<usize> = value("m=").map_or(vec![1, 4, 32, 2048], |s| {
        s.split(',')
            .map(|m| m.parse().expect("m=1,4,..."))
            .collect()
    });
    // Format names measure just those.
    // (`cargo bench` appends `--bench` to the arguments.)
    let only: Vec<&String> = args
        .iter()
        .filter(|a| !a.contains('=') && !a.starts_with('-'))
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>7}",
        "format", "m", "candela GMAC/s", "candle GMAC/s", "ratio"
    );
    println!("shape [{n}, {k}]");
    for format in QFormat::ALL {
        let dtype = format.ggml();
        if !only.is_empty() && !only.iter().any(|a| **a == format!("{dtype:?}")) {
            continue;
        }
        let q = QMatMul::QTensor(std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap()));
        let ours = QMatrix::new(format, &q_bytes(&q), n, k).unwrap();
        for &m in &ms {
            let xv: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31) % 100) as f32 / 50.0 - 1.0)
                .collect();
            let x = Tensor::from_vec(xv.clone(), (m, k), &Device::Cpu).unwrap();
            let macs = (m * n * k) as f64;
            let a = time(|| {
                std::hint::black_box(ours.matmul(std::hint::black_box(&xv)).unwrap());
            });
            let b = time(|| {
                std::hint::black_box(q.forward(&x).unwrap());
            });
            println!(
                "{:<8} {m:>6} {:>12.1} {:>12.1} {:>7.2}",
                format!("{dtype:?}"),
                macs / a / 1e9,
                macs / b / 1e9,
                b / a
            );
        }
    }
}

fn main() {
    println!("threads: {}", candela_model::pool::global().threads());
    if std::env::args().any(|a| a == "formats") {
        formats();
        return;
    }
    println!(
        "{:<8} {:>6} {:>10} {:>10}",
        "shape", "m", "ms/call", "GMAC/s"
    );
    candle_q8_0_lm_head();
    for (name, n, k) in SHAPES {
        let w = matrix(n, k);
        for m in [1usize, 8, 32, 256, 2048] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let _ = w.matmul(&x).unwrap();
            let (mut calls, start) = (0u32, Instant::now());
            while start.elapsed() < Duration::from_millis(400) {
                std::hint::black_box(w.matmul(std::hint::black_box(&x)).unwrap());
                calls += 1;
            }
            let per = start.elapsed().as_secs_f64() / calls as f64;
            println!(
                "{name:<8} {m:>6} {:>10.3} {:>10.1}",
                per * 1e3,
                (m * n * k) as f64 / per / 1e9
            );
        }
    }
    formats();
}
