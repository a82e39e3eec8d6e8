//! The executor's side of a running stage: what every stage of a run shares (`RunEnv`) and the
//! `StageEnv` of one node (`NodeEnv`), through which a stage reaches models, token rows, the
//! artifacts of its inputs, progress and cancellation.

use super::models::ModelCache;
use crate::data::{DatasetSpec, Tokenized};
use crate::experiment::Validated;
use crate::fingerprint::Fingerprints;
use crate::model::Model;
use crate::spec::{DatasetRef, ModelRef, StageRef};
use crate::stages::{Part, StageEnv, StageSpec};
use crate::store::Store;
use crate::util::{Cancel, Progress, Reporter};
use anyhow::{anyhow, Context, Result};
use polars::prelude::DataFrame;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Shared by every stage of one run.
pub struct RunEnv<'a> {
    pub v: &'a Validated,
    pub fps: &'a Fingerprints,
    pub store: &'a Store,
    pub models: &'a ModelCache,
    pub cancel: &'a Cancel,
    pub reporter: &'a dyn Reporter,
}

impl RunEnv<'_> {
    /// The artifact folder of a finished node, by name.
    pub fn node_dir(&self, name: &str) -> Result<PathBuf> {
        let ix = self.v.plan.find(name).ok_or_else(|| anyhow!("unknown stage '{name}'"))?;
        let fp = self.fps.nodes[&ix].as_ref().map_err(|e| anyhow!("{e}"))?;
        self.store.entry_dir(fp)
    }

    /// The model folder a `train` stage wrote for one seed.
    pub fn trained_dir(&self, stage: &str, seed: u64) -> Result<PathBuf> {
        Ok(self.node_dir(&Part::Seed(seed).node_name(stage))?.join("model"))
    }

    pub fn model(&self, name: &str) -> Result<Arc<Model>> {
        let fp = self
            .fps
            .models
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("model '{name}' not resolved")))
            .map_err(|e| anyhow!("model '{name}': {e}"))?;
        let resolved = self.v.models.get(name).ok_or_else(|| anyhow!("unknown model '{name}'"))?;
        self.models.get(&fp, || resolved.files(|s, seed| self.trained_dir(s, seed)), resolved.processing)
    }
}

/// The environment of one running node.
pub struct NodeEnv<'a> {
    pub run: &'a RunEnv<'a>,
    pub name: String,
    pub out: PathBuf,
    /// The stage whose part this node is (for `part`).
    pub stage: Option<String>,
    pub cancel: Cancel,
    pub base_dir: PathBuf,
}

impl StageEnv for NodeEnv<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn out(&self) -> &Path {
        &self.out
    }

    fn seed(&self) -> u64 {
        self.run.v.exp.meta.seed
    }

    fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    fn model(&self, model: &ModelRef) -> Result<Arc<Model>> {
        self.run.model(model.name())
    }

    fn tokens(&self, dataset: &DatasetRef, model: &ModelRef) -> Result<Tokenized> {
        let name = format!("{}@{}", dataset.name(), model.name());
        let dir = self.run.node_dir(&name)?;
        Tokenized::load(&dir).with_context(|| format!("cannot read the tokens of {name}"))
    }

    fn dataset(&self, name: &str) -> Result<&DatasetSpec> {
        self.run.v.exp.datasets.get(name).map(|d| &d.value).ok_or_else(|| anyhow!("unknown dataset '{name}'"))
    }

    fn stage_spec(&self, name: &str) -> Option<&StageSpec> {
        self.run.v.exp.stages.get(name).map(|s| &s.value)
    }

    fn input(&self, stage: &StageRef) -> Result<PathBuf> {
        self.run.node_dir(stage.name())
    }

    fn part(&self, part: Part) -> Result<PathBuf> {
        let stage = self.stage.as_deref().unwrap_or(&self.name);
        self.run.node_dir(&part.node_name(stage))
    }

    fn progress(&self, total: u64, unit: &str) -> Progress {
        Progress::new(self.run.reporter, &self.name, total, unit, self.cancel.clone())
    }

    fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    fn write_table(&self, name: &str, df: &mut DataFrame) -> Result<()> {
        let stage = self.stage.as_deref().unwrap_or(&self.name);
        if let Some(spec) = self.run.v.exp.stages.get(stage) {
            let decls = spec.value.stage().tables();
            let checked = match decls.iter().find(|d| d.name == name) {
                Some(d) => d.complete(df).and_then(|()| d.check(df)),
                // A part's own tables are partial states its stage gathers.
                None if self.stage.is_some() => Ok(()),
                None => Err(anyhow!("table '{name}' is not declared")),
            };
            checked.with_context(|| {
                format!("stage '{stage}' ({}) wrote a table unlike its declaration", spec.value.kind())
            })?;
        }
        crate::store::table::write_both(&self.out, name, df)
    }
}
