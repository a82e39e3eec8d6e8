//! One batch's sums when the activations are on a GPU: per-neuron Σx and Σx² reduced in f64 on the
//! device, each layer pair's Σxy one device matmul (f32 with TF32 off, TF32 only when asked, or
//! f64), copied to the host and added into the exact fixed-point sums while the device forms the
//! next product. Per-batch fixed-point adds keep the sums independent of shard and tile cuts, as
//! on the CPU.

use super::{add_fixed, add_fixed_f64, Marginals, Products, Sums};
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::thread::ScopedJoinHandle;

/// Add one batch (the caller has counted its tokens).
pub(super) fn add(
    sums: &mut Sums,
    xa: &BTreeMap<usize, Tensor>,
    xb: &BTreeMap<usize, Tensor>,
    products: Products,
) -> Result<()> {
    for (l, m) in sums.a.iter_mut() {
        marginals(m, &xa[l])?;
    }
    for (l, m) in sums.b.iter_mut() {
        marginals(m, &xb[l])?;
    }
    let cast = |m: &BTreeMap<usize, Tensor>| -> Result<BTreeMap<usize, Tensor>> {
        m.iter().map(|(l, x)| Ok((*l, x.to_dtype(products.dtype())?))).collect()
    };
    let (ca, cb) = (cast(xa)?, cast(xb)?);
    let _tf32 = Tf32::allow(products == Products::Tf32);
    std::thread::scope(|s| -> Result<()> {
        let mut pending: Option<ScopedJoinHandle<Result<()>>> = None;
        for ((la, lb), acc) in sums.cross.iter_mut() {
            let c = ca[la].t()?.matmul(&cb[lb])?.to_device(&Device::Cpu)?;
            if let Some(p) = pending.take() {
                join(p)?;
            }
            pending = Some(s.spawn(move || add_fixed(acc, &c)));
        }
        pending.map(join).transpose()?;
        Ok(())
    })
}

fn join(h: ScopedJoinHandle<Result<()>>) -> Result<()> {
    h.join().map_err(|_| anyhow!("the fixed-point accumulation thread panicked"))?
}

/// Σx and Σx² over the tokens of a batch [tokens, d], formed in f64, then added exactly.
fn marginals(m: &mut Marginals, x: &Tensor) -> Result<()> {
    let x = x.to_dtype(DType::F64)?;
    add_fixed_f64(&mut m.sum, &x.sum(0)?.to_vec1::<f64>()?);
    add_fixed_f64(&mut m.sq, &x.sqr()?.sum(0)?.to_vec1::<f64>()?);
    Ok(())
}

/// candle's process-wide switch for TF32 in f32 matmuls, set while this lives and restored after
/// (the forward passes between batches run with the caller's setting).
struct Tf32(bool);

impl Tf32 {
    fn allow(on: bool) -> Tf32 {
        let before = candle_core::cuda::gemm_reduced_precision_f32();
        candle_core::cuda::set_gemm_reduced_precision_f32(on);
        Tf32(before)
    }
}

impl Drop for Tf32 {
    fn drop(&mut self) {
        candle_core::cuda::set_gemm_reduced_precision_f32(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{value, Shape};
    use super::*;

    fn randn(t: usize, d: usize, seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..t * d).map(|_| Normal::new(0.5f32, 1.0).unwrap().sample(&mut rng)).collect();
        Tensor::from_vec(v, (t, d), &Device::Cpu).unwrap()
    }

    /// The device path run on CPU tensors gives the host path's sums: cross products bit for bit
    /// (the same matmul, added exactly in another order), marginals to f64 rounding.
    #[test]
    fn device_path_equals_the_host_path() {
        let tf32_before = candle_core::cuda::gemm_reduced_precision_f32();
        let shape = Shape { la: 2, da: 24, lb: 3, db: 40 };
        let pairs = [(0, 1), (1, 0), (1, 2)];
        let (mut host, mut dev) = (Sums::new(shape, &pairs), Sums::new(shape, &pairs));
        for batch in 0..3u64 {
            let t = 50 + 7 * batch as usize;
            let xa: BTreeMap<usize, Tensor> = (0..2).map(|l| (l, randn(t, 24, batch * 10 + l as u64))).collect();
            let xb: BTreeMap<usize, Tensor> = (0..3).map(|l| (l, randn(t, 40, 100 + batch * 10 + l as u64))).collect();
            let products = [Products::F32, Products::F64, Products::Tf32][batch as usize];
            host.add(&xa, &xb, products).unwrap();
            dev.count += t as u64;
            add(&mut dev, &xa, &xb, products).unwrap();
        }
        assert_eq!(host.count, dev.count);
        assert!(host.cross == dev.cross);
        for (h, d) in host.a.values().chain(host.b.values()).zip(dev.a.values().chain(dev.b.values())) {
            for (x, y) in h.sum.iter().chain(&h.sq).zip(d.sum.iter().chain(&d.sq)) {
                let (x, y) = (value(*x), value(*y));
                assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
        assert_eq!(candle_core::cuda::gemm_reduced_precision_f32(), tf32_before, "the TF32 switch is restored");
    }
}
