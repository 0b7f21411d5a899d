//! Fused autograd ops and optimizer step for MTP training (`train`):
//! candle composes these from generic tensor ops, which for the draft
//! vocabulary's T x K logits and the head's ~47M weights means many passes
//! over tens or hundreds of MB, and work no one needs.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Shape, Storage, Tensor, Var};
use rayon::prelude::*;

/// The contiguous f32 values that layout `l` gives of storage `s`.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("mtp training: a tensor not contiguous") };
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// The contiguous f32 values of `t` (on the CPU), to `f`.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(cs) => Ok(f(values(cs, l)?)),
        _ => candle_core::bail!("mtp training: a tensor not on the CPU"),
    }
}

/// Rows (T x d) times the frozen output rows (K x d) transposed, as an
/// autograd op whose backward gives the rows' gradient only. Through
/// candle's matmul the backward also computes the gradient of the frozen
/// matrix (as much work again as the rows': a tenth of a training step's
/// products) and adds it into a K x d buffer no one reads. The same
/// products in both directions, so the same bits.
pub struct FrozenProj(pub Tensor);

impl CustomOp1 for FrozenProj {
    fn name(&self) -> &'static str {
        "frozen-output-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (t, d) = l.shape().dims2()?;
        let y = Tensor::from_slice(values(s, l)?, (t, d), &Device::Cpu)?.matmul(&self.0.t()?)?;
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), y.shape().clone()))
    }

    fn bwd(&self, _rows: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.0)?))
    }
}

/// Max and log of the sum of exp(z - max) of one row.
fn log_sum_exp(z: &[f32]) -> (f32, f32) {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (m, z.iter().map(|&x| (x - m).exp()).sum::<f32>().ln())
}

/// Per row of logits z (T x K) and a target distribution p (T x K, no
/// gradient): the cross-entropy -sum_k p_k log softmax(z)_k, taken as
/// logsumexp(z) - sum_k p_k z_k (the p sum to 1); gradient
/// g (softmax(z) - p). One pass over the rows each way, where
/// log_softmax, mul and sum and their backward ops make a dozen.
pub struct SoftCrossEntropy;

impl CustomOp2 for SoftCrossEntropy {
    fn name(&self) -> &'static str {
        "soft-cross-entropy"
    }

    fn cpu_fwd(&self, zs: &CpuStorage, zl: &Layout, ps: &CpuStorage, pl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (t, k) = zl.shape().dims2()?;
        if pl.shape().dims2()? != (t, k) {
            candle_core::bail!("soft-cross-entropy: targets {:?} for logits {:?}", pl.shape(), zl.shape());
        }
        let (z, p) = (values(zs, zl)?, values(ps, pl)?);
        let out: Vec<f32> = z
            .par_chunks(k)
            .zip(p.par_chunks(k))
            .map(|(z, p)| {
                let (m, ls) = log_sum_exp(z);
                m + ls - z.iter().zip(p).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(t)))
    }

    fn bwd(&self, z: &Tensor, p: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (t, k) = z.dims2()?;
        let g = grad.to_vec1::<f32>()?;
        let mut out = vec![0f32; t * k];
        with_values(z, |z| {
            with_values(p, |p| {
                out.par_chunks_mut(k).zip(z.par_chunks(k)).zip(p.par_chunks(k)).zip(&g).for_each(|(((o, z), p), &g)| {
                    let (m, ls) = log_sum_exp(z);
                    for ((o, &z), &p) in o.iter_mut().zip(z).zip(p) {
                        *o = g * ((z - m - ls).exp() - p);
                    }
                })
            })
        })??;
        Ok((Some(Tensor::from_vec(out, (t, k), z.device())?), None))
    }
}

/// AdamW without weight decay (the training's), as candle's `AdamW`
/// computes it but in one pass over each weight, its gradient and its two
/// moments: candle's runs 14 tensor ops, each a new tensor the size of the
/// weight (a Qwen 1.5B head: ~47M weights, ~190 MB a tensor).
pub struct Adam {
    vars: Vec<(Var, Vec<f32>, Vec<f32>)>,
    step_t: i32,
    pub lr: f64,
}

/// candle's `ParamsAdamW` defaults.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Elements per parallel piece of an update.
const ADAM_CHUNK: usize = 1 << 16;

