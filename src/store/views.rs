//! The readable views of an experiment: `OUT/<experiment>/<node>`, each a relative symbolic link
//! to its store entry; replacing them, reading them back, and removing them (`clean`).

use super::paths::{Fingerprint, OutDir};
use super::Manifest;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Point `OUT/<experiment>/<node>` at an entry, atomically replacing an older link. Something
/// else found there (a folder or file of the user's) is moved aside, never deleted: its new path
/// is returned.
pub fn link(dirs: &OutDir, experiment: &str, node: &str, fp: &Fingerprint) -> Result<Option<PathBuf>> {
    let view = dirs.view(experiment, node)?;
    let parent = view.parent().expect("a view has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let target = relative(&dirs.entry(fp)?, parent);
    let tmp = parent.join(format!(".{node}.link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    symlink_dir(&target, &tmp)?;
    let moved = match std::fs::symlink_metadata(&view) {
        Ok(md) if !md.file_type().is_symlink() => {
            let aside = free_name(parent, node);
            std::fs::rename(&view, &aside)
                .with_context(|| format!("cannot move {} aside to {}", view.display(), aside.display()))?;
            Some(aside)
        }
        _ => None,
    };
    std::fs::rename(&tmp, &view).with_context(|| format!("cannot update {}", view.display()))?;
    Ok(moved)
}

/// `<node>.replaced`, `<node>.replaced-2`, … whichever is free.
fn free_name(dir: &Path, node: &str) -> PathBuf {
    (1..)
        .map(|i| dir.join(if i == 1 { format!("{node}.replaced") } else { format!("{node}.replaced-{i}") }))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("a free name")
}

/// The manifest the view of a node points at (from an earlier run), if any.
pub fn manifest(dirs: &OutDir, experiment: &str, node: &str) -> Option<Manifest> {
    Manifest::read(&dirs.view(experiment, node).ok()?).ok()
}

/// What `clean` did to an experiment's folder.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub folder: PathBuf,
    /// The links removed (by name).
    pub links: Vec<String>,
    pub report: bool,
    /// Files and folders left in place because lantern did not make them.
    pub kept: Vec<String>,
    pub folder_removed: bool,
}

/// Remove an experiment's views (the links lantern made to store entries) and its report; the
/// store entries themselves stay (`gc` removes what no experiment links to). Nothing a link
/// points at is followed or deleted, and files lantern did not make are kept.
pub fn unlink(dirs: &OutDir, experiment: &str) -> Result<Cleaned> {
    let folder = dirs.experiment(experiment)?;
    let mut done = Cleaned { folder: folder.clone(), ..Default::default() };
    let Ok(entries) = std::fs::read_dir(&folder) else { return Ok(done) };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        let md = std::fs::symlink_metadata(&path)?;
        if md.file_type().is_symlink() && points_into_store(&path) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            if !name.starts_with('.') {
                done.links.push(name);
            }
        } else if md.is_file() && name == "report.html" {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            done.report = true;
        } else {
            done.kept.push(name);
        }
    }
    done.links.sort();
    done.kept.sort();
    let is_link = folder != dirs.root().join(experiment);
    if done.kept.is_empty() && !is_link {
        std::fs::remove_dir(&folder).with_context(|| format!("cannot remove {}", folder.display()))?;
        done.folder_removed = true;
    }
    Ok(done)
}

/// Whether a link's own text names a store entry (`…/store/ab/ab…`), as the links lantern makes
/// do; it is read, not followed, so that a dangling link is recognised too.
fn points_into_store(link: &Path) -> bool {
    let Ok(target) = std::fs::read_link(link) else { return false };
    let parts: Vec<&str> = target.iter().rev().take(3).filter_map(|c| c.to_str()).collect();
    matches!(parts[..], [fp, prefix, "store"] if Fingerprint::parse(fp).is_some_and(|f| f.as_str().starts_with(prefix)) && prefix.len() == 2)
}

/// `to` relative to the folder `from` (both resolved paths under the output folder).
fn relative(to: &Path, from: &Path) -> PathBuf {
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

/// An experiment folder of the output folder: its links and the manifests they lead to.
#[derive(Debug)]
pub struct Linked {
    pub experiment: String,
    /// Each link by node name, with the manifest of the entry it leads to (`None` when broken).
    pub nodes: Vec<(String, Option<Manifest>)>,
    pub report: bool,
}

/// Every experiment folder under the output folder that holds links lantern made, by name.
pub fn experiments(dirs: &OutDir) -> Result<Vec<Linked>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dirs.root())?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let Ok(folder) = dirs.experiment(&name) else { continue };
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        let mut nodes = Vec::new();
        for v in entries.flatten() {
            let node = v.file_name().to_string_lossy().to_string();
            if !node.starts_with('.') && points_into_store(&v.path()) {
                nodes.push((node, Manifest::read(&v.path()).ok()));
            }
        }
        if !nodes.is_empty() {
            nodes.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(Linked { experiment: name, nodes, report: folder.join("report.html").is_file() });
        }
    }
    out.sort_by(|a, b| a.experiment.cmp(&b.experiment));
    Ok(out)
}
