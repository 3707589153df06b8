//! The tensor path on a device, checked against Candela's CPU kernels and timed:
//!
//! ```text
//! cargo run --release -p candela-model --features cuda --example device_check -- \
//!     MODEL [--device cuda:0] [--hbm-gbps 3350] [--batches 1,64] [--context 128] [--steps 32]
//! ```
//!
//! 1. Correctness: the prompt's logits on both paths (cosine, max |diff|, same
//!    argmax) and 16 greedy tokens of four prompts on each path alone.
//! 2. Speed: decode step time at each batch size after a `--context`-token prompt
//!    (tokens/s = batch / step). At batch 1 the step time is set against the
//!    memory-bandwidth limit: weight bytes / HBM bandwidth (`--hbm-gbps`, GB/s).
//!
//! `--device cpu` runs the same tensor code on the CPU (a check of this example).
//! Prints markdown table rows for docs/cuda.md. Exits non-zero when the paths disagree.

use std::path::Path;

use candela_core::SamplingParams;
use candela_model::{
    DeviceLlama, ExecPath, ForwardBatch, ModelRunner, RunnerConfig, SampleArgs, SeqInput, StepSeq,
};
use candle_core::Device;

mod common;
use common::{BS, decode_steps};

struct Args {
    model: String,
    device: Device,
    hbm_gbps: Option<f64>,
    batches: Vec<usize>,
    context: usize,
    steps: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let usage = "usage: device_check MODEL [--device cpu|cuda:N] [--hbm-gbps G] [--batches 1,64] [--context N] [--steps N]";
    let model = it.next().ok_or(usage)?;
    let mut a = Args {
        model,
        device: Device::Cpu,
        hbm_gbps: None,
        batches: vec![1, 64],
        context: 128,
        steps: 32,
    };
    while let Some(flag) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {val}: {e}");
        match flag.as_str() {
            "--device" => {
                a.device = match val.as_str() {
                    "cpu" => Device::Cpu,
                    v => {
                        let n = v.strip_prefix("cuda:").unwrap_or("0");
                        Device::new_cuda(n.parse().map_err(|e| bad(&e))?).map_err(|e| bad(&e))?
                    }
                }
            }
            "--hbm-gbps" => a.hbm_gbps = Some(val.parse().map_err(|e| bad(&e))?),
            "--batches" => {
                a.batches = val
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            "--context" => a.context = val.parse().map_err(|e| bad(&e))?,
            "--steps" => a.steps = val.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}; {usage}")),
        }
    }
    Ok(a)
}

/// Greedy tokens of `prompt` alone on `path`.
fn greedy(m: &candela_model::LoadedModel, path: ExecPath, prompt: &[u32], n: usize) -> Vec<u32> {
    let cfg = RunnerConfig {
        num_device_blocks: (prompt.len() + n).div_ceil(BS),
        num_host_blocks: 0,
        block_size: BS,
    };
    let mut runner = ModelRunner::with_path(m.model.clone(), path, cfg).expect("runner");
    let table: Vec<u32> = (0..cfg.num_device_blocks as u32).collect();
    let params = SamplingParams::greedy(n);
    let mut all = prompt.to_vec();
    let mut out = Vec::new();
    let mut start = 0;
    while out.len() < n {
        let seq = StepSeq {
            id: 0,
            tokens: &all[start..],
            draft: &[],
            start,
            block_table: &table,
            prompt_logprobs: None,
            sample: Some(SampleArgs {
                params: &params,
                prompt,
                output: &out,
                eos: &[],
            }),
        };
        let tok = runner.execute(&[], &[], &[seq]).expect("step")[0].token;
        start = all.len();
        all.push(tok);
        out.push(tok);
    }
    out
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // candle appends a backtrace under RUST_BACKTRACE; one line is the message
            eprintln!(
                "device_check: {}",
                e.to_string().lines().next().unwrap_or_default()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let m = candela_model::load(Path::new(&a.model))?;
    let enc = |t: &str| -> Vec<u32> { m.tokenizer.encode(t, false).unwrap().get_ids().to_vec() };
    println!(
        "model {} ({} weight bytes), device {:?}",
        a.model, m.weight_bytes, a.device
    );

    // 1a. logits of one prompt on both paths
    let prompt = enc("The capital of France is Paris. The capital of Italy is");
    let table: Vec<u32> = (0..prompt.len().div_ceil(BS) as u32).collect();
    let batch = ForwardBatch::build(
        &[SeqInput {
            tokens: &prompt,
            start: 0,
            block_table: &table,
            sample: true,
        }],
        BS,
    )?;
    let mut cache = m.model.new_cache(table.len(), BS);
    let want = m
        .model
        .forward(&batch, &mut cache)?
        .to_vec2::<f32>()?
        .remove(0);
    let dm = DeviceLlama::new(&m.model, &a.device)?;
    let dcache = dm.new_cache(table.len(), BS)?;
    let got = dm.forward(&batch, &dcache)?.to_vec2::<f32>()?.remove(0);
    drop((dm, dcache));
    let dot: f64 = got
        .iter()
        .zip(&want)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (norm(&got) * norm(&want));
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    };
    let same_top = argmax(&got) == argmax(&want);
    println!(
        "| logits vs CPU path | cosine {cosine:.5} | max abs diff {max_diff:.3} | same argmax: {same_top} |"
    );

    // 1b. greedy continuations on each path alone
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time",
        "The three primary colours are",
    ];
    let mut agree = 0;
    for p in prompts {
        let ids = enc(p);
        let cpu = greedy(&m, ExecPath::Cpu, &ids, 16);
        let dev = greedy(&m, ExecPath::CandleOps(a.device.clone()), &ids, 16);
        let same = cpu.iter().zip(&dev).take_while(|(x, y)| x == y).count();
        agree += usize::from(same == cpu.len());
        println!(
            "| {p:?} | first {same}/16 greedy tokens equal | device: {:?} |",
            m.tokenizer.decode(&dev, true).unwrap_or_default()
        );
    }

    // 2. decode speed on the tensor path
    let max_b = a.batches.iter().copied().max().unwrap_or(1);
    let cfg = RunnerConfig {
        num_device_blocks: max_b * (a.context + a.steps + 1).div_ceil(BS) + 1,
        num_host_blocks: 0,
        block_size: BS,
    };
    let mut runner =
        ModelRunner::with_path(m.model.clone(), ExecPath::CandleOps(a.device.clone()), cfg)?;
    let _ = decode_steps(&mut runner, 1, a.context, 4); // warm-up (kernel loading)
    println!("| batch | step ms (TPOT) | output tok/s | bandwidth limit ms | limit / measured |");
    println!("|---|---|---|---|---|");
    for &b in &a.batches {
        let step = decode_steps(&mut runner, b, a.context, a.steps);
        let limit = a.hbm_gbps.map(|g| m.weight_bytes as f64 / (g * 1e9));
        let (lim, ratio) = match (b, limit) {
            (1, Some(l)) => (format!("{:.3}", l * 1e3), format!("{:.2}", l / step)),
            _ => ("".into(), "".into()),
        };
        println!(
            "| {b} | {:.3} | {:.1} | {lim} | {ratio} |",
            step * 1e3,
            b as f64 / step
        );
    }
    if !same_top || cosine < 0.97 || agree == 0 {
        return Err(format!(
            "the device path disagrees with the CPU path (cosine {cosine:.4}, same argmax {same_top}, {agree}/4 continuations equal)"
        )
        .into());
    }
    Ok(())
}
