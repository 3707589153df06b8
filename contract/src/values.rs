//! Typed flag values shared by the engine's parser and the operator's argv builder. Each
//! type parses what the engine accepts and displays as a value the parser takes back
//! (`x.to_string().parse() == Ok(x)`, checked by property tests).

use std::fmt;
use std::str::FromStr;

/// `--device`: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU path (quantized SIMD kernels).
    Cpu,
    /// CUDA device ordinal.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("expected cpu, cuda or cuda:N, got `{s}`")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--dtype`: compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// f32 activations (quantized GGUF weights stay quantized).
    Auto,
    /// 32-bit floats.
    F32,
    /// bfloat16 (not supported yet: refused by validation).
    Bf16,
    /// IEEE half precision (not supported yet: refused by validation).
    F16,
}

/// `--kv-cache-dtype`: element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheDtype {
    /// Per device: `f16` on CPU (half of `f32`'s memory, as vLLM's `auto` on a
    /// half-precision model and llama.cpp's default), `f32` on a GPU.
    Auto,
    /// 8-bit floats (not supported yet: refused by validation).
    Fp8,
}

/// `--scheduling-policy`: which waiting request runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulingPolicy {
    /// First come, first served.
    Fcfs,
    /// Lower `priority` values first, then arrival order.
    Priority,
}

macro_rules! display_as_value {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = clap::ValueEnum::to_possible_value(self)
                    .expect("invariant: no variant is skipped");
                f.write_str(value.get_name())
            }
        }
    )*};
}
display_as_value!(Dtype, KvCacheDtype, SchedulingPolicy);

/// A size in bytes, written plain (`1048576`) or with a unit: `K`/`KB` = 1000,
/// `KiB` = 1024, and so on up to `T`/`TB`/`TiB`; decimals allowed (`1.5GiB`).
/// Displays as the plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let multiplier: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown size unit in `{s}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ));
            }
        };
        let bad = || format!("expected a size like 512MiB or 2GiB, got `{s}`");
        if number.is_empty() {
            return Err(bad());
        }
        if let Ok(n) = number.parse::<u64>() {
            return n.checked_mul(multiplier).map(ByteSize).ok_or_else(bad);
        }
        let x: f64 = number.parse().map_err(|_| bad())?;
        let bytes = (x * multiplier as f64).round();
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn byte_sizes() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("1000"), Ok(1000));
        assert_eq!(p("512MiB"), Ok(512 << 20));
        assert_eq!(p("2GiB"), Ok(2 << 30));
        assert_eq!(p("2gib"), Ok(2 << 30));
        assert_eq!(p("1.5 GiB"), Ok(3 << 29));
        assert_eq!(p("4G"), Ok(4_000_000_000));
        assert_eq!(p("10KB"), Ok(10_000));
        assert_eq!(p("1Ti"), Ok(1 << 40));
        assert!(p("").is_err());
        assert!(p("GiB").is_err());
        assert!(p("12 parsecs").is_err());
        assert!(p("-1GiB").is_err());
        assert!(p("99999999999TiB").is_err());
    }

    #[test]
    fn devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("CUDA".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn enums_display_their_flag_values() {
        assert_eq!(Dtype::Bf16.to_string(), "bf16");
        assert_eq!(KvCacheDtype::Fp8.to_string(), "fp8");
        assert_eq!(SchedulingPolicy::Priority.to_string(), "priority");
    }

    proptest! {
        #[test]
        fn values_display_what_they_parse_from(bytes in any::<u64>(), gpu in 0usize..64) {
            prop_assert_eq!(ByteSize(bytes).to_string().parse::<ByteSize>(), Ok(ByteSize(bytes)));
            prop_assert_eq!(Device::Cuda(gpu).to_string().parse::<Device>(), Ok(Device::Cuda(gpu)));
        }
    }
}
