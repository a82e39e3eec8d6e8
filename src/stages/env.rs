//! What a running stage can reach, as a trait the executor implements: its output folder, models and
//! token rows, the artifacts of the stages it reads, its seed, progress and cancellation.

use super::{Kind, Part, StageSpec};
use crate::data::{DatasetSpec, Tokenized};
use crate::model::Model;
use crate::spec::{DatasetRef, ModelRef, StageRef};
use crate::util::{Cancel, Progress};
use anyhow::{anyhow, Result};
use polars::prelude::DataFrame;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment of one running stage.
pub trait StageEnv {
    /// The plan node's name (`acts`, `lm@1`, `corr@shard-2-of-8`).
    fn name(&self) -> &str;
    /// The folder to write this stage's artifacts into (a fresh temporary folder).
    fn out(&self) -> &Path;
    /// The experiment's seed.
    fn seed(&self) -> u64;

    /// A seed for this stage's own random draws: the experiment's seed mixed with the stage's
    /// name (without its part), so that two stages draw independently and the parts of one
    /// stage draw the same.
    fn stage_seed(&self) -> u64 {
        let stage = self.name().split('@').next().unwrap_or_default();
        let h = blake3::hash(stage.as_bytes());
        self.seed() ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
    /// The folder relative paths of the experiment file resolve against.
    fn base_dir(&self) -> &Path;
    /// A loaded model (shared with the other stages of the run).
    fn model(&self, model: &ModelRef) -> Result<Arc<Model>>;
    /// The token rows of a dataset tokenized for a model (the artifact of its tokenize node).
    fn tokens(&self, dataset: &DatasetRef, model: &ModelRef) -> Result<Tokenized>;
    /// A dataset's spec by name.
    fn dataset(&self, name: &str) -> Result<&DatasetSpec>;
    /// A stage's spec by name.
    fn stage_spec(&self, name: &str) -> Option<&StageSpec>;
    /// The artifact folder of a stage this stage reads.
    fn input(&self, stage: &StageRef) -> Result<PathBuf>;
    /// The artifact folder of one of this stage's own parts (when gathering them).
    fn part(&self, part: Part) -> Result<PathBuf>;
    /// A progress report for `total` units of work; its `tick` stops on Ctrl-C.
    fn progress(&self, total: u64, unit: &str) -> Progress;
    /// The run's cancellation token, for work that reports progress its own way.
    fn cancel(&self) -> &Cancel;

    /// Write a table as Parquet and CSV into the output folder, atomically, after checking it
    /// against the stage's declaration (`Stage::tables`).
    fn write_table(&self, name: &str, df: &mut DataFrame) -> Result<()>;
}

impl dyn StageEnv + '_ {
    /// The spec of a stage this stage reads, which validation checked is of kind `T`.
    pub fn input_spec<T: Kind>(&self, stage: &StageRef) -> Result<&T> {
        self.stage_spec(stage.name())
            .and_then(T::of)
            .ok_or_else(|| anyhow!("'{}' is not a {} stage", stage.name(), T::KIND))
    }
}
