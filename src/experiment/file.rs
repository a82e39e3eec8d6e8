//! The experiment file's sections as types: `[experiment]`, `[models.NAME]`, `[datasets.NAME]`,
//! `[stages.NAME]`, `[plots.NAME]`. The JSON Schema is derived from these.

use super::document::Matrices;
use crate::data::DatasetSpec;
use crate::model::Processing;
use crate::spec::{Sources, Sp, StageRef};
use crate::stages::{PlotStage, StageSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[experiment]`
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    /// Name of the output folder `OUT/<name>/`.
    pub name: Sp<String>,
    /// Seed of every stage that draws random numbers (a stage may override it).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub description: String,
    /// Files whose models, datasets, stages and plots are merged into this one (paths relative to
    /// this file; also allowed as `include = […]` at the top of the file).
    #[serde(default, skip_serializing)]
    pub include: Vec<String>,
    /// `cpu` (default) or `cuda` / `cuda:N` (needs the `cuda` build feature).
    #[serde(default)]
    pub device: Option<Sp<String>>,
    /// Stages and plots shown first in the report, under "Results" (default: the last stage of
    /// each branch and its plots).
    #[serde(default)]
    pub highlights: Vec<Sp<String>>,
}

/// Where models run: `cpu`, or a CUDA GPU by ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl ExperimentMeta {
    /// The device the experiment names (`cpu` when none); `None` when it names no device.
    pub fn device(&self) -> Option<DeviceSpec> {
        match self.device.as_ref().map(|d| d.value.as_str()) {
            None | Some("cpu") => Some(DeviceSpec::Cpu),
            Some("cuda") => Some(DeviceSpec::Cuda(0)),
            Some(d) => d.strip_prefix("cuda:")?.parse().ok().map(DeviceSpec::Cuda),
        }
    }
}

/// Weight processing: a name (`default`, `none`, `default+refactor`) or the switches one by one.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProcessingSpec {
    Named(String),
    Custom(Processing),
}

impl Default for ProcessingSpec {
    fn default() -> Self {
        ProcessingSpec::Named("default".into())
    }
}

/// `[models.NAME]`: exactly one of `hub`, `path`, `train`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A Hugging Face repository (`EleutherAI/pythia-70m`) or a TransformerLens alias (`gpt2-small`).
    #[serde(default)]
    pub hub: Option<Sp<String>>,
    /// Hub revision (branch, tag or commit); default `main`.
    #[serde(default)]
    pub revision: Option<String>,
    /// A folder in Hugging Face layout (config.json, model.safetensors, tokenizer.json).
    #[serde(default)]
    pub path: Option<Sp<String>>,
    /// A `train` stage whose trained model this is.
    #[serde(default)]
    pub train: Option<StageRef>,
    /// Which trained seed of a `train` stage with several `seeds`.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub processing: ProcessingSpec,
}

/// A lantern experiment file: models, datasets, stages and plots. (This type gives the JSON Schema;
/// parsing goes section by section so that every error is reported.)
#[derive(JsonSchema)]
#[allow(dead_code)]
#[schemars(title = "lantern experiment file")]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    experiment: ExperimentMeta,
    /// Files whose models, datasets, stages and plots are merged into this one (paths relative to
    /// this file; a name defined twice is an error).
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    datasets: BTreeMap<String, DatasetSpec>,
    #[serde(default)]
    stages: BTreeMap<String, StageSpec>,
    #[serde(default)]
    plots: BTreeMap<String, PlotStage>,
    /// Resources of the jobs `lantern run --executor slurm` submits.
    slurm: Option<super::slurm::SlurmSchema>,
}

/// A parsed experiment file (not yet validated against models and references).
#[derive(Clone, Debug)]
pub struct Experiment {
    pub file: std::path::PathBuf,
    /// The file, what it includes and the `--set` arguments: every span is a range of its text.
    pub sources: Sources,
    /// The entries a `matrix` expanded, and their expansions.
    pub matrices: Matrices,
    pub meta: ExperimentMeta,
    pub models: BTreeMap<String, Sp<ModelSpec>>,
    pub datasets: BTreeMap<String, Sp<DatasetSpec>>,
    pub stages: BTreeMap<String, Sp<StageSpec>>,
    pub plots: BTreeMap<String, Sp<PlotStage>>,
    /// Entries that did not decode (already reported): references to them are not errors.
    pub undecoded: std::collections::BTreeSet<String>,
    pub slurm: super::slurm::SlurmTable,
}

impl Experiment {
    /// The folder relative paths resolve against.
    pub fn base_dir(&self) -> std::path::PathBuf {
        self.file.parent().map(|p| p.to_path_buf()).unwrap_or_default()
    }
}
