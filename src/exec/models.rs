//! Models during a run: a small cache of loaded models (at most two in memory) shared by the stages.

use crate::model::{Model, ModelFiles, Processing};
use anyhow::{Context, Result};
use candle_core::Device;
use std::sync::{Arc, Mutex};

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
