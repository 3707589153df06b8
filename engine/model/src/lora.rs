//! LoRA adapters: a PEFT checkpoint (`adapter_config.json` + `adapter_model.safetensors`)
//! read into per-layer low-rank pairs, and their batched application in the forward pass.
//!
//! The base projections run once for every row of a step; each adapter's update
//! `y += scale · (x Aᵀ) Bᵀ` is then added to its own rows only (the S-LoRA/Punica idea,
//! here a row gather on the CPU). A row's update depends on that row alone, so a request's
//! logits do not depend on which adapters share its batch.
//!
//! Scale is `lora_alpha / r`, or `lora_alpha / √r` with `use_rslora`; it is folded into
//! `B` at load. Targets: `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
//! `down_proj` (any subset). Configurations that would change the math in ways not
//! implemented (DoRA, `fan_in_fan_out`, trained biases, `modules_to_save`, per-module rank
//! or alpha patterns, non-LoRA PEFT types) are refused by name, never ignored.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::attention::dot;
use crate::llama::ModelConfig;
use crate::{Error, Result};

/// The PEFT configuration file of an adapter directory.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The PEFT weights file of an adapter directory.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The projections an adapter can target, in the decoder's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// PEFT's module name.
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// `self_attn` or `mlp`, the module's parent in Hugging Face names.
    fn block(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            Target::Gate | Target::Up | Target::Down => "mlp",
        }
    }

    /// `(in, out)` features of the projection in a model of shape `c`.
    pub fn dims(self, c: &ModelConfig) -> (usize, usize) {
        let (h, q, kv, ff) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        match self {
            Target::Q => (h, q),
            Target::K | Target::V => (h, kv),
            Target::O => (q, h),
            Target::Gate | Target::Up => (h, ff),
            Target::Down => (ff, h),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One projection's low-rank pair, `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
struct Pair {
    /// `[r, in]`: PEFT's `lora_A`.
    a: Vec<f32>,
    /// `[r, out]`: PEFT's `lora_B` transposed, times the adapter's scale.
    scaled_bt: Vec<f32>,
}

/// A loaded adapter: its rank, scale and pairs per layer and target.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    rank: usize,
    scale: f32,
    /// `[layer][target]`.
    layers: Vec<[Option<Pair>; 7]>,
}

/// The fields of `adapter_config.json` that change the math (PEFT writes many more:
/// `task_type`, `lora_dropout`, `inference_mode`, … which do not, at inference).
#[derive(Debug, Deserialize)]
struct PeftConfig {
    #[serde(default)]
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, serde_json::Value>,
}

impl LoraAdapter {
    /// Reads a PEFT adapter directory for a model of shape `model`.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Json`] for missing or malformed files; [`Error::Candle`]
    /// for unreadable safetensors; [`Error::InvalidModel`] naming the first problem: a
    /// rank above `max_rank`, an unsupported setting, a tensor that is not a LoRA pair of
    /// a supported target, or a shape that does not fit the model.
    pub fn load(dir: &Path, model: &ModelConfig, max_rank: usize) -> Result<Self> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let cfg: PeftConfig = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: config_path,
            source,
        })?;
        let bad = |m: String| Err(Error::InvalidModel(format!("LoRA adapter: {m}")));
        match cfg.peft_type.as_deref() {
            None | Some("LORA") => {}
            Some(other) => return bad(format!("peft_type {other} is not supported (only LORA)")),
        }
        if cfg.r == 0 || cfg.r > max_rank {
            return bad(format!(
                "rank {} is outside 1..={max_rank} (--max-lora-rank)",
                cfg.r
            ));
        }
        for (set, what) in [
            (cfg.use_dora, "use_dora"),
            (cfg.fan_in_fan_out, "fan_in_fan_out"),
            (
                cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()),
                "modules_to_save",
            ),
            (!cfg.rank_pattern.is_empty(), "rank_pattern"),
            (!cfg.alpha_pattern.is_empty(), "alpha_pattern"),
        ] {
            if set {
                return bad(format!("{what} is not supported"));
            }
        }
        if let Some(b) = cfg.bias.as_deref().filter(|b| *b != "none") {
            return bad(format!("bias {b:?} is not supported (only \"none\")"));
        }
        let scale = if cfg.use_rslora {
            cfg.lora_alpha / (cfg.r as f64).sqrt()
        } else {
            cfg.lora_alpha / cfg.r as f64
        } as f32;
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.is_file() {
            return Err(Error::Io {
                path: weights_path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
        let mut layers: Vec<[Option<Pair>; 7]> =
            (0..model.num_layers).map(|_| Default::default()).collect();
        let mut halves: HashMap<(usize, Target), [Option<Vec<f32>>; 2]> = HashMap::new();
        for (name, tensor) in &tensors {
            let Some((layer, target, half)) = parse_name(name) else {
                return bad(format!(
                    "tensor {name} is not a lora_A/lora_B of {} in a decoder layer",
                    Target::ALL.map(Target::module).join("/")
                ));
            };
            if layer >= model.num_layers {
                return bad(format!(
                    "tensor {name}: the model has {} layers",
                    model.num_layers
                ));
            }
            let (fan_in, fan_out) = target.dims(model);
            let want = if half == 0 {
                (cfg.r, fan_in)
            } else {
                (fan_out, cfg.r)
            };
            if tensor.dims() != [want.0, want.1] {
                return bad(format!(
                    "tensor {name} has shape {:?}, expected [{}, {}] (rank {}, this model's {})",
                    tensor.dims(),
                    want.0,
                    want.1,
                    cfg.r,
                    target.module()
                ));
            }
            let mut values = tensor.to_dtype(DType::F32)?;
            if half == 1 {
                values = (values.t()? * f64::from(scale))?;
            }
            let flat = values.flatten_all()?.to_vec1::<f32>()?;
            halves.entry((layer, target)).or_default()[half] = Some(flat);
        }
        for ((layer, target), [a, b]) in halves {
            let (Some(a), Some(scaled_bt)) = (a, b) else {
                return bad(format!(
                    "layer {layer} {} has only one of lora_A and lora_B",
                    target.module()
                ));
            };
            layers[layer][target.index()] = Some(Pair { a, scaled_bt });
        }
        if layers.iter().all(|l| l.iter().all(Option::is_none)) {
            return bad(format!("{} holds no LoRA weights", ADAPTER_WEIGHTS));
        }
        Ok(LoraAdapter {
            rank: cfg.r,
            scale,
            layers,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `lora_alpha / r` (or `/ √r` with rslora).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> u64 {
        let floats: usize = self
            .layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.a.len() + p.scaled_bt.len())
            .sum();
        (floats * 4) as u64
    }
}

/// `base_model.model.model.layers.{i}.{self_attn|mlp}.{target}.lora_{A|B}[.default].weight`
/// → `(i, target, 0 for A / 1 for B)`.
fn parse_name(name: &str) -> Option<(usize, Target, usize)> {
    let rest = name.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    let rest = rest.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let rest = rest.strip_suffix(".weight")?.trim_end_matches(".default");
    let (module, half) = rest.rsplit_once('.')?;
    let half = match half {
        "lora_A" => 0,
        "lora_B" => 1,
        _ => return None,
    };
    let target = Target::ALL
        .into_iter()
        .find(|t| module == format!("{}.{}", t.block(), t.module()))?;
    Some((layer, target, half))
}

/// Rows of one adapter that one task updates: the adapter's weights are read once for
/// all of them (a step with 32 rows over 4 adapters reads each adapter once, not 8 times).
const ROWS_PER_TASK: usize = 16;

/// Which adapter each row of a step's `[T]` batch runs with, grouped: tasks of up to
/// [`ROWS_PER_TASK`] rows of one adapter (rows without an adapter run the base only).
#[derive(Debug, Clone, Default)]
pub struct LoraRows<'a> {
    num_rows: usize,
    tasks: Vec<(&'a LoraAdapter, Vec<usize>)>,
}

impl<'a> LoraRows<'a> {
    /// From each sequence's adapter and its row range in the batch.
    pub fn new(
        num_rows: usize,
        seqs: impl IntoIterator<Item = (std::ops::Range<usize>, Option<&'a LoraAdapter>)>,
    ) -> Self {
        let mut groups: Vec<(&'a LoraAdapter, Vec<usize>)> = Vec::new();
        for (range, adapter) in seqs {
            let Some(adapter) = adapter else { continue };
            match groups.iter_mut().find(|(a, _)| std::ptr::eq(*a, adapter)) {
                Some((_, rows)) => rows.extend(range),
                None => groups.push((adapter, range.collect())),
            }
        }
        let tasks = groups
            .into_iter()
            .flat_map(|(adapter, rows)| {
                rows.chunks(ROWS_PER_TASK)
                    .map(|c| (adapter, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        LoraRows { num_rows, tasks }
    }

    /// True when no row has an adapter (the forward pass skips every update).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds each row's adapter update of `target` at `layer`: `x` is the projection's
    /// input `[T, in]`, `y` its output `[T, out]`. Each row gets `Σ_j (x·A_j) · sBᵀ_j`
    /// summed in `j` order, whatever rows share its task: batch-invariant.
    pub(crate) fn apply(&self, layer: usize, target: Target, x: &[f32], y: &mut [f32]) {
        if self.tasks.is_empty() {
            return;
        }
        let (fan_in, fan_out) = (x.len() / self.num_rows, y.len() / self.num_rows);
        let out = RowsPtr(y.as_mut_ptr());
        crate::pool::global().for_each(self.tasks.len(), |i| {
            let (adapter, rows) = &self.tasks[i];
            let Some(p) = &adapter.layers[layer][target.index()] else {
                return;
            };
            let r = adapter.rank;
            let mut xa = vec![0.0f32; rows.len() * r];
            for j in 0..r {
                let a = &p.a[j * fan_in..(j + 1) * fan_in];
                for (k, &row) in rows.iter().enumerate() {
                    xa[k * r + j] = dot(&x[row * fan_in..(row + 1) * fan_in], a);
                }
            }
            for (k, &row) in rows.iter().enumerate() {
                // SAFETY: `row < num_rows`, so the slice is inside `y`; every row is in
                // exactly one task (sequences cover disjoint rows), so no two tasks
                // touch the same row, and `y` outlives `for_each`.
                let y = unsafe {
                    std::slice::from_raw_parts_mut(out.get().add(row * fan_out), fan_out)
                };
                for j in 0..r {
                    let t = xa[k * r + j];
                    for (y, b) in y
                        .iter_mut()
                        .zip(&p.scaled_bt[j * fan_out..(j + 1) * fan_out])
                    {
                        *y += t * b;
                    }
                }
            }
        });
    }
}

/// `y`'s base pointer, shared by the tasks of [`LoraRows::apply`] (each writes its own rows).
struct RowsPtr(*mut f32);

impl RowsPtr {
    /// Through a method, so closures capture the `Sync` wrapper, not the raw pointer.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the tasks write disjoint rows (see `LoraRows::apply`).
unsafe impl Sync for RowsPtr {}
unsafe impl Send for RowsPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_parse_and_others_do_not() {
        assert_eq!(
            parse_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, Target::Q, 0))
        );
        assert_eq!(
            parse_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.default.weight"),
            Some((12, Target::Down, 1))
        );
        assert_eq!(parse_name("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(
            parse_name("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"),
            None,
            "q_proj lives in self_attn"
        );
        assert_eq!(
            parse_name("base_model.model.model.layers.0.self_attn.q_proj.lora_embedding_A"),
            None
        );
    }

    /// A row's update is bit-identical alone and inside a batch of several adapters
    /// (groups larger than one task, rows without an adapter between them).
    #[test]
    fn grouped_updates_do_not_depend_on_the_batch() {
        let (fan_in, fan_out, rank) = (24, 12, 4);
        let pair = |seed: usize| Pair {
            a: (0..rank * fan_in)
                .map(|i| ((i * 7 + seed) % 11) as f32 / 10.0 - 0.5)
                .collect(),
            scaled_bt: (0..rank * fan_out)
                .map(|i| ((i * 5 + seed) % 7) as f32 / 10.0 - 0.3)
                .collect(),
        };
        let adapter = |seed| {
            let mut layer: [Option<Pair>; 7] = Default::default();
            layer[Target::Up.index()] = Some(pair(seed));
            LoraAdapter {
                rank,
                scale: 1.0,
                layers: vec![layer],
            }
        };
        let (a, b) = (adapter(1), adapter(2));
        let rows = 40;
        let x: Vec<f32> = (0..rows * fan_in)
            .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let y0: Vec<f32> = (0..rows * fan_out).map(|i| (i % 9) as f32 / 9.0).collect();
        let mut batched = y0.clone();
        // Rows 0..25 and 33..40 on `a` (two tasks and a bit), 25..30 on `b`, 30..33 base.
        LoraRows::new(
            rows,
            [
                (0..25, Some(&a)),
                (25..30, Some(&b)),
                (30..33, None),
                (33..40, Some(&a)),
            ],
        )
        .apply(0, Target::Up, &x, &mut batched);
        for row in 0..rows {
            let which = match row {
                25..30 => Some(&b),
                30..33 => None,
                _ => Some(&a),
            };
            let mut alone = y0[row * fan_out..(row + 1) * fan_out].to_vec();
            LoraRows::new(1, [(0..1, which)]).apply(
                0,
                Target::Up,
                &x[row * fan_in..(row + 1) * fan_in],
                &mut alone,
            );
            assert_eq!(
                &batched[row * fan_out..(row + 1) * fan_out],
                &alone[..],
                "row {row}"
            );
            if which.is_some() {
                assert_ne!(
                    alone,
                    y0[row * fan_out..(row + 1) * fan_out],
                    "row {row} is updated"
                );
            }
        }
    }

    /// The batched update of a row equals the merged weight's product (to rounding), and
    /// rows without an adapter are left alone.
    #[test]
    fn row_update_matches_the_merged_weight() {
        let (fan_in, fan_out, rank) = (16, 8, 2);
        let a: Vec<f32> = (0..rank * fan_in)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let b: Vec<f32> = (0..fan_out * rank)
            .map(|i| ((i * 5 % 7) as f32 - 3.0) / 10.0)
            .collect();
        let scale = 0.5;
        let mut scaled_bt = vec![0.0; rank * fan_out];
        for o in 0..fan_out {
            for j in 0..rank {
                scaled_bt[j * fan_out + o] = b[o * rank + j] * scale;
            }
        }
        let a_copy = a.clone();
        let mut layer: [Option<Pair>; 7] = Default::default();
        layer[Target::V.index()] = Some(Pair { a, scaled_bt });
        let adapter = LoraAdapter {
            rank,
            scale,
            layers: vec![layer],
        };
        let w: Vec<f32> = (0..fan_out * fan_in)
            .map(|i| (i % 13) as f32 / 13.0)
            .collect();
        let x: Vec<f32> = (0..2 * fan_in).map(|i| (i % 5) as f32 - 2.0).collect();
        let base = |x: &[f32], w: &[f32]| -> Vec<f32> {
            w.chunks_exact(fan_in)
                .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
                .collect()
        };
        let mut y: Vec<f32> = x.chunks_exact(fan_in).flat_map(|r| base(r, &w)).collect();
        let rows = LoraRows::new(2, [(0..1, Some(&adapter)), (1..2, None)]);
        rows.apply(0, Target::V, &x, &mut y);
        // W + scale · B A, written out.
        let mut merged = w.clone();
        for o in 0..fan_out {
            for i in 0..fan_in {
                let ba: f32 = (0..rank)
                    .map(|j| b[o * rank + j] * a_copy[j * fan_in + i])
                    .sum();
                merged[o * fan_in + i] += scale * ba;
            }
        }
        let want = base(&x[..fan_in], &merged);
        for (got, want) in y[..fan_out].iter().zip(&want) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        assert_eq!(
            &y[fan_out..],
            &base(&x[fan_in..], &w)[..],
            "base row untouched"
        );
        // Other targets of the adapter are absent: no change.
        let mut y2 = y.clone();
        rows.apply(0, Target::Q, &x, &mut y2);
        assert_eq!(y2, y);
    }
}
