//! Per-neuron weight statistics on (processed) weights, as the Universal Neurons study defines them:
//! norms, input bias, cos(w_in, w_out), the weight-decay penalty, vocabulary composition moments and
//! classes, neuron↔neuron and neuron↔attention-head composition.

use crate::model::Model;
use anyhow::Result;
use candle_core::{DType, Tensor, D};

/// Population moments of a sample (skew, kurtosis non-excess: a Gaussian has 3).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub mean: f64,
    pub var: f64,
    pub skew: f64,
    pub kurt: f64,
}

pub fn moments(x: &[f32]) -> Moments {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
    for &v in x {
        let d = v as f64 - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    let (var, m3, m4) = (m2 / n, m3 / n, m4 / n);
    if var <= 0.0 {
        return Moments { mean, var, skew: 0.0, kurt: 0.0 };
    }
    Moments { mean, var, skew: m3 / var.powf(1.5), kurt: m4 / (var * var) }
}

/// The study's output-neuron classes from the vocabulary moments of cos(W_U, w_out).
pub fn vocab_class(m: &Moments, kurt_threshold: f64, partition_var: f64) -> &'static str {
    if m.kurt > kurt_threshold {
        if m.skew > 0.0 {
            "prediction"
        } else {
            "suppression"
        }
    } else if m.var > partition_var {
        "partition"
    } else {
        "none"
    }
}

/// Basic per-neuron weight statistics of one layer.
#[derive(Clone, Debug)]
pub struct NeuronWeights {
    pub w_in_norm: Vec<f32>,
    pub w_out_norm: Vec<f32>,
    pub input_bias: Vec<f32>,
    pub in_out_sim: Vec<f32>,
    pub l2_penalty: Vec<f32>,
}

/// Euclidean norm of each row.
pub fn row_norms(x: &Tensor) -> Result<Tensor> {
    Ok(x.sqr()?.sum(D::Minus1)?.sqrt()?)
}

/// Rows scaled to unit norm.
pub fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&n)?)
}

/// w_in of every neuron of a layer as rows [d_mlp, d_model]; w_out likewise.
pub fn in_out(model: &Model, layer: usize) -> Result<(Tensor, Tensor)> {
    let b = &model.weights.blocks[layer];
    Ok((b.w_in.t()?.contiguous()?, b.w_out.clone()))
}

pub fn neuron_weights(model: &Model, layer: usize) -> Result<NeuronWeights> {
    let (w_in, w_out) = in_out(model, layer)?;
    let (ni, no) = (row_norms(&w_in)?, row_norms(&w_out)?);
    let dot = (&w_in * &w_out)?.sum(D::Minus1)?;
    let sim = (dot / (&ni * &no)?.clamp(1e-12, f64::INFINITY)?)?;
    let l2 = (ni.sqr()? + no.sqr()?)?;
    Ok(NeuronWeights {
        w_in_norm: ni.to_vec1()?,
        w_out_norm: no.to_vec1()?,
        input_bias: model.weights.blocks[layer].b_in.to_vec1()?,
        in_out_sim: sim.to_vec1()?,
        l2_penalty: l2.to_vec1()?,
    })
}

/// cos(v, w) for every vocabulary vector v (rows of `vocab`, unit-normed) and neuron vector w
/// (rows of `w`): [neurons, vocab].
pub fn vocab_cosines(w: &Tensor, vocab_unit: &Tensor) -> Result<Tensor> {
    Ok(unit_rows(w)?.matmul(&vocab_unit.t()?)?)
}

/// Composition of neurons with attention heads, normalised to [0, 1] (Universal Neurons §1.5):
/// with W_QK = W_Q W_Kᵀ (rows: query residual) and W_OV = W_V W_O (rows: input residual),
/// K = ‖W_QK ŵ_out‖/‖W_QK‖_F (the neuron writes into keys), Q = ‖W_QKᵀ ŵ_out‖/‖W_QK‖_F (into
/// queries), V = ‖W_OVᵀ ŵ_out‖/‖W_OV‖_F (into values), O = ‖W_OV ŵ_in‖/‖W_OV‖_F (the neuron reads
/// the head's output). Each is [neurons, heads] for one neuron layer and one head layer.
pub struct HeadComposition {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
}

/// ‖u_i · A‖ for rows u_i, through the Gram matrix: sqrt(u G uᵀ) with G = A Aᵀ.
fn norms_through(u: &Tensor, gram: &Tensor) -> Result<Tensor> {
    Ok(u.matmul(gram)?.mul(u)?.sum(D::Minus1)?.clamp(0.0, f64::INFINITY)?.sqrt()?)
}

pub fn head_composition(model: &Model, neuron_layer: usize, head_layer: usize) -> Result<HeadComposition> {
    let (w_in, w_out) = in_out(model, neuron_layer)?;
    let (wi, wo) = (unit_rows(&w_in)?, unit_rows(&w_out)?);
    let p = |n: &str| model.param(&format!("blocks.{head_layer}.attn.{n}"));
    let (w_q, w_k, w_v, w_o) = (p("W_Q")?, p("W_K")?, p("W_V")?, p("W_O")?);
    let (mut q, mut k, mut v, mut o) = (vec![], vec![], vec![], vec![]);
    for h in 0..model.cfg.n_heads {
        let (wq, wk, wv, wo_h) = (w_q.get(h)?, w_k.get(h)?, w_v.get(h)?, w_o.get(h)?); // [d,dh] ×3, [dh,d]
        let g_q = wq.t()?.matmul(&wq)?; // [dh, dh]
        let g_k = wk.t()?.matmul(&wk)?;
        let g_v = wv.t()?.matmul(&wv)?;
        let g_o = wo_h.matmul(&wo_h.t()?)?;
        let fro_qk = (&g_q * &g_k)?.sum_all()?.sqrt()?;
        let fro_ov = (&g_v * &g_o)?.sum_all()?.sqrt()?;
        // W_QK ŵ = W_Q (W_Kᵀ ŵ): rows u = ŵ·W_K, norm through W_Q.
        k.push(norms_through(&wo.matmul(&wk)?, &g_q)?.broadcast_div(&fro_qk)?);
        q.push(norms_through(&wo.matmul(&wq)?, &g_k)?.broadcast_div(&fro_qk)?);
        v.push(norms_through(&wo.matmul(&wv)?, &g_o)?.broadcast_div(&fro_ov)?);
        o.push(norms_through(&wi.matmul(&wo_h.t()?)?, &g_v)?.broadcast_div(&fro_ov)?);
    }
    let stack = |x: Vec<Tensor>| -> Result<Tensor> { Ok(Tensor::stack(&x, 1)?.to_dtype(DType::F32)?) };
    Ok(HeadComposition { q: stack(q)?, k: stack(k)?, v: stack(v)?, o: stack(o)? })
}
