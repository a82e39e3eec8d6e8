//! `explain` stage (Universal Neurons §1.6): how much of each neuron's activation variance each
//! boolean feature explains — the current token's and the previous token's string features, unigram
//! groups, user token sets, position buckets, dataset subsets and per-position labels from Parquet —
//! in one streaming pass; each neuron's best explanations and its family, and the mutual
//! information between its firing and the position (the study's position-neuron score). With
//! `shards = N` each shard sums its rows and the stage merges the sums (f64, shifted to one origin).

use super::batches::for_each_batch;
use super::shards::{self, Partial, Sharded};
use super::{TableDecl, Ranking, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::features::{vocabulary_features, Feature, TokenFeatures};
use crate::data::Tokenized;
use crate::model::hooks::HookPoint;
use crate::model::{Request, Start};
use crate::model::selector::select_all;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::stats::firing::PositionFiring;
use crate::stats::separation::{Score, Separation};
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::table::{NeuronRows, Table};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

/// Families of features.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// The current token's features (string features, unigrams, token sets, labels).
    Token,
    /// The previous token's (none at position 0).
    PrevToken,
    /// Position buckets: 0, 1, 2, 3, 4–7, 8–15, …
    Position,
    /// Which dataset (of a mix) or file (of a glob) the position's document comes from.
    Subset,
}

/// Per-position labels from a Parquet file with columns `row`, `position` (of the tokenized
/// dataset) and `column` (strings); each value becomes a feature `column=value`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSource {
    pub path: Sp<String>,
    pub column: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// Hooks whose neurons are explained; layer-less names select every layer.
    #[serde(default = "default_hooks")]
    pub hooks: Vec<Sp<String>>,
    #[serde(default = "default_features")]
    pub features: Vec<FeatureKind>,
    /// A unigram group counts when its tokens occur more than this often in the dataset (the
    /// study's > 3000 over 10M tokens) …
    #[serde(default = "default_count_above")]
    pub unigram_count_above: u64,
    /// … and it spans more than this many token ids (the study's > 3).
    #[serde(default = "default_ids_above")]
    pub unigram_ids_above: usize,
    /// Named token sets, each string one token: `{ pronouns = [" he", " she", " they"] }`.
    #[serde(default)]
    pub token_sets: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub labels: Vec<LabelSource>,
    /// Explanations listed per neuron.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// A best variance reduction below this leaves the neuron "unexplained".
    #[serde(default = "default_min_vr")]
    pub min_vr: f64,
    /// Rows of the `top` table (the best-explained neurons).
    #[serde(default = "default_top")]
    pub top: usize,
    /// Leave out the positions holding the tokenizer's BOS token (GPT-2's BOS is also its EOS, so
    /// in-row document separators too, as the study's correlation filter does): a first token's
    /// activation, often far from the others, would otherwise file neurons as position neurons.
    #[serde(default = "yes")]
    pub skip_bos: bool,
    /// Memory the sums may take.
    #[serde(default = "default_memory")]
    pub memory_gb: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "shards::one", skip_serializing_if = "shards::is_one")]
    pub shards: usize,
}

fn default_hooks() -> Vec<Sp<String>> {
    vec![Sp::new("mlp.hook_post".into())]
}
fn default_features() -> Vec<FeatureKind> {
    vec![FeatureKind::Token, FeatureKind::PrevToken, FeatureKind::Position, FeatureKind::Subset]
}
fn default_count_above() -> u64 {
    3000
}
fn default_ids_above() -> usize {
    3
}
fn default_top_k() -> usize {
    3
}
fn default_min_vr() -> f64 {
    0.1
}
fn default_top() -> usize {
    25
}
fn yes() -> bool {
    true
}
fn default_memory() -> f64 {
    8.0
}
fn default_batch() -> usize {
    8
}

/// One column of the neuron × feature table: a feature and where it is read from.
#[derive(Clone, Debug)]
pub struct FeatureColumn {
    pub feature: Feature,
    /// token, prev_token, position, subset, label, prev_label
    pub variant: &'static str,
}

