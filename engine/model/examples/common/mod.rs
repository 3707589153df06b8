//! Helpers shared by the model crate's examples.

use std::time::Instant;

use candela_core::SamplingParams;
use candela_model::{ModelRunner, SampleArgs, StepSeq};

/// Tokens per KV block in the examples.
pub const BS: usize = 16;

/// Prefills `n` sequences of `ctx` tokens, then times `steps` decode steps of all of them.
pub fn decode_steps(runner: &mut ModelRunner, n: usize, ctx: usize, steps: usize) -> f64 {
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
            draft: &[],
            start: 0,
            block_table: &tables[i],
            prompt_logprobs: None,
            sample: Some(SampleArgs {
                params: &params,
                prompt: &prompt,
                output: &[],
                eos: &[],
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
                draft: &[],
                start: toks[i].len() - 1,
                block_table: &tables[i],
                prompt_logprobs: None,
                sample: Some(SampleArgs {
                    params: &params,
                    prompt: &prompt,
                    output: &out[i],
                    eos: &[],
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
