//! Stage kinds, one file each, behind one `Stage` trait: what a stage declares (what it reads, what
//! it checks before anything runs, the tables it writes, the parts it fans out into) and how it
//! computes its artifacts through a `StageEnv` the executor provides. Beside them, the toolkit they
//! share: the check context, the environment, token batches, neuron selection, interventions.
//!
//! A new kind needs its file, one line in `stage_kinds!` below, the regenerated schema
//! (`lantern schema > schemas/experiment.schema.json`) and a row in the README (see CONTRIBUTING.md).

pub mod batches;
pub mod check;
pub mod cost;
pub mod env;
pub mod intervention;
pub mod plot;
pub mod select;
pub mod shards;
pub mod tables;
pub mod tokenize;

pub use check::CheckCx;
pub use cost::{Cost, CostCx, Passes};
pub use env::StageEnv;
pub use plot::PlotStage;
pub use tables::TableDecl;

use crate::model::ModelConfig;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, StageRef};
use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;

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
            Part::Shard { index, count } => shard_node_name(stage, index + 1, *count),
        }
    }
}

/// The plan node of shard `number` (1-based, or a placeholder) of `count` of a stage.
pub fn shard_node_name(stage: &str, number: impl std::fmt::Display, count: usize) -> String {
    format!("{stage}@shard-{number}-of-{count}")
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

/// How a table's rows rank: the column and direction that put its most interesting rows first
/// (the report sorts each table by it and says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranking {
    pub column: &'static str,
    pub descending: bool,
}

impl Ranking {
    /// Largest first.
    pub const fn desc(column: &'static str) -> Ranking {
        Ranking { column, descending: true }
    }
}

pub trait Stage {
    /// What this stage reads; references become edges of the plan.
    fn deps(&self) -> Vec<Dep<'_>>;
    /// Checks before anything runs (hook names, layer and neuron ranges, the kinds of the stages
    /// it reads), against the model configurations known offline.
    fn check(&self, _cx: &CheckCx, _out: &mut Vec<Diagnostic>) {}
    /// Compute the artifacts into `env.out()`.
    fn run(&self, env: &mut dyn StageEnv) -> Result<()>;
    /// The tables it writes (`NAME.parquet` and `NAME.csv`) with their columns, for `validate` to
    /// check what plots and selectors name; each written table is checked against it.
    fn tables(&self) -> Vec<TableDecl> {
        vec![]
    }
    /// The ranking of one of its tables, when the table has an obvious one.
    fn ranking(&self, _table: &str) -> Option<Ranking> {
        None
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
    /// Compute one part into `env.out()`.
    fn run_part(&self, _env: &mut dyn StageEnv, part: Part) -> Result<()> {
        anyhow::bail!("this stage has no part {part:?}")
    }
    /// Its work, estimated before it runs (`lantern plan --cost`); none for stages that only read
    /// and join tables.
    fn cost(&self, _cx: &CostCx) -> Cost {
        Cost::default()
    }
    /// For stages that make models: the configuration of what they make.
    fn trained_config(&self) -> Option<ModelConfig> {
        None
    }
}

/// A stage kind: the type behind one `kind = "…"`, so that a stage can ask for another stage of a
/// given kind by type (`cx.stage::<activations::Spec>(…)`).
pub trait Kind: Stage + Sized + 'static {
    /// The `kind` name in experiment files.
    const KIND: &'static str;
    /// This kind's spec, when `spec` is of this kind.
    fn of(spec: &StageSpec) -> Option<&Self>;
}

/// Declares the stage kinds: the tagged enum (for the schema and fingerprints), its decoding by
/// `kind`, and the list of kind names.
macro_rules! stage_kinds {
    ($($variant:ident($module:ident) = $kind:literal),* $(,)?) => {
        $(pub mod $module;)*

        /// `[stages.NAME]`: a `kind` and that kind's fields.
        #[derive(Clone, Debug, Serialize, JsonSchema)]
        #[serde(tag = "kind")]
        pub enum StageSpec {
            $(#[serde(rename = $kind)] $variant($module::Spec),)*
        }

        pub const STAGE_KINDS: &[&str] = &[$($kind),*];

        /// Each kind's implementation version (its file's `VERSION`).
        pub const KIND_VERSIONS: &[(&str, u32)] = &[$(($kind, $module::VERSION)),*];

        impl StageSpec {
            /// Decode the fields of a stage of kind `kind`; `Err(None)` for an unknown kind.
            pub fn decode<'de, D: serde::Deserializer<'de, Error = toml::de::Error>>(kind: &str, de: D) -> Result<StageSpec, Option<toml::de::Error>> {
                match kind {
                    $($kind => <$module::Spec as serde::Deserialize>::deserialize(de).map(StageSpec::$variant).map_err(Some),)*
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
            pub fn trained_config(&self) -> Option<ModelConfig> {
                self.stage().trained_config()
            }
        }

        $(impl Kind for $module::Spec {
            const KIND: &'static str = $kind;
            fn of(spec: &StageSpec) -> Option<&Self> {
                match spec {
                    StageSpec::$variant(s) => Some(s),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        })*
    };
}

stage_kinds! {
    Ablation(ablation) = "ablation",
    Activations(activations) = "activations",
    AttentionDeactivation(attention_deactivation) = "attention_deactivation",
    Contrast(contrast) = "contrast",
    Correlation(correlation) = "correlation",
    DirectEffect(direct_effect) = "direct_effect",
    Entropy(entropy) = "entropy",
    Explain(explain) = "explain",
    LogitLens(logit_lens) = "logit_lens",
    NeuronPrediction(neuron_prediction) = "neuron_prediction",
    NeuronTable(neuron_table) = "neuron_table",
    Patching(patching) = "patching",
    PredictionNeurons(prediction_neurons) = "prediction_neurons",
    Train(train) = "train",
    Universal(universal) = "universal",
    Viewer(viewer) = "viewer",
    VocabProjection(vocab_projection) = "vocab_projection",
    Weights(weights) = "weights",
}
