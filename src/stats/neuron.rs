//! All per-neuron reducers of one hook together (moments, histogram, top/bottom-k, per-token),
//! updated in parallel over chunks of neurons.

use super::moments::Summary;
use super::{Histogram, Moments, TokenStats, TopK};
use rayon::prelude::*;

struct Chunk {
    start: usize,
    len: usize,
    moments: Moments,
    hist: Histogram,
    top: TopK,
    bottom: TopK,
    tokens: Option<TokenStats>,
}

/// One valid position of a batch: its row in the batch data, global token index and token id.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    pub row: usize,
    pub index: u64,
    pub token: u32,
}

pub struct NeuronStats {
    pub n: usize,
    pub edges: Vec<f32>,
    chunks: Vec<Chunk>,
}

impl NeuronStats {
    /// Bytes `new` allocates for `n` neurons before any data (an estimate for validation).
    pub fn bytes(n: usize, edges: usize, top_k: usize, bottom_k: usize, vocab: Option<usize>) -> f64 {
        let per_neuron = 4.0 * 8.0 + (edges as f64 + 1.0) * 8.0 + (top_k as f64 + bottom_k as f64 + 2.0) * 16.0;
        n as f64 * per_neuron + vocab.map_or(0.0, |v| TokenStats::bytes(n, v) as f64)
    }

    /// Reducers for `n` neurons; `vocab` enables per-token statistics.
    pub fn new(n: usize, edges: &[f32], top_k: usize, bottom_k: usize, vocab: Option<usize>) -> NeuronStats {
        let size = (n / (rayon::current_num_threads() * 4)).max(64);
        let chunks = (0..n)
            .step_by(size)
            .map(|start| {
                let len = size.min(n - start);
                Chunk {
                    start,
                    len,
                    moments: Moments::new(len),
                    hist: Histogram::new(edges.to_vec(), len),
                    top: TopK::new(len, top_k, true),
                    bottom: TopK::new(len, bottom_k, false),
                    tokens: vocab.map(|v| TokenStats::new(len, v)),
                }
            })
            .collect();
        NeuronStats { n, edges: edges.to_vec(), chunks }
    }

    /// Add the valid positions of a batch; `data` is [rows, n] row-major.
    pub fn add(&mut self, data: &[f32], positions: &[Position]) {
        let n = self.n;
        self.chunks.par_iter_mut().for_each(|c| {
            for p in positions {
                let row = &data[p.row * n + c.start..p.row * n + c.start + c.len];
                c.moments.add_row(row);
                c.hist.add_row(row);
                c.top.add_row(row, p.index);
                c.bottom.add_row(row, p.index);
                if let Some(t) = &mut c.tokens {
                    t.add_row(row, p.token);
                }
            }
        });
    }

    fn locate(&self, i: usize) -> (&Chunk, usize) {
        let c = self.chunks.iter().find(|c| i >= c.start && i < c.start + c.len).expect("neuron in range");
        (c, i - c.start)
    }

    pub fn count(&self) -> u64 {
        self.chunks.first().map(|c| c.moments.count).unwrap_or(0)
    }
    pub fn summary(&self, i: usize) -> Summary {
        let (c, j) = self.locate(i);
        c.moments.summary(j)
    }
    pub fn histogram(&self, i: usize) -> &[u32] {
        let (c, j) = self.locate(i);
        c.hist.series(j)
    }
    pub fn top(&self, i: usize) -> Vec<(f32, u64)> {
        let (c, j) = self.locate(i);
        c.top.sorted(j)
    }
    pub fn bottom(&self, i: usize) -> Vec<(f32, u64)> {
        let (c, j) = self.locate(i);
        c.bottom.sorted(j)
    }
    /// Top tokens by mean (or max) activation, when per-token statistics are kept.
    pub fn top_tokens(&self, i: usize, k: usize, by_max: bool) -> Option<Vec<(u32, f32, u32)>> {
        let (c, j) = self.locate(i);
        let t = c.tokens.as_ref()?;
        Some(t.top(j, k, by_max).into_iter().map(|(tok, v)| (tok, v, t.count[tok as usize])).collect())
    }
}
