//! `viewer` stage: HTML pages for chosen neurons (top examples and examples sampled at lower
//! activation levels with per-token colouring, a fitted histogram, promoted / suppressed tokens,
//! related neurons), an index page sortable by the selection score, and pages colouring given texts.

mod related;
mod sample;

use super::select::{Neurons, TopNeurons};
use super::{CheckCx, Dep, Stage, StageEnv, Cost, CostCx, Passes};
use crate::model::hooks::{parse_site, BlockSite, HookPoint};
use crate::model::{Request, Start};
use crate::pages::histogram::{Band, Histogram};
use crate::pages::thousands;
use crate::pages::neuron::{index_page, neuron_page, texts_page, Example, Index, IndexRow, NeuronPage, Scale, Section};
use crate::spec::{Diagnostic, ModelRef, StageRef};
use crate::store::{atomic, table::read};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    /// The `activations` stage whose top examples and histograms are shown.
    pub activations: StageRef,
    /// The hook (layer-less TL name) whose neurons are shown.
    #[serde(default = "default_hook")]
    pub hook: String,
    /// Neurons by name: `["L1.N23", "0.5"]` …
    #[serde(default)]
    pub neurons: Option<Vec<String>>,
    /// … or the top rows of another stage's table: `{ from = "german", n = 10, by = "d" }`.
    #[serde(default)]
    pub top: Option<TopNeurons>,
    /// Tokens shown before and after the max-activating token.
    #[serde(default = "default_window")]
    pub window: [usize; 2],
    /// Fixed colour scale [white, red]; default per neuron: [0, its max].
    #[serde(default)]
    pub scale: Option<[f32; 2]>,
    #[serde(default = "default_top")]
    pub top_k: usize,
    /// Texts coloured token by token by every chosen neuron (texts.html).
    #[serde(default)]
    pub texts: Vec<String>,
    /// Promoted / suppressed tokens listed per neuron.
    #[serde(default = "default_vocab_k")]
    pub vocab_k: usize,
    /// Ranges of activation below the top examples (equal widths from 0, or the neuron's minimum,
    /// to its maximum) that examples are sampled from, as sae_vis shows; 0 for top examples only.
    #[serde(default = "default_levels")]
    pub levels: usize,
    /// Examples shown per range.
    #[serde(default = "default_per_level")]
    pub per_level: usize,
    /// Positions of the dataset read for the histogram and the sampled ranges (the first rows).
    #[serde(default = "default_sample_tokens")]
    pub sample_tokens: usize,
    /// `weights` stages of the model (neuron compositions) and `correlation` stages from it (most
    /// correlated neurons) whose related neurons each page lists.
    #[serde(default)]
    pub related: Vec<StageRef>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_hook() -> String {
    "mlp.hook_post".into()
}
fn default_window() -> [usize; 2] {
    [20, 5]
}
fn default_top() -> usize {
    20
}
fn default_vocab_k() -> usize {
    10
}
fn default_levels() -> usize {
    4
}
fn default_per_level() -> usize {
    5
}
fn default_sample_tokens() -> usize {
    1_000_000
}
fn default_batch() -> usize {
    16
}

