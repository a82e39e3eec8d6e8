//! `direct_effect` stage (the German-neuron study's path patching): a neuron forced to an active and
//! an inactive value while downstream components are frozen to their values from another run;
//! losses of each run, with the study's names and the standard mediation names side by side.
//! Losses are summed exactly, so shards (`shards = N`) merge bit for bit.

use super::intervention::{means, SetValue};
use super::batches::for_each_batch;
use super::shards::{self, Partial, Sharded};
use super::{TableDecl, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::effects::{context_effect, direct_effect, Force};
use crate::model::hooks::HookPoint;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp, StageRef};
use crate::stats::exact::{self, Exact};
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::table::Table;
use anyhow::{bail, Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

/// Which decomposition.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `get_direct_effect`: original, ablated, direct (frozen from ablated), only through `patched`.
    Direct,
    /// `get_context_effect`: original, ablated, direct and indirect over the whole text.
    Context,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// The neuron's hook with its layer, e.g. `blocks.3.mlp.hook_post`.
    pub hook: Sp<String>,
    pub neuron: Sp<usize>,
    pub active: SetValue,
    pub inactive: SetValue,
    /// Components frozen to the other run's values (`blocks.4.hook_attn_out`, …).
    #[serde(default)]
    pub frozen: Vec<Sp<String>>,
    /// Components whose output is patched from the direct run (direct mode).
    #[serde(default)]
    pub patched: Vec<Sp<String>>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Loss at this position only (negative from the end); default: mean over valid positions.
    #[serde(default)]
    pub position: Option<i64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "shards::one", skip_serializing_if = "shards::is_one")]
    pub shards: usize,
}

fn default_mode() -> Mode {
    Mode::Direct
}
fn default_batch() -> usize {
    8
}

impl Spec {
    fn value(&self, v: &SetValue, hook: HookPoint, cx: &dyn StageEnv) -> Result<f32> {
        match (&v.value, &v.mean_of) {
            (Some(x), _) => Ok(*x),
            (_, Some(m)) => Ok(means(&cx.input(m)?, hook, &[self.neuron.value])?[0]),
            _ => bail!("active / inactive need `value` or `mean_of`"),
        }
    }

    fn refs(&self) -> impl Iterator<Item = &StageRef> {
        [&self.active, &self.inactive].into_iter().filter_map(|s| s.mean_of.as_ref())
    }
}

fn names(mode: Mode) -> [(&'static str, &'static str, &'static str); 4] {
    match mode {
        Mode::Direct => [
            ("original", "original (neuron active)", "baseline"),
            ("ablated", "ablated", "total effect"),
            ("direct", "context_and_activated", "direct path + patched components"),
            ("only_patched", "only_activated (patched components)", "effect through the patched components only"),
        ],
        Mode::Context => [
            ("original", "original", "baseline"),
            ("ablated", "ablated", "total effect"),
            ("direct", "Direct effect", "natural indirect effect (through the frozen components)"),
            ("indirect", "Indirect effect", "natural direct effect"),
        ],
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }];
        d.extend(self.refs().map(Dep::Stage));
        d
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("effects").texts(["run", "study_name", "mediation"]).floats(["loss", "delta", "change_pct", "active", "inactive"]),
        ]
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        shards::run_part(self, cx, part)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // Original, ablated, and the two path-patched runs.
        cx.passes(&self.model, &self.dataset, Passes::logits(4.0, self.batch_size)).shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        let Some(cfg) = cx.config(&self.model) else { return };
        for h in std::iter::once(&self.hook).chain(&self.frozen).chain(&self.patched) {
            match HookPoint::parse(h) {
                Some(p) if p.exists_in(cfg) => {}
                Some(p) if p.layer().is_some_and(|l| l >= cfg.n_layers) => out.push(Diagnostic::at(
                    h.span.clone(),
                    format!("layer {} out of range: the model has {} layers", p.layer().unwrap_or(0), cfg.n_layers),
                )),
                _ => out.push(Diagnostic::at(
                    h.span.clone(),
                    format!("unknown hook '{}' (write it with its layer: blocks.4.hook_attn_out)", h.value),
                )),
            }
        }
        if self.neuron.value >= cfg.d_mlp {
            out.push(Diagnostic::at(
                self.neuron.span.clone(),
                format!("neuron {} out of range: there are {} (0..={})", self.neuron.value, cfg.d_mlp, cfg.d_mlp - 1),
            ));
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        shards::run(self, cx)
    }
}

