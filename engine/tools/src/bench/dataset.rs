//! Benchmark prompts: vLLM's ShareGPT and random datasets.
//!
//! - ShareGPT (`--dataset-path` to a ShareGPT-format JSON list of
//!   `{"conversations": [{"from", "value"}, ...]}`): conversations with at least
//!   two turns, shuffled with the seed; the first turn is the prompt and the second
//!   turn's token count the output length (or `--sharegpt-output-len`). A pair is
//!   kept when prompt and output have at least 4 tokens (the output check is
//!   skipped when the length is fixed), the prompt at most 1024 and both together
//!   at most 2048 — vLLM's filter. Too few survivors are oversampled with the seed.
//! - Random: input and output lengths uniform in `len × [1 − r, 1 + r]`, each
//!   prompt a run of consecutive non-special token ids from a random offset after
//!   an optional shared random prefix, decoded to text and re-tokenized until the
//!   text has the target length (vLLM's `gen_prompt_decode_to_target_len`).
//!
//! The project ships a ShareGPT-format sample it generated itself
//! (`engine/tools/data/sharegpt-sample.json`, see `scripts/make-sharegpt-sample.py`).

use std::path::Path;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::Value;

use crate::error::{Error, Result};

/// One prompt to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    pub prompt: String,
    pub prompt_len: usize,
    pub expected_output_len: usize,
    /// Sent as `model` instead of the run's model: the LoRA adapter `--lora-modules`
    /// drew for this request.
    pub model: Option<String>,
}

/// What datasets need from a tokenizer.
pub trait Tokenize {
    fn encode(&self, text: &str) -> Vec<u32>;
    fn decode(&self, ids: &[u32]) -> String;
    /// Ids a random prompt may use (no special tokens).
    fn ordinary_ids(&self) -> Vec<u32>;
}

/// vLLM's `is_valid_sequence` with its ShareGPT defaults.
pub fn is_valid_sequence(
    prompt_len: usize,
    output_len: usize,
    skip_min_output_len_check: bool,
) -> bool {
    const MIN_LEN: usize = 4;
    const MAX_PROMPT_LEN: usize = 1024;
    const MAX_TOTAL_LEN: usize = 2048;
    !(prompt_len < MIN_LEN
        || (!skip_min_output_len_check && output_len < MIN_LEN)
        || prompt_len > MAX_PROMPT_LEN
        || prompt_len + output_len > MAX_TOTAL_LEN)
}

/// The first two turns of every conversation with at least two.
pub fn read_sharegpt(path: &Path) -> Result<Vec<(String, String)>> {
    let input_err = |message: String| Error::Input {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| input_err(e.to_string()))?;
    let data: Value =
        serde_json::from_str(&text).map_err(|e| input_err(format!("not JSON: {e}")))?;
    let entries = data.as_array().ok_or_else(|| {
        input_err("a ShareGPT file is a JSON list of {\"conversations\": [...]}".into())
    })?;
    let turn = |t: &Value| t.get("value").and_then(Value::as_str).map(str::to_owned);
    let pairs: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| e.get("conversations")?.as_array().cloned())
        .filter(|c| c.len() >= 2)
        .filter_map(|c| Some((turn(&c[0])?, turn(&c[1])?)))
        .collect();
    if pairs.is_empty() {
        return Err(input_err("no conversation with at least two turns".into()));
    }
    Ok(pairs)
}

