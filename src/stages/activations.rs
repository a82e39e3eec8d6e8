//! `activations` stage: streaming per-neuron statistics of chosen hooks over a dataset (moments,
//! activation frequency, histogram, top/bottom-k examples, per-token mean and max, and on labelled
//! datasets how mixed the labels of each neuron's top examples are), in f64 and with memory
//! independent of the number of tokens. With `shards = N` each shard keeps the same reducers over
//! its rows and the stage merges them (see `stats::NeuronStats::merge` for what is exact).

use super::batches::for_each_batch;
use super::tables::Ty;
use super::shards::{self, Partial, Sharded};
use super::{TableDecl, Ranking, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use super::cost::ROW_VALUES;
use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::{Request, Start};
use crate::model::selector::select_all;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::stats::labels::{base_rates, LabelMix};
use crate::stats::{Histogram, HistogramSpec, NeuronStats, Position, TokenStats};
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::table::NeuronRows;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// Hooks to summarise. Layer-less names (`mlp.hook_post`, `post`) select every layer.
    #[serde(default = "default_hooks")]
    pub hooks: Vec<Sp<String>>,
    #[serde(default)]
    pub histogram: HistogramSpec,
    /// Largest activations kept per neuron, with their token index.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Smallest activations kept per neuron.
    #[serde(default = "default_bottom_k")]
    pub bottom_k: usize,
    /// Per-token-id mean and max of the `mlp.hook_post` hooks (memory: neurons × vocabulary).
    #[serde(default = "yes")]
    pub token_stats: bool,
    /// Tokens listed per neuron (by mean and by max activation).
    #[serde(default = "default_token_k")]
    pub token_top_k: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "shards::one", skip_serializing_if = "shards::is_one")]
    pub shards: usize,
}

fn default_hooks() -> Vec<Sp<String>> {
    vec![Sp::new("mlp.hook_pre".into()), Sp::new("mlp.hook_post".into())]
}
fn default_top_k() -> usize {
    50
}
fn default_bottom_k() -> usize {
    10
}
fn default_token_k() -> usize {
    20
}
fn default_batch() -> usize {
    8
}
fn yes() -> bool {
    true
}

/// Per-token statistics above this many bytes are refused (turn them off or pick fewer hooks).
const TOKEN_STATS_LIMIT: usize = 4 << 30;

impl Spec {
    fn token_hooks(&self, hooks: &[HookPoint]) -> usize {
        if self.token_stats {
            hooks.iter().filter(|h| h.site() == Some(BlockSite::Post)).count()
        } else {
            0
        }
    }

