//! What a running stage can reach: its output folder, its models and token rows, the artifacts of
//! the stages it reads, its seed, progress reporting and cancellation.

use super::models::ModelCache;
use super::progress::Progress;
use crate::data::Tokenized;
use crate::model::Model;
use crate::plan::fingerprint::{model_files, Fingerprints};
use crate::plan::Plan;
use crate::spec::{DatasetRef, ModelRef, StageRef, Validated};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::DataFrame;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared by every stage of one run.
pub struct RunEnv<'a> {
    pub v: &'a Validated,
    pub plan: &'a Plan,
    pub fps: &'a Fingerprints,
    pub store: &'a Store,
    pub models: &'a ModelCache,
    pub cancel: &'a AtomicBool,
    /// Test hook: fail stage `.0` once it has reported `.1` units of progress.
    pub fail_after: Option<(String, u64)>,
}

impl RunEnv<'_> {
    /// The artifact folder of a finished node, by name.
    pub fn node_dir(&self, name: &str) -> Result<PathBuf> {
        let ix = self.plan.find(name).ok_or_else(|| anyhow!("unknown stage '{name}'"))?;
        let fp = self.fps.nodes[&ix].as_ref().map_err(|e| anyhow!("{e}"))?;
        self.store.entry_dir(fp)
    }

    /// The model folder a `train` stage wrote for one seed.
    pub fn trained_dir(&self, stage: &str, seed: u64) -> Result<PathBuf> {
        Ok(self.node_dir(&crate::stages::train::seed_node(stage, seed))?.join("model"))
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
        self.models.get(
            &fp,
            || match &resolved.source {
                super::models::ModelSource::Hub { .. } => resolved.files(|_, _| unreachable!()),
                _ => model_files(self.v, name, &|s, seed| self.trained_dir(s, seed)),
            },
            resolved.processing,
        )
    }
}

/// The context of one running stage.
pub struct RunCx<'a> {
    pub env: &'a RunEnv<'a>,
    pub name: String,
    pub out: PathBuf,
    progress_done: u64,
}

impl<'a> RunCx<'a> {
    pub fn new(env: &'a RunEnv<'a>, name: &str, out: PathBuf) -> RunCx<'a> {
        RunCx { env, name: name.to_string(), out, progress_done: 0 }
    }

    /// The folder to write this stage's artifacts into.
    pub fn out(&self) -> &Path {
        &self.out
    }

    pub fn seed(&self) -> u64 {
        self.env.v.exp.meta.seed
    }

    pub fn base_dir(&self) -> PathBuf {
        self.env.v.exp.base_dir()
    }

    pub fn model(&self, r: &ModelRef) -> Result<Arc<Model>> {
        self.env.model(r.name())
    }

    /// Token rows of a dataset tokenized for a model (the artifact of its tokenize node).
    pub fn tokens(&self, dataset: &DatasetRef, model: &ModelRef) -> Result<Tokenized> {
        let name = format!("{}@{}", dataset.name(), model.name());
        let dir = self.env.node_dir(&name)?;
        Tokenized::load(&dir).with_context(|| format!("cannot read the tokens of {name}"))
    }

    /// The artifact folder of a stage this stage reads.
    pub fn input(&self, r: &StageRef) -> Result<PathBuf> {
        self.env.node_dir(r.name())
    }

    /// The kind of a stage this stage reads.
    pub fn input_kind(&self, r: &StageRef) -> &'static str {
        self.env.v.exp.stages.get(r.name()).map(|s| s.value.kind()).unwrap_or("?")
    }

    pub fn progress(&self, total: u64, unit: &str) -> Progress {
        Progress::new(&self.name, total, unit)
    }

    /// Call between units of work: stops on Ctrl-C (and on an injected test failure).
    pub fn tick(&mut self, progress: &mut Progress, units: u64) -> Result<()> {
        progress.inc(units);
        self.progress_done += units;
        if self.env.cancel.load(Ordering::SeqCst) {
            bail!(Interrupted);
        }
        if let Some((stage, after)) = &self.env.fail_after {
            if *stage == self.name && self.progress_done >= *after {
                bail!("injected failure after {} units", self.progress_done);
            }
        }
        Ok(())
    }

    /// Write a table as Parquet (and CSV when `csv`), atomically.
    pub fn write_table(&self, name: &str, df: &mut DataFrame, csv: bool) -> Result<()> {
        crate::store::table::write(&self.out.join(format!("{name}.parquet")), df)?;
        if csv {
            crate::store::table::write_csv(&self.out.join(format!("{name}.csv")), df)?;
        }
        Ok(())
    }
}

/// The error a stage returns when the run was interrupted (Ctrl-C).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}
