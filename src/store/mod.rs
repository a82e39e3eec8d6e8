//! The content-addressed artifact store: one folder per fingerprint under `OUT/.lantern/store/`,
//! written in a temporary folder and renamed into place with its manifest written last, under a
//! per-entry lock so that concurrent runs compute an entry once. Corrupt or partial entries are
//! detected, never read.

pub mod arrays;
pub mod atomic;
pub mod digest;
pub mod gc;
pub mod lock;
pub mod manifest;
pub mod paths;
pub mod table;
pub mod tensor_file;
pub mod views;

pub use manifest::{FileEntry, Manifest};
pub use paths::{Fingerprint, OutDir};

use anyhow::{Context, Result};
use lock::{FileLock, Mode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Version of the artifact formats; part of every fingerprint.
pub const FORMAT_VERSION: u32 = 1;

pub struct Store {
    pub dirs: OutDir,
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
    pub fingerprint: Fingerprint,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Only an abandoned (failed or interrupted) write still has its folder here.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The right to compute an entry (held until dropped; see `Store::lock`).
pub struct EntryLock {
    _lock: FileLock,
}

impl Store {
    /// The store of an output folder (created if missing).
    pub fn open(out: &Path) -> Result<Store> {
        Ok(Store { dirs: OutDir::create(out)? })
    }

    pub fn entry_dir(&self, fp: &Fingerprint) -> Result<PathBuf> {
        self.dirs.entry(fp)
    }

    /// Check an entry: manifest present and parseable, fingerprint equal, the folder holding
    /// exactly the files the manifest lists, each of the size and blake3 hash it records.
    pub fn lookup(&self, fp: &Fingerprint) -> Lookup {
        let dir = match self.entry_dir(fp) {
            Ok(d) => d,
            Err(e) => return Lookup::Corrupt(format!("{e:#}")),
        };
        if !dir.exists() {
            return Lookup::Missing;
        }
        let m = match Manifest::read(&dir) {
            Ok(m) => m,
            Err(e) => return Lookup::Corrupt(format!("manifest unreadable: {e:#}")),
        };
        if m.fingerprint != fp.as_str() {
            return Lookup::Corrupt("manifest fingerprint differs".into());
        }
        let present = match manifest::list_names(&dir) {
            Ok(p) => p,
            Err(e) => return Lookup::Corrupt(format!("{e:#}")),
        };
        if let Some(extra) = present.iter().find(|(n, _)| !m.files.iter().any(|f| f.name == *n)) {
            return Lookup::Corrupt(format!("{} is not in the manifest", extra.0));
        }
        for f in &m.files {
            match present.iter().find(|(n, _)| *n == f.name) {
                Some((_, size)) if *size == f.size => {}
                Some((_, size)) => return Lookup::Corrupt(format!("{} has {size} bytes, expected {}", f.name, f.size)),
                None => return Lookup::Corrupt(format!("{} is missing", f.name)),
            }
            match digest::file_hash(&dir.join(&f.name)) {
                Ok(h) if h == f.blake3 => {}
                _ => return Lookup::Corrupt(format!("{} content does not match its hash", f.name)),
            }
        }
        Lookup::Hit(m)
    }

    /// Take the lock of an entry before computing it: `Ok((lock, false))` at once when free, else
    /// `before_waiting` is called and this waits for the process that holds it (`(lock, true)`).
    pub fn lock(&self, fp: &Fingerprint, before_waiting: impl FnOnce()) -> Result<(EntryLock, bool)> {
        let path = self.dirs.entry_lock(fp)?;
        if let Some(l) = FileLock::try_acquire(&path, Mode::Exclusive)? {
            return Ok((EntryLock { _lock: l }, false));
        }
        before_waiting();
        Ok((EntryLock { _lock: FileLock::acquire(&path, Mode::Exclusive)? }, true))
    }

    /// Start writing the artifacts of `fp` into a fresh temporary folder (hold its lock).
    pub fn begin(&self, fp: &Fingerprint, _lock: &EntryLock) -> Result<Pending> {
        let dir = self.dirs.new_tmp(fp)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Pending { dir, fingerprint: fp.clone() })
    }

    /// Hash the written files, write the manifest last, then move the folder into place.
    pub fn commit(&self, pending: Pending, mut manifest: Manifest) -> Result<Manifest> {
        manifest.files = manifest::list_files(&pending.dir)?;
        manifest.write(&pending.dir)?;
        // One mode for every artifact, whatever wrote it (safetensors are created 0600).
        for name in manifest.files.iter().map(|f| f.name.as_str()).chain([manifest::MANIFEST]) {
            let p = pending.dir.join(name);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("cannot set the mode of {}", p.display()))?;
        }
        let dest = self.entry_dir(&pending.fingerprint)?;
        if dest.exists() {
            std::fs::remove_dir_all(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::create_dir_all(dest.parent().expect("entry has a parent"))?;
        std::fs::rename(&pending.dir, &dest).with_context(|| format!("cannot move artifacts to {}", dest.display()))?;
        Ok(manifest)
    }
}