    /// Bytes of the reducers of these hooks before any data.
    fn state_bytes(&self, cfg: &crate::model::ModelConfig, hooks: &[HookPoint]) -> f64 {
        hooks
            .iter()
            .map(|&h| {
                let vocab = (self.token_stats && h.site() == Some(BlockSite::Post)).then_some(cfg.d_vocab);
                NeuronStats::bytes(h.width(cfg).unwrap_or(0), self.histogram.edges, self.top_k, self.bottom_k, vocab)
            })
            .sum()
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    /// Statistics by kurtosis: the sparse, heavy-tailed neurons that are easiest to interpret.
    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "stats").then_some(Ranking::desc("kurt"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("stats").texts(["hook"]).ints(["layer", "neuron", "count"]).floats(["mean", "var", "skew", "kurt", "freq", "min", "max"]).optional(Ty::Text, ["top_label"]).optional(Ty::Float, ["top_label_share", "label_entropy", "label_entropy_raw"]).optional(Ty::Int, ["labels", "top_documents"]),
            TableDecl::new("examples").texts(["hook"]).ints(["layer", "neuron"]).texts(["which"]).ints(["rank", "index", "row", "position", "token"]).floats(["value"]).texts(["token_str", "label"]),
            TableDecl::new("tokens").texts(["hook"]).ints(["layer", "neuron"]).optional(Ty::Text, ["by", "token_str"]).optional(Ty::Int, ["rank", "token", "count"]).optional(Ty::Float, ["value"]),
        ]
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        shards::run_part(self, cx, part)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let hooks = select_all(cfg, &self.hooks).unwrap_or_default();
        let (captured, post) = (hooks.len() * cfg.d_mlp, self.token_hooks(&hooks) * cfg.d_mlp);
        // The pass stops after the last hook; every captured value goes through the reducers.
        let cost = cx.passes(&self.model, &self.dataset, Passes::body(self.batch_size, captured));
        // The per-token tables (neurons × vocabulary) are filled and then scanned once per entry
        // for each neuron's top tokens, whatever the number of tokens.
        let tables = (post * cfg.d_vocab) as f64;
        // Rows written: each neuron's statistics, examples and (per-token tables) top tokens.
        let written = captured * (1 + self.top_k + self.bottom_k) + post * 2 * self.token_top_k;
        let values = captured as f64 * cx.rows(&self.dataset, &self.model).tokens() + tables + written as f64 * ROW_VALUES;
        Cost { values, bytes: cost.bytes + self.state_bytes(cfg, &hooks), ..cost }.shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        if self.histogram.edges < 2 || self.histogram.stop <= self.histogram.start {
            out.push(cx.error("histogram", "activations: histogram needs stop > start and at least 2 edges"));
        }
        if self.hooks.is_empty() {
            out.push(cx.error("hooks", "activations: list at least one hook (e.g. \"mlp.hook_post\")"));
        }
        if let Some(positions) = cx.positions(&self.dataset) {
            let positions = usize::try_from(positions).unwrap_or(usize::MAX);
            cx.at_most("top_k", self.top_k, positions, "the dataset's positions", out);
            cx.at_most("bottom_k", self.bottom_k, positions, "the dataset's positions", out);
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        if let Some(points) = cx.per_position_hooks(&self.model, &self.hooks, "activations summarises", out) {
            cx.memory(
                self.state_bytes(cfg, &points),
                "the statistics of these hooks",
                "lower top_k, bottom_k or histogram.edges, set token_stats = false, or list fewer hooks",
                out,
            );
            let bytes = TokenStats::bytes(self.token_hooks(&points) * cfg.d_mlp, cfg.d_vocab);
            if bytes > TOKEN_STATS_LIMIT {
                let span = self.hooks.first().map(|h| h.span.clone()).unwrap_or(0..0);
                out.push(
                    Diagnostic::at(
                        span,
                        format!("per-token statistics of these hooks need {:.1} GB", bytes as f64 / 1e9),
                    )
                    .help(
                        "set token_stats = false, or list fewer mlp.hook_post layers (e.g. \"blocks.5.mlp.hook_post\")",
                    ),
                );
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        shards::run(self, cx)
    }
}

/// The statistics of every hook over some rows.
pub struct Stats(BTreeMap<HookPoint, NeuronStats>);

impl Partial for Stats {
    fn save(&self, out: &mut Arrays) {
        for (h, s) in &self.0 {
            s.save(&h.to_string(), out);
        }
    }

    fn load(f: &ArraysFile) -> Result<Stats> {
        let mut stats = BTreeMap::new();
        for name in f.names()? {
            let Some(hook) = name.strip_suffix(".count") else { continue };
            let h = HookPoint::parse(hook).ok_or_else(|| anyhow::anyhow!("unknown hook '{hook}' in statistics"))?;
            stats.insert(h, NeuronStats::load(hook, f)?);
        }
        Ok(Stats(stats))
    }

    fn merge(&mut self, o: Stats) -> Result<()> {
        anyhow::ensure!(self.0.keys().eq(o.0.keys()), "shards summarise different hooks");
        for (h, s) in &mut self.0 {
            s.merge(&o.0[h])?;
        }
        Ok(())
    }
}

impl Sharded for Spec {
    type State = Stats;

    fn shards(&self) -> usize {
        self.shards
    }

    fn compute(&self, cx: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<Stats> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let cfg = &model.cfg;
        let hooks = select_all(cfg, &self.hooks)?;
        let edges = Histogram::linspace(self.histogram.start, self.histogram.stop, self.histogram.edges);
        let mut stats: BTreeMap<HookPoint, NeuronStats> = hooks
            .iter()
            .map(|&h| {
                let vocab = (self.token_stats && h.site() == Some(BlockSite::Post)).then_some(cfg.d_vocab);
                let n = h.width(cfg).unwrap_or(0);
                let positions = data.rows * data.ctx;
                (h, NeuronStats::new(n, &edges, self.top_k.min(positions), self.bottom_k.min(positions), vocab))
            })
            .collect();
        let req = Request::capture(hooks.iter().copied());
        let rows = shards::rows(data.rows, self.batch_size, shard);
        for_each_batch(cx, &data, rows, self.batch_size, &model.device, |batch| {
            let positions: Vec<Position> = (0..batch.len())
                .filter(|&i| batch.valid[i] != 0)
                .map(|i| Position { row: i, index: batch.index(i) as u64, token: batch.ids[i] })
                .collect();
            model.forward(Start::Tokens(&batch.tokens), &req, &mut |h, t| {
                let s = stats.get_mut(&h).expect("captured hook has reducers");
                let t = t.to_device(&Device::Cpu)?;
                crate::model::forward::with_f32(&t, |x| s.add(x, &positions))
            })?;
            Ok(())
        })?;
        Ok(Stats(stats))
    }

    fn finish(&self, cx: &mut dyn StageEnv, stats: Stats) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        self.write(cx, &stats.0, &data, &model)
    }
}

impl Spec {
    fn write(
        &self,
        cx: &dyn StageEnv,
        stats: &BTreeMap<HookPoint, NeuronStats>,
        data: &crate::data::Tokenized,
        model: &crate::model::Model,
    ) -> Result<()> {
        if stats.values().all(|s| s.count() == 0) {
            bail!("no valid positions in the dataset: every position is masked");
        }
        let tok = model.tokenizer.as_ref();
        let token_str = |t: u32| tok.map(|k| k.token_str(t)).unwrap_or_else(|| t.to_string());
        let mut summary = NeuronRows::default();
        let mut examples = NeuronRows::default();
        let mut tokens = NeuronRows::default();
        let mut hist = std::collections::HashMap::new();
        let label_of = |index: u64| data.label_at(index as usize);
        // Label mixes only mean something when the dataset has several labels.
        let labelled = data.doc_labels.iter().collect::<std::collections::BTreeSet<_>>().len() > 1;
        // Base rates over the positions that count (the population top examples are drawn from).
        let base = if labelled {
            base_rates((0..data.tokens.len()).filter(|&i| data.valid[i] != 0).map(|i| data.label_at(i)))
        } else {
            Default::default()
        };
        // A document's label counts once however many of its positions (overlapping windows) are
        // among the top examples.
        let documents_once = |top: &[(f32, u64)]| -> Vec<&str> {
            let mut seen = std::collections::HashSet::new();
            top.iter()
                .filter(|&&(_, index)| {
                    let d = data.doc[index as usize];
                    d == u32::MAX || seen.insert(d)
                })
                .map(|&(_, index)| label_of(index))
                .collect()
        };
        for (h, s) in stats {
            let site = h.site().map(|s| s.tl_suffix()).unwrap_or("?");
            let layer = h.layer().unwrap_or(0) as u32;
            let mut counts = Vec::with_capacity(s.n * (s.edges.len() + 1));
            for i in 0..s.n {
                let m = s.summary(i);
                summary.key(site, layer, i as u32);
                summary.ints(&[("count", s.count() as i64)]);
                summary.f64s(&[
                    ("mean", m.mean),
                    ("var", m.var),
                    ("skew", m.skew),
                    ("kurt", m.kurt),
                    ("freq", m.freq),
                    ("min", m.min as f64),
                    ("max", m.max as f64),
                ]);
                if labelled {
                    let docs = documents_once(&s.top(i));
                    let mix = LabelMix::of(docs.iter().copied());
                    let (top, share, raw, norm, distinct) = mix
                        .map(|m| (m.top.clone(), m.top_share, m.entropy, m.normalised_entropy(&base), m.distinct))
                        .unwrap_or_default();
                    summary.strs(&[("top_label", top)]);
                    summary.f64s(&[
                        ("top_label_share", share),
                        ("label_entropy", norm),
                        ("label_entropy_raw", raw),
                    ]);
                    summary.ints(&[("labels", distinct as i64), ("top_documents", docs.len() as i64)]);
                }
                for (which, list) in [("top", s.top(i)), ("bottom", s.bottom(i))] {
                    for (rank, (value, index)) in list.into_iter().enumerate() {
                        examples.key(site, layer, i as u32);
                        examples.strs(&[("which", which.to_string())]);
                        let (row, pos) = (index as usize / data.ctx, index as usize % data.ctx);
                        let t = data.tokens[index as usize];
                        examples.ints(&[
                            ("rank", rank as i64),
                            ("index", index as i64),
                            ("row", row as i64),
                            ("position", pos as i64),
                            ("token", t as i64),
                        ]);
                        examples.f64s(&[("value", value as f64)]);
                        examples.strs(&[("token_str", token_str(t)), ("label", label_of(index).to_string())]);
                    }
                }
                for by_max in [false, true] {
                    for (rank, (t, value, count)) in
                        s.top_tokens(i, self.token_top_k, by_max).unwrap_or_default().into_iter().enumerate()
                    {
                        tokens.key(site, layer, i as u32);
                        tokens.strs(&[
                            ("by", if by_max { "max" } else { "mean" }.to_string()),
                            ("token_str", token_str(t)),
                        ]);
                        tokens.ints(&[("rank", rank as i64), ("token", t as i64), ("count", count as i64)]);
                        tokens.f64s(&[("value", value as f64)]);
                    }
                }
                counts.extend_from_slice(s.histogram(i));
            }
            hist.insert(h.to_string(), Tensor::from_vec(counts, (s.n, s.edges.len() + 1), &Device::Cpu)?);
        }
        let edges = stats.values().next().map(|s| s.edges.clone()).unwrap_or_default();
        hist.insert("edges".into(), Tensor::from_vec(edges.clone(), edges.len(), &Device::Cpu)?);
        cx.write_table("stats", &mut summary.frame()?)?;
        cx.write_table("examples", &mut examples.frame()?)?;
        if self.token_stats {
            cx.write_table("tokens", &mut tokens.frame()?)?;
        }
        candle_core::safetensors::save(&hist, cx.out().join("histograms.safetensors"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn cost(token_stats: bool) -> Cost {
        let cfg = ModelConfig::gpt2(2, 64, 4, 256, 1000, 128);
        let configs = BTreeMap::from([("m".to_string(), Some(cfg))]);
        let counted = |_: &str, _: &str| Some((10, 128));
        let cx = CostCx {
            configs: &configs,
            stages: &BTreeMap::new(),
            datasets: &BTreeMap::new(),
            base_dir: std::path::Path::new("."),
            counted: &counted,
        };
        let text = format!("model = \"m\"\ndataset = \"d\"\ntoken_stats = {token_stats}");
        toml::from_str::<Spec>(&text).unwrap().cost(&cx)
    }

    #[test]
    fn per_token_tables_are_costed_in_work_and_memory() {
        let (with, without) = (cost(true), cost(false));
        // Both layers' mlp.hook_post: 256 neurons × 1,000 vocabulary entries each.
        let tables = 2.0 * 256.0 * 1000.0;
        assert_eq!(with.bytes - without.bytes, 2.0 * TokenStats::bytes(256, 1000) as f64);
        assert_eq!(with.flops, without.flops);
        // Every captured value (hook_pre and hook_post of 2 layers) per token, and the rows written.
        let rows = 4.0 * 256.0 * (1.0 + 50.0 + 10.0);
        assert_eq!(without.values, 4.0 * 256.0 * 1280.0 + rows * ROW_VALUES);
        let token_rows = 2.0 * 256.0 * 2.0 * 20.0;
        assert_eq!(with.values - without.values, tables + token_rows * ROW_VALUES);
    }
}
