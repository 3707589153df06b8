//! Speculative decoding's draft side that needs no model: prompt lookup (vLLM's
//! `{"method": "ngram"}`).
//!
//! [`propose_ngram`] looks for the request's last `n` tokens earlier in its own
//! context (prompt and output), longest `n` first from `prompt_lookup_max` down to
//! `prompt_lookup_min`, and proposes the tokens that followed the most recent earlier
//! occurrence. Inputs that repeat their context (summaries, edits, code rewrites) get
//! long accepted drafts; free text gets none, and a step then costs what it did.
//! [`DraftPacer`] shortens and pauses drafting for requests whose drafts keep failing.

use serde::{Deserialize, Serialize};

/// Prompt-lookup parameters (vLLM's `speculative_config` names; the contract's
/// `--speculative-config` parser checks their ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NgramConfig {
    /// Most tokens drafted per step (`num_speculative_tokens`).
    pub num_speculative_tokens: usize,
    /// Shortest suffix looked up (`prompt_lookup_min`).
    pub prompt_lookup_min: usize,
    /// Longest suffix looked up (`prompt_lookup_max`).
    pub prompt_lookup_max: usize,
}

/// Up to `num_speculative_tokens` draft tokens for the request whose tokens so far are
/// `tokens`: what followed the most recent earlier occurrence of its longest suffix of
/// `prompt_lookup_max..=prompt_lookup_min` tokens. Empty when no suffix recurs.
pub fn propose_ngram(tokens: &[u32], cfg: &NgramConfig) -> Vec<u32> {
    let len = tokens.len();
    for n in (cfg.prompt_lookup_min..=cfg.prompt_lookup_max).rev() {
        if n >= len {
            continue;
        }
        let suffix = &tokens[len - n..];
        // Latest start first; the suffix itself (start `len - n`) does not count.
        if let Some(start) = (0..len - n).rev().find(|&i| &tokens[i..i + n] == suffix) {
            let from = start + n;
            let to = (from + cfg.num_speculative_tokens).min(len);
            return tokens[from..to].to_vec();
        }
    }
    Vec::new()
}

/// Longest pause, in steps, after drafts keep being rejected.
const MAX_BACKOFF_STEPS: u32 = 15;

/// Paces one request's drafting, so that text that does not repeat its context costs
/// little more than decoding without drafts:
///
/// - **Length.** A draft accepted whole doubles the next one's length (up to the
///   configured `num_speculative_tokens`, where it starts); a draft rejected after `a`
///   accepted tokens makes the next one `a + 1` long. Each step then verifies about one
///   token more than it is likely to keep.
/// - **Back-off.** After `n` drafts in a row with nothing accepted, the request skips
///   `2^n - 1` steps (at most [`MAX_BACKOFF_STEPS`]) before drafting again; one accepted
///   token resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftPacer {
    max_len: usize,
    len: usize,
    misses: u32,
    wait: u32,
}

