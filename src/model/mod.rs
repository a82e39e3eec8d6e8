//! The hooked transformer: configuration, loading (folders, hub cache), TL weight processing,
//! the forward pass with hook points, interventions and what is read off the logits.

pub mod checkpoint;
pub mod config;
pub mod flops;
pub mod forward;
mod gpt2;
pub mod hooks;
pub mod intervene;
pub mod kernels;
pub mod known;
mod neox;
pub mod origin;
pub mod outputs;
pub mod pickle;
pub mod processing;
pub mod random;
mod refactor;
pub mod selector;
mod solu;
pub mod source;
pub mod tokenizer;
mod trace;
pub mod weights;

pub use config::{Activation, Family, ModelConfig};
pub use forward::{Request, Start};
pub use hooks::{BlockSite, HookPoint};
pub use intervene::{Action, Intervention};
pub use origin::{ModelSource, ResolvedModel};
pub use processing::Processing;
pub use source::ModelFiles;
pub use tokenizer::Tokenizer;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use checkpoint::Checkpoint;
use config::SUPPORTED;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Implementation version of loading models and processing their weights: part of the fingerprints of what it makes. Bump it
/// when a change here changes results (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

impl ModelConfig {
    /// Read a Hugging Face `config.json` (or a NeelNanda TL config).
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model config {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&v).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn from_json(v: &Value) -> Result<ModelConfig> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let cfg = match model_type {
            "gpt2" => gpt2::config(v),
            "gpt_neox" => neox::config(v),
            "" if v.get("act_fn").is_some() && v.get("d_model").is_some() => solu::config(v),
            other => {
                let arch = v.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or(other);
                bail!("unsupported architecture '{arch}'; lantern supports {SUPPORTED}")
            }
        }?;
        cfg.check()?;
        Ok(cfg)
    }
}

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
        Ok(Model { tokenizer, ..Model::from_weights(cfg, weights, processing, device, &files.origin) })
    }

    /// A model of these weights, without a tokenizer, on the fused CPU kernels where they apply.
    pub fn from_weights(
        cfg: ModelConfig,
        weights: weights::Weights,
        processing: Processing,
        device: &Device,
        origin: &str,
    ) -> Model {
        Model {
            cfg,
            weights,
            processing,
            device: device.clone(),
            tokenizer: None,
            origin: origin.into(),
            portable_ops: false,
        }
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
