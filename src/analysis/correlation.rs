//! Streaming neuron–neuron similarity between two models: exact sums Σx, Σx², Σy, Σy², Σxy per
//! pair of layers (fixed point, so partial sums of shards merge bit for bit), tiled by layer pair,
//! and finished into Pearson / cosine / Jaccard similarities. Batches on a GPU go through `device`.

use crate::model::kernels::multiversion;
use crate::stats::exact::{fixed, value};
use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod device;

multiversion! {
    fn add_fixed_f32(acc: &mut [i128], x: &[f32]) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += fixed(*v as f64);
        }
    }
}

multiversion! {
    fn add_fixed_f64(acc: &mut [i128], x: &[f64]) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += fixed(*v);
        }
    }
}

/// Add a tensor's values (f32 or f64) into fixed-point sums, on all cores.
fn add_fixed(acc: &mut [i128], t: &Tensor) -> Result<()> {
    const CHUNK: usize = 1 << 16;
    match t.dtype() {
        DType::F64 => {
            let v = t.flatten_all()?.to_vec1::<f64>()?;
            acc.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(a, x)| add_fixed_f64(a, x));
        }
        _ => {
            let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            acc.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(a, x)| add_fixed_f32(a, x));
        }
    }
    Ok(())
}

/// Precision of the per-batch cross products Σxy; the running sums are exact in every case.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Products {
    /// f32 multiplies and additions (on a GPU with TF32 off).
    #[default]
    F32,
    /// On a GPU, f32 matmuls on TF32 tensor cores (inputs rounded to 10-bit mantissas, about
    /// 1e-3 relative error per product); on the CPU the same as `f32`.
    Tf32,
    /// f64 multiplies and additions.
    F64,
}

impl Products {
    fn dtype(self) -> DType {
        match self {
            Products::F32 | Products::Tf32 => DType::F32,
            Products::F64 => DType::F64,
        }
    }
}

/// How two neurons' activations are compared.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Pearson correlation over the kept tokens.
    #[default]
    Pearson,
    /// Cosine of the activation vectors (uncentred).
    Cosine,
    /// |A ∧ B| / |A ∨ B| of the activations binarised at `threshold` (act > threshold).
    Jaccard,
}

/// The layers and widths of the two models' hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub la: usize,
    pub da: usize,
    pub lb: usize,
    pub db: usize,
}

impl Shape {
    /// Bytes of the cross sums of one pair of layers.
    pub fn pair_bytes(&self) -> usize {
        self.da * self.db * std::mem::size_of::<i128>()
    }

    /// Every pair of layers (A's layer, B's layer), in row-major order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        (0..self.la).flat_map(|a| (0..self.lb).map(move |b| (a, b))).collect()
    }

    /// `pairs` cut into tiles of at most `budget` bytes of sums, in order.
    pub fn tiles(&self, pairs: &[(usize, usize)], budget: usize) -> Result<Vec<Vec<(usize, usize)>>> {
        let per = budget / self.pair_bytes().max(1);
        ensure!(
            per > 0,
            "the memory budget ({:.2} GB) is below the sums of one pair of layers ({:.2} GB): raise memory_gb",
            budget as f64 / 1e9,
            self.pair_bytes() as f64 / 1e9
        );
        Ok(pairs.chunks(per).map(|c| c.to_vec()).collect())
    }
}

/// Exact sums of one model's activations per layer: Σx and Σx² of each neuron.
#[derive(Clone, Debug, PartialEq)]
pub struct Marginals {
    pub sum: Vec<i128>,
    pub sq: Vec<i128>,
}

impl Marginals {
    fn new(d: usize) -> Marginals {
        Marginals { sum: vec![0; d], sq: vec![0; d] }
    }

    /// Add a batch [tokens, d] (f32): per-neuron sums formed in f64, then added exactly.
    fn add(&mut self, x: &[f32], d: usize) {
        let (mut s, mut q) = (vec![0f64; d], vec![0f64; d]);
        for row in x.chunks_exact(d) {
            for ((s, q), &v) in s.iter_mut().zip(q.iter_mut()).zip(row) {
                let v = v as f64;
                *s += v;
                *q += v * v;
            }
        }
        add_fixed_f64(&mut self.sum, &s);
        add_fixed_f64(&mut self.sq, &q);
    }

    fn merge(&mut self, o: &Marginals) {
        for (a, b) in self.sum.iter_mut().zip(&o.sum).chain(self.sq.iter_mut().zip(&o.sq)) {
            *a += *b;
        }
    }
}

/// The sums of one tile of layer pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct Sums {
    pub shape: Shape,
    /// Kept tokens.
    pub count: u64,
    /// Per layer of A / B (only the layers of this tile's pairs).
    pub a: BTreeMap<usize, Marginals>,
    pub b: BTreeMap<usize, Marginals>,
    /// Σxy per pair of layers, [da, db] row-major.
    pub cross: BTreeMap<(usize, usize), Vec<i128>>,
}

