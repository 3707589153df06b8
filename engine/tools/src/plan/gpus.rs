//! The GPUs `candela plan --gpu NAME` knows, with the memory the driver reports
//! (`nvidia-smi --query-gpu=memory.total`, MiB), and the element sizes of the
//! weight and KV-cache dtypes `--dtype` / `--kv-cache-dtype` accept.
//!
//! vLLM's `--gpu-memory-utilization` is a fraction of the total the driver
//! reports, so that total (not the marketing "80 GB") is what the plan uses.

use crate::error::{Error, Result};

/// One accelerator model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gpu {
    /// Canonical name, as `--gpu` spells it.
    pub name: &'static str,
    /// Other spellings accepted by `--gpu` (compared without case and punctuation).
    pub aliases: &'static [&'static str],
    /// Total memory as the driver reports it, MiB.
    pub memory_mib: u64,
}

impl Gpu {
    /// Total memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * 1024 * 1024
    }
}

/// The built-in table (`nvidia-smi` totals).
pub const GPUS: &[Gpu] = &[
    Gpu {
        name: "A100-40G",
        aliases: &["A100-40GB", "A100-SXM4-40GB", "A100-PCIE-40GB"],
        memory_mib: 40_960,
    },
    Gpu {
        name: "A100-80G",
        aliases: &["A100-80GB", "A100-SXM4-80GB", "A100-PCIE-80GB"],
        memory_mib: 81_920,
    },
    Gpu {
        name: "H100-80G",
        aliases: &[
            "H100",
            "H100-80GB",
            "H100-SXM",
            "H100-PCIE",
            "H100-80GB-HBM3",
        ],
        memory_mib: 81_559,
    },
    Gpu {
        name: "H100-NVL",
        aliases: &["H100-94G", "H100-94GB"],
        memory_mib: 95_830,
    },
    Gpu {
        name: "H200",
        aliases: &["H200-141G", "H200-141GB"],
        memory_mib: 143_771,
    },
    Gpu {
        name: "L4",
        aliases: &["L4-24G", "L4-24GB"],
        memory_mib: 23_034,
    },
    Gpu {
        name: "L40S",
        aliases: &["L40S-48G", "L40S-48GB"],
        memory_mib: 46_068,
    },
    Gpu {
        name: "L40",
        aliases: &["L40-48G", "L40-48GB"],
        memory_mib: 46_068,
    },
    Gpu {
        name: "A10G",
        aliases: &["A10G-24G", "A10G-24GB"],
        memory_mib: 23_028,
    },
    Gpu {
        name: "A10",
        aliases: &["A10-24G", "A10-24GB"],
        memory_mib: 23_028,
    },
    Gpu {
        name: "T4",
        aliases: &["T4-16G", "T4-16GB", "TESLA-T4"],
        memory_mib: 15_360,
    },
    Gpu {
        name: "RTX4090",
        aliases: &["4090", "GEFORCE-RTX-4090"],
        memory_mib: 24_564,
    },
];

fn normalize(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Looks a GPU up by name or alias, ignoring case, `-`, `_` and spaces.
///
/// # Errors
/// [`Error::InvalidArgs`] naming the known GPUs when `name` is not one of them.
pub fn gpu(name: &str) -> Result<Gpu> {
    let want = normalize(name);
    GPUS.iter()
        .find(|g| normalize(g.name) == want || g.aliases.iter().any(|a| normalize(a) == want))
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = GPUS.iter().map(|g| g.name).collect();
            Error::InvalidArgs(format!(
                "unknown --gpu `{name}` (known: {}); or give --gpu-memory-gib",
                known.join(", ")
            ))
        })
}

/// A dtype and its size per element (bytes; fractional for 4-bit formats).
#[derive(Debug, Clone, PartialEq)]
pub struct Dtype {
    /// Canonical short name (`bf16`, `fp16`, `fp32`, `fp8`, `int8`, `int4`).
    pub name: &'static str,
    /// Bytes per element.
    pub bytes: f64,
}

/// Parses a dtype name as vLLM spells them (`bfloat16`, `half`, `float`, `fp8_e4m3`, ...).
/// `auto` is not a dtype: callers resolve it first.
///
/// # Errors
/// [`Error::InvalidArgs`] for an unknown name; `flag` names the flag in the message.
pub fn dtype(name: &str, flag: &str) -> Result<Dtype> {
    let d = |name, bytes| Ok(Dtype { name, bytes });
    match name.to_ascii_lowercase().as_str() {
        "bf16" | "bfloat16" => d("bf16", 2.0),
        "f16" | "fp16" | "float16" | "half" => d("fp16", 2.0),
        "f32" | "fp32" | "float32" | "float" => d("fp32", 4.0),
        "fp8" | "fp8_e4m3" | "fp8_e5m2" | "fp8_inc" | "f8" => d("fp8", 1.0),
        "int8" | "i8" | "w8" => d("int8", 1.0),
        "int4" | "i4" | "w4" | "awq" | "gptq" => d("int4", 0.5),
        _ => Err(Error::InvalidArgs(format!(
            "{flag} `{name}` is not a dtype (auto, bf16, fp16, fp32, fp8, int8, int4)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve_case_and_punctuation_blind() {
        assert_eq!(gpu("A100-80G").unwrap().memory_mib, 81_920);
        assert_eq!(gpu("a100_80gb").unwrap().name, "A100-80G");
        assert_eq!(gpu("h100").unwrap().name, "H100-80G");
        assert_eq!(gpu("RTX 4090").unwrap().name, "RTX4090");
        // The seed's A100-80G is exactly 80 GiB: 80 x 0.9 = 72.
        assert_eq!(gpu("A100-80G").unwrap().memory_bytes(), 80 << 30);
    }

    #[test]
    fn unknown_gpu_lists_the_table() {
        let e = gpu("A100").unwrap_err().to_string();
        assert!(e.contains("unknown --gpu `A100`"), "{e}");
        assert!(
            e.contains("A100-40G") && e.contains("A100-80G") && e.contains("T4"),
            "{e}"
        );
    }

    #[test]
    fn every_entry_resolves_to_itself_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for g in GPUS {
            assert_eq!(gpu(g.name).unwrap(), *g);
            for a in g.aliases.iter().chain([&g.name]) {
                assert!(seen.insert(normalize(a)), "{a} is ambiguous");
            }
        }
    }

    #[test]
    fn dtype_sizes() {
        assert_eq!(dtype("bfloat16", "--dtype").unwrap().bytes, 2.0);
        assert_eq!(dtype("half", "--dtype").unwrap().name, "fp16");
        assert_eq!(dtype("fp8_e5m2", "--kv-cache-dtype").unwrap().bytes, 1.0);
        assert_eq!(dtype("AWQ", "--dtype").unwrap().bytes, 0.5);
        let e = dtype("fp7", "--kv-cache-dtype").unwrap_err().to_string();
        assert!(e.contains("--kv-cache-dtype `fp7`"), "{e}");
    }
}
