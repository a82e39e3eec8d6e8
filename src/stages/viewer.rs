//! `viewer` stage: HTML pages for chosen neurons (top examples with per-token colouring, histogram,
//! promoted / suppressed tokens), an index page, and pages colouring given texts by each neuron.

use super::select::{Neurons, TopNeurons};
use super::{CheckCx, Dep, Stage, StageEnv};
use crate::model::hooks::{parse_site, BlockSite, HookPoint};
use crate::model::{Request, Start};
use crate::pages::neuron::{index_page, neuron_page, texts_page, Example, NeuronPage, Scale};
use crate::spec::{Diagnostic, ModelRef, StageRef};
use crate::store::{atomic, table::read};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model), Dep::Stage(&self.activations)];
        d.extend(self.top.as_ref().map(|t| Dep::Stage(&t.from)));
        d
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
            Some(Neurons::Top(t)) => cx.at_least("n", t.n, 1, out),
            Some(Neurons::List([])) => out.push(cx.error("neurons", "viewer: list at least one neuron")),
            Some(Neurons::List(_)) => {}
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
        let suffix = site.tl_suffix();
        // Top examples of the chosen neurons.
        let ex = read(&acts_dir.join("examples.parquet"))?;
        let mut examples: BTreeMap<(usize, usize), Vec<(f32, usize, usize)>> = BTreeMap::new();
        let (hook, which, layer, neuron) = (
            ex.column("hook")?.str()?,
            ex.column("which")?.str()?,
            ex.column("layer")?.u32()?,
            ex.column("neuron")?.u32()?,
        );
        let (rank, value, row, pos) = (
            ex.column("rank")?.i64()?,
            ex.column("value")?.f64()?,
            ex.column("row")?.i64()?,
            ex.column("position")?.i64()?,
        );
        for i in 0..ex.height() {
            let key = (layer.get(i).unwrap_or(0) as usize, neuron.get(i).unwrap_or(0) as usize);
            if hook.get(i) == Some(suffix)
                && which.get(i) == Some("top")
                && rank.get(i).unwrap_or(0) < self.top_k as i64
                && neurons.contains(&key)
            {
                examples.entry(key).or_default().push((
                    value.get(i).unwrap_or(0.0) as f32,
                    row.get(i).unwrap_or(0) as usize,
                    pos.get(i).unwrap_or(0) as usize,
                ));
            }
        }
        if examples.is_empty() {
            bail!(
                "'{}' has no top examples of {} for the chosen neurons (is {} among its hooks?)",
                self.activations.name(),
                self.hook,
                self.hook
            );
        }
        // Per-token activations of the rows holding the examples.
        let rows: Vec<usize> = examples.values().flatten().map(|e| e.1).collect::<BTreeSet<_>>().into_iter().collect();
        let layers: BTreeSet<usize> = neurons.iter().map(|n| n.0).collect();
        let mut acts_of: BTreeMap<(usize, usize), Vec<f32>> = BTreeMap::new(); // (row, layer) -> [ctx × d]
        let ctx = data.ctx;
        for chunk in rows.chunks(16) {
            let ids: Vec<u32> = chunk.iter().flat_map(|&r| data.tokens[r * ctx..(r + 1) * ctx].to_vec()).collect();
            let t = Tensor::from_vec(ids, (chunk.len(), ctx), &Device::Cpu)?.to_device(&model.device)?;
            let req = Request::capture(layers.iter().map(|&l| HookPoint::Block(l, site)));
            model.forward(Start::Tokens(&t), &req, &mut |h, x| {
                let l = h.layer().unwrap_or(0);
                for (i, &r) in chunk.iter().enumerate() {
                    acts_of.insert((r, l), x.get(i)?.flatten_all()?.to_vec1()?);
                }
                Ok(())
            })?;
        }
        let d = model.cfg.d_mlp;
        let stats = read(&acts_dir.join("stats.parquet"))?;
        let hists = candle_core::safetensors::load(acts_dir.join("histograms.safetensors"), &Device::Cpu)?;
        let edges: Vec<f32> = hists.get("edges").context("no edges")?.to_vec1()?;
        let mut index = Vec::new();
        for (&(l, n), exs) in &examples {
            let max = exs.iter().map(|e| e.0).fold(f32::MIN, f32::max);
            let scale = self.scale.map(|[lo, hi]| Scale { lo, hi }).unwrap_or(Scale { lo: 0.0, hi: max.max(1e-6) });
            let mut page_examples = Vec::new();
            for &(v, r, p) in exs {
                let a = &acts_of[&(r, l)];
                let (from, to) = (p.saturating_sub(self.window[0]), (p + self.window[1] + 1).min(ctx));
                let toks = (from..to)
                    // Trailing padding is not text.
                    .filter(|&q| q <= p || data.doc[r * ctx + q] != u32::MAX || data.tokens[r * ctx + q] != tok.pad)
                    .map(|q| (tok.token_str(data.tokens[r * ctx + q]), a[q * d + n]))
                    .collect();
                let label = data.label_at(r * ctx + p).to_string();
                page_examples.push(Example { value: v, tokens: toks, max_at: p - from, label });
            }
            let summary = neuron_summary(&stats, suffix, l, n)?;
            let counts: Vec<u32> =
                hists.get(&format!("blocks.{l}.{suffix}")).context("no histogram")?.get(n)?.to_vec1()?;
            let histogram = (1..edges.len()).map(|k| (edges[k - 1], edges[k], counts[k] as u64)).collect();
            let (promoted, suppressed) =
                if site == BlockSite::Post { vocab_effects(&model, l, n, self.vocab_k)? } else { (vec![], vec![]) };
            let title = format!("L{l}.N{n} · {}", self.hook);
            let page = NeuronPage {
                title,
                summary: summary.clone(),
                examples: page_examples,
                histogram,
                promoted,
                suppressed,
                scale,
            };
            let file = format!("L{l}.N{n}.html");
            atomic::write(&cx.out().join(&file), neuron_page(&page).as_bytes())?;
            index.push((format!("L{l}.N{n}"), file, summary.into_iter().map(|(_, v)| v).collect()));
        }
        let mut extra = String::new();
        if !self.texts.is_empty() {
            let (sections, scale) = self.color_texts(&model, site, &neurons)?;
            atomic::write(
                &cx.out().join("texts.html"),
                texts_page("Texts coloured by neuron", &sections, scale).as_bytes(),
            )?;
            extra = "<p><a href=\"texts.html\">Texts coloured by these neurons</a></p>".into();
        }
        let title = format!("Neurons of {} on {}", self.model.name(), acts.dataset.name());
        atomic::write(&cx.out().join("index.html"), index_page(&title, &index, &SUMMARY, &extra).as_bytes())
    }
}

