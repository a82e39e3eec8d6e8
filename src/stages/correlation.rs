//! `correlation` stage: every neuron of model A against every neuron of model B over a dataset
//! (Pearson, cosine or Jaccard), from exact streaming sums tiled by layer pair within a memory
//! budget; optionally against a random baseline, and optionally split into shards (one plan node
//! each, `lantern run --shard i/n`) over blocks of layer pairs: each shard streams every token
//! for its pairs and keeps only its best matches and histogram, which the stage merges exactly.

use crate::stats::HistogramSpec;
use crate::util::Progress;
use super::{TableDecl, shards, Ranking, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::baseline::{self, Baseline};
use crate::analysis::correlation::{Products, Shape, Similarity, Sums};
use crate::data::Tokenized;
use crate::model::hooks::HookPoint;
use crate::model::{Model, Request, Start};
use crate::model::selector::select;
use super::check::hook_diagnostic;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::stats::exact::value;
use crate::stats::Histogram;
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::tensor_file::{TensorFile, TensorFileWriter};
use crate::store::table::Table;
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

/// Precision of the full similarity matrix on disk.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MatrixPrecision {
    F16,
    F32,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The model whose neurons are matched (the reference).
    pub a: ModelRef,
    /// The model searched for matches (same tokenizer).
    pub b: ModelRef,
    /// Tokenized with A's tokenizer; both models read the same token rows.
    pub dataset: DatasetRef,
    /// The hook compared in both models; layer-less names select every layer.
    #[serde(default = "default_hook")]
    pub hook: Sp<String>,
    /// Positions whose input token is one of these are left out (in both models): `bos`, `eos`,
    /// `pad` or a string that is one token. Default: BOS, pad and newline, as the study.
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub similarity: Similarity,
    /// Jaccard: an activation counts as on when above this.
    #[serde(default)]
    pub threshold: f32,
    #[serde(default)]
    pub baseline: Baseline,
    /// Seed of the baseline (default: the experiment's seed mixed with the stage's name, so each
    /// comparison draws its own matrices and the shards of one draw the same).
    pub seed: Option<u64>,
    /// Precision of the per-batch cross products; the running sums are exact in every case.
    #[serde(default)]
    pub products: Products,
    /// Best matches kept per neuron of A (over all of B's layers).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Histogram of every similarity.
    #[serde(default = "default_histogram")]
    pub histogram: HistogramSpec,
    /// Also write the full [LA·dA, LB·dB] matrix (`correlation.safetensors`).
    pub matrix: Option<MatrixPrecision>,
    /// Memory for the sums of one pass (16 bytes per neuron pair); more pairs take more passes.
    #[serde(default = "default_memory")]
    pub memory_gb: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the layer pairs into this many shards, each its own plan node (`--shard i/n`) that
    /// streams every token for its pairs and writes only their best matches and histogram.
    #[serde(default = "shards::one")]
    pub shards: usize,
}

fn default_hook() -> Sp<String> {
    Sp::new("mlp.hook_post".into())
}
fn default_exclude() -> Vec<String> {
    vec!["bos".into(), "pad".into(), "\n".into()]
}
fn default_top_k() -> usize {
    10
}
fn default_histogram() -> HistogramSpec {
    HistogramSpec { start: -1.0, stop: 1.0, edges: 101 }
}
fn default_memory() -> f64 {
    4.0
}
fn default_batch() -> usize {
    8
}

/// What one run of the stage works with.
struct Job {
    a: Arc<Model>,
    b: Arc<Model>,
    data: Tokenized,
    hooks_a: Vec<HookPoint>,
    hooks_b: Vec<HookPoint>,
    shape: Shape,
    exclude: HashSet<u32>,
    seed: u64,
    /// Rotation / Haar baselines: B's mixing matrix per layer index.
    mixing: BTreeMap<usize, Tensor>,
}