impl FeatureColumn {
    /// The family a neuron explained by this feature belongs to.
    pub fn family(&self) -> String {
        match self.variant {
            "prev_token" | "prev_label" => format!("prev {}", self.feature.group),
            _ => self.feature.group.clone(),
        }
    }
    pub fn label(&self) -> String {
        format!("{}: {}", self.variant, self.feature.name)
    }
}

/// Position bucket names and the bucket of each position: 0, 1, 2, 3, then 4–7, 8–15, ….
fn position_buckets(ctx: usize) -> (Vec<String>, Vec<u32>) {
    let (mut names, mut of) = (Vec::new(), Vec::with_capacity(ctx));
    for p in 0..ctx {
        let name = if p < 4 {
            p.to_string()
        } else {
            let lo = 1usize << (usize::BITS - 1 - p.leading_zeros());
            format!("{lo}–{}", (2 * lo - 1).min(ctx - 1))
        };
        if names.last() != Some(&name) {
            names.push(name);
        }
        of.push(names.len() as u32 - 1);
    }
    (names, of)
}

/// Every feature column and, per position of the dataset, the columns that hold there.
struct Layout {
    columns: Vec<FeatureColumn>,
    token: Option<u32>,
    prev: Option<u32>,
    position: Option<(u32, Vec<u32>)>,
    subset: Option<(u32, Vec<u32>)>,
    /// Per label block: first column, value index per dataset position (u32::MAX = none), and
    /// whether it is read at the previous position.
    labels: Vec<(u32, Vec<u32>, bool)>,
}

impl Spec {
    fn has(&self, k: FeatureKind) -> bool {
        self.features.contains(&k)
    }

    fn layout(&self, tf: &TokenFeatures, data: &Tokenized, base: &std::path::Path) -> Result<Layout> {
        let mut columns = Vec::new();
        let block = |columns: &mut Vec<FeatureColumn>, feats: &[Feature], variant: &'static str| {
            let at = columns.len() as u32;
            columns.extend(feats.iter().map(|f| FeatureColumn { feature: f.clone(), variant }));
            at
        };
        let token = self.has(FeatureKind::Token).then(|| block(&mut columns, &tf.features, "token"));
        let prev = self.has(FeatureKind::PrevToken).then(|| block(&mut columns, &tf.features, "prev_token"));
        let position = self.has(FeatureKind::Position).then(|| {
            let (names, of) = position_buckets(data.ctx);
            let feats: Vec<Feature> =
                names.into_iter().map(|n| Feature { name: n, group: "position".into() }).collect();
            (block(&mut columns, &feats, "position"), of)
        });
        let subset = if self.has(FeatureKind::Subset) {
            let names: BTreeSet<&str> = data.doc_labels.iter().map(String::as_str).collect();
            let names: Vec<&str> = names.into_iter().collect();
            (names.len() > 1).then(|| {
                let of: Vec<u32> = (0..data.tokens.len())
                    .map(|i| names.binary_search(&data.label_at(i)).map(|k| k as u32).unwrap_or(u32::MAX))
                    .collect();
                let feats: Vec<Feature> =
                    names.iter().map(|n| Feature { name: n.to_string(), group: "subset".into() }).collect();
                (block(&mut columns, &feats, "subset"), of)
            })
        } else {
            None
        };
        let mut labels = Vec::new();
        for src in &self.labels {
            let path = base.join(&src.path.value);
            let (values, of) = read_labels(&path, &src.column, data)
                .map_err(|e| crate::data::DataError::in_file(&path, format!("labels: {e:#}")))?;
            let feats: Vec<Feature> = values
                .iter()
                .map(|v| Feature { name: format!("{}={v}", src.column), group: format!("label {}", src.column) })
                .collect();
            labels.push((block(&mut columns, &feats, "label"), of.clone(), false));
            if self.has(FeatureKind::PrevToken) {
                labels.push((block(&mut columns, &feats, "prev_label"), of, true));
            }
        }
        Ok(Layout { columns, token, prev, position, subset, labels })
    }
}

