//! Interventions as written in experiment files (`{ hook = "blocks.3.mlp.hook_post", neurons = [669],
//! set = { mean_of = "acts_en" } }`), their checks, and their resolution into model interventions
//! (means read from an `activations` stage's statistics).

use super::{CheckCx, Dep};
use crate::model::hooks::HookPoint;
use crate::model::{Action, Intervention, ModelConfig};
use crate::spec::{Diagnostic, Sp, StageRef};
use anyhow::{bail, Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The value written by `set`: a number, one value per selected neuron, or the mean activation of
/// each selected neuron in an `activations` stage.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetValue {
    #[serde(default)]
    pub value: Option<f32>,
    #[serde(default)]
    pub values: Option<Vec<f32>>,
    #[serde(default)]
    pub mean_of: Option<StageRef>,
}

/// Clamp bounds.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default)]
    pub min: Option<f32>,
    #[serde(default)]
    pub max: Option<f32>,
}

/// One intervention: a hook (with its layer), a selection, and exactly one action.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterventionSpec {
    pub hook: Sp<String>,
    /// Indices of the last axis (neurons of mlp hooks, dimensions otherwise).
    #[serde(default)]
    pub neurons: Option<Sp<Vec<usize>>>,
    #[serde(default)]
    pub heads: Option<Sp<Vec<usize>>>,
    /// Positions (negative counts from the end); default all.
    #[serde(default)]
    pub positions: Option<Sp<Vec<i64>>>,
    #[serde(default)]
    pub zero: bool,
    #[serde(default)]
    pub set: Option<SetValue>,
    #[serde(default)]
    pub scale: Option<f32>,
    #[serde(default)]
    pub clamp: Option<Bounds>,
    /// Add a vector (one value per selected index).
    #[serde(default)]
    pub add: Option<Vec<f32>>,
    /// Replace each row by another row of the batch (seeded shuffle).
    #[serde(default)]
    pub resample: Option<u64>,
}

