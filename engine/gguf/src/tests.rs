//! The reader on headers written byte by byte (versions 1 and 3), on the
//! writer's output, and on malformed and arbitrary input: an error every time,
//! never a panic.

use proptest::prelude::*;

use crate::value::code;
use crate::{Error, Gguf, TensorInfo, Value, write};

/// Little-endian header bytes, assembled by hand so the reader is not only
/// checked against its own writer.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    /// A version-3 string.
    fn s(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// `GGUF`, version 3 and the two counts.
    fn v3(tensors: u64, kvs: u64) -> Self {
        Bytes::default().raw(b"GGUF").u32(3).u64(tensors).u64(kvs)
    }
}

fn parse(b: &[u8]) -> Result<Gguf, Error> {
    Gguf::from_reader(b)
}

fn small_v3() -> Vec<u8> {
    Bytes::v3(2, 5)
        .s("general.architecture")
        .u32(code::STRING)
        .s("llama\0")
        .s("llama.block_count")
        .u32(code::U32)
        .u32(30)
        .s("llama.attention.head_count_kv")
        .u32(code::ARRAY)
        .u32(code::I32)
        .u64(3)
        .raw(&[3, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0])
        .s("llama.rope.freq_base")
        .u32(code::F32)
        .raw(&10_000f32.to_le_bytes())
        .s("general.bias")
        .u32(code::BOOL)
        .raw(&[1])
        .s("token_embd.weight")
        .u32(2)
        .u64(576)
        .u64(49_152)
        .u32(3)
        .u64(0)
        .s("output_norm.weight")
        .u32(1)
        .u64(576)
        .u32(0)
        .u64(1_000)
        .0
}

#[test]
fn reads_a_small_version_3_header() {
    let g = parse(&small_v3()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.str("general.architecture"), Some("llama"), "NUL dropped");
    assert_eq!(g.u64("llama.block_count"), Some(30));
    assert_eq!(
        g.get("llama.attention.head_count_kv"),
        Some(&Value::Array(vec![Value::I32(3); 3]))
    );
    assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::F32(10_000.0)));
    assert_eq!(g.get("general.bias"), Some(&Value::Bool(true)));
    assert_eq!(g.u64("general.architecture"), None);
    assert_eq!(g.u64("missing"), None);
    assert_eq!(
        g.tensors,
        [
            TensorInfo {
                name: "token_embd.weight".into(),
                dims: vec![576, 49_152],
                ggml_type: 3,
                offset: 0,
            },
            TensorInfo {
                name: "output_norm.weight".into(),
                dims: vec![576],
                ggml_type: 0,
                offset: 1_000,
            },
        ]
    );
    assert_eq!(g.elem_count(), Some(576 * 49_152 + 576));
}

#[test]
fn reads_version_1_with_32_bit_lengths() {
    let b = Bytes::default()
        .raw(b"GGUF")
        .u32(1)
        .u32(1) // tensors
        .u32(1) // metadata
        .u32(4)
        .raw(b"name")
        .u32(code::STRING)
        .u32(2)
        .raw(b"v1")
        .u32(1)
        .raw(b"t")
        .u32(2)
        .u32(4)
        .u32(8)
        .u32(0)
        .u64(64);
    let g = parse(&b.0).unwrap();
    assert_eq!(g.version, 1);
    assert_eq!(g.str("name"), Some("v1"));
    assert_eq!(g.tensors[0].dims, [4, 8]);
    assert_eq!(g.tensors[0].offset, 64);
}

#[test]
fn reads_a_file_and_leaves_tensor_data_alone() {
    let path = std::env::temp_dir().join(format!("candela-gguf-{}.gguf", std::process::id()));
    let mut bytes = small_v3();
    bytes.extend(std::iter::repeat_n(0xAB, 4096)); // "tensor data"
    std::fs::write(&path, &bytes).unwrap();
    let g = Gguf::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(g, parse(&small_v3()).unwrap());
    let missing = Gguf::read(&path).unwrap_err();
    assert!(matches!(missing, Error::Io(_)), "{missing}");
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_v3();
    for n in 0..full.len() {
        let e = parse(&full[..n]).unwrap_err();
        assert!(matches!(e, Error::Truncated), "{n} bytes: {e}");
    }
}