/// Sample `num_requests` ShareGPT prompts (see the module docs).
pub fn sample_sharegpt(
    mut pairs: Vec<(String, String)>,
    num_requests: usize,
    fixed_output_len: Option<usize>,
    tokenizer: &impl Tokenize,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>> {
    pairs.shuffle(rng);
    let mut samples = Vec::with_capacity(num_requests);
    for (prompt, completion) in pairs {
        if samples.len() >= num_requests {
            break;
        }
        let prompt_len = tokenizer.encode(&prompt).len();
        let output_len = fixed_output_len.unwrap_or_else(|| tokenizer.encode(&completion).len());
        if !is_valid_sequence(prompt_len, output_len, fixed_output_len.is_some()) {
            continue;
        }
        samples.push(SampleRequest {
            prompt,
            prompt_len,
            expected_output_len: output_len,
            model: None,
        });
    }
    oversample(samples, num_requests, rng)
}

/// Repeat random samples until there are `num_requests` (vLLM's oversampling).
fn oversample(
    mut samples: Vec<SampleRequest>,
    num_requests: usize,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>> {
    if samples.is_empty() {
        return Err(Error::InvalidArgs(
            "no conversation passes the ShareGPT filter (prompt and output ≥ 4 tokens, prompt ≤ 1024, total ≤ 2048)".into(),
        ));
    }
    if samples.len() < num_requests {
        let extra: Vec<SampleRequest> = (samples.len()..num_requests)
            .map(|_| samples.choose(rng).expect("non-empty").clone())
            .collect();
        samples.extend(extra);
        eprintln!("Oversampled requests to reach {num_requests} total samples.");
    }
    Ok(samples)
}

/// Lengths of the random dataset.
#[derive(Debug, Clone, Copy)]
pub struct RandomSpec {
    pub input_len: usize,
    pub output_len: usize,
    pub range_ratio: f64,
    pub prefix_len: usize,
}

/// `num_requests` random prompts (see the module docs).
pub fn sample_random(
    spec: RandomSpec,
    num_requests: usize,
    tokenizer: &impl Tokenize,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>> {
    if !(0.0..1.0).contains(&spec.range_ratio) {
        return Err(Error::InvalidArgs(format!(
            "--random-range-ratio must be in [0, 1), got {}",
            spec.range_ratio
        )));
    }
    if spec.input_len == 0 && spec.prefix_len == 0 {
        return Err(Error::InvalidArgs(
            "--random-input-len must be at least 1".into(),
        ));
    }
    let ids = tokenizer.ordinary_ids();
    if ids.is_empty() {
        return Err(Error::InvalidArgs(
            "the tokenizer has no ordinary tokens".into(),
        ));
    }
    let range = |len: usize| {
        let lo = (len as f64 * (1.0 - spec.range_ratio)).floor() as usize;
        let hi = (len as f64 * (1.0 + spec.range_ratio)).ceil() as usize;
        (lo, hi.max(lo))
    };
    let (in_lo, in_hi) = range(spec.input_len);
    let (out_lo, out_hi) = range(spec.output_len);
    let prefix: Vec<u32> = (0..spec.prefix_len)
        .map(|_| *ids.choose(rng).expect("non-empty"))
        .collect();
    let mut samples = Vec::with_capacity(num_requests);
    for i in 0..num_requests {
        let input_len = rng.random_range(in_lo..=in_hi);
        let output_len = rng.random_range(out_lo..=out_hi).max(1);
        let offset = rng.random_range(0..ids.len());
        let mut seq = prefix.clone();
        seq.extend((0..input_len).map(|j| ids[(offset + i + j) % ids.len()]));
        let (prompt, prompt_len) =
            decode_to_target_len(seq, spec.prefix_len + input_len, tokenizer, &ids, rng);
        samples.push(SampleRequest {
            prompt,
            prompt_len,
            expected_output_len: output_len,
            model: None,
        });
    }
    Ok(samples)
}

/// Decode `seq`; while re-encoding the text does not give `target` tokens,
/// truncate or extend the ids and try again (at most 10 times).
fn decode_to_target_len(
    mut seq: Vec<u32>,
    target: usize,
    tokenizer: &impl Tokenize,
    ids: &[u32],
    rng: &mut impl Rng,
) -> (String, usize) {
    let mut text = tokenizer.decode(&seq);
    for _ in 0..10 {
        let re = tokenizer.encode(&text);
        if re.len() == target {
            return (text, target);
        }
        seq = re;
        if seq.len() > target {
            seq.truncate(target);
        } else {
            seq.extend((seq.len()..target).map(|_| *ids.choose(rng).expect("non-empty")));
        }
        text = tokenizer.decode(&seq);
    }
    let len = tokenizer.encode(&text).len();
    (text, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// One token per whitespace-separated word; ids index a fixed word list.
    struct Words;
    const WORDS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];
    impl Tokenize for Words {
        fn encode(&self, text: &str) -> Vec<u32> {
            text.split_whitespace()
                .map(|w| WORDS.iter().position(|x| *x == w).unwrap_or(0) as u32)
                .collect()
        }
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter()
                .map(|&i| WORDS[i as usize])
                .collect::<Vec<_>>()
                .join(" ")
        }
        fn ordinary_ids(&self) -> Vec<u32> {
            (0..WORDS.len() as u32).collect()
        }
    }

    #[test]
    fn sharegpt_filter_is_vllms() {
        assert!(is_valid_sequence(4, 4, false));
        assert!(!is_valid_sequence(3, 100, false), "prompt < 4");
        assert!(!is_valid_sequence(100, 3, false), "output < 4");
        assert!(
            is_valid_sequence(100, 3, true),
            "fixed output length skips the output check"
        );
        assert!(!is_valid_sequence(1025, 10, false), "prompt > 1024");
        assert!(is_valid_sequence(1024, 1024, false));
        assert!(!is_valid_sequence(1024, 1025, false), "total > 2048");
    }

    #[test]
    fn sharegpt_sampling_filters_and_oversamples() {
        let w = |n: usize| vec!["beta"; n].join(" ");
        let pairs = vec![
            (w(10), w(20)), // kept
            (w(2), w(20)),  // prompt too short
            (w(10), w(3)),  // output too short
            (w(5), w(5)),   // kept
        ];
        let mut rng = StdRng::seed_from_u64(0);
        let s = sample_sharegpt(pairs.clone(), 2, None, &Words, &mut rng).unwrap();
        let mut lens: Vec<(usize, usize)> = s
            .iter()
            .map(|r| (r.prompt_len, r.expected_output_len))
            .collect();
        lens.sort();
        assert_eq!(lens, vec![(5, 5), (10, 20)]);
        let s = sample_sharegpt(pairs.clone(), 7, None, &Words, &mut rng).unwrap();
        assert_eq!(s.len(), 7, "oversampled");
        assert!(
            s.iter()
                .all(|r| r.prompt_len >= 4 && r.expected_output_len >= 4)
        );
        // A fixed output length applies to every sample and lets short answers in.
        let s = sample_sharegpt(pairs, 3, Some(64), &Words, &mut rng).unwrap();
        assert!(s.iter().all(|r| r.expected_output_len == 64));
        let err = sample_sharegpt(vec![(w(1), w(1))], 3, None, &Words, &mut rng).unwrap_err();
        assert!(err.to_string().contains("ShareGPT filter"));
    }

    #[test]
    fn random_prompts_have_the_requested_lengths() {
        let spec = RandomSpec {
            input_len: 20,
            output_len: 8,
            range_ratio: 0.5,
            prefix_len: 3,
        };
        let s = sample_random(spec, 200, &Words, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(s.len(), 200);
        for r in &s {
            assert!((13..=33).contains(&r.prompt_len), "{}", r.prompt_len);
            assert_eq!(Words.encode(&r.prompt).len(), r.prompt_len);
            assert!((4..=12).contains(&r.expected_output_len));
        }
        // All prompts share the 3-token prefix.
        let first: Vec<u32> = Words.encode(&s[0].prompt)[..3].to_vec();
        assert!(s.iter().all(|r| Words.encode(&r.prompt)[..3] == first[..]));
        let fixed = RandomSpec {
            range_ratio: 0.0,
            prefix_len: 0,
            ..spec
        };
        let s = sample_random(fixed, 10, &Words, &mut StdRng::seed_from_u64(2)).unwrap();
        assert!(
            s.iter()
                .all(|r| r.prompt_len == 20 && r.expected_output_len == 8)
        );
        let bad = RandomSpec {
            range_ratio: 1.0,
            ..spec
        };
        assert!(sample_random(bad, 1, &Words, &mut StdRng::seed_from_u64(2)).is_err());
    }
}
