//! CPU kernels of the training step that inference does not need: LayerNorm keeping x̂, the MLP
//! non-linearities with their derivatives, LayerNorm / causal-attention / cross-entropy backward,
//! column sums, the gradient norm and AdamW. Every reduction has a fixed order, so a step gives the same bits run after run.

use crate::model::kernels::{
    causal_blocks, erf, exp, lane_max, lane_sum, ln_row, multiversion, small_gemm, tanh, AttnDims, Pointwise, SendPtr,
    MIN_PAR_ELEMS,
};
use rayon::prelude::*;

/// Run `f` over matching chunks of `ROWS` rows (widths `a_w`, `b_w`) with the first row's index,
/// in parallel when the work is large enough.
fn par_rows(a: &[f32], a_w: usize, b: &mut [f32], b_w: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Send + Sync) {
    let (ca, cb) = (a_w * ROWS, b_w * ROWS);
    if b.len() < MIN_PAR_ELEMS {
        a.chunks(ca).zip(b.chunks_mut(cb)).enumerate().for_each(|(i, (x, y))| f(i * ROWS, x, y));
    } else {
        a.par_chunks(ca).zip(b.par_chunks_mut(cb)).enumerate().for_each(|(i, (x, y))| f(i * ROWS, x, y));
    }
}

/// Run `f` over matching chunks of two equally long slices, in parallel when they are long.
fn par_elems(a: &[f32], b: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Send + Sync) {
    const CHUNK: usize = 8192;
    if b.len() < MIN_PAR_ELEMS {
        f(a, b)
    } else {
        a.par_chunks(CHUNK).zip(b.par_chunks_mut(CHUNK)).for_each(|(x, y)| f(x, y));
    }
}

/// Matching chunks of x̂, y, scales and x.
type LnChunk<'a> = (((&'a mut [f32], &'a mut [f32]), &'a mut [f32]), &'a [f32]);

/// LayerNorm forward keeping what the backward needs: x̂ = (x − mean)/scale, y = x̂·w + b, and
/// the scale of every row (the same bits as the inference kernel's output).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &[f32],
    d: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
    xhat: &mut [f32],
    y: &mut [f32],
    scale: &mut [f32],
) {
    let job = |(((hs, ys), ss), xs): LnChunk| {
        for (((hr, yr), s), xr) in hs.chunks_mut(d).zip(ys.chunks_mut(d)).zip(ss.iter_mut()).zip(xs.chunks(d)) {
            *s = ln_row(xr, None, None, eps, hr);
            for (((o, h), w), b) in yr.iter_mut().zip(hr.iter()).zip(w).zip(b) {
                *o = *h * *w + *b;
            }
        }
    };
    let c = ROWS * d;
    if x.len() < MIN_PAR_ELEMS {
        xhat.chunks_mut(c).zip(y.chunks_mut(c)).zip(scale.chunks_mut(ROWS)).zip(x.chunks(c)).for_each(job);
    } else {
        xhat.par_chunks_mut(c)
            .zip(y.par_chunks_mut(c))
            .zip(scale.par_chunks_mut(ROWS))
            .zip(x.par_chunks(c))
            .for_each(job);
    }
}

/// Rows per parallel task of the row-wise kernels.
const ROWS: usize = 16;

/// Σ a·b with a fixed 16-lane layout.
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    acc.iter().sum()
}

multiversion! {
    /// dx += LayerNorm backward of one row: (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) / scale, dx̂ = dy·w.
    fn ln_backward_row(dy: &[f32], xhat: &[f32], w: &[f32], scale: f32, dx: &mut [f32], tmp: &mut [f32]) {
        let n = dy.len() as f32;
        for ((t, g), w) in tmp.iter_mut().zip(dy).zip(w) {
            *t = *g * *w;
        }
        let mean = lane_sum(tmp, |v| v) / n;
        let proj = lane_dot(tmp, xhat) / n;
        let inv = 1.0 / scale;
        for ((o, t), h) in dx.iter_mut().zip(tmp.iter()).zip(xhat) {
            *o += (*t - mean - *h * proj) * inv;
        }
    }
}