#[test]
fn malformed_headers_are_errors_with_a_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"architectures\": []}".to_vec(),
            "starts with \"{\\\"ar\"",
        ),
        (Bytes::default().raw(b"GGUF").u32(4).0, "version 4"),
        (
            Bytes::v3(0, 1).s("k").u32(13).raw(&[0; 8]).0,
            "unknown value type 13",
        ),
        (
            Bytes::v3(0, 1).s("k").u32(code::BOOL).raw(&[2]).0,
            "bool byte 2",
        ),
        (
            Bytes::v3(1, 0).s("t").u32(5).raw(&[1; 40]).0,
            "5 dimensions",
        ),
        (
            Bytes::v3(1, 0)
                .s("t")
                .u32(2)
                .u64(1 << 32)
                .u64(1 << 32)
                .u32(0)
                .u64(0)
                .0,
            "2^64 elements",
        ),
        (
            Bytes::v3(0, 1).s("k").u32(code::STRING).u64(u64::MAX).0,
            "a string of",
        ),
    ];
    for (bytes, want) in cases {
        let e = parse(&bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}

#[test]
fn claimed_sizes_beyond_the_input_cost_nothing() {
    // Counts and lengths near u64::MAX with nothing behind them: the reader
    // reaches the end of the input, it does not allocate what was claimed.
    for b in [
        Bytes::v3(u64::MAX, u64::MAX).0,
        Bytes::v3(0, 1).s("k").u32(code::STRING).u64(1 << 29).0,
        Bytes::v3(0, 1)
            .s("k")
            .u32(code::ARRAY)
            .u32(code::U64)
            .u64(u64::MAX)
            .0,
    ] {
        assert!(matches!(parse(&b), Err(Error::Truncated)));
    }
}

#[test]
fn arrays_nest_at_most_max_depth() {
    let nested = |depth: usize| {
        let mut b = Bytes::v3(0, 1).s("k").u32(code::ARRAY);
        for _ in 1..depth {
            b = b.u32(code::ARRAY).u64(1);
        }
        b.u32(code::U8).u64(1).raw(&[7]).0
    };
    let ok = parse(&nested(crate::read::MAX_DEPTH)).unwrap();
    assert!(ok.get("k").is_some());
    let e = parse(&nested(crate::read::MAX_DEPTH + 1)).unwrap_err();
    assert!(e.to_string().contains("nested more than"), "{e}");
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e6f32..1e6).prop_map(Value::F32),
        (-1e12f64..1e12).prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        "[a-z.é]{0,12}".prop_map(Value::String),
    ]
}

/// A value the writer can write: array elements share their type.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => (scalar(), 0usize..5).prop_map(|(v, n)| Value::Array(vec![v; n])),
    ]
}

fn header() -> impl Strategy<Value = Gguf> {
    let tensor = (
        "[a-z._0-9]{1,16}",
        prop::collection::vec(0u64..5000, 0..=4),
        0u32..40,
        any::<u64>(),
    )
        .prop_map(|(name, dims, ggml_type, offset)| TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    (
        prop::collection::hash_map("[a-z._]{1,20}", value(), 0..8),
        prop::collection::vec(tensor, 0..4),
    )
        .prop_map(|(metadata, tensors)| Gguf {
            version: 3,
            metadata,
            tensors,
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    /// Past the magic, so the fuzzing reaches counts, values and tensors.
    #[test]
    fn arbitrary_bytes_after_a_valid_start_never_panic(
        version in 0u32..5,
        rest in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let b = Bytes::default().raw(b"GGUF").u32(version).raw(&rest);
        let _ = parse(&b.0);
    }

    #[test]
    fn written_headers_read_back_equal(g in header()) {
        let bytes = write::to_bytes(&g);
        prop_assert_eq!(parse(&bytes).unwrap(), g);
    }

    /// A written header with one byte changed is read or refused, never a panic.
    #[test]
    fn corrupted_headers_never_panic(g in header(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = write::to_bytes(&g);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = parse(&bytes);
    }
}
