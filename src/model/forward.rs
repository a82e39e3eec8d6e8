//! The hooked forward pass: every TL hook point fires in order; captures go to a sink, interventions
//! rewrite activations; the pass stops after the last layer it needs and can start from a residual.

use super::config::{Activation, ModelConfig};
use super::hooks::{BlockSite, HookPoint};
use super::intervene::Intervention;
use super::kernels::{self, AttnDims, HeadView, Pointwise};
use super::weights::{BlockWeights, Ln};
use super::Model;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Storage, Tensor, D};
use std::collections::BTreeSet;

/// Where a pass starts.
pub enum Start<'a> {
    /// Token ids [batch, pos] (u32 or i64).
    Tokens(&'a Tensor),
    /// The residual stream entering block `layer` ([batch, pos, d_model]).
    Resid { layer: usize, resid: Tensor },
}

/// What a pass must produce.
#[derive(Default)]
pub struct Request<'a> {
    pub capture: BTreeSet<HookPoint>,
    pub interventions: &'a [Intervention],
    /// Compute the logits (otherwise stop after the last layer a capture needs).
    pub logits: bool,
    /// Unembed only the last position (logits [batch, 1, vocab]).
    pub last_only: bool,
}

impl<'a> Request<'a> {
    pub fn logits() -> Self {
        Request { logits: true, ..Default::default() }
    }
    pub fn capture(hooks: impl IntoIterator<Item = HookPoint>) -> Self {
        Request { capture: hooks.into_iter().collect(), ..Default::default() }
    }
    pub fn with_logits(mut self) -> Self {
        self.logits = true;
        self
    }
    pub fn last_position_only(mut self) -> Self {
        self.last_only = true;
        self
    }
    pub fn with_interventions(mut self, iv: &'a [Intervention]) -> Self {
        self.interventions = iv;
        self
    }
}

/// Receives captured activations (contiguous) as they are produced.
pub type Sink<'s> = dyn FnMut(HookPoint, Tensor) -> Result<()> + 's;

struct Hooks<'r, 's> {
    req: &'r Request<'r>,
    sink: &'r mut Sink<'s>,
    active: BTreeSet<HookPoint>,
}

impl Hooks<'_, '_> {
    fn active(&self, p: HookPoint) -> bool {
        self.active.contains(&p)
    }
    fn intervened(&self, p: HookPoint) -> bool {
        self.req.interventions.iter().any(|i| i.hook == p)
    }
    fn fire(&mut self, p: HookPoint, x: Tensor) -> Result<Tensor> {
        if !self.active(p) {
            return Ok(x);
        }
        let mut x = x;
        for iv in self.req.interventions.iter().filter(|i| i.hook == p) {
            x = iv.apply(&x).with_context(|| format!("intervention at {p}"))?;
        }
        if self.req.capture.contains(&p) {
            (self.sink)(p, x.contiguous()?)?;
        }
        Ok(x)
    }
}

/// Run `f` on the f32 data of a CPU tensor (made contiguous first).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(cs) = &*s else { bail!("tensor is not on the CPU") };
    let (a, b) = l.contiguous_offsets().context("tensor is not contiguous")?;
    Ok(f(&cs.as_slice::<f32>()?[a..b]))
}