/// dx += the LayerNorm backward of dy; the weight and bias gradients go to `dw` and `db`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dy: &[f32],
    xhat: &[f32],
    scale: &[f32],
    w: &[f32],
    d: usize,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    par_rows(dy, d, dx, d, |r0, dys, dxs| {
        let mut tmp = vec![0f32; d];
        for (i, (g, o)) in dys.chunks(d).zip(dxs.chunks_mut(d)).enumerate() {
            let r = r0 + i;
            ln_backward_row(g, &xhat[r * d..(r + 1) * d], w, scale[r], o, &mut tmp);
        }
    });
    col_sums(dy, None, d, db);
    col_sums(dy, Some(xhat), d, dw);
}

multiversion! {
    /// out[j] = Σ_rows x[r, c0 + j] (· y[r, c0 + j]) for the columns of one block.
    fn col_sums_block(x: &[f32], y: Option<&[f32]>, n: usize, c0: usize, out: &mut [f32]) {
        out.fill(0.0);
        let w = out.len();
        for r in 0..x.len() / n {
            let xr = &x[r * n + c0..][..w];
            match y {
                Some(y) => {
                    for ((o, a), b) in out.iter_mut().zip(xr).zip(&y[r * n + c0..][..w]) {
                        *o += *a * *b;
                    }
                }
                None => {
                    for (o, a) in out.iter_mut().zip(xr) {
                        *o += *a;
                    }
                }
            }
        }
    }
}

/// out[j] = Σ_rows x[r, j] (· y[r, j] when given), rows added in order.
pub fn col_sums(x: &[f32], y: Option<&[f32]>, n: usize, out: &mut [f32]) {
    const COLS: usize = 64;
    let job = |(c, o): (usize, &mut [f32])| col_sums_block(x, y, n, c * COLS, o);
    if x.len() < MIN_PAR_ELEMS {
        out.chunks_mut(COLS).enumerate().for_each(job);
    } else {
        out.par_chunks_mut(COLS).enumerate().for_each(job);
    }
}

/// GELU (tanh form) and its derivative from one tanh; the value has the inference kernel's bits.
#[inline(always)]
fn gelu_new_and_grad(x: f32) -> (f32, f32) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let th = tanh(C * (x + 0.044715 * x * x * x));
    (0.5 * x * (1.0 + th), 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * C * (1.0 + 3.0 * 0.044715 * x * x))
}

/// Exact GELU x·Φ(x) and its derivative Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_and_grad(x: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let e = erf(x * std::f32::consts::FRAC_1_SQRT_2);
    (0.5 * x * (1.0 + e), 0.5 * (1.0 + e) + x * INV_SQRT_2PI * exp(-0.5 * x * x))
}

#[inline(always)]
fn relu_and_grad(x: f32) -> (f32, f32) {
    if x > 0.0 {
        (x, 1.0)
    } else {
        (0.0, 0.0)
    }
}

#[inline(always)]
fn map2(pre: &[f32], post: &mut [f32], grad: &mut [f32], f: impl Fn(f32) -> (f32, f32)) {
    for ((x, o), g) in pre.iter().zip(post.iter_mut()).zip(grad.iter_mut()) {
        (*o, *g) = f(*x);
    }
}

multiversion! {
    fn act_chunk(pre: &[f32], post: &mut [f32], grad: &mut [f32], op: Pointwise) {
        match op {
            Pointwise::GeluNew => map2(pre, post, grad, gelu_new_and_grad),
            Pointwise::Gelu => map2(pre, post, grad, gelu_and_grad),
            Pointwise::Relu => map2(pre, post, grad, relu_and_grad),
        }
    }
}

/// The MLP non-linearity and its derivative at every pre-activation: post, act′(pre).
pub fn activation(pre: &[f32], op: Pointwise, post: &mut [f32], grad: &mut [f32]) {
    const CHUNK: usize = 8192;
    let job = |((x, o), g): ((&[f32], &mut [f32]), &mut [f32])| act_chunk(x, o, g, op);
    if pre.len() < MIN_PAR_ELEMS {
        job(((pre, post), grad));
    } else {
        pre.par_chunks(CHUNK).zip(post.par_chunks_mut(CHUNK)).zip(grad.par_chunks_mut(CHUNK)).for_each(job);
    }
}

