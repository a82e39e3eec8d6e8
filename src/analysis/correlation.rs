//! Streaming neuron–neuron similarity between two models: exact sums Σx, Σx², Σy, Σy², Σxy per
//! pair of layers (fixed point, so partial sums of shards merge bit for bit), tiled by layer pair,
//! and finished into Pearson / cosine / Jaccard similarities. Batches on a GPU go through `device`.

use crate::model::kernels::multiversion;
use crate::store::tensor_file::{TensorFile, TensorFileWriter};
use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

mod device;

/// 2^64: sums are kept as integers in units of 2^-64 (range ±9.2e18, far beyond any activation sum).
const SCALE: f64 = 18_446_744_073_709_551_616.0;

/// A value in fixed point (units of 2^-64), rounded to nearest. Exact for |x| ≥ 2^-11 given in f64.
#[inline(always)]
pub fn fixed(x: f64) -> i128 {
    let r = (x.abs() * SCALE).round_ties_even();
    let hi = (r * (1.0 / SCALE)).floor();
    // r − hi·2^64 is exact: both are multiples of r's ulp and the result is at most r.
    let lo = r - hi * SCALE;
    let q = ((hi as i64 as i128) << 64) + lo as u64 as i128;
    if x < 0.0 {
        -q
    } else {
        q
    }
}

/// A fixed-point sum as f64 (correctly rounded).
#[inline]
pub fn value(q: i128) -> f64 {
    q as f64 / SCALE
}

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

    /// Every pair of layers in row-major order, cut into tiles of at most `budget` bytes of sums.
    pub fn tiles(&self, budget: usize) -> Result<Vec<Vec<(usize, usize)>>> {
        let per = budget / self.pair_bytes().max(1);
        ensure!(
            per > 0,
            "the memory budget ({:.2} GB) is below the sums of one pair of layers ({:.2} GB): raise memory_gb",
            budget as f64 / 1e9,
            self.pair_bytes() as f64 / 1e9
        );
        let pairs: Vec<(usize, usize)> = (0..self.la).flat_map(|a| (0..self.lb).map(move |b| (a, b))).collect();
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

    /// The names and shapes of a partial-sums file (i128 stored as pairs of i64, little-endian).
    fn layout(shape: Shape) -> Vec<(&'static str, safetensors::Dtype, Vec<usize>)> {
        use safetensors::Dtype::I64;
        vec![
            ("count", I64, vec![1]),
            ("sum_a", I64, vec![shape.la, shape.da, 2]),
            ("sq_a", I64, vec![shape.la, shape.da, 2]),
            ("sum_b", I64, vec![shape.lb, shape.db, 2]),
            ("sq_b", I64, vec![shape.lb, shape.db, 2]),
            ("cross", I64, vec![shape.la, shape.lb, shape.da, shape.db, 2]),
        ]
    }

    pub fn create_file(path: &Path, shape: Shape) -> Result<TensorFileWriter> {
        TensorFileWriter::create(path, &Self::layout(shape))
    }

    /// Write this tile's sums into a partial-sums file.
    pub fn write(&self, w: &TensorFileWriter) -> Result<()> {
        let bytes = |v: &[i128]| v.iter().flat_map(|q| q.to_le_bytes()).collect::<Vec<u8>>();
        w.write("count", 0, &(self.count as i64).to_le_bytes())?;
        let s = self.shape;
        for (l, m) in &self.a {
            w.write("sum_a", l * s.da * 2, &bytes(&m.sum))?;
            w.write("sq_a", l * s.da * 2, &bytes(&m.sq))?;
        }
        for (l, m) in &self.b {
            w.write("sum_b", l * s.db * 2, &bytes(&m.sum))?;
            w.write("sq_b", l * s.db * 2, &bytes(&m.sq))?;
        }
        for ((la, lb), c) in &self.cross {
            w.write("cross", (la * s.lb + lb) * s.da * s.db * 2, &bytes(c))?;
        }
        Ok(())
    }

    /// Read the sums of a tile from a partial-sums file.
    pub fn read(f: &TensorFile, shape: Shape, pairs: &[(usize, usize)]) -> Result<Sums> {
        let (cshape, _) = f.get("cross")?;
        ensure!(
            cshape == vec![shape.la, shape.lb, shape.da, shape.db, 2],
            "partial sums of shape {cshape:?}, expected {shape:?}"
        );
        let ints = |name: &str, from: usize, n: usize| -> Result<Vec<i128>> {
            let (_, data) = f.get(name)?;
            Ok(data[from * 16..(from + n) * 16]
                .chunks_exact(16)
                .map(|c| i128::from_le_bytes(c.try_into().expect("16 bytes")))
                .collect())
        };
        let mut s = Sums::new(shape, pairs);
        let (_, count) = f.get("count")?;
        s.count = i64::from_le_bytes(count[..8].try_into()?) as u64;
        for (l, m) in s.a.iter_mut() {
            *m = Marginals { sum: ints("sum_a", l * shape.da, shape.da)?, sq: ints("sq_a", l * shape.da, shape.da)? };
        }
        for (l, m) in s.b.iter_mut() {
            *m = Marginals { sum: ints("sum_b", l * shape.db, shape.db)?, sq: ints("sq_b", l * shape.db, shape.db)? };
        }
        for ((la, lb), c) in s.cross.iter_mut() {
            *c = ints("cross", (la * shape.lb + lb) * shape.da * shape.db, shape.da * shape.db)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_round_trips_and_is_associative() {
        for x in [0.0, 1.0, -1.0, 0.1, -3.75e-7, 12345.678, -9.9e12, 1e-30] {
            let q = fixed(x);
            assert!((value(q) - x).abs() <= 2f64.powi(-64) * 2.0 + x.abs() * 1e-16, "{x} -> {}", value(q));
        }
        let xs = [0.1, 1e10, -1e10, 3.3e-5, 7.0, -0.2];
        let one: i128 = xs.iter().map(|&x| fixed(x)).sum();
        let two: i128 = xs.iter().rev().map(|&x| fixed(x)).sum();
        assert_eq!(one, two);
        assert_eq!(fixed(1.0), 1i128 << 64);
        assert_eq!(fixed(-1.5), -(3i128 << 63));
    }
}