/// Loss sums of the four runs over some rows, and their token counts.
pub struct RunLosses([(Exact, u64); 4]);

impl Partial for RunLosses {
    fn save(&self, out: &mut Arrays) {
        exact::put(out, "sum", &self.0.map(|r| r.0));
        out.put("tokens", &self.0.map(|r| r.1));
    }

    fn load(f: &ArraysFile) -> Result<RunLosses> {
        let (sums, tokens) = (exact::get(f, "sum")?, f.get::<u64>("tokens")?);
        shards::same_len("runs", sums.len(), 4)?;
        shards::same_len("runs", tokens.len(), 4)?;
        Ok(RunLosses(std::array::from_fn(|i| (sums[i], tokens[i]))))
    }

    fn merge(&mut self, o: RunLosses) -> Result<()> {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            a.0.merge(&b.0);
            a.1 += b.1;
        }
        Ok(())
    }
}

impl Spec {
    fn force(&self, cx: &dyn StageEnv) -> Result<Force> {
        let hook = HookPoint::parse(&self.hook).context("bad hook")?;
        Ok(Force {
            hook,
            neuron: self.neuron.value,
            active: self.value(&self.active, hook, cx)?,
            inactive: self.value(&self.inactive, hook, cx)?,
        })
    }
}

impl Sharded for Spec {
    type State = RunLosses;

    fn shards(&self) -> usize {
        self.shards
    }

    fn compute(&self, cx: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<RunLosses> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let force = self.force(cx)?;
        let parse = |v: &[Sp<String>]| {
            v.iter()
                .map(|h| HookPoint::parse(h).with_context(|| format!("bad hook {}", h.value)))
                .collect::<Result<Vec<_>>>()
        };
        let (frozen, patched) = (parse(&self.frozen)?, parse(&self.patched)?);
        let ctx = data.ctx;
        let mut sums = RunLosses([(Exact::default(), 0u64); 4]);
        let rows = shards::rows(data.rows, self.batch_size, shard);
        for_each_batch(cx, &data, rows, self.batch_size, &model.device, |batch| {
            let runs: [Vec<f32>; 4] = match self.mode {
                Mode::Direct => {
                    let e = direct_effect(&model, &batch.tokens, force, &frozen, &patched)?;
                    [e.original, e.ablated, e.direct, e.only_patched]
                }
                Mode::Context => {
                    let e = context_effect(&model, &batch.tokens, force, &frozen)?;
                    [e.original, e.ablated, e.direct, e.indirect]
                }
            };
            for r in 0..batch.rows {
                let keep: Vec<usize> = match self.position {
                    Some(p) => {
                        let t = if p < 0 { (ctx as i64 - 1 + p) as usize } else { p as usize };
                        vec![t.min(ctx - 2)]
                    }
                    None => (0..ctx - 1).filter(|&t| batch.target_counts(r * ctx + t)).collect(),
                };
                for (s, l) in runs.iter().enumerate() {
                    for &t in &keep {
                        sums.0[s].0.add(l[r * (ctx - 1) + t] as f64);
                        sums.0[s].1 += 1;
                    }
                }
            }
            Ok(())
        })?;
        Ok(sums)
    }

    fn finish(&self, cx: &mut dyn StageEnv, sums: RunLosses) -> Result<()> {
        let force = self.force(cx)?;
        let loss: Vec<f64> = sums.0.iter().map(|(s, n)| s.get() / (*n).max(1) as f64).collect();
        let n = names(self.mode);
        let mut df = Table::new().with("run", n.iter().map(|x| x.0).collect::<Vec<_>>()).with("study_name", n.iter().map(|x| x.1).collect::<Vec<_>>()).with("mediation", n.iter().map(|x| x.2).collect::<Vec<_>>()).with("loss", loss.clone()).with("delta", loss.iter().map(|l| l - loss[0]).collect::<Vec<_>>()).with("change_pct", loss.iter().map(|l| 100.0 * (l - loss[0]) / loss[0]).collect::<Vec<_>>()).with("active", vec![force.active; 4]).with("inactive", vec![force.inactive; 4]).frame()?;
        cx.write_table("effects", &mut df)
    }
}