impl Layout {
    /// The columns that hold at dataset position `g` (position `p` of its row).
    fn on(&self, tf: &TokenFeatures, data: &Tokenized, g: usize, p: usize) -> Vec<u32> {
        let mut v = Vec::new();
        if let Some(at) = self.token {
            v.extend(tf.of_token[data.tokens[g] as usize].iter().map(|f| at + f));
        }
        if let (Some(at), true) = (self.prev, p > 0) {
            v.extend(tf.of_token[data.tokens[g - 1] as usize].iter().map(|f| at + f));
        }
        if let Some((at, of)) = &self.position {
            v.push(at + of[p]);
        }
        if let Some((at, of)) = &self.subset {
            if of[g] != u32::MAX {
                v.push(at + of[g]);
            }
        }
        for (at, of, prev) in &self.labels {
            if *prev && p == 0 {
                continue;
            }
            let src = if *prev { g - 1 } else { g };
            if of[src] != u32::MAX {
                v.push(at + of[src]);
            }
        }
        v
    }
}

/// A label column aligned to the dataset: (distinct values, value index per position).
fn read_labels(path: &std::path::Path, column: &str, data: &Tokenized) -> Result<(Vec<String>, Vec<u32>)> {
    let df = crate::store::table::read(path)?;
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    for need in ["row", "position", column] {
        if !names.iter().any(|n| n == need) {
            bail!(
                "no column '{need}' (columns: {}){}",
                names.join(", "),
                crate::util::did_you_mean(need, names.iter().map(|s| s.as_str()))
            );
        }
    }
    let cast = |n: &str| -> Result<Vec<Option<i64>>> {
        Ok(df.column(n)?.cast(&DataType::Int64)?.i64()?.into_iter().collect())
    };
    let (rows, pos) = (cast("row")?, cast("position")?);
    let vals = df.column(column)?.cast(&DataType::String)?;
    let vals = vals.str()?;
    let distinct: BTreeSet<&str> = vals.into_iter().flatten().collect();
    let distinct: Vec<String> = distinct.into_iter().map(str::to_string).collect();
    let mut of = vec![u32::MAX; data.tokens.len()];
    for i in 0..df.height() {
        let (Some(r), Some(p), Some(v)) = (rows[i], pos[i], vals.get(i)) else { continue };
        if r < 0 || p < 0 || r as usize >= data.rows || p as usize >= data.ctx {
            bail!(
                "record {}: row {r}, position {p} is outside the dataset ({} rows of {} positions)",
                i + 1,
                data.rows,
                data.ctx
            );
        }
        of[r as usize * data.ctx + p as usize] =
            distinct.binary_search_by(|d| d.as_str().cmp(v)).expect("value listed") as u32;
    }
    Ok((distinct, of))
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn files(&self) -> Vec<&str> {
        self.labels.iter().map(|l| l.path.value.as_str()).collect()
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        match table {
            "best" | "top" => Some(Ranking::desc("vr")),
            "position_mi" => Some(Ranking::desc("mi_bits")),
            _ => None,
        }
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("features").texts(["feature", "variant", "group"]).ints(["positions"]).floats(["fraction"]),
            TableDecl::new("explanations").texts(["hook"]).ints(["layer", "neuron", "rank", "positions"]).texts(["feature", "group"]).floats(["vr", "mean_diff", "welch_t"]),
            TableDecl::new("best").texts(["hook"]).ints(["layer", "neuron"]).texts(["feature", "family"]).floats(["vr", "mean_diff", "welch_t"]),
            TableDecl::new("families").texts(["hook"]).ints(["layer"]).texts(["family"]).ints(["neurons"]),
            TableDecl::new("top").ints(["rank", "layer", "neuron"]).texts(["name", "feature"]).floats(["vr"]),
            TableDecl::new("position_mi").texts(["hook"]).ints(["layer", "neuron"]).floats(["mi_bits", "firing_rate"]),
        ]
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        shards::run_part(self, cx, part)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        let pass = cx.passes(&self.model, &self.dataset, Passes::body(self.batch_size, 0));
        // Every activation value goes into the statistics of each feature kind (and label source)
        // at its position; each neuron writes its top explanations, its best and its position MI.
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let neurons = select_all(cfg, &self.hooks).map_or(0, |h| h.len() * cfg.d_mlp) as f64;
        let kinds = (self.features.len() + self.labels.len()) as f64;
        let tokens = cx.rows(&self.dataset, &self.model).tokens();
        let values = neurons * tokens * kinds + neurons * (self.top_k as f64 + 2.0) * super::cost::ROW_VALUES;
        Cost { values, ..Cost::new(pass.flops, pass.bytes + self.memory_gb * 1e9) }.shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        cx.at_least("top_k", self.top_k, 1, out);
        if self.hooks.is_empty() {
            out.push(cx.error("hooks", "explain: list at least one hook (e.g. \"mlp.hook_post\")"));
        }
        if self.features.is_empty() && self.labels.is_empty() {
            out.push(Diagnostic::at(self.model.span(), "explain needs at least one of features = [\"token\", \"prev_token\", \"position\", \"subset\"] or labels"));
        }
        for l in &self.labels {
            if !cx.base_dir.join(&l.path.value).is_file() {
                out.push(
                    Diagnostic::at(l.path.span.clone(), format!("label file '{}' not found", l.path.value))
                        .help("a Parquet file with columns row, position and the label column"),
                );
            }
        }
        cx.per_position_hooks(&self.model, &self.hooks, "explain scores", out);
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        shards::run(self, cx)
    }
}