impl Spec {
    fn job(&self, cx: &dyn StageEnv) -> Result<Job> {
        let (a, b) = (cx.model(&self.a)?, cx.model(&self.b)?);
        anyhow::ensure!(
            a.cfg.d_vocab == b.cfg.d_vocab,
            "models '{}' and '{}' have different vocabularies ({} and {} tokens)",
            self.a.name(),
            self.b.name(),
            a.cfg.d_vocab,
            b.cfg.d_vocab
        );
        let (da, db) = (a.tokenizer()?.vocab_digest(), b.tokenizer()?.vocab_digest());
        anyhow::ensure!(
            da == db,
            "models '{}' and '{}' have different tokenizers (vocabulary digests {da} and {db}): both must read \
             the same token rows",
            self.a.name(),
            self.b.name()
        );
        let data = cx.tokens(&self.dataset, &self.a)?;
        let hooks = |m: &Model| select(&m.cfg, &self.hook);
        let (hooks_a, hooks_b) = (hooks(&a)?, hooks(&b)?);
        let shape = Shape {
            la: hooks_a.len(),
            da: hooks_a[0].width(&a.cfg).unwrap_or(0),
            lb: hooks_b.len(),
            db: hooks_b[0].width(&b.cfg).unwrap_or(0),
        };
        let tok = a.tokenizer()?;
        let exclude = self
            .exclude
            .iter()
            .map(|s| match s.as_str() {
                "bos" => Ok(tok.bos),
                "eos" => Ok(tok.eos),
                "pad" => Ok(tok.pad),
                _ => tok.single_token(s).map_err(|e| anyhow!("exclude: {e}")),
            })
            .collect::<Result<HashSet<u32>>>()?;
        let seed = self.seed.unwrap_or(cx.stage_seed());
        let mixing = (0..shape.lb)
            .filter_map(|l| {
                let m = match self.baseline {
                    Baseline::Rotation => baseline::gaussian_mixing(shape.db, seed, l),
                    Baseline::Haar => baseline::haar(shape.db, seed, l),
                    _ => return None,
                };
                Some(m.and_then(|m| Ok((l, m.to_device(&b.device)?))))
            })
            .collect::<Result<_>>()?;
        Ok(Job { a, b, data, hooks_a, hooks_b, shape, exclude, seed, mixing })
    }

    /// The layer pairs of shard `index` of `count` (contiguous in row-major order).
    fn shard_pairs(shape: Shape, index: usize, count: usize) -> Vec<(usize, usize)> {
        let pairs = shape.pairs();
        let n = pairs.len();
        pairs[index * n / count..(index + 1) * n / count].to_vec()
    }

    /// Sums of one tile of layer pairs over every batch.
    fn sums(&self, job: &Job, pairs: &[(usize, usize)], progress: &mut Progress) -> Result<Sums> {
        let mut sums = Sums::new(job.shape, pairs);
        let (layers_a, layers_b) = (sums.layers_a(), sums.layers_b());
        let (data, ctx) = (&job.data, job.data.ctx);
        for batch in 0..data.rows.div_ceil(self.batch_size) {
            let rows = batch * self.batch_size..((batch + 1) * self.batch_size).min(data.rows);
            let ids = &data.tokens[rows.start * ctx..rows.end * ctx];
            let kept: Vec<u32> = (0..ids.len() as u32)
                .filter(|&i| data.valid[rows.start * ctx + i as usize] != 0 && !job.exclude.contains(&ids[i as usize]))
                .collect();
            let tokens = Tensor::from_slice(ids, (rows.len(), ctx), &Device::Cpu)?;
            let kept_t = Tensor::from_slice(&kept, kept.len(), &Device::Cpu)?;
            let capture = |m: &Model, hooks: &[HookPoint], layers: &[usize]| -> Result<BTreeMap<usize, Tensor>> {
                let wanted: BTreeMap<HookPoint, usize> = layers.iter().map(|&l| (hooks[l], l)).collect();
                let mut out = BTreeMap::new();
                let req = Request::capture(wanted.keys().copied());
                m.forward(Start::Tokens(&tokens.to_device(&m.device)?), &req, &mut |h, t| {
                    // Kept on the model's device: on a GPU the sums' products run there too.
                    let t = t.to_dtype(DType::F32)?;
                    let d = t.elem_count() / (rows.len() * ctx);
                    let kept_t = kept_t.to_device(t.device())?;
                    out.insert(wanted[&h], t.reshape((rows.len() * ctx, d))?.index_select(&kept_t, 0)?);
                    Ok(())
                })?;
                Ok(out)
            };
            let xa = capture(&job.a, &job.hooks_a, &layers_a)?;
            let mut xb = capture(&job.b, &job.hooks_b, &layers_b)?;
            self.apply_baseline(job, batch as u64, &mut xb)?;
            let (xa, xb) = match self.similarity {
                Similarity::Jaccard => (self.binarise(xa)?, self.binarise(xb)?),
                _ => (xa, xb),
            };
            sums.add(&xa, &xb, self.products)?;
            progress.tick(ids.len() as u64)?;
        }
        Ok(sums)
    }

