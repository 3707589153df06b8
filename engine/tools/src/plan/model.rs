//! The model shape `candela plan` needs, read from a Hugging Face `config.json`
//! or from a GGUF file's metadata: layers, attention heads, KV heads, head
//! dimensions, context length, and the parameter count that sizes the weights.
//!
//! The parameter count of a `config.json` is computed from its shapes (embedding,
//! per-layer attention and MLP projections, norms, untied LM head, MoE experts);
//! a GGUF's is the sum of its tensors' element counts, and its weights are its
//! file size. MLA models (DeepSeek's `kv_lora_rank`) are refused: their KV layout
//! is not heads × head_dim.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// What the capacity formula needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// Where it came from, for the report (`config.json` path or GGUF path).
    pub source: String,
    /// A display name (GGUF `general.name`, config `architectures[0]`, or the path's stem).
    pub name: String,
    /// `llama`, `qwen2`, ...
    pub architecture: String,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    /// Key head dimension.
    pub head_dim: u64,
    /// Value head dimension (equal to `head_dim` in every llama-family model).
    pub value_head_dim: u64,
    /// The model's context length (`max_position_embeddings`, GGUF `context_length`).
    pub max_position_embeddings: Option<u64>,
    /// Parameter count.
    pub params: u64,
    /// What the weights weigh as stored, when known from the source: GGUF file size.
    pub file_bytes: Option<u64>,
    /// `torch_dtype` of a `config.json`.
    pub torch_dtype: Option<String>,
    /// Weight bits from a `config.json` `quantization_config` (AWQ/GPTQ 4, fp8 8),
    /// and how many of the parameters they apply to (the linear layers').
    pub quantization: Option<Quantization>,
}

/// Quantized linear layers of a `config.json` model.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    pub method: String,
    pub bits: u32,
    /// Parameters of the quantized linear layers; the rest (embeddings, norms,
    /// LM head) stay in the activation dtype.
    pub linear_params: u64,
}

#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: Option<u64>,
    intermediate_size: Option<u64>,
    num_attention_heads: Option<u64>,
    num_key_value_heads: Option<u64>,
    num_hidden_layers: Option<u64>,
    head_dim: Option<u64>,
    vocab_size: Option<u64>,
    max_position_embeddings: Option<u64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    torch_dtype: Option<String>,
    /// Newer transformers write `dtype` instead of `torch_dtype`.
    dtype: Option<String>,
    attention_bias: Option<bool>,
    num_local_experts: Option<u64>,
    num_experts: Option<u64>,
    moe_intermediate_size: Option<u64>,
    shared_expert_intermediate_size: Option<u64>,
    kv_lora_rank: Option<u64>,
    quantization_config: Option<Value>,
    /// Multimodal configs nest the language model here.
    text_config: Option<Box<HfConfig>>,
}

fn need(v: Option<u64>, key: &str, path: &Path) -> Result<u64> {
    match v {
        Some(v) if v > 0 => Ok(v),
        Some(_) => Err(input(path, format!("`{key}` is 0"))),
        None => Err(input(path, format!("has no `{key}`"))),
    }
}

fn input(path: &Path, message: String) -> Error {
    Error::Input {
        path: path.display().to_string(),
        message,
    }
}

/// `--model-config` takes the file or the model directory holding it.
fn config_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    }
}