/// The variance-reduction sums and the firing counts per position of every hook over some rows.
pub struct Sums {
    separation: BTreeMap<HookPoint, Separation>,
    firing: BTreeMap<HookPoint, PositionFiring>,
}

impl Partial for Sums {
    fn save(&self, out: &mut Arrays) {
        for (h, s) in &self.separation {
            s.save(&h.to_string(), out);
        }
        for (h, f) in &self.firing {
            f.save(&format!("{h}.firing"), out);
        }
    }

    fn load(f: &ArraysFile) -> Result<Sums> {
        let (mut separation, mut firing) = (BTreeMap::new(), BTreeMap::new());
        for name in f.names()? {
            let Some(hook) = name.strip_suffix(".shape") else { continue };
            let h = HookPoint::parse(hook).ok_or_else(|| anyhow::anyhow!("unknown hook '{hook}' in sums"))?;
            separation.insert(h, Separation::load(hook, f)?);
            firing.insert(h, PositionFiring::load(&format!("{hook}.firing"), f)?);
        }
        Ok(Sums { separation, firing })
    }

    fn merge(&mut self, o: Sums) -> Result<()> {
        anyhow::ensure!(self.separation.keys().eq(o.separation.keys()), "shards explain different hooks");
        for (h, s) in &mut self.separation {
            s.merge(&o.separation[h])?;
        }
        for (h, f) in &mut self.firing {
            f.merge(&o.firing[h])?;
        }
        Ok(())
    }
}

impl Spec {
    /// The feature columns of the dataset (and the token features they are built from).
    fn features(&self, cx: &dyn StageEnv, model: &crate::model::Model, data: &Tokenized) -> Result<(TokenFeatures, Layout)> {
        let cfg = &model.cfg;
        let tok = model.tokenizer.as_ref().context("explain reads token strings: the model has no tokenizer")?;
        let skipped = |t: u32| self.skip_bos && t == tok.bos;
        let mut counts = vec![0u64; cfg.d_vocab];
        for (t, v) in data.tokens.iter().zip(&data.valid) {
            if *v != 0 && !skipped(*t) {
                counts[*t as usize] += 1;
            }
        }
        let tf = vocabulary_features(
            tok,
            cfg.d_vocab,
            Some((&counts, self.unigram_count_above, self.unigram_ids_above)),
            &self.token_sets,
        )?;
        let layout = self.layout(&tf, data, cx.base_dir())?;
        Ok((tf, layout))
    }
}

impl Sharded for Spec {
    type State = Sums;

    fn shards(&self) -> usize {
        self.shards
    }

