//! Safetensors files too large to hold in memory: the header is laid out up front, the data
//! written piece by piece at offsets, and read back through a memory map.

use anyhow::{anyhow, bail, Context, Result};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn dtype_size(d: Dtype) -> usize {
    d.bitsize() / 8
}

/// A safetensors file whose tensors are written in pieces.
pub struct TensorFileWriter {
    file: File,
    /// Byte offset of each tensor's data in the file, and its element size.
    tensors: BTreeMap<String, (u64, usize, usize)>,
}

impl TensorFileWriter {
    /// Create the file with its header; tensor data starts zeroed.
    pub fn create(path: &Path, tensors: &[(&str, Dtype, Vec<usize>)]) -> Result<TensorFileWriter> {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        let mut placed = Vec::new();
        for (name, dtype, shape) in tensors {
            let bytes = shape.iter().product::<usize>() * dtype_size(*dtype);
            header.insert(name.to_string(), serde_json::json!({ "dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [offset, offset + bytes] }));
            placed.push((name.to_string(), offset, dtype_size(*dtype), bytes));
            offset += bytes;
        }
        let mut json = serde_json::to_vec(&header)?;
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let start = 8 + json.len() as u64;
        file.write_all_at(&(json.len() as u64).to_le_bytes(), 0)?;
        file.write_all_at(&json, 8)?;
        file.set_len(start + offset as u64)?;
        let tensors = placed.into_iter().map(|(n, o, s, b)| (n, (start + o as u64, s, b))).collect();
        Ok(TensorFileWriter { file, tensors })
    }

    /// Write raw little-endian elements into tensor `name` from element `at` on.
    pub fn write(&self, name: &str, at: usize, bytes: &[u8]) -> Result<()> {
        let &(start, size, len) = self.tensors.get(name).ok_or_else(|| anyhow!("no tensor '{name}' in this file"))?;
        if at * size + bytes.len() > len {
            bail!("write past the end of tensor '{name}'");
        }
        self.file.write_all_at(bytes, start + (at * size) as u64)?;
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        self.file.sync_all()?;
        Ok(())
    }
}

/// A memory-mapped safetensors file.
pub struct TensorFile {
    map: memmap2::Mmap,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<TensorFile> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: artifacts in the store are never modified once committed.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        safetensors::SafeTensors::deserialize(&map).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(TensorFile { map })
    }

    /// The names of its tensors.
    pub fn names(&self) -> Result<Vec<String>> {
        let st = safetensors::SafeTensors::deserialize(&self.map).map_err(|e| anyhow!("{e}"))?;
        Ok(st.names().into_iter().map(|n| n.to_string()).collect())
    }

    /// Shape and raw bytes of a tensor.
    pub fn get(&self, name: &str) -> Result<(Vec<usize>, &[u8])> {
        self.get_typed(name).map(|(_, shape, data)| (shape, data))
    }

    /// Element type, shape and raw bytes of a tensor.
    pub fn get_typed(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let st = safetensors::SafeTensors::deserialize(&self.map).map_err(|e| anyhow!("{e}"))?;
        let t = st.tensor(name).map_err(|e| anyhow!("tensor '{name}': {e}"))?;
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        let data = t.data();
        // Re-borrow from the map so the slice lives as long as `self`.
        let off = data.as_ptr() as usize - self.map.as_ptr() as usize;
        Ok((dtype, shape, &self.map[off..off + data.len()]))
    }
}