fn cpu_tensor(v: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// x [.., k] @ w [k, n] + b, flattening the leading axes. On the CPU the bias is the GEMM's
/// initial output (one pass, one allocation).
fn linear(x: &Tensor, w: &Tensor, b: &Tensor, fused: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let n = w.dim(1)?;
    let rows = x.elem_count() / k;
    let mut out = dims;
    *out.last_mut().unwrap() = n;
    if fused {
        let y = with_f32(x, |xs| with_f32(w, |ws| with_f32(b, |bs| kernels::linear(xs, ws, bs, rows, k, n))))???;
        return cpu_tensor(y, &out);
    }
    let y = x.reshape((rows, k))?.matmul(w)?.broadcast_add(b)?;
    Ok(y.reshape(out)?)
}

impl Model {
    /// Whether the fused CPU kernels are used (else portable tensor ops).
    fn fused(&self) -> bool {
        self.device.is_cpu() && !self.portable_ops
    }

    /// LayerNorm with TL's `hook_scale` / `hook_normalized`; a rewritten scale is honoured.
    fn layer_norm(
        &self,
        x: &Tensor,
        ln: &Ln,
        scale_hook: HookPoint,
        norm_hook: HookPoint,
        h: &mut Hooks,
    ) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let eps = self.cfg.eps;
        let (normalized, scale) = if self.fused() {
            let (w, b) = (
                ln.w.as_ref().map(|t| t.to_vec1::<f32>()).transpose()?,
                ln.b.as_ref().map(|t| t.to_vec1::<f32>()).transpose()?,
            );
            let (n, s) = with_f32(x, |xs| kernels::layer_norm(xs, d, w.as_deref(), b.as_deref(), eps as f32))?;
            let mut sshape = x.dims().to_vec();
            *sshape.last_mut().unwrap() = 1;
            (cpu_tensor(n, x.dims())?, cpu_tensor(s, &sshape)?)
        } else {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let scale = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
            (self.ln_affine(&xc.broadcast_div(&scale)?, ln)?, scale)
        };
        let new_scale = h.fire(scale_hook, scale.clone())?;
        let normalized = if h.intervened(scale_hook) {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            self.ln_affine(&xc.broadcast_div(&new_scale)?, ln)?
        } else {
            normalized
        };
        h.fire(norm_hook, normalized)
    }

    fn ln_affine(&self, x: &Tensor, ln: &Ln) -> Result<Tensor> {
        let mut y = x.clone();
        if let Some(w) = &ln.w {
            y = y.broadcast_mul(w)?;
        }
        if let Some(b) = &ln.b {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    }

    /// Run the model. Captured hooks go to `sink`; returns the logits when requested.
    pub fn forward(&self, start: Start, req: &Request, sink: &mut Sink) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        let mut active: BTreeSet<HookPoint> = req.capture.clone();
        active.extend(req.interventions.iter().map(|i| i.hook));
        for p in &active {
            if !p.exists_in(cfg) {
                bail!("model has no hook point {p}");
            }
        }
        let last_layer = if req.logits
            || active.iter().any(|p| p.layer().is_none() && !matches!(p, HookPoint::Embed | HookPoint::PosEmbed))
        {
            cfg.n_layers
        } else {
            active.iter().filter_map(|p| p.layer()).max().map(|l| l + 1).unwrap_or(0)
        };
        let mut h = Hooks { req, sink, active };
        let (first, mut resid) = match start {
            Start::Tokens(tokens) => (0, self.embed(tokens, &mut h)?),
            Start::Resid { layer, resid } => (layer, resid),
        };
        for l in first..last_layer {
            resid = self.block(l, resid, &mut h)?;
        }
        if last_layer < cfg.n_layers {
            return Ok(None);
        }
        let normalized = self.layer_norm(
            &resid,
            &self.weights.ln_final,
            HookPoint::LnFinalScale,
            HookPoint::LnFinalNormalized,
            &mut h,
        )?;
        if !req.logits {
            return Ok(None);
        }
        let normalized =
            if req.last_only { normalized.narrow(1, normalized.dim(1)? - 1, 1)?.contiguous()? } else { normalized };
        Ok(Some(linear(&normalized, &self.weights.w_u, &self.weights.b_u, self.fused())?))
    }

    fn embed(&self, tokens: &Tensor, h: &mut Hooks) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if t > self.cfg.n_ctx {
            bail!("sequence of {t} tokens is longer than the model's context ({})", self.cfg.n_ctx);
        }
        // Tokens may come from anywhere (a golden file, a host batch): the lookup runs where the weights are.
        let ids = tokens.to_dtype(DType::U32)?.flatten_all()?.to_device(&self.device)?;
        let embed = self.weights.w_e.index_select(&ids, 0)?.reshape((b, t, self.cfg.d_model))?;
        let embed = h.fire(HookPoint::Embed, embed)?;
        match &self.weights.w_pos {
            Some(w_pos) => {
                let pos = w_pos.narrow(0, 0, t)?.unsqueeze(0)?.broadcast_as((b, t, self.cfg.d_model))?;
                let pos = h.fire(HookPoint::PosEmbed, pos.contiguous()?)?;
                Ok((embed + pos)?)
            }
            None => Ok(embed),
        }
    }

    fn block(&self, l: usize, resid: Tensor, h: &mut Hooks) -> Result<Tensor> {
        let cfg = &self.cfg;
        let w = &self.weights.blocks[l];
        let hp = |s| HookPoint::Block(l, s);
        let resid_pre = h.fire(hp(BlockSite::ResidPre), resid)?;
        let n1 = self.layer_norm(&resid_pre, &w.ln1, hp(BlockSite::Ln1Scale), hp(BlockSite::Ln1Normalized), h)?;
        let attn_out = self.attention(l, &n1, w, h)?;
        let attn_out = h.fire(hp(BlockSite::AttnOut), attn_out)?;
        let (mlp_src, resid_mid) = if cfg.parallel_attn_mlp {
            (resid_pre.clone(), None)
        } else {
            let mid = h.fire(hp(BlockSite::ResidMid), (&resid_pre + &attn_out)?)?;
            (mid.clone(), Some(mid))
        };
        let mlp_in = h.fire(hp(BlockSite::MlpIn), mlp_src)?;
        let n2 = self.layer_norm(&mlp_in, &w.ln2, hp(BlockSite::Ln2Scale), hp(BlockSite::Ln2Normalized), h)?;
        let mlp_out = self.mlp(l, &n2, w, h)?;
        let mlp_out = h.fire(hp(BlockSite::MlpOut), mlp_out)?;
        let resid_post = match resid_mid {
            Some(mid) => (mid + mlp_out)?,
            None => ((resid_pre + attn_out)? + mlp_out)?,
        };
        h.fire(hp(BlockSite::ResidPost), resid_post)
    }

    fn mlp(&self, l: usize, x: &Tensor, w: &BlockWeights, h: &mut Hooks) -> Result<Tensor> {
        let hp = |s| HookPoint::Block(l, s);
        let pre = h.fire(hp(BlockSite::Pre), linear(x, &w.w_in, &w.b_in, self.fused())?)?;
        let post = match self.cfg.act {
            Activation::SoluLn => {
                let d = self.cfg.d_mlp;
                let mid = if self.fused() {
                    cpu_tensor(with_f32(&pre, |p| kernels::solu(p, d))?, pre.dims())?
                } else {
                    (&pre * candle_nn::ops::softmax_last_dim(&pre)?)?
                };
                let mid = h.fire(hp(BlockSite::Mid), mid)?;
                let ln = w.mlp_ln.as_ref().context("SoLU block without its MLP LayerNorm")?;
                self.layer_norm(&mid, ln, hp(BlockSite::MlpLnScale), hp(BlockSite::MlpLnNormalized), h)?
            }
            act => {
                let op = match act {
                    Activation::GeluNew => Pointwise::GeluNew,
                    Activation::Gelu => Pointwise::Gelu,
                    _ => Pointwise::Relu,
                };
                if self.fused() {
                    cpu_tensor(with_f32(&pre, |p| kernels::pointwise(p, op))?, pre.dims())?
                } else {
                    match op {
                        Pointwise::GeluNew => pre.gelu()?,
                        Pointwise::Gelu => pre.gelu_erf()?,
                        Pointwise::Relu => pre.relu()?,
                    }
                }
            }
        };
        let post = h.fire(hp(BlockSite::Post), post)?;
        linear(&post, &w.w_out, &w.b_out, self.fused())
    }

    fn attention(&self, l: usize, x: &Tensor, w: &BlockWeights, h: &mut Hooks) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, dh) = (cfg.n_heads, cfg.d_head);
        let hp = |s| HookPoint::Block(l, s);
        let qkv = linear(x, &w.w_qkv, &w.b_qkv, self.fused())?.reshape((b, t, 3, nh, dh))?;
        let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i, 1)?.squeeze(2)?) };
        let mut q = h.fire(hp(BlockSite::Q), part(0)?)?;
        let mut k = h.fire(hp(BlockSite::K), part(1)?)?;
        let v = h.fire(hp(BlockSite::V), part(2)?)?;
        if cfg.rotary_dim > 0 {
            q = h.fire(hp(BlockSite::RotQ), self.rotary(&q)?)?;
            k = h.fire(hp(BlockSite::RotK), self.rotary(&k)?)?;
        }
        let mut attn_scale = (dh as f64).sqrt();
        if cfg.scale_attn_by_inverse_layer_idx {
            attn_scale *= (l + 1) as f64;
        }
        let dims = AttnDims {
            batch: b,
            pos: t,
            heads: nh,
            d_head: dh,
            scale: (1.0 / attn_scale) as f32,
            masked: cfg.masked_score,
        };
        let scores_hook = hp(BlockSite::AttnScores);
        let pattern_hook = hp(BlockSite::Pattern);
        let z = if self.fused() && !h.intervened(scores_hook) && !h.intervened(pattern_hook) {
            let (want_s, want_p) = (h.active(scores_hook), h.active(pattern_hook));
            let (z, s, p) = with_heads(&q, &k, &v, |qv, kv, vv| kernels::attention(qv, kv, vv, dims, want_s, want_p))?;
            if let Some(s) = s {
                h.fire(scores_hook, cpu_tensor(s, &[b, nh, t, t])?)?;
            }
            if let Some(p) = p {
                h.fire(pattern_hook, cpu_tensor(p, &[b, nh, t, t])?)?;
            }
            cpu_tensor(z, &[b, t, nh, dh])?
        } else {
            let scores = if self.fused() {
                cpu_tensor(with_heads(&q, &k, &v, |qv, kv, _| kernels::scores(qv, kv, dims))?, &[b, nh, t, t])?
            } else {
                let qh = q.transpose(1, 2)?.contiguous()?;
                let kh = k.transpose(1, 2)?.contiguous()?;
                let s = (qh.matmul(&kh.t()?)? * dims.scale as f64)?;
                let mask = causal_mask(t, x.device())?;
                mask.broadcast_as(s.shape())?
                    .where_cond(&Tensor::new(cfg.masked_score, x.device())?.broadcast_as(s.shape())?, &s)?
            };
            let scores = h.fire(scores_hook, scores)?;
            let pattern = if self.fused() {
                cpu_tensor(with_f32(&scores, |s| kernels::softmax_causal(s, t))?, &[b, nh, t, t])?
            } else {
                let mask = causal_mask(t, x.device())?.broadcast_as(scores.shape())?;
                let s = mask
                    .where_cond(&Tensor::new(f32::NEG_INFINITY, x.device())?.broadcast_as(scores.shape())?, &scores)?;
                candle_nn::ops::softmax_last_dim(&s)?
            };
            let pattern = h.fire(pattern_hook, pattern)?;
            if self.fused() {
                let z =
                    with_heads(&v, &v, &v, |_, _, vv| with_f32(&pattern, |p| kernels::pattern_times_v(p, vv, dims)))??;
                cpu_tensor(z, &[b, t, nh, dh])?
            } else {
                pattern.matmul(&v.transpose(1, 2)?.contiguous()?)?.transpose(1, 2)?.contiguous()?
            }
        };
        let z = h.fire(hp(BlockSite::Z), z)?;
        let result_hook = hp(BlockSite::Result);
        if h.active(result_hook) {
            // Per-head outputs [b, t, head, d_model]: z_h @ W_O[h].
            let w_o = w.w_o.reshape((nh, dh, cfg.d_model))?;
            let zh = z.reshape((b * t, nh, dh))?.transpose(0, 1)?.contiguous()?;
            let r = zh.matmul(&w_o)?.transpose(0, 1)?.reshape((b, t, nh, cfg.d_model))?;
            let r = h.fire(result_hook, r)?;
            return Ok(r.sum(2)?.broadcast_add(&w.b_o)?);
        }
        linear(&z.reshape((b, t, nh * dh))?, &w.w_o, &w.b_o, self.fused())
    }

    fn rotary(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, nh, dh) = x.dims4()?;
        let (rot, base) = (self.cfg.rotary_dim, self.cfg.rotary_base);
        if self.fused() {
            let out = with_heads(x, x, x, |xv, _, _| kernels::rotary(xv, b * t, t, nh, dh, rot, base))?;
            return cpu_tensor(out, &[b, t, nh, dh]);
        }
        let half = rot / 2;
        let inv: Vec<f32> = (0..half).map(|i| (1.0 / base.powf(i as f64 / half as f64)) as f32).collect();
        let inv = Tensor::from_vec(inv, (1, half), x.device())?;
        let pos = Tensor::arange(0u32, t as u32, x.device())?.to_dtype(DType::F32)?.unsqueeze(1)?;
        let ang = pos.broadcast_mul(&inv)?; // [t, half]
        let ang = Tensor::cat(&[&ang, &ang], 1)?.reshape((1, t, 1, rot))?;
        let (sin, cos) = (ang.sin()?, ang.cos()?);
        let xr = x.narrow(3, 0, rot)?;
        let rotated = Tensor::cat(&[&xr.narrow(3, half, half)?.neg()?, &xr.narrow(3, 0, half)?], 3)?;
        let y = (xr.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?;
        if rot == dh {
            return Ok(y);
        }
        Ok(Tensor::cat(&[&y, &x.narrow(3, rot, dh - rot)?], 3)?)
    }
}