/// Reads a Hugging Face `config.json` (or a directory holding one).
///
/// # Errors
/// [`Error::Input`] when it cannot be read, is not JSON, lacks a shape key, or
/// describes an MLA model.
pub fn from_config(path: &Path) -> Result<ModelShape> {
    let path = config_path(path);
    let text = std::fs::read_to_string(&path).map_err(|e| input(&path, e.to_string()))?;
    let top: HfConfig =
        serde_json::from_str(&text).map_err(|e| input(&path, format!("not a config.json: {e}")))?;
    let name = top
        .architectures
        .first()
        .cloned()
        .unwrap_or_else(|| stem(&path));
    let torch_dtype = top.torch_dtype.clone().or_else(|| top.dtype.clone());
    let quant_cfg = top.quantization_config.clone();
    let c = match top.text_config {
        Some(text) if top.num_hidden_layers.is_none() => *text,
        _ => HfConfig {
            text_config: None,
            ..top
        },
    };
    if c.kv_lora_rank.is_some() {
        return Err(input(
            &path,
            "is an MLA model (kv_lora_rank): its KV cache is not heads x head_dim; \
             this formula does not apply"
                .into(),
        ));
    }
    let hidden = need(c.hidden_size, "hidden_size", &path)?;
    let layers = need(c.num_hidden_layers, "num_hidden_layers", &path)?;
    let heads = need(c.num_attention_heads, "num_attention_heads", &path)?;
    let kv_heads = c.num_key_value_heads.unwrap_or(heads);
    let head_dim = c.head_dim.unwrap_or(hidden / heads);
    let vocab = need(c.vocab_size, "vocab_size", &path)?;
    let arch = c.model_type.clone().unwrap_or_else(|| "llama".into());
    if kv_heads == 0 || head_dim == 0 {
        return Err(input(&path, "has 0 KV heads or head_dim 0".into()));
    }
    let experts = c.num_local_experts.or(c.num_experts).unwrap_or(0);
    let inter = if experts > 0 {
        c.moe_intermediate_size.or(c.intermediate_size)
    } else {
        c.intermediate_size
    };
    let inter = need(inter, "intermediate_size", &path)?;
    let bias = c
        .attention_bias
        .unwrap_or(arch == "qwen2" || arch == "qwen2_moe");

    let q = heads * head_dim;
    let kv = kv_heads * head_dim;
    let attn = hidden * q + 2 * hidden * kv + q * hidden;
    let attn_bias = if bias { q + 2 * kv } else { 0 };
    let mlp = if experts > 0 {
        let shared = c.shared_expert_intermediate_size.unwrap_or(0);
        experts * 3 * hidden * inter + 3 * hidden * shared
    } else {
        3 * hidden * inter
    };
    let router = if experts > 0 {
        hidden * experts + u64::from(c.shared_expert_intermediate_size.is_some()) * hidden
    } else {
        0
    };
    let per_layer = attn + attn_bias + mlp + router + 2 * hidden;
    let embed = vocab * hidden;
    let lm_head = if c.tie_word_embeddings { 0 } else { embed };
    let params = embed + layers * per_layer + hidden + lm_head;
    let quantization = quant_cfg
        .as_ref()
        .map(|q| quantization(q, layers * (attn + mlp), &path))
        .transpose()?;
    Ok(ModelShape {
        source: path.display().to_string(),
        name,
        architecture: arch,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        value_head_dim: head_dim,
        max_position_embeddings: c.max_position_embeddings,
        params,
        file_bytes: None,
        torch_dtype,
        quantization,
    })
}

fn quantization(q: &Value, linear_params: u64, path: &Path) -> Result<Quantization> {
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let num_bits = q
        .get("config_groups")
        .and_then(Value::as_object)
        .and_then(|groups| groups.values().find_map(|g| g.pointer("/weights/num_bits")));
    let bits = q
        .get("bits")
        .or(num_bits)
        .and_then(Value::as_u64)
        .or_else(|| method.starts_with("fp8").then_some(8))
        .or_else(|| (q.get("load_in_4bit") == Some(&Value::Bool(true))).then_some(4))
        .or_else(|| (q.get("load_in_8bit") == Some(&Value::Bool(true))).then_some(8));
    match bits {
        Some(bits @ 1..=16) => Ok(Quantization {
            method,
            bits: bits as u32,
            linear_params,
        }),
        _ => Err(input(
            path,
            format!("quantization_config ({method}) gives no weight bits; pass --weights-gib"),
        )),
    }
}

