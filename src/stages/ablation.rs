//! `ablation` stage: per-token loss on a dataset, clean and under named intervention sets (zero,
//! constant, mean of another stage's activations, scale, clamp, add, resample). Each batch runs
//! clean once; each set resumes from the clean residual stream entering its first intervened
//! layer. Losses are summed exactly, so shards (`shards = N`) merge bit for bit.

use super::intervention::InterventionSpec;
use super::batches::for_each_batch;
use super::shards::{self, Partial, Sharded};
use super::{TableDecl, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::losses::{first_layer, Rerun};
use crate::model::Intervention;
use crate::spec::{DatasetRef, Diagnostic, ModelRef};
use crate::stats::exact::{self, Exact};
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::table::Table;
use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    pub interventions: Vec<InterventionSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// A single intervention set, named "ablated" …
    #[serde(default)]
    pub interventions: Option<Vec<InterventionSpec>>,
    /// … or several named sets.
    #[serde(default)]
    pub sets: BTreeMap<String, SetSpec>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "shards::one", skip_serializing_if = "shards::is_one")]
    pub shards: usize,
}

fn default_batch() -> usize {
    8
}

impl Spec {
    /// Every (set name, interventions), the single-set shorthand included.
    pub fn all_sets(&self) -> Vec<(&str, &[InterventionSpec])> {
        let mut v: Vec<(&str, &[InterventionSpec])> =
            self.sets.iter().map(|(k, s)| (k.as_str(), s.interventions.as_slice())).collect();
        if let Some(iv) = &self.interventions {
            v.insert(0, ("ablated", iv.as_slice()));
        }
        v
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }];
        for (_, set) in self.all_sets() {
            d.extend(set.iter().flat_map(|i| i.deps()));
        }
        d
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("losses").texts(["set"]).floats(["loss", "delta", "change_pct"]).ints(["tokens"]),
            TableDecl::new("per_document").ints(["doc"]).texts(["label", "set"]).floats(["loss"]).ints(["tokens"]),
        ]
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        shards::run_part(self, cx, part)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // The clean pass and one per set of interventions.
        let sets = self.sets.len().max(usize::from(self.interventions.is_some()));
        cx.passes(&self.model, &self.dataset, Passes::logits(1.0 + sets as f64, self.batch_size)).shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        let sets = self.all_sets();
        if sets.is_empty() {
            out.push(Diagnostic::at(self.model.span(), "ablation needs `interventions` or `sets`"));
        }
        let cfg = cx.config(&self.model);
        for (_, set) in sets {
            for iv in set {
                iv.check(cx, cfg, out);
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        shards::run(self, cx)
    }
}

/// Loss sums over some rows: per set (clean first) the sum and token count, overall and per
/// document.
pub struct Losses {
    total: Vec<(Exact, u64)>,
    per_doc: BTreeMap<(u32, usize), (Exact, u64)>,
}

impl Partial for Losses {
    fn save(&self, out: &mut Arrays) {
        let (docs, sets): (Vec<u32>, Vec<u64>) = self.per_doc.keys().map(|&(d, s)| (d, s as u64)).unzip();
        exact::put(out, "total_sum", &self.total.iter().map(|t| t.0).collect::<Vec<_>>());
        out.put("total_tokens", &self.total.iter().map(|t| t.1).collect::<Vec<_>>())
            .put("doc", &docs)
            .put("doc_set", &sets)
            .put("doc_tokens", &self.per_doc.values().map(|v| v.1).collect::<Vec<_>>());
        exact::put(out, "doc_sum", &self.per_doc.values().map(|v| v.0).collect::<Vec<_>>());
    }

    fn load(f: &ArraysFile) -> Result<Losses> {
        let total = exact::get(f, "total_sum")?.into_iter().zip(f.get::<u64>("total_tokens")?).collect();
        let keys = f.get::<u32>("doc")?.into_iter().zip(f.get::<u64>("doc_set")?.into_iter().map(|s| s as usize));
        let values = exact::get(f, "doc_sum")?.into_iter().zip(f.get::<u64>("doc_tokens")?);
        Ok(Losses { total, per_doc: keys.zip(values).collect() })
    }

