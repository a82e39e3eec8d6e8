//! The loss and its gradient for a batch of token rows, by hand on the CPU: a forward pass that keeps
//! what the backward needs (LayerNorm x̂ and scales, q/k/v, attention patterns, MLP pre- and
//! post-activations), then the backward into a flat gradient laid out like the parameters.

use super::kernels as tk;
use super::Trainable;
use crate::model::kernels::{self, matmul, AttnDims, HeadView, Mat, Pointwise};
use crate::model::{Activation, ModelConfig};
use anyhow::{bail, Result};

/// The shapes of a step: `n` tokens in rows of `ctx`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    ctx: usize,
    d: usize,
    m: usize,
    v: usize,
}

/// What one block's forward leaves for its backward.
#[derive(Default)]
struct BlockTape {
    xhat1: Vec<f32>,
    scale1: Vec<f32>,
    y1: Vec<f32>,
    qkv: Vec<f32>,
    pattern: Vec<f32>,
    z: Vec<f32>,
    xhat2: Vec<f32>,
    scale2: Vec<f32>,
    y2: Vec<f32>,
    post: Vec<f32>,
    /// act′(pre).
    dact: Vec<f32>,
}

/// The buffers of a step, kept from one step to the next: once the shapes are known, a step
/// allocates and zeroes nothing but the attention outputs.
#[derive(Default)]
pub struct Step {
    blocks: Vec<BlockTape>,
    xhatf: Vec<f32>,
    scalef: Vec<f32>,
    yf: Vec<f32>,
    /// Logits [rows, vocab], then their gradient.
    logits: Vec<f32>,
    /// The residual stream, then its gradient.
    x: Vec<f32>,
    /// Branch outputs in the forward; gradients at LayerNorm outputs in the backward.
    tmp: Vec<f32>,
    /// Pre-activations in the forward, their gradient in the backward.
    pre: Vec<f32>,
    dz: Vec<f32>,
    dqkv: Vec<f32>,
}

/// `v` resized to `len` (zeroing only what it grows by).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    v
}

fn pointwise(act: Activation) -> Result<Pointwise> {
    Ok(match act {
        Activation::GeluNew => Pointwise::GeluNew,
        Activation::Gelu => Pointwise::Gelu,
        Activation::Relu => Pointwise::Relu,
        Activation::SoluLn => bail!("solu_ln is not trainable"),
    })
}