impl DraftPacer {
    /// A request's pacer for drafts of at most `max_len` tokens.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            len: max_len,
            misses: 0,
            wait: 0,
        }
    }

    /// How many tokens to draft this step; `None` while backing off (a skipped step is
    /// counted down).
    pub fn next_len(&mut self) -> Option<usize> {
        if self.wait > 0 {
            self.wait -= 1;
            return None;
        }
        Some(self.len)
    }

    /// A verified draft of `drafted` tokens whose first `accepted` stood.
    pub fn observe(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        if accepted == drafted {
            self.len = (self.len * 2).min(self.max_len);
        } else {
            self.len = (accepted + 1).min(self.max_len);
        }
        if accepted > 0 {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(8);
            self.wait = ((1u32 << self.misses) - 1).min(MAX_BACKOFF_STEPS);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cfg(k: usize, min: usize, max: usize) -> NgramConfig {
        NgramConfig {
            num_speculative_tokens: k,
            prompt_lookup_min: min,
            prompt_lookup_max: max,
        }
    }

    #[test]
    fn the_longest_recurring_suffix_proposes_what_followed_it_last() {
        // "a b c d a b" → suffix "a b" occurred at 0, followed by "c d a".
        assert_eq!(
            propose_ngram(&[1, 2, 3, 4, 1, 2], &cfg(3, 1, 3)),
            vec![3, 4, 1]
        );
        // The most recent occurrence wins: "x 7 … x 8 … x" proposes 8.
        assert_eq!(
            propose_ngram(&[9, 7, 5, 9, 8, 5, 9], &cfg(1, 1, 1)),
            vec![8]
        );
        // Longer suffixes are tried first: "1 2 3" recurs at 0 though "3" recurs later.
        assert_eq!(
            propose_ngram(&[1, 2, 3, 4, 3, 5, 1, 2, 3], &cfg(2, 1, 3)),
            vec![4, 3]
        );
        // Drafts stop at the end of the context.
        assert_eq!(propose_ngram(&[1, 2, 1], &cfg(5, 1, 2)), vec![2, 1]);
        assert!(propose_ngram(&[1, 2, 3, 4], &cfg(3, 1, 3)).is_empty());
        assert!(propose_ngram(&[], &cfg(3, 1, 3)).is_empty());
        // Below prompt_lookup_min nothing is proposed.
        assert!(propose_ngram(&[5, 6, 5], &cfg(2, 2, 3)).is_empty());
    }

    #[test]
    fn rejected_drafts_back_off_exponentially_and_an_accepted_one_resets() {
        let mut p = DraftPacer::new(4);
        let mut pattern = String::new();
        for _ in 0..40 {
            match p.next_len() {
                Some(len) => {
                    pattern.push('d');
                    p.observe(len, 0);
                }
                None => pattern.push('.'),
            }
        }
        assert_eq!(pattern, "d.d...d.......d...............d.........");
        while p.next_len().is_none() {}
        p.observe(1, 1);
        p.observe(2, 0);
        assert_eq!(
            p.wait, 1,
            "an accepted draft reset the back-off: one step after a miss"
        );
        p.wait = 0;
        p.observe(0, 0);
        assert_eq!(p.next_len(), Some(1), "no draft, no evidence");
    }

    #[test]
    fn draft_length_follows_what_was_accepted() {
        let mut p = DraftPacer::new(8);
        assert_eq!(p.next_len(), Some(8), "start at the configured length");
        p.observe(8, 2);
        assert_eq!(p.next_len(), Some(3), "rejected after 2: draft 3 next");
        p.observe(3, 3);
        assert_eq!(p.next_len(), Some(6), "accepted whole: double");
        p.observe(6, 6);
        assert_eq!(p.next_len(), Some(8), "capped at the configured length");
        p.observe(5, 5);
        assert_eq!(p.next_len(), Some(8));
    }

    proptest! {
        /// A draft is never longer than asked, and it is exactly what followed an
        /// earlier occurrence of the context's suffix of some allowed length.
        #[test]
        fn drafts_are_continuations_of_an_earlier_occurrence(
            tokens in proptest::collection::vec(0u32..4, 0..60),
            k in 1usize..6,
            min in 1usize..4,
            extra in 0usize..3,
        ) {
            let c = cfg(k, min, min + extra);
            let draft = propose_ngram(&tokens, &c);
            prop_assert!(draft.len() <= k);
            if !draft.is_empty() {
                let len = tokens.len();
                let found = (min..=min + extra).filter(|&n| n < len).any(|n| {
                    (0..len - n).any(|i| {
                        tokens[i..i + n] == tokens[len - n..]
                            && tokens[i + n..].starts_with(&draft)
                            && (draft.len() == k || i + n + draft.len() == len)
                    })
                });
                prop_assert!(found, "{:?} → {:?}", tokens, draft);
            }
        }
    }
}