    fn apply_baseline(&self, job: &Job, batch: u64, xb: &mut BTreeMap<usize, Tensor>) -> Result<()> {
        for (l, x) in xb.iter_mut() {
            let (t, d) = x.dims2()?;
            *x = match self.baseline {
                Baseline::None => continue,
                Baseline::Rotation | Baseline::Haar => x.matmul(&job.mixing[l])?,
                Baseline::Gaussian => baseline::gaussian_noise(t, d, job.seed, batch, *l)?.to_device(x.device())?,
                Baseline::Permutation => {
                    let p = baseline::permutation(t, job.seed, batch);
                    x.index_select(&Tensor::from_vec(p, t, x.device())?, 0)?
                }
            };
        }
        Ok(())
    }

    fn binarise(&self, x: BTreeMap<usize, Tensor>) -> Result<BTreeMap<usize, Tensor>> {
        x.into_iter().map(|(l, t)| Ok((l, t.gt(self.threshold as f64)?.to_dtype(DType::F32)?))).collect()
    }

    /// The sums of `pairs` over every token, tile by tile, each finished into `fin`.
    fn accumulate(&self, cx: &dyn StageEnv, job: &Job, pairs: &[(usize, usize)], fin: &mut Finisher) -> Result<()> {
        let tiles = job.shape.tiles(pairs, self.budget())?;
        let mut progress = cx.progress((job.data.rows * job.data.ctx * tiles.len()) as u64, "tok");
        for tile in &tiles {
            fin.add(&self.sums(job, tile, &mut progress)?)?;
        }
        Ok(())
    }

    /// One shard: the best matches and histogram of its layer pairs (and its block of the matrix).
    fn write_part(&self, cx: &mut dyn StageEnv, index: usize, count: usize) -> Result<()> {
        let job = self.job(cx)?;
        let pairs = Spec::shard_pairs(job.shape, index, count);
        anyhow::ensure!(
            !pairs.is_empty(),
            "shard {} of {count} has no layer pair: there are {} pairs, so at most {} shards",
            index + 1,
            job.shape.la * job.shape.lb,
            job.shape.la * job.shape.lb
        );
        let matrix = self.matrix.map(|p| (MatrixLayout::Block(pairs.clone()), p));
        let mut fin = Finisher::new(self, &job, cx, matrix)?;
        self.accumulate(cx, &job, &pairs, &mut fin)?;
        fin.save_part(cx)
    }

