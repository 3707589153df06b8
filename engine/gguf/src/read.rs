//! Parsing a GGUF header from any byte stream (the spec:
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>).
//!
//! Layout, little-endian: `GGUF`, version, tensor count, metadata count, the
//! metadata (key, type code, value), then one entry per tensor (name, dims,
//! ggml type, data offset). Version 1 writes counts and lengths as `u32`,
//! versions 2 and 3 as `u64`.
//!
//! Invariant: untrusted input cannot make the reader panic, recurse without
//! bound or allocate much more than it has read. Lengths and counts from the
//! file never size an allocation up front; every loop consumes at least one
//! byte per turn, so it ends at the end of the input at the latest; arrays nest
//! at most [`MAX_DEPTH`] deep. Cost: one pass over the header, tensor data is
//! never read.

use std::io::{ErrorKind, Read};

use crate::value::{Value, code};
use crate::{Error, Gguf, Result, TensorInfo};

/// Deepest array nesting accepted (candle's limit too; real files use 1).
pub const MAX_DEPTH: usize = 64;
/// Most dimensions a tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Longest string accepted (llama.cpp's `GGUF_MAX_STRING_LENGTH`).
pub const MAX_STRING_LEN: u64 = 1 << 30;

/// Capacity reserved for a collection whose length the file claims.
const RESERVE: u64 = 1024;

pub(crate) fn gguf(r: impl Read) -> Result<Gguf> {
    let mut r = Reader { r, wide: true };
    let magic: [u8; 4] = r.array()?;
    if &magic != b"GGUF" {
        return Err(Error::BadMagic(magic));
    }
    let version = r.u32()?;
    r.wide = match version {
        1 => false,
        2 | 3 => true,
        v => return Err(Error::UnsupportedVersion(v)),
    };
    let tensor_count = r.len()?;
    let kv_count = r.len()?;
    let mut metadata = std::collections::HashMap::with_capacity(reserve(kv_count));
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        // A repeated key: the later one wins, as in candle's reader.
        metadata.insert(key, value);
    }
    let mut tensors = Vec::with_capacity(reserve(tensor_count));
    for _ in 0..tensor_count {
        tensors.push(r.tensor()?);
    }
    Ok(Gguf {
        version,
        metadata,
        tensors,
    })
}

fn reserve(claimed: u64) -> usize {
    claimed.min(RESERVE) as usize
}

struct Reader<R> {
    r: R,
    /// Lengths and counts are `u64` (versions 2, 3) rather than `u32` (version 1).
    wide: bool,
}

impl<R: Read> Reader<R> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0; N];
        self.r.read_exact(&mut b).map_err(eof)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A count or length: `u32` in version 1, `u64` after.
    fn len(&mut self) -> Result<u64> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn string(&mut self) -> Result<String> {
        let len = self.len()?;
        if len > MAX_STRING_LEN {
            return Err(malformed(format!(
                "a string of {len} bytes (at most {MAX_STRING_LEN})"
            )));
        }
        // `take` + `read_to_end` grows the buffer with what arrives, so a
        // claimed length larger than the input costs nothing.
        let mut bytes = Vec::new();
        (&mut self.r)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(eof)?;
        if (bytes.len() as u64) < len {
            return Err(Error::Truncated);
        }
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            code::U8 => Value::U8(u8::from_le_bytes(self.array()?)),
            code::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            code::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            code::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            code::U32 => Value::U32(self.u32()?),
            code::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            code::U64 => Value::U64(self.u64()?),
            code::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            code::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            code::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            code::BOOL => match self.array::<1>()? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                [b] => return Err(malformed(format!("bool byte {b} (0 or 1)"))),
            },
            code::STRING => Value::String(self.string()?),
            code::ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(malformed(format!(
                        "arrays nested more than {MAX_DEPTH} deep"
                    )));
                }
                let elem = self.u32()?;
                let len = self.len()?;
                let mut values = Vec::with_capacity(reserve(len));
                for _ in 0..len {
                    values.push(self.value(elem, depth + 1)?);
                }
                Value::Array(values)
            }
            other => return Err(malformed(format!("unknown value type {other}"))),
        })
    }

    fn tensor(&mut self) -> Result<TensorInfo> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims > MAX_DIMS {
            return Err(malformed(format!(
                "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| self.len())
            .collect::<Result<Vec<u64>>>()?;
        let ggml_type = self.u32()?;
        let offset = self.u64()?;
        let t = TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        };
        if t.elem_count().is_none() {
            return Err(malformed(format!(
                "tensor `{}` has 2^64 elements or more ({:?})",
                t.name, t.dims
            )));
        }
        Ok(t)
    }
}

fn eof(e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::UnexpectedEof {
        Error::Truncated
    } else {
        Error::Io(e)
    }
}

fn malformed(message: String) -> Error {
    Error::Malformed(message)
}