fn stem(path: &Path) -> String {
    let p = if path.file_name().is_some_and(|n| n == "config.json") {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    p.file_stem().map_or_else(
        || p.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Reads a GGUF file's metadata and tensor index (not its tensor data).
///
/// # Errors
/// [`Error::Input`] when it cannot be read, is not GGUF, or lacks a shape key.
pub fn from_gguf(path: &Path) -> Result<ModelShape> {
    let gguf = candela_gguf::Gguf::read(path)
        .map_err(|e| input(path, format!("not a readable GGUF file: {e}")))?;
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| input(path, e.to_string()))?
        .len();
    let arch = gguf
        .str("general.architecture")
        .ok_or_else(|| input(path, "GGUF has no general.architecture".into()))?
        .to_owned();
    let int = |key: &str| -> Result<Option<u64>> {
        let Some(v) = gguf.get(&format!("{arch}.{key}")) else {
            return Ok(None);
        };
        match v.as_array() {
            // Per-layer counts (a few architectures): fine when they agree.
            Some(values) => {
                let all: Option<Vec<u64>> = values.iter().map(|x| x.as_u64()).collect();
                match all.as_deref() {
                    Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Ok(Some(*first)),
                    _ => Err(input(
                        path,
                        format!("`{arch}.{key}` differs per layer; pass --num-kv-heads"),
                    )),
                }
            }
            None => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| input(path, format!("`{arch}.{key}` is not an integer"))),
        }
    };
    let must = |key: &str| -> Result<u64> {
        match int(key)? {
            Some(v) if v > 0 => Ok(v),
            _ => Err(input(
                path,
                format!("GGUF metadata `{arch}.{key}` is missing or 0"),
            )),
        }
    };
    let layers = must("block_count")?;
    let hidden = must("embedding_length")?;
    let heads = must("attention.head_count")?;
    let kv_heads = int("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = int("attention.key_length")?.unwrap_or(hidden / heads);
    let value_head_dim = int("attention.value_length")?.unwrap_or(head_dim);
    let params = gguf
        .elem_count()
        .ok_or_else(|| input(path, "tensor element counts overflow u64".into()))?;
    Ok(ModelShape {
        source: path.display().to_string(),
        name: gguf
            .str("general.name")
            .map_or_else(|| stem(path), str::to_owned),
        architecture: arch.clone(),
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        value_head_dim,
        max_position_embeddings: int("context_length")?,
        params,
        file_bytes: Some(file_bytes),
        torch_dtype: None,
        quantization: None,
    })
}

#[cfg(test)]
mod tests {
    use candela_gguf::{Gguf, TensorInfo, Value};

    use super::*;

    /// A GGUF header with `llama.*` shape keys (and `extra`) written to a temp file.
    fn gguf_file(name: &str, extra: &[(&str, Value)]) -> PathBuf {
        let mut metadata: std::collections::HashMap<String, Value> = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(30)),
            ("llama.embedding_length", Value::U64(576)),
            ("llama.attention.head_count", Value::I32(9)),
            ("llama.context_length", Value::U32(8192)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let tensors = vec![
            TensorInfo {
                name: "token_embd.weight".into(),
                dims: vec![576, 1000],
                ggml_type: 3,
                offset: 0,
            },
            TensorInfo {
                name: "output_norm.weight".into(),
                dims: vec![576],
                ggml_type: 0,
                offset: 4096,
            },
        ];
        let header = Gguf {
            version: 3,
            metadata,
            tensors,
        };
        let path =
            std::env::temp_dir().join(format!("candela-plan-{name}-{}.gguf", std::process::id()));
        std::fs::write(&path, candela_gguf::write::to_bytes(&header)).unwrap();
        path
    }

    #[test]
    fn gguf_shape_keys_of_any_integer_width_and_agreeing_per_layer_arrays() {
        let kv = Value::Array(vec![Value::U8(3); 30]);
        let path = gguf_file("shape", &[("llama.attention.head_count_kv", kv)]);
        let m = from_gguf(&path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            (m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim),
            (30, 9, 3, 64)
        );
        assert_eq!(m.value_head_dim, 64);
        assert_eq!(m.max_position_embeddings, Some(8192));
        assert_eq!(m.params, 576 * 1000 + 576);
        assert_eq!(m.file_bytes, Some(size));
        assert_eq!(m.architecture, "llama");
        assert!(m.name.starts_with("candela-plan-shape"), "{}", m.name);
    }

    #[test]
    fn gguf_values_that_cannot_be_a_shape_are_refused() {
        for (name, extra, want) in [
            (
                "perlayer",
                (
                    "llama.attention.head_count_kv",
                    Value::Array(vec![Value::U32(3), Value::U32(4)]),
                ),
                "differs per layer",
            ),
            (
                "negative",
                ("llama.attention.head_count_kv", Value::I32(-3)),
                "is not an integer",
            ),
            (
                "zero",
                ("llama.block_count", Value::U32(0)),
                "is missing or 0",
            ),
            (
                "noarch",
                ("general.architecture", Value::U32(1)),
                "GGUF has no general.architecture",
            ),
        ] {
            let path = gguf_file(name, &[extra]);
            let e = from_gguf(&path).unwrap_err().to_string();
            std::fs::remove_file(&path).unwrap();
            assert!(e.contains(want), "{name}: {e}");
        }
        let path =
            std::env::temp_dir().join(format!("candela-plan-short-{}.gguf", std::process::id()));
        std::fs::write(&path, b"GGUF\x03\0\0\0").unwrap();
        let e = from_gguf(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("not a readable GGUF file: truncated"), "{e}");
    }
}
