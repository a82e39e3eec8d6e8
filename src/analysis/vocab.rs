//! Neuron weights read against the vocabulary: a neuron's output (or input) weights projected on
//! the embedding or unembedding (dot or cosine), the reverse search (which neurons write most to a
//! token) and the "monotokenic" score of the "an" neuron study — all streamed in chunks of neurons.

use crate::model::Model;
use anyhow::{bail, Result};
use candle_core::{Tensor, D};

/// Which vocabulary matrix to read against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Rows of W_E (the "an" study's choice with GPT-2's tied embeddings).
    Embed,
    /// Columns of W_U.
    Unembed,
}

/// Which neuron weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// w_out = W_out[n, :] (what the neuron writes).
    Out,
    /// w_in = W_in[:, n] (what the neuron reads).
    In,
}

/// The vocabulary as a [vocab, d_model] matrix.
fn vocab_matrix(model: &Model, basis: Basis) -> Result<Tensor> {
    Ok(match basis {
        Basis::Embed => model.weights.w_e.clone(),
        Basis::Unembed => model.weights.w_u.t()?.contiguous()?,
    })
}

/// The weights of `layer`'s neurons as [d_mlp, d_model].
pub fn neuron_vectors(model: &Model, layer: usize, side: Side) -> Result<Tensor> {
    let b = model.weights.blocks.get(layer).ok_or_else(|| anyhow::anyhow!("layer {layer} out of range"))?;
    Ok(match side {
        Side::Out => b.w_out.clone(),
        Side::In => b.w_in.t()?.contiguous()?,
    })
}

fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Scores of neurons `rows` [n, d] against the vocabulary: [n, vocab].
pub fn scores(model: &Model, rows: &Tensor, basis: Basis, cosine: bool) -> Result<Tensor> {
    let v = vocab_matrix(model, basis)?;
    let (rows, v) = if cosine { (unit_rows(rows)?, unit_rows(&v)?) } else { (rows.clone(), v) };
    Ok(rows.matmul(&v.t()?)?)
}

/// For every neuron of the model: its best and second-best token; for every token: its best and
/// second-best neuron — the ingredients of the monotokenic score.
pub struct Extremes {
    /// Per neuron (flattened layer·d_mlp + n): (best token, its score, second score).
    pub neuron_best: Vec<(u32, f32, f32)>,
    /// Per token: (best neuron, its score, second score).
    pub token_best: Vec<(u32, f32, f32)>,
}

/// The best and second-best of a score and the index of the best, updated one value at a time:
/// a later index replaces the best only when strictly larger (the first of equals is kept).
#[derive(Clone, Copy, Debug, PartialEq)]
struct BestTwo(u32, f32, f32);

impl BestTwo {
    const NONE: BestTwo = BestTwo(u32::MAX, f32::NEG_INFINITY, f32::NEG_INFINITY);

    fn add(&mut self, index: u32, x: f32) {
        if x > self.1 {
            (self.0, self.1, self.2) = (index, x, self.1);
        } else if x > self.2 {
            self.2 = x;
        }
    }
}

/// Tokens per parallel task of the per-token scan.
const TOKEN_SPAN: usize = 256;

/// Scan all neurons against the vocabulary, `chunk` neurons at a time (bounded memory): each
/// chunk's scores are one matrix product; the per-neuron and per-token extremes are read off it
/// in parallel (neurons by rows, tokens by spans of columns, rows in order within a span, so the
/// result does not depend on the number of threads).
pub fn extremes(
    model: &Model,
    side: Side,
    basis: Basis,
    chunk: usize,
    mut tick: impl FnMut(usize) -> Result<()>,
) -> Result<Extremes> {
    use crate::model::kernels::{matmul, Mat};
    use rayon::prelude::*;
    let (vocab, d) = (model.cfg.d_vocab, model.cfg.d_model);
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_device(&candle_core::Device::Cpu)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?)
    };
    // The vocabulary as the product's right operand [d_model, vocab]: W_U as stored, W_E
    // ([vocab, d_model]) read transposed; products by lantern's f32 kernel, on the CPU.
    let (columns, transposed) = match basis {
        Basis::Embed => (host(&model.weights.w_e)?, true),
        Basis::Unembed => (host(&model.weights.w_u)?, false),
    };
    let columns = if transposed { Mat::t(&columns) } else { Mat::n(&columns) };
    let mut neuron_best = Vec::with_capacity(model.cfg.n_neurons());
    let mut token_best = vec![BestTwo::NONE; vocab];
    let mut s = vec![0f32; chunk.max(1) * vocab];
    for layer in 0..model.cfg.n_layers {
        let w = host(&neuron_vectors(model, layer, side)?)?;
        let d_mlp = w.len() / d;
        for start in (0..d_mlp).step_by(chunk.max(1)) {
            let n = chunk.min(d_mlp - start);
            let s = &mut s[..n * vocab];
            matmul(s, Mat::n(&w[start * d..(start + n) * d]), columns, n, vocab, d, false);
            let s = &*s;
            let first = (layer * d_mlp + start) as u32;
            neuron_best.par_extend(s.par_chunks(vocab).map(|row| {
                let mut b = BestTwo::NONE;
                row.iter().enumerate().for_each(|(t, &x)| b.add(t as u32, x));
                (b.0, b.1, b.2)
            }));
            token_best.par_chunks_mut(TOKEN_SPAN).enumerate().for_each(|(span, best)| {
                let (t0, len) = (span * TOKEN_SPAN, best.len());
                for (i, row) in s.chunks(vocab).enumerate() {
                    for (b, &x) in best.iter_mut().zip(&row[t0..t0 + len]) {
                        b.add(first + i as u32, x);
                    }
                }
            });
            tick(n)?;
        }
    }
    let token_best = token_best.into_iter().map(|b| (b.0, b.1, b.2)).collect();
    Ok(Extremes { neuron_best, token_best })
}

/// Monotokenic score of a neuron: it is its top token's top neuron, scored by
/// (top1 − top2 token gap) × (top1 − top2 neuron gap); `None` when it is not.
pub fn monotokenic(e: &Extremes, neuron: usize) -> Option<f32> {
    let (tok, s1, s2) = e.neuron_best[neuron];
    let (best, n1, n2) = e.token_best[tok as usize];
    (best as usize == neuron).then_some((s1 - s2) * (n1 - n2))
}

/// The k highest (or lowest) entries of a score vector: (index, value).
pub fn top_entries(v: &[f32], k: usize, lowest: bool) -> Vec<(usize, f32)> {
    let order = |a: &usize, b: &usize| {
        let o = if lowest { v[*a].total_cmp(&v[*b]) } else { v[*b].total_cmp(&v[*a]) };
        o.then(a.cmp(b))
    };
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let k = k.min(idx.len());
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx.into_iter().take(k).map(|i| (i, v[i])).collect()
}

/// Scores of every neuron of every layer against one token: [layers · d_mlp].
pub fn token_column(model: &Model, token: u32, side: Side, basis: Basis) -> Result<Vec<f32>> {
    if token as usize >= model.cfg.d_vocab {
        bail!("token {token} is outside the vocabulary ({})", model.cfg.d_vocab);
    }
    let v = vocab_matrix(model, basis)?.get(token as usize)?;
    let mut out = Vec::with_capacity(model.cfg.n_neurons());
    for layer in 0..model.cfg.n_layers {
        let w = neuron_vectors(model, layer, side)?;
        out.extend(w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?.to_vec1::<f32>()?);
    }
    Ok(out)
}
