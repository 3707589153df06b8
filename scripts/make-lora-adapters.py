#!/usr/bin/env python3
"""Writes PEFT LoRA adapters for a model, from its shapes alone, for Candela's tests.

No adapter can be downloaded where Candela is tested, so tests make their own: for each
name, a directory in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`)
with seeded random `lora_A` / `lora_B` pairs for the chosen targets of every decoder
layer, sized from the model's Hugging Face `config.json`. Unlike a fresh PEFT adapter
(`lora_B` = 0, a no-op), `lora_B` is random too, so each adapter visibly changes the
model's answers. Standard library only.

    scripts/make-lora-adapters.py --config MODEL_DIR/config.json --out DIR \
        --names sql,chat,poem [--rank 8] [--alpha 16] [--rslora] [--targets q_proj,...]
"""

import argparse
import json
import os
import random
import struct

TARGETS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


def dims(cfg, target):
    """(in, out) features of a projection."""
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    q = heads * head_dim
    kv = cfg.get("num_key_value_heads", heads) * head_dim
    ff = cfg["intermediate_size"]
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, ff),
        "up_proj": (h, ff),
        "down_proj": (ff, h),
    }[target]


def write_safetensors(path, tensors):
    """`tensors`: [(name, shape, flat f32 list)] → a safetensors file (F32)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, values in tensors:
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def make(cfg, out_dir, name, seed, rank, alpha, rslora, targets, b_scale):
    rng = random.Random(seed)
    tensors = []
    for layer in range(cfg["num_hidden_layers"]):
        for target in targets:
            fan_in, fan_out = dims(cfg, target)
            prefix = "base_model.model.model.layers.%d.%s.%s" % (layer, TARGETS[target], target)
            bound = 1.0 / fan_in ** 0.5
            a = [rng.uniform(-bound, bound) for _ in range(rank * fan_in)]
            b = [rng.uniform(-b_scale, b_scale) for _ in range(fan_out * rank)]
            tensors.append((prefix + ".lora_A.weight", (rank, fan_in), a))
            tensors.append((prefix + ".lora_B.weight", (fan_out, rank), b))
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": cfg.get("_name_or_path", ""),
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": targets,
        "modules_to_save": None,
        "inference_mode": True,
        "use_dora": False,
    }
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="the model's Hugging Face config.json")
    p.add_argument("--out", required=True, help="directory to write one adapter directory per name into")
    p.add_argument("--names", required=True, help="comma-separated adapter names")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) instead of alpha/r")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target modules")
    p.add_argument("--b-scale", type=float, default=0.1, help="lora_B entries are uniform in ±this")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error("unknown targets %s (known: %s)" % (unknown, ", ".join(TARGETS)))
    for i, name in enumerate(n for n in args.names.split(",") if n):
        print(make(cfg, args.out, name, args.seed * 1000 + i, args.rank, args.alpha, args.rslora, targets, args.b_scale))


if __name__ == "__main__":
    main()
