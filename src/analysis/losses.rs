//! Per-token losses of a first pass and of intervened passes, each later pass resumed from the
//! first pass's residual stream entering the first layer it acts on (the layers before are the
//! same in both, so they are computed once).

use crate::model::outputs::{token_stats, Wanted};
use crate::model::{BlockSite, HookPoint, Intervention, Model, Request, Start};
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// Captured activations of one pass.
pub type Cache = BTreeMap<HookPoint, Tensor>;

/// The first layer any of `hooks` belongs to, `usize::MAX` for the final LayerNorm's hooks
/// (`None`: one is an embedding, so a pass with it starts from the tokens).
pub fn first_layer(hooks: impl IntoIterator<Item = HookPoint>) -> Option<usize> {
    let layer = |h: HookPoint| match h {
        HookPoint::Embed | HookPoint::PosEmbed => None,
        HookPoint::Block(l, _) => Some(l),
        HookPoint::LnFinalScale | HookPoint::LnFinalNormalized => Some(usize::MAX),
    };
    let layers: Option<Vec<usize>> = hooks.into_iter().map(layer).collect();
    layers.map(|l| l.into_iter().min().unwrap_or(usize::MAX))
}

/// A batch of token rows and the residual streams a first pass left entering chosen layers.
pub struct Rerun<'a> {
    model: &'a Model,
    tokens: &'a Tensor,
    resid: BTreeMap<usize, Tensor>,
}

impl<'a> Rerun<'a> {
    /// The first pass, from the tokens with `iv`: its per-token loss and `capture`d activations.
    /// It also keeps the residual stream entering each of `starts` that `iv` leaves unchanged
    /// (every intervention acts later, or in that layer after its `hook_resid_pre`).
    pub fn first(
        model: &'a Model,
        tokens: &'a Tensor,
        iv: &[Intervention],
        capture: &[HookPoint],
        starts: &[usize],
    ) -> Result<(Rerun<'a>, Vec<f32>, Cache)> {
        let clean_at = |s: usize| {
            iv.iter().all(|i| match i.hook {
                HookPoint::Block(l, site) => l > s || (l == s && site != BlockSite::ResidPre),
                HookPoint::LnFinalScale | HookPoint::LnFinalNormalized => true,
                HookPoint::Embed | HookPoint::PosEmbed => false,
            })
        };
        let keep: Vec<HookPoint> = starts
            .iter()
            .filter(|&&s| s < model.cfg.n_layers && clean_at(s))
            .map(|&s| HookPoint::Block(s, BlockSite::ResidPre))
            .collect();
        let req = Request::capture(capture.iter().chain(&keep).copied()).with_logits().with_interventions(iv);
        let (logits, mut cache) = model.forward_cached(Start::Tokens(tokens), &req)?;
        let resid = keep
            .iter()
            .filter_map(|h| {
                let t = if capture.contains(h) { cache.get(h).cloned() } else { cache.remove(h) };
                Some((h.layer()?, t?))
            })
            .collect();
        let loss = token_stats(&logits.context("no logits")?, tokens, Wanted::LOSS)?.loss;
        Ok((Rerun { model, tokens, resid }, loss, cache))
    }

    /// A pass with `iv`, resumed from the latest kept residual stream at or before the first
    /// layer `iv` and `capture` touch (from the tokens when there is none): per-token loss and
    /// the `capture`d activations.
    pub fn run(&self, iv: &[Intervention], capture: &[HookPoint]) -> Result<(Vec<f32>, Cache)> {
        let first = first_layer(iv.iter().map(|i| i.hook).chain(capture.iter().copied()));
        let from = first.and_then(|f| self.resid.range(..=f).next_back());
        let start = match from {
            Some((&layer, resid)) => Start::Resid { layer, resid: resid.clone() },
            None => Start::Tokens(self.tokens),
        };
        let req = Request::capture(capture.iter().copied()).with_logits().with_interventions(iv);
        let (logits, cache) = self.model.forward_cached(start, &req)?;
        Ok((token_stats(&logits.context("no logits")?, self.tokens, Wanted::LOSS)?.loss, cache))
    }
}