/// Bins of the fitted histogram.
const BINS: usize = 48;

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model), Dep::Stage(&self.activations)];
        d.extend(self.top.as_ref().map(|t| Dep::Stage(&t.from)));
        d.extend(self.related.iter().map(Dep::Stage));
        d
    }

    fn uses_seed(&self) -> bool {
        self.levels > 0
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // The first `sample_tokens` positions of the activations stage's dataset, read again.
        let Some(acts) = cx.stage::<super::activations::Spec>(&self.activations) else { return Cost::default() };
        let tokens = cx.rows(&acts.dataset, &self.model).tokens();
        let share = if tokens > 0.0 { (self.sample_tokens as f64 / tokens).min(1.0) } else { 0.0 };
        let pass = Passes { count: share, ..Passes::body(self.batch_size, 0) };
        cx.passes(&self.model, &acts.dataset, pass)
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let acts = cx.stage::<super::activations::Spec>(&self.activations, "viewer reads an activations stage", out);
        if let Some(a) = acts.filter(|a| a.model.name() != self.model.name()) {
            out.push(Diagnostic::at(
                self.activations.span(),
                format!(
                    "viewer: '{}' ran on model '{}', not '{}'",
                    self.activations.name(),
                    a.model.name(),
                    self.model.name()
                ),
            ));
        }
        if parse_site(&self.hook).is_none() {
            out.push(Diagnostic::at(self.model.span(), format!("viewer: unknown hook '{}'", self.hook)));
        }
        match Neurons::of(&self.neurons, &self.top) {
            None => out.push(cx.error("neurons", "viewer: give exactly one of `neurons` and `top`")),
            Some(Neurons::Top(t)) => {
                cx.at_least("n", t.n, 1, out);
                t.check(cx, out);
            }
            Some(Neurons::List([])) => out.push(cx.error("neurons", "viewer: list at least one neuron")),
            Some(Neurons::List(_)) => {}
        }
        cx.at_least("per_level", self.per_level, 1, out);
        cx.at_least("batch_size", self.batch_size, 1, out);
        for r in &self.related {
            let Some(st) = cx.stages.get(r.name()) else { continue };
            let model = match &st.value {
                super::StageSpec::Weights(w) => Some(w.model.name()),
                super::StageSpec::Correlation(c) => Some(c.a.name()),
                _ => None,
            };
            match model {
                None => out.push(Diagnostic::at(
                    r.span(),
                    format!("viewer: '{}' is a {} stage; `related` takes weights and correlation stages", r.name(), st.value.kind()),
                )),
                Some(m) if m != self.model.name() => out.push(Diagnostic::at(
                    r.span(),
                    format!("viewer: '{}' is about model '{m}', not '{}'", r.name(), self.model.name()),
                )),
                Some(_) => {}
            }
        }
        if let (Some(list), Some(cfg)) = (&self.neurons, cx.config(&self.model)) {
            for n in list {
                match crate::model::hooks::parse_neuron(n) {
                    Some((l, i)) if l < cfg.n_layers && i < cfg.d_mlp => {}
                    Some((l, i)) => out.push(Diagnostic::at(
                        self.model.span(),
                        format!(
                            "viewer: neuron {l}.{i} out of range ({} layers × {} neurons)",
                            cfg.n_layers, cfg.d_mlp
                        ),
                    )),
                    None => out.push(Diagnostic::at(
                        self.model.span(),
                        format!("viewer: '{n}' is not a neuron (write L1.N23 or 1.23)"),
                    )),
                }
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let tok = model.tokenizer()?;
        let site = parse_site(&self.hook).context("unknown hook")?;
        let acts_dir = cx.input(&self.activations)?;
        let acts: &super::activations::Spec = cx.input_spec(&self.activations)?;
        let data = cx.tokens(&acts.dataset, &acts.model)?;
        let choice = Neurons::of(&self.neurons, &self.top).context("give exactly one of `neurons` and `top`")?;
        let source = match choice.source() {
            Some(s) => Some(cx.input(s)?),
            None => None,
        };
        let neurons = choice.resolve(source.as_deref())?;
        let chosen: BTreeSet<(usize, usize)> = neurons.iter().copied().collect();
        let (score_name, scores) = self.scores(cx, source.as_deref())?;
        let suffix = site.tl_suffix();
        let top = self.top_examples(&acts_dir.join("examples.parquet"), suffix, &chosen)?;
        if top.is_empty() {
            bail!(
                "'{}' has no top examples of {} for the chosen neurons (is {} among its hooks?)",
                self.activations.name(),
                self.hook,
                self.hook
            );
        }
        let stats = read(&acts_dir.join("stats.parquet"))?;
        let mut samples = BTreeMap::new();
        for &(l, n) in &chosen {
            let (lo, hi) = (stat(&stats, suffix, l, n, "min")? as f32, stat(&stats, suffix, l, n, "max")? as f32);
            let seed = cx.seed() ^ ((l as u64) << 32 | n as u64);
            let mut s = sample::NeuronSample::new(lo, hi, BINS, self.levels, self.per_level * 4, seed);
            for &(_, r, p) in top.get(&(l, n)).into_iter().flatten() {
                s.wanted.insert((r, p), sample::Window { value: 0.0, row: r, pos: p, from: p, acts: vec![] });
            }
            samples.insert((l, n), s);
        }
        let sampled_rows = self.pass(cx, &model, site, &data, &mut samples)?;
        let ctx = data.ctx;
        // Text of a window (trailing padding is not text) and its token bytes.
        let span = |w: &sample::Window| -> Vec<usize> {
            (w.from..w.from + w.acts.len())
                .filter(|&q| q <= w.pos || data.doc[w.row * ctx + q] != u32::MAX || data.tokens[w.row * ctx + q] != tok.pad)
                .collect()
        };
        let ids = |w: &sample::Window| -> Vec<u32> { span(w).iter().map(|&q| data.tokens[w.row * ctx + q]).collect() };
        let example = |w: &sample::Window| Example {
            value: w.value,
            tokens: span(w).iter().map(|&q| (tok.token_bytes(data.tokens[w.row * ctx + q]), w.acts[q - w.from])).collect(),
            max_at: w.pos - w.from,
            label: data.label_at(w.row * ctx + w.pos).to_string(),
        };
        let mut relations = related::Relations::new();
        for r in &self.related {
            let dir = cx.input(r)?;
            match cx.stage_spec(r.name()) {
                Some(super::StageSpec::Weights(_)) => relations.add_weights(r.name(), &dir, &chosen)?,
                Some(super::StageSpec::Correlation(c)) => {
                    relations.add_correlation(r.name(), c.b.name(), c.b.name() == self.model.name(), &dir, &chosen)?
                }
                _ => bail!("'{}' is neither a weights nor a correlation stage", r.name()),
            }
        }
        let mut index = Vec::new();
        let subtitle = format!("{} of {} on {}", self.hook, self.model.name(), acts.dataset.name());
        for &(l, n) in &neurons {
            let Some(s) = samples.get(&(l, n)) else { continue };
            let Some(tops) = top.get(&(l, n)) else { continue };
            let tops: Vec<sample::Window> = tops
                .iter()
                .filter_map(|&(v, r, p)| s.wanted.get(&(r, p)).map(|w| sample::Window { value: v, ..w.clone() }))
                .collect();
            let mut taken = Vec::new();
            let tops = sample::dedup(tops, self.window, ids, &mut taken, self.top_k);
            let max = tops.iter().map(|e| e.value).fold(f32::MIN, f32::max);
            let scale = self.scale.map(|[lo, hi]| Scale { lo, hi }).unwrap_or(Scale { lo: 0.0, hi: max.max(1e-6) });
            let mut sections = vec![Section {
                title: "Top activations".into(),
                note: format!("the {} highest activations over the whole dataset, overlapping and repeated windows left out", tops.len()),
                examples: tops.iter().map(example).collect(),
            }];
            let mut bands = Vec::new();
            for lvl in (0..s.seen.len()).rev() {
                let (a, b) = (s.edges[lvl], s.edges[lvl + 1]);
                let label = format!("({}, {}]", short(a), short(b));
                bands.push(Band { lo: a as f64, hi: b as f64, label: label.clone() });
                let picked = sample::dedup(s.samples[lvl].clone(), self.window, ids, &mut taken, self.per_level);
                if picked.is_empty() {
                    continue;
                }
                sections.push(Section {
                    title: format!("Activations in {label}"),
                    note: format!("{} drawn at random from {} positions in this range", picked.len(), s.seen[lvl]),
                    examples: picked.iter().map(example).collect(),
                });
            }
            let width = (s.hi - s.lo) / s.bins.len() as f32;
            let histogram = Histogram {
                bins: s
                    .bins
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| ((s.lo + i as f32 * width) as f64, (s.lo + (i + 1) as f32 * width) as f64, c))
                    .collect(),
                x_label: format!("activation ({})", self.hook),
                y_label: format!("positions (of the first {})", thousands(sampled_rows * ctx)),
                bands,
            };
            let summary = neuron_summary(&stats, suffix, l, n)?;
            let (promoted, suppressed) =
                if site == BlockSite::Post { vocab_effects(&model, l, n, self.vocab_k)? } else { (vec![], vec![]) };
            let name = format!("L{l}.N{n}");
            let mut shown_summary = summary.clone();
            if let (Some(sn), Some(v)) = (&score_name, scores.get(&(l, n))) {
                shown_summary.insert(0, (sn.clone(), format!("{v:.4}")));
            }
            let page = NeuronPage {
                name: name.clone(),
                subtitle: subtitle.clone(),
                summary: shown_summary,
                histogram,
                sections,
                promoted,
                suppressed,
                related: relations.of((l, n), &chosen),
                scale,
            };
            let file = format!("{name}.html");
            atomic::write(&cx.out().join(&file), neuron_page(&page).as_bytes())?;
            index.push(IndexRow {
                name,
                href: file,
                score: scores.get(&(l, n)).copied(),
                cells: summary.into_iter().map(|(_, v)| v).collect(),
            });
        }
        let mut texts = None;
        if !self.texts.is_empty() {
            let (sections, scale) = self.color_texts(&model, site, &neurons)?;
            atomic::write(
                &cx.out().join("texts.html"),
                texts_page("Texts coloured by neuron", &sections, scale).as_bytes(),
            )?;
            texts = Some("texts.html".to_string());
        }
        let ix = Index {
            title: format!("Neurons of {} on {}", self.model.name(), acts.dataset.name()),
            subtitle: match (&self.top, &score_name) {
                (Some(t), Some(sn)) => format!("the top {} of '{}' by {sn}; {}", t.n, t.from.name(), self.hook),
                _ => format!("neurons listed in the experiment file; {}", self.hook),
            },
            score: score_name,
            headers: SUMMARY.iter().map(|s| s.to_string()).collect(),
            rows: index,
            texts,
        };
        atomic::write(&cx.out().join("index.html"), index_page(&ix).as_bytes())
    }
}

