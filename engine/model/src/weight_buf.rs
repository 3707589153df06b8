//! Weight storage backed by transparent huge pages where the kernel allows it.
//!
//! A decode step streams every weight once (~100 MB for the default model): on
//! 4 KiB pages that is ~25,000 TLB misses per token. The buffer is 2 MiB-aligned
//! and advised `MADV_HUGEPAGE` before it is first written, so with THP in
//! `madvise` or `always` mode it is backed by 2 MiB pages. Elsewhere (no THP,
//! non-Linux) it is an ordinary allocation.

use std::alloc::{Layout, alloc, dealloc};
use std::ops::Deref;
use std::ptr::NonNull;

const HUGE_PAGE: usize = 2 << 20;

/// An immutable byte buffer, huge-page backed when possible.
pub struct WeightBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned and immutable after construction.
unsafe impl Send for WeightBuf {}
unsafe impl Sync for WeightBuf {}

impl WeightBuf {
    /// Copies `bytes` into a new buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::filled(bytes.len(), |buf| buf.copy_from_slice(bytes))
    }

    /// A new buffer of `len` bytes, zeroed, then written by `fill`: a converted layout
    /// goes straight into the final buffer, no copy between.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        // Small matrices stay on ordinary pages rather than round up to 2 MiB.
        let align = if len >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        let layout = Layout::from_size_align(len.max(1).next_multiple_of(align), align)
            .expect("weight buffer layout");
        // SAFETY: non-zero size. Not zeroed: that would fault the pages in (as 4 KiB
        // ones) before the advice; only the `len` bytes copied below are ever read.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        if align == HUGE_PAGE {
            // SAFETY: the range is our own allocation. Advice only; failure is harmless.
            unsafe { libc::madvise(raw.cast(), layout.size(), libc::MADV_HUGEPAGE) };
        }
        // SAFETY: `raw` has room for `len` bytes; zeroing them first gives `fill` an
        // initialized slice (the pages are written either way).
        let buf = unsafe {
            std::ptr::write_bytes(raw, 0, len);
            std::slice::from_raw_parts_mut(raw, len)
        };
        fill(buf);
        Self { ptr, len, layout }
    }
}

impl Deref for WeightBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialized bytes live at `ptr` for `self`'s lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for WeightBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBuf({} bytes)", self.len)
    }
}

impl Drop for WeightBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `copy_from` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