fn attn_dims(cfg: &ModelConfig, batch: usize, ctx: usize) -> AttnDims {
    AttnDims {
        batch,
        pos: ctx,
        heads: cfg.n_heads,
        d_head: cfg.d_head,
        scale: (1.0 / (cfg.d_head as f64).sqrt()) as f32,
        masked: cfg.masked_score,
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

/// out [rows, n] = x [rows, k] · w [k, n] + b: the bias is written first and the GEMM adds to it
/// (the inference kernel's order, so the same bits).
fn linear(x: &[f32], w: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let n = b.len();
    for row in out.chunks_mut(n) {
        row.copy_from_slice(b);
    }
    matmul(out, Mat::n(x), Mat::n(w), out.len() / n, n, k, true);
}

/// The targets of rows [batch, ctx]: the next token, none at each row's last position.
fn targets(tokens: &[u32], ctx: usize) -> Vec<Option<u32>> {
    (0..tokens.len()).map(|i| (i % ctx + 1 < ctx).then(|| tokens[i + 1])).collect()
}

fn check(cfg: &ModelConfig, tokens: &[u32], ctx: usize) -> Result<Dims> {
    if ctx < 2 || ctx > cfg.n_ctx || tokens.is_empty() || tokens.len() % ctx != 0 {
        bail!("{} tokens are not rows of {ctx} (context {})", tokens.len(), cfg.n_ctx);
    }
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= cfg.d_vocab) {
        bail!("token {t} is outside the vocabulary of {}", cfg.d_vocab);
    }
    Ok(Dims { n: tokens.len(), ctx, d: cfg.d_model, m: cfg.d_mlp, v: cfg.d_vocab })
}

impl Step {
    /// The forward pass, keeping what the backward needs; leaves the logits in `self.logits`.
    fn forward(&mut self, t: &Trainable, tokens: &[u32], dm: Dims) -> Result<()> {
        let (cfg, lay, p) = (&t.cfg, &t.layout, &t.params[..]);
        let Dims { n, ctx, d, m, v } = dm;
        let act = pointwise(cfg.act)?;
        let eps = cfg.eps as f32;
        let (w_e, w_pos) = (lay.w_e.of(p), lay.w_pos.of(p));
        let x = sized(&mut self.x, n * d);
        for (r, (row, &tok)) in x.chunks_mut(d).zip(tokens).enumerate() {
            let (e, q) = (&w_e[tok as usize * d..][..d], &w_pos[(r % ctx) * d..][..d]);
            for ((o, a), b) in row.iter_mut().zip(e).zip(q) {
                *o = *a + *b;
            }
        }
        let dims = attn_dims(cfg, n / ctx, ctx);
        self.blocks.resize_with(lay.blocks.len(), BlockTape::default);
        let tmp = sized(&mut self.tmp, n * d);
        let pre = sized(&mut self.pre, n * m);
        for (s, t) in lay.blocks.iter().zip(&mut self.blocks) {
            let (xhat1, y1) = (sized(&mut t.xhat1, n * d), sized(&mut t.y1, n * d));
            tk::layer_norm(x, d, s.ln1_w.of(p), s.ln1_b.of(p), eps, xhat1, y1, sized(&mut t.scale1, n));
            linear(&t.y1, s.w_qkv.of(p), s.b_qkv.of(p), d, sized(&mut t.qkv, n * 3 * d));
            let view = |offset| HeadView { data: &t.qkv, offset, row_stride: 3 * d };
            let (z, _, pattern) = kernels::attention(view(0), view(d), view(2 * d), dims, false, true);
            (t.z, t.pattern) = (z, pattern.expect("the pattern was asked for"));
            linear(&t.z, s.w_o.of(p), s.b_o.of(p), d, tmp);
            add(x, tmp);
            let (xhat2, y2) = (sized(&mut t.xhat2, n * d), sized(&mut t.y2, n * d));
            tk::layer_norm(x, d, s.ln2_w.of(p), s.ln2_b.of(p), eps, xhat2, y2, sized(&mut t.scale2, n));
            linear(&t.y2, s.w_in.of(p), s.b_in.of(p), d, pre);
            tk::activation(pre, act, sized(&mut t.post, n * m), sized(&mut t.dact, n * m));
            linear(&t.post, s.w_out.of(p), s.b_out.of(p), m, tmp);
            add(x, tmp);
        }
        let (xhatf, yf) = (sized(&mut self.xhatf, n * d), sized(&mut self.yf, n * d));
        tk::layer_norm(x, d, lay.lnf_w.of(p), lay.lnf_b.of(p), eps, xhatf, yf, sized(&mut self.scalef, n));
        matmul(sized(&mut self.logits, n * v), Mat::n(&self.yf), Mat::t(w_e), n, v, d, false);
        Ok(())
    }

    /// Mean next-token cross-entropy of rows of `ctx` tokens and its gradient, written into `grad`
    /// (the parameters' layout; every entry is overwritten).
    pub fn loss_and_grad(&mut self, t: &Trainable, tokens: &[u32], ctx: usize, grad: &mut [f32]) -> Result<f32> {
        let dm = check(&t.cfg, tokens, ctx)?;
        let Dims { n, d, m, v, .. } = dm;
        self.forward(t, tokens, dm)?;
        let (cfg, lay, p) = (&t.cfg, &t.layout, &t.params[..]);
        let loss = tk::cross_entropy(&mut self.logits, v, &targets(tokens, ctx));
        let (dlogits, w_e) = (&self.logits, lay.w_e.of(p));
        // Unembedding (tied): dW_E = dlogitsᵀ·y, dy = dlogits·W_E.
        matmul(lay.w_e.of_mut(grad), Mat::t(dlogits), Mat::n(&self.yf), v, d, n, false);
        let dy = sized(&mut self.tmp, n * d);
        matmul(dy, Mat::n(dlogits), Mat::n(w_e), n, d, v, false);
        let dx = sized(&mut self.x, n * d);
        dx.fill(0.0);
        {
            let (dw, db) = two_mut(grad, &lay.lnf_w.range, &lay.lnf_b.range);
            tk::layer_norm_backward(dy, &self.xhatf, &self.scalef, lay.lnf_w.of(p), d, dx, dw, db);
        }
        let dims = attn_dims(cfg, n / ctx, ctx);
        let (dpre, dz, dqkv) =
            (sized(&mut self.pre, n * m), sized(&mut self.dz, n * d), sized(&mut self.dqkv, n * 3 * d));
        for (s, t) in lay.blocks.iter().zip(&self.blocks).rev() {
            // MLP.
            tk::col_sums(dx, None, d, s.b_out.of_mut(grad));
            matmul(s.w_out.of_mut(grad), Mat::t(&t.post), Mat::n(dx), m, d, n, false);
            matmul(dpre, Mat::n(dx), Mat::t(s.w_out.of(p)), n, m, d, false);
            tk::mul_in_place(dpre, &t.dact);
            tk::col_sums(dpre, None, m, s.b_in.of_mut(grad));
            matmul(s.w_in.of_mut(grad), Mat::t(&t.y2), Mat::n(dpre), d, m, n, false);
            matmul(dy, Mat::n(dpre), Mat::t(s.w_in.of(p)), n, d, m, false);
            {
                let (dw, db) = two_mut(grad, &s.ln2_w.range, &s.ln2_b.range);
                tk::layer_norm_backward(dy, &t.xhat2, &t.scale2, s.ln2_w.of(p), d, dx, dw, db);
            }
            // Attention.
            tk::col_sums(dx, None, d, s.b_o.of_mut(grad));
            matmul(s.w_o.of_mut(grad), Mat::t(&t.z), Mat::n(dx), d, d, n, false);
            matmul(dz, Mat::n(dx), Mat::t(s.w_o.of(p)), n, d, d, false);
            tk::attention_backward(&t.qkv, &t.pattern, dz, dims, dqkv);
            tk::col_sums(dqkv, None, 3 * d, s.b_qkv.of_mut(grad));
            matmul(s.w_qkv.of_mut(grad), Mat::t(&t.y1), Mat::n(dqkv), d, 3 * d, n, false);
            matmul(dy, Mat::n(dqkv), Mat::t(s.w_qkv.of(p)), n, d, 3 * d, false);
            {
                let (dw, db) = two_mut(grad, &s.ln1_w.range, &s.ln1_b.range);
                tk::layer_norm_backward(dy, &t.xhat1, &t.scale1, s.ln1_w.of(p), d, dx, dw, db);
            }
        }
        // Embeddings: token rows and positions, in row order.
        lay.w_pos.of_mut(grad).fill(0.0);
        for (r, (g, &tok)) in dx.chunks(d).zip(tokens).enumerate() {
            add(&mut lay.w_e.of_mut(grad)[tok as usize * d..][..d], g);
            add(&mut lay.w_pos.of_mut(grad)[(r % ctx) * d..][..d], g);
        }
        Ok(loss)
    }

    /// Sum and count of next-token cross-entropy over rows of `ctx` tokens (forward only).
    pub fn loss_sum(&mut self, t: &Trainable, tokens: &[u32], ctx: usize) -> Result<(f64, usize)> {
        let dm = check(&t.cfg, tokens, ctx)?;
        self.forward(t, tokens, dm)?;
        Ok(tk::cross_entropy_sum(&self.logits, dm.v, &targets(tokens, ctx)))
    }
}

/// Two disjoint ranges of one buffer, both mutable.
fn two_mut<'a>(
    buf: &'a mut [f32],
    a: &std::ops::Range<usize>,
    b: &std::ops::Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    assert!(a.end <= b.start, "ranges out of order");
    let (lo, hi) = buf.split_at_mut(b.start);
    (&mut lo[a.clone()], &mut hi[..b.end - b.start])
}

