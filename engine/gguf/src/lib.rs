//! GGUF header reading without candle: the metadata key/values and the tensor
//! index (names, dims, ggml types, data offsets) of a llama.cpp model file.
//!
//! For what needs a model's shape but not its weights: `candela plan` reads the
//! shape and parameter count here, and the model crate reads its metadata
//! integers by [`Value::as_u64`], the one rule (any width, never negative).
//! Tensor data is never read. Malformed input of any kind is an [`Error`], never
//! a panic, and costs at most what was read (see [`read`]).
//!
//! ```
//! use candela_gguf::{Gguf, Value, write};
//!
//! let header = Gguf {
//!     version: 3,
//!     metadata: [("general.architecture".into(), Value::String("llama".into()))].into(),
//!     tensors: vec![],
//! };
//! let read = Gguf::from_reader(&write::to_bytes(&header)[..])?;
//! assert_eq!(read, header);
//! assert_eq!(read.str("general.architecture"), Some("llama"));
//! # Ok::<(), candela_gguf::Error>(())
//! ```

pub mod error;
pub mod read;
pub mod value;
pub mod write;

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

pub use error::{Error, Result};
pub use value::Value;

/// A GGUF file's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    /// 1, 2 or 3.
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
}

/// One entry of the tensor index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// In GGUF (ggml) order: the innermost dimension first, the reverse of
    /// PyTorch's and candle's shapes.
    pub dims: Vec<u64>,
    /// `ggml_type` code (0 = f32, 1 = f16, 2 = q4_0, ...), not interpreted here.
    pub ggml_type: u32,
    /// Where the data starts, relative to the aligned end of the header.
    pub offset: u64,
}

impl TensorInfo {
    /// The product of the dims; `None` when it does not fit a `u64` (never for a
    /// tensor this crate read: the reader refuses those).
    pub fn elem_count(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

impl Gguf {
    /// Reads the header of the GGUF file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; the other variants
    /// when it is not a GGUF file or its header is malformed.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        Self::from_reader(BufReader::new(file))
    }

    /// Reads a header from the start of `r`, leaving `r` after it.
    ///
    /// # Errors
    /// As [`Gguf::read`]; [`Error::Truncated`] when `r` ends inside the header.
    pub fn from_reader(r: impl Read) -> Result<Self> {
        read::gguf(r)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// A non-negative integer value of any width ([`Value::as_u64`]).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// The sum of every tensor's element count: the parameter count; `None` on
    /// `u64` overflow.
    pub fn elem_count(&self) -> Option<u64> {
        self.tensors
            .iter()
            .try_fold(0u64, |n, t| n.checked_add(t.elem_count()?))
    }
}

#[cfg(test)]
mod tests;
