//! Tiny PEFT LoRA adapters for the default model (SmolLM2-135M: 30 layers, hidden 576, 3 KV
//! heads of 64), written without a tensor library: `adapter_config.json` and an
//! `adapter_model.safetensors` (8-byte header length, JSON header, little-endian f32 data).

use std::path::Path;

const LAYERS: usize = 30;
const HIDDEN: usize = 576;
const KV: usize = 192;
const RANK: usize = 8;

/// Writes a rank-8 adapter on `q_proj` and `v_proj` of every layer into `dir`; `seed` makes
/// adapters differ.
pub fn write_adapter(dir: &Path, seed: u32) {
    std::fs::create_dir_all(dir).expect("adapter dir");
    let config = serde_json::json!({
        "peft_type": "LORA", "r": RANK, "lora_alpha": 16, "bias": "none",
        "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM",
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).expect("config");
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for layer in 0..LAYERS {
        for (module, out) in [("q_proj", HIDDEN), ("v_proj", KV)] {
            let prefix = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            for (half, shape) in [("lora_A", [RANK, HIDDEN]), ("lora_B", [out, RANK])] {
                let start = data.len();
                for i in 0..shape[0] * shape[1] {
                    let x = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                    let v = ((x % 1000) as f32 / 1000.0 - 0.5) * 0.02;
                    data.extend_from_slice(&v.to_le_bytes());
                }
                header.insert(
                    format!("{prefix}.{half}.weight"),
                    serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
                );
            }
        }
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    // The header is padded with spaces to a multiple of 8 bytes.
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(&data);
    std::fs::write(dir.join("adapter_model.safetensors"), file).expect("weights");
}