impl InterventionSpec {
    fn n_actions(&self) -> usize {
        [
            self.zero,
            self.set.is_some(),
            self.scale.is_some(),
            self.clamp.is_some(),
            self.add.is_some(),
            self.resample.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    pub fn deps(&self) -> Vec<Dep<'_>> {
        self.set.as_ref().and_then(|s| s.mean_of.as_ref()).map(Dep::Stage).into_iter().collect()
    }

    /// Positions and ranges checked against the model.
    pub fn check(&self, cx: &CheckCx, cfg: Option<&ModelConfig>, out: &mut Vec<Diagnostic>) {
        let span = self.hook.span.clone();
        if self.n_actions() != 1 {
            out.push(Diagnostic::at(
                span.clone(),
                "an intervention needs exactly one of zero, set, scale, clamp, add, resample",
            ));
        }
        if let Some(set) = &self.set {
            let n = [set.value.is_some(), set.values.is_some(), set.mean_of.is_some()].iter().filter(|b| **b).count();
            if n != 1 {
                out.push(Diagnostic::at(span.clone(), "set needs exactly one of value, values, mean_of"));
            }
            if let Some(m) = &set.mean_of {
                cx.stage::<super::activations::Spec>(m, "mean_of reads an activations stage", out);
            }
        }
        let Some(cfg) = cfg else { return };
        let Some(hook) = HookPoint::parse(&self.hook) else {
            let hint = crate::util::did_you_mean(
                &self.hook,
                crate::model::selector::known_names(cfg).iter().map(|s| s.as_str()),
            );
            out.push(
                Diagnostic::at(
                    span,
                    format!(
                        "unknown hook '{}' (interventions name one layer: blocks.3.mlp.hook_post)",
                        self.hook.value
                    ),
                )
                .help(hint.trim_start_matches("; ").to_string()),
            );
            return;
        };
        if !hook.exists_in(cfg) {
            let msg = match hook.layer() {
                Some(l) if l >= cfg.n_layers => {
                    format!("layer {l} out of range: the model has {} layers (0..={})", cfg.n_layers, cfg.n_layers - 1)
                }
                _ => format!("hook '{}' does not exist in {:?} models", self.hook.value, cfg.family),
            };
            out.push(Diagnostic::at(span, msg));
            return;
        }
        let shape = hook.shape(cfg, 1, cfg.n_ctx);
        let last = *shape.last().unwrap_or(&0);
        if let Some(n) = &self.neurons {
            cx.indices(if hook.site().is_some_and(|s| s.is_neuron_site()) { "neuron" } else { "index" }, n, last, out);
        }
        if let Some(h) = &self.heads {
            cx.indices("head", h, cfg.n_heads, out);
        }
        if let Some(p) = &self.positions {
            if let Some(bad) = p.value.iter().find(|&&q| q >= cfg.n_ctx as i64 || q < -(cfg.n_ctx as i64)) {
                out.push(Diagnostic::at(
                    p.span.clone(),
                    format!("position {bad} out of range: the model's context is {}", cfg.n_ctx),
                ));
            }
        }
    }

    /// The model intervention; `stage_dir` gives the artifact folder of a `mean_of` stage.
    pub fn resolve(&self, stage_dir: &dyn Fn(&StageRef) -> Result<std::path::PathBuf>) -> Result<Intervention> {
        let hook = HookPoint::parse(&self.hook).with_context(|| format!("unknown hook '{}'", self.hook.value))?;
        let action = if self.zero {
            Action::Zero
        } else if let Some(s) = &self.set {
            match (&s.value, &s.values, &s.mean_of) {
                (Some(v), _, _) => Action::Constant(*v),
                (_, Some(v), _) => Action::Values(v.clone()),
                (_, _, Some(m)) => Action::Values(means(
                    &stage_dir(m)?,
                    hook,
                    self.neurons.as_ref().map(|n| n.value.as_slice()).context("set = { mean_of } needs `neurons`")?,
                )?),
                _ => bail!("set needs value, values or mean_of"),
            }
        } else if let Some(s) = self.scale {
            Action::Scale(s)
        } else if let Some(c) = &self.clamp {
            Action::Clamp { min: c.min, max: c.max }
        } else if let Some(a) = &self.add {
            Action::Add(a.clone())
        } else if let Some(seed) = self.resample {
            Action::Resample { seed }
        } else {
            bail!("the intervention at {} has no action", self.hook.value)
        };
        Ok(Intervention {
            hook,
            rows: None,
            positions: self.positions.as_ref().map(|p| p.value.clone()),
            heads: self.heads.as_ref().map(|h| h.value.clone()),
            index: self.neurons.as_ref().map(|n| n.value.clone()),
            action,
        })
    }
}

/// Mean activation of neurons of a hook, from an activations stage's `stats.parquet`.
pub fn means(dir: &Path, hook: HookPoint, neurons: &[usize]) -> Result<Vec<f32>> {
    let df = crate::store::table::read(&dir.join("stats.parquet"))?;
    let (hooks, layer, neuron, mean) =
        (df.column("hook")?.str()?, df.column("layer")?.u32()?, df.column("neuron")?.u32()?, df.column("mean")?.f64()?);
    let (suffix, l) = (hook.site().map(|s| s.tl_suffix()).unwrap_or(""), hook.layer().unwrap_or(0) as u32);
    neurons
        .iter()
        .map(|&n| {
            (0..df.height())
                .find(|&i| hooks.get(i) == Some(suffix) && layer.get(i) == Some(l) && neuron.get(i) == Some(n as u32))
                .and_then(|i| mean.get(i))
                .map(|m| m as f32)
                .with_context(|| {
                    format!("{} has no statistics of {hook} neuron {n}: add that hook to its `hooks`", dir.display())
                })
        })
        .collect()
}