/// 1 above the diagonal, as a u8 mask [t, t].
fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<u8> = (0..t).flat_map(|i| (0..t).map(move |j| u8::from(j > i))).collect();
    Ok(Tensor::from_vec(m, (t, t), dev)?)
}

/// Per-head strided views of three [batch, pos, head, d_head] CPU tensors.
fn with_heads<R>(q: &Tensor, k: &Tensor, v: &Tensor, f: impl FnOnce(HeadView, HeadView, HeadView) -> R) -> Result<R> {
    let (q, k, v) = (head_layout(q)?, head_layout(k)?, head_layout(v)?);
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    Ok(f(head_view(&qs, ql)?, head_view(&ks, kl)?, head_view(&vs, vl)?))
}

fn head_view<'a>(s: &'a Storage, l: &candle_core::Layout) -> Result<HeadView<'a>> {
    let Storage::Cpu(cs) = s else { bail!("tensor is not on the CPU") };
    Ok(HeadView { data: cs.as_slice::<f32>()?, offset: l.start_offset(), row_stride: l.stride()[1] })
}

/// Make sure a [b, t, h, dh] tensor can be read as rows of (head, d_head) with one row stride.
fn head_layout(x: &Tensor) -> Result<Tensor> {
    let (_, t, h, dh) = x.dims4()?;
    let s = x.stride();
    if s[3] == 1 && s[2] == dh && s[0] == t * s[1] && s[1] >= h * dh {
        Ok(x.clone())
    } else {
        Ok(x.contiguous()?)
    }
}

/// TL config fields for display (`lantern hooks`).
pub fn describe(cfg: &ModelConfig) -> String {
    format!(
        "{:?}: {} layers, d_model {}, {} heads × {}, d_mlp {}, vocab {}, context {}",
        cfg.family, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab, cfg.n_ctx
    )
}
