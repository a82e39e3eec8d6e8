//! Where an experiment's model comes from: a folder, a hub repository, or a `train` stage's output
//! (whose folder is known only at run time), with the weight processing to apply.

use super::{ModelFiles, Processing};
use anyhow::Result;
use std::path::PathBuf;

/// Where a model's files are.
#[derive(Clone, Debug)]
pub enum ModelSource {
    Folder(PathBuf),
    Hub {
        name: String,
        revision: Option<String>,
    },
    /// Trained by a `train` stage (its artifact folder is resolved at run time).
    Trained {
        stage: String,
        seed: u64,
    },
}

#[derive(Clone, Debug)]
pub struct ResolvedModel {
    pub source: ModelSource,
    pub processing: Processing,
}

impl ResolvedModel {
    /// Locate the files (hub models through the cache, downloading when online); `trained_dir`
    /// gives the folder a train stage wrote for a seed.
    pub fn files(&self, trained_dir: impl Fn(&str, u64) -> Result<PathBuf>) -> Result<ModelFiles> {
        match &self.source {
            ModelSource::Folder(p) => ModelFiles::from_folder(p),
            ModelSource::Hub { name, revision } => ModelFiles::from_hub(name, revision.as_deref()),
            ModelSource::Trained { stage, seed } => ModelFiles::from_folder(&trained_dir(stage, *seed)?),
        }
    }

    /// The files without downloading anything (hub models must be in the cache).
    pub fn files_offline(&self, trained_dir: impl Fn(&str, u64) -> Result<PathBuf>) -> Result<ModelFiles> {
        match &self.source {
            ModelSource::Hub { name, revision } => ModelFiles::from_hub_offline(name, revision.as_deref()),
            _ => self.files(trained_dir),
        }
    }
}
