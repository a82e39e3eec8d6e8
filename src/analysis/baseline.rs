//! Baselines for neuron correlations: what model B's neurons are replaced by so that a chance
//! level of "best match" can be measured — random mixtures of B's neurons (Gaussian with unit-norm
//! rows, as the Universal Neurons study; or a Haar-random orthogonal basis), GELU'd Gaussian noise,
//! or B's tokens shuffled. All seeded, and drawn per batch from the batch's position in the
//! dataset so that shards see the same numbers as a single run.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Model B as it is.
    #[default]
    None,
    /// Per layer of B, a fixed N(0,1) matrix with unit-norm rows mixing its neurons (the study's
    /// "random rotation", which is not orthogonal).
    Rotation,
    /// Per layer of B, a Haar-random orthogonal matrix mixing its neurons.
    Haar,
    /// B replaced by gelu(N(0,1)) noise of the same shape.
    Gaussian,
    /// B's kept tokens shuffled within each batch.
    Permutation,
}

impl Baseline {
    pub fn is_random(&self) -> bool {
        *self != Baseline::None
    }
}

/// A generator for one purpose, layer and batch: independent streams of one seed.
fn rng(seed: u64, purpose: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(stream);
    r
}

fn normals(r: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.sample::<f64, _>(StandardNormal)).collect()
}

/// The study's mixing matrix for one layer: rows of N(0,1) normalised to unit length; returned as
/// M [d, d] with y' = y · M (column j = the unit mixture that makes new neuron j).
pub fn gaussian_mixing(d: usize, seed: u64, layer: usize) -> Result<Tensor> {
    let mut g = normals(&mut rng(seed, 1, layer as u64), d * d);
    for row in g.chunks_exact_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(Tensor::from_vec(g, (d, d), &Device::Cpu)?.t()?.contiguous()?.to_dtype(DType::F32)?)
}

/// A Haar-random orthogonal [d, d] matrix: Gram–Schmidt (block classical, twice) of a Gaussian
/// matrix's columns, which is the QR factor with a positive diagonal and so exactly Haar.
pub fn haar(d: usize, seed: u64, layer: usize) -> Result<Tensor> {
    const BLOCK: usize = 128;
    let g = Tensor::from_vec(normals(&mut rng(seed, 2, layer as u64), d * d), (d, d), &Device::Cpu)?;
    let mut q: Option<Tensor> = None;
    for start in (0..d).step_by(BLOCK) {
        let k = BLOCK.min(d - start);
        let mut b = g.narrow(1, start, k)?.contiguous()?;
        for _ in 0..2 {
            if let Some(q) = &q {
                b = (&b - q.matmul(&q.t()?.matmul(&b)?)?)?;
            }
            b = orthonormal_columns(&b)?;
        }
        q = Some(match q {
            Some(q) => Tensor::cat(&[&q, &b], 1)?,
            None => b,
        });
    }
    Ok(q.expect("d > 0").to_dtype(DType::F32)?)
}

/// Modified Gram–Schmidt of the columns of a [d, k] f64 matrix.
fn orthonormal_columns(b: &Tensor) -> Result<Tensor> {
    let (d, k) = b.dims2()?;
    let mut cols: Vec<Vec<f64>> = b.t()?.contiguous()?.to_vec2()?;
    for c in 0..k {
        for p in 0..c {
            let dot: f64 = cols[p].iter().zip(&cols[c]).map(|(x, y)| x * y).sum();
            let (before, after) = cols.split_at_mut(c);
            after[0].iter_mut().zip(&before[p]).for_each(|(y, x)| *y -= dot * x);
        }
        let norm = cols[c].iter().map(|x| x * x).sum::<f64>().sqrt();
        cols[c].iter_mut().for_each(|x| *x /= norm);
    }
    Ok(Tensor::from_vec(cols.concat(), (k, d), &Device::Cpu)?.t()?.contiguous()?)
}

/// gelu(N(0,1)) noise [t, d] for one layer of one batch.
pub fn gaussian_noise(t: usize, d: usize, seed: u64, batch: u64, layer: usize) -> Result<Tensor> {
    let mut r = rng(seed, 3 + layer as u64, batch);
    let v: Vec<f32> =
        (0..t * d).map(|_| crate::model::kernels::gelu_new_1(r.sample::<f32, _>(StandardNormal))).collect();
    Ok(Tensor::from_vec(v, (t, d), &Device::Cpu)?)
}

/// A random permutation of `t` kept tokens for one batch (the same for every layer of B).
pub fn permutation(t: usize, seed: u64, batch: u64) -> Vec<u32> {
    use rand::seq::SliceRandom;
    let mut p: Vec<u32> = (0..t as u32).collect();
    p.shuffle(&mut rng(seed, 0, batch));
    p
}
