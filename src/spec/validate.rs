//! Validation before anything runs, all errors in one pass: model sources, references between
//! sections, cycles, and each stage's own checks (hook names, layer and neuron ranges) against the
//! model configurations that can be read offline.

use super::diag::{Diagnostic, Invalid};
use super::file::{Experiment, ModelSpec, ProcessingSpec};
use super::span::{DatasetRef, ModelRef, Sp, StageRef};
use crate::exec::models::{ModelSource, ResolvedModel};
use crate::model::hooks::{self, HookPoint};
use crate::model::known::known_config;
use crate::model::source::{hub_cache, resolve_alias};
use crate::model::{ModelConfig, ModelFiles, Processing};
use crate::stages::Dep;
use crate::util::did_you_mean;
use std::collections::BTreeMap;
use std::ops::Range;

/// Bytes as gigabytes for messages.
fn gb(bytes: f64) -> String {
    if bytes >= 1e15 {
        format!("{:.1e} GB", bytes / 1e9)
    } else {
        format!("{:.1} GB", bytes / 1e9)
    }
}

/// A checked experiment with its models resolved.
pub struct Validated {
    pub exp: Experiment,
    pub models: BTreeMap<String, ResolvedModel>,
    /// Configurations by model name; `None` when not readable offline (checked when it runs).
    pub configs: BTreeMap<String, Option<ModelConfig>>,
    pub warnings: Vec<String>,
}

/// What stage checks may consult.
pub struct CheckCx<'a> {
    pub exp: &'a Experiment,
    pub configs: &'a BTreeMap<String, Option<ModelConfig>>,
    /// The span of the stage or plot being checked.
    pub table: Range<usize>,
}

impl CheckCx<'_> {
    /// Where `field = …` is written in the table being checked (the table when it is defaulted).
    pub fn field(&self, field: &str) -> Range<usize> {
        super::locate::field_span(&self.exp.text, &self.table, field)
    }

    /// An error about `field` of the table being checked, at that field.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.field(field), message)
    }

    /// A count or size that must be at least `min`.
    pub fn at_least(&self, field: &str, value: usize, min: usize, out: &mut Vec<Diagnostic>) {
        if value < min {
            out.push(self.error(field, format!("{field} must be at least {min}, not {value}")));
        }
    }

    /// A count that cannot exceed `max` (`what` says what bounds it).
    pub fn at_most(&self, field: &str, value: usize, max: usize, what: &str, out: &mut Vec<Diagnostic>) {
        if value > max {
            out.push(self.error(field, format!("{field} = {value} is more than {what} ({max})")));
        }
    }

    /// A share in [0, 1).
    pub fn fraction(&self, field: &str, value: f64, out: &mut Vec<Diagnostic>) {
        if !(0.0..1.0).contains(&value) {
            out.push(self.error(field, format!("{field} must be in [0, 1), not {value}")));
        }
    }

    /// Memory the stage being checked will allocate (`bytes`, an estimate) against the memory of
    /// this machine; `knob` says what lowers it.
    pub fn memory(&self, bytes: f64, what: &str, knob: &str, out: &mut Vec<Diagnostic>) {
        let limit = crate::util::physical_memory() as f64;
        if limit > 0.0 && bytes > limit {
            out.push(
                Diagnostic::at(
                    self.table.clone(),
                    format!("{what}: about {} of memory, more than this machine's {}", gb(bytes), gb(limit)),
                )
                .help(knob.to_string()),
            );
        }
    }

    /// The number of token positions a dataset has at most, where known before running
    /// (`n_tokens`, or prompts × context).
    pub fn positions(&self, dataset: &DatasetRef) -> Option<u64> {
        let d = &self.exp.datasets.get(dataset.name())?.value;
        let ctx = d.context as u64;
        match (&d.n_tokens, &d.prompts, &d.pairs) {
            (Some(n), _, _) => Some(n.div_ceil(ctx.max(1)).saturating_mul(ctx)),
            (None, Some(p), _) => Some((p.len() as u64).saturating_mul(ctx)),
            (None, None, Some(p)) => Some((p.len() as u64).saturating_mul(ctx)),
            _ => None,
        }
    }

    /// The configuration of a model, when known offline.
    pub fn config(&self, model: &ModelRef) -> Option<&ModelConfig> {
        self.configs.get(model.name()).and_then(|c| c.as_ref())
    }

    /// Check hook selectors against a model: full names (`blocks.3.mlp.hook_post`), aliases with a
    /// layer (`post.3`) or layer-less selectors for every layer (`mlp.hook_post`).
    pub fn hooks(&self, model: &ModelRef, hooks: &[Sp<String>], out: &mut Vec<Diagnostic>) -> Option<Vec<HookPoint>> {
        let cfg = self.config(model)?;
        let mut ok = Vec::new();
        for h in hooks {
            match select_hook(cfg, h) {
                Ok(mut v) => ok.append(&mut v),
                Err(d) => out.push(d),
            }
        }
        Some(ok)
    }

    /// Check that a layer index exists.
    pub fn layer(&self, cfg: &ModelConfig, layer: &Sp<usize>, out: &mut Vec<Diagnostic>) {
        if layer.value >= cfg.n_layers {
            out.push(Diagnostic::at(
                layer.span.clone(),
                format!(
                    "layer {} out of range: the model has {} layers (0..={})",
                    layer.value,
                    cfg.n_layers,
                    cfg.n_layers - 1
                ),
            ));
        }
    }

    /// Check that indices are below `n` (neurons, heads, dimensions).
    pub fn indices(&self, what: &str, idx: &Sp<Vec<usize>>, n: usize, out: &mut Vec<Diagnostic>) {
        if let Some(bad) = idx.value.iter().find(|&&i| i >= n) {
            out.push(Diagnostic::at(
                idx.span.clone(),
                format!("{what} {bad} out of range: there are {n} (0..={})", n - 1),
            ));
        }
    }
}

