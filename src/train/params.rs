//! The trained parameters of a GPT-2-architecture model as one flat f32 buffer (matrices first, so
//! weight decay covers one prefix), with the slot of every tensor, GPT-2's seeded initialisation
//! and the conversion to a runnable `Model`.

use crate::model::random::gpt2_params;
use crate::model::weights::{BlockWeights, Ln, Weights};
use crate::model::{Model, ModelConfig, Processing};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::ops::Range;

/// Where one tensor lives in the flat buffer.
#[derive(Clone, Debug)]
pub struct Slot {
    pub range: Range<usize>,
    pub shape: Vec<usize>,
}

impl Slot {
    pub fn of<'a>(&self, buf: &'a [f32]) -> &'a [f32] {
        &buf[self.range.clone()]
    }
    pub fn of_mut<'a>(&self, buf: &'a mut [f32]) -> &'a mut [f32] {
        &mut buf[self.range.clone()]
    }
}

/// The slots of one block, in forward layout (`w_qkv` [d_model, 3·d_model] as q, k, v column blocks).
#[derive(Clone, Debug)]
pub struct BlockSlots {
    pub w_qkv: Slot,
    pub w_o: Slot,
    pub w_in: Slot,
    pub w_out: Slot,
    pub ln1_w: Slot,
    pub ln1_b: Slot,
    pub b_qkv: Slot,
    pub b_o: Slot,
    pub ln2_w: Slot,
    pub ln2_b: Slot,
    pub b_in: Slot,
    pub b_out: Slot,
}

/// Every trained tensor's slot. The embedding is tied: the unembedding is `w_e`ᵀ.
#[derive(Clone, Debug)]
pub struct Layout {
    pub w_e: Slot,
    pub w_pos: Slot,
    pub blocks: Vec<BlockSlots>,
    pub lnf_w: Slot,
    pub lnf_b: Slot,
    /// Parameters `0..decayed` are the matrices (weight decay applies), the rest LayerNorms and biases.
    pub decayed: usize,
    pub len: usize,
}

impl Layout {
    pub fn new(cfg: &ModelConfig) -> Layout {
        let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
        let mut next = 0;
        let mut slot = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            next += n;
            Slot { range: next - n..next, shape: shape.to_vec() }
        };
        let w_e = slot(&[v, d]);
        let w_pos = slot(&[cfg.n_ctx, d]);
        let mats: Vec<[Slot; 4]> =
            (0..cfg.n_layers).map(|_| [slot(&[d, 3 * d]), slot(&[d, d]), slot(&[d, m]), slot(&[m, d])]).collect();
        let decayed = mats.last().map_or(w_pos.range.end, |b| b[3].range.end);
        let blocks = mats
            .into_iter()
            .map(|[w_qkv, w_o, w_in, w_out]| BlockSlots {
                w_qkv,
                w_o,
                w_in,
                w_out,
                ln1_w: slot(&[d]),
                ln1_b: slot(&[d]),
                b_qkv: slot(&[3 * d]),
                b_o: slot(&[d]),
                ln2_w: slot(&[d]),
                ln2_b: slot(&[d]),
                b_in: slot(&[m]),
                b_out: slot(&[d]),
            })
            .collect();
        let lnf_w = slot(&[d]);
        let lnf_b = slot(&[d]);
        Layout { w_e, w_pos, blocks, lnf_w, lnf_b, decayed, len: next }
    }

    /// Every (slot, forward-layout tensor) pair of `weights`.
    fn pairs<'a>(&'a self, w: &'a Weights) -> Vec<(&'a Slot, Option<&'a Tensor>)> {
        let mut out = vec![(&self.w_e, Some(&w.w_e)), (&self.w_pos, w.w_pos.as_ref())];
        for (s, b) in self.blocks.iter().zip(&w.blocks) {
            out.extend([
                (&s.w_qkv, Some(&b.w_qkv)),
                (&s.w_o, Some(&b.w_o)),
                (&s.w_in, Some(&b.w_in)),
                (&s.w_out, Some(&b.w_out)),
                (&s.ln1_w, b.ln1.w.as_ref()),
                (&s.ln1_b, b.ln1.b.as_ref()),
                (&s.b_qkv, Some(&b.b_qkv)),
                (&s.b_o, Some(&b.b_o)),
                (&s.ln2_w, b.ln2.w.as_ref()),
                (&s.ln2_b, b.ln2.b.as_ref()),
                (&s.b_in, Some(&b.b_in)),
                (&s.b_out, Some(&b.b_out)),
            ]);
        }
        out.extend([(&self.lnf_w, w.ln_final.w.as_ref()), (&self.lnf_b, w.ln_final.b.as_ref())]);
        out
    }

    /// GPT-2's initialisation drawn from `seed` (the same draw as `Model::random`), flattened.
    pub fn init(&self, cfg: &ModelConfig, seed: u64) -> Result<Vec<f32>> {
        let w = Weights::from_params(gpt2_params(cfg, seed, &Device::Cpu)?, cfg)?;
        let mut buf = vec![0f32; self.len];
        for (slot, t) in self.pairs(&w) {
            let t = t.ok_or_else(|| anyhow::anyhow!("GPT-2 initialisation lacks a tensor"))?;
            slot.of_mut(&mut buf).copy_from_slice(&t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(buf)
    }

    /// A runnable model holding a copy of `buf`.
    pub fn model(&self, cfg: &ModelConfig, buf: &[f32], origin: &str) -> Result<Model> {
        let dev = Device::Cpu;
        let t = |s: &Slot| Tensor::from_slice(s.of(buf), s.shape.as_slice(), &dev);
        let ln = |w: &Slot, b: &Slot| -> Result<Ln> { Ok(Ln { w: Some(t(w)?), b: Some(t(b)?) }) };
        let blocks = self
            .blocks
            .iter()
            .map(|s| {
                Ok(BlockWeights {
                    ln1: ln(&s.ln1_w, &s.ln1_b)?,
                    ln2: ln(&s.ln2_w, &s.ln2_b)?,
                    w_qkv: t(&s.w_qkv)?,
                    b_qkv: t(&s.b_qkv)?,
                    w_o: t(&s.w_o)?,
                    b_o: t(&s.b_o)?,
                    w_in: t(&s.w_in)?,
                    b_in: t(&s.b_in)?,
                    w_out: t(&s.w_out)?,
                    b_out: t(&s.b_out)?,
                    mlp_ln: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let w_e = t(&self.w_e)?;
        let weights = Weights {
            w_u: w_e.t()?.contiguous()?,
            w_e,
            w_pos: Some(t(&self.w_pos)?),
            blocks,
            ln_final: ln(&self.lnf_w, &self.lnf_b)?,
            b_u: Tensor::zeros(cfg.d_vocab, candle_core::DType::F32, &dev)?,
        };
        Ok(Model::from_weights(cfg.clone(), weights, Processing::NONE, &dev, origin))
    }
}