const SUMMARY: [&str; 5] = ["mean", "std", "kurtosis", "frequency > 0", "max"];

/// A value with 3 significant decimals at most, for range labels.
fn short(v: f32) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Row of a neuron in an activations stage's `stats` table.
fn stats_row(stats: &DataFrame, suffix: &str, l: usize, n: usize) -> Result<usize> {
    let (hook, layer, neuron) =
        (stats.column("hook")?.str()?, stats.column("layer")?.u32()?, stats.column("neuron")?.u32()?);
    (0..stats.height())
        .find(|&i| hook.get(i) == Some(suffix) && layer.get(i) == Some(l as u32) && neuron.get(i) == Some(n as u32))
        .with_context(|| format!("L{l}.N{n} of {suffix} is not in the activations stage's statistics"))
}

/// One statistic of a neuron.
fn stat(stats: &DataFrame, suffix: &str, l: usize, n: usize, column: &str) -> Result<f64> {
    let i = stats_row(stats, suffix, l, n)?;
    Ok(stats.column(column)?.f64()?.get(i).unwrap_or(f64::NAN))
}

/// The neuron's statistics from the activations stage, formatted.
fn neuron_summary(stats: &DataFrame, suffix: &str, l: usize, n: usize) -> Result<Vec<(String, String)>> {
    let f = |c: &str| stat(stats, suffix, l, n, c);
    let vals = [f("mean")?, f("var")?.sqrt(), f("kurt")?, f("freq")?, f("max")?];
    Ok(SUMMARY.iter().zip(vals).map(|(k, v)| (k.to_string(), format!("{v:.4}"))).collect())
}

