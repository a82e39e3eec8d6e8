//! Garbage collection of the store: entries that no experiment folder under the output folder
//! links to (directly, or as an input of a linked entry), and temporary folders that dead runs
//! left behind. Paths to delete are built from fingerprints, never read from a manifest.

use super::lock::{FileLock, Mode};
use super::manifest::list_names;
use super::paths::{Fingerprint, OutDir};
use super::Manifest;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One store entry `gc` would delete.
#[derive(Debug)]
pub struct Entry {
    pub fingerprint: Fingerprint,
    pub bytes: u64,
    /// `experiment/stage (kind)` from its manifest, for display only.
    pub what: String,
}

/// What `gc` would delete, found while holding the output folder's lock exclusively (no run can
/// start or be running until it is dropped).
#[derive(Debug)]
pub struct Garbage {
    _lock: FileLock,
    dirs: OutDir,
    pub entries: Vec<Entry>,
    /// Names of leftover temporary folders in `OUT/.lantern/tmp`.
    pub tmp: Vec<String>,
    /// Entries kept because an experiment links to them.
    pub kept: usize,
    /// Things in the store lantern did not make (left alone).
    pub unknown: Vec<PathBuf>,
    /// Experiment folders that could not be read (their links are then unknown: nothing is deleted).
    pub unreadable: Vec<String>,
}

impl Garbage {
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum::<u64>()
    }

    /// Delete the entries, their lock files and the temporary folders.
    pub fn delete(self) -> Result<()> {
        for e in &self.entries {
            let dir = self.dirs.entry(&e.fingerprint)?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            let _ = std::fs::remove_file(self.dirs.entry_lock(&e.fingerprint)?);
        }
        for name in &self.tmp {
            let dir = self.dirs.tmp_entry(name)?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Find what `gc` may delete. Fails while a run uses the output folder.
pub fn find(dirs: &OutDir) -> Result<Garbage> {
    let Some(lock) = FileLock::try_acquire(&dirs.out_lock()?, Mode::Exclusive)? else {
        bail!("a lantern run is using {}; run gc when it has finished", dirs.root().display())
    };
    let (mut keep, unreadable) = linked(dirs)?;
    // Inputs of kept entries are kept too (a manifest can only add to what is kept).
    let mut todo: Vec<Fingerprint> = keep.iter().cloned().collect();
    while let Some(fp) = todo.pop() {
        let Ok(m) = Manifest::read(&dirs.entry(&fp)?) else { continue };
        for input in m.inputs.values().filter_map(|s| Fingerprint::parse(s)) {
            if dirs.entry(&input)?.is_dir() && keep.insert(input.clone()) {
                todo.push(input);
            }
        }
    }
    let mut g =
        Garbage { _lock: lock, dirs: dirs.clone(), entries: vec![], tmp: vec![], kept: 0, unknown: vec![], unreadable };
    for (fp, path) in entries(dirs, &mut g.unknown)? {
        if keep.contains(&fp) {
            g.kept += 1;
            continue;
        }
        let bytes = list_names(&path).map(|f| f.iter().map(|(_, s)| s).sum()).unwrap_or(0);
        let what = Manifest::read(&path)
            .map(|m| format!("{}/{} ({})", m.experiment, m.stage, m.kind))
            .unwrap_or_else(|_| "no readable manifest".into());
        let what = what.chars().filter(|c| !c.is_control()).collect();
        g.entries.push(Entry { fingerprint: fp, bytes, what });
    }
    if !g.unreadable.is_empty() {
        g.entries.clear();
    }
    g.tmp = tmp_names(dirs)?;
    Ok(g)
}

/// Remove the temporary folders whose writer is gone: a run holds an entry's lock while it writes
/// the entry's temporary folder, so a folder whose entry lock is free was left by a process that
/// died (killed, out of memory, power). Returns their names.
pub fn remove_abandoned(dirs: &OutDir) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in tmp_names(dirs)? {
        let fp = OutDir::tmp_fingerprint(&name).expect("listed by tmp_names");
        let Some(_lock) = FileLock::try_acquire(&dirs.entry_lock(&fp)?, Mode::Exclusive)? else { continue };
        let dir = dirs.tmp_entry(&name)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Names of the temporary entry folders (`<fp>-<pid>-<nonce>`).
fn tmp_names(dirs: &OutDir) -> Result<Vec<String>> {
    let Ok(list) = std::fs::read_dir(dirs.tmp()?) else { return Ok(vec![]) };
    let mut out: Vec<String> = list
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| OutDir::tmp_fingerprint(n).is_some())
        .collect();
    out.sort();
    Ok(out)
}

/// Entries every experiment folder under the output folder links to, and the folders that could
/// not be read.
fn linked(dirs: &OutDir) -> Result<(BTreeSet<Fingerprint>, Vec<String>)> {
    let (mut keep, mut unreadable) = (BTreeSet::new(), Vec::new());
    for e in std::fs::read_dir(dirs.root())?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        let listing = dirs.experiment(&name).and_then(|d| Ok(std::fs::read_dir(d)?));
        let Ok(listing) = listing else {
            // A folder lantern would not have written (a name it refuses) holds no views.
            if super::paths::name_problem(&name).is_none() {
                unreadable.push(name);
            }
            continue;
        };
        for view in listing.flatten() {
            if view.file_type().is_ok_and(|t| t.is_symlink()) {
                keep.extend(dirs.linked_entry(&view.path()));
            }
        }
    }
    Ok((keep, unreadable))
}

/// Every well-formed entry folder of the store; anything else is listed in `unknown`.
fn entries(dirs: &OutDir, unknown: &mut Vec<PathBuf>) -> Result<Vec<(Fingerprint, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(dirs.store()?) else { return Ok(out) };
    for p in prefixes.flatten() {
        if !p.file_type().is_ok_and(|t| t.is_dir()) {
            unknown.push(p.path());
            continue;
        }
        for e in std::fs::read_dir(p.path())?.flatten() {
            let fp = e.file_name().to_str().and_then(Fingerprint::parse);
            match fp {
                Some(fp) if e.file_type().is_ok_and(|t| t.is_dir()) && dirs.entry(&fp)? == e.path() => {
                    out.push((fp, e.path()))
                }
                _ => unknown.push(e.path()),
            }
        }
    }
    out.sort();
    Ok(out)
}
