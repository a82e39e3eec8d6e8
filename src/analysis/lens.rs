//! Logit lens: the residual stream accumulated at every half-layer, normalised by the final
//! LayerNorm with the run's own cached scale, read through the unembedding (along a direction such
//! as W_U[" an"] − W_U[" a"], or over the whole vocabulary).

use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::{Model, Request, Start};
use anyhow::{Context, Result};
use candle_core::{Tensor, D};

/// The stream at one half-layer point: its label (TL's `accumulated_resid` names) and hook.
pub fn half_layers(model: &Model) -> Vec<(String, HookPoint)> {
    let mut out = Vec::new();
    for l in 0..model.cfg.n_layers {
        out.push((format!("{l}_pre"), HookPoint::Block(l, BlockSite::ResidPre)));
        if !model.cfg.parallel_attn_mlp {
            out.push((format!("{l}_mid"), HookPoint::Block(l, BlockSite::ResidMid)));
        }
    }
    out.push(("final_post".into(), HookPoint::Block(model.cfg.n_layers - 1, BlockSite::ResidPost)));
    out
}

/// The accumulated residual at `position` of every row, after the final LayerNorm with the cached
/// scale: a [points, rows, d_model] stack and the point labels.
pub fn accumulated_resid(model: &Model, tokens: &Tensor, position: i64) -> Result<(Vec<String>, Tensor)> {
    let points = half_layers(model);
    let mut hooks: Vec<HookPoint> = points.iter().map(|p| p.1).collect();
    hooks.push(HookPoint::LnFinalScale);
    let mut cache = std::collections::BTreeMap::new();
    let req = Request::capture(hooks.iter().copied());
    model.forward(Start::Tokens(tokens), &req, &mut |h, t| {
        cache.insert(h, t);
        Ok(())
    })?;
    let t = tokens.dim(1)? as i64;
    let pos = if position < 0 { t + position } else { position };
    anyhow::ensure!((0..t).contains(&pos), "position {position} out of range for {t} tokens");
    let pick = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(1, pos as usize, 1)?.squeeze(1)?) };
    let scale = pick(&cache[&HookPoint::LnFinalScale])?; // [rows, 1]
    let ln = &model.weights.ln_final;
    let mut stack = Vec::new();
    for (_, h) in &points {
        let x = pick(cache.get(h).context("missing residual")?)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let mut y = centred.broadcast_div(&scale)?;
        if let Some(w) = &ln.w {
            y = y.broadcast_mul(w)?;
        }
        if let Some(b) = &ln.b {
            y = y.broadcast_add(b)?;
        }
        stack.push(y);
    }
    Ok((points.into_iter().map(|p| p.0).collect(), Tensor::stack(&stack, 0)?))
}

/// The unembedding direction `W_U[:, a] − W_U[:, b]` (or `W_U[:, a]` alone).
pub fn logit_direction(model: &Model, a: u32, b: Option<u32>) -> Result<Tensor> {
    let w_u = &model.weights.w_u;
    let col = |t: u32| -> Result<Tensor> { Ok(w_u.narrow(1, t as usize, 1)?.squeeze(1)?) };
    Ok(match b {
        Some(b) => (col(a)? - col(b)?)?,
        None => col(a)?,
    })
}

/// Project a [points, rows, d_model] stack on a direction: [points, rows].
pub fn project(stack: &Tensor, direction: &Tensor) -> Result<Tensor> {
    Ok(stack.broadcast_mul(direction)?.sum(D::Minus1)?)
}

/// Full-vocabulary logits of a stack: [points, rows, vocab] (W_U and b_U applied).
pub fn vocab_logits(model: &Model, stack: &Tensor) -> Result<Tensor> {
    Ok(stack.broadcast_matmul(&model.weights.w_u)?.broadcast_add(&model.weights.b_u)?)
}
