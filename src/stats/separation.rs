//! How well boolean features separate a variable, in one streaming pass for every feature at once:
//! per (feature, column) the count, sum and sum of squares of the rows where the feature holds
//! give the variance reduction `1 − [p₀·Var(a|f=0) + p₁·Var(a|f=1)] / Var(a)` (sample variances,
//! as pandas computes them), the difference of means and Welch's t.

use crate::store::arrays::{Arrays, ArraysFile};
use anyhow::{ensure, Result};
use rayon::prelude::*;

/// Columns per parallel block.
const BLOCK: usize = 256;

/// The sums of a range of columns.
struct Block {
    c0: usize,
    w: usize,
    s: Vec<f64>,
    q: Vec<f64>,
    /// [features × w]
    s1: Vec<f64>,
    q1: Vec<f64>,
}

/// Streaming sums over rows of `width` values, each row with a set of features that hold.
pub struct Separation {
    width: usize,
    features: usize,
    /// Values are summed relative to the first row, which keeps the sums of squares precise.
    shift: Option<Vec<f64>>,
    n: u64,
    n1: Vec<u64>,
    blocks: Vec<Block>,
}

/// The scores of one feature for one column; NaN where a side has fewer than two rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub vr: f64,
    /// mean(a | f) − mean(a | not f)
    pub mean_diff: f64,
    pub welch_t: f64,
    /// Rows where the feature holds.
    pub n1: u64,
}

impl Separation {
    pub fn new(features: usize, width: usize) -> Separation {
        let blocks = (0..width)
            .step_by(BLOCK)
            .map(|c0| {
                let w = BLOCK.min(width - c0);
                Block {
                    c0,
                    w,
                    s: vec![0.0; w],
                    q: vec![0.0; w],
                    s1: vec![0.0; features * w],
                    q1: vec![0.0; features * w],
                }
            })
            .collect();
        Separation { width, features, shift: None, n: 0, n1: vec![0; features], blocks }
    }