    fn compute(&self, cx: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<Sums> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let cfg = &model.cfg;
        let (tf, layout) = self.features(cx, &model, &data)?;
        let hooks = select_all(cfg, &self.hooks)?;
        let nf = layout.columns.len();
        let bytes: usize = hooks
            .iter()
            .map(|h| Separation::bytes(nf, h.width(cfg).unwrap_or(0)) + 4 * data.ctx * h.width(cfg).unwrap_or(0))
            .sum();
        if bytes as f64 > self.memory_gb * 1e9 {
            bail!("explain: {nf} features × {} hooks need {:.1} GB of sums (memory_gb = {}): select fewer hooks or features, or raise memory_gb", hooks.len(), bytes as f64 / 1e9, self.memory_gb);
        }
        let mut sums: BTreeMap<HookPoint, Separation> =
            hooks.iter().map(|&h| (h, Separation::new(nf, h.width(cfg).unwrap_or(0)))).collect();
        let mut firing: BTreeMap<HookPoint, PositionFiring> =
            hooks.iter().map(|&h| (h, PositionFiring::new(data.ctx, h.width(cfg).unwrap_or(0)))).collect();
        let bos = model.tokenizer.as_ref().map(|t| t.bos);
        let skipped = |t: u32| self.skip_bos && Some(t) == bos;
        let req = Request::capture(hooks.iter().copied());
        let rows = shards::rows(data.rows, self.batch_size, shard);
        for_each_batch(cx, &data, rows, self.batch_size, &model.device, |batch| {
            let keep: Vec<usize> =
                (0..batch.len()).filter(|&i| batch.valid[i] != 0 && !skipped(batch.ids[i])).collect();
            let on: Vec<Vec<u32>> =
                keep.iter().map(|&i| layout.on(&tf, &data, batch.index(i), i % batch.ctx)).collect();
            let positions: Vec<usize> = keep.iter().map(|&i| i % batch.ctx).collect();
            model.forward(Start::Tokens(&batch.tokens), &req, &mut |h, t| {
                let s = sums.get_mut(&h).expect("captured hook has sums");
                let f = firing.get_mut(&h).expect("captured hook has counts");
                let w = h.width(cfg).unwrap_or(0);
                crate::model::forward::with_f32(&t.to_device(&Device::Cpu)?, |x| {
                    if keep.len() == batch.len() {
                        s.add(x, &on);
                        f.add(x, &positions);
                    } else {
                        let rows: Vec<f32> = keep.iter().flat_map(|&i| x[i * w..(i + 1) * w].iter().copied()).collect();
                        s.add(&rows, &on);
                        f.add(&rows, &positions);
                    }
                })
            })?;
            Ok(())
        })?;
        Ok(Sums { separation: sums, firing })
    }

    fn finish(&self, cx: &mut dyn StageEnv, sums: Sums) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let (_, layout) = self.features(cx, &model, &data)?;
        self.write(cx, &layout.columns, &sums.separation)?;
        let mut mi = NeuronRows::default();
        for (h, f) in &sums.firing {
            let (site, layer) = (h.site().map(|s| s.tl_suffix()).unwrap_or("?"), h.layer().unwrap_or(0) as u32);
            for (neuron, (bits, rate)) in f.mutual_information().into_iter().enumerate() {
                mi.key(site, layer, neuron as u32);
                mi.f64s(&[("mi_bits", bits), ("firing_rate", rate)]);
            }
        }
        cx.write_table("position_mi", &mut mi.frame()?)
    }
}

