//! Decode speed of the real model through the runner:
//! `cargo run --release -p candela-model --example bench -- MODEL [CONTEXT]`.
//! Prints single-sequence decode tokens/s and the step time of a batch of 8
//! sequences each decoding one token (all after a prompt of CONTEXT tokens).

use std::path::Path;
use std::time::Instant;

use candela_model::{ModelRunner, RunnerConfig, StepSeq};

mod common;
use common::{BS, decode_steps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: bench MODEL [CONTEXT]")?;
    let ctx: usize = args.get(1).map_or(Ok(128), |s| s.parse())?;
    let m = candela_model::load(Path::new(path))?;
    let cfg = RunnerConfig {
        num_device_blocks: 8 * (ctx + 64).div_ceil(BS),
        num_host_blocks: 0,
        block_size: BS,
    };
    let mut runner = ModelRunner::new(m.model, cfg);
    let _ = decode_steps(&mut runner, 1, ctx, 4); // warm-up
    let one = decode_steps(&mut runner, 1, ctx, 32);
    println!(
        "single sequence: {:.1} ms/token, {:.1} tokens/s (context {ctx})",
        one * 1e3,
        1.0 / one
    );
    let eight = decode_steps(&mut runner, 8, ctx, 16);
    println!(
        "batch of 8: {:.1} ms/step, {:.1} tokens/s aggregate (context {ctx})",
        eight * 1e3,
        8.0 / eight
    );
    let t0 = Instant::now();
    let prompt: Vec<u32> = (0..512u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let table: Vec<u32> = (0..(512 / BS) as u32).collect();
    runner.execute(
        &[],
        &[],
        &[StepSeq {
            id: 99,
            tokens: &prompt,
            draft: &[],
            start: 0,
            block_table: &table,
            prompt_logprobs: None,
            sample: None,
        }],
    )?;
    println!(
        "prefill 512 tokens: {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
