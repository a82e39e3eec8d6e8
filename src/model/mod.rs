//! The hooked transformer: configuration, loading (folders, hub cache), TL weight processing,
//! the forward pass with hook points, interventions and what is read off the logits.

pub mod checkpoint;
pub mod config;
pub mod forward;
mod gpt2;
pub mod hooks;
pub mod intervene;
pub mod kernels;
pub mod known;
mod neox;
pub mod outputs;
pub mod processing;
pub mod random;
mod refactor;
mod solu;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::{Activation, Family, ModelConfig};
pub use forward::{Request, Start};
pub use hooks::{BlockSite, HookPoint};
pub use intervene::{Action, Intervention};
pub use processing::Processing;
pub use source::ModelFiles;
pub use tokenizer::Tokenizer;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use checkpoint::Checkpoint;
use std::collections::BTreeMap;

/// A loaded model, ready to run.
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: weights::Weights,
    pub processing: Processing,
    pub device: Device,
    pub tokenizer: Option<Tokenizer>,
    /// Folder or repository it came from.
    pub origin: String,
    /// Use portable tensor ops instead of the fused CPU kernels (to cross-check them).
    pub portable_ops: bool,
}

impl Model {
    /// Load from located files, with the chosen weight processing.
    pub fn load(files: &ModelFiles, processing: Processing, device: &Device) -> Result<Model> {
        let mut cfg = ModelConfig::from_file(&files.config)?;
        let ck = Checkpoint::open(files)?;
        let mut params = match cfg.family {
            Family::Gpt2 => gpt2::load(&ck, &cfg, device),
            Family::NeoX => neox::load(&ck, &cfg, device),
            Family::Solu => {
                let (p, masked) = solu::load(&ck, &cfg, device)?;
                cfg.masked_score = masked;
                Ok(p)
            }
        }
        .with_context(|| format!("cannot load weights of {}", files.origin))?;
        drop(ck);
        processing::process(&mut params, &cfg, processing)?;
        let weights = weights::Weights::from_params(params, &cfg)?;
        let tokenizer = match &files.tokenizer {
            Some(p) => Some(Tokenizer::from_file(p, cfg.bos_token_id, cfg.eos_token_id)?),
            None => None,
        };
        if let Some(t) = &tokenizer {
            cfg.bos_token_id = t.bos;
            cfg.eos_token_id = t.eos;
        }
        Ok(Model {
            cfg,
            weights,
            processing,
            device: device.clone(),
            tokenizer,
            origin: files.origin.clone(),
            portable_ops: false,
        })
    }

    /// The tokenizer, or an error naming the model.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().with_context(|| format!("model {} has no tokenizer.json", self.origin))
    }

    /// Logits for tokens [batch, pos].
    pub fn logits(&self, tokens: &Tensor) -> Result<Tensor> {
        self.forward(Start::Tokens(tokens), &Request::logits(), &mut |_, _| Ok(()))?.context("no logits")
    }

    /// Logits and the chosen activations, like TL's `run_with_cache`.
    pub fn run_with_cache(
        &self,
        tokens: &Tensor,
        hooks: &[HookPoint],
        interventions: &[Intervention],
    ) -> Result<(Tensor, BTreeMap<HookPoint, Tensor>)> {
        let req = Request::capture(hooks.iter().copied()).with_logits().with_interventions(interventions);
        let (logits, cache) = self.forward_cached(Start::Tokens(tokens), &req)?;
        Ok((logits.context("no logits")?, cache))
    }

    /// One pass from any start, its captures gathered by hook point: (logits if requested, cache).
    pub fn forward_cached(&self, start: Start, req: &Request) -> Result<(Option<Tensor>, BTreeMap<HookPoint, Tensor>)> {
        let mut cache = BTreeMap::new();
        let logits = self.forward(start, req, &mut |h, t| {
            cache.insert(h, t);
            Ok(())
        })?;
        Ok((logits, cache))
    }

    /// A parameter by TL name in TL layout (`blocks.0.mlp.W_in`).
    pub fn param(&self, name: &str) -> Result<Tensor> {
        self.weights.param(&self.cfg, name)
    }
}
