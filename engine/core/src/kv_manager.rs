//! Per-request block tables on top of a [`BlockPool`].
//!
//! The device manager serves attention: it allocates slots for the tokens a step
//! computes, looks up prefix-cache hits and registers full blocks under their
//! chained hashes. The host manager (prefix caching off) holds swapped-out
//! sequences. Only full, computed blocks are ever shared between requests and a
//! request never writes into a block it got from the cache (the last prompt token
//! is always recomputed), so shared blocks are immutable and need no
//! copy-on-write.

use std::collections::HashMap;

use crate::block_pool::BlockPool;
use crate::request::Request;
use crate::{BlockId, RequestId};

/// Block tables of the requests that hold blocks in one pool.
#[derive(Debug, Clone)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    enable_caching: bool,
    tables: HashMap<RequestId, Vec<BlockId>>,
    /// How many leading blocks of each table are registered in the prefix cache.
    num_cached: HashMap<RequestId, usize>,
}

/// A prefix-cache hit: blocks to reuse and the tokens they cover.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheHit {
    pub blocks: Vec<BlockId>,
    pub num_tokens: usize,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_caching: bool) -> Self {
        KvCacheManager {
            pool: BlockPool::new(num_blocks),
            block_size,
            enable_caching,
            tables: HashMap::new(),
            num_cached: HashMap::new(),
        }
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The request's block table (empty when it holds no blocks here).
    pub fn block_table(&self, id: RequestId) -> &[BlockId] {
        self.tables.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Number of requests holding blocks.
    pub fn num_tables(&self) -> usize {
        self.tables.len()
    }

    fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// Longest run of the request's leading full blocks found in the cache, leaving
    /// at least the last token to compute (its logits are needed).
    pub fn find_cache_hit(&self, req: &Request) -> CacheHit {
        if !self.enable_caching {
            return CacheHit::default();
        }
        let max_blocks = (req.num_tokens() - 1) / self.block_size;
        let blocks: Vec<BlockId> = req.block_hashes()[..max_blocks.min(req.block_hashes().len())]
            .iter()
            .map_while(|&h| self.pool.lookup(h))
            .collect();
        CacheHit {
            num_tokens: blocks.len() * self.block_size,
            blocks,
        }
    }

    /// Makes room for `num_new_tokens` more tokens after `req.num_computed_tokens`
    /// (plus `hit`, for a request starting from a cache hit). Returns `false`, and
    /// changes nothing, when the pool cannot provide the blocks — the caller preempts.
    pub fn allocate_slots(&mut self, req: &Request, num_new_tokens: usize, hit: &CacheHit) -> bool {
        let have = self.tables.get(&req.id).map_or(0, Vec::len);
        let total_tokens = req.num_computed_tokens + hit.num_tokens + num_new_tokens;
        let needed = self
            .blocks_for(total_tokens)
            .saturating_sub(have + hit.blocks.len());
        let hits_now_free = hit
            .blocks
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if needed + hits_now_free > self.pool.num_free() {
            return false;
        }
        for &b in &hit.blocks {
            self.pool.touch(b);
        }
        let table = self.tables.entry(req.id).or_default();
        table.extend_from_slice(&hit.blocks);
        for _ in 0..needed {
            table.push(
                self.pool
                    .allocate()
                    .expect("invariant: free blocks were counted above"),
            );
        }
        if self.enable_caching {
            self.num_cached.entry(req.id).or_insert(hit.blocks.len());
            self.cache_full_blocks(req, total_tokens);
        }
        true
    }

    /// Registers the request's full blocks covering its first `num_tokens` tokens.
    fn cache_full_blocks(&mut self, req: &Request, num_tokens: usize) {
        let full = (num_tokens / self.block_size).min(req.block_hashes().len());
        let done = self.num_cached.get(&req.id).copied().unwrap_or(0);
        if full <= done {
            return;
        }
        let table = &self.tables[&req.id];
        for (&block, &hash) in table[done..full]
            .iter()
            .zip(&req.block_hashes()[done..full])
        {
            self.pool.cache(block, hash);
        }
        self.num_cached.insert(req.id, full);
    }

    /// Releases all of the request's blocks, tail first so that the request's
    /// last blocks are evicted before its (more shareable) first ones.
    pub fn free(&mut self, id: RequestId) {
        self.num_cached.remove(&id);
        if let Some(table) = self.tables.remove(&id) {
            for &b in table.iter().rev() {
                self.pool.free(b);
            }
        }
    }

    /// Gives the request `n` fresh blocks (for a swap-in target); `None` changes nothing.
    pub(crate) fn allocate_table(&mut self, id: RequestId, n: usize) -> Option<&[BlockId]> {
        if n > self.pool.num_free() || self.tables.contains_key(&id) {
            return None;
        }
        let table = (0..n)
            .map(|_| {
                self.pool
                    .allocate()
                    .expect("invariant: free blocks were counted above")
            })
            .collect();
        self.tables.insert(id, table);
        Some(&self.tables[&id])
    }

    /// Pool invariants, plus: every block's ref count equals the number of tables holding it.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        for table in self.tables.values() {
            for &b in table {
                refs[b as usize] += 1;
            }
        }
        for (b, &n) in refs.iter().enumerate() {
            if self.pool.ref_count(b as BlockId) != n {
                return Err(format!(
                    "block {b}: ref {} but {n} tables hold it",
                    self.pool.ref_count(b as BlockId)
                ));
            }
        }
        Ok(())
    }

    /// After a swap-in: registers the restored full blocks in the prefix cache.
    pub(crate) fn cache_restored(&mut self, req: &Request) {
        if self.enable_caching {
            self.num_cached.insert(req.id, 0);
            self.cache_full_blocks(req, req.num_computed_tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewRequest, SamplingParams};

    fn req(id: RequestId, tokens: Vec<u32>) -> Request {
        Request::new(
            NewRequest {
                id,
                prompt_token_ids: tokens,
                params: SamplingParams::greedy(8),
                priority: 0,
                tier: crate::ServiceTier::Default,
                arrival_time: 0.0,
                lora: None,
            },
            4,
        )
    }

    #[test]
    fn second_request_hits_the_shared_prefix_but_recomputes_its_last_token() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let a = req(1, (0..12).collect());
        assert!(kv.allocate_slots(&a, 12, &CacheHit::default()));
        assert_eq!(kv.block_table(1).len(), 3);
        // Same 12 tokens: only the first 2 blocks may hit (token 11 must be computed).
        let b = req(2, (0..12).collect());
        let hit = kv.find_cache_hit(&b);
        assert_eq!(hit.num_tokens, 8);
        assert_eq!(hit.blocks, kv.block_table(1)[..2]);
        assert!(kv.allocate_slots(&b, 4, &hit));
        assert_eq!(kv.pool().ref_count(kv.block_table(1)[0]), 2);
        assert_ne!(kv.block_table(2)[2], kv.block_table(1)[2]);
        kv.free(1);
        kv.free(2);
        assert_eq!(kv.pool().num_free(), 16);
        // Freed blocks stay cached for a third request.
        let c = req(3, (0..13).collect());
        assert_eq!(kv.find_cache_hit(&c).num_tokens, 12);
        kv.pool().check_invariants().unwrap();
    }

    #[test]
    fn allocation_that_does_not_fit_changes_nothing() {
        let mut kv = KvCacheManager::new(2, 4, false);
        let a = req(1, (0..12).collect());
        assert!(!kv.allocate_slots(&a, 12, &CacheHit::default()));
        assert_eq!(kv.pool().num_free(), 2);
        assert!(kv.block_table(1).is_empty());
        assert!(kv.allocate_slots(&a, 8, &CacheHit::default()));
        assert_eq!(kv.pool().num_free(), 0);
    }
}