    /// Bytes the sums take for `features` × `width`.
    pub fn bytes(features: usize, width: usize) -> usize {
        2 * 8 * (features + 1) * width
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn rows(&self) -> u64 {
        self.n
    }

    /// Rows where feature `f` holds.
    pub fn holds(&self, f: usize) -> u64 {
        self.n1[f]
    }

    /// Add rows: `x` is [rows × width], `on[r]` the features that hold in row r.
    pub fn add(&mut self, x: &[f32], on: &[Vec<u32>]) {
        let w = self.width;
        assert_eq!(x.len(), on.len() * w, "rows of values and of features differ");
        if on.is_empty() {
            return;
        }
        let shift = self.shift.get_or_insert_with(|| x[..w].iter().map(|&v| v as f64).collect());
        self.n += on.len() as u64;
        for fs in on {
            for &f in fs {
                self.n1[f as usize] += 1;
            }
        }
        let shift = &*shift;
        self.blocks.par_iter_mut().for_each(|b| {
            let mut d = vec![0f64; b.w];
            for (r, fs) in on.iter().enumerate() {
                let row = &x[r * w + b.c0..r * w + b.c0 + b.w];
                for ((d, &v), &m) in d.iter_mut().zip(row).zip(&shift[b.c0..b.c0 + b.w]) {
                    *d = v as f64 - m;
                }
                accumulate(&mut b.s, &mut b.q, &d);
                for &f in fs {
                    let at = f as usize * b.w..(f as usize + 1) * b.w;
                    accumulate(&mut b.s1[at.clone()], &mut b.q1[at], &d);
                }
            }
        });
    }

    /// Add the sums of other rows (another shard of the dataset), moved to this one's shift.
    /// In f64: equal to one pass over every row up to rounding.
    pub fn merge(&mut self, o: &Separation) -> Result<()> {
        ensure!(self.width == o.width && self.features == o.features, "sums of different shapes");
        let Some(theirs) = &o.shift else { return Ok(()) };
        let ours = self.shift.get_or_insert_with(|| theirs.clone()).clone();
        let (n, n1) = (o.n as f64, o.n1.iter().map(|&k| k as f64).collect::<Vec<f64>>());
        self.n += o.n;
        self.n1.iter_mut().zip(&o.n1).for_each(|(a, b)| *a += b);
        self.blocks.par_iter_mut().zip(&o.blocks).for_each(|(a, b)| {
            for i in 0..a.w {
                // Their values were summed as x − theirs; ours as x − ours.
                let d = theirs[a.c0 + i] - ours[a.c0 + i];
                a.s[i] += b.s[i] + n * d;
                a.q[i] += b.q[i] + 2.0 * d * b.s[i] + n * d * d;
                for f in 0..n1.len() {
                    let j = f * a.w + i;
                    a.s1[j] += b.s1[j] + n1[f] * d;
                    a.q1[j] += b.q1[j] + 2.0 * d * b.s1[j] + n1[f] * d * d;
                }
            }
        });
        Ok(())
    }

    /// Write the sums as arrays named `{prefix}.…`.
    pub fn save(&self, prefix: &str, out: &mut Arrays) {
        let name = |s: &str| format!("{prefix}.{s}");
        let blocks = || self.blocks.iter();
        out.put(&name("shape"), &[self.width as u64, self.features as u64])
            .put(&name("n"), &[self.n])
            .put(&name("n1"), &self.n1)
            .put(&name("shift"), self.shift.as_deref().unwrap_or(&[]))
            .put_iter(&name("s"), blocks().flat_map(|b| b.s.iter().copied()))
            .put_iter(&name("q"), blocks().flat_map(|b| b.q.iter().copied()))
            .put_iter(&name("s1"), blocks().flat_map(|b| b.s1.iter().copied()))
            .put_iter(&name("q1"), blocks().flat_map(|b| b.q1.iter().copied()));
    }

    /// Sums as `save` wrote them under `prefix`.
    pub fn load(prefix: &str, f: &ArraysFile) -> Result<Separation> {
        let name = |s: &str| format!("{prefix}.{s}");
        let shape = f.get::<u64>(&name("shape"))?;
        ensure!(shape.len() == 2, "'{prefix}': no shape");
        let mut sep = Separation::new(shape[1] as usize, shape[0] as usize);
        sep.n = f.scalar(&name("n"))?;
        sep.n1 = f.get(&name("n1"))?;
        let shift = f.get::<f64>(&name("shift"))?;
        sep.shift = (!shift.is_empty()).then_some(shift);
        let (s, q, s1, q1) = (
            f.get::<f64>(&name("s"))?,
            f.get::<f64>(&name("q"))?,
            f.get::<f64>(&name("s1"))?,
            f.get::<f64>(&name("q1"))?,
        );
        ensure!(
            sep.n1.len() == sep.features && s.len() == sep.width && s1.len() == sep.width * sep.features,
            "'{prefix}': sums of another shape"
        );
        let mut at = 0;
        for b in &mut sep.blocks {
            let per = b.w * sep.features;
            b.s.copy_from_slice(&s[b.c0..b.c0 + b.w]);
            b.q.copy_from_slice(&q[b.c0..b.c0 + b.w]);
            b.s1.copy_from_slice(&s1[at..at + per]);
            b.q1.copy_from_slice(&q1[at..at + per]);
            at += per;
        }
        Ok(sep)
    }

    /// The scores of feature `f` for column `c`.
    pub fn score(&self, f: usize, c: usize) -> Score {
        assert!(f < self.features && c < self.width);
        let b = &self.blocks[c / BLOCK];
        let i = c - b.c0;
        let (n, n1) = (self.n as f64, self.n1[f] as f64);
        let n0 = n - n1;
        let (s, q, s1, q1) = (b.s[i], b.q[i], b.s1[f * b.w + i], b.q1[f * b.w + i]);
        let (s0, q0) = (s - s1, q - q1);
        let var = |s: f64, q: f64, n: f64| if n < 2.0 { f64::NAN } else { ((q - s * s / n) / (n - 1.0)).max(0.0) };
        let (v, v1, v0) = (var(s, q, n), var(s1, q1, n1), var(s0, q0, n0));
        let vr = 1.0 - (n0 / n * v0 + n1 / n * v1) / v;
        let mean_diff = if n1 > 0.0 && n0 > 0.0 { s1 / n1 - s0 / n0 } else { f64::NAN };
        let welch_t = mean_diff / (v1 / n1 + v0 / n0).sqrt();
        Score { vr: if v > 0.0 { vr } else { f64::NAN }, mean_diff, welch_t, n1: self.n1[f] }
    }
}

fn accumulate(s: &mut [f64], q: &mut [f64], d: &[f64]) {
    for ((s, q), &d) in s.iter_mut().zip(q.iter_mut()).zip(d) {
        *s += d;
        *q += d * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-pass sample variance, the way pandas computes it.
    fn var(x: &[f64]) -> f64 {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64
    }

    #[test]
    fn matches_two_pass_computation_across_blocks_and_batches() {
        let (rows, width) = (300, 300);
        let x: Vec<f32> = (0..rows * width).map(|i| ((i * 7919 % 1000) as f32 / 100.0).sin() * 3.0 + 100.0).collect();
        let on: Vec<Vec<u32>> =
            (0..rows).map(|r| (0..3u32).filter(|f| (r + *f as usize) % (f + 2) as usize == 0).collect()).collect();
        let mut sep = Separation::new(3, width);
        sep.add(&x[..100 * width], &on[..100]);
        sep.add(&x[100 * width..], &on[100..]);
        for f in 0..3 {
            for c in [0, 255, 256, 299] {
                let col: Vec<f64> = (0..rows).map(|r| x[r * width + c] as f64).collect();
                let side = |holds: bool| -> Vec<f64> {
                    (0..rows).filter(|&r| on[r].contains(&(f as u32)) == holds).map(|r| col[r]).collect()
                };
                let (yes, no) = (side(true), side(false));
                let (p1, p0) = (yes.len() as f64 / rows as f64, no.len() as f64 / rows as f64);
                let vr = 1.0 - (p0 * var(&no) + p1 * var(&yes)) / var(&col);
                let s = sep.score(f, c);
                assert!((s.vr - vr).abs() < 1e-9, "f{f} c{c}: {} vs {vr}", s.vr);
                let md = yes.iter().sum::<f64>() / yes.len() as f64 - no.iter().sum::<f64>() / no.len() as f64;
                assert!((s.mean_diff - md).abs() < 1e-9);
                let t = md / (var(&yes) / yes.len() as f64 + var(&no) / no.len() as f64).sqrt();
                assert!((s.welch_t - t).abs() < 1e-6 * t.abs().max(1.0));
            }
        }
    }
}