impl Spec {
    fn write(&self, cx: &dyn StageEnv, columns: &[FeatureColumn], sums: &BTreeMap<HookPoint, Separation>) -> Result<()> {
        let n = sums.values().next().map(|s| s.rows()).unwrap_or(0);
        if n < 2 {
            bail!("explain needs at least two valid positions; the dataset has {n}");
        }
        let first = sums.values().next().expect("one hook");
        let mut features = Table::new().with("feature", columns.iter().map(|c| c.label()).collect::<Vec<_>>()).with("variant", columns.iter().map(|c| c.variant).collect::<Vec<_>>()).with("group", columns.iter().map(|c| c.feature.group.clone()).collect::<Vec<_>>()).with("positions", (0..columns.len()).map(|f| first.holds(f)).collect::<Vec<_>>()).with("fraction", (0..columns.len()).map(|f| first.holds(f) as f64 / n as f64).collect::<Vec<_>>()).frame()?;
        cx.write_table("features", &mut features)?;
        let (mut expl, mut best) = (NeuronRows::default(), NeuronRows::default());
        let mut families: BTreeMap<(String, u32, String), u32> = BTreeMap::new();
        let mut top: Vec<(f64, String, u32, u32)> = Vec::new();
        let mut matrices = std::collections::HashMap::new();
        for (h, s) in sums {
            let (site, layer) = (h.site().map(|s| s.tl_suffix()).unwrap_or("?"), h.layer().unwrap_or(0) as u32);
            let nw = s.width();
            let mut vr = Vec::with_capacity(nw * columns.len());
            for neuron in 0..nw {
                let scores: Vec<Score> = (0..columns.len()).map(|f| s.score(f, neuron)).collect();
                vr.extend(scores.iter().map(|x| x.vr as f32));
                let mut order: Vec<usize> = (0..columns.len()).filter(|&f| scores[f].vr.is_finite()).collect();
                order.sort_by(|&a, &b| scores[b].vr.total_cmp(&scores[a].vr));
                for (rank, &f) in order.iter().take(self.top_k).enumerate() {
                    expl.key(site, layer, neuron as u32);
                    expl.ints(&[("rank", rank as i64), ("positions", scores[f].n1 as i64)]);
                    expl.strs(&[("feature", columns[f].label()), ("group", columns[f].feature.group.clone())]);
                    expl.f64s(&[
                        ("vr", scores[f].vr),
                        ("mean_diff", scores[f].mean_diff),
                        ("welch_t", scores[f].welch_t),
                    ]);
                }
                let b = order.first().copied();
                let bvr = b.map(|f| scores[f].vr).unwrap_or(f64::NAN);
                let family = match b {
                    Some(f) if bvr >= self.min_vr => columns[f].family(),
                    _ => "unexplained".to_string(),
                };
                best.key(site, layer, neuron as u32);
                best.strs(&[
                    ("feature", b.map(|f| columns[f].label()).unwrap_or_default()),
                    ("family", family.clone()),
                ]);
                best.f64s(&[
                    ("vr", bvr),
                    ("mean_diff", b.map(|f| scores[f].mean_diff).unwrap_or(f64::NAN)),
                    ("welch_t", b.map(|f| scores[f].welch_t).unwrap_or(f64::NAN)),
                ]);
                *families.entry((site.to_string(), layer, family)).or_default() += 1;
                if let Some(f) = b {
                    top.push((bvr, columns[f].label(), layer, neuron as u32));
                }
            }
            matrices.insert(h.to_string(), Tensor::from_vec(vr, (nw, columns.len()), &Device::Cpu)?);
        }
        cx.write_table("explanations", &mut expl.frame()?)?;
        cx.write_table("best", &mut best.frame()?)?;
        let mut fam = Table::new().with("hook", families.keys().map(|k| k.0.clone()).collect::<Vec<_>>()).with("layer", families.keys().map(|k| k.1).collect::<Vec<_>>()).with("family", families.keys().map(|k| k.2.clone()).collect::<Vec<_>>()).with("neurons", families.values().copied().collect::<Vec<_>>()).frame()?;
        cx.write_table("families", &mut fam)?;
        top.sort_by(|a, b| b.0.total_cmp(&a.0));
        top.truncate(self.top);
        let mut top_df = Table::new().with("rank", (0..top.len() as u32).collect::<Vec<_>>()).with("layer", top.iter().map(|t| t.2).collect::<Vec<_>>()).with("neuron", top.iter().map(|t| t.3).collect::<Vec<_>>()).with("name", top.iter().map(|t| format!("L{}.{} {}", t.2, t.3, t.1)).collect::<Vec<_>>()).with("feature", top.iter().map(|t| t.1.clone()).collect::<Vec<_>>()).with("vr", top.iter().map(|t| t.0).collect::<Vec<_>>()).frame()?;
        cx.write_table("top", &mut top_df)?;
        candle_core::safetensors::save(&matrices, cx.out().join("variance_reduction.safetensors"))?;
        Ok(())
    }
}
