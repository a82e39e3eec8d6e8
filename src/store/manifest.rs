//! A stage's manifest (`manifest.json`, written last): fingerprint, parameters, inputs, timings,
//! tool version, and the size and blake3 hash of every artifact.

use super::digest;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub fingerprint: String,
    pub kind: String,
    pub stage: String,
    pub experiment: String,
    /// The stage's resolved parameters (references shown as `{"$model": name}` …).
    pub params: serde_json::Value,
    /// Fingerprints of what it read, by reference.
    pub inputs: BTreeMap<String, String>,
    pub started_unix: u64,
    /// The implementation version of the code that made it (0 in manifests older than versions).
    #[serde(default)]
    pub version: u32,
    pub seconds: f64,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a manifest", p.display()))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        super::atomic::write(&dir.join(MANIFEST), text.as_bytes())
    }

    /// Total bytes of the artifacts.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Every file of a folder (recursively, `/`-separated names), with size and hash.
pub fn list_files(dir: &Path) -> Result<Vec<FileEntry>> {
    list_names(dir)?
        .into_iter()
        .map(|(name, size)| Ok(FileEntry { blake3: digest::file_hash(&dir.join(&name))?, name, size }))
        .collect()
}

/// Every file of a folder but the manifest (recursively, `/`-separated names, sorted) with its
/// size; a symbolic link or anything but files and folders is an error (nothing is followed).
pub fn list_names(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let md = std::fs::symlink_metadata(&p)?;
        let name = p.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
        if md.is_dir() {
            walk(root, &p, out)?;
        } else if md.is_file() {
            if name != MANIFEST {
                out.push((name, md.len()));
            }
        } else {
            anyhow::bail!("{name} is not a plain file");
        }
    }
    Ok(())
}
