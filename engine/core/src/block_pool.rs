//! The KV block pool: a flat `Vec` of blocks with reference counts, a free list
//! threaded through the blocks' indices in eviction order, and the prefix-cache
//! index from chained block hash to block.
//!
//! Invariants (checked by [`BlockPool::check_invariants`] in tests):
//! - a block is on the free list exactly when its ref count is 0;
//! - `num_free + (blocks with ref > 0) == num_blocks`;
//! - every entry of the hash index points at a block carrying that hash.
//!
//! Freed blocks keep their hash, so a later request with the same prefix can take
//! them back off the free list ([`BlockPool::touch`]); they are evicted (hash
//! dropped) only when [`BlockPool::allocate`] reuses them. The free list is LRU:
//! `free` appends at the tail, `allocate` takes the head. Every operation is O(1)
//! except hash-map upkeep (amortized O(1)).

use std::collections::HashMap;

use crate::BlockId;
use crate::request::BlockHash;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
}

/// A pool of `num_blocks` KV blocks.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    /// All blocks free, in index order.
    pub fn new(num_blocks: usize) -> Self {
        assert!(num_blocks < NIL as usize, "invariant: block ids fit in u32");
        let n = num_blocks as u32;
        let blocks = (0..n)
            .map(|i| Block {
                ref_cnt: 0,
                hash: None,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == n { NIL } else { i + 1 },
            })
            .collect();
        BlockPool {
            blocks,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n - 1 },
            num_free: num_blocks,
            cached: HashMap::new(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with ref count 0, cached ones included (they are evictable).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks in use (ref > 0), vLLM's `kv_cache_usage_perc`.
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.num_free as f64 / self.blocks.len() as f64
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_cnt
    }

    /// Takes the least recently freed block, evicting its cached hash; `None` when all are in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = self.head;
        if id == NIL {
            return None;
        }
        self.unlink(id);
        let block = &mut self.blocks[id as usize];
        block.ref_cnt = 1;
        if let Some(hash) = block.hash.take()
            && self.cached.get(&hash) == Some(&id)
        {
            self.cached.remove(&hash);
        }
        Some(id)
    }

    /// Takes one more reference to a block found in the prefix cache.
    pub fn touch(&mut self, id: BlockId) {
        if self.blocks[id as usize].ref_cnt == 0 {
            self.unlink(id);
        }
        self.blocks[id as usize].ref_cnt += 1;
    }

    /// Drops one reference; at zero the block goes to the tail of the free list, hash kept.
    ///
    /// # Panics
    /// When the block is already free (a double free is a scheduler bug).
    pub fn free(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        assert!(block.ref_cnt > 0, "invariant: block {id} freed twice");
        block.ref_cnt -= 1;
        if block.ref_cnt == 0 {
            self.push_tail(id);
        }
    }

    /// The block holding this full-block hash, if still cached.
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Marks a full, computed block as reusable under `hash` (first writer wins).
    pub fn cache(&mut self, id: BlockId, hash: BlockHash) {
        if self.cached.contains_key(&hash) {
            return;
        }
        let block = &mut self.blocks[id as usize];
        if let Some(old) = block.hash.replace(hash)
            && self.cached.get(&old) == Some(&id)
        {
            self.cached.remove(&old);
        }
        self.cached.insert(hash, id);
    }

    fn unlink(&mut self, id: BlockId) {
        let Block { prev, next, .. } = self.blocks[id as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let block = &mut self.blocks[id as usize];
        block.prev = NIL;
        block.next = NIL;
        self.num_free -= 1;
    }

    fn push_tail(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        block.prev = self.tail;
        block.next = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            self.blocks[self.tail as usize].next = id;
        }
        self.tail = id;
        self.num_free += 1;
    }

    /// Verifies the module invariants; returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut on_list = vec![false; self.blocks.len()];
        let (mut cur, mut prev, mut count) = (self.head, NIL, 0usize);
        while cur != NIL {
            let b = &self.blocks[cur as usize];
            if b.prev != prev {
                return Err(format!("block {cur}: broken back link"));
            }
            if on_list[cur as usize] {
                return Err(format!("block {cur}: on the free list twice"));
            }
            on_list[cur as usize] = true;
            count += 1;
            prev = cur;
            cur = b.next;
        }
        if prev != self.tail {
            return Err("tail does not end the free list".into());
        }
        if count != self.num_free {
            return Err(format!(
                "free list has {count} blocks, num_free says {}",
                self.num_free
            ));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if (b.ref_cnt == 0) != on_list[i] {
                return Err(format!(
                    "block {i}: ref {} but on free list = {}",
                    b.ref_cnt, on_list[i]
                ));
            }
        }
        for (hash, &id) in &self.cached {
            if self.blocks[id as usize].hash != Some(*hash) {
                return Err(format!("cache entry points at block {id} without its hash"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocate_free_is_lru_and_keeps_hashes_until_reuse() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.cache(a, 11);
        pool.free(a);
        pool.free(b);
        assert_eq!(pool.num_free(), 3);
        assert_eq!(pool.lookup(11), Some(a));
        // Block 2 was never used, so it is evicted first, then a, then b.
        assert_eq!(pool.allocate(), Some(2));
        pool.touch(a); // prefix hit takes a off the free list
        assert_eq!(pool.allocate(), Some(b));
        assert_eq!(pool.allocate(), None);
        pool.free(a);
        assert_eq!(pool.allocate(), Some(a));
        assert_eq!(pool.lookup(11), None, "reuse evicts the hash");
        pool.check_invariants().unwrap();
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics() {
        let mut pool = BlockPool::new(1);
        let a = pool.allocate().unwrap();
        pool.free(a);
        pool.free(a);
    }

    proptest! {
        #[test]
        fn any_sequence_of_ops_keeps_invariants(ops in prop::collection::vec((0u8..4, 0u32..8, 0u64..4), 1..200)) {
            let mut pool = BlockPool::new(8);
            let mut held: Vec<BlockId> = Vec::new();
            for (op, id, hash) in ops {
                match op {
                    0 => if let Some(b) = pool.allocate() { held.push(b) },
                    1 => if !held.is_empty() { let b = held.swap_remove(id as usize % held.len()); pool.free(b) },
                    2 => if let Some(b) = pool.lookup(hash) { pool.touch(b); held.push(b) },
                    _ => if let Some(&b) = held.get(id as usize % held.len().max(1)) { pool.cache(b, hash) },
                }
                prop_assert!(pool.check_invariants().is_ok(), "{:?}", pool.check_invariants());
                prop_assert_eq!(pool.num_free() + held.iter().collect::<std::collections::HashSet<_>>().len(), 8);
            }
            for b in held.drain(..) { pool.free(b) }
            prop_assert_eq!(pool.num_free(), 8);
        }
    }
}
