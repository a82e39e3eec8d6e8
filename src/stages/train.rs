//! `train` stage: small GPT-2-architecture models trained on datasets, one node per seed (each
//! cached on its own), written as Hugging Face folders that `[models.X] train = "…"` loads like any
//! model; the stage's own node gathers the loss curves, metrics and held-out losses (against
//! unigram and bigram baselines) of every seed.

use super::tables::Ty;
use super::{TableDecl, CheckCx, Cost, CostCx, Dep, Part, Stage, StageEnv};
use crate::data::source::{Doc, Flow, Reader};
use crate::data::{bpe, tokenize, DatasetSpec};
use crate::model::{Activation, ModelConfig, Tokenizer};
use crate::spec::{DatasetRef, Diagnostic};
use crate::store::table::Table;
use crate::train::{self, baseline, export::save_hf, Schedule, Trainable};
use anyhow::{Context, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 3;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Training text (rows of every dataset, shuffled together).
    pub datasets: Vec<DatasetRef>,
    /// Share of each dataset's rows held out for evaluation (the last rows).
    #[serde(default = "default_heldout")]
    pub heldout_fraction: f64,
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    /// Default 4 × d_model.
    #[serde(default)]
    pub d_mlp: Option<usize>,
    /// Row length and positional context.
    pub context: usize,
    #[serde(default = "default_act")]
    pub activation: Activation,
    /// A tokenizer.json to use (its vocabulary then sizes the model); otherwise a byte-level BPE of
    /// `vocab_size` entries is trained on the data.
    #[serde(default)]
    pub tokenizer: Option<String>,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// One model per seed (default: the experiment's seed).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    pub steps: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Warm-up steps (default: 10% of steps).
    #[serde(default)]
    pub warmup: Option<usize>,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Evaluate held-out loss every this many steps.
    #[serde(default = "default_eval")]
    pub eval_every: usize,
}

fn default_heldout() -> f64 {
    0.05
}
fn default_act() -> Activation {
    Activation::GeluNew
}
fn default_vocab() -> usize {
    2048
}
fn default_batch() -> usize {
    16
}
fn default_lr() -> f64 {
    3e-3
}
fn default_wd() -> f64 {
    0.1
}
fn default_clip() -> f64 {
    1.0
}
fn default_eval() -> usize {
    50
}

impl Spec {
    /// The seeds to train (the experiment's seed when none are listed).
    pub fn seed_list(&self, experiment_seed: u64) -> Vec<u64> {
        self.seeds.clone().unwrap_or_else(|| vec![experiment_seed])
    }

    fn model_config(&self, vocab: usize) -> ModelConfig {
        train::config(
            self.layers,
            self.d_model,
            self.heads,
            self.d_mlp.unwrap_or(self.d_model.saturating_mul(4)),
            vocab,
            self.context,
            self.activation,
        )
    }

