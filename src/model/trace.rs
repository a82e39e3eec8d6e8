//! A trace of one forward pass, as `lantern trace` saves it: logits, per-token loss, the tokens and
//! chosen activations, keyed by TransformerLens hook name.

use super::outputs::loss_per_token;
use super::{HookPoint, Model, Request, Start};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;

impl Model {
    /// Run `tokens` [batch, pos] capturing `hooks`; the map holds every hook by TL name and
    /// `logits`, `loss_per_token`, `tokens`.
    pub fn trace(&self, tokens: &Tensor, hooks: &[HookPoint]) -> Result<HashMap<String, Tensor>> {
        if let Some(bad) = tokens.flatten_all()?.to_vec1::<u32>()?.iter().find(|&&t| t as usize >= self.cfg.d_vocab) {
            anyhow::bail!("token id {bad} is outside the vocabulary (size {})", self.cfg.d_vocab);
        }
        let mut saved: HashMap<String, Tensor> = HashMap::new();
        let req = Request::capture(hooks.iter().copied()).with_logits();
        let logits = self.forward(Start::Tokens(tokens), &req, &mut |h, t| {
            saved.insert(h.to_string(), t);
            Ok(())
        })?;
        let logits = logits.context("no logits")?;
        saved.insert("loss_per_token".into(), loss_per_token(&logits, tokens)?);
        saved.insert("logits".into(), logits);
        saved.insert("tokens".into(), tokens.to_dtype(DType::I64)?);
        Ok(saved)
    }
}
