//! `correlation` stage: every neuron of model A against every neuron of model B over a dataset
//! (Pearson, cosine or Jaccard), from exact streaming sums tiled by layer pair within a memory
//! budget; optionally against a random baseline, and optionally split into shards (one plan node
//! each, `lantern run --shard i/n`) whose sums the stage merges bit for bit.

use crate::stats::HistogramSpec;
use crate::util::Progress;
use super::{Ranking, CheckCx, Dep, Part, Stage, StageEnv};
use crate::analysis::baseline::{self, Baseline};
use crate::analysis::correlation::{Products, Shape, Similarity, Sums};
use crate::data::Tokenized;
use crate::model::hooks::HookPoint;
use crate::model::{Model, Request, Start};
use crate::model::selector::select;
use super::check::hook_diagnostic;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::stats::Histogram;
use crate::store::tensor_file::{TensorFile, TensorFileWriter};
use crate::store::table::Table;
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

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
    /// Seed of the baseline (default: the experiment's seed).
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
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "one")]
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
fn one() -> usize {
    1
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
        let seed = self.seed.unwrap_or(cx.seed());
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

    fn batches(&self, data: &Tokenized) -> usize {
        data.rows.div_ceil(self.batch_size)
    }

    /// The batches of shard `index` of `count`.
    fn shard_batches(&self, data: &Tokenized, index: usize, count: usize) -> Range<usize> {
        let n = self.batches(data);
        index * n / count..(index + 1) * n / count
    }

    /// Sums of one tile of layer pairs over a range of batches.
    fn sums(
        &self,
        _cx: &mut dyn StageEnv,
        job: &Job,
        batches: Range<usize>,
        pairs: &[(usize, usize)],
        progress: &mut Progress,
    ) -> Result<Sums> {
        let mut sums = Sums::new(job.shape, pairs);
        let (layers_a, layers_b) = (sums.layers_a(), sums.layers_b());
        let (data, ctx) = (&job.data, job.data.ctx);
        for batch in batches {
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

    /// A partial-sums file: the sums of this shard's batches, every tile.
    fn write_part(&self, cx: &mut dyn StageEnv, index: usize, count: usize) -> Result<()> {
        let job = self.job(cx)?;
        let batches = self.shard_batches(&job.data, index, count);
        let tiles = job.shape.tiles(self.budget())?;
        let tokens = (batches.len() * self.batch_size * job.data.ctx) as u64;
        let mut progress = cx.progress(tokens * tiles.len() as u64, "tok");
        let w = Sums::create_file(&cx.out().join("sums.safetensors"), job.shape)?;
        for tile in &tiles {
            self.sums(cx, &job, batches.clone(), tile, &mut progress)?.write(&w)?;
        }
        w.finish()
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

    fn tables(&self) -> Vec<&'static str> {
        vec!["matches", "top", "histogram"]
    }

    fn uses_seed(&self) -> bool {
        self.baseline.is_random() && self.seed.is_none()
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        if self.shards > 1 {
            (0..self.shards).map(|index| Part::Shard { index, count: self.shards }).collect()
        } else {
            vec![]
        }
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        match part {
            Part::Shard { index, count } => self.write_part(cx, index, count),
            other => anyhow::bail!("a correlation stage has no part {other:?}"),
        }
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        cx.at_least("shards", self.shards, 1, out);
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
            if let Err(e) = shape.tiles(self.budget()) {
                out.push(Diagnostic::global(format!("correlation: {e}")));
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let job = self.job(cx)?;
        let tiles = job.shape.tiles(self.budget())?;
        let mut fin = Finisher::new(self, &job, cx)?;
        if self.shards > 1 {
            let files = (0..self.shards)
                .map(|index| {
                    TensorFile::open(&cx.part(Part::Shard { index, count: self.shards })?.join("sums.safetensors"))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut progress = cx.progress(tiles.len() as u64, "tiles");
            for tile in &tiles {
                let mut sums = Sums::read(&files[0], job.shape, tile)?;
                for f in &files[1..] {
                    sums.merge(&Sums::read(f, job.shape, tile)?)?;
                }
                fin.add(&sums)?;
                progress.tick(1)?;
            }
        } else {
            let batches = 0..self.batches(&job.data);
            let mut progress = cx.progress((job.data.rows * job.data.ctx * tiles.len()) as u64, "tok");
            for tile in &tiles {
                let sums = self.sums(cx, &job, batches.clone(), tile, &mut progress)?;
                fin.add(&sums)?;
            }
        }
        fin.write(cx, &job)
    }
}

/// Turns tiles of sums into the stage's artifacts: best matches per neuron of A, the histogram of
/// every similarity, the full matrix when asked.
struct Finisher {
    sim: Similarity,
    shape: Shape,
    top_k: usize,
    /// Best matches per neuron of A: (similarity, B layer index · db + neuron).
    top: crate::stats::TopK,
    hist: Histogram,
    counts: Vec<u64>,
    /// Mean and standard deviation of each neuron of A, and the kept-token count.
    a_moments: Vec<(f64, f64)>,
    tokens: u64,
    matrix: Option<(TensorFileWriter, MatrixPrecision)>,
}

impl Finisher {
    fn new(spec: &Spec, job: &Job, cx: &dyn StageEnv) -> Result<Finisher> {
        let s = job.shape;
        let hist =
            Histogram::new(Histogram::linspace(spec.histogram.start, spec.histogram.stop, spec.histogram.edges), 1);
        let matrix = match spec.matrix {
            Some(p) => {
                let dt = if p == MatrixPrecision::F16 { safetensors::Dtype::F16 } else { safetensors::Dtype::F32 };
                Some((
                    TensorFileWriter::create(
                        &cx.out().join("correlation.safetensors"),
                        &[("correlation", dt, vec![s.la * s.da, s.lb * s.db])],
                    )?,
                    p,
                ))
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
            a_moments: vec![(0.0, 0.0); s.la * s.da],
            tokens: 0,
            matrix,
        })
    }

    fn add(&mut self, sums: &Sums) -> Result<()> {
        let s = self.shape;
        self.tokens = sums.count;
        let n = sums.count as f64;
        for (la, m) in &sums.a {
            for i in 0..s.da {
                let (sum, sq) =
                    (crate::analysis::correlation::value(m.sum[i]), crate::analysis::correlation::value(m.sq[i]));
                let mean = sum / n;
                self.a_moments[la * s.da + i] = (mean, (sq / n - mean * mean).max(0.0).sqrt());
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
            if let Some((w, p)) = &self.matrix {
                for (i, row) in r.chunks_exact(s.db).enumerate() {
                    let bytes: Vec<u8> = match p {
                        MatrixPrecision::F16 => {
                            row.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
                        }
                        MatrixPrecision::F32 => row.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    };
                    w.write("correlation", (la * s.da + i) * s.lb * s.db + lb * s.db, &bytes)?;
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
                let (mean, std) = self.a_moments[la * s.da + i];
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
        if let Some((w, _)) = self.matrix {
            w.finish()?;
        }
        let info = serde_json::json!({ "tokens": self.tokens, "pairs": s.la * s.lb, "neurons_a": s.la * s.da, "neurons_b": s.lb * s.db });
        crate::store::atomic::write(&cx.out().join("info.json"), serde_json::to_string_pretty(&info)?.as_bytes())
    }
}