impl Adam {
    pub fn new(vars: Vec<Var>, lr: f64) -> Adam {
        let vars = vars
            .into_iter()
            .map(|v| {
                let n = v.elem_count();
                (v, vec![0f32; n], vec![0f32; n])
            })
            .collect();
        Adam { vars, step_t: 0, lr }
    }

    /// One step on the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.step_t += 1;
        let (b1, b2) = (BETA1 as f32, BETA2 as f32);
        let (c1, c2) = ((1.0 - BETA1) as f32, (1.0 - BETA2) as f32);
        let scale_m = (1.0 / (1.0 - BETA1.powi(self.step_t))) as f32;
        let scale_v = (1.0 / (1.0 - BETA2.powi(self.step_t))) as f32;
        let (lr, eps) = (self.lr as f32, EPS as f32);
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let mut next = with_values(var.as_tensor(), <[f32]>::to_vec)?;
            with_values(&g.contiguous()?, |g| {
                next.par_chunks_mut(ADAM_CHUNK).zip(m.par_chunks_mut(ADAM_CHUNK)).zip(v.par_chunks_mut(ADAM_CHUNK)).zip(g.par_chunks(ADAM_CHUNK)).for_each(
                    |(((w, m), v), g)| {
                        for i in 0..w.len() {
                            m[i] = m[i] * b1 + g[i] * c1;
                            v[i] = v[i] * b2 + g[i] * g[i] * c2;
                            w[i] -= m[i] * scale_m / ((v[i] * scale_v).sqrt() + eps) * lr;
                        }
                    },
                )
            })?;
            var.set(&Tensor::from_vec(next, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;
    use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

    /// A few steps on a small problem against candle's AdamW (no decay).
    #[test]
    fn adam_matches_candles_adamw() {
        let dev = Device::Cpu;
        let start: Vec<f32> = (0..40).map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0).collect();
        let x = Tensor::from_vec((0..40).map(|i| ((i * 11 % 7) as f32 / 3.0) - 1.0).collect::<Vec<_>>(), (4, 10), &dev).unwrap();
        let run = |fused: bool| {
            let w = Var::from_vec(start.clone(), (10, 4), &dev).unwrap();
            let mut ours = Adam::new(vec![w.clone()], 0.05);
            let mut theirs = AdamW::new(vec![w.clone()], ParamsAdamW { lr: 0.05, weight_decay: 0.0, ..Default::default() }).unwrap();
            for _ in 0..5 {
                let loss = x.matmul(w.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
                if fused {
                    ours.backward_step(&loss).unwrap();
                } else {
                    theirs.backward_step(&loss).unwrap();
                }
            }
            w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (want, got) = (run(false), run(true));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5, "{a} against {b}");
        }
        assert!(want.iter().zip(&start).any(|(a, b)| (a - b).abs() > 0.1), "the weights moved");
    }

    /// Value and gradient against candle's own ops.
    #[test]
    fn soft_cross_entropy_matches_candles_ops() {
        let (t, k) = (5, 37);
        let dev = Device::Cpu;
        let zv: Vec<f32> = (0..t * k).map(|i| ((i * 7919 % 113) as f32 / 20.0) - 2.5).collect();
        let pl = Tensor::from_vec((0..t * k).map(|i| ((i * 104729 % 97) as f32 / 30.0) - 1.0).collect::<Vec<_>>(), (t, k), &dev).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&pl).unwrap();
        let run = |fused: bool| {
            let z = Var::from_vec(zv.clone(), (t, k), &dev).unwrap();
            let w = Tensor::arange(1f32, 1.0 + t as f32, &dev).unwrap();
            let ce = if fused {
                z.as_tensor().apply_op2(&p, SoftCrossEntropy).unwrap()
            } else {
                let logq = candle_nn::ops::log_softmax(z.as_tensor(), D::Minus1).unwrap();
                (p.mul(&logq).unwrap().sum(D::Minus1).unwrap() * -1.0).unwrap()
            };
            // rows weighed differently, so each row's gradient is checked
            let loss = ce.mul(&w).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            (ce.to_vec1::<f32>().unwrap(), g.get(z.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (want, want_g) = run(false);
        let (got, got_g) = run(true);
        for (a, b) in got.iter().zip(&want).chain(got_g.iter().zip(&want_g)) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} against {b}");
        }
        assert!(want_g.iter().any(|&x| x.abs() > 1e-3), "a gradient to compare");
    }
}