const SUMMARY: [&str; 5] = ["mean", "std", "kurtosis", "frequency > 0", "max"];

/// The neuron's statistics from the activations stage, formatted.
fn neuron_summary(stats: &DataFrame, suffix: &str, l: usize, n: usize) -> Result<Vec<(String, String)>> {
    let (hook, layer, neuron) =
        (stats.column("hook")?.str()?, stats.column("layer")?.u32()?, stats.column("neuron")?.u32()?);
    let i = (0..stats.height())
        .find(|&i| hook.get(i) == Some(suffix) && layer.get(i) == Some(l as u32) && neuron.get(i) == Some(n as u32))
        .context("neuron not in stats")?;
    let f = |c: &str| -> Result<f64> { Ok(stats.column(c)?.f64()?.get(i).unwrap_or(f64::NAN)) };
    let vals = [f("mean")?, f("var")?.sqrt(), f("kurt")?, f("freq")?, f("max")?];
    Ok(SUMMARY.iter().zip(vals).map(|(k, v)| (k.to_string(), format!("{v:.4}"))).collect())
}

/// Tokens whose logits the neuron's output raises and lowers most: W_U · w_out.
fn vocab_effects(
    model: &crate::model::Model,
    l: usize,
    n: usize,
    k: usize,
) -> Result<(Vec<(String, f32)>, Vec<(String, f32)>)> {
    let w_out = model.weights.blocks[l].w_out.get(n)?.unsqueeze(0)?;
    let effect: Vec<f32> = w_out.matmul(&model.weights.w_u)?.squeeze(0)?.to_vec1()?;
    let tok = model.tokenizer()?;
    let pick = |lowest: bool| {
        crate::analysis::vocab::top_entries(&effect, k, lowest)
            .into_iter()
            .map(|(t, v)| (tok.token_str(t as u32), v))
            .collect()
    };
    Ok((pick(false), pick(true)))
}

impl Spec {
    fn color_texts(
        &self,
        model: &crate::model::Model,
        site: BlockSite,
        neurons: &[(usize, usize)],
    ) -> Result<(Vec<(String, Vec<(String, f32)>)>, Scale)> {
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
                cache.insert(h.layer().unwrap_or(0), x.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            })?;
            let d = model.cfg.d_mlp;
            for &(l, n) in neurons {
                let a = &cache[&l];
                let toks: Vec<(String, f32)> =
                    ids.iter().enumerate().skip(1).map(|(p, &id)| (tok.token_str(id), a[p * d + n])).collect();
                hi = toks.iter().map(|t| t.1).fold(hi, f32::max);
                sections.push((format!("text {} · L{l}.N{n}", ti + 1), toks));
            }
        }
        let scale = self.scale.map(|[lo, hi]| Scale { lo, hi }).unwrap_or(Scale { lo: 0.0, hi });
        Ok((sections, scale))
    }
}
