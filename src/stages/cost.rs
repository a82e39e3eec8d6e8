//! What a stage costs, estimated before it runs (`lantern plan --cost`): floating-point operations
//! and peak memory from the model shapes and the token counts of its datasets (counted when their
//! tokenization is cached, else estimated from the dataset's options and file sizes), and whether
//! `shards = N` splits it.

use super::{Kind, StageSpec};
use crate::data::{DatasetSpec, Mode};
use crate::model::{flops, ModelConfig};
use crate::spec::{DatasetRef, ModelRef, Sp, StageRef};
use std::collections::BTreeMap;
use std::path::Path;

/// A stage's estimated work.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Floating-point operations of matrix products.
    pub flops: f64,
    /// Scores read once each: logits into token statistics (loss, entropy, rank), vocabulary
    /// projections into their extremes.
    pub logits: f64,
    /// Activation values through the per-neuron statistics.
    pub values: f64,
    /// Peak bytes held: weights, activations of a batch, the stage's own state.
    pub bytes: f64,
    /// The stage has `shards = N` (split into jobs with `lantern run --shard i/N`).
    pub shardable: bool,
}

impl Cost {
    pub fn new(flops: f64, bytes: f64) -> Cost {
        Cost { flops, bytes, ..Cost::default() }
    }

    /// The same work, splittable with `shards = N`.
    pub fn shardable(self) -> Cost {
        Cost { shardable: true, ..self }
    }

    /// Both: work added, memory the larger (parts of one stage run one after the other).
    pub fn then(self, other: Cost) -> Cost {
        Cost {
            flops: self.flops + other.flops,
            logits: self.logits + other.logits,
            values: self.values + other.values,
            bytes: self.bytes.max(other.bytes),
            shardable: self.shardable,
        }
    }

    /// A share of the work (one of `n` parts), the same memory.
    pub fn part(self, n: usize) -> Cost {
        let n = n.max(1) as f64;
        Cost { flops: self.flops / n, logits: self.logits / n, values: self.values / n, ..self }
    }

    /// Seconds at these rates.
    pub fn seconds(&self, rates: &flops::Rates) -> f64 {
        self.flops / rates.matmul + self.logits / rates.logits + self.values / rates.values
    }

    /// Whether it does any work.
    pub fn is_work(&self) -> bool {
        self.flops + self.logits + self.values > 0.0
    }
}

/// Token rows of a dataset: how many, how long, whether counted or estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rows {
    pub rows: usize,
    pub ctx: usize,
    pub counted: bool,
}

impl Rows {
    pub fn tokens(&self) -> f64 {
        (self.rows * self.ctx) as f64
    }
}

/// What cost estimates consult.
pub struct CostCx<'a> {
    /// Configurations by model name; `None` when not readable offline.
    pub configs: &'a BTreeMap<String, Option<ModelConfig>>,
    pub stages: &'a BTreeMap<String, Sp<StageSpec>>,
    pub datasets: &'a BTreeMap<String, Sp<DatasetSpec>>,
    pub base_dir: &'a Path,
    /// The rows of a dataset's cached tokenization for a model, when there is one.
    pub counted: &'a dyn Fn(&str, &str) -> Option<(usize, usize)>,
}

/// Writing one table row (a Parquet and a CSV line with its strings) costs about as much as this
/// many values through the per-neuron statistics (measured: an `activations` stage's examples
/// table of 2.2M rows on GPT-2 small's shape).
pub const ROW_VALUES: f64 = 100.0;

/// Characters per token of English BPE text, and how much Parquet compresses text.
const CHARS_PER_TOKEN: f64 = 4.0;
const PARQUET_RATIO: f64 = 2.5;