    fn budget(&self) -> usize {
        (self.memory_gb * 1e9) as usize
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.a), Dep::Model(&self.b), Dep::Tokens { dataset: &self.dataset, model: &self.a }]
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "matches").then_some(Ranking::desc("max_corr"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("matches").ints(["layer", "neuron"]).floats(["max_corr"]).ints(["match_layer", "match_neuron"]).floats(["mean", "std"]),
            TableDecl::new("top").ints(["layer", "neuron", "rank", "match_layer", "match_neuron"]).floats(["corr"]),
            TableDecl::new("histogram").floats(["left", "right"]).ints(["count"]).floats(["density"]),
        ]
    }

    fn uses_seed(&self) -> bool {
        self.baseline.is_random() && self.seed.is_none()
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        let (index, count) = shards::of(part)?;
        self.write_part(cx, index, count)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // Each tile of layer pairs (within each shard) streams every token through both models;
        // the products of all pairs are formed once over all tiles.
        let (Some(a), Some(b)) = (cx.config(&self.a), cx.config(&self.b)) else { return Cost::default() };
        let shape = Shape { la: a.n_layers, da: a.d_mlp, lb: b.n_layers, db: b.d_mlp };
        let per_tile = (self.budget() / shape.pair_bytes().max(1)).max(1);
        let shards = self.shards.max(1);
        let tiles: usize = (0..shards).map(|i| Spec::shard_pairs(shape, i, shards).len().div_ceil(per_tile)).sum();
        let kept = a.n_neurons() + b.n_neurons();
        let pass_a = cx.passes(&self.a, &self.dataset, Passes { count: tiles as f64, ..Passes::body(self.batch_size, kept) });
        let rows = cx.rows(&self.dataset, &self.a);
        let tokens = rows.tokens();
        let pass_b = tiles as f64 * crate::model::flops::forward_flops(b, rows.ctx, b.n_layers, false) * tokens;
        let mut products = 2.0 * (a.n_neurons() * b.n_neurons()) as f64 * tokens;
        if matches!(self.baseline, Baseline::Rotation | Baseline::Haar) {
            products += tiles as f64 * 2.0 * (b.n_layers * b.d_mlp * b.d_mlp) as f64 * tokens;
        }
        let sums = (shape.pairs().len().div_ceil(shards).min(per_tile) * shape.pair_bytes()) as f64;
        // Every neuron pair's product sum is added into its exact sum once per batch, and finished
        // once (correlation, histogram, best matches).
        let batches = rows.rows.div_ceil(self.batch_size.max(1)) as f64;
        let values = (a.n_neurons() * b.n_neurons()) as f64 * (batches + 1.0);
        Cost { values, ..Cost::new(pass_a.flops + pass_b + products, pass_a.bytes + cx.weights(&self.b) + sums) }
            .shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        cx.at_least("top_k", self.top_k, 1, out);
        if self.memory_gb.is_nan() || self.memory_gb <= 0.0 {
            out.push(cx.error("memory_gb", "correlation: memory_gb must be positive"));
        }
        if self.histogram.edges < 2 || self.histogram.stop <= self.histogram.start {
            out.push(cx.error("histogram", "correlation: histogram needs stop > start and at least 2 edges"));
        }
        let mut shapes = vec![];
        for m in [&self.a, &self.b] {
            let Some(cfg) = cx.config(m) else { continue };
            match select(cfg, &self.hook) {
                Ok(points) if points.iter().any(|p| p.width(cfg).is_none()) => {
                    out.push(Diagnostic::at(
                        self.hook.span.clone(),
                        format!(
                            "'{}' is per pair of positions; correlation compares per-position hooks",
                            self.hook.value
                        ),
                    ));
                }
                Ok(points) => shapes.push((cfg.d_vocab, points.len(), points[0].width(cfg).unwrap_or(0))),
                Err(e) => out.push(hook_diagnostic(&self.hook, &e)),
            }
        }
        if let [(va, la, da), (vb, lb, db)] = shapes[..] {
            if va != vb {
                out.push(Diagnostic::at(
                    self.b.span(),
                    format!(
                        "'{}' and '{}' have different vocabularies ({va} and {vb} tokens): they must share a tokenizer",
                        self.a.name(),
                        self.b.name()
                    ),
                ));
            }
            let shape = Shape { la, da, lb, db };
            if let Err(e) = shape.tiles(&shape.pairs(), self.budget()) {
                out.push(Diagnostic::global(format!("correlation: {e}")));
            }
            if self.shards > la * lb {
                out.push(cx.error(
                    "shards",
                    format!("correlation: {} shards of {} layer pairs ({la} × {lb}): at most {}", self.shards, la * lb, la * lb),
                ));
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let job = self.job(cx)?;
        let matrix = self.matrix.map(|p| (MatrixLayout::Full, p));
        let mut fin = Finisher::new(self, &job, cx, matrix)?;
        if self.shards > 1 {
            let mut progress = cx.progress(self.shards as u64, "shards");
            for index in 0..self.shards {
                fin.merge_part(&cx.part(Part::Shard { index, count: self.shards })?)?;
                progress.tick(1)?;
            }
        } else {
            self.accumulate(cx, &job, &job.shape.pairs(), &mut fin)?;
        }
        fin.write(cx, &job)
    }
}

/// Where the full matrix goes: the stage's `correlation.safetensors` ([LA·dA, LB·dB]), or a
/// shard's block of it (`matrix.safetensors`, [pairs, dA, dB] for its pairs in order).
#[derive(Clone, Debug)]
enum MatrixLayout {
    Full,
    Block(Vec<(usize, usize)>),
}

impl MatrixLayout {
    const BLOCK_FILE: &'static str = "matrix.safetensors";

    /// Element offset of row `i` of A's layer `la` against B's layer `lb`.
    fn row(&self, s: Shape, la: usize, lb: usize, i: usize) -> Result<usize> {
        match self {
            MatrixLayout::Full => Ok((la * s.da + i) * s.lb * s.db + lb * s.db),
            MatrixLayout::Block(pairs) => {
                let slot = pairs.iter().position(|&p| p == (la, lb)).ok_or_else(|| anyhow!("pair {la}, {lb} not in this shard"))?;
                Ok((slot * s.da + i) * s.db)
            }
        }
    }
}

/// Turns tiles of sums into the stage's artifacts: best matches per neuron of A, the histogram of
/// every similarity, the full matrix when asked. A shard's finisher saves what it found instead
/// (`save_part`), and the stage's merges every shard's (`merge_part`): top-k lists keep the k best
/// under one total order (value, then lower index) and counts add, so the merge is exact.
struct Finisher {
    sim: Similarity,
    shape: Shape,
    top_k: usize,
    /// Best matches per neuron of A: (similarity, B layer index · db + neuron).
    top: crate::stats::TopK,
    hist: Histogram,
    counts: Vec<u64>,
    /// Mean and standard deviation of each neuron of A (for A's layers seen), and the kept-token count.
    a_moments: Vec<Option<(f64, f64)>>,
    tokens: u64,
    matrix: Option<(TensorFileWriter, MatrixPrecision, MatrixLayout)>,
}

impl Finisher {
    fn new(
        spec: &Spec,
        job: &Job,
        cx: &dyn StageEnv,
        matrix: Option<(MatrixLayout, MatrixPrecision)>,
    ) -> Result<Finisher> {
        let s = job.shape;
        let hist =
            Histogram::new(Histogram::linspace(spec.histogram.start, spec.histogram.stop, spec.histogram.edges), 1);
        let matrix = match matrix {
            Some((layout, p)) => {
                let dt = if p == MatrixPrecision::F16 { safetensors::Dtype::F16 } else { safetensors::Dtype::F32 };
                let (file, name, shape) = match &layout {
                    MatrixLayout::Full => ("correlation.safetensors", "correlation", vec![s.la * s.da, s.lb * s.db]),
                    MatrixLayout::Block(pairs) => (MatrixLayout::BLOCK_FILE, "block", vec![pairs.len(), s.da, s.db]),
                };
                Some((TensorFileWriter::create(&cx.out().join(file), &[(name, dt, shape)])?, p, layout))
            }
            None => None,
        };
        Ok(Finisher {
            sim: spec.similarity,
            shape: s,
            top_k: spec.top_k,
            top: crate::stats::TopK::new(s.la * s.da, spec.top_k, true),
            counts: vec![0; hist.bins()],
            hist,
            a_moments: vec![None; s.la * s.da],
            tokens: 0,
            matrix,
        })
    }

    /// A shard's findings: its best matches, histogram counts, A's moments, and its matrix block.
    fn save_part(self, cx: &dyn StageEnv) -> Result<()> {
        let rows = self.shape.la * self.shape.da;
        let (mut values, mut index, mut len) = (vec![], vec![], vec![]);
        for r in 0..rows {
            let best = self.top.sorted(r);
            len.push(best.len() as u32);
            for (v, j) in best {
                values.push(v);
                index.push(j);
            }
        }
        let seen: Vec<u8> = self.a_moments.iter().map(|m| u8::from(m.is_some())).collect();
        let (mean, std): (Vec<f64>, Vec<f64>) = self.a_moments.iter().map(|m| m.unwrap_or_default()).unzip();
        let mut a = Arrays::new();
        a.put("tokens", &[self.tokens])
            .put("top_value", &values)
            .put("top_index", &index)
            .put("top_len", &len)
            .put("histogram", &self.counts)
            .put("a_seen", &seen)
            .put("a_mean", &mean)
            .put("a_std", &std);
        if let Some((w, _, MatrixLayout::Block(pairs))) = self.matrix {
            w.finish()?;
            let flat: Vec<u64> = pairs.iter().flat_map(|&(x, y)| [x as u64, y as u64]).collect();
            a.put("pairs", &flat);
        }
        a.save(&cx.out().join(shards::STATE_FILE))
    }

    /// Add a shard's findings (from its folder).
    fn merge_part(&mut self, dir: &Path) -> Result<()> {
        let f = ArraysFile::open(&dir.join(shards::STATE_FILE))?;
        let s = self.shape;
        let tokens = f.scalar::<u64>("tokens")?;
        anyhow::ensure!(self.tokens == 0 || self.tokens == tokens, "shards counted {} and {tokens} tokens", self.tokens);
        self.tokens = tokens;
        let (values, index, len) = (f.get::<f32>("top_value")?, f.get::<u64>("top_index")?, f.get::<u32>("top_len")?);
        anyhow::ensure!(len.len() == s.la * s.da, "a shard of another shape ({} rows of A)", len.len());
        let mut at = 0;
        for (r, &n) in len.iter().enumerate() {
            for k in at..at + n as usize {
                self.top.push(r, values[k], index[k]);
            }
            at += n as usize;
        }
        let counts = f.get::<u64>("histogram")?;
        anyhow::ensure!(counts.len() == self.counts.len(), "a shard with another histogram");
        self.counts.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
        let (seen, mean, std) = (f.get::<u8>("a_seen")?, f.get::<f64>("a_mean")?, f.get::<f64>("a_std")?);
        for (r, m) in self.a_moments.iter_mut().enumerate() {
            if seen[r] != 0 {
                *m = Some((mean[r], std[r]));
            }
        }
        if let Some((w, p, layout)) = &self.matrix {
            let pairs = f.get::<u64>("pairs")?;
            let block = TensorFile::open(&dir.join(MatrixLayout::BLOCK_FILE))?;
            let (_, bytes) = block.get("block")?;
            let width = match p {
                MatrixPrecision::F16 => 2,
                MatrixPrecision::F32 => 4,
            } * s.db;
            for (slot, pair) in pairs.chunks_exact(2).enumerate() {
                let (la, lb) = (pair[0] as usize, pair[1] as usize);
                for i in 0..s.da {
                    let from = (slot * s.da + i) * width;
                    w.write("correlation", layout.row(s, la, lb, i)?, &bytes[from..from + width])?;
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, sums: &Sums) -> Result<()> {
        let s = self.shape;
        self.tokens = sums.count;
        let n = sums.count as f64;
        for (la, m) in &sums.a {
            for i in 0..s.da {
                let (sum, sq) = (value(m.sum[i]), value(m.sq[i]));
                let mean = sum / n;
                self.a_moments[la * s.da + i] = Some((mean, (sq / n - mean * mean).max(0.0).sqrt()));
            }
        }
        for &(la, lb) in sums.cross.keys() {
            let r: Vec<f32> = sums.finish(la, lb, self.sim).into_iter().map(|x| x as f32).collect();
            // Per row of A: its k best in this layer of B; and a local histogram per chunk of rows.
            let hist = &self.hist;
            let k = self.top_k;
            let (best, counts): (Vec<Vec<(f32, u32)>>, Vec<Vec<u64>>) = r
                .par_chunks(s.db)
                .map(|row| {
                    let mut c = vec![0u64; hist.bins()];
                    row.iter().for_each(|&x| c[hist.bin(x)] += 1);
                    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
                    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                    if idx.len() > k {
                        idx.select_nth_unstable_by(k - 1, cmp);
                        idx.truncate(k);
                    }
                    (idx.into_iter().map(|j| (row[j as usize], j)).collect(), c)
                })
                .unzip();
            for (i, b) in best.into_iter().enumerate() {
                for (v, j) in b {
                    self.top.push(la * s.da + i, v, (lb * s.db) as u64 + j as u64);
                }
            }
            for c in counts {
                self.counts.iter_mut().zip(c).for_each(|(a, b)| *a += b);
            }
            if let Some((w, p, layout)) = &self.matrix {
                let name = if matches!(layout, MatrixLayout::Full) { "correlation" } else { "block" };
                for (i, row) in r.chunks_exact(s.db).enumerate() {
                    let bytes: Vec<u8> = match p {
                        MatrixPrecision::F16 => {
                            row.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
                        }
                        MatrixPrecision::F32 => row.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    };
                    w.write(name, layout.row(s, la, lb, i)?, &bytes)?;
                }
            }
        }
        Ok(())
    }

    fn write(self, cx: &dyn StageEnv, job: &Job) -> Result<()> {
        let s = self.shape;
        let layer_a = |l: usize| job.hooks_a[l].layer().unwrap_or(0) as u32;
        let layer_b = |l: usize| job.hooks_b[l].layer().unwrap_or(0) as u32;
        let (mut m_layer, mut m_neuron, mut m_max, mut m_bl, mut m_bn, mut m_mean, mut m_std) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut t_layer, mut t_neuron, mut t_rank, mut t_bl, mut t_bn, mut t_val) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for la in 0..s.la {
            for i in 0..s.da {
                let best = self.top.sorted(la * s.da + i);
                let (mean, std) = self.a_moments[la * s.da + i].unwrap_or_default();
                let (v, j) = best.first().copied().unwrap_or((0.0, 0));
                m_layer.push(layer_a(la));
                m_neuron.push(i as u32);
                m_max.push(v as f64);
                m_bl.push(layer_b(j as usize / s.db));
                m_bn.push((j as usize % s.db) as u32);
                m_mean.push(mean);
                m_std.push(std);
                for (rank, (v, j)) in best.into_iter().enumerate() {
                    t_layer.push(layer_a(la));
                    t_neuron.push(i as u32);
                    t_rank.push(rank as u32);
                    t_bl.push(layer_b(j as usize / s.db));
                    t_bn.push((j as usize % s.db) as u32);
                    t_val.push(v as f64);
                }
            }
        }
        let mut matches = Table::new().with("layer", m_layer).with("neuron", m_neuron).with("max_corr", m_max).with("match_layer", m_bl).with("match_neuron", m_bn).with("mean", m_mean).with("std", m_std).frame()?;
        let mut top = Table::new().with("layer", t_layer).with("neuron", t_neuron).with("rank", t_rank).with("match_layer", t_bl).with("match_neuron", t_bn).with("corr", t_val).frame()?;
        let edges = &self.hist.edges;
        let total: u64 = self.counts.iter().sum();
        let left: Vec<f64> =
            (0..self.counts.len()).map(|k| if k == 0 { f64::NEG_INFINITY } else { edges[k - 1] as f64 }).collect();
        let right: Vec<f64> =
            (0..self.counts.len()).map(|k| edges.get(k).map(|&e| e as f64).unwrap_or(f64::INFINITY)).collect();
        let density: Vec<f64> = self.counts.iter().map(|&c| c as f64 / total.max(1) as f64).collect();
        let mut hist = Table::new().with("left", left).with("right", right).with("count", self.counts.clone()).with("density", density).frame()?;
        cx.write_table("matches", &mut matches)?;
        cx.write_table("top", &mut top)?;
        cx.write_table("histogram", &mut hist)?;
        if let Some((w, _, _)) = self.matrix {
            w.finish()?;
        }
        let info = serde_json::json!({ "tokens": self.tokens, "pairs": s.la * s.lb, "neurons_a": s.la * s.da, "neurons_b": s.lb * s.db });
        crate::store::atomic::write(&cx.out().join("info.json"), serde_json::to_string_pretty(&info)?.as_bytes())
    }
}