multiversion! {
    fn mul_chunk(y: &[f32], x: &mut [f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a *= *b;
        }
    }
}

/// x ← x ⊙ y.
pub fn mul_in_place(x: &mut [f32], y: &[f32]) {
    par_elems(y, x, mul_chunk);
}

multiversion! {
    /// Softmax minus the one-hot target, times `weight`, in place; returns the row's loss.
    fn softmax_xent_row(x: &mut [f32], target: usize, weight: f32) -> f32 {
        let m = lane_max(x);
        let picked = x[target];
        for v in x.iter_mut() {
            *v = exp(*v - m);
        }
        let s = lane_sum(x, |v| v);
        let k = weight / s;
        for v in x.iter_mut() {
            *v *= k;
        }
        x[target] -= weight;
        m + s.ln() - picked
    }
}

/// Cross-entropy of logits [rows, v] against `targets` (None: the row has no target). The logits
/// are replaced by the gradient of the mean loss over the rows with a target; returns that mean.
pub fn cross_entropy(logits: &mut [f32], v: usize, targets: &[Option<u32>]) -> f32 {
    let count = targets.iter().filter(|t| t.is_some()).count().max(1);
    let weight = 1.0 / count as f32;
    let mut losses = vec![0f32; targets.len()];
    logits.par_chunks_mut(v).zip(losses.par_iter_mut()).zip(targets.par_iter()).for_each(|((x, l), t)| match t {
        Some(t) => *l = softmax_xent_row(x, *t as usize, weight),
        None => x.fill(0.0),
    });
    (losses.iter().map(|&l| l as f64).sum::<f64>() / count as f64) as f32
}

/// Mean cross-entropy of logits [rows, v] against `targets`, without gradients; returns (sum, count).
pub fn cross_entropy_sum(logits: &[f32], v: usize, targets: &[Option<u32>]) -> (f64, usize) {
    let losses: Vec<Option<f32>> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(x, t)| {
            t.map(|t| {
                let m = lane_max(x);
                m + lane_sum(x, |v| exp(v - m)).ln() - x[t as usize]
            })
        })
        .collect();
    let sum = losses.iter().flatten().map(|&l| l as f64).sum();
    (sum, losses.iter().flatten().count())
}

/// Backward of fused causal attention for q, k, v packed in `qkv` rows [q | k | v] of 3·heads·d_head
/// and the saved pattern [batch, heads, pos, pos]: writes every entry of dqkv (the layout of `qkv`).
pub fn attention_backward(qkv: &[f32], pattern: &[f32], dz: &[f32], d: AttnDims, dqkv: &mut [f32]) {
    let (t, dh) = (d.pos, d.d_head);
    let w = d.heads * dh;
    let (rs, zs) = (3 * w, w);
    assert!(dqkv.len() == d.batch * t * rs && qkv.len() == dqkv.len() && dz.len() == d.batch * t * zs);
    let out = SendPtr(dqkv.as_mut_ptr());
    (0..d.batch * d.heads).into_par_iter().for_each_init(
        || (vec![0f32; t * t], vec![0f32; t * t]),
        |(dp, ds), i| {
            let (b, h) = (i / d.heads, i % d.heads);
            let p = &pattern[i * t * t..(i + 1) * t * t];
            let base = b * t * rs + h * dh;
            let (q, k, v) = (qkv[base..].as_ptr(), qkv[base + w..].as_ptr(), qkv[base + 2 * w..].as_ptr());
            let dzp = dz[b * t * zs + h * dh..].as_ptr();
            // SAFETY: every product reads inside qkv / dz / the scratch blocks, and this (b, h) writes
            // only its own columns of dqkv (rows of batch b, head h's d_head columns of q, k and v).
            unsafe {
                let dst = offset(&out, base);
                // dP = dZ · Vᵀ on and below the diagonal.
                for (r0, rows, cols) in causal_blocks(t) {
                    small_gemm(rows, cols, dh, dp.as_mut_ptr().add(r0 * t), t, dzp.add(r0 * zs), zs, 1, v, 1, rs, 1.0);
                }
                // dS = P ⊙ (dP − Σ_j dP·P), zero above the diagonal.
                for r in 0..t {
                    let (pr, dpr, dsr) =
                        (&p[r * t..r * t + r + 1], &dp[r * t..r * t + r + 1], &mut ds[r * t..(r + 1) * t]);
                    let delta = softmax_grad_delta(pr, dpr);
                    for ((o, p), g) in dsr.iter_mut().zip(pr).zip(dpr) {
                        *o = *p * (*g - delta);
                    }
                    dsr[r + 1..].fill(0.0);
                }
                for (r0, rows, cols) in causal_blocks(t) {
                    // dQ = scale · dS · K (query rows r0.., key positions < cols).
                    small_gemm(rows, dh, cols, dst.add(r0 * rs), rs, ds.as_ptr().add(r0 * t), t, 1, k, rs, 1, d.scale);
                    // dK = scale · dSᵀ · Q and dV = Pᵀ · dZ for key rows r0.. (query rows r0..t).
                    let c0 = r0;
                    small_gemm(
                        rows,
                        dh,
                        t - c0,
                        dst.add(c0 * rs + w),
                        rs,
                        ds.as_ptr().add(c0 * t + c0),
                        1,
                        t,
                        q.add(c0 * rs),
                        rs,
                        1,
                        d.scale,
                    );
                    small_gemm(
                        rows,
                        dh,
                        t - c0,
                        dst.add(c0 * rs + 2 * w),
                        rs,
                        p.as_ptr().add(c0 * t + c0),
                        1,
                        t,
                        dzp.add(c0 * zs),
                        zs,
                        1,
                        1.0,
                    );
                }
            }
        },
    );
}

