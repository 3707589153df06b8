//! Weight upload: a host [`Llama`](crate::Llama)'s linear layers copied to a
//! candle device as [`QMatMul`]s. Quantized GGUF blocks are copied as they are
//! and stay quantized on the device (candle's quantized matmul kernels); dense
//! (`f32`) weights become plain tensors (cuBLAS on CUDA). Stacked q/k/v and
//! gate/up projections stay stacked: one matmul, split by width. Costs: one
//! host→device copy per weight at start-up; the host copy is then dropped by
//! the runner.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::Result;
use crate::llama::{Fused, Layer, Linear, Weight};

/// `x @ W^T (+ b)` with the weight on the device.
#[derive(Debug, Clone)]
pub(super) struct DeviceLinear {
    w: QMatMul,
    b: Option<Tensor>,
}

impl DeviceLinear {
    pub(super) fn new(l: &Linear, dev: &Device) -> Result<Self> {
        Ok(Self {
            w: device_weight(&l.w, dev)?,
            b: l.b
                .as_ref()
                .map(|b| Tensor::from_slice(b, b.len(), dev))
                .transpose()?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// A quantized (or dense) weight copied to `dev`; quantized blocks stay quantized.
fn device_weight(w: &Weight, dev: &Device) -> Result<QMatMul> {
    let q = match w {
        Weight::Quant(m) => qtensor(&m.raw(), m.format().ggml(), (m.rows(), m.cols()), dev)?,
        Weight::Candle(QMatMul::QTensor(t)) => {
            qtensor(&t.data()?, t.dtype(), t.shape().dims2()?, dev)?
        }
        Weight::Candle(QMatMul::Tensor(t)) => return Ok(QMatMul::Tensor(t.to_device(dev)?)),
        Weight::Candle(QMatMul::TensorF16(t)) => return Ok(QMatMul::TensorF16(t.to_device(dev)?)),
    };
    // Dense (f32/f16) weights become plain tensors: cuBLAS rather than a vec-dot.
    Ok(QMatMul::from_arc(Arc::new(q))?)
}

/// A `QTensor` of raw GGUF blocks on `dev`.
fn qtensor(
    bytes: &[u8],
    dtype: GgmlDType,
    (n, k): (usize, usize),
    dev: &Device,
) -> Result<QTensor> {
    Ok(QTensor::new(
        QStorage::from_data(Cow::Borrowed(bytes), dev, dtype)?,
        (n, k),
    )?)
}

/// Projections of one input (q/k/v, gate/up): one stacked matmul split by width,
/// or one matmul each.
#[derive(Debug, Clone)]
pub(super) enum DeviceProjections {
    Stacked {
        lin: DeviceLinear,
        widths: Vec<usize>,
    },
    Separate(Vec<DeviceLinear>),
}

impl DeviceProjections {
    fn new(f: &Fused, dev: &Device) -> Result<Self> {
        Ok(match f {
            Fused::Stacked { w, widths, biases } => {
                let b = if biases.iter().any(Option::is_some) {
                    let mut all = Vec::with_capacity(widths.iter().sum());
                    for (b, &n) in biases.iter().zip(widths) {
                        match b {
                            Some(b) => all.extend_from_slice(b),
                            None => all.extend(std::iter::repeat_n(0.0, n)),
                        }
                    }
                    Some(Tensor::from_vec(all, widths.iter().sum::<usize>(), dev)?)
                } else {
                    None
                };
                let lin = DeviceLinear {
                    w: device_weight(&Weight::Quant(w.clone()), dev)?,
                    b,
                };
                DeviceProjections::Stacked {
                    lin,
                    widths: widths.clone(),
                }
            }
            Fused::Separate(parts) => DeviceProjections::Separate(
                parts
                    .iter()
                    .map(|p| DeviceLinear::new(p, dev))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// Each part's `[T, width]` output, contiguous.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            DeviceProjections::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            DeviceProjections::Stacked { lin, widths } => {
                let y = lin.forward(x)?;
                let mut off = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(1, off, w)?.contiguous()?;
                        off += w;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }
}

/// One decoder layer's weights on the device.
#[derive(Debug, Clone)]
pub(super) struct DeviceLayer {
    /// RMSNorm weights `[hidden]`.
    pub(super) attn_norm: Tensor,
    /// q, k, v.
    pub(super) qkv: DeviceProjections,
    pub(super) o: DeviceLinear,
    pub(super) ffn_norm: Tensor,
    /// gate, up.
    pub(super) gate_up: DeviceProjections,
    pub(super) down: DeviceLinear,
}

impl DeviceLayer {
    /// Copies one decoder layer's weights to `dev`.
    ///
    /// # Errors
    /// [`crate::Error::Candle`] when the device cannot hold them.
    pub(super) fn new(l: &Layer, dev: &Device) -> Result<Self> {
        let vec = |v: &[f32]| Tensor::from_slice(v, v.len(), dev);
        Ok(Self {
            attn_norm: vec(&l.attn_norm)?,
            qkv: DeviceProjections::new(&l.qkv, dev)?,
            o: DeviceLinear::new(&l.o, dev)?,
            ffn_norm: vec(&l.ffn_norm)?,
            gate_up: DeviceProjections::new(&l.gate_up, dev)?,
            down: DeviceLinear::new(&l.down, dev)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::super::{max_abs_diff, values};
    use super::*;
    use crate::qmatmul::QFormat;

    fn random_linear(fmt: GgmlDType, n: usize, k: usize, seed: u64) -> Linear {
        let vals: Vec<f32> = (0..n * k)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let w = Tensor::from_vec(vals, (n, k), &Device::Cpu).unwrap();
        Linear::new(Arc::new(QTensor::quantize(&w, fmt).unwrap()), None).unwrap()
    }

    /// Both paths quantize activations to 8 bits (candle: Q8_1 for Q4_1 weights as
    /// ours, Q8_0 for Q8_0 weights where ours keeps f32 scales), so each is compared
    /// with the exact product of the dequantized weights: the device linear must be
    /// as close to it as Candela's kernels are.
    #[test]
    fn device_linear_is_as_exact_as_the_cpu_kernels() {
        let (m, n, k) = (3, 64, 256);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
        let formats = QFormat::ALL.map(QFormat::ggml);
        for fmt in formats.into_iter().chain([GgmlDType::F32]) {
            let lin = random_linear(fmt, n, k, 7);
            let cpu = lin.forward(&x, m).unwrap();
            let dev = values(
                &DeviceLinear::new(&lin, &Device::Cpu)
                    .unwrap()
                    .forward(&xt)
                    .unwrap(),
            );
            let dense = match &lin.w {
                Weight::Quant(q) => qtensor(&q.raw(), q.format().ggml(), (n, k), &Device::Cpu)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap(),
                Weight::Candle(w) => w.dequantize_f16().unwrap().to_dtype(DType::F32).unwrap(),
            };
            let exact = values(&xt.matmul(&dense.t().unwrap()).unwrap());
            let err = |y: &[f32]| max_abs_diff(y, &exact);
            let scale = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let (e_cpu, e_dev) = (err(&cpu), err(&dev));
            assert!(
                e_dev <= 1.5 * e_cpu.max(2e-3 * scale),
                "{fmt:?}: device error {e_dev}, CPU kernels {e_cpu}, outputs up to {scale}"
            );
        }
    }
}
