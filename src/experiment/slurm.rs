//! The optional `[slurm]` table of an experiment file: the sbatch resources of `lantern run
//! --executor slurm` (`partition`, `time`, `mem`, `cpus_per_task`, `account`, `sbatch_args`), and
//! the same keys per stage or plot under `[slurm.stages.NAME]`.

use super::document::Matrices;
use crate::spec::{Diagnostic, Sp};
use crate::util::did_you_mean;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an sbatch job asks for; a key left out is left to the cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (Slurm's formats: `MM`, `HH:MM:SS`, `D-HH`…).
    pub time: Option<String>,
    /// `--mem` per node (`16G`, `4000M`).
    pub mem: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--account`.
    pub account: Option<String>,
    /// Further sbatch options, passed as they are (`["--gres=gpu:1", "--qos=long"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
}

impl Resources {
    /// These resources with what `over` sets taking precedence; `sbatch_args` are appended (sbatch
    /// takes the last of a repeated option).
    pub fn then(&self, over: &Resources) -> Resources {
        Resources {
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            cpus_per_task: over.cpus_per_task.or(self.cpus_per_task),
            account: over.account.clone().or_else(|| self.account.clone()),
            sbatch_args: self.sbatch_args.iter().chain(&over.sbatch_args).cloned().collect(),
        }
    }
}

/// The `[slurm]` table: defaults for every job and overrides per stage or plot.
#[derive(Clone, Debug, Default)]
pub struct SlurmTable {
    pub defaults: Resources,
    /// Where `[slurm]` is in the file.
    pub span: std::ops::Range<usize>,
    pub stages: BTreeMap<String, Sp<Resources>>,
}

impl SlurmTable {
    /// The resources of a stage or plot of its own: `[slurm.stages.NAME]`, or that of the entry
    /// with a `matrix` it is an expansion of.
    pub fn of(&self, name: &str, matrices: &Matrices) -> Option<&Resources> {
        let base = || matrices.expanded.iter().find(|(_, names)| names.iter().any(|n| n == name)).map(|((_, b), _)| b);
        self.stages.get(name).or_else(|| self.stages.get(base()?)).map(|r| &r.value)
    }

    /// `[slurm.stages.NAME]` names a stage or plot of the file (or an entry with a `matrix`);
    /// `cpus_per_task` is at least 1.
    pub fn check(&self, names: &[&str], out: &mut Vec<Diagnostic>) {
        let tables =
            std::iter::once((&self.span, &self.defaults)).chain(self.stages.values().map(|r| (&r.span, &r.value)));
        for (span, r) in tables {
            if r.cpus_per_task == Some(0) {
                out.push(Diagnostic::at(span.clone(), "slurm: cpus_per_task must be at least 1"));
            }
        }
        for (name, r) in &self.stages {
            if !names.contains(&name.as_str()) {
                out.push(
                    Diagnostic::at(r.span.clone(), format!("[slurm.stages.{name}]: no stage or plot '{name}'")).help(
                        format!("stages and plots: {}{}", names.join(", "), did_you_mean(name, names.iter().copied())),
                    ),
                );
            }
        }
    }
}

/// The JSON Schema of `[slurm]` (parsing splits `stages` off and reads the rest as `Resources`).
#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct SlurmSchema {
    #[serde(flatten)]
    defaults: Resources,
    /// Resources of one stage or plot (its shards, its merge), over the defaults and the command
    /// line's options.
    #[serde(default)]
    stages: BTreeMap<String, Resources>,
}
