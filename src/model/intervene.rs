//! Interventions as data: what to write at which rows / positions / heads / indices of a hook.
//! Applied with tensor ops (a 0/1 mask), so they run on any device.

use super::hooks::{BlockSite, HookPoint};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// What to write at the selected entries.
#[derive(Clone, Debug)]
pub enum Action {
    Zero,
    Constant(f32),
    /// One value per selected index of the last axis (per-neuron means, for example).
    Values(Vec<f32>),
    Scale(f32),
    Clamp {
        min: Option<f32>,
        max: Option<f32>,
    },
    /// Add `vector` (one value per selected index of the last axis).
    Add(Vec<f32>),
    /// Overwrite with a tensor broadcastable to the hook's shape (another run's activation).
    Patch(Tensor),
    /// Replace each batch row by another row of the same batch (seeded permutation).
    Resample {
        seed: u64,
    },
}

/// An intervention at one hook point. `None` selects everything on that axis.
#[derive(Clone, Debug)]
pub struct Intervention {
    pub hook: HookPoint,
    pub rows: Option<Vec<usize>>,
    /// Positions; negative counts from the end (-1 = last).
    pub positions: Option<Vec<i64>>,
    pub heads: Option<Vec<usize>>,
    /// Indices of the last axis: neurons, d_model or d_head dimensions, key positions.
    pub index: Option<Vec<usize>>,
    pub action: Action,
}

/// Axis numbers of a hook's tensor: (position, head, last).
fn axes(hook: HookPoint, rank: usize) -> (Option<usize>, Option<usize>, usize) {
    match hook.site() {
        Some(BlockSite::AttnScores | BlockSite::Pattern) => (Some(2), Some(1), 3),
        Some(s) if s.has_heads() => (Some(1), Some(2), 3),
        _ => (Some(1), None, rank - 1),
    }
}

/// A 0/1 vector of length `n` reshaped to lie along `axis` of a rank-`rank` tensor.
fn axis_mask(sel: &[usize], n: usize, axis: usize, rank: usize, dev: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; n];
    for &i in sel {
        if i >= n {
            bail!("index {i} out of range (axis has {n} entries)");
        }
        m[i] = 1.0;
    }
    let mut shape = vec![1usize; rank];
    shape[axis] = n;
    Ok(Tensor::from_vec(m, shape, dev)?)
}

impl Intervention {
    /// A whole-hook intervention (every row, position, head and index).
    pub fn new(hook: HookPoint, action: Action) -> Intervention {
        Intervention { hook, rows: None, positions: None, heads: None, index: None, action }
    }
    pub fn neurons(mut self, idx: Vec<usize>) -> Self {
        self.index = Some(idx);
        self
    }
    pub fn positions(mut self, pos: Vec<i64>) -> Self {
        self.positions = Some(pos);
        self
    }

    /// The selection mask (1 = selected) of `x`'s full shape as u8; `None` when everything is selected.
    fn mask(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let dims = x.dims().to_vec();
        let rank = dims.len();
        let dev = x.device();
        let (pos_ax, head_ax, last_ax) = axes(self.hook, rank);
        let mut parts = Vec::new();
        if let Some(r) = &self.rows {
            parts.push(axis_mask(r, dims[0], 0, rank, dev)?);
        }
        if let (Some(p), Some(ax)) = (&self.positions, pos_ax) {
            let n = dims[ax] as i64;
            let mut idx = Vec::new();
            for &q in p {
                let i = if q < 0 { n + q } else { q };
                if i < 0 || i >= n {
                    bail!("position {q} out of range for {} positions at {}", n, self.hook);
                }
                idx.push(i as usize);
            }
            parts.push(axis_mask(&idx, dims[ax], ax, rank, dev)?);
        }
        if let (Some(h), Some(ax)) = (&self.heads, head_ax) {
            parts.push(axis_mask(h, dims[ax], ax, rank, dev)?);
        }
        if let Some(i) = &self.index {
            parts.push(axis_mask(i, dims[last_ax], last_ax, rank, dev)?);
        }
        let mut it = parts.into_iter();
        let Some(mut m) = it.next() else { return Ok(None) };
        for p in it {
            m = m.broadcast_mul(&p)?;
        }
        Ok(Some(m.broadcast_as(x.shape())?.to_dtype(DType::U8)?))
    }

