//! Content digests (blake3) of files, memoised by (path, size, modification time) so that large
//! model weights are hashed once, not at every run.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// blake3 of a file (memory-mapped, multi-threaded for large files).
pub fn file_hash(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Digests remembered across runs in `OUT/.lantern/digests.json`.
pub struct DigestCache {
    path: PathBuf,
    map: Mutex<BTreeMap<String, (u64, u128, String)>>,
}

impl DigestCache {
    pub fn open(dirs: &super::OutDir) -> Result<DigestCache> {
        let path = dirs.digests()?;
        let map = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Ok(DigestCache { path, map: Mutex::new(map) })
    }

    /// The digest of a file, recomputed only when its size or modification time changed.
    pub fn digest(&self, path: &Path) -> Result<String> {
        let path = path.canonicalize().with_context(|| format!("cannot find {}", path.display()))?;
        let md = std::fs::metadata(&path)?;
        let mtime = md.modified()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let key = path.to_string_lossy().to_string();
        if let Some((size, t, d)) = self.map.lock().expect("digest cache").get(&key) {
            if *size == md.len() && *t == mtime {
                return Ok(d.clone());
            }
        }
        let d = file_hash(&path)?;
        self.map.lock().expect("digest cache").insert(key, (md.len(), mtime, d.clone()));
        Ok(d)
    }

    /// Save the memo (best effort: a lost memo only costs rehashing).
    pub fn save(&self) {
        let text = serde_json::to_string(&*self.map.lock().expect("digest cache")).unwrap_or_default();
        let _ = super::atomic::write(&self.path, text.as_bytes());
    }
}
