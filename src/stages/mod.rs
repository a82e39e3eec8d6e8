//! Stage kinds, one file each, behind one `Stage` trait: what a stage reads (its dependencies),
//! what it checks before anything runs, and how it computes its artifacts.

pub mod ablation;
pub mod activations;
pub mod attention_deactivation;
pub mod contrast;
pub mod correlation;
pub mod direct_effect;
pub mod entropy;
pub mod explain;
pub mod intervention;
pub mod logit_lens;
pub mod neuron_table;
pub mod patching;
pub mod plot;
pub mod prediction_neurons;
pub mod select;
pub mod tokenize;
pub mod train;
pub mod universal;
pub mod viewer;
pub mod vocab_projection;
pub mod weights;

use crate::exec::RunCx;
use crate::spec::{CheckCx, DatasetRef, Diagnostic, ModelRef, StageRef};
use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;

pub use plot::PlotStage;

/// One node of a stage that fans out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Seed(u64),
    /// Shard `index` of `count` (0-based) of the stage's dataset.
    Shard {
        index: usize,
        count: usize,
    },
}

impl Part {
    /// The plan node's name: `stage@seed`, `stage@shard-i-of-n` (1-based, as `--shard i/n`).
    pub fn node_name(&self, stage: &str) -> String {
        match self {
            Part::Seed(s) => format!("{stage}@{s}"),
            Part::Shard { index, count } => format!("{stage}@shard-{}-of-{count}", index + 1),
        }
    }
}

/// Something a stage reads.
pub enum Dep<'a> {
    Model(&'a ModelRef),
    /// The token rows of a dataset, tokenized for a model.
    Tokens {
        dataset: &'a DatasetRef,
        model: &'a ModelRef,
    },
    /// Another stage's artifacts.
    Stage(&'a StageRef),
    /// A dataset's raw text (read by the stage itself).
    Dataset(&'a DatasetRef),
}

pub trait Stage {
    /// What this stage reads; references become edges of the plan.
    fn deps(&self) -> Vec<Dep<'_>>;
    /// Checks that need model configurations (hook names, layer and neuron ranges).
    fn check(&self, _cx: &CheckCx, _out: &mut Vec<Diagnostic>) {}
    /// Compute the artifacts into `cx.out()`.
    fn run(&self, cx: &mut RunCx) -> Result<()>;
    /// The tables (Parquet files, without extension) it writes, for plots to name.
    fn tables(&self) -> Vec<&'static str> {
        vec![]
    }
    /// Files the stage reads itself (relative to the experiment file); their contents are part
    /// of its fingerprint.
    fn files(&self) -> Vec<&str> {
        vec![]
    }
    /// Whether the stage draws random numbers (then the experiment's seed is part of its fingerprint).
    fn uses_seed(&self) -> bool {
        false
    }
    /// The parts a stage fans out into, one plan node each (train: one per seed; correlation: one
    /// per shard); the stage's own node then gathers them.
    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        vec![]
    }
    /// Compute one part into `cx.out()`.
    fn run_part(&self, _cx: &mut RunCx, part: Part) -> Result<()> {
        anyhow::bail!("this stage has no part {part:?}")
    }
    /// For stages that make models: the configuration of what they make.
    fn trained_config(&self) -> Option<crate::model::ModelConfig> {
        None
    }
}

/// Declares the stage kinds: the tagged enum (for the schema and fingerprints), its decoding by
/// `kind`, and the list of kind names.
macro_rules! stage_kinds {
    ($($variant:ident($ty:ty) = $kind:literal),* $(,)?) => {
        /// `[stages.NAME]`: a `kind` and that kind's fields.
        #[derive(Clone, Debug, Serialize, JsonSchema)]
        #[serde(tag = "kind")]
        pub enum StageSpec {
            $(#[serde(rename = $kind)] $variant($ty),)*
        }

        pub const STAGE_KINDS: &[&str] = &[$($kind),*];

        impl StageSpec {
            /// Decode the fields of a stage of kind `kind`; `Err(None)` for an unknown kind.
            pub fn decode<'de, D: serde::Deserializer<'de, Error = toml::de::Error>>(kind: &str, de: D) -> Result<StageSpec, Option<toml::de::Error>> {
                match kind {
                    $($kind => <$ty as serde::Deserialize>::deserialize(de).map(StageSpec::$variant).map_err(Some),)*
                    _ => Err(None),
                }
            }
            pub fn kind(&self) -> &'static str {
                match self { $(StageSpec::$variant(_) => $kind,)* }
            }
            pub fn stage(&self) -> &dyn Stage {
                match self { $(StageSpec::$variant(s) => s,)* }
            }
            /// The configuration of the model a `train` stage makes (None for other kinds).
            pub fn trained_config(&self) -> Option<crate::model::ModelConfig> {
                self.stage().trained_config()
            }
        }
    };
}

stage_kinds! {
    Ablation(ablation::Spec) = "ablation",
    Activations(activations::Spec) = "activations",
    AttentionDeactivation(attention_deactivation::Spec) = "attention_deactivation",
    Contrast(contrast::Spec) = "contrast",
    Correlation(correlation::Spec) = "correlation",
    DirectEffect(direct_effect::Spec) = "direct_effect",
    Entropy(entropy::Spec) = "entropy",
    Explain(explain::Spec) = "explain",
    LogitLens(logit_lens::Spec) = "logit_lens",
    NeuronTable(neuron_table::Spec) = "neuron_table",
    Patching(patching::Spec) = "patching",
    PredictionNeurons(prediction_neurons::Spec) = "prediction_neurons",
    Train(train::Spec) = "train",
    Universal(universal::Spec) = "universal",
    Viewer(viewer::Spec) = "viewer",
    VocabProjection(vocab_projection::Spec) = "vocab_projection",
    Weights(weights::Spec) = "weights",
}