    /// What makes the model's shape impossible (field, why): sizes of zero, heads that do not divide
    /// d_model, sizes no model has.
    fn shape_problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (field, v) in [("layers", self.layers), ("d_model", self.d_model), ("heads", self.heads)] {
            if v == 0 {
                out.push((field, format!("{field} must be at least 1")));
            }
        }
        if self.d_mlp == Some(0) {
            out.push(("d_mlp", "d_mlp must be at least 1".to_string()));
        }
        if self.context < 2 {
            out.push(("context", "context must be at least 2".to_string()));
        }
        if self.heads > 0 && self.d_model % self.heads != 0 {
            out.push(("heads", format!("d_model {} must be a multiple of heads {}", self.d_model, self.heads)));
        }
        if out.is_empty() {
            if let Some((name, msg)) = self.model_config(self.vocab_size).size_problem() {
                let field = match name {
                    "n_layers" => "layers",
                    "n_heads" | "d_head" => "heads",
                    "d_vocab" => "vocab_size",
                    "n_ctx" => "context",
                    other => other,
                };
                out.push((field, msg.replacen(name, field, 1)));
            }
        }
        out
    }

    /// Memory training takes: weights, gradients and two Adam moments (16 bytes a parameter) and
    /// the activations of a batch kept for the backward pass.
    fn training_bytes(&self, cfg: &ModelConfig) -> f64 {
        let (l, d, m, v, c) =
            (cfg.n_layers as f64, cfg.d_model as f64, cfg.d_mlp as f64, cfg.d_vocab as f64, self.context as f64);
        let params = l * (4.0 * d * d + 2.0 * d * m) + v * d + c * d;
        let tokens = self.batch_size as f64 * c;
        let activations = tokens * (l * (12.0 * d + 3.0 * m + 3.0 * cfg.n_heads as f64 * c) + 3.0 * v);
        16.0 * params + 4.0 * activations
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            steps: self.steps,
            batch: self.batch_size,
            lr: self.lr,
            warmup: self.warmup.unwrap_or(self.steps / 10).max(1),
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            eval_every: self.eval_every,
        }
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        self.datasets.iter().map(Dep::Dataset).collect()
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("loss")
                .ints(["step"])
                .floats(["train_loss", "lr", "heldout_loss"])
                .optional(Ty::Int, ["seed"]),
            TableDecl::new("metrics")
                .ints(["seed", "steps"])
                .floats(["train_tokens", "tokens_per_parameter"])
                .ints(["corpus_tokens"])
                .floats(["epochs", "seconds", "tokens_per_s", "heldout_loss", "unigram_loss", "bigram_loss"])
                .ints(["parameters"]),
            TableDecl::new("heldout").ints(["seed"]).texts(["model"]).floats(["loss"]),
        ]
    }

    fn cost(&self, _cx: &CostCx) -> Cost {
        // Forward and backward (about twice the forward) of every step, per seed; parameters,
        // gradients and AdamW's two moments.
        let Some(cfg) = self.trained_config() else { return Cost::default() };
        let seeds = self.seed_list(0).len() as f64;
        let tokens = (self.steps * self.batch_size * self.context) as f64;
        let flops = 3.0 * crate::model::flops::forward_flops(&cfg, self.context, cfg.n_layers, true) * tokens * seeds;
        let held = crate::model::flops::activation_bytes(&cfg, self.batch_size, self.context, true, 0);
        Cost::new(flops, 4.0 * crate::model::flops::weight_bytes(&cfg) + cfg.n_layers as f64 * held)
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        for (field, msg) in self.shape_problems() {
            out.push(cx.error(field, format!("train: {msg}")));
        }
        cx.at_least("steps", self.steps, 1, out);
        cx.at_least("batch_size", self.batch_size, 1, out);
        cx.at_least("eval_every", self.eval_every, 1, out);
        cx.fraction("heldout_fraction", self.heldout_fraction, out);
        if self.datasets.is_empty() {
            out.push(cx.error("datasets", "train: list at least one dataset"));
        }
        if self.seeds.as_ref().is_some_and(|s| s.is_empty()) {
            out.push(cx.error("seeds", "train: list at least one seed (or leave seeds out for the experiment's)"));
        }
        for (field, v) in [("lr", self.lr), ("grad_clip", self.grad_clip)] {
            if v <= 0.0 {
                out.push(cx.error(field, format!("train: {field} must be positive, not {v}")));
            }
        }
        if self.weight_decay < 0.0 {
            out.push(cx.error("weight_decay", "train: weight_decay cannot be negative"));
        }
        if self.activation == Activation::SoluLn {
            out.push(
                cx.error("activation", "train: activation solu_ln is not trainable here; use gelu_new, gelu or relu"),
            );
        }
        if let Some(t) = &self.tokenizer {
            if !cx.base_dir.join(t).is_file() {
                out.push(cx.error("tokenizer", format!("train: tokenizer {t} does not exist")));
            }
        } else if self.vocab_size < 260 {
            out.push(
                cx.error("vocab_size", "train: vocab_size must be above 256 (the byte alphabet) + special tokens"),
            );
        }
        if let Some(cfg) = self.trained_config() {
            cx.memory(
                self.training_bytes(&cfg),
                "training this model",
                "lower batch_size, context, d_model, d_mlp or layers",
                out,
            );
        }
    }

    /// Gather the loss curves, metrics and held-out losses of every seed.
    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let (mut loss, mut metrics, mut heldout) = (Vec::new(), Vec::new(), Vec::new());
        for seed in self.seed_list(cx.seed()) {
            let dir = cx.part(Part::Seed(seed))?;
            let mut l = crate::store::table::read(&dir.join("loss.parquet"))?;
            l.with_column(Column::new("seed".into(), vec![seed; l.height()]))?;
            loss.push(l);
            metrics.push(crate::store::table::read(&dir.join("metrics.parquet"))?);
            heldout.push(crate::store::table::read(&dir.join("heldout.parquet"))?);
        }
        let concat = |v: Vec<DataFrame>| -> Result<DataFrame> {
            let mut it = v.into_iter();
            let mut first = it.next().context("no seeds")?;
            for df in it {
                first.vstack_mut(&df)?;
            }
            Ok(first)
        };
        cx.write_table("loss", &mut concat(loss)?)?;
        cx.write_table("metrics", &mut concat(metrics)?)?;
        cx.write_table("heldout", &mut concat(heldout)?)
    }

    fn uses_seed(&self) -> bool {
        self.seeds.is_none()
    }

    /// The configuration of the model, when its shape is one (see `shape_problems`).
    fn trained_config(&self) -> Option<ModelConfig> {
        self.shape_problems().is_empty().then(|| self.model_config(self.vocab_size))
    }

    fn parts(&self, experiment_seed: u64) -> Vec<Part> {
        self.seed_list(experiment_seed).into_iter().map(Part::Seed).collect()
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        match part {
            Part::Seed(seed) => run_seed(cx, self, seed),
            other => anyhow::bail!("a train stage has no part {other:?}"),
        }
    }
}