/// Tokens whose logits the neuron's output raises and lowers most: W_U · w_out.
fn vocab_effects(
    model: &crate::model::Model,
    l: usize,
    n: usize,
    k: usize,
) -> Result<(Vec<(Vec<u8>, f32)>, Vec<(Vec<u8>, f32)>)> {
    let w_out = model.weights.blocks[l].w_out.get(n)?.unsqueeze(0)?;
    let effect: Vec<f32> = w_out.matmul(&model.weights.w_u)?.squeeze(0)?.to_vec1()?;
    let tok = model.tokenizer()?;
    let pick = |lowest: bool| {
        crate::analysis::vocab::top_entries(&effect, k, lowest)
            .into_iter()
            .map(|(t, v)| (tok.token_bytes(t as u32), v))
            .collect()
    };
    Ok((pick(false), pick(true)))
}

impl Spec {
    /// The column the neurons were selected by (`by`, else the source table's ranking) and each
    /// chosen neuron's value of it.
    fn scores(
        &self,
        cx: &dyn StageEnv,
        source: Option<&std::path::Path>,
    ) -> Result<(Option<String>, std::collections::HashMap<(usize, usize), f64>)> {
        let (Some(t), Some(dir)) = (&self.top, source) else { return Ok((None, Default::default())) };
        let table = t.table_in(dir)?;
        let column = match &t.by {
            Some(b) => Some(b.clone()),
            None => cx.stage_spec(t.from.name()).and_then(|s| s.stage().ranking(&table)).map(|r| r.column.to_string()),
        };
        match column {
            Some(c) => Ok((Some(c.clone()), t.scores(dir, &c)?)),
            None => Ok((None, Default::default())),
        }
    }