/// Every hook point several selectors name, sorted, each once (for running: errors were reported
/// at validation).
pub fn select_hooks(cfg: &ModelConfig, hooks: &[Sp<String>]) -> anyhow::Result<Vec<HookPoint>> {
    let mut out = Vec::new();
    for h in hooks {
        out.extend(select_hook(cfg, h).map_err(|d| anyhow::anyhow!(d.message))?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resolve one hook selector to hook points of a model, or explain why not.
pub fn select_hook(cfg: &ModelConfig, h: &Sp<String>) -> Result<Vec<HookPoint>, Diagnostic> {
    if let Some(p) = HookPoint::parse(h) {
        if p.exists_in(cfg) {
            return Ok(vec![p]);
        }
        let msg = match p.layer() {
            Some(l) if l >= cfg.n_layers => format!(
                "layer {l} out of range in '{}': the model has {} layers (0..={})",
                h.value,
                cfg.n_layers,
                cfg.n_layers - 1
            ),
            _ => format!("hook '{}' does not exist in {:?} models", h.value, cfg.family),
        };
        return Err(Diagnostic::at(h.span.clone(), msg));
    }
    if let Some(site) = hooks::parse_site(h) {
        let all: Vec<HookPoint> =
            (0..cfg.n_layers).map(|l| HookPoint::Block(l, site)).filter(|p| p.exists_in(cfg)).collect();
        if all.is_empty() {
            return Err(Diagnostic::at(
                h.span.clone(),
                format!("hook '{}' does not exist in {:?} models", h.value, cfg.family),
            ));
        }
        return Ok(all);
    }
    let names = hooks::known_names(cfg);
    Err(Diagnostic::at(h.span.clone(), format!("unknown hook '{}'", h.value))
        .help(did_you_mean(h, names.iter().map(|s| s.as_str())).trim_start_matches("; ").to_string()))
}

fn processing(spec: &ProcessingSpec, span: std::ops::Range<usize>, out: &mut Vec<Diagnostic>) -> Processing {
    match spec {
        ProcessingSpec::Custom(p) => *p,
        ProcessingSpec::Named(n) => Processing::from_name(n).unwrap_or_else(|| {
            let names = ["default", "none", "default+refactor"];
            out.push(Diagnostic::at(span, format!("unknown processing '{n}'")).help(format!(
                "one of {}{}, or a table {{ fold_ln = true, … }}",
                names.join(", "),
                did_you_mean(n, names)
            )));
            Processing::DEFAULT
        }),
    }
}

/// Resolve a model's source and read its configuration when possible without the network.
fn resolve_model(
    exp: &Experiment,
    spec: &Sp<ModelSpec>,
    out: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    name: &str,
) -> Option<(ResolvedModel, Option<ModelConfig>)> {
    let m = &spec.value;
    let n_sources = [m.hub.is_some(), m.path.is_some(), m.train.is_some()].iter().filter(|b| **b).count();
    if n_sources != 1 {
        out.push(Diagnostic::at(
            spec.span.clone(),
            format!("model '{name}' needs exactly one of `hub`, `path` or `train`"),
        ));
        return None;
    }
    let processing = processing(&m.processing, super::locate::field_span(&exp.text, &spec.span, "processing"), out);
    if let Some(path) = &m.path {
        let dir = exp.base_dir().join(&path.value);
        let files = match ModelFiles::from_folder(&dir) {
            Ok(f) => f,
            Err(e) => {
                out.push(
                    Diagnostic::at(path.span.clone(), format!("{e:#}"))
                        .help("`path` is relative to the experiment file's folder"),
                );
                return None;
            }
        };
        return match ModelConfig::from_file(&files.config) {
            Ok(cfg) => Some((ResolvedModel { source: ModelSource::Folder(dir), processing }, Some(cfg))),
            Err(e) => {
                out.push(Diagnostic::at(path.span.clone(), format!("{e:#}")));
                None
            }
        };
    }
    if let Some(hub) = &m.hub {
        let repo = resolve_alias(hub).to_string();
        let cached = hub_cache()
            .repo(hf_hub::Repo::with_revision(
                repo.clone(),
                hf_hub::RepoType::Model,
                m.revision.clone().unwrap_or_else(|| "main".into()),
            ))
            .get("config.json");
        let cfg = match cached {
            Some(p) => match ModelConfig::from_file(&p) {
                Ok(c) => Some(c),
                Err(e) => {
                    out.push(Diagnostic::at(hub.span.clone(), format!("{e:#}")));
                    return None;
                }
            },
            None => {
                let known = known_config(&repo);
                if known.is_none() {
                    warnings.push(format!("model '{name}' ({repo}) is not in the Hugging Face cache: its hooks and ranges are checked when it is downloaded"));
                }
                known
            }
        };
        return Some((
            ResolvedModel { source: ModelSource::Hub { name: repo, revision: m.revision.clone() }, processing },
            cfg,
        ));
    }
    let train = m.train.as_ref().expect("one source");
    match exp.stages.get(train.name()) {
        // A train stage whose shape is impossible has no configuration (its own check says why).
        Some(st) => match (st.value.kind() == "train").then(|| st.value.trained_config()) {
            Some(cfg) => {
                let seeds: Vec<u64> = st
                    .value
                    .stage()
                    .parts(exp.meta.seed)
                    .into_iter()
                    .filter_map(|p| match p {
                        crate::stages::Part::Seed(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                let seed = match m.seed {
                    Some(s) if seeds.contains(&s) => s,
                    Some(s) => {
                        out.push(Diagnostic::at(
                            spec.span.clone(),
                            format!("model '{name}': stage '{}' trains seeds {seeds:?}, not {s}", train.name()),
                        ));
                        return None;
                    }
                    None if seeds.len() == 1 => seeds[0],
                    None => {
                        out.push(Diagnostic::at(
                            spec.span.clone(),
                            format!(
                                "model '{name}': stage '{}' trains several seeds {seeds:?}; add seed = …",
                                train.name()
                            ),
                        ));
                        return None;
                    }
                };
                Some((
                    ResolvedModel {
                        source: ModelSource::Trained { stage: train.name().to_string(), seed },
                        processing,
                    },
                    cfg,
                ))
            }
            None => {
                out.push(Diagnostic::at(
                    train.span(),
                    format!("stage '{}' is a {} stage: `train` must name a train stage", train.name(), st.value.kind()),
                ));
                None
            }
        },
        None => {
            out.push(ref_error("stage", train.name(), train.span(), exp));
            None
        }
    }
}

/// "unknown model 'x'", with the nearest name of that kind, or where the name is defined instead.
fn ref_error(kind: &str, name: &str, span: std::ops::Range<usize>, exp: &Experiment) -> Diagnostic {
    let names: Vec<&str> = match kind {
        "model" => exp.models.keys().map(|s| s.as_str()).collect(),
        "dataset" => exp.datasets.keys().map(|s| s.as_str()).collect(),
        _ => exp.stages.keys().map(|s| s.as_str()).collect(),
    };
    let elsewhere = [
        ("model", exp.models.contains_key(name)),
        ("dataset", exp.datasets.contains_key(name)),
        ("stage", exp.stages.contains_key(name)),
        ("plot", exp.plots.contains_key(name)),
    ]
    .iter()
    .find(|(k, present)| *present && *k != kind)
    .map(|(k, _)| format!("'{name}' is a {k}, not a {kind}"));
    let help = match elsewhere {
        Some(e) => e,
        None if names.is_empty() => format!("define it in a [{kind}s.{name}] section"),
        None => format!("{kind}s defined: {}{}", names.join(", "), did_you_mean(name, names.iter().copied())),
    };
    Diagnostic::at(span, format!("unknown {kind} '{name}'")).help(help)
}

fn check_deps(exp: &Experiment, deps: &[Dep], out: &mut Vec<Diagnostic>) {
    let model = |r: &ModelRef, out: &mut Vec<Diagnostic>| {
        if !exp.models.contains_key(r.name()) {
            out.push(ref_error("model", r.name(), r.span(), exp));
        }
    };
    let dataset = |r: &DatasetRef, out: &mut Vec<Diagnostic>| {
        if !exp.datasets.contains_key(r.name()) {
            out.push(ref_error("dataset", r.name(), r.span(), exp));
        }
    };
    let stage = |r: &StageRef, out: &mut Vec<Diagnostic>| {
        if !exp.stages.contains_key(r.name()) {
            out.push(ref_error("stage", r.name(), r.span(), exp));
        }
    };
    for d in deps {
        match d {
            Dep::Model(r) => model(r, out),
            Dep::Tokens { dataset: ds, model: m } => {
                dataset(ds, out);
                model(m, out);
            }
            Dep::Stage(r) => stage(r, out),
            Dep::Dataset(r) => dataset(r, out),
        }
    }
}

/// Stage-to-stage edges (including through trained models), to find cycles.
fn find_cycle(exp: &Experiment) -> Option<(Vec<String>, std::ops::Range<usize>)> {
    use petgraph::graphmap::DiGraphMap;
    let mut g: DiGraphMap<&str, (), std::hash::RandomState> = DiGraphMap::default();
    for (name, st) in &exp.stages {
        g.add_node(name.as_str());
        for d in st.value.stage().deps() {
            let from = match d {
                Dep::Stage(r) => Some(r.name().to_string()),
                Dep::Model(m) | Dep::Tokens { model: m, .. } => {
                    exp.models.get(m.name()).and_then(|ms| ms.value.train.as_ref().map(|t| t.name().to_string()))
                }
                Dep::Dataset(_) => None,
            };
            if let Some(from) = from {
                if let Some((k, _)) = exp.stages.get_key_value(from.as_str()) {
                    g.add_edge(k.as_str(), name.as_str(), ());
                }
            }
        }
    }
    for scc in petgraph::algo::tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            let mut names: Vec<String> = scc.iter().rev().map(|s| s.to_string()).collect();
            names.push(names[0].clone());
            let span = exp.stages[&names[0]].span.clone();
            return Some((names, span));
        }
    }
    None
}

/// A dataset tokenized for a model must fit the model's context (prompts are cut to it).
fn check_contexts(exp: &Experiment, configs: &BTreeMap<String, Option<ModelConfig>>, out: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::BTreeSet::new();
    for st in exp.stages.values() {
        for d in st.value.stage().deps() {
            let Dep::Tokens { dataset, model } = d else { continue };
            let (Some(ds), Some(Some(cfg))) = (exp.datasets.get(dataset.name()), configs.get(model.name())) else {
                continue;
            };
            // A mix is tokenized dataset by dataset, each with its own context.
            let parts: Vec<&str> = match &ds.value.mix {
                Some(names) => names.iter().map(|n| n.as_str()).collect(),
                None => vec![dataset.name()],
            };
            for (name, ds) in parts.into_iter().filter_map(|n| exp.datasets.get_key_value(n)) {
                let prompts = ds.value.mode() == crate::data::spec::Mode::Prompt;
                if !prompts && ds.value.context > cfg.n_ctx && seen.insert((name, model.name())) {
                    out.push(Diagnostic::at(
                        super::locate::field_span(&exp.text, &ds.span, "context"),
                        format!(
                            "dataset '{name}': context {} is longer than model '{}''s context ({})",
                            ds.value.context,
                            model.name(),
                            cfg.n_ctx
                        ),
                    ));
                }
            }
        }
    }
}

/// Validate a parsed experiment; every problem is reported at once.
pub fn validate(exp: Experiment) -> Result<Validated, Invalid> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut models = BTreeMap::new();
    let mut configs = BTreeMap::new();
    if let (Some(d), None) = (&exp.meta.device, exp.meta.device()) {
        out.push(Diagnostic::at(d.span.clone(), format!("unknown device '{}'", d.value)).help("cpu, cuda or cuda:N"));
    }
    if let Some(problem) = crate::store::paths::name_problem(&exp.meta.name) {
        out.push(
            Diagnostic::at(exp.meta.name.span.clone(), format!("invalid experiment name: {problem}"))
                .help("the name is the folder OUT/<name>/ that holds the experiment's links and report"),
        );
    }
    for (name, spec) in &exp.models {
        if let Some((r, cfg)) = resolve_model(&exp, spec, &mut out, &mut warnings, name) {
            models.insert(name.clone(), r);
            configs.insert(name.clone(), cfg);
        }
    }
    for (name, ds) in &exp.datasets {
        for part in ds.value.mix.iter().flatten() {
            let span = super::locate::field_span(&exp.text, &ds.span, "mix");
            match exp.datasets.get(part) {
                None => out.push(Diagnostic::at(
                    span,
                    format!(
                        "dataset '{name}' mixes unknown dataset '{part}'{}",
                        crate::util::did_you_mean(part, exp.datasets.keys().map(|s| s.as_str()))
                    ),
                )),
                Some(d) if d.value.mix.is_some() => out.push(Diagnostic::at(
                    span,
                    format!("dataset '{name}' mixes '{part}', itself a mix: list its datasets instead"),
                )),
                Some(d) if matches!(d.value.mode(), crate::data::spec::Mode::Prompt) => out.push(Diagnostic::at(
                    span,
                    format!("dataset '{name}' mixes '{part}', a prompt dataset: mix text datasets"),
                )),
                Some(d)
                    if ds
                        .value
                        .mix
                        .as_ref()
                        .and_then(|m| exp.datasets.get(&m[0]))
                        .is_some_and(|first| first.value.context != d.value.context) =>
                {
                    out.push(Diagnostic::at(
                        span,
                        format!("dataset '{name}' mixes datasets of different `context`: rows must have one length"),
                    ))
                }
                _ => {}
            }
        }
        for (span, msg) in crate::data::check(&ds.value, &exp.base_dir()) {
            let span = span.map(|f| super::locate::field_span(&exp.text, &ds.span, f)).unwrap_or(ds.span.clone());
            out.push(Diagnostic::at(span, format!("dataset '{name}': {msg}")));
        }
    }
    for (name, plot) in &exp.plots {
        if exp.stages.contains_key(name) {
            out.push(Diagnostic::at(
                plot.span.clone(),
                format!("plot '{name}' has the name of a stage; names of stages and plots must differ"),
            ));
        }
    }
    for st in exp.stages.values() {
        check_deps(&exp, &st.value.stage().deps(), &mut out);
    }
    for p in exp.plots.values() {
        check_deps(&exp, &crate::stages::Stage::deps(&p.value), &mut out);
    }
    if let Some((cycle, span)) = find_cycle(&exp) {
        out.push(Diagnostic::at(span, format!("cycle between stages: {}", cycle.join(" → "))));
    }
    if out.is_empty() {
        let tables = exp
            .stages
            .values()
            .map(|st| (st.value.stage(), st.span.clone()))
            .chain(exp.plots.values().map(|p| (&p.value as &dyn crate::stages::Stage, p.span.clone())));
        for (stage, table) in tables {
            let cx = CheckCx { exp: &exp, configs: &configs, table: table.clone() };
            let mut found = Vec::new();
            stage.check(&cx, &mut found);
            for mut d in found {
                // A check without a position (a defaulted value) points at its table.
                if d.span.as_ref().is_none_or(|s| s.is_empty() && s.start == 0) {
                    d.span = Some(table.clone());
                }
                if !out.iter().any(|o: &Diagnostic| o.span == d.span && o.message == d.message) {
                    out.push(d);
                }
            }
        }
    }
    if out.is_empty() {
        check_contexts(&exp, &configs, &mut out);
    }
    if !out.is_empty() {
        out.sort_by_key(|d| d.span.as_ref().map(|s| s.start).unwrap_or(0));
        return Err(Invalid { file: exp.file.clone(), text: exp.text.clone(), diagnostics: out });
    }
    Ok(Validated { exp, models, configs, warnings })
}
