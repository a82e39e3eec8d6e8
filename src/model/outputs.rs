//! What is read off the logits: per-token cross-entropy loss, entropy, rank of the true next token, top-k.

use super::forward::with_f32;
use super::kernels;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Which statistics besides the loss to compute: each costs a pass over every logit row, so a
/// caller asks only for what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub entropy: bool,
    pub rank: bool,
}

impl Wanted {
    /// The loss alone: a log-sum-exp per row.
    pub const LOSS: Wanted = Wanted { entropy: false, rank: false };
    /// Loss, entropy and rank.
    pub const ALL: Wanted = Wanted { entropy: true, rank: true };
}

/// Per-token statistics of next-token prediction; each is [batch, pos - 1] (position t predicts
/// t + 1). `entropy` and `rank` are empty unless asked for.
#[derive(Clone, Debug)]
pub struct TokenStats {
    pub loss: Vec<f32>,
    pub entropy: Vec<f32>,
    /// Number of vocabulary entries with a strictly larger logit than the true next token (0 = top).
    pub rank: Vec<u32>,
    pub batch: usize,
    pub pos: usize,
}

/// Loss (and, as `want`ed, entropy and rank) of the true next token from logits [batch, pos,
/// vocab] and tokens [batch, pos], in parallel over rows.
pub fn token_stats(logits: &Tensor, tokens: &Tensor, want: Wanted) -> Result<TokenStats> {
    let (b, t, v) = logits.dims3()?;
    if tokens.dims2()? != (b, t) {
        bail!("tokens {:?} do not match logits {:?}", tokens.dims(), logits.dims());
    }
    let logits = logits.to_device(&candle_core::Device::Cpu)?;
    let ids: Vec<u32> = tokens.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    let n = t.saturating_sub(1);
    let rows: Vec<usize> = (0..b).flat_map(|bi| (0..n).map(move |ti| bi * t + ti)).collect();
    let targets: Vec<u32> = rows.iter().map(|&r| ids[r + 1]).collect();
    if let Some(&bad) = targets.iter().find(|&&id| id as usize >= v) {
        bail!("token id {bad} is outside the vocabulary of {v}");
    }
    with_f32(&logits, |x| {
        let s = kernels::target_rows(x, v, &rows, &targets, want.entropy, want.rank);
        TokenStats {
            loss: s.iter().map(|r| r.loss).collect(),
            entropy: if want.entropy { s.iter().map(|r| r.entropy).collect() } else { vec![] },
            rank: if want.rank { s.iter().map(|r| r.rank).collect() } else { vec![] },
            batch: b,
            pos: n,
        }
    })
}

/// Per-token loss [batch, pos - 1] as a tensor (TL's `loss_per_token=True`).
pub fn loss_per_token(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let s = token_stats(logits, tokens, Wanted::LOSS)?;
    Ok(Tensor::from_vec(s.loss, (s.batch, s.pos), &candle_core::Device::Cpu)?)
}

/// The k largest entries of the last axis: (values, indices), each [.., k].
pub fn top_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let idx = x.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?.contiguous()?;
    let vals = x.gather(&idx, D::Minus1)?;
    Ok((vals, idx))
}
