//! The content-addressed artifact store: one folder per fingerprint under `OUT/.lantern/store/`,
//! written in a temporary folder and renamed into place with its manifest written last; a readable
//! view `OUT/<experiment>/<stage>` links to it. Corrupt or partial entries are detected, never read.

pub mod atomic;
pub mod digest;
pub mod manifest;
pub mod table;
pub mod tensor_file;

pub use manifest::{FileEntry, Manifest};

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Version of the artifact formats; part of every fingerprint.
pub const FORMAT_VERSION: u32 = 1;

pub struct Store {
    pub out: PathBuf,
}

/// What the store holds for a fingerprint.
pub enum Lookup {
    Hit(Manifest),
    Missing,
    /// Present but unusable (why).
    Corrupt(String),
}

/// A stage's artifacts being written.
pub struct Pending {
    pub dir: PathBuf,
    pub fingerprint: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Only an abandoned (failed or interrupted) write still has its folder here.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    pub fn new(out: &Path) -> Store {
        Store { out: out.to_path_buf() }
    }

    fn root(&self) -> PathBuf {
        self.out.join(".lantern")
    }

    pub fn entry_dir(&self, fp: &str) -> PathBuf {
        self.root().join("store").join(&fp[..2]).join(fp)
    }

    /// The readable view of a stage: `OUT/<experiment>/<stage>`.
    pub fn view_path(&self, experiment: &str, stage: &str) -> PathBuf {
        self.out.join(experiment).join(stage)
    }

    /// Check an entry: manifest present and parseable, fingerprint equal, every file of the size
    /// and blake3 hash the manifest records.
    pub fn lookup(&self, fp: &str) -> Lookup {
        let dir = self.entry_dir(fp);
        if !dir.exists() {
            return Lookup::Missing;
        }
        let m = match Manifest::read(&dir) {
            Ok(m) => m,
            Err(e) => return Lookup::Corrupt(format!("manifest unreadable: {e:#}")),
        };
        if m.fingerprint != fp {
            return Lookup::Corrupt("manifest fingerprint differs".into());
        }
        for f in &m.files {
            let p = dir.join(&f.name);
            match std::fs::metadata(&p) {
                Ok(md) if md.len() == f.size => {}
                Ok(md) => return Lookup::Corrupt(format!("{} has {} bytes, expected {}", f.name, md.len(), f.size)),
                Err(_) => return Lookup::Corrupt(format!("{} is missing", f.name)),
            }
            match digest::file_hash(&p) {
                Ok(h) if h == f.blake3 => {}
                _ => return Lookup::Corrupt(format!("{} content does not match its hash", f.name)),
            }
        }
        Lookup::Hit(m)
    }

    /// Start writing the artifacts of `fp` into a fresh temporary folder.
    pub fn begin(&self, fp: &str) -> Result<Pending> {
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = self.root().join("tmp").join(format!("{fp}-{}-{nonce}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Pending { dir, fingerprint: fp.to_string() })
    }

    /// Hash the written files, write the manifest last, then move the folder into place.
    pub fn commit(&self, pending: Pending, mut manifest: Manifest) -> Result<Manifest> {
        manifest.files = manifest::list_files(&pending.dir)?;
        manifest.write(&pending.dir)?;
        let dest = self.entry_dir(&pending.fingerprint);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::create_dir_all(dest.parent().expect("entry has a parent"))?;
        std::fs::rename(&pending.dir, &dest).with_context(|| format!("cannot move artifacts to {}", dest.display()))?;
        Ok(manifest)
    }

    /// Point `OUT/<experiment>/<stage>` at the entry (atomically replacing an older link).
    pub fn link_view(&self, experiment: &str, stage: &str, fp: &str) -> Result<()> {
        let view = self.view_path(experiment, stage);
        let parent = view.parent().expect("view has a parent");
        std::fs::create_dir_all(parent)?;
        let target = pathdiff(&self.entry_dir(fp), parent);
        let tmp = parent.join(format!(".{stage}.link-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        symlink_dir(&target, &tmp)?;
        if view.is_dir() && !view.is_symlink() {
            std::fs::remove_dir_all(&view)?;
        }
        std::fs::rename(&tmp, &view).with_context(|| format!("cannot update {}", view.display()))?;
        Ok(())
    }

    /// The manifest the view of a stage points at (from an earlier run), if any.
    pub fn view_manifest(&self, experiment: &str, stage: &str) -> Option<Manifest> {
        Manifest::read(&self.view_path(experiment, stage)).ok()
    }

    /// Remove an entry.
    pub fn remove(&self, fp: &str) -> Result<()> {
        let d = self.entry_dir(fp);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
        Ok(())
    }
}

/// `to` relative to the folder `from` (both under the same root).
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c);
    }
    p
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot link {}", link.display()))
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> Result<()> {
    std::os::windows::fs::symlink_dir(target, link).with_context(|| format!("cannot link {}", link.display()))
}
