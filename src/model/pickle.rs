//! PyTorch zip checkpoints (`torch.save` of a state dict, torch ≥ 1.6, as NeelNanda's
//! `model_final.pth`): the tensor index read from `data.pkl` with candle's unpickler, each tensor
//! read from its zip entry. Entries of storage types lantern has no use for (the boolean attention
//! mask buffer of a TransformerLens checkpoint) stay out of the index quietly and are named only
//! when asked for.

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// An open checkpoint file: where each tensor is, not the tensors.
pub struct PthFile {
    path: PathBuf,
    infos: BTreeMap<String, TensorInfo>,
    /// Entries that are not readable tensors, with why.
    unreadable: BTreeMap<String, String>,
}

fn archive(path: &Path) -> Result<zip::ZipArchive<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{} is not a zip archive (torch.save of torch ≥ 1.6)", path.display()))
}

impl PthFile {
    pub fn open(path: &Path) -> Result<PthFile> {
        let mut zip = archive(path)?;
        let pickles: Vec<String> =
            zip.file_names().filter_map(|n| n.ok()).filter(|n| n.ends_with("data.pkl")).map(|n| n.into()).collect();
        let (mut infos, mut unreadable) = (BTreeMap::new(), BTreeMap::new());
        for name in pickles {
            let dir = PathBuf::from(name.strip_suffix(".pkl").expect("ends with .pkl"));
            let mut stack = Stack::empty();
            stack
                .read_loop(&mut BufReader::new(zip.by_name(&name)?))
                .with_context(|| format!("{}: {name}", path.display()))?;
            let entries = match stack.finalize()? {
                // A scripted module wraps its state dict.
                Object::Build { callable, args } => match *callable {
                    Object::Reduce { callable, .. } if is_torch_module(&callable) => *args,
                    _ => continue,
                },
                obj => obj,
            };
            let Object::Dict(entries) = entries else { continue };
            for (key, value) in entries {
                let Object::Unicode(k) = &key else { continue };
                let k = k.clone();
                match value.into_tensor_info(key, &dir) {
                    Ok(Some(info)) => {
                        infos.insert(k, info);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        unreadable.insert(k, e.to_string());
                    }
                }
            }
        }
        Ok(PthFile { path: path.to_path_buf(), infos, unreadable })
    }

    /// The names of the readable tensors.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.infos.keys()
    }

    pub fn has(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    /// A tensor in its stored dtype, `None` when the file has no such entry.
    pub fn get(&self, name: &str, dev: &Device) -> Result<Option<Tensor>> {
        let Some(info) = self.infos.get(name) else {
            if let Some(why) = self.unreadable.get(name) {
                bail!("{}: tensor '{name}' cannot be read: {why}", self.path.display());
            }
            return Ok(None);
        };
        let layout = &info.layout;
        let fortran = layout.dims().len() > 1 && layout.is_fortran_contiguous();
        if !layout.is_contiguous() && !fortran {
            bail!("{}: tensor '{name}' is stored strided ({layout:?}), which lantern cannot read", self.path.display());
        }
        let mut zip = archive(&self.path)?;
        let mut entry =
            zip.by_name(&info.path).with_context(|| format!("{}: no entry {}", self.path.display(), info.path))?;
        let size = info.dtype.size_in_bytes();
        std::io::copy(&mut entry.by_ref().take(layout.start_offset() as u64), &mut std::io::sink())?;
        let mut bytes = vec![0u8; layout.shape().elem_count() * size];
        entry
            .read_exact(&mut bytes)
            .with_context(|| format!("{}: tensor '{name}' is truncated", self.path.display()))?;
        let t = if fortran {
            let reversed: Vec<usize> = layout.dims().iter().rev().copied().collect();
            let order: Vec<usize> = (0..reversed.len()).rev().collect();
            Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, dev)?.permute(order)?
        } else {
            Tensor::from_raw_buffer(&bytes, info.dtype, layout.dims(), dev)?
        };
        Ok(Some(t))
    }
}

fn is_torch_module(o: &Object) -> bool {
    matches!(o, Object::Class { module_name, class_name } if module_name == "__torch__" && class_name == "Module")
}
