//! Per-neuron power sums → mean, variance, skew, kurtosis (non-excess), activation frequency.
//! Each batch's power sums are formed in f64 and added exactly (`Exact`), so a dataset cut into
//! shards along batch boundaries gives the same sums, bit for bit, as one pass.

use super::exact::{self, Exact};

/// Power sums of `n` series (neurons) over the same positions.
#[derive(Clone, Debug)]
pub struct Moments {
    pub count: u64,
    /// Σx, Σx², Σx³, Σx⁴ of each series over the flushed batches.
    pub sums: [Vec<Exact>; 4],
    /// The same over the rows added since the last `flush`, in f64.
    batch: [Vec<f64>; 4],
    /// Positions with a value > 0.
    pub positive: Vec<u64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// Population statistics of one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub var: f64,
    pub skew: f64,
    pub kurt: f64,
    pub freq: f64,
    pub min: f32,
    pub max: f32,
}

impl Moments {
    pub fn new(n: usize) -> Moments {
        Moments {
            count: 0,
            sums: std::array::from_fn(|_| vec![Exact::default(); n]),
            batch: std::array::from_fn(|_| vec![0.0; n]),
            positive: vec![0; n],
            min: vec![f32::INFINITY; n],
            max: vec![f32::NEG_INFINITY; n],
        }
    }

    /// Add one position: `row` holds one value per series (call `flush` at the end of a batch).
    pub fn add_row(&mut self, row: &[f32]) {
        self.count += 1;
        let [s1, s2, s3, s4] = &mut self.batch;
        for (i, &x) in row.iter().enumerate() {
            let xd = x as f64;
            let x2 = xd * xd;
            s1[i] += xd;
            s2[i] += x2;
            s3[i] += x2 * xd;
            s4[i] += x2 * x2;
            self.positive[i] += u64::from(x > 0.0);
            self.min[i] = self.min[i].min(x);
            self.max[i] = self.max[i].max(x);
        }
    }

    /// Add the f64 sums of the rows since the last flush into the exact sums.
    pub fn flush(&mut self) {
        for (total, batch) in self.sums.iter_mut().zip(&mut self.batch) {
            exact::add_all(total, batch);
            batch.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    /// Combine flushed partial sums (shards of a dataset).
    pub fn merge(&mut self, o: &Moments) {
        self.count += o.count;
        for (a, b) in self.sums.iter_mut().zip(&o.sums) {
            a.iter_mut().zip(b).for_each(|(a, b)| a.merge(b));
        }
        for i in 0..self.positive.len() {
            self.positive[i] += o.positive[i];
            self.min[i] = self.min[i].min(o.min[i]);
            self.max[i] = self.max[i].max(o.max[i]);
        }
    }

    /// Population moments of series `i` over the flushed rows: skew = m3/var^1.5, kurt = m4/var²
    /// (a Gaussian has 3).
    pub fn summary(&self, i: usize) -> Summary {
        let n = self.count.max(1) as f64;
        let [s1, s2, s3, s4] = &self.sums;
        let mean = s1[i].get() / n;
        let (e2, e3, e4) = (s2[i].get() / n, s3[i].get() / n, s4[i].get() / n);
        let var = (e2 - mean * mean).max(0.0);
        let m3 = e3 - 3.0 * mean * e2 + 2.0 * mean.powi(3);
        let m4 = e4 - 4.0 * mean * e3 + 6.0 * mean * mean * e2 - 3.0 * mean.powi(4);
        let (skew, kurt) = if var > 0.0 { (m3 / var.powf(1.5), m4 / (var * var)) } else { (0.0, 0.0) };
        Summary { mean, var, skew, kurt, freq: self.positive[i] as f64 / n, min: self.min[i], max: self.max[i] }
    }
}