impl Sums {
    pub fn new(shape: Shape, pairs: &[(usize, usize)]) -> Sums {
        let mut s = Sums { shape, count: 0, a: BTreeMap::new(), b: BTreeMap::new(), cross: BTreeMap::new() };
        for &(la, lb) in pairs {
            s.a.entry(la).or_insert_with(|| Marginals::new(shape.da));
            s.b.entry(lb).or_insert_with(|| Marginals::new(shape.db));
            s.cross.insert((la, lb), vec![0; shape.da * shape.db]);
        }
        s
    }

    pub fn layers_a(&self) -> Vec<usize> {
        self.a.keys().copied().collect()
    }

    pub fn layers_b(&self) -> Vec<usize> {
        self.b.keys().copied().collect()
    }

    /// Add one batch: the activations [tokens, d] (f32, contiguous, all on one device) of this
    /// tile's layers of A and B at the same kept tokens; cross products formed as `products` per batch.
    pub fn add(
        &mut self,
        xa: &BTreeMap<usize, Tensor>,
        xb: &BTreeMap<usize, Tensor>,
        products: Products,
    ) -> Result<()> {
        let Some(first) = xa.values().next() else { bail!("no activations of model A") };
        let t = first.dim(0)?;
        if t == 0 {
            return Ok(());
        }
        self.count += t as u64;
        if first.device().is_cuda() {
            return device::add(self, xa, xb, products);
        }
        let (da, db) = (self.shape.da, self.shape.db);
        for (l, m) in self.a.iter_mut() {
            m.add(&xa[l].flatten_all()?.to_vec1::<f32>()?, da);
        }
        for (l, m) in self.b.iter_mut() {
            m.add(&xb[l].flatten_all()?.to_vec1::<f32>()?, db);
        }
        let cast = |m: &BTreeMap<usize, Tensor>| -> Result<BTreeMap<usize, Tensor>> {
            m.iter().map(|(l, x)| Ok((*l, x.to_dtype(products.dtype())?))).collect()
        };
        let (ca, cb) = (cast(xa)?, cast(xb)?);
        for ((la, lb), acc) in self.cross.iter_mut() {
            let c = ca[la].t()?.matmul(&cb[lb])?;
            add_fixed(acc, &c)?;
        }
        Ok(())
    }

    /// Add another tile's sums over other tokens (exact: the order of merging does not matter).
    pub fn merge(&mut self, o: &Sums) -> Result<()> {
        ensure!(
            self.shape == o.shape && self.cross.keys().eq(o.cross.keys()),
            "partial sums of different shapes or tiles"
        );
        self.count += o.count;
        for (l, m) in self.a.iter_mut() {
            m.merge(&o.a[l]);
        }
        for (l, m) in self.b.iter_mut() {
            m.merge(&o.b[l]);
        }
        for (k, acc) in self.cross.iter_mut() {
            for (x, y) in acc.iter_mut().zip(&o.cross[k]) {
                *x += *y;
            }
        }
        Ok(())
    }

    /// The similarity of every neuron of A's layer `la` with every neuron of B's layer `lb`
    /// ([da, db], row-major); 0 where a neuron never varies (dead) or the union is empty.
    pub fn finish(&self, la: usize, lb: usize, sim: Similarity) -> Vec<f64> {
        let (a, b, c) = (&self.a[&la], &self.b[&lb], &self.cross[&(la, lb)]);
        let n = self.count as f64;
        let f = |v: &[i128]| v.iter().map(|&q| value(q)).collect::<Vec<f64>>();
        let (sa, qa, sb, qb) = (f(&a.sum), f(&a.sq), f(&b.sum), f(&b.sq));
        let db = self.shape.db;
        let mut out = vec![0f64; c.len()];
        out.par_chunks_mut(db).enumerate().for_each(|(i, row)| {
            for (j, o) in row.iter_mut().enumerate() {
                let cij = value(c[i * db + j]);
                let r = match sim {
                    Similarity::Pearson => {
                        let cov = cij - sa[i] * sb[j] / n;
                        let va = (qa[i] - sa[i] * sa[i] / n).max(0.0);
                        let vb = (qb[j] - sb[j] * sb[j] / n).max(0.0);
                        cov / (va.sqrt() * vb.sqrt())
                    }
                    Similarity::Cosine => cij / (qa[i].sqrt() * qb[j].sqrt()),
                    // Binarised: Σx counts the active tokens.
                    Similarity::Jaccard => cij / (sa[i] + sb[j] - cij),
                };
                *o = if r.is_finite() { r } else { 0.0 };
            }
        });
        out
    }
}
