//! GGUF metadata values and the one rule for reading them as numbers.
//!
//! Model shapes are stored with whatever integer width the converter chose
//! (`u32` in llama.cpp's, `i32` or `u64` in others), so readers ask for "a
//! non-negative integer" ([`Value::as_u64`]) rather than for a width. A negative
//! count is absent, never a wrapped-around huge one.

/// The type codes GGUF writes before each value (the spec's `gguf_metadata_value_type`).
pub mod code {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// Read lossily as UTF-8 with trailing NULs dropped (some converters write them).
    String(String),
    /// Elements share one type in the file.
    Array(Vec<Value>),
}

impl Value {
    /// Any integer that is not negative, whatever its width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A float, or an integer widened to one (`rope.freq_base` is written both ways).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The type code written before this value.
    pub fn type_code(&self) -> u32 {
        match self {
            Value::U8(_) => code::U8,
            Value::I8(_) => code::I8,
            Value::U16(_) => code::U16,
            Value::I16(_) => code::I16,
            Value::U32(_) => code::U32,
            Value::I32(_) => code::I32,
            Value::U64(_) => code::U64,
            Value::I64(_) => code::I64,
            Value::F32(_) => code::F32,
            Value::F64(_) => code::F64,
            Value::Bool(_) => code::BOOL,
            Value::String(_) => code::STRING,
            Value::Array(_) => code::ARRAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_any_width_read_as_u64_unless_negative() {
        for v in [
            Value::U8(7),
            Value::I8(7),
            Value::U16(7),
            Value::I16(7),
            Value::U32(7),
            Value::I32(7),
            Value::U64(7),
            Value::I64(7),
        ] {
            assert_eq!(v.as_u64(), Some(7), "{v:?}");
            assert_eq!(v.as_f64(), Some(7.0), "{v:?}");
        }
        for v in [
            Value::I8(-1),
            Value::I16(-1),
            Value::I32(-1),
            Value::I64(-1),
        ] {
            assert_eq!(v.as_u64(), None, "{v:?}");
            assert_eq!(v.as_f64(), Some(-1.0), "{v:?}");
        }
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::String("7".into()).as_u64(), None);
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::String("x".into()).as_str(), Some("x"));
        assert_eq!(Value::U8(1).as_str(), None);
        assert_eq!(
            Value::Array(vec![Value::U8(1)]).as_array(),
            Some(&[Value::U8(1)][..])
        );
    }
}
