//! `lantern clean` and `lantern gc`: an experiment's links removed; unlinked store entries deleted.

use super::{open, Exit, Target};
use anyhow::Result;
use lantern::store::gc;
use std::io::IsTerminal;
use std::path::Path;

/// Remove an experiment's links and report; the store entries stay for `gc`.
pub fn clean(target: &Target) -> Result<Exit> {
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let done = session.clean()?;
    let folder = done.folder.display();
    for l in &done.links {
        println!("unlinked {folder}/{l}");
    }
    if done.report {
        println!("deleted {folder}/report.html");
    }
    for k in &done.kept {
        println!("kept {folder}/{k} (not made by lantern)");
    }
    if done.folder_removed {
        println!("deleted {folder}/");
    }
    println!(
        "{} links removed; their artifacts stay in the store until `lantern gc --out {}` (which keeps what other \
         experiments link to)",
        done.links.len(),
        target.out.display()
    );
    Ok(Exit::Ok)
}

/// Delete the store entries no experiment links to (after confirmation), and leftover
/// temporary folders.
pub fn gc(out: &Path, dry_run: bool, yes: bool) -> Result<Exit> {
    use indicatif::HumanBytes;
    let garbage = gc::find(&lantern::store::OutDir::create(out)?)?;
    for u in &garbage.unknown {
        println!("left alone (not a store entry): {}", u.display());
    }
    if !garbage.unreadable.is_empty() {
        eprintln!(
            "error: cannot read the experiment folders {} under {}: nothing is deleted while their links are unknown",
            garbage.unreadable.join(", "),
            out.display()
        );
        return Ok(Exit::Failed);
    }
    for e in &garbage.entries {
        println!("{}  {:>10}  {}", &e.fingerprint.as_str()[..16], HumanBytes(e.bytes).to_string(), e.what);
    }
    println!(
        "{} unlinked entries ({}), {} temporary folders of interrupted runs; {} entries kept (linked by an experiment)",
        garbage.entries.len(),
        HumanBytes(garbage.bytes()),
        garbage.tmp.len(),
        garbage.kept
    );
    if garbage.entries.is_empty() && garbage.tmp.is_empty() {
        return Ok(Exit::Ok);
    }
    if dry_run {
        println!("dry run: nothing deleted");
        return Ok(Exit::Ok);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not on a terminal: pass --yes to delete, or --dry-run to list only");
            return Ok(Exit::Invalid);
        }
        eprint!("delete them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(Exit::Ok);
        }
    }
    let (n, bytes) = (garbage.entries.len(), garbage.bytes());
    garbage.delete()?;
    println!("deleted {n} entries ({})", HumanBytes(bytes));
    Ok(Exit::Ok)
}
