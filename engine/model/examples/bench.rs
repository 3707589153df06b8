//! Decode speed of the real model through the runner:
//! `cargo run --release -p candela-model --example bench -- MODEL [CONTEXT]`.
//! Prints single-sequence decode tokens/s and the step time of a batch of 8
//! sequences each decoding one token (all after a prompt of CONTEXT tokens).

use std::path::Path;
use std::time::Instant;

use candela_core::SamplingParams;
use candela_model::{ModelRunner, RunnerConfig, SampleArgs, StepSeq};
use candle_core::{DType, Device};

const BS: usize = 16;

/// Prefills `n` sequences of `ctx` tokens, then times `steps` decode steps of all of them.
fn decode_steps(runner: &mut ModelRunner, n: usize, ctx: usize, steps: usize) -> f64 {
    let params = SamplingParams::greedy(steps + 1);
    let blocks_per = (ctx + steps + 1).div_ceil(BS);
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|i| ((i * blocks_per) as u32..((i + 1) * blocks_per) as u32).collect())
        .collect();
    let prompt: Vec<u32> = (0..ctx as u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut toks: Vec<Vec<u32>> = vec![prompt.clone(); n];
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    for i in 0..n {
        let seq = StepSeq {
            id: i as u64,
            tokens: &toks[i],
            start: 0,
            block_table: &tables[i],
            sample: Some(SampleArgs {
                params: &params,
                prompt: &prompt,
                output: &[],
            }),
        };
        let s = runner.execute(&[], &[], &[seq]).expect("prefill");
        toks[i].push(s[0].token);
        out[i].push(s[0].token);
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        let seqs: Vec<StepSeq<'_>> = (0..n)
            .map(|i| StepSeq {
                id: i as u64,
                tokens: &toks[i][toks[i].len() - 1..],
                start: toks[i].len() - 1,
                block_table: &tables[i],
                sample: Some(SampleArgs {
                    params: &params,
                    prompt: &prompt,
                    output: &out[i],
                }),
            })
            .collect();
        let sampled = runner.execute(&[], &[], &seqs).expect("decode");
        drop(seqs);
        for s in sampled {
            toks[s.id as usize].push(s.token);
            out[s.id as usize].push(s.token);
        }
    }
    t0.elapsed().as_secs_f64() / steps as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: bench MODEL [CONTEXT]")?;
    let ctx: usize = args.get(1).map_or(Ok(128), |s| s.parse())?;
    let m = candela_model::load(Path::new(path), &Device::Cpu, DType::F32)?;
    let cfg = RunnerConfig {
        num_device_blocks: 8 * (ctx + 64).div_ceil(BS),
        num_host_blocks: 0,
        block_size: BS,
    };
    let mut runner = ModelRunner::new(m.model, cfg, m.eos_token_ids);
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
            start: 0,
            block_table: &table,
            sample: None,
        }],
    )?;
    println!(
        "prefill 512 tokens: {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