    /// The top examples of the chosen neurons: (layer, neuron) → (value, row, position).
    fn top_examples(
        &self,
        path: &std::path::Path,
        suffix: &str,
        chosen: &BTreeSet<(usize, usize)>,
    ) -> Result<BTreeMap<(usize, usize), Vec<(f32, usize, usize)>>> {
        let ex = read(path)?;
        let mut examples: BTreeMap<(usize, usize), Vec<(f32, usize, usize)>> = BTreeMap::new();
        let (hook, which, layer, neuron) = (
            ex.column("hook")?.str()?,
            ex.column("which")?.str()?,
            ex.column("layer")?.u32()?,
            ex.column("neuron")?.u32()?,
        );
        let (value, row, pos) = (ex.column("value")?.f64()?, ex.column("row")?.i64()?, ex.column("position")?.i64()?);
        for i in 0..ex.height() {
            let key = (layer.get(i).unwrap_or(0) as usize, neuron.get(i).unwrap_or(0) as usize);
            if hook.get(i) == Some(suffix) && which.get(i) == Some("top") && chosen.contains(&key) {
                examples.entry(key).or_default().push((
                    value.get(i).unwrap_or(0.0) as f32,
                    row.get(i).unwrap_or(0) as usize,
                    pos.get(i).unwrap_or(0) as usize,
                ));
            }
        }
        Ok(examples)
    }