#[cfg(test)]
mod tests {
    use super::super::params::{Layout, Slot};
    use super::*;
    use candle_core::{DType, Device, Tensor, Var, D};

    fn tokens(n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 7919 + i * i * 31) % vocab) as u32).collect()
    }

    /// GPT-2's loss written with candle's differentiable ops, independently of the model code.
    fn reference_loss(
        cfg: &ModelConfig,
        lay: &Layout,
        var: &dyn Fn(&Slot) -> Tensor,
        toks: &[u32],
        ctx: usize,
    ) -> Tensor {
        let dev = Device::Cpu;
        let (b, d, h, dh) = (toks.len() / ctx, cfg.d_model, cfg.n_heads, cfg.d_head);
        let ln = |x: &Tensor, w: &Slot, bias: &Slot| -> Tensor {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
            let scale = (xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + cfg.eps).unwrap().sqrt().unwrap();
            xc.broadcast_div(&scale).unwrap().broadcast_mul(&var(w)).unwrap().broadcast_add(&var(bias)).unwrap()
        };
        let lin = |x: &Tensor, w: &Slot, bias: &Slot| x.matmul(&var(w)).unwrap().broadcast_add(&var(bias)).unwrap();
        let ids = Tensor::from_slice(toks, toks.len(), &dev).unwrap();
        let pos = var(&lay.w_pos).narrow(0, 0, ctx).unwrap().repeat((b, 1)).unwrap();
        let mut x = (var(&lay.w_e).index_select(&ids, 0).unwrap() + pos).unwrap();
        let mask: Vec<f32> = (0..ctx * ctx).map(|i| if i % ctx > i / ctx { -1e9 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (ctx, ctx), &dev).unwrap();
        for s in &lay.blocks {
            let qkv = lin(&ln(&x, &s.ln1_w, &s.ln1_b), &s.w_qkv, &s.b_qkv).reshape((b, ctx, 3, h, dh)).unwrap();
            let part =
                |i| qkv.narrow(2, i, 1).unwrap().squeeze(2).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let (q, k, v) = (part(0), part(1), part(2));
            let scores =
                (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap().broadcast_add(&mask).unwrap();
            let pattern = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
            let z = pattern.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b * ctx, d)).unwrap();
            x = (x + lin(&z, &s.w_o, &s.b_o)).unwrap();
            let pre = lin(&ln(&x, &s.ln2_w, &s.ln2_b), &s.w_in, &s.b_in);
            let post = match cfg.act {
                Activation::GeluNew => pre.gelu().unwrap(),
                Activation::Gelu => pre.gelu_erf().unwrap(),
                _ => pre.relu().unwrap(),
            };
            x = (x + lin(&post, &s.w_out, &s.b_out)).unwrap();
        }
        let logits = ln(&x, &lay.lnf_w, &lay.lnf_b).matmul(&var(&lay.w_e).t().unwrap()).unwrap();
        let logits = logits.reshape((b, ctx, cfg.d_vocab)).unwrap().narrow(1, 0, ctx - 1).unwrap();
        let targets = ids.reshape((b, ctx)).unwrap().narrow(1, 1, ctx - 1).unwrap();
        candle_nn::loss::cross_entropy(
            &logits.reshape((b * (ctx - 1), cfg.d_vocab)).unwrap(),
            &targets.reshape(b * (ctx - 1)).unwrap(),
        )
        .unwrap()
    }

    /// The hand-written loss and gradient equal candle's autograd of the same loss.
    #[test]
    fn gradients_match_autograd() {
        for act in [Activation::GeluNew, Activation::Gelu, Activation::Relu] {
            let mut cfg = ModelConfig::gpt2(2, 32, 4, 64, 97, 40);
            cfg.act = act;
            let mut t = Trainable::init(cfg.clone(), 11).unwrap();
            let lay = t.layout.clone();
            // Larger weights than at initialisation (sharper attention, saturating GELUs) and
            // non-trivial LayerNorms and biases.
            for (i, v) in t.params.iter_mut().enumerate() {
                *v = if i < lay.decayed { *v * 8.0 } else { *v + 0.05 * ((i * 37 % 11) as f32 - 5.0) };
            }
            // Context 36: two causal row blocks, the second one partial.
            let (ctx, batch) = (36, 3);
            let toks = tokens(batch * ctx, cfg.d_vocab);
            let mut grad = vec![f32::NAN; lay.len];
            let loss = Step::default().loss_and_grad(&t, &toks, ctx, &mut grad).unwrap();
            let p = &t.params;

            let dev = Device::Cpu;
            let mut slots: Vec<Slot> = vec![lay.w_e.clone(), lay.w_pos.clone(), lay.lnf_w.clone(), lay.lnf_b.clone()];
            for s in &lay.blocks {
                slots.extend(
                    [&s.w_qkv, &s.w_o, &s.w_in, &s.w_out, &s.ln1_w, &s.ln1_b, &s.b_qkv, &s.b_o, &s.ln2_w]
                        .map(|x| x.clone()),
                );
                slots.extend([s.ln2_b.clone(), s.b_in.clone(), s.b_out.clone()]);
            }
            assert_eq!(slots.iter().map(|s| s.range.len()).sum::<usize>(), lay.len);
            let vars: Vec<(Slot, Var)> = slots
                .into_iter()
                .map(|s| {
                    let v = Var::from_tensor(&Tensor::from_slice(s.of(p), s.shape.as_slice(), &dev).unwrap()).unwrap();
                    (s, v)
                })
                .collect();
            let var = |s: &Slot| vars.iter().find(|(x, _)| x.range == s.range).unwrap().1.as_tensor().clone();
            let want = reference_loss(&cfg, &lay, &var, &toks, ctx);
            let want_loss = want.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap();
            assert!((want_loss - loss).abs() < 1e-4, "{act:?}: loss {loss} vs {want_loss}");
            let grads = want.backward().unwrap();
            for (s, v) in &vars {
                let g: Vec<f32> = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let ours = s.of(&grad);
                let scale = g.iter().fold(0f32, |a, b| a.max(b.abs())).max(1e-6);
                let err = g.iter().zip(ours).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(err <= 1e-4 * scale, "{act:?}: slot {:?} max error {err} (largest gradient {scale})", s.shape);
            }
        }
    }

    /// The training forward's loss is the loss of the same weights run as a `Model`.
    #[test]
    fn forward_loss_matches_the_model() {
        let cfg = ModelConfig::gpt2(2, 32, 4, 64, 97, 40);
        let t = Trainable::init(cfg.clone(), 3).unwrap();
        let toks = tokens(4 * 36, cfg.d_vocab);
        let (sum, count) = Step::default().loss_sum(&t, &toks, 36).unwrap();
        let model = t.model().unwrap();
        let rows = Tensor::from_slice(&toks, (4, 36), &Device::Cpu).unwrap();
        let stats = crate::model::outputs::token_stats(
            &model.logits(&rows).unwrap(),
            &rows,
            crate::model::outputs::Wanted::LOSS,
        )
        .unwrap();
        let want: f64 = stats.loss.iter().map(|&l| l as f64).sum();
        assert_eq!(count, stats.loss.len());
        assert!((sum - want).abs() < 1e-5 * count as f64, "{sum} vs {want}");
    }
}