/// Texts of the training datasets (for fitting the tokenizer).
fn texts(cx: &dyn StageEnv, specs: &[&DatasetSpec]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for spec in specs {
        let mut progress = |_, _| {};
        let mut r = Reader { spec, cancel: cx.cancel(), progress: &mut progress };
        let max = spec.max_docs.unwrap_or(usize::MAX);
        let mut n = 0;
        r.read(cx.base_dir(), &mut |d: Doc| {
            out.push(d.text);
            n += 1;
            Ok(if n >= max { Flow::Stop } else { Flow::Continue })
        })?;
    }
    Ok(out)
}

/// Train one seed: tokenizer, token rows, the model; write the HF folder, loss curve and metrics.
fn run_seed(cx: &mut dyn StageEnv, spec: &Spec, seed: u64) -> Result<()> {
    let base = cx.base_dir().to_path_buf();
    let ds: Vec<&DatasetSpec> = spec.datasets.iter().map(|d| cx.dataset(d.name())).collect::<Result<_>>()?;
    let hf_tok = match &spec.tokenizer {
        Some(p) => tokenizers::Tokenizer::from_file(base.join(p))
            .map_err(|e| crate::data::DataError::in_file(&base.join(p), format!("not a tokenizer: {e}")))?,
        None => bpe::train(texts(cx, &ds)?.iter(), spec.vocab_size)?,
    };
    let tok = Tokenizer::from_inner(hf_tok.clone(), 0, 0);
    let (mut train_rows, mut heldout) = (Vec::new(), Vec::new());
    for d in &ds {
        let mut d = (*d).clone();
        d.context = spec.context;
        let data = tokenize(&d, &base, &tok, spec.context, &mut |_, _| {}, cx.cancel())?;
        let held = ((data.rows as f64 * spec.heldout_fraction).ceil() as usize).min(data.rows.saturating_sub(1));
        let split = (data.rows - held) * data.ctx;
        train_rows.extend_from_slice(&data.tokens[..split]);
        heldout.extend_from_slice(&data.tokens[split..]);
    }
    let vocab = tok.vocab_size();
    let cfg = spec.model_config(vocab);
    let sched = spec.schedule();
    let mut t = Trainable::init(cfg, seed)?;
    let mut progress = cx.progress(sched.steps as u64, "steps");
    let started = std::time::Instant::now();
    let mut last_heldout = None;
    let log = train::train(&mut t, &train_rows, &heldout, spec.context, &sched, seed, |p| {
        last_heldout = p.heldout_loss.or(last_heldout);
        progress.message(&match last_heldout {
            Some(h) => format!("loss {:.3}, held-out {h:.3}", p.train_loss),
            None => format!("loss {:.3}", p.train_loss),
        });
        progress.tick(1)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    save_hf(&t.model()?, &hf_tok, &cx.out().join("model"))?;
    let mut loss = Table::new()
        .with("step", log.iter().map(|p| p.step as u32).collect::<Vec<_>>())
        .with("train_loss", log.iter().map(|p| p.train_loss).collect::<Vec<_>>())
        .with("lr", log.iter().map(|p| p.lr).collect::<Vec<_>>())
        .with("heldout_loss", log.iter().map(|p| p.heldout_loss).collect::<Vec<_>>())
        .frame()?;
    cx.write_table("loss", &mut loss)?;
    let ctx = spec.context;
    let tokens = (sched.steps * sched.batch * ctx) as f64;
    let trained = log.last().and_then(|p| p.heldout_loss).unwrap_or(f32::NAN);
    let unigram = baseline::unigram_loss(&train_rows, &heldout, ctx, vocab) as f32;
    let bigram = baseline::bigram_loss(&train_rows, &heldout, ctx, vocab) as f32;
    let mut metrics = Table::new()
        .with("seed", vec![seed])
        .with("steps", vec![sched.steps as u32])
        .with("train_tokens", vec![tokens])
        .with("tokens_per_parameter", vec![tokens / t.n_params() as f64])
        .with("corpus_tokens", vec![train_rows.len() as u64])
        .with("epochs", vec![tokens / train_rows.len().max(1) as f64])
        .with("seconds", vec![seconds])
        .with("tokens_per_s", vec![tokens / seconds])
        .with("heldout_loss", vec![trained])
        .with("unigram_loss", vec![unigram])
        .with("bigram_loss", vec![bigram])
        .with("parameters", vec![t.n_params() as u64])
        .frame()?;
    cx.write_table("metrics", &mut metrics)?;
    // The held-out loss beside its two baselines, one row each (for a grouped bar plot).
    let mut heldout_table = Table::new()
        .with("seed", vec![seed; 3])
        .with("model", ["trained", "bigram", "unigram"].map(String::from).to_vec())
        .with("loss", vec![trained, bigram, unigram])
        .frame()?;
    cx.write_table("heldout", &mut heldout_table)
}
