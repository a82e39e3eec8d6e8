//! How often each neuron fires (activation > 0) at each position of a row, and the mutual
//! information between firing and position (the Universal Neurons study's position-neuron score).

use crate::store::arrays::{Arrays, ArraysFile};
use anyhow::{ensure, Result};

/// Firing counts per (position, neuron) of one hook.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionFiring {
    width: usize,
    /// [position][neuron]
    fires: Vec<u32>,
    /// Positions counted at each position index.
    at: Vec<u64>,
}

impl PositionFiring {
    pub fn new(ctx: usize, width: usize) -> PositionFiring {
        PositionFiring { width, fires: vec![0; ctx * width], at: vec![0; ctx] }
    }

    /// Rows of `width` activations, one per entry of `positions` (each row's position index).
    pub fn add(&mut self, x: &[f32], positions: &[usize]) {
        let w = self.width;
        for (r, &p) in positions.iter().enumerate() {
            self.at[p] += 1;
            for (c, v) in self.fires[p * w..(p + 1) * w].iter_mut().zip(&x[r * w..(r + 1) * w]) {
                *c += u32::from(*v > 0.0);
            }
        }
    }

    pub fn merge(&mut self, o: &PositionFiring) -> Result<()> {
        ensure!(self.width == o.width && self.at.len() == o.at.len(), "firing counts of different shapes");
        self.fires.iter_mut().zip(&o.fires).for_each(|(a, b)| *a += b);
        self.at.iter_mut().zip(&o.at).for_each(|(a, b)| *a += b);
        Ok(())
    }

    pub fn save(&self, prefix: &str, out: &mut Arrays) {
        out.put(&format!("{prefix}.width"), &[self.width as u64])
            .put(&format!("{prefix}.fires"), &self.fires)
            .put(&format!("{prefix}.at"), &self.at);
    }

    pub fn load(prefix: &str, f: &ArraysFile) -> Result<PositionFiring> {
        let width = f.scalar::<u64>(&format!("{prefix}.width"))? as usize;
        let (fires, at) = (f.get::<u32>(&format!("{prefix}.fires"))?, f.get::<u64>(&format!("{prefix}.at"))?);
        ensure!(fires.len() == width * at.len(), "'{prefix}': {} counts for {width} × {}", fires.len(), at.len());
        Ok(PositionFiring { width, fires, at })
    }

    /// Per neuron: I(firing; position) in bits over the counted positions, and the firing rate.
    pub fn mutual_information(&self) -> Vec<(f64, f64)> {
        let n = self.at.iter().sum::<u64>().max(1) as f64;
        let w = self.width;
        (0..w)
            .map(|j| {
                let on: u64 = (0..self.at.len()).map(|p| self.fires[p * w + j] as u64).sum();
                let p_on = on as f64 / n;
                let mut bits = 0.0;
                for (p, &at) in self.at.iter().enumerate().filter(|(_, &a)| a > 0) {
                    let p_pos = at as f64 / n;
                    let k = self.fires[p * w + j] as f64;
                    for (joint, marginal) in [(k / n, p_on), ((at as f64 - k) / n, 1.0 - p_on)] {
                        if joint > 0.0 {
                            bits += joint * (joint / (p_pos * marginal)).log2();
                        }
                    }
                }
                (bits, p_on)
            })
            .collect()
    }
}
