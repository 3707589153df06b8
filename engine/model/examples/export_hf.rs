//! `cargo run -p candela-model --example export_hf -- MODEL.gguf OUT_DIR [SHARDS]`:
//! writes a llama GGUF as a Hugging Face directory (see `candela_model::hf_export`).
//! Candela's tests use it for a real safetensors model and hub repository.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(gguf), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: export_hf MODEL.gguf OUT_DIR [SHARDS]");
        std::process::exit(2);
    };
    let shards = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    if let Err(e) = candela_model::hf_export::gguf_to_hf_dir(gguf.as_ref(), out.as_ref(), shards) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
