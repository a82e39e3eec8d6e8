//! Reading checkpoint tensors (memory-mapped safetensors, possibly sharded, or PyTorch zip pickles) as f32.

use super::pickle::PthFile;
use super::source::{ModelFiles, WeightFormat};
use anyhow::{Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// Parameters by TransformerLens name (`blocks.0.attn.W_Q`, `unembed.W_U`, …) in TL layout.
pub type Params = BTreeMap<String, Tensor>;

/// An open checkpoint; tensors are read one at a time so the file is never copied whole.
pub enum Checkpoint {
    Safetensors(MmapedSafetensors, Vec<String>),
    Pickle(Vec<PthFile>),
}

impl Checkpoint {
    pub fn open(files: &ModelFiles) -> Result<Checkpoint> {
        match files.format {
            WeightFormat::Safetensors => {
                // SAFETY: weight files are not modified while a model loads (the tensors are copied).
                let st = unsafe { MmapedSafetensors::multi(&files.weights) }
                    .with_context(|| format!("cannot read safetensors of {}", files.origin))?;
                let names = st.tensors().into_iter().map(|(n, _)| n).collect();
                Ok(Checkpoint::Safetensors(st, names))
            }
            WeightFormat::Pickle => {
                let mut parts = Vec::new();
                for f in &files.weights {
                    parts.push(PthFile::open(f).with_context(|| {
                        format!(
                            "cannot read PyTorch checkpoint {} (only the zip format of torch >= 1.6 is supported)",
                            f.display()
                        )
                    })?);
                }
                Ok(Checkpoint::Pickle(parts))
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        match self {
            Checkpoint::Safetensors(_, names) => names.iter().any(|n| n == name),
            Checkpoint::Pickle(parts) => parts.iter().any(|p| p.has(name)),
        }
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            Checkpoint::Safetensors(_, names) => names.clone(),
            Checkpoint::Pickle(parts) => parts.iter().flat_map(|p| p.names().cloned()).collect(),
        }
    }

    /// A tensor as f32 on `dev`.
    pub fn get(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let t = match self {
            Checkpoint::Safetensors(st, _) => st.load(name, dev)?,
            Checkpoint::Pickle(parts) => {
                let mut found = None;
                for p in parts {
                    if let Some(t) = p.get(name, dev)? {
                        found = Some(t);
                        break;
                    }
                }
                found.with_context(|| format!("checkpoint has no tensor '{name}'"))?
            }
        };
        Ok(t.to_dtype(DType::F32)?)
    }
}