impl CostCx<'_> {
    /// The spec of a stage of kind `T` (validation checked the kind).
    pub fn stage<T: Kind>(&self, r: &StageRef) -> Option<&T> {
        self.stages.get(r.name()).and_then(|s| T::of(&s.value))
    }

    pub fn config(&self, m: &ModelRef) -> Option<&ModelConfig> {
        self.configs.get(m.name()).and_then(|c| c.as_ref())
    }

    /// The token rows of `dataset` tokenized for `model`.
    pub fn rows(&self, dataset: &DatasetRef, model: &ModelRef) -> Rows {
        if let Some((rows, ctx)) = (self.counted)(dataset.name(), model.name()) {
            return Rows { rows, ctx, counted: true };
        }
        let (rows, ctx) = self.estimate(dataset.name(), 0);
        Rows { rows, ctx, counted: false }
    }

    /// (rows, context) of a dataset from its options and source size.
    fn estimate(&self, name: &str, depth: usize) -> (usize, usize) {
        let Some(spec) = self.datasets.get(name).map(|s| &s.value) else { return (0, 0) };
        if let (Some(mix), true) = (&spec.mix, depth < 8) {
            let parts: Vec<(usize, usize)> = mix.iter().map(|m| self.estimate(m, depth + 1)).collect();
            return (parts.iter().map(|p| p.0).sum(), parts.iter().map(|p| p.1).max().unwrap_or(0));
        }
        let prompts: Option<Vec<&str>> = match (&spec.prompts, &spec.pairs) {
            (Some(p), _) => Some(p.iter().map(String::as_str).collect()),
            (_, Some(p)) => Some(p.iter().flat_map(|p| [p.clean.as_str(), p.corrupted.as_str()]).collect()),
            _ => None,
        };
        if let Some(p) = prompts {
            let longest = p.iter().map(|t| t.len()).max().unwrap_or(0) as f64;
            return (p.len(), (longest / CHARS_PER_TOKEN).ceil() as usize + 1);
        }
        let ctx = spec.context.max(2);
        let available = (self.source_bytes(spec) / CHARS_PER_TOKEN) as usize;
        let by_tokens = |t: usize| t.div_ceil(ctx - 1);
        let mut rows = match (spec.mode(), spec.max_docs) {
            // One row per document, padded to the context.
            (Mode::Document, Some(docs)) => docs,
            _ => by_tokens(available),
        };
        if let Some(n) = spec.n_tokens {
            rows = if available == 0 { by_tokens(n as usize) } else { rows.min(by_tokens(n as usize)) };
        }
        (rows, ctx)
    }

    /// Bytes of text a dataset's files hold (Parquet counted uncompressed).
    fn source_bytes(&self, spec: &DatasetSpec) -> f64 {
        let files = if spec.hub.is_some() {
            crate::data::source::hub_files_in(
                &crate::model::source::hub_cache(),
                spec,
                spec.hub.as_deref().unwrap_or(""),
                false,
            )
            .unwrap_or_default()
        } else {
            crate::data::source::input_files(spec, self.base_dir).unwrap_or_default()
        };
        files
            .iter()
            .map(|f| {
                let len = std::fs::metadata(f).map(|m| m.len() as f64).unwrap_or(0.0);
                if f.extension().is_some_and(|e| e == "parquet") {
                    len * PARQUET_RATIO
                } else {
                    len
                }
            })
            .sum()
    }

    /// `passes` forward passes of `model` over `dataset` in batches of `batch` rows through
    /// `layers` blocks (all when `None`), with or without logits, keeping `captured` values per token.
    pub fn passes(&self, model: &ModelRef, dataset: &DatasetRef, p: Passes) -> Cost {
        let Some(cfg) = self.config(model) else { return Cost::default() };
        let r = self.rows(dataset, model);
        let per_token = flops::forward_flops(cfg, r.ctx, p.layers.unwrap_or(cfg.n_layers), p.unembed);
        let rows = p.batch.min(r.rows.max(1));
        let held = flops::activation_bytes(cfg, rows, r.ctx, p.unembed, p.captured);
        let logits = if p.unembed { p.count * r.tokens() * cfg.d_vocab as f64 } else { 0.0 };
        Cost { logits, ..Cost::new(p.count * per_token * r.tokens(), flops::weight_bytes(cfg) + held) }
    }

    /// The model's weights alone in memory.
    pub fn weights(&self, model: &ModelRef) -> f64 {
        self.config(model).map(flops::weight_bytes).unwrap_or(0.0)
    }
}

/// Forward passes over a dataset, for `CostCx::passes`.
#[derive(Clone, Copy, Debug)]
pub struct Passes {
    pub count: f64,
    pub layers: Option<usize>,
    pub unembed: bool,
    pub batch: usize,
    pub captured: usize,
}

impl Passes {
    /// `count` full passes with logits.
    pub fn logits(count: f64, batch: usize) -> Passes {
        Passes { count, layers: None, unembed: true, batch, captured: 0 }
    }

    /// One pass through the blocks only, keeping `captured` values per token.
    pub fn body(batch: usize, captured: usize) -> Passes {
        Passes { count: 1.0, layers: None, unembed: false, batch, captured }
    }
}