    fn merge(&mut self, o: Losses) -> Result<()> {
        shards::same_len("intervention sets", self.total.len(), o.total.len())?;
        for (a, b) in self.total.iter_mut().zip(o.total) {
            a.0.merge(&b.0);
            a.1 += b.1;
        }
        for (k, v) in o.per_doc {
            let e = self.per_doc.entry(k).or_default();
            e.0.merge(&v.0);
            e.1 += v.1;
        }
        Ok(())
    }
}

impl Spec {
    /// Every set's name and resolved interventions, clean first (no interventions).
    fn resolved_sets(&self, cx: &dyn StageEnv) -> Result<Vec<(String, Vec<Intervention>)>> {
        let mut sets = vec![("clean".to_string(), vec![])];
        for (name, specs) in self.all_sets() {
            let iv = specs
                .iter()
                .map(|s| s.resolve(&|r| cx.input(r)))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("set '{name}'"))?;
            sets.push((name.to_string(), iv));
        }
        Ok(sets)
    }
}

impl Sharded for Spec {
    type State = Losses;

    fn shards(&self) -> usize {
        self.shards
    }

    fn compute(&self, cx: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<Losses> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let all = self.resolved_sets(cx)?;
        let sets = &all[1..];
        let starts: Vec<usize> = sets.iter().filter_map(|(_, iv)| first_layer(iv.iter().map(|i| i.hook))).collect();
        let mut sums = Losses { total: vec![(Exact::default(), 0); all.len()], per_doc: BTreeMap::new() };
        let ctx = data.ctx;
        let rows = shards::rows(data.rows, self.batch_size, shard);
        for_each_batch(cx, &data, rows, self.batch_size, &model.device, |batch| {
            let (passes, clean, _) = Rerun::first(&model, &batch.tokens, &[], &[], &starts)?;
            let mut losses = vec![clean];
            for (_, iv) in sets {
                losses.push(passes.run(iv, &[])?.0);
            }
            for r in 0..batch.rows {
                for t in 0..ctx - 1 {
                    let i = r * ctx + t;
                    if !batch.target_counts(i) {
                        continue;
                    }
                    for (s, l) in losses.iter().enumerate() {
                        let x = l[r * (ctx - 1) + t] as f64;
                        sums.total[s].0.add(x);
                        sums.total[s].1 += 1;
                        let e = sums.per_doc.entry((data.doc[batch.index(i) + 1], s)).or_default();
                        e.0.add(x);
                        e.1 += 1;
                    }
                }
            }
            Ok(())
        })?;
        Ok(sums)
    }

    fn finish(&self, cx: &mut dyn StageEnv, sums: Losses) -> Result<()> {
        let data = cx.tokens(&self.dataset, &self.model)?;
        let names: Vec<String> =
            std::iter::once("clean").chain(self.all_sets().into_iter().map(|s| s.0)).map(String::from).collect();
        let total = &sums.total;
        let per_doc = &sums.per_doc;
        anyhow::ensure!(total[0].1 > 0, "no valid positions to compute a loss on");
        let mean = |(s, n): &(Exact, u64)| s.get() / (*n).max(1) as f64;
        let clean = mean(&total[0]);
        let mut losses = Table::new().with("set", names.clone()).with("loss", total.iter().map(mean).collect::<Vec<_>>()).with("delta", total.iter().map(|t| mean(t) - clean).collect::<Vec<_>>()).with("change_pct", total.iter().map(|t| 100.0 * (mean(t) - clean) / clean).collect::<Vec<_>>()).with("tokens", total.iter().map(|t| t.1).collect::<Vec<_>>()).frame()?;
        cx.write_table("losses", &mut losses)?;
        let label = |d: u32| data.doc_labels.get(d as usize).cloned().unwrap_or_default();
        let mut docs = Table::new().with("doc", per_doc.keys().map(|k| (k.0 != u32::MAX).then_some(k.0)).collect::<Vec<_>>()).with("label", per_doc.keys().map(|k| label(k.0)).collect::<Vec<_>>()).with("set", per_doc.keys().map(|k| names[k.1].clone()).collect::<Vec<_>>()).with("loss", per_doc.values().map(mean).collect::<Vec<_>>()).with("tokens", per_doc.values().map(|v| v.1).collect::<Vec<_>>()).frame()?;
        cx.write_table("per_document", &mut docs)
    }
}
