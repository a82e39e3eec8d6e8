//! What stage checks may consult before anything runs: the model configurations known offline, the
//! other stages and datasets of the file, and helpers that turn a bad hook, layer, index or stage
//! kind into a diagnostic at its position.

use super::{Kind, StageSpec, TableDecl};
use crate::data::DatasetSpec;
use crate::model::selector::{self, SelectError};
use crate::model::{HookPoint, ModelConfig};
use crate::spec::{locate, DatasetRef, Diagnostic, ModelRef, Sp, StageRef};
use crate::util::did_you_mean;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// Bytes as gigabytes for messages.
fn gb(bytes: f64) -> String {
    if bytes >= 1e15 {
        format!("{:.1e} GB", bytes / 1e9)
    } else {
        format!("{:.1} GB", bytes / 1e9)
    }
}

/// The check context of one stage or plot of an experiment.
pub struct CheckCx<'a> {
    /// The experiment file's text.
    pub text: &'a str,
    /// The span of the stage or plot being checked.
    pub table: Range<usize>,
    /// Configurations by model name; `None` when not readable offline (checked when it runs).
    pub configs: &'a BTreeMap<String, Option<ModelConfig>>,
    pub stages: &'a BTreeMap<String, Sp<StageSpec>>,
    pub datasets: &'a BTreeMap<String, Sp<DatasetSpec>>,
    /// The folder relative paths resolve against.
    pub base_dir: &'a Path,
}

impl CheckCx<'_> {
    /// Where `field = …` is written in the table being checked (the table when it is defaulted).
    pub fn field(&self, field: &str) -> Range<usize> {
        locate::field_span(self.text, &self.table, field)
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
        let limit = crate::util::sys::physical_memory() as f64;
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
        let d = self.dataset(dataset.name())?;
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

    /// The hook points of selectors (see `model::selector`), each bad one reported at its position;
    /// `None` when the model's configuration is not known offline.
    pub fn hooks(&self, model: &ModelRef, hooks: &[Sp<String>], out: &mut Vec<Diagnostic>) -> Option<Vec<HookPoint>> {
        let cfg = self.config(model)?;
        let mut ok = Vec::new();
        for h in hooks {
            match selector::select(cfg, h) {
                Ok(mut v) => ok.append(&mut v),
                Err(e) => out.push(hook_diagnostic(h, &e)),
            }
        }
        Some(ok)
    }

    /// As `hooks`, also reporting a hook over pairs of positions (attention scores, pattern) as
    /// something the stage cannot read: `stage_reads` says what it reads ("activations summarises").
    pub fn per_position_hooks(
        &self,
        model: &ModelRef,
        hooks: &[Sp<String>],
        stage_reads: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Option<Vec<HookPoint>> {
        let cfg = self.config(model)?;
        for h in hooks {
            if selector::select(cfg, h).is_ok_and(|points| points.iter().any(|p| p.width(cfg).is_none())) {
                out.push(Diagnostic::at(
                    h.span.clone(),
                    format!("'{}' is per pair of positions; {stage_reads} per-position hooks", h.value),
                ));
            }
        }
        self.hooks(model, hooks, out)
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

    /// The stage `r` names when it is of kind `T`; otherwise a diagnostic `"{expected}; 'x' is of
    /// kind y"` (`expected` says what reads it: "viewer reads an activations stage"). `None` also
    /// when the stage does not exist (reference errors are reported apart).
    pub fn stage<T: Kind>(&self, r: &StageRef, expected: &str, out: &mut Vec<Diagnostic>) -> Option<&T> {
        let spec = &self.stages.get(r.name())?.value;
        let found = T::of(spec);
        if found.is_none() {
            out.push(Diagnostic::at(r.span(), format!("{expected}; '{}' is of kind {}", r.name(), spec.kind())));
        }
        found
    }

    /// The declaration of a table of the stage `r` names: `table` when given (written as the field
    /// `field`), else the stage's only table. `None` with a diagnostic when there is no such table,
    /// and without one when the stage does not exist (reference errors are reported apart).
    pub fn table_of(
        &self,
        r: &StageRef,
        table: Option<&str>,
        field: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Option<TableDecl> {
        let st = &self.stages.get(r.name())?.value;
        let mut decls = st.stage().tables();
        let names: Vec<&'static str> = decls.iter().map(|d| d.name).collect();
        let (stage, kind) = (r.name(), st.kind());
        match table {
            Some(t) => {
                let found = decls.iter().position(|d| d.name == t);
                if found.is_none() {
                    out.push(self.error(field, format!("stage '{stage}' ({kind}) has no table '{t}'")).help(format!(
                        "tables: {}{}",
                        names.join(", "),
                        did_you_mean(t, names.iter().copied())
                    )));
                }
                found.map(|i| decls.swap_remove(i))
            }
            None if decls.len() == 1 => decls.pop(),
            None if decls.is_empty() => {
                out.push(Diagnostic::at(r.span(), format!("stage '{stage}' ({kind}) writes no table")));
                None
            }
            None => {
                out.push(
                    Diagnostic::at(r.span(), format!("stage '{stage}' ({kind}) writes several tables: set `{field}`"))
                        .help(format!("tables: {}", names.join(", "))),
                );
                None
            }
        }
    }

    /// Check that `column`, written as the value of `field`, is a column of the table `decl` of
    /// `stage`, holding numbers when `numeric`.
    pub fn column(
        &self,
        stage: &str,
        decl: &TableDecl,
        field: &str,
        column: &str,
        numeric: bool,
        out: &mut Vec<Diagnostic>,
    ) {
        let table = decl.name;
        match decl.column(column) {
            Some(c) if numeric && !c.ty.is_numeric() => out.push(self.error(
                field,
                format!("`{field}` needs numbers, and column '{column}' of {stage}.{table} holds {}", c.ty),
            )),
            Some(_) => {}
            None if decl.open => {}
            None => out.push(self.error(field, format!("{stage}.{table} has no column '{column}'")).help(format!(
                "columns: {}{}",
                decl.names().collect::<Vec<_>>().join(", "),
                did_you_mean(column, decl.names())
            ))),
        }
    }

    /// A dataset of the file by name.
    pub fn dataset(&self, name: &str) -> Option<&DatasetSpec> {
        self.datasets.get(name).map(|d| &d.value)
    }
}

/// A hook selector's error as a diagnostic at its position, with the nearest valid name.
pub fn hook_diagnostic(h: &Sp<String>, e: &SelectError) -> Diagnostic {
    let d = Diagnostic::at(h.span.clone(), e.to_string());
    match e.nearest() {
        Some(n) => d.help(format!("did you mean '{n}'?")),
        None => d,
    }
}