    /// Values given per selected index spread over the full last axis.
    fn spread(&self, vals: &[f32], x: &Tensor) -> Result<Tensor> {
        let rank = x.rank();
        let n = x.dims()[rank - 1];
        let mut full = vec![0f32; n];
        match &self.index {
            Some(idx) => {
                if idx.len() != vals.len() {
                    bail!("{} values given for {} selected indices at {}", vals.len(), idx.len(), self.hook);
                }
                for (&i, &v) in idx.iter().zip(vals) {
                    full[i] = v;
                }
            }
            None => {
                if vals.len() != n {
                    bail!("{} values given for an axis of {} at {}", vals.len(), n, self.hook);
                }
                full.copy_from_slice(vals);
            }
        }
        let mut shape = vec![1usize; rank];
        shape[rank - 1] = n;
        Ok(Tensor::from_vec(full, shape, x.device())?)
    }

    /// Apply to an activation; returns the new activation.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mask = self.mask(x)?;
        // The selected entries become exactly `target` (a select, not arithmetic).
        let set = |target: &Tensor| -> Result<Tensor> {
            let target = target.broadcast_as(x.shape())?;
            Ok(match &mask {
                Some(m) => m.where_cond(&target, x)?,
                None => target.contiguous()?,
            })
        };
        Ok(match &self.action {
            Action::Zero => set(&Tensor::zeros((), DType::F32, x.device())?)?,
            Action::Constant(c) => set(&Tensor::new(*c, x.device())?)?,
            Action::Values(v) => set(&self.spread(v, x)?)?,
            Action::Patch(src) => set(&src.to_dtype(DType::F32)?)?,
            Action::Scale(s) => set(&(x * (*s as f64))?)?,
            Action::Clamp { min, max } => {
                let mut y = x.clone();
                if let Some(lo) = min {
                    y = y.maximum(*lo)?;
                }
                if let Some(hi) = max {
                    y = y.minimum(*hi)?;
                }
                set(&y)?
            }
            Action::Add(v) => set(&x.broadcast_add(&self.spread(v, x)?)?)?,
            Action::Resample { seed } => {
                let b = x.dims()[0];
                let mut perm: Vec<u32> = (0..b as u32).collect();
                perm.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(*seed));
                let idx = Tensor::from_vec(perm, b, x.device())?;
                set(&x.index_select(&idx, 0)?)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_neuron_at_positions() -> Result<()> {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)?.reshape((2, 3, 4))?;
        let iv = Intervention::new(HookPoint::Block(0, BlockSite::Post), Action::Constant(-1.0))
            .neurons(vec![2])
            .positions(vec![-1]);
        let y = iv.apply(&x)?.to_vec3::<f32>()?;
        assert_eq!(y[0][2], vec![8.0, 9.0, -1.0, 11.0]);
        assert_eq!(y[1][2], vec![20.0, 21.0, -1.0, 23.0]);
        assert_eq!(y[0][1], vec![4.0, 5.0, 6.0, 7.0]);
        Ok(())
    }

    #[test]
    fn values_spread_over_selected_neurons() -> Result<()> {
        let x = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu)?;
        let iv =
            Intervention::new(HookPoint::Block(0, BlockSite::Post), Action::Values(vec![5.0, 7.0])).neurons(vec![1, 3]);
        assert_eq!(iv.apply(&x)?.to_vec3::<f32>()?[0][1], vec![0.0, 5.0, 0.0, 7.0]);
        Ok(())
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let x = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
        let iv = Intervention::new(HookPoint::Block(0, BlockSite::Post), Action::Zero).neurons(vec![9]);
        assert!(iv.apply(&x).is_err());
    }
}
