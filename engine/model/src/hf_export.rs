//! Writes a llama-architecture GGUF as a Hugging Face directory: `config.json`,
//! `tokenizer.json`, `tokenizer_config.json` (with the chat template) and f16 safetensors,
//! sharded with a `model.safetensors.index.json` when asked.
//!
//! No safetensors checkpoint can be downloaded where Candela is tested, so this is how its
//! tests get a real Hugging Face directory (and a real repository for the local hub):
//! the default GGUF, dequantized. GGUF stores q/k rows permuted for interleaved rope; they
//! are permuted back to the Hugging Face layout here, so the directory loads through the
//! ordinary Hugging Face path and answers like the GGUF (to quantization noise).
//! Names come from the two formats' tables (`GGUF_NAMES`, `HF_NAMES`), the ones the
//! loaders read by. Costs: the whole model dequantized in memory once (f32), written as f16.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::load_gguf::{GGUF_NAMES, gguf_config, read_gguf};
use crate::load_hf::HF_NAMES;
use crate::tokenizer::tokenizer_from_gguf;
use crate::{Error, Result};

/// Writes `gguf` as a Hugging Face directory in `dir` (created), weights in `shards` files.
///
/// # Errors
/// Architectures other than llama ([`Error::Unsupported`]); I/O and candle errors.
pub fn gguf_to_hf_dir(gguf: &Path, dir: &Path, shards: usize) -> Result<()> {
    let (content, mut file) = read_gguf(gguf)?;
    let cfg = gguf_config(&content)?;
    if cfg.architecture != "llama" {
        return Err(Error::Unsupported(format!(
            "exporting `{}` GGUFs (only llama)",
            cfg.architecture
        )));
    }
    let mut get = |name: &str| -> Result<Tensor> {
        Ok(content
            .tensor(&mut file, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?)
    };
    let (g, h) = (&GGUF_NAMES, &HF_NAMES);
    let w = |module: &str| format!("{module}.weight");
    let mut ts: Vec<(String, Tensor)> = vec![
        (w(h.embed), get(&w(g.embed))?),
        (w(h.output_norm), get(&w(g.output_norm))?),
    ];
    let tied = !content.tensor_infos.contains_key(&w(g.lm_head));
    if !tied {
        ts.push((w(h.lm_head), get(&w(g.lm_head))?));
    }
    let (gl, hl) = (&g.layer, &h.layer);
    for i in 0..cfg.num_layers {
        // q/k carry the heads to un-permute; the rest are copied as they are.
        for (hf, gg, heads) in [
            (hl.q, gl.q, Some(cfg.num_heads)),
            (hl.k, gl.k, Some(cfg.num_kv_heads)),
            (hl.v, gl.v, None),
            (hl.o, gl.o, None),
            (hl.gate, gl.gate, None),
            (hl.up, gl.up, None),
            (hl.down, gl.down, None),
            (hl.attn_norm, gl.attn_norm, None),
            (hl.ffn_norm, gl.ffn_norm, None),
        ] {
            let t = get(&w(&g.in_layer(i, gg)))?;
            let t = match heads {
                Some(heads) => unpermute(&t, heads)?,
                None => t,
            };
            ts.push((w(&h.in_layer(i, hf)), t));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    write_shards(dir, ts, shards.max(1))?;

    let tk = tokenizer_from_gguf(&content)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "num_hidden_layers": cfg.num_layers, "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": tied, "bos_token_id": tk.bos_token_id,
        "eos_token_id": tk.eos_token_ids.first(), "rope_scaling": null,
        "torch_dtype": "float16"
    });
    write(dir, "config.json", &config.to_string())?;
    let path = dir.join("tokenizer.json");
    tk.tokenizer
        .save(&path, false)
        .map_err(|e| Error::Tokenizer(format!("saving {}: {e}", path.display())))?;
    let token = |t: &Option<String>| {
        t.as_ref()
            .map(|c| serde_json::json!({"content": c, "special": true}))
    };
    let tc = serde_json::json!({
        "chat_template": tk.chat_template,
        "bos_token": token(&tk.bos_token), "eos_token": token(&tk.eos_token),
    });
    write(dir, "tokenizer_config.json", &tc.to_string())
}

/// GGUF rows of one head are `[hd/2][2]` (interleaved rope); Hugging Face's are `[2][hd/2]`.
fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    Ok(w.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?)
}

/// Splits the tensors (in order) into `n` files of about equal size, as f16.
fn write_shards(dir: &Path, ts: Vec<(String, Tensor)>, n: usize) -> Result<()> {
    let total: usize = ts.iter().map(|(_, t)| t.elem_count()).sum();
    let per = total.div_ceil(n);
    let mut groups: Vec<HashMap<String, Tensor>> = vec![HashMap::new()];
    let mut filled = 0;
    for (name, t) in ts {
        if filled >= per && groups.len() < n {
            groups.push(HashMap::new());
            filled = 0;
        }
        filled += t.elem_count();
        let t = t.to_dtype(DType::F16)?;
        groups
            .last_mut()
            .expect("invariant: one group at least")
            .insert(name, t);
    }
    if groups.len() == 1 {
        return save(dir, "model.safetensors", &groups[0]);
    }
    let count = groups.len();
    let mut weight_map = serde_json::Map::new();
    for (i, g) in groups.iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        for name in g.keys() {
            weight_map.insert(name.clone(), file.clone().into());
        }
        save(dir, &file, g)?;
    }
    let index =
        serde_json::json!({"metadata": {"total_size": total * 2}, "weight_map": weight_map});
    write(dir, "model.safetensors.index.json", &index.to_string())
}

fn save(dir: &Path, file: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, dir.join(file))?;
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
}