    /// One pass over the first `sample_tokens` positions of the dataset and the rows holding top
    /// examples: histograms, range samples and example windows. Returns the rows sampled.
    fn pass(
        &self,
        cx: &dyn StageEnv,
        model: &crate::model::Model,
        site: BlockSite,
        data: &crate::data::Tokenized,
        samples: &mut BTreeMap<(usize, usize), sample::NeuronSample>,
    ) -> Result<usize> {
        let ctx = data.ctx;
        let sampled = data.rows.min((self.sample_tokens / ctx).max(1));
        let mut rows: BTreeSet<usize> = (0..sampled).collect();
        rows.extend(samples.values().flat_map(|s| s.wanted.keys().map(|k| k.0)));
        let rows: Vec<usize> = rows.into_iter().collect();
        let layers: BTreeSet<usize> = samples.keys().map(|k| k.0).collect();
        let d = model.cfg.d_mlp;
        let [before, after] = self.window;
        let window = |a: &[f32], r: usize, p: usize, n: usize, value: f32| {
            let (from, to) = (p.saturating_sub(before), (p + after + 1).min(ctx));
            sample::Window { value, row: r, pos: p, from, acts: (from..to).map(|q| a[q * d + n]).collect() }
        };
        let mut progress = cx.progress((rows.len() * ctx) as u64, "tok");
        for chunk in rows.chunks(self.batch_size) {
            let ids: Vec<u32> = chunk.iter().flat_map(|&r| data.tokens[r * ctx..(r + 1) * ctx].to_vec()).collect();
            let t = Tensor::from_vec(ids, (chunk.len(), ctx), &Device::Cpu)?.to_device(&model.device)?;
            let req = Request::capture(layers.iter().map(|&l| HookPoint::Block(l, site)));
            model.forward(Start::Tokens(&t), &req, &mut |h, x| {
                let l = h.layer().unwrap_or(0);
                let x = x.to_device(&Device::Cpu)?;
                for (i, &r) in chunk.iter().enumerate() {
                    let a: Vec<f32> = x.get(i)?.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
                    for (&(sl, n), s) in samples.range_mut((l, 0)..(l + 1, 0)) {
                        debug_assert_eq!(sl, l);
                        if r < sampled {
                            for p in (0..ctx).filter(|&p| data.valid[r * ctx + p] != 0) {
                                let v = a[p * d + n];
                                s.add(v, || window(&a, r, p, n, v));
                            }
                        }
                        let wanted: Vec<usize> = s.wanted.range((r, 0)..(r + 1, 0)).map(|(k, _)| k.1).collect();
                        for p in wanted {
                            s.wanted.insert((r, p), window(&a, r, p, n, a[p * d + n]));
                        }
                    }
                }
                Ok(())
            })?;
            progress.tick((chunk.len() * ctx) as u64)?;
        }
        Ok(sampled)
    }

    fn color_texts(
        &self,
        model: &crate::model::Model,
        site: BlockSite,
        neurons: &[(usize, usize)],
    ) -> Result<(Vec<(String, Vec<(Vec<u8>, f32)>)>, Scale)> {
        let tok = model.tokenizer()?;
        let mut sections = Vec::new();
        let mut hi = 1e-6f32;
        for (ti, text) in self.texts.iter().enumerate() {
            let ids = tok.encode(text, true)?;
            let ids: Vec<u32> = ids.into_iter().take(model.cfg.n_ctx).collect();
            let t = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?.to_device(&model.device)?;
            let mut cache = BTreeMap::new();
            let req = Request::capture(neurons.iter().map(|&(l, _)| HookPoint::Block(l, site)));
            model.forward(Start::Tokens(&t), &req, &mut |h, x| {
                cache.insert(h.layer().unwrap_or(0), x.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
                Ok(())
            })?;
            let d = model.cfg.d_mlp;
            for &(l, n) in neurons {
                let a = &cache[&l];
                let toks: Vec<(Vec<u8>, f32)> =
                    ids.iter().enumerate().skip(1).map(|(p, &id)| (tok.token_bytes(id), a[p * d + n])).collect();
                hi = toks.iter().map(|t| t.1).fold(hi, f32::max);
                sections.push((format!("text {} · L{l}.N{n}", ti + 1), toks));
            }
        }
        let scale = self.scale.map(|[lo, hi]| Scale { lo, hi }).unwrap_or(Scale { lo: 0.0, hi });
        Ok((sections, scale))
    }
}
