//! Models during a run: where each named model comes from, and a small cache of loaded models
//! (at most two in memory) shared by the stages.

use crate::model::{Model, ModelFiles, Processing};
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// Locate the files (hub models through the cache, downloading when online).
    pub fn files(&self, trained_dir: impl Fn(&str, u64) -> Result<PathBuf>) -> Result<ModelFiles> {
        match &self.source {
            ModelSource::Folder(p) => ModelFiles::from_folder(p),
            ModelSource::Hub { name, revision } => ModelFiles::from_hub(name, revision.as_deref()),
            ModelSource::Trained { stage, seed } => ModelFiles::from_folder(&trained_dir(stage, *seed)?),
        }
    }
}

/// Loaded models by fingerprint, least recently used evicted beyond `capacity`.
pub struct ModelCache {
    capacity: usize,
    device: Device,
    loaded: Mutex<Vec<(String, Arc<Model>)>>,
}

impl ModelCache {
    pub fn new(device: Device) -> ModelCache {
        ModelCache { capacity: 2, device, loaded: Mutex::new(Vec::new()) }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn get(
        &self,
        fingerprint: &str,
        files: impl FnOnce() -> Result<ModelFiles>,
        processing: Processing,
    ) -> Result<Arc<Model>> {
        let mut loaded = self.loaded.lock().expect("model cache");
        if let Some(i) = loaded.iter().position(|(fp, _)| fp == fingerprint) {
            let m = loaded.remove(i);
            loaded.push(m.clone());
            return Ok(m.1);
        }
        while loaded.len() >= self.capacity {
            loaded.remove(0);
        }
        let files = files()?;
        let model = Arc::new(
            Model::load(&files, processing, &self.device)
                .with_context(|| format!("cannot load model {}", files.origin))?,
        );
        loaded.push((fingerprint.to_string(), model.clone()));
        Ok(model)
    }
}