/// `p.0 + off` (a function, so closures capture the whole `SendPtr`).
unsafe fn offset(p: &SendPtr, off: usize) -> *mut f32 {
    p.0.add(off)
}

multiversion! {
    /// Σ_j dP·P over one row of the pattern.
    fn softmax_grad_delta(p: &[f32], dp: &[f32]) -> f32 {
        lane_dot(p, dp)
    }
}

/// Σ g² of the whole gradient, in f64 over fixed chunks (the same bits whatever the thread count).
pub fn sum_squares(g: &[f32]) -> f64 {
    let parts: Vec<f64> = g.par_chunks(1 << 14).map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum()).collect();
    parts.iter().sum()
}

/// One AdamW update (candle-nn's formula: decoupled decay θ·(1 − lr·λ), bias-corrected moments).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1 / (1 − β₁ᵗ) and 1 / (1 − β₂ᵗ).
    pub scale_m: f32,
    pub scale_v: f32,
    /// Factor on the gradient (global clipping).
    pub grad_scale: f32,
}

multiversion! {
    fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
        let keep = 1.0 - s.lr * s.weight_decay;
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = *g * s.grad_scale;
            *m = *m * s.beta1 + g * (1.0 - s.beta1);
            *v = *v * s.beta2 + g * g * (1.0 - s.beta2);
            let m_hat = *m * s.scale_m;
            let v_hat = *v * s.scale_v;
            *p = *p * keep - s.lr * (m_hat / (v_hat.sqrt() + s.eps));
        }
    }
}

/// AdamW over parameters, gradients and both moments (all the same length).
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| adamw_chunk(p, g, m, v, s));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_gradients_match_finite_differences() {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0 + 0.005).collect();
        for op in [Pointwise::GeluNew, Pointwise::Gelu, Pointwise::Relu] {
            let run = |x: &[f32]| {
                let (mut post, mut grad) = (vec![0f32; x.len()], vec![0f32; x.len()]);
                activation(x, op, &mut post, &mut grad);
                (post, grad)
            };
            let (post, grad) = run(&xs);
            assert_eq!(post, crate::model::kernels::pointwise(&xs, op), "values differ from inference");
            let h = 1e-3f32;
            let up: Vec<f32> = xs.iter().map(|x| x + h).collect();
            let down: Vec<f32> = xs.iter().map(|x| x - h).collect();
            let (a, b) = (run(&up).0, run(&down).0);
            for i in 0..xs.len() {
                let fd = (a[i] - b[i]) / (2.0 * h);
                assert!((grad[i] - fd).abs() < 2e-3, "{}: {} vs {fd} at {}", i, grad[i], xs[i]);
            }
        }
    }
}
