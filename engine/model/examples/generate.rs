//! Greedy generation from the command line, through the single-sequence
//! reference path: `cargo run --release -p candela-model --example generate --
//! MODEL [--chat] PROMPT [MAX_TOKENS]`. Prints the text and decode speed.

use std::path::Path;
use std::time::Instant;

use candela_model::{ChatTemplate, reference_generate_greedy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let chat = args
        .iter()
        .position(|a| a == "--chat")
        .map(|i| args.remove(i))
        .is_some();
    let (path, prompt) = match (args.first(), args.get(1)) {
        (Some(p), Some(q)) => (p.clone(), q.clone()),
        _ => return Err("usage: generate MODEL [--chat] PROMPT [MAX_TOKENS]".into()),
    };
    let max: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let m = candela_model::load(Path::new(&path))?;
    let text = if chat {
        let t = ChatTemplate::new(
            m.chat_template
                .as_deref()
                .ok_or("model has no chat template")?,
            m.bos_token.as_deref(),
            m.eos_token.as_deref(),
        )?;
        t.render(
            &serde_json::json!([{"role": "user", "content": prompt}]),
            true,
        )?
    } else {
        prompt
    };
    let ids = m
        .tokenizer
        .encode(text, false)
        .map_err(|e| e.to_string())?
        .get_ids()
        .to_vec();
    let t0 = Instant::now();
    let run = reference_generate_greedy(&m.model, &ids, max, &m.eos_token_ids)?;
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        m.tokenizer
            .decode(&run.tokens, true)
            .map_err(|e| e.to_string())?
    );
    println!("ids: {:?}", run.tokens);
    println!(
        "gaps: {:?}",
        run.top2_gaps
            .iter()
            .map(|g| (g * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{} prompt + {} generated tokens in {dt:.2}s",
        ids.len(),
        run.tokens.len()
    );
    Ok(())
}
