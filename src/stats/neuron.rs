//! All per-neuron reducers of one hook together (moments, histogram, top/bottom-k, per-token),
//! updated in parallel over chunks of neurons; saved to and merged from the partial states of
//! shards.

use super::exact;
use super::moments::Summary;
use super::{Histogram, Moments, TokenStats, TopK};
use crate::store::arrays::{Arrays, ArraysFile};
use anyhow::{ensure, Result};
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
            c.moments.flush();
        });
    }

    /// Add the statistics of other positions (another shard of the dataset), computed with the
    /// same parameters.
    pub fn merge(&mut self, o: &NeuronStats) -> Result<()> {
        ensure!(self.n == o.n && self.edges == o.edges, "statistics of {} and {} neurons", self.n, o.n);
        for (a, b) in self.chunks.iter_mut().zip(&o.chunks) {
            ensure!(a.start == b.start && a.len == b.len, "statistics chunked differently");
            a.moments.merge(&b.moments);
            a.hist.merge(&b.hist);
            a.top.merge(&b.top);
            a.bottom.merge(&b.bottom);
            match (&mut a.tokens, &b.tokens) {
                (Some(x), Some(y)) => x.merge(y),
                (None, None) => {}
                _ => anyhow::bail!("per-token statistics in one part only"),
            }
        }
        Ok(())
    }

    /// Write every reducer's state, neuron by neuron, as arrays named `{prefix}.…`.
    pub fn save(&self, prefix: &str, out: &mut Arrays) {
        let name = |s: &str| format!("{prefix}.{s}");
        let (top_k, bottom_k) = self.chunks.first().map(|c| (c.top.k(), c.bottom.k())).unwrap_or_default();
        out.put(&name("count"), &[self.count()])
            .put(&name("edges"), &self.edges)
            .put(&name("k"), &[top_k as u64, bottom_k as u64]);
        for (k, power) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
            let sums: Vec<exact::Exact> = self.chunks.iter().flat_map(|c| c.moments.sums[k].clone()).collect();
            exact::put(out, &name(power), &sums);
        }
        let chunks = || self.chunks.iter();
        out.put_iter(&name("positive"), chunks().flat_map(|c| c.moments.positive.iter().copied()))
            .put_iter(&name("min"), chunks().flat_map(|c| c.moments.min.iter().copied()))
            .put_iter(&name("max"), chunks().flat_map(|c| c.moments.max.iter().copied()))
            .put_iter(&name("histogram"), chunks().flat_map(|c| c.hist.counts.iter().copied()));
        for (which, pick) in [("top", true), ("bottom", false)] {
            let (mut len, mut value, mut index) = (vec![], vec![], vec![]);
            for i in 0..self.n {
                let list = if pick { self.top(i) } else { self.bottom(i) };
                len.push(list.len() as u32);
                for (v, j) in list {
                    value.push(v);
                    index.push(j);
                }
            }
            out.put(&name(&format!("{which}_len")), &len)
                .put(&name(&format!("{which}_value")), &value)
                .put(&name(&format!("{which}_index")), &index);
        }
        if let Some(t) = self.chunks.first().and_then(|c| c.tokens.as_ref()) {
            let tokens = || chunks().filter_map(|c| c.tokens.as_ref());
            out.put(&name("token_count"), &t.count)
                .put_iter(&name("token_sum"), tokens().flat_map(|t| t.sum.iter().copied()))
                .put_iter(&name("token_max"), tokens().flat_map(|t| t.max.iter().copied()));
        }
    }

    /// Statistics as `save` wrote them under `prefix`.
    pub fn load(prefix: &str, f: &ArraysFile) -> Result<NeuronStats> {
        let name = |s: &str| format!("{prefix}.{s}");
        let (edges, k) = (f.get::<f32>(&name("edges"))?, f.get::<u64>(&name("k"))?);
        ensure!(k.len() == 2, "'{prefix}': no top and bottom k");
        let vocab =
            f.has(&name("token_count")).then(|| f.get::<u32>(&name("token_count")).map(|c| c.len())).transpose()?;
        let n = f.get::<u64>(&name("positive"))?.len();
        let mut stats = NeuronStats::new(n, &edges, k[0] as usize, k[1] as usize, vocab);
        let count = f.scalar::<u64>(&name("count"))?;
        let sums = ["s1", "s2", "s3", "s4"].map(|p| exact::get(f, &name(p)));
        let (positive, min, max) =
            (f.get::<u64>(&name("positive"))?, f.get::<f32>(&name("min"))?, f.get::<f32>(&name("max"))?);
        let hist = f.get::<u32>(&name("histogram"))?;
        let bins = edges.len() + 1;
        ensure!(hist.len() == n * bins, "statistics of another shape under '{prefix}'");
        let mut lists = vec![];
        for which in ["top", "bottom"] {
            let len = f.get::<u32>(&name(&format!("{which}_len")))?;
            let value = f.get::<f32>(&name(&format!("{which}_value")))?;
            let index = f.get::<u64>(&name(&format!("{which}_index")))?;
            lists.push((len, value, index));
        }
        let tokens = match stats.chunks.first().and_then(|c| c.tokens.as_ref()) {
            Some(t) => {
                let (count, sum, max) = (
                    f.get::<u32>(&name("token_count"))?,
                    f.get::<f64>(&name("token_sum"))?,
                    f.get::<f32>(&name("token_max"))?,
                );
                ensure!(count.len() == t.vocab && sum.len() == n * t.vocab, "per-token statistics of another shape");
                Some((count, sum, max))
            }
            None => None,
        };
        let sums = sums.into_iter().collect::<Result<Vec<_>>>()?;
        for c in &mut stats.chunks {
            let r = c.start..c.start + c.len;
            c.moments.count = count;
            for (k, s) in sums.iter().enumerate() {
                c.moments.sums[k] = s[r.clone()].to_vec();
            }
            c.moments.positive = positive[r.clone()].to_vec();
            c.moments.min = min[r.clone()].to_vec();
            c.moments.max = max[r.clone()].to_vec();
            c.hist.counts = hist[c.start * bins..(c.start + c.len) * bins].to_vec();
            for (heap, (len, value, index)) in [&mut c.top, &mut c.bottom].into_iter().zip(&lists) {
                let mut at: usize = len[..c.start].iter().map(|&l| l as usize).sum();
                for (j, &l) in len[r.clone()].iter().enumerate() {
                    for k in at..at + l as usize {
                        heap.push(j, value[k], index[k]);
                    }
                    at += l as usize;
                }
            }
            if let (Some(t), Some((count, sum, max))) = (&mut c.tokens, &tokens) {
                let v = t.vocab;
                t.count = count.clone();
                t.sum = sum[c.start * v..(c.start + c.len) * v].to_vec();
                t.max = max[c.start * v..(c.start + c.len) * v].to_vec();
            }
        }
        Ok(stats)
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
