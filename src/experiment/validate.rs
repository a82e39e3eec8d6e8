//! Validation before anything runs, all errors in one pass: model sources, references between
//! sections, and each stage's own checks (hook names, layer and neuron ranges) against the model
//! configurations that can be read offline; cycles are found by building the plan the executor
//! runs.

use super::file::{Experiment, ModelSpec, ProcessingSpec};
use crate::model::known::known_config;
use crate::model::source::{hub_cache, resolve_alias};
use crate::model::{ModelConfig, ModelFiles, ModelSource, Processing, ResolvedModel};
use crate::plan::{Plan, Sources};
use crate::spec::{locate, DatasetRef, Diagnostic, Invalid, ModelRef, Sp, StageRef};
use crate::stages::{CheckCx, Dep, Part};
use crate::util::did_you_mean;
use std::collections::BTreeMap;

/// A checked experiment with its models resolved and its plan built.
pub struct Validated {
    pub exp: Experiment,
    pub plan: Plan,
    pub models: BTreeMap<String, ResolvedModel>,
    /// Configurations by model name; `None` when not readable offline (checked when it runs).
    pub configs: BTreeMap<String, Option<ModelConfig>>,
    pub warnings: Vec<String>,
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
    let processing = processing(&m.processing, locate::field_span(&exp.sources.text, &spec.span, "processing"), out);
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
                        Part::Seed(s) => Some(s),
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
        if !exp.models.contains_key(r.name()) && !exp.undecoded.contains(r.name()) {
            out.push(ref_error("model", r.name(), r.span(), exp));
        }
    };
    let dataset = |r: &DatasetRef, out: &mut Vec<Diagnostic>| {
        if !exp.datasets.contains_key(r.name()) && !exp.undecoded.contains(r.name()) {
            out.push(ref_error("dataset", r.name(), r.span(), exp));
        }
    };
    let stage = |r: &StageRef, out: &mut Vec<Diagnostic>| {
        if !exp.stages.contains_key(r.name()) && !exp.undecoded.contains(r.name()) {
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
                        locate::field_span(&exp.sources.text, &ds.span, "context"),
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
/// `[experiment] highlights` name stages or plots of the file.
fn check_highlights(exp: &Experiment, out: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = exp.stages.keys().chain(exp.plots.keys()).map(|s| s.as_str()).collect();
    for h in &exp.meta.highlights {
        if !names.contains(&h.value.as_str()) {
            out.push(Diagnostic::at(h.span.clone(), format!("highlights: no stage or plot '{}'", h.value)).help(
                format!("stages and plots: {}{}", names.join(", "), did_you_mean(&h.value, names.iter().copied())),
            ));
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
    check_highlights(&exp, &mut out);
    let bases = exp.matrices.expanded.keys().map(|(_, base)| base);
    let names: Vec<&str> = exp.stages.keys().chain(exp.plots.keys()).chain(bases).map(|s| s.as_str()).collect();
    exp.slurm.check(&names, &mut out);
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
            let span = locate::field_span(&exp.sources.text, &ds.span, "mix");
            match exp.datasets.get(part) {
                None => out.push(Diagnostic::at(
                    span,
                    format!(
                        "dataset '{name}' mixes unknown dataset '{part}'{}",
                        did_you_mean(part, exp.datasets.keys().map(|s| s.as_str()))
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
            let span = span.map(|f| locate::field_span(&exp.sources.text, &ds.span, f)).unwrap_or(ds.span.clone());
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
    let plan = Plan::build(&Sources { stages: &exp.stages, plots: &exp.plots, models: &models, seed: exp.meta.seed });
    let plan = match plan {
        Ok(plan) => Some(plan),
        Err(cycle) => {
            let span = cycle.0.first().and_then(|n| exp.stages.get(n)).map(|s| s.span.clone()).unwrap_or(0..0);
            out.push(Diagnostic::at(span, format!("cycle between stages: {}", cycle.0.join(" → "))));
            None
        }
    };
    {
        let base_dir = exp.base_dir();
        let tables = exp
            .stages
            .values()
            .map(|st| (st.value.stage(), st.span.clone()))
            .chain(exp.plots.values().map(|p| (&p.value as &dyn crate::stages::Stage, p.span.clone())));
        for (stage, table) in tables {
            let cx = CheckCx {
                text: &exp.sources.text,
                table: table.clone(),
                configs: &configs,
                stages: &exp.stages,
                datasets: &exp.datasets,
                base_dir: &base_dir,
            };
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
    check_contexts(&exp, &configs, &mut out);
    match plan {
        Some(plan) if out.is_empty() => Ok(Validated { exp, plan, models, configs, warnings }),
        _ => {
            out.sort_by_key(|d| d.span.as_ref().map(|s| s.start).unwrap_or(0));
            Err(Invalid { file: exp.file.clone(), sources: exp.sources.clone(), diagnostics: out })
        }
    }
}
