//! Writing a GGUF header (version 3) — what tests and fixtures need to make a
//! small model file without a converter. Tensor data is not written: a header
//! is all [`crate::Gguf::from_reader`] reads, and callers append data they want.

use crate::value::{Value, code};
use crate::{Gguf, TensorInfo};

/// The header of `gguf` as version-3 bytes (whatever `gguf.version` says).
/// Metadata keys are written sorted so the bytes do not depend on hash order.
///
/// An array's element type is its first element's (`u8` when empty); arrays
/// whose elements differ in type make a file no reader accepts.
pub fn to_bytes(gguf: &Gguf) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(gguf.tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(gguf.metadata.len() as u64).to_le_bytes());
    let mut keys: Vec<&String> = gguf.metadata.keys().collect();
    keys.sort();
    for key in keys {
        let v = &gguf.metadata[key];
        string(&mut out, key);
        out.extend_from_slice(&v.type_code().to_le_bytes());
        value(&mut out, v);
    }
    for t in &gguf.tensors {
        tensor(&mut out, t);
    }
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            let elem = items.first().map_or(code::U8, Value::type_code);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                value(out, item);
            }
        }
    }
}

fn tensor(out: &mut Vec<u8>, t: &TensorInfo) {
    string(out, &t.name);
    out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
    for d in &t.dims {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&t.ggml_type.to_le_bytes());
    out.extend_from_slice(&t.offset.to_le_bytes());
}
