//! Histograms with explicit edges, binned like `torch.searchsorted(edges, x)` (left): bin k counts
//! values in (e[k-1], e[k]], with one open bin below the first edge and one above the last; and
//! the `histogram = { start, stop, edges }` parameter of the stages that build them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Histogram edges `linspace(start, stop, edges)`; values beyond fall in two open end bins.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistogramSpec {
    pub start: f32,
    pub stop: f32,
    pub edges: usize,
}

impl Default for HistogramSpec {
    /// The Universal Neurons study's edges: linspace(-10, 15, 256).
    fn default() -> Self {
        HistogramSpec { start: -10.0, stop: 15.0, edges: 256 }
    }
}

#[derive(Clone, Debug)]
pub struct Histogram {
    pub edges: Vec<f32>,
    /// [series, edges + 1]
    pub counts: Vec<u32>,
}

impl Histogram {
    pub fn new(edges: Vec<f32>, series: usize) -> Histogram {
        let bins = edges.len() + 1;
        Histogram { edges, counts: vec![0; series * bins] }
    }

    /// `linspace(start, stop, n)` edges.
    pub fn linspace(start: f32, stop: f32, n: usize) -> Vec<f32> {
        if n < 2 {
            return vec![start];
        }
        (0..n).map(|i| start + (stop - start) * i as f32 / (n - 1) as f32).collect()
    }

    pub fn bins(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bin of a value: the number of edges strictly below it. Guessed from the first and last
    /// edge (exact for evenly spaced edges after a step or two of correction), then corrected.
    #[inline]
    pub fn bin(&self, x: f32) -> usize {
        let e = &self.edges;
        let n = e.len();
        if n < 2 || x.is_nan() {
            return e.partition_point(|&v| v < x);
        }
        let guess = ((x - e[0]) / (e[n - 1] - e[0]) * (n - 1) as f32).ceil();
        let mut k = if guess > 0.0 { (guess as usize).min(n) } else { 0 };
        while k > 0 && e[k - 1] >= x {
            k -= 1;
        }
        while k < n && e[k] < x {
            k += 1;
        }
        k
    }

    pub fn add_row(&mut self, row: &[f32]) {
        let b = self.bins();
        for (i, &x) in row.iter().enumerate() {
            let k = self.bin(x);
            self.counts[i * b + k] += 1;
        }
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += *b;
        }
    }

    pub fn series(&self, i: usize) -> &[u32] {
        let b = self.bins();
        &self.counts[i * b..(i + 1) * b]
    }
}

/// Moments of a distribution rebuilt from its histogram, as the Universal Neurons study computes
/// its neuron table: every count at its bin's centre, the two open end bins half a bin beyond the
/// first and last edge (values beyond them clipped there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinnedMoments {
    pub mean: f64,
    /// Population variance.
    pub var: f64,
    pub skew: f64,
    /// Non-excess kurtosis (3 for a Gaussian).
    pub kurt: f64,
    /// Share of the counts in the bins from the first edge ≥ 0 upward: with edges
    /// linspace(−10, 15, 256) that edge is 0 and its bin is (−0.098, 0], so ≈ P(x > −0.098).
    pub above_zero: f64,
}

impl BinnedMoments {
    /// From the edges and one series' counts (`edges.len() + 1` bins, as [`Histogram`] bins).
    pub fn of(edges: &[f32], counts: &[u32]) -> BinnedMoments {
        let n = edges.len();
        let centre = |k: usize| -> f64 {
            let e = |i: usize| edges[i] as f64;
            match k {
                0 if n >= 2 => e(0) - (e(1) - e(0)) / 2.0,
                0 => e(0),
                k if k == n && n >= 2 => e(n - 1) + (e(n - 1) - e(n - 2)) / 2.0,
                k if k == n => e(n - 1),
                k => (e(k - 1) + e(k)) / 2.0,
            }
        };
        let total: f64 = counts.iter().map(|&c| c as f64).sum();
        let total = total.max(1.0);
        let mean = counts.iter().enumerate().map(|(k, &c)| c as f64 * centre(k)).sum::<f64>() / total;
        let central = |p: i32| {
            counts.iter().enumerate().map(|(k, &c)| c as f64 * (centre(k) - mean).powi(p)).sum::<f64>() / total
        };
        let var = central(2);
        let first = edges.partition_point(|&e| e < 0.0);
        let above: u64 = counts[first.min(counts.len())..].iter().map(|&c| c as u64).sum();
        BinnedMoments {
            mean,
            var,
            skew: central(3) / var.powf(1.5),
            kurt: central(4) / (var * var),
            above_zero: above as f64 / total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_searchsorted_left() {
        let h = Histogram::new(vec![0.0, 1.0, 2.0], 1);
        assert_eq!(h.bin(-0.5), 0);
        assert_eq!(h.bin(0.0), 0);
        assert_eq!(h.bin(0.5), 1);
        assert_eq!(h.bin(1.0), 1);
        assert_eq!(h.bin(2.5), 3);
        let h = Histogram::new(Histogram::linspace(-1.0, 1.0, 101), 1);
        for i in 0..20_000 {
            let x = -1.2 + 2.4 * i as f32 / 20_000.0;
            for x in [x, h.edges[i % 101], f32::INFINITY, f32::NEG_INFINITY] {
                assert_eq!(h.bin(x), h.edges.partition_point(|&e| e < x), "{x}");
            }
        }
        let uneven = Histogram::new(vec![0.0, 0.1, 5.0, 5.5, 100.0], 1);
        for x in [-1.0, 0.0, 0.05, 0.1, 3.0, 5.0, 5.2, 50.0, 100.0, 1e9] {
            assert_eq!(uneven.bin(x), uneven.edges.partition_point(|&e| e < x), "{x}");
        }
    }
}
